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
//! This module reads and checks the file; serving it is elsewhere: TLS in `server`, basic auth in
//! `http::auth`. TLS is rustls (TLS 1.2 and 1.3 only). Keys the toolkit has but this exporter does
//! not support are refused by name, never ignored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use sha2::{Digest, Sha256};

use serde::Deserialize;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};

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
    /// `None` when the file lists no user: no basic auth.
    pub basic_auth_users: Option<BasicAuthUsers>,
    /// The files it was read from (the web config, then the certificate, key and client CA it
    /// names): what [`LiveWebConfig`] watches for changes.
    sources: Vec<PathBuf>,
}

impl std::fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebConfig")
            .field("tls", &self.tls.is_some())
            .field("basic_auth_users", &self.basic_auth_users)
            .finish()
    }
}

/// `basic_auth_users`: user name to bcrypt hash, each checked to be a bcrypt hash. Its `Debug`
/// names the users, never the hashes.
#[derive(Clone)]
pub struct BasicAuthUsers(BTreeMap<String, String>);

impl BasicAuthUsers {
    /// The bcrypt hash of `user`, if it is listed.
    pub fn hash(&self, user: &str) -> Option<&str> {
        self.0.get(user).map(String::as_str)
    }
}

impl std::fmt::Debug for BasicAuthUsers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
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

fn build_tls(raw: RawTls, base: &Path, sources: &mut Vec<PathBuf>) -> Result<ServerConfig, String> {
    let resolve = |p: PathBuf| if p.is_relative() { base.join(p) } else { p };
    sources.extend(
        [&raw.cert_file, &raw.key_file, &raw.client_ca_file]
            .into_iter()
            .flatten()
            .map(|p| resolve(p.clone())),
    );
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
        // An empty document (a 0-byte file, comments alone, `null`, /dev/null) is an error, not
        // "no TLS and no auth": a file caught half-written, or emptied by mistake, must never
        // switch authentication off. A web config with nothing in it is no web config: leave out
        // the flag.
        let raw: RawWebConfig = match serde_yaml::from_str::<Option<RawWebConfig>>(&text) {
            Ok(Some(raw)) => raw,
            Ok(None) => {
                return Err(err(
                    "the file is empty (or only comments, or null): expected tls_server_config and/or basic_auth_users; to serve without either, leave out --web.config.file".into(),
                ))
            }
            Err(e) => return Err(err(format!("{e} (supported: tls_server_config, basic_auth_users)"))),
        };
        if raw.tls_server_config.is_none() && raw.basic_auth_users.is_none() {
            return Err(err(
                "neither tls_server_config nor basic_auth_users is set; to serve without either, leave out --web.config.file".into(),
            ));
        }
        let base = path.parent().unwrap_or(Path::new("."));
        let mut sources = vec![path.to_owned()];
        let tls = raw
            .tls_server_config
            .map(|t| build_tls(t, base, &mut sources))
            .transpose()
            .map_err(err)?
            .map(Arc::new);
        let basic_auth_users = match raw.basic_auth_users {
            Some(users) if users.is_empty() => {
                return Err(err(
                    "basic_auth_users: lists no user; remove the key to serve without basic auth".into(),
                ))
            }
            Some(users) => {
                for (user, hash) in &users {
                    if !hash.starts_with("$2") || hash.len() != 60 {
                        return Err(err(format!(
                            "basic_auth_users.{user}: expected a bcrypt hash ($2y$...), not a password"
                        )));
                    }
                }
                Some(BasicAuthUsers(users))
            }
            None => None,
        };
        Ok(WebConfig {
            tls,
            basic_auth_users,
            sources,
        })
    }
}

/// How often [`LiveWebConfig::check`] runs while the exporter serves.
pub const WEB_CONFIG_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The web config in force, re-read when its files change, as the exporter-toolkit re-reads its
/// file: a rotated certificate is served to new connections without a restart. A file that no
/// longer loads keeps the previous config in force (the caller logs and counts the refusal).
///
/// Whether a listener speaks TLS is fixed at start: a change that adds or removes
/// `tls_server_config` is refused, since it would need the listeners re-bound.
pub struct LiveWebConfig {
    /// The web config file; `None`: fixed for the process's life.
    path: Option<PathBuf>,
    current: RwLock<Arc<WebConfig>>,
    /// Bumped on every change taken, so that readers can rebuild what they derive from it.
    generation: AtomicU64,
    /// Digest of the watched files as last read, taken or refused.
    seen: Mutex<[u8; 32]>,
}

