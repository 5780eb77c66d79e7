//! `--web.config.file`: TLS and basic auth in the Prometheus exporter-toolkit's format.
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt
//!   key_file: server.key
//!   client_auth_type: RequireAndVerifyClientCert   # or NoClientCert (default), VerifyClientCertIfGiven
//!   client_ca_file: clients-ca.crt
//!   min_version: TLS12                             # or TLS13
//! basic_auth_users:
//!   prometheus: $2y$10$...                         # bcrypt hash (htpasswd -nBC 10 "" | tr -d ':')
//! ```
//!
//! TLS is rustls (TLS 1.2 and 1.3 only). Basic auth guards `/metrics`, `/-/reload` and the landing
//! page; `/-/healthy` and `/-/ready` stay open for probes, and callbacks keep their own signature
//! check. Keys the toolkit has but this exporter does not support are refused by name, never ignored.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};

/// A TLS handshake that has not finished by then is dropped.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebConfig {
    tls_server_config: Option<RawTls>,
    basic_auth_users: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    client_auth_type: Option<String>,
    client_ca_file: Option<PathBuf>,
    min_version: Option<String>,
    max_version: Option<String>,
}

/// A web config that cannot be used; the message names the file and the key.
#[derive(Debug, thiserror::Error)]
#[error("--web.config.file {path}: {message}")]
pub struct WebConfigError {
    path: PathBuf,
    message: String,
}

/// A validated web config.
#[derive(Clone, Default)]
pub struct WebConfig {
    pub tls: Option<Arc<ServerConfig>>,
    pub auth: Option<Arc<BasicAuth>>,
}

impl std::fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebConfig")
            .field("tls", &self.tls.is_some())
            .field("auth", &self.auth.is_some())
            .finish()
    }
}

fn version(key: &str, v: &str) -> Result<&'static rustls::SupportedProtocolVersion, String> {
    match v {
        "TLS12" => Ok(&rustls::version::TLS12),
        "TLS13" => Ok(&rustls::version::TLS13),
        "TLS10" | "TLS11" => Err(format!(
            "tls_server_config.{key}: {v} is not supported (TLS 1.2 and 1.3 only)"
        )),
        other => Err(format!(
            "tls_server_config.{key}: expected TLS12 or TLS13, got {other:?}"
        )),
    }
}

fn read_certs(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("tls_server_config.{key}: cannot read {}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| {
            format!(
                "tls_server_config.{key}: {} is not PEM certificates: {e}",
                path.display()
            )
        })?;
    if certs.is_empty() {
        return Err(format!("tls_server_config.{key}: no certificate in {}", path.display()));
    }
    Ok(certs)
}

