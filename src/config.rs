//! YAML → validated [`Config`]: the only file that parses YAML (SPEC §5).
//!
//! The file is parsed to a YAML tree, `${VAR}` / `${VAR:-default}` are expanded in every string,
//! the tree is read into a raw serde shape whose leaves stay untyped, and [`validate`] then turns each
//! leaf into its real type. Keeping leaves untyped until validation lets `check-config` report
//! *every* problem at once, each with its key path, instead of stopping at serde's first error.
//! Unknown keys are collected with `serde_ignored` for the same reason.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_yaml::Value;
use url::Url;

/// Tencent's published ceiling: 20 requests per second per API action and account.
pub const MAX_REQUESTS_PER_SECOND: u32 = 20;
/// China site endpoint, the default.
pub const DEFAULT_ENDPOINT: &str = "https://tiw.tencentcloudapi.com";

/// The validated configuration. Built only by [`Config::from_yaml`] / [`Config::load`].
#[derive(Debug, Clone)]
pub struct Config {
    pub apps: Vec<AppConfig>,
    pub poll: PollConfig,
    pub callback: CallbackConfig,
    /// Directory of the embedded store.
    pub state_path: PathBuf,
    /// How long an ended task keeps its per-task series.
    pub retention_stopped_tasks: Duration,
    /// Tracked tasks at most (`retention.max_tasks`): the bound on memory and cardinality.
    pub max_tasks: usize,
    pub per_task_metrics: bool,
}

/// One SdkAppId and how to reach Tencent for it.
#[derive(Debug, Clone)]
pub struct AppConfig {
    pub sdk_app_id: u64,
    /// Key that signs this app's callbacks; `None`: push callbacks are refused as `unsigned`
    /// unless [`AppConfig::allow_unsigned_callbacks`].
    pub callback_key: Option<SecretString>,
    /// The key before a rotation, accepted too while events signed with it are still in flight.
    pub callback_key_previous: Option<SecretString>,
    /// Accept unsigned push events for an app without a key (anyone who finds the URL can then
    /// claim tasks: SPEC §3).
    pub allow_unsigned_callbacks: bool,
    /// Find running tasks with DescribeRunningTasks.
    pub discover: bool,
    /// Task ids to follow in any case.
    pub tasks: Vec<String>,
    pub api: ApiConfig,
}

/// How to call Tencent Cloud API 3.0 for one app.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub endpoint: Url,
    pub region: String,
    pub credentials: Credentials,
    /// Per action and account; 1..=20.
    pub requests_per_second: u32,
    /// Names the account the credentials belong to: SecretIds of one account share one budget.
    pub account: Option<String>,
    pub timeout: Duration,
}

/// API credentials. `Debug` shows the SecretId only; the key and token are redacted by `secrecy`.
#[derive(Clone)]
pub struct Credentials {
    pub secret_id: String,
    pub secret_key: SecretString,
    /// Present for temporary credentials; sent as `X-TC-Token`.
    pub session_token: Option<SecretString>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("secret_id", &self.secret_id)
            .field("secret_key", &"[REDACTED]")
            .field("session_token", &self.session_token.as_ref().map(|_| "[REDACTED]"))
            .finish()
    }
}

impl PartialEq for Credentials {
    fn eq(&self, other: &Self) -> bool {
        self.secret_id == other.secret_id
            && self.secret_key.expose_secret() == other.secret_key.expose_secret()
            && self.session_token.as_ref().map(|t| t.expose_secret().to_owned())
                == other.session_token.as_ref().map(|t| t.expose_secret().to_owned())
    }
}

#[derive(Debug, Clone)]
pub struct PollConfig {
    pub interval: Duration,
    pub discovery_interval: Duration,
}

/// `callback.max_in_flight` unless set: far above what group commit needs to keep up with TIW.
pub const DEFAULT_CALLBACKS_IN_FLIGHT: usize = 256;

#[derive(Debug, Clone)]
pub struct CallbackConfig {
    pub path: String,
    /// `None`: served on the main listener.
    pub listen_address: Option<SocketAddr>,
    pub max_body_bytes: usize,
    /// Callbacks handled at once; more are answered 503 so that TIW retries them.
    pub max_in_flight: usize,
    /// Aggregates follow a callback's unconfirmed claim only once the app's API could not be
    /// reached for this long (SPEC §3).
    pub confirm_timeout: Duration,
}

