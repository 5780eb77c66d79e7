//! The HTTP side of Tencent Cloud API 3.0: sign, send, decode the envelope, retry, rate-limit.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;
use secrecy::ExposeSecret;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::ratelimit::{Limiters, Permit, RateLimiter};
use super::sign::{sign, SignInput};
use crate::config::ApiConfig;
use crate::instruments::ApiInstruments;

/// API version of TIW.
pub const VERSION: &str = "2019-09-19";
/// Service name in the credential scope.
pub const SERVICE: &str = "tiw";
/// Sent and signed byte for byte.
pub const CONTENT_TYPE: &str = "application/json";

/// Why a call failed. `Display` never contains a secret.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// Tencent answered with its error envelope.
    #[error("{code}: {message} (RequestId {request_id}){hint}", hint = clock_hint(code))]
    Tencent {
        code: String,
        message: String,
        request_id: String,
    },
    /// No answer: connection refused or reset, timeout.
    #[error("no answer from {endpoint}: {detail}")]
    Transport { endpoint: String, detail: String },
    /// An answer that is not Tencent's envelope: an HTTP error status or a body that does not decode.
    #[error("unexpected reply from {endpoint}: {detail}")]
    BadReply { endpoint: String, detail: String },
}

fn clock_hint(code: &str) -> &'static str {
    if code == "AuthFailure.SignatureExpire" {
        " — this machine's clock is more than 5 minutes away from Tencent's: synchronise it (NTP)"
    } else {
        ""
    }
}

impl ApiError {
    /// Tencent's error code, if Tencent answered.
    pub fn code(&self) -> Option<&str> {
        match self {
            ApiError::Tencent { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Bounded label for `tiw_exporter_api_requests_total{code}`: the Tencent code when it looks
    /// like one, `transport` when Tencent's envelope never came back.
    pub fn metric_label(&self) -> String {
        match self {
            ApiError::Tencent { code, .. } if is_plausible_code(code) => code.clone(),
            ApiError::Tencent { .. } => "other".into(),
            ApiError::Transport { .. } | ApiError::BadReply { .. } => "transport".into(),
        }
    }

    /// What the failure means, decided in this one place (design §2).
    pub fn kind(&self) -> ErrorKind {
        match self {
            ApiError::Transport { .. } | ApiError::BadReply { .. } => ErrorKind::Unreachable,
            ApiError::Tencent { code, .. } => ErrorKind::of_code(code),
        }
    }

    /// Worth another attempt: network trouble, Tencent's internal errors and rate limiting.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind(),
            ErrorKind::Unreachable | ErrorKind::RateLimited | ErrorKind::Internal
        )
    }

    /// Tencent did not answer for the app, or answered that the app or its credentials are
    /// unusable: `tiw_up{sdk_app_id}` is 0 (design §4). A permission refused for one action is
    /// app-level for the action the app is watched with; see [`ApiError::is_action_denied`].
    pub fn is_app_down(&self) -> bool {
        matches!(
            self.kind(),
            ErrorKind::Unreachable | ErrorKind::AppLevel | ErrorKind::ActionDenied
        )
    }

    /// CAM refused this one action (permissions are granted per action): a sub-account allowed
    /// DescribeWhiteboardPush but not DescribeRunningTasks still watches its tasks.
    pub fn is_action_denied(&self) -> bool {
        self.kind() == ErrorKind::ActionDenied
    }
}

/// The meaning of a failed call. Task-level answers (`TaskFailed`, `TaskNotFound`) are answers:
/// they keep `tiw_up` at 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// No usable answer: connection trouble, an HTTP error page, a body that is not the envelope.
    Unreachable,
    /// The app or the credentials are unusable (design §2's app-level codes); never retried blindly.
    AppLevel,
    /// CAM refused the action itself (`AuthFailure.UnauthorizedOperation`, bare
    /// `UnauthorizedOperation`, `ResourceUnavailable.InterfaceUnAuthorized`):
    /// CAM grants permissions per action, so the other actions may still work. Never retried.
    ActionDenied,
    /// `RequestLimitExceeded` or one of its sub-codes: retried with backoff.
    RateLimited,
    /// `InternalError` or one of its sub-codes, or `ServiceUnavailable` (Tencent's common error
    /// code for a service that is briefly unavailable): retried.
    Internal,
    /// `FailedOperation.WhiteboardPush`: the task failed (a terminal state, not an exporter error).
    TaskFailed,
    /// `InvalidParameter.TaskNotFound`: Tencent does not know the task id.
    TaskNotFound,
    /// Any other code.
    Other,
}

