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
use std::sync::Arc;

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
        let basic_auth_users = match raw.basic_auth_users {
            Some(users) if !users.is_empty() => {
                for (user, hash) in &users {
                    if !hash.starts_with("$2") || hash.len() != 60 {
                        return Err(err(format!(
                            "basic_auth_users.{user}: expected a bcrypt hash ($2y$...), not a password"
                        )));
                    }
                }
                Some(BasicAuthUsers(users))
            }
            _ => None,
        };
        Ok(WebConfig { tls, basic_auth_users })
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