/// One problem found in a config file, with the key path it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Why a config could not be loaded: the file, or every problem in it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}", format_problems(.0))]
    Invalid(Vec<Problem>),
}

fn format_problems(problems: &[Problem]) -> String {
    let lines: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    lines.join("\n")
}

impl ConfigError {
    /// The problems, one a line, for `check-config`.
    pub fn problems(&self) -> Vec<String> {
        match self {
            ConfigError::Read { .. } => vec![self.to_string()],
            ConfigError::Invalid(p) => p.iter().map(|p| p.to_string()).collect(),
        }
    }
}

impl Config {
    /// Reads and validates a config file, expanding `${VAR}` from the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_yaml(&text, &|name| std::env::var(name).ok())
    }

    /// Parses and validates config text; `env` resolves `${VAR}` and the `TENCENTCLOUD_*` fallbacks.
    ///
    /// No message shows a value that came from the environment: it may be a secret that landed
    /// under the wrong key, so the variable's name stands in for it (`got "${VAR}"`).
    pub fn from_yaml(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let given = std::cell::RefCell::new(Vec::new());
        let recording = |name: &str| {
            let value = env(name);
            if let Some(v) = &value {
                given.borrow_mut().push((name.to_string(), v.clone()));
            }
            value
        };
        let parsed = Config::parse(text, &recording);
        parsed.map_err(|mut problems| {
            let mut given = given.take();
            // Longest first, so that a value inside another is not half replaced.
            given.sort_by_key(|(_, v)| std::cmp::Reverse(v.len()));
            for p in &mut problems {
                for (name, value) in &given {
                    if value.chars().count() >= MIN_REDACTED_CHARS {
                        p.message = p.message.replace(value.as_str(), &format!("${{{name}}}"));
                    }
                }
            }
            ConfigError::Invalid(problems)
        })
    }

    fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut tree: Value = match serde_yaml::from_str(text) {
            Ok(Value::Null) => Value::Mapping(Default::default()),
            Ok(v) => v,
            Err(e) => {
                return Err(vec![Problem {
                    path: String::new(),
                    message: format!("not valid YAML: {}", scrub(&e.to_string())),
                }])
            }
        };
        expand_tree(&mut tree, &mut String::new(), env, &mut problems);
        let mut unknown = Vec::new();
        let raw: RawFile = {
            let mut on_unknown = |path: serde_ignored::Path<'_>| unknown.push(key_path(&path));
            let de = serde_ignored::Deserializer::new(tree, &mut on_unknown);
            match serde_path_to_error::deserialize(de) {
                Ok(raw) => raw,
                Err(e) => {
                    let path = e.path().to_string();
                    problems.push(Problem {
                        path: if path == "." { String::new() } else { path },
                        message: scrub(&e.inner().to_string()),
                    });
                    return Err(problems);
                }
            }
        };
        for path in unknown {
            problems.push(Problem {
                path,
                message: "unknown key".into(),
            });
        }
        let config = validate(raw, env, &mut problems);
        // Defaults shared by several apps are checked once per app; report each problem once.
        let mut seen = HashSet::new();
        problems.retain(|p| seen.insert(p.to_string()));
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(problems)
        }
    }

    /// What is valid but probably not meant, one line each with its key path (`check-config`).
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (i, app) in self.apps.iter().enumerate() {
            match (&app.callback_key, app.allow_unsigned_callbacks) {
                (None, false) => out.push(format!(
                    "apps[{i}].callback_key: not set, so app {} can receive no push callback (they are refused as unsigned) and is watched by polling alone; set a key (callback set-key), or allow_unsigned_callbacks: true",
                    app.sdk_app_id
                )),
                (None, true) => out.push(format!(
                    "apps[{i}].allow_unsigned_callbacks: app {} accepts unsigned push callbacks: anyone who finds the callback URL can claim tasks for it; set a callback_key",
                    app.sdk_app_id
                )),
                (Some(_), true) => out.push(format!(
                    "apps[{i}].allow_unsigned_callbacks: has no effect while callback_key is set (signed events are required)"
                )),
                (Some(_), false) => {}
            }
        }
        out
    }

    /// The configuration of one app.
    pub fn app(&self, sdk_app_id: u64) -> Option<&AppConfig> {
        self.apps.iter().find(|a| a.sdk_app_id == sdk_app_id)
    }
}