/// Codes that are app-level as a whole family: the code itself, or the code followed by `.`.
/// Tencent's Go SDK lists `ResourceUnavailable` and `UnauthorizedOperation` as bare codes too.
const APP_LEVEL_FAMILIES: [&str; 3] = ["AuthFailure", "ResourceUnavailable", "UnauthorizedOperation"];
/// App-level codes matched exactly. `UnsupportedRegion` (Tencent's common error code for a region
/// the product does not serve) is not in design §2's list, but it makes every call of the app fail
/// just as surely: a mistyped `region` must show as `tiw_up 0`, not as an app that answers.
const APP_LEVEL_CODES: [&str; 4] = [
    "IpInBlacklist",
    "IpNotInWhitelist",
    "InvalidParameter.SdkAppIdNotFound",
    "UnsupportedRegion",
];

impl ErrorKind {
    /// Classifies one of Tencent's error codes.
    pub fn of_code(code: &str) -> ErrorKind {
        if ACTION_DENIED_CODES.contains(&code) {
            ErrorKind::ActionDenied
        } else if APP_LEVEL_FAMILIES.iter().any(|f| in_family(code, f)) || APP_LEVEL_CODES.contains(&code) {
            ErrorKind::AppLevel
        } else if in_family(code, "RequestLimitExceeded") {
            ErrorKind::RateLimited
        } else if in_family(code, "InternalError") || in_family(code, "ServiceUnavailable") {
            ErrorKind::Internal
        } else if code == "FailedOperation.WhiteboardPush" {
            ErrorKind::TaskFailed
        } else if code == "InvalidParameter.TaskNotFound" {
            ErrorKind::TaskNotFound
        } else {
            ErrorKind::Other
        }
    }
}

/// Codes by which CAM refuses one action (Tencent's common error codes: "AuthFailure.UnauthorizedOperation:
/// 请求未授权" and "UnauthorizedOperation: 未授权操作"; the Go SDK's tiw errors.go lists
/// `ResourceUnavailable.InterfaceUnAuthorized`). Sub-codes such as `UnauthorizedOperation.SdkAppId`
/// (the app is not the account's) stay app-level.
const ACTION_DENIED_CODES: [&str; 3] = [
    "AuthFailure.UnauthorizedOperation",
    "UnauthorizedOperation",
    "ResourceUnavailable.InterfaceUnAuthorized",
];

/// `code` is `family` or starts with `family.` (`AuthFailureX` is not `AuthFailure`).
fn in_family(code: &str, family: &str) -> bool {
    code.strip_prefix(family)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

/// Tencent codes are dotted identifiers; anything else from the wire is not used as a label value.
fn is_plausible_code(code: &str) -> bool {
    !code.is_empty()
        && code.len() <= 80
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_')
}

/// Retry policy: exponential backoff with full jitter.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(3),
        }
    }
}

impl RetryPolicy {
    fn delay(&self, attempt: u32) -> Duration {
        let cap = self.base_delay.saturating_mul(1 << attempt.min(16)).min(self.max_delay);
        let ms = rand::rng().random_range(0..=cap.as_millis() as u64);
        Duration::from_millis(ms)
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(rename = "Code", default)]
    code: Option<String>,
    #[serde(rename = "Message", default)]
    message: Option<String>,
}