impl std::fmt::Debug for LiveWebConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveWebConfig")
            .field("path", &self.path)
            .field("current", &self.current())
            .finish()
    }
}

/// A digest of `files`' names and contents (an unreadable file counts as its error), so that any
/// rewrite, replacement or removal changes it.
fn digest(files: &[PathBuf]) -> [u8; 32] {
    let mut hash = Sha256::new();
    for file in files {
        hash.update(file.as_os_str().as_encoded_bytes());
        match std::fs::read(file) {
            Ok(bytes) => {
                hash.update([1]);
                hash.update((bytes.len() as u64).to_le_bytes());
                hash.update(&bytes);
            }
            Err(e) => {
                hash.update([0]);
                hash.update(e.kind().to_string());
            }
        }
    }
    hash.finalize().into()
}

impl LiveWebConfig {
    /// `initial`, re-read from `path` when it or the files it names change (`None`: never).
    pub fn new(initial: WebConfig, path: Option<PathBuf>) -> Arc<LiveWebConfig> {
        let watched: Vec<PathBuf> = path
            .iter()
            .cloned()
            .chain(initial.sources.iter().filter(|p| Some(*p) != path.as_ref()).cloned())
            .collect();
        let seen = digest(&watched);
        Arc::new(LiveWebConfig {
            path,
            current: RwLock::new(Arc::new(initial)),
            generation: AtomicU64::new(0),
            seen: Mutex::new(seen),
        })
    }

    /// The config in force.
    pub fn current(&self) -> Arc<WebConfig> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The TLS config new connections get (`None`: plain HTTP).
    pub fn tls(&self) -> Option<Arc<ServerConfig>> {
        self.current().tls.clone()
    }

    /// Changes taken since start.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The files watched: the web config file itself always (whatever the config in force names,
    /// and after a refused change too), then the certificates, key and CA the config in force names.
    fn watched(&self, path: &Path, current: &WebConfig) -> Vec<PathBuf> {
        std::iter::once(path.to_owned())
            .chain(current.sources.iter().filter(|p| p.as_path() != path).cloned())
            .collect()
    }

    /// Re-reads the file when it or a file it names changed since the last look: `None` when
    /// nothing changed, `Some(Ok)` when the new config is in force, `Some(Err)` when it was
    /// refused and the previous one stays. A refused file is not reported again until it changes.
    ///
    /// A change may not weaken authentication while serving: one that removes every basic-auth
    /// user (or adds or removes TLS) is refused and needs a restart, so no hot change, careless or
    /// half-written, can open the endpoints.
    pub fn check(&self) -> Option<Result<(), WebConfigError>> {
        let path = self.path.as_ref()?;
        let current = self.current();
        let now = digest(&self.watched(path, &current));
        {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if *seen == now {
                return None;
            }
            *seen = now;
        }
        let next = match WebConfig::load(path) {
            Ok(next) => next,
            Err(e) => return Some(Err(e)),
        };
        if next.tls.is_some() != current.tls.is_some() {
            return Some(Err(WebConfigError {
                path: path.clone(),
                message: format!(
                    "tls_server_config was {}: switching the listeners between HTTP and HTTPS needs a restart",
                    if next.tls.is_some() { "added" } else { "removed" }
                ),
            }));
        }
        if current.basic_auth_users.is_some() && next.basic_auth_users.is_none() {
            return Some(Err(WebConfigError {
                path: path.clone(),
                message: "basic_auth_users was removed: switching basic auth off needs a restart (a hot change may not open the endpoints)".into(),
            }));
        }
        // The new files' digest: a config that now names other files is watched through those.
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = digest(&self.watched(path, &next));
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
        self.generation.fetch_add(1, Ordering::AcqRel);
        Some(Ok(()))
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
            ("", "the file is empty"),
            ("# only a comment\n", "the file is empty"),
            ("null\n", "the file is empty"),
            ("basic_auth_users: {}\n", "basic_auth_users: lists no user"),
            ("basic_auth_users:\n", "neither tls_server_config nor basic_auth_users"),
            (
                "basic_auth_users:\n  alice: $2y$10$abcdefghijklmnopqrstu\n",
                "basic_auth_users.alice: expected a bcrypt hash",
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