/// `apps[0].colour` rather than serde_ignored's `apps.?.0.colour`.
fn key_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", key_path(parent)),
        Path::Map { parent, key } => {
            let parent = key_path(parent);
            if parent.is_empty() {
                key.clone()
            } else {
                format!("{parent}.{key}")
            }
        }
        Path::Some { parent } | Path::NewtypeStruct { parent } | Path::NewtypeVariant { parent } => key_path(parent),
    }
}

/// Values from the environment at least this long are kept out of messages; shorter ones cannot
/// be secrets, and replacing them would garble messages (`1` in `apps[1]`).
const MIN_REDACTED_CHARS: usize = 4;

/// Removes quoted string values from serde's messages: an expanded secret in the wrong place must
/// not be echoed back in an error.
fn scrub(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(i) = rest.find("string \"") {
        out.push_str(&rest[..i]);
        out.push_str("a string");
        // serde quotes the value as Rust's Debug does: `\"` and `\\` inside do not end it.
        let mut chars = rest[i + "string \"".len()..].char_indices();
        let after = &rest[i + "string \"".len()..];
        rest = "";
        while let Some((j, c)) = chars.next() {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => {
                    rest = &after[j + 1..];
                    break;
                }
                _ => {}
            }
        }
    }
    out.push_str(rest);
    out
}

// ---------------------------------------------------------------------------------------------
// ${VAR} expansion

fn expand_tree(v: &mut Value, path: &mut String, env: &dyn Fn(&str) -> Option<String>, problems: &mut Vec<Problem>) {
    match v {
        Value::String(s) => match expand(s, env) {
            Ok(expanded) => *s = expanded,
            Err(message) => problems.push(Problem {
                path: path.clone(),
                message,
            }),
        },
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                expand_tree(item, path, env, problems);
                path.truncate(len);
            }
        }
        Value::Mapping(map) => {
            for (key, item) in map.iter_mut() {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key.as_str().unwrap_or("?"));
                expand_tree(item, path, env, problems);
                path.truncate(len);
            }
        }
        Value::Tagged(t) => expand_tree(&mut t.value, path, env, problems),
        _ => {}
    }
}

/// Expands `${VAR}`, `${VAR:-default}` and the escape `$$` in one string.
pub fn expand(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body.find('}').ok_or_else(|| "unterminated ${...}".to_string())?;
            let inner = &body[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("invalid variable name in ${{{inner}}}"));
            }
            match (env(name).filter(|v| !(v.is_empty() && default.is_some())), default) {
                (Some(value), _) => out.push_str(&value),
                (None, Some(d)) => out.push_str(d),
                (None, None) => return Err(format!("environment variable {name} is not set")),
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Raw shape: structure typed, leaves untyped until `validate`.

#[derive(Deserialize, Default)]
struct RawFile {
    tencentcloud: Option<RawApi>,
    apps: Option<Vec<RawApp>>,
    poll: Option<RawPoll>,
    callback: Option<RawCallback>,
    state: Option<RawState>,
    retention: Option<RawRetention>,
    per_task_metrics: Option<Value>,
}

#[derive(Deserialize, Default, Clone)]
struct RawApi {
    endpoint: Option<Value>,
    region: Option<Value>,
    secret_id: Option<Value>,
    secret_key: Option<Value>,
    session_token: Option<Value>,
    requests_per_second: Option<Value>,
    account: Option<Value>,
    timeout: Option<Value>,
}

#[derive(Deserialize)]
struct RawApp {
    sdk_app_id: Option<Value>,
    callback_key: Option<Value>,
    callback_key_previous: Option<Value>,
    allow_unsigned_callbacks: Option<Value>,
    discover: Option<Value>,
    tasks: Option<Vec<Value>>,
    tencentcloud: Option<RawApi>,
}

#[derive(Deserialize, Default)]
struct RawPoll {
    interval: Option<Value>,
    discovery_interval: Option<Value>,
}

#[derive(Deserialize, Default)]
struct RawCallback {
    path: Option<Value>,
    listen_address: Option<Value>,
    max_body_bytes: Option<Value>,
    max_in_flight: Option<Value>,
    confirm_timeout: Option<Value>,
}

#[derive(Deserialize, Default)]
struct RawState {
    path: Option<Value>,
}

#[derive(Deserialize, Default)]
struct RawRetention {
    stopped_tasks: Option<Value>,
    max_tasks: Option<Value>,
}

// ---------------------------------------------------------------------------------------------
// Validation: every leaf converted, every problem collected.

struct Check<'a> {
    problems: &'a mut Vec<Problem>,
}