/// A client for one endpoint and set of credentials.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    api: ApiConfig,
    host: String,
    limiters: Arc<Limiters>,
    instruments: ApiInstruments,
    retry: RetryPolicy,
}

/// Longest piece of an unexpected body quoted in an error.
const BODY_SNIPPET: usize = 120;
/// The largest reply read. A full DescribeRunningTasks page (500 tasks) is about 100 KB.
pub const MAX_REPLY_BYTES: usize = 4 * 1024 * 1024;

impl Client {
    pub fn new(http: reqwest::Client, api: ApiConfig, limiters: Arc<Limiters>, instruments: ApiInstruments) -> Self {
        let host = host_header(&api.endpoint);
        Client {
            http,
            api,
            host,
            limiters,
            instruments,
            retry: RetryPolicy::default(),
        }
    }

    /// Replaces the retry policy (tests use short delays).
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Calls `action` with `request`, retrying what is worth retrying; returns the decoded `Response`.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        action: &'static str,
        request: &Req,
    ) -> Result<Resp, ApiError> {
        self.call_in_turn(action, request, None).await
    }

    /// Waits for the next send turn of `action` in this budget's rate limit.
    pub async fn turn(&self, action: &'static str) -> Permit {
        self.limiters.get(&self.api, action).acquire().await
    }

    /// A turn of `action` only if one is free now and nobody waits for one (see
    /// [`RateLimiter::try_acquire`]).
    pub fn spare_turn(&self, action: &'static str) -> Option<Permit> {
        self.limiters.get(&self.api, action).try_acquire()
    }

    /// [`Client::call`], whose first attempt goes out in `turn` (taken with [`Client::turn`])
    /// instead of waiting for one; retries wait their turn as usual.
    pub async fn call_in_turn<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        action: &'static str,
        request: &Req,
        mut turn: Option<Permit>,
    ) -> Result<Resp, ApiError> {
        let body = serde_json::to_vec(request).map_err(|e| ApiError::BadReply {
            endpoint: self.api.endpoint.to_string(),
            detail: format!("cannot encode request: {e}"),
        })?;
        let limiter = self.limiters.get(&self.api, action);
        let mut attempt = 0;
        loop {
            let result = self.attempt(action, &body, &limiter, turn.take()).await;
            attempt += 1;
            match result {
                Err(e) if e.is_retryable() && attempt < self.retry.max_attempts => {
                    tracing::debug!(action, attempt, error = %e, "retrying Tencent Cloud API call");
                    tokio::time::sleep(self.retry.delay(attempt - 1)).await;
                }
                other => return other,
            }
        }
    }

    async fn attempt<Resp: DeserializeOwned>(
        &self,
        action: &'static str,
        body: &[u8],
        limiter: &RateLimiter,
        turn: Option<Permit>,
    ) -> Result<Resp, ApiError> {
        let permit = match turn {
            Some(permit) => permit,
            None => limiter.acquire().await,
        };
        let started = std::time::Instant::now();
        permit.sending();
        let result = self.send(action, body).await;
        drop(permit);
        let code = match &result {
            Ok(_) => "OK".to_string(),
            Err(e) => e.metric_label(),
        };
        self.instruments.requested(action, &code, started.elapsed());
        match &result {
            Err(e) if e.kind() == ErrorKind::RateLimited => limiter.on_rate_limited(),
            Ok(_) => limiter.on_success(),
            Err(_) => {}
        }
        result
    }

    async fn send<Resp: DeserializeOwned>(&self, action: &'static str, body: &[u8]) -> Result<Resp, ApiError> {
        let endpoint = self.api.endpoint.to_string();
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let creds = &self.api.credentials;
        let signature = sign(&SignInput {
            secret_id: &creds.secret_id,
            secret_key: creds.secret_key.expose_secret(),
            service: SERVICE,
            host: &self.host,
            content_type: CONTENT_TYPE,
            timestamp,
            body,
        })
        .ok_or_else(|| ApiError::Transport {
            endpoint: endpoint.clone(),
            detail: "system clock out of range".into(),
        })?;
        let mut req = self
            .http
            .post(self.api.endpoint.clone())
            .timeout(self.api.timeout)
            .header("Authorization", signature.authorization)
            .header("Content-Type", CONTENT_TYPE)
            .header("Host", &self.host)
            .header("X-TC-Action", action)
            .header("X-TC-Version", VERSION)
            .header("X-TC-Timestamp", timestamp.to_string())
            .header("X-TC-Region", &self.api.region);
        if let Some(token) = &creds.session_token {
            req = req.header("X-TC-Token", token.expose_secret());
        }
        let transport = |e: reqwest::Error| ApiError::Transport {
            endpoint: endpoint.clone(),
            detail: describe_reqwest(&e),
        };
        let mut reply = req.body(body.to_vec()).send().await.map_err(transport)?;
        let status = reply.status();
        // Read at most MAX_REPLY_BYTES: a broken proxy must not make the exporter buffer gigabytes.
        let too_large = || ApiError::BadReply {
            endpoint: endpoint.clone(),
            detail: format!("HTTP {}: reply larger than {MAX_REPLY_BYTES} bytes", status.as_u16()),
        };
        if reply.content_length().is_some_and(|n| n > MAX_REPLY_BYTES as u64) {
            return Err(too_large());
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = reply.chunk().await.map_err(transport)? {
            if bytes.len() + chunk.len() > MAX_REPLY_BYTES {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        decode_reply(&endpoint, status.as_u16(), &bytes)
    }
}

/// Decodes Tencent's envelope: `{"Response":{...}}` or `{"Response":{"Error":{...},"RequestId":...}}`.
pub fn decode_reply<Resp: DeserializeOwned>(endpoint: &str, status: u16, bytes: &[u8]) -> Result<Resp, ApiError> {
    let bad = |detail: String| ApiError::BadReply {
        endpoint: endpoint.to_string(),
        detail,
    };
    let envelope: Result<serde_json::Value, _> = serde_json::from_slice(bytes);
    let response = match envelope.map(|mut v| v.get_mut("Response").map(serde_json::Value::take)) {
        Ok(Some(r)) if r.is_object() => r,
        Ok(_) if status != 200 => return Err(bad(format!("HTTP {status}"))),
        Ok(_) => return Err(bad("JSON without a Response object".into())),
        Err(_) if status != 200 => return Err(bad(format!("HTTP {status}: {}", snippet(bytes)))),
        Err(e) => return Err(bad(format!("body is not JSON ({e}): {}", snippet(bytes)))),
    };
    let request_id = response
        .get("RequestId")
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_string();
    if let Some(err) = response.get("Error").filter(|e| !e.is_null()) {
        let err: ErrorBody = serde_json::from_value(err.clone()).unwrap_or(ErrorBody {
            code: None,
            message: None,
        });
        // Whatever the wire says ends up in logs and errors: bounded, one line.
        return Err(ApiError::Tencent {
            code: printable(&err.code.unwrap_or_else(|| "UnknownError".into()), MAX_CODE_CHARS),
            message: printable(&err.message.unwrap_or_default(), MAX_MESSAGE_CHARS),
            request_id: printable(&request_id, MAX_CODE_CHARS),
        });
    }
    serde_json::from_value(response).map_err(|e| {
        bad(format!(
            "Response does not match the documented fields: {e} (RequestId {request_id})"
        ))
    })
}

/// Longest error code and RequestId kept from a reply; Tencent's are under 64 characters.
const MAX_CODE_CHARS: usize = 128;
/// Longest error message kept from a reply.
const MAX_MESSAGE_CHARS: usize = 1024;

/// `s` on one line (control characters become spaces), cut to `max` characters with `…`.
fn printable(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .take(max)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if s.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

/// A short, printable piece of a body for an error message.
fn snippet(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(BODY_SNIPPET)]);
    let mut s: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if bytes.len() > BODY_SNIPPET {
        s.push('…');
    }
    format!("{s:?}")
}

fn describe_reqwest(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "reply body broken off"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(e);
    let mut root = String::new();
    while let Some(s) = source {
        root = s.to_string();
        source = s.source();
    }
    let said = if root.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {root}")
    };
    format!("{said}{}", scheme_hint(e.url().map(|u| u.scheme()), &root))
}