fn build_tls(raw: RawTls, base: &Path) -> Result<ServerConfig, String> {
    let resolve = |p: PathBuf| if p.is_relative() { base.join(p) } else { p };
    let cert_file = raw
        .cert_file
        .map(resolve)
        .ok_or("tls_server_config.cert_file: missing")?;
    let key_file = raw.key_file.map(resolve).ok_or("tls_server_config.key_file: missing")?;
    let certs = read_certs("cert_file", &cert_file)?;
    let key = PrivateKeyDer::from_pem_file(&key_file).map_err(|e| {
        format!(
            "tls_server_config.key_file: cannot read a private key from {}: {e}",
            key_file.display()
        )
    })?;
    let min = version("min_version", raw.min_version.as_deref().unwrap_or("TLS12"))?;
    let max = version("max_version", raw.max_version.as_deref().unwrap_or("TLS13"))?;
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = match (min.version, max.version) {
        (rustls::ProtocolVersion::TLSv1_3, rustls::ProtocolVersion::TLSv1_2) => {
            return Err("tls_server_config: min_version is above max_version".into())
        }
        (rustls::ProtocolVersion::TLSv1_3, _) => vec![&rustls::version::TLS13],
        (_, rustls::ProtocolVersion::TLSv1_2) => vec![&rustls::version::TLS12],
        _ => vec![&rustls::version::TLS12, &rustls::version::TLS13],
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| format!("tls_server_config: {e}"))?;
    let auth_type = raw.client_auth_type.as_deref().unwrap_or("NoClientCert");
    let roots = || -> Result<Arc<RootCertStore>, String> {
        let ca = raw
            .client_ca_file
            .clone()
            .map(resolve)
            .ok_or_else(|| format!("tls_server_config.client_ca_file: needed for {auth_type}"))?;
        let mut roots = RootCertStore::empty();
        for cert in read_certs("client_ca_file", &ca)? {
            roots
                .add(cert)
                .map_err(|e| format!("tls_server_config.client_ca_file: {e}"))?;
        }
        Ok(Arc::new(roots))
    };
    let builder = match auth_type {
        "NoClientCert" => builder.with_no_client_auth(),
        "RequireAndVerifyClientCert" => {
            let verifier = WebPkiClientVerifier::builder_with_provider(roots()?, provider).build().map_err(|e| format!("tls_server_config.client_ca_file: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
        "VerifyClientCertIfGiven" => {
            let verifier = WebPkiClientVerifier::builder_with_provider(roots()?, provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| format!("tls_server_config.client_ca_file: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
        "RequestClientCert" | "RequireAnyClientCert" => {
            return Err(format!("tls_server_config.client_auth_type: {auth_type} (unverified client certificates) is not supported; use RequireAndVerifyClientCert or VerifyClientCertIfGiven"))
        }
        other => return Err(format!("tls_server_config.client_auth_type: unknown value {other:?}")),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("tls_server_config: the certificate and key do not fit: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

impl WebConfig {
    /// Reads and validates a web config file; relative paths in it are relative to the file.
    pub fn load(path: &Path) -> Result<WebConfig, WebConfigError> {
        let err = |message: String| WebConfigError {
            path: path.to_owned(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
        let raw: RawWebConfig = match serde_yaml::from_str::<Option<RawWebConfig>>(&text) {
            Ok(Some(raw)) => raw,
            Ok(None) => return Ok(WebConfig::default()),
            Err(e) => return Err(err(format!("{e} (supported: tls_server_config, basic_auth_users)"))),
        };
        let base = path.parent().unwrap_or(Path::new("."));
        let tls = raw
            .tls_server_config
            .map(|t| build_tls(t, base))
            .transpose()
            .map_err(err)?
            .map(Arc::new);
        let auth = match raw.basic_auth_users {
            Some(users) if !users.is_empty() => {
                for (user, hash) in &users {
                    if !hash.starts_with("$2") || hash.len() != 60 {
                        return Err(err(format!(
                            "basic_auth_users.{user}: expected a bcrypt hash ($2y$...), not a password"
                        )));
                    }
                }
                Some(Arc::new(BasicAuth::new(users)))
            }
            _ => None,
        };
        Ok(WebConfig { tls, auth })
    }
}

/// bcrypt checks at once at most: each costs a core for tens of milliseconds, and
/// `spawn_blocking` would otherwise start a thread per wrong password under a flood.
pub const MAX_CONCURRENT_BCRYPT: usize = 2;
/// Verified credentials remembered (least recently used dropped first).
const VERIFIED_CACHE: usize = 64;

/// bcrypt-checked users. Only credentials that verified are cached, so a flood of wrong passwords
/// can neither evict the real scraper's entry nor make it pay bcrypt again; bcrypt work is
/// bounded by [`MAX_CONCURRENT_BCRYPT`], past which a request is refused at once.
pub struct BasicAuth {
    users: BTreeMap<String, String>,
    /// (user, SHA-256 of the password) of verified credentials, most recently used last.
    verified: Mutex<VecDeque<(String, [u8; 32])>>,
    bcrypt_slots: Arc<tokio::sync::Semaphore>,
}

/// The outcome of checking an `Authorization` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthCheck {
    Allowed,
    Denied,
    /// Every bcrypt slot is busy: refused at once (503), counted as `auth_busy`.
    Busy,
}

/// A real bcrypt hash (of a random password, cost 10), verified for unknown users so that the
/// time taken does not tell which users exist.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| {
        let random: [u8; 16] = rand::random();
        bcrypt::hash(hex::encode(random), 10).unwrap_or_default()
    })
}

impl BasicAuth {
    fn new(users: BTreeMap<String, String>) -> BasicAuth {
        BasicAuth {
            users,
            verified: Mutex::new(VecDeque::with_capacity(VERIFIED_CACHE)),
            bcrypt_slots: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_BCRYPT)),
        }
    }

    /// Checks an `Authorization` header value.
    pub async fn check(self: &Arc<Self>, header_value: Option<&str>) -> AuthCheck {
        use base64::Engine;
        let Some(encoded) = header_value.and_then(|h| h.strip_prefix("Basic ")) else {
            return AuthCheck::Denied;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
            return AuthCheck::Denied;
        };
        let Ok(text) = String::from_utf8(decoded) else {
            return AuthCheck::Denied;
        };
        let Some((user, password)) = text.split_once(':') else {
            return AuthCheck::Denied;
        };
        let digest: [u8; 32] = Sha256::digest(password.as_bytes()).into();
        let key = (user.to_string(), digest);
        {
            let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(i) = verified.iter().position(|k| *k == key) {
                if let Some(hit) = verified.remove(i) {
                    verified.push_back(hit);
                }
                return AuthCheck::Allowed;
            }
        }
        let Ok(slot) = self.bcrypt_slots.clone().try_acquire_owned() else {
            return AuthCheck::Busy;
        };
        let hash = self.users.get(user).cloned();
        let password = password.to_string();
        let ok = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let known = hash.is_some();
            let hash = hash.unwrap_or_else(|| dummy_hash().to_string());
            bcrypt::verify(&password, &hash).unwrap_or(false) && known
        })
        .await
        .unwrap_or(false);
        if !ok {
            return AuthCheck::Denied;
        }
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if verified.len() >= VERIFIED_CACHE {
            verified.pop_front();
        }
        verified.push_back(key);
        AuthCheck::Allowed
    }
}

/// Middleware: paths in `open` pass; every other one needs a valid `Authorization: Basic`.
/// What [`require_auth`] needs: the users, the paths left open, and where refusals are counted.
pub type AuthState = (Arc<BasicAuth>, Arc<Vec<String>>, Arc<crate::metrics::ExporterMetrics>);

pub async fn require_auth(State((auth, open, metrics)): State<AuthState>, req: Request, next: Next) -> Response {
    if open.iter().any(|p| p == req.uri().path()) {
        return next.run(req).await;
    }
    let header_value = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    match auth.check(header_value).await {
        AuthCheck::Allowed => next.run(req).await,
        AuthCheck::Denied => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, r#"Basic realm="tiw-push-exporter""#)],
            "Unauthorized\n",
        )
            .into_response(),
        AuthCheck::Busy => {
            metrics.count_refused("auth", "auth_busy");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "1")],
                "too many password checks at once, retry later\n",
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn bad_web_configs_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (
                "tls_server_config:\n  cert_file: nope.crt\n  key_file: nope.key\n",
                "tls_server_config.cert_file: cannot read",
            ),
            (
                "basic_auth_users:\n  alice: secret\n",
                "basic_auth_users.alice: expected a bcrypt hash",
            ),
            (
                "http_server_config:\n  http2: true\n",
                "unknown field `http_server_config`",
            ),
            (
                "tls_server_config:\n  key_file: k\n",
                "tls_server_config.cert_file: missing",
            ),
        ];
        for (text, expected) in cases {
            let p = write(dir.path(), "web.yml", text);
            let e = WebConfig::load(&p).unwrap_err().to_string();
            assert!(e.contains(expected) && e.contains("web.yml"), "{text}: {e}");
            assert!(!e.contains("secret"), "{e}");
        }
    }
}