impl Check<'_> {
    fn fail(&mut self, path: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.to_string(),
            message: message.into(),
        });
    }

    /// A plain string; numbers and booleans are accepted as their text.
    fn string(&mut self, path: &str, v: Option<&Value>) -> Option<String> {
        match v? {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => {
                self.fail(path, "expected a string");
                None
            }
        }
    }

    /// A secret: never echoed in a message.
    fn secret(&mut self, path: &str, v: Option<&Value>) -> Option<String> {
        self.string(path, v).filter(|s| !s.is_empty())
    }

    fn integer(&mut self, path: &str, v: Option<&Value>) -> Option<i64> {
        let parsed = match v? {
            Value::Null => return None,
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.trim().parse::<i64>().ok(),
            _ => None,
        };
        if parsed.is_none() {
            self.fail(path, format!("expected an integer, got {}", describe(v?)));
        }
        parsed
    }

    fn boolean(&mut self, path: &str, v: Option<&Value>, default: bool) -> bool {
        let Some(v) = v else { return default };
        match v {
            Value::Null => default,
            Value::Bool(b) => *b,
            Value::String(s) if s == "true" => true,
            Value::String(s) if s == "false" => false,
            other => {
                self.fail(path, format!("expected true or false, got {}", describe(other)));
                default
            }
        }
    }

    fn duration(&mut self, path: &str, v: Option<&Value>, default: Duration) -> Duration {
        let Some(text) = self.string(path, v) else {
            return default;
        };
        match humantime::parse_duration(text.trim()) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                self.fail(path, "must be longer than 0");
                default
            }
            Err(_) => {
                self.fail(
                    path,
                    format!("expected a duration such as 500ms, 15s or 1h, got {text:?}"),
                );
                default
            }
        }
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::String(s) if s.len() <= 40 => format!("{s:?}"),
        Value::String(_) => "a long string".into(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "nothing".into(),
        Value::Sequence(_) => "a list".into(),
        Value::Mapping(_) => "a mapping".into(),
        Value::Tagged(_) => "a tagged value".into(),
    }
}

/// Layers an app's `tencentcloud` override over the defaults, key by key.
fn merge(base: &RawApi, over: Option<&RawApi>) -> (RawApi, [bool; 8]) {
    let Some(o) = over else {
        return (base.clone(), [false; 8]);
    };
    let pick = |a: &Option<Value>, b: &Option<Value>| b.clone().or_else(|| a.clone());
    let from_app = [
        o.endpoint.is_some(),
        o.region.is_some(),
        o.secret_id.is_some(),
        o.secret_key.is_some(),
        o.session_token.is_some(),
        o.requests_per_second.is_some(),
        o.timeout.is_some(),
        o.account.is_some(),
    ];
    (
        RawApi {
            endpoint: pick(&base.endpoint, &o.endpoint),
            region: pick(&base.region, &o.region),
            secret_id: pick(&base.secret_id, &o.secret_id),
            secret_key: pick(&base.secret_key, &o.secret_key),
            session_token: pick(&base.session_token, &o.session_token),
            requests_per_second: pick(&base.requests_per_second, &o.requests_per_second),
            timeout: pick(&base.timeout, &o.timeout),
            account: pick(&base.account, &o.account),
        },
        from_app,
    )
}