/// Words for the two ways an endpoint's scheme can be wrong, which TLS and HTTP libraries report
/// in their own terms (rustls: "received corrupt message of type InvalidContentType"; hyper:
/// "invalid HTTP version parsed").
fn scheme_hint(scheme: Option<&str>, root: &str) -> &'static str {
    let plain_http_answer = root.contains("InvalidContentType") || root.contains("corrupt message");
    let tls_answer = root.contains("invalid HTTP version") || root.contains("invalid HTTP status");
    match scheme {
        Some("https") if plain_http_answer => {
            " — the endpoint answered in plain HTTP, not TLS: is it an http:// endpoint (such as a simulator) written as https://?"
        }
        Some("http") if tls_answer => {
            " — the endpoint answered with something that is not HTTP, likely TLS: is it an https:// endpoint written as http://?"
        }
        _ => "",
    }
}

/// The `Host` header for an endpoint: host, plus `:port` when the port is not the scheme's default.
pub fn host_header(url: &url::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}

/// One HTTP client for every app: connection pooling across apps on the same endpoint.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(concat!("tiw-push-exporter/", env!("CARGO_PKG_VERSION")))
        .pool_idle_timeout(Duration::from_secs(50))
        .connect_timeout(Duration::from_secs(5))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// Builds one [`TiwClient`] per app, sharing rate limiters between apps on the same credentials.