fn validate_api(
    c: &mut Check<'_>,
    raw: &RawApi,
    from_app: [bool; 8],
    app_path: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<ApiConfig> {
    let key = |i: usize, name: &str| {
        if from_app[i] {
            format!("{app_path}.tencentcloud.{name}")
        } else {
            format!("tencentcloud.{name}")
        }
    };
    let endpoint_text = c
        .string(&key(0, "endpoint"), raw.endpoint.as_ref())
        .unwrap_or_else(|| DEFAULT_ENDPOINT.into());
    let endpoint = match Url::parse(endpoint_text.trim()) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Some(u),
        _ => {
            c.fail(
                &key(0, "endpoint"),
                format!("expected an http(s) URL, got {endpoint_text:?}"),
            );
            None
        }
    };
    let default_region = match endpoint.as_ref().and_then(|u| u.host_str()) {
        Some(h) if h.contains(".intl.") => "ap-singapore",
        _ => "ap-guangzhou",
    };
    let region = c
        .string(&key(1, "region"), raw.region.as_ref())
        .unwrap_or_else(|| default_region.into());
    if region.is_empty() {
        c.fail(&key(1, "region"), "must not be empty");
    }
    // A key absent everywhere falls back to the usual Tencent Cloud environment variables.
    let secret_id = match raw.secret_id.as_ref() {
        Some(v) => c.secret(&key(2, "secret_id"), Some(v)),
        None => env("TENCENTCLOUD_SECRET_ID").filter(|s| !s.is_empty()),
    };
    let secret_key = match raw.secret_key.as_ref() {
        Some(v) => c.secret(&key(3, "secret_key"), Some(v)),
        None => env("TENCENTCLOUD_SECRET_KEY").filter(|s| !s.is_empty()),
    };
    let session_token = match raw.session_token.as_ref() {
        Some(v) => c.secret(&key(4, "session_token"), Some(v)),
        None => env("TENCENTCLOUD_SESSION_TOKEN").filter(|s| !s.is_empty()),
    };
    if secret_id.is_none() {
        c.fail(&key(2, "secret_id"), "missing: set it or TENCENTCLOUD_SECRET_ID");
    }
    if secret_key.is_none() {
        c.fail(&key(3, "secret_key"), "missing: set it or TENCENTCLOUD_SECRET_KEY");
    }
    let rps_path = key(5, "requests_per_second");
    let requests_per_second = match c.integer(&rps_path, raw.requests_per_second.as_ref()) {
        None => MAX_REQUESTS_PER_SECOND,
        Some(n) if (1..=MAX_REQUESTS_PER_SECOND as i64).contains(&n) => n as u32,
        Some(n) => {
            c.fail(
                &rps_path,
                format!("must be between 1 and {MAX_REQUESTS_PER_SECOND} (Tencent's limit per action), got {n}"),
            );
            MAX_REQUESTS_PER_SECOND
        }
    };
    let timeout = c.duration(&key(6, "timeout"), raw.timeout.as_ref(), Duration::from_secs(5));
    let account = c
        .string(&key(7, "account"), raw.account.as_ref())
        .map(|a| a.trim().to_string())
        .filter(|a| !a.is_empty());
    Some(ApiConfig {
        endpoint: endpoint?,
        region,
        credentials: Credentials {
            secret_id: secret_id?,
            secret_key: SecretString::from(secret_key?),
            session_token: session_token.map(SecretString::from),
        },
        requests_per_second,
        account,
        timeout,
    })
}

fn validate(raw: RawFile, env: &dyn Fn(&str) -> Option<String>, problems: &mut Vec<Problem>) -> Config {
    let mut c = Check { problems };
    let defaults = raw.tencentcloud.unwrap_or_default();
    let mut apps = Vec::new();
    let mut seen = HashSet::new();
    let raw_apps = raw.apps.unwrap_or_default();
    if raw_apps.is_empty() {
        c.fail("apps", "at least one app is needed");
    }
    for (i, app) in raw_apps.iter().enumerate() {
        let path = format!("apps[{i}]");
        let id_path = format!("{path}.sdk_app_id");
        let sdk_app_id = match c.integer(&id_path, app.sdk_app_id.as_ref()) {
            Some(n) if n > 0 => Some(n as u64),
            Some(n) => {
                c.fail(&id_path, format!("must be a positive integer, got {n}"));
                None
            }
            None if app.sdk_app_id.is_none() => {
                c.fail(&id_path, "missing");
                None
            }
            None => None,
        };
        if let Some(id) = sdk_app_id {
            if !seen.insert(id) {
                c.fail(&id_path, format!("duplicate sdk_app_id {id}"));
            }
        }
        let callback_key = c.secret(&format!("{path}.callback_key"), app.callback_key.as_ref());
        if callback_key.as_ref().is_some_and(|k| k.chars().count() > 64) {
            c.fail(
                &format!("{path}.callback_key"),
                "longer than 64 characters (Tencent's limit)",
            );
        }
        let previous_path = format!("{path}.callback_key_previous");
        let callback_key_previous = c.secret(&previous_path, app.callback_key_previous.as_ref());
        if callback_key_previous.as_ref().is_some_and(|k| k.chars().count() > 64) {
            c.fail(&previous_path, "longer than 64 characters (Tencent's limit)");
        }
        if callback_key_previous.is_some() && callback_key.is_none() {
            c.fail(
                &previous_path,
                "set without callback_key: during a rotation both are set",
            );
        }
        let allow_unsigned_callbacks = c.boolean(
            &format!("{path}.allow_unsigned_callbacks"),
            app.allow_unsigned_callbacks.as_ref(),
            false,
        );
        let discover = c.boolean(&format!("{path}.discover"), app.discover.as_ref(), true);
        let mut tasks = Vec::new();
        for (j, t) in app.tasks.iter().flatten().enumerate() {
            let tpath = format!("{path}.tasks[{j}]");
            match c.string(&tpath, Some(t)) {
                Some(s) if s.trim().is_empty() => c.fail(&tpath, "empty task id"),
                Some(s) if !crate::task::is_task_id(&s) => c.fail(
                    &tpath,
                    format!(
                        "not a task id: expected 1 to {} printable characters without spaces",
                        crate::task::MAX_TASK_ID
                    ),
                ),
                Some(s) if tasks.contains(&s) => {}
                Some(s) => tasks.push(s),
                None => {}
            }
        }
        let (merged, from_app) = merge(&defaults, app.tencentcloud.as_ref());
        let api = validate_api(&mut c, &merged, from_app, &path, env);
        if let (Some(sdk_app_id), Some(api)) = (sdk_app_id, api) {
            apps.push(AppConfig {
                sdk_app_id,
                callback_key: callback_key.map(SecretString::from),
                callback_key_previous: callback_key_previous.map(SecretString::from),
                allow_unsigned_callbacks,
                discover,
                tasks,
                api,
            });
        }
    }
    if raw_apps.is_empty() {
        // Still check the defaults, so a missing secret is reported together with the missing apps.
        validate_api(&mut c, &defaults, [false; 8], "", env);
    }

    let poll = raw.poll.unwrap_or_default();
    let poll = PollConfig {
        interval: c.duration("poll.interval", poll.interval.as_ref(), Duration::from_secs(15)),
        discovery_interval: c.duration(
            "poll.discovery_interval",
            poll.discovery_interval.as_ref(),
            Duration::from_secs(60),
        ),
    };

    let cb = raw.callback.unwrap_or_default();
    let cb_path = c
        .string("callback.path", cb.path.as_ref())
        .unwrap_or_else(|| "/callback".into());
    if !cb_path.starts_with('/') || cb_path.contains(char::is_whitespace) {
        c.fail(
            "callback.path",
            format!("must be a URL path starting with '/', got {cb_path:?}"),
        );
    }
    let listen_address = match c.string("callback.listen_address", cb.listen_address.as_ref()) {
        None => None,
        Some(s) if s.is_empty() => None,
        Some(s) => match parse_listen_address(&s) {
            Ok(a) => Some(a),
            Err(e) => {
                c.fail("callback.listen_address", e);
                None
            }
        },
    };
    let max_body_bytes = match c.integer("callback.max_body_bytes", cb.max_body_bytes.as_ref()) {
        None => 65536,
        Some(n) if n > 0 => n as usize,
        Some(n) => {
            c.fail("callback.max_body_bytes", format!("must be positive, got {n}"));
            65536
        }
    };

    let max_in_flight = match c.integer("callback.max_in_flight", cb.max_in_flight.as_ref()) {
        None => DEFAULT_CALLBACKS_IN_FLIGHT,
        Some(n) if n > 0 => n as usize,
        Some(n) => {
            c.fail("callback.max_in_flight", format!("must be positive, got {n}"));
            DEFAULT_CALLBACKS_IN_FLIGHT
        }
    };

    let state_path = c
        .string("state.path", raw.state.unwrap_or_default().path.as_ref())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "./data".into());
    let retention = raw.retention.unwrap_or_default();
    let retention_stopped_tasks = c.duration(
        "retention.stopped_tasks",
        retention.stopped_tasks.as_ref(),
        Duration::from_secs(3600),
    );
    let max_tasks = match c.integer("retention.max_tasks", retention.max_tasks.as_ref()) {
        None => crate::registry::DEFAULT_MAX_TASKS,
        Some(n) if n > 0 => n as usize,
        Some(n) => {
            c.fail("retention.max_tasks", format!("must be positive, got {n}"));
            crate::registry::DEFAULT_MAX_TASKS
        }
    };
    let confirm_timeout = c.duration(
        "callback.confirm_timeout",
        cb.confirm_timeout.as_ref(),
        Duration::from_secs(300),
    );
    let per_task_metrics = c.boolean("per_task_metrics", raw.per_task_metrics.as_ref(), true);

    Config {
        apps,
        poll,
        callback: CallbackConfig {
            path: cb_path,
            listen_address,
            max_body_bytes,
            max_in_flight,
            confirm_timeout,
        },
        state_path: PathBuf::from(state_path),
        retention_stopped_tasks,
        max_tasks,
        per_task_metrics,
    }
}