pub fn build_clients(
    config: &crate::config::Config,
    instruments: &ApiInstruments,
    retry: RetryPolicy,
) -> HashMap<u64, super::TiwClient> {
    let http = http_client();
    let limiters = Arc::new(Limiters::new(&config.apps));
    config
        .apps
        .iter()
        .map(|app| {
            let client =
                Client::new(http.clone(), app.api.clone(), limiters.clone(), instruments.clone()).with_retry(retry);
            (app.sdk_app_id, super::TiwClient::new(app.sdk_app_id, client))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Any {
        #[serde(rename = "RequestId")]
        request_id: Option<String>,
    }

    #[test]
    fn envelope_error_becomes_typed_error() {
        let body =
            br#"{"Response":{"Error":{"Code":"AuthFailure.SignatureExpire","Message":"expired"},"RequestId":"r-1"}}"#;
        let e = decode_reply::<Any>("e", 200, body).unwrap_err();
        assert_eq!(e.code(), Some("AuthFailure.SignatureExpire"));
        assert!(e.is_app_down());
        assert!(!e.is_retryable());
        let text = e.to_string();
        assert!(text.contains("r-1") && text.contains("clock"), "{text}");
    }

    #[test]
    fn bad_bodies_are_clear_errors() {
        let e = decode_reply::<Any>("http://x", 500, b"<html>oops</html>").unwrap_err();
        assert!(e.to_string().contains("HTTP 500"), "{e}");
        assert_eq!(e.metric_label(), "transport");
        let e = decode_reply::<Any>("http://x", 200, b"not json").unwrap_err();
        assert!(e.to_string().contains("not JSON"), "{e}");
        let e = decode_reply::<Any>("http://x", 200, b"[1,2]").unwrap_err();
        assert!(e.to_string().contains("Response"), "{e}");
        let ok = decode_reply::<Any>("http://x", 200, br#"{"Response":{"RequestId":"a"}}"#).unwrap();
        assert_eq!(ok.request_id.as_deref(), Some("a"));
    }

    #[test]
    fn retry_and_label_classification() {
        let t = |code: &str| ApiError::Tencent {
            code: code.into(),
            message: String::new(),
            request_id: String::new(),
        };
        assert!(t("InternalError").is_retryable());
        assert!(t("RequestLimitExceeded").is_retryable());
        assert!(t("RequestLimitExceeded.UinLimitExceeded").is_retryable());
        assert!(!t("AuthFailure.SignatureFailure").is_retryable());
        assert!(!t("FailedOperation.WhiteboardPush").is_retryable());
        assert_eq!(t("bad label\"}").metric_label(), "other");
        assert!(!t("FailedOperation.WhiteboardPush").is_app_down());
        assert!(!t("InvalidParameter.TaskNotFound").is_app_down());
        // Tencent's common code for a service briefly unavailable is transient.
        assert!(t("ServiceUnavailable").is_retryable());
        // CAM refusing one action: app-level for the action the app is watched with, never retried.
        for code in [
            "AuthFailure.UnauthorizedOperation",
            "UnauthorizedOperation",
            "ResourceUnavailable.InterfaceUnAuthorized",
        ] {
            assert!(
                t(code).is_action_denied() && t(code).is_app_down() && !t(code).is_retryable(),
                "{code}"
            );
        }
        assert!(!t("UnauthorizedOperation.SdkAppId").is_action_denied());
    }

    /// design §2: a code that is, or starts with `X.` for, an app-level family, plus three exact
    /// codes. Bare codes exist (Tencent's Go SDK lists `ResourceUnavailable` and
    /// `UnauthorizedOperation` themselves); a longer word is not the family.
    #[test]
    fn app_level_codes_follow_the_family_rule() {
        for code in [
            "AuthFailure",
            "AuthFailure.SignatureExpire",
            "ResourceUnavailable",
            "ResourceUnavailable.ServiceExpired",
            "UnauthorizedOperation.SdkAppId",
            "IpInBlacklist",
            "IpNotInWhitelist",
            "InvalidParameter.SdkAppIdNotFound",
            "UnsupportedRegion",
        ] {
            assert_eq!(ErrorKind::of_code(code), ErrorKind::AppLevel, "{code}");
        }
        for code in [
            "AuthFailureX",
            "ResourceUnavailableX.Y",
            "UnauthorizedOperations",
            "IpInBlacklist.Sub",
            "InvalidParameter",
            "InvalidParameter.TaskNotFound",
            "RequestLimitExceededX",
            "InternalErrorX",
        ] {
            assert_ne!(ErrorKind::of_code(code), ErrorKind::AppLevel, "{code}");
        }
        assert_eq!(ErrorKind::of_code("RequestLimitExceededX"), ErrorKind::Other);
        assert_eq!(ErrorKind::of_code("InternalError.DbError"), ErrorKind::Internal);
        assert_eq!(
            ErrorKind::of_code("InvalidParameter.TaskNotFound"),
            ErrorKind::TaskNotFound
        );
        assert_eq!(
            ErrorKind::of_code("FailedOperation.WhiteboardPush"),
            ErrorKind::TaskFailed
        );
    }

    #[test]
    fn host_header_keeps_explicit_ports_only() {
        let u = |s: &str| url::Url::parse(s).unwrap();
        assert_eq!(
            host_header(&u("https://tiw.tencentcloudapi.com")),
            "tiw.tencentcloudapi.com"
        );
        assert_eq!(
            host_header(&u("https://tiw.tencentcloudapi.com:443/")),
            "tiw.tencentcloudapi.com"
        );
        assert_eq!(host_header(&u("http://127.0.0.1:18080")), "127.0.0.1:18080");
    }
}

#[cfg(test)]
mod scheme_hint_tests {
    use super::scheme_hint;

    #[test]
    fn a_wrong_scheme_is_explained_in_words() {
        let tls_to_http = scheme_hint(Some("https"), "received corrupt message of type InvalidContentType");
        assert!(tls_to_http.contains("plain HTTP, not TLS"), "{tls_to_http}");
        let http_to_tls = scheme_hint(Some("http"), "invalid HTTP version parsed");
        assert!(http_to_tls.contains("likely TLS"), "{http_to_tls}");
        assert_eq!(scheme_hint(Some("https"), "connection refused"), "");
    }
}