/// Parses a listen address the way Prometheus exporters write it: `:9897` means every interface.
pub fn parse_listen_address(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    let full = if s.starts_with(':') {
        format!("0.0.0.0{s}")
    } else {
        s.to_string()
    };
    if let Ok(a) = full.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Some(port) = full.strip_prefix("localhost:") {
        if let Ok(port) = port.parse::<u16>() {
            return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
        }
    }
    Err(format!("expected host:port such as :9897 or 127.0.0.1:9897, got {s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    }

    fn problems(text: &str, vars: &'static [(&'static str, &'static str)]) -> Vec<String> {
        match Config::from_yaml(text, &env(vars)) {
            Ok(_) => vec![],
            Err(e) => e.problems(),
        }
    }

    const EXAMPLE: &str = include_str!("../config.example.yaml");

    #[test]
    fn example_config_is_valid() {
        let c = Config::from_yaml(
            EXAMPLE,
            &env(&[("TENCENTCLOUD_SECRET_ID", "AKIDx"), ("TENCENTCLOUD_SECRET_KEY", "sk")]),
        )
        .unwrap();
        assert_eq!(c.apps[0].sdk_app_id, 1400000001);
        assert_eq!(c.apps[0].api.requests_per_second, 20);
        assert_eq!(c.poll.interval, Duration::from_secs(15));
        assert_eq!(c.callback.path, "/callback");
        assert!(c.apps[0].callback_key.is_none());
        assert!(c.apps[0].api.credentials.session_token.is_none());
    }

    #[test]
    fn expansion() {
        let e = env(&[("A", "x"), ("EMPTY", "")]);
        assert_eq!(expand("${A}", &e).unwrap(), "x");
        assert_eq!(expand("p${A}q", &e).unwrap(), "pxq");
        assert_eq!(expand("${B:-dflt}", &e).unwrap(), "dflt");
        assert_eq!(expand("${EMPTY:-d}", &e).unwrap(), "d");
        assert_eq!(expand("${B:-}", &e).unwrap(), "");
        assert_eq!(expand("$$5", &e).unwrap(), "$5");
        assert_eq!(expand("a$b", &e).unwrap(), "a$b");
        assert!(expand("${B}", &e).unwrap_err().contains("B is not set"));
        assert!(expand("${A", &e).is_err());
    }

    #[test]
    fn every_problem_is_reported_with_its_key_path() {
        let text = r#"
tencentcloud:
  secret_id: ${NOPE}
  requests_per_second: 50
  timeout: soon
apps:
  - sdk_app_id: 1400000001
    colour: blue
  - sdk_app_id: 1400000001
poll:
  interval: 15 parsecs
"#;
        let p = problems(text, &[]);
        let has = |needle: &str| p.iter().any(|l| l.contains(needle));
        assert!(
            has("tencentcloud.secret_id: environment variable NOPE is not set"),
            "{p:?}"
        );
        assert!(has("tencentcloud.secret_key: missing"), "{p:?}");
        assert!(
            has("tencentcloud.requests_per_second: must be between 1 and 20"),
            "{p:?}"
        );
        assert!(has("tencentcloud.timeout: expected a duration"), "{p:?}");
        assert!(has("apps[0].colour: unknown key"), "{p:?}");
        assert!(has("apps[1].sdk_app_id: duplicate sdk_app_id 1400000001"), "{p:?}");
        assert!(has("poll.interval: expected a duration"), "{p:?}");
    }

    #[test]
    fn per_app_override_and_numbers_from_env() {
        let text = r#"
tencentcloud: {secret_id: a, secret_key: b}
apps:
  - sdk_app_id: ${APP}
    tencentcloud: {secret_id: c, secret_key: d, requests_per_second: 5, endpoint: "https://tiw.intl.tencentcloudapi.com"}
  - sdk_app_id: 2
"#;
        let c = Config::from_yaml(text, &env(&[("APP", "1400000009")])).unwrap();
        assert_eq!(c.apps[0].sdk_app_id, 1400000009);
        assert_eq!(c.apps[0].api.credentials.secret_id, "c");
        assert_eq!(c.apps[0].api.requests_per_second, 5);
        assert_eq!(c.apps[0].api.region, "ap-singapore");
        assert_eq!(c.apps[1].api.credentials.secret_id, "a");
        assert_eq!(c.apps[1].api.region, "ap-guangzhou");
        assert_ne!(
            crate::tencentcloud::ratelimit::budget_key(&c.apps[0].api),
            crate::tencentcloud::ratelimit::budget_key(&c.apps[1].api)
        );
    }

    #[test]
    fn secrets_never_reach_errors_or_debug() {
        let text = "tencentcloud: {secret_id: a, secret_key: SUPERSECRETKEY}\napps: SUPERSECRETKEY\n";
        let p = problems(text, &[]);
        assert!(!p.is_empty());
        assert!(p.iter().all(|l| !l.contains("SUPERSECRETKEY")), "{p:?}");
        let ok = Config::from_yaml(
            "tencentcloud: {secret_id: a, secret_key: SUPERSECRETKEY, session_token: TOKENVALUE}\napps: [{sdk_app_id: 1, callback_key: CBKEYVALUE}]\n",
            &env(&[]),
        )
        .unwrap();
        let dbg = format!("{ok:?}");
        for s in ["SUPERSECRETKEY", "TOKENVALUE", "CBKEYVALUE"] {
            assert!(!dbg.contains(s), "{dbg}");
        }
    }

    /// Found by `cargo fuzz` (fuzz/regressions/config): a value from the environment under a key
    /// whose check echoes what it got. The variable's name is shown instead.
    #[test]
    fn values_from_the_environment_are_never_echoed() {
        let p = problems(
            "tencentcloud: {endpoint: \"https://x ${SK}\", region: \"${SK}\", secret_id: a, secret_key: b}\napps: [{sdk_app_id: 1}]\n",
            &[("SK", "SUPERSECRETKEY")],
        );
        assert!(!p.is_empty());
        assert!(p.iter().all(|l| !l.contains("SUPERSECRETKEY")), "{p:?}");
        assert!(
            p.iter()
                .any(|l| l.contains("tencentcloud.endpoint") && l.contains("${SK}")),
            "{p:?}"
        );
    }

    /// Found by `cargo fuzz` (fuzz/regressions/config): a whole file that is one YAML string with
    /// quotes in it, the secret expanded inside. serde quotes it with `\"` escapes; the scrub
    /// used to stop at the first one and echo the rest, secret included.
    #[test]
    fn a_quoted_string_with_escapes_is_scrubbed_whole() {
        let p = problems(r#"abc",${SK}"def"#, &[("SK", "SUPERSECRETKEY")]);
        assert!(!p.is_empty());
        assert!(p.iter().all(|l| !l.contains("SUPERSECRETKEY")), "{p:?}");
        assert_eq!(
            scrub(r#"invalid type: string "a\"b\\\"c" here, string "x", expected y"#),
            "invalid type: a string here, a string, expected y"
        );
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(parse_listen_address(":9897").unwrap(), "0.0.0.0:9897".parse().unwrap());
        assert_eq!(
            parse_listen_address("127.0.0.1:1").unwrap(),
            "127.0.0.1:1".parse().unwrap()
        );
        assert_eq!(parse_listen_address("[::1]:80").unwrap(), "[::1]:80".parse().unwrap());
        assert!(parse_listen_address("nope").is_err());
    }
}
