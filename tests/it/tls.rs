//! `--web.config.file`: TLS, basic auth and mutual TLS with certificates made here.

use std::path::Path;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tiw_push_exporter::exporter::ServeOptions;
use tiw_push_exporter::webconfig::WebConfig;

use crate::common::*;

struct Pki {
    ca_pem: String,
    client_ca: CertifiedIssuer<'static, KeyPair>,
    other_ca: CertifiedIssuer<'static, KeyPair>,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// A leaf certificate for `names`, signed by `issuer`: (cert PEM, key PEM).
fn leaf(names: &[&str], issuer: &CertifiedIssuer<'static, KeyPair>) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    (params.signed_by(&key, issuer).unwrap().pem(), key.serialize_pem())
}

/// Writes a server certificate and a web config; returns the CA (PEM) clients should trust.
fn setup(dir: &Path, client_auth: Option<&str>) -> (WebConfig, Pki) {
    let server_ca = ca("test server CA");
    let (cert, key) = leaf(&["localhost", "127.0.0.1"], &server_ca);
    std::fs::write(dir.join("server.crt"), cert).unwrap();
    std::fs::write(dir.join("server.key"), key).unwrap();
    let client_ca = ca("test client CA");
    std::fs::write(dir.join("clients.crt"), client_ca.pem()).unwrap();
    let hash = bcrypt::hash("s3cret-password", 4).unwrap();
    let mut yaml =
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  min_version: TLS12\n".to_string();
    if let Some(mode) = client_auth {
        yaml.push_str(&format!("  client_auth_type: {mode}\n  client_ca_file: clients.crt\n"));
    }
    yaml.push_str(&format!("basic_auth_users:\n  prometheus: \"{hash}\"\n"));
    std::fs::write(dir.join("web.yml"), yaml).unwrap();
    let web = WebConfig::load(&dir.join("web.yml")).expect("web config loads");
    let other_ca = ca("someone else's CA");
    (
        web,
        Pki {
            ca_pem: server_ca.pem(),
            client_ca,
            other_ca,
        },
    )
}

/// A simulator and an exporter serving with `web`.
async fn start_with_web(web: WebConfig) -> (tiw_push_exporter::simulator::SimServer, Running) {
    let sim = start_sim(sim_config(&[1400000001])).await;
    let options = ServeOptions {
        web,
        ..Default::default()
    };
    let yaml = config_yaml(&sim.endpoint(), &[1400000001], "1s", "");
    let exporter = start_exporter_with(&yaml, tempfile::tempdir().unwrap(), options).await;
    (sim, exporter)
}

fn client(pki: &Pki, identity: Option<(String, String)>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap())
        .use_rustls_tls();
    if let Some((cert, key)) = identity {
        b = b.identity(reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).unwrap());
    }
    b.build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_basic_auth() {
    let dir = tempfile::tempdir().unwrap();
    let (web, pki) = setup(dir.path(), None);
    let (sim, exporter) = start_with_web(web).await;
    let https = format!("https://localhost:{}", exporter.addr.port());
    let c = client(&pki, None);

    let ok = c
        .get(format!("{https}/metrics"))
        .basic_auth("prometheus", Some("s3cret-password"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert!(ok.text().await.unwrap().contains("tiw_exporter_build_info"));
    let wrong = c
        .get(format!("{https}/metrics"))
        .basic_auth("prometheus", Some("guess"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().contains_key("www-authenticate"));
    assert_eq!(
        c.get(format!("{https}/metrics"))
            .basic_auth("nobody", Some("s3cret-password"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        c.get(format!("{https}/metrics")).send().await.unwrap().status(),
        401,
        "missing credentials"
    );
    assert_eq!(
        c.get(format!("{https}/")).send().await.unwrap().status(),
        401,
        "the landing page is guarded"
    );
    assert_eq!(
        c.post(format!("{https}/-/reload")).send().await.unwrap().status(),
        401,
        "reload is guarded"
    );
    assert_eq!(
        c.get(format!("{https}/-/healthy")).send().await.unwrap().status(),
        200,
        "probes stay open"
    );
    // Callbacks carry their own signature: no basic auth, but TLS.
    let cb = c.post(format!("{https}/callback")).body("{}").send().await.unwrap();
    assert_eq!(cb.status(), 400);
    // Plain HTTP on the TLS port gets no answer.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/metrics", exporter.addr.port()))
        .send()
        .await;
    assert!(
        plain.is_err() || !plain.unwrap().status().is_success(),
        "plain http must be refused"
    );
    // A client that does not trust the server's CA refuses it.
    assert!(reqwest::Client::new()
        .get(format!("{https}/-/healthy"))
        .send()
        .await
        .is_err());
    exporter.stop().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_requires_a_certificate_from_the_client_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (web, pki) = setup(dir.path(), Some("RequireAndVerifyClientCert"));
    let (sim, exporter) = start_with_web(web).await;
    let url = format!("https://localhost:{}/-/healthy", exporter.addr.port());
    assert!(
        client(&pki, None).get(&url).send().await.is_err(),
        "no client certificate"
    );
    let stranger = leaf(&["prometheus"], &pki.other_ca);
    assert!(
        client(&pki, Some(stranger)).get(&url).send().await.is_err(),
        "a certificate from another CA"
    );
    let trusted = leaf(&["prometheus"], &pki.client_ca);
    let res = client(&pki, Some(trusted))
        .get(&url)
        .send()
        .await
        .expect("a certificate from the client CA");
    assert_eq!(res.status(), 200);
    exporter.stop().await;
    sim.stop().await;
}

#[test]
fn a_bad_web_config_stops_the_binary_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("web.yml"),
        "tls_server_config:\n  cert_file: missing.crt\n  key_file: missing.key\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("config.yaml"),
        config_yaml("http://127.0.0.1:1", &[1400000001], "1s", ""),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tiw-push-exporter"))
        .arg("--config.file")
        .arg(dir.path().join("config.yaml"))
        .arg("--web.config.file")
        .arg(dir.path().join("web.yml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("web.yml") && err.contains("tls_server_config.cert_file") && err.contains("missing.crt"),
        "{err}"
    );
}

/// A client that trusts `ca_pem` only; every request on a new connection (no pooling), so each
/// sees the certificate the server hands out now.
fn fresh_client(ca_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .use_rustls_tls()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_and_users_rotate_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (web, pki) = setup(dir.path(), None);
    let sim = start_sim(sim_config(&[1400000001])).await;
    let options = ServeOptions {
        web,
        web_config_file: Some(dir.path().join("web.yml")),
        ..Default::default()
    };
    let yaml = config_yaml(&sim.endpoint(), &[1400000001], "1s", "");
    let exporter = start_exporter_with(&yaml, tempfile::tempdir().unwrap(), options).await;
    let url = |path: &str| format!("https://localhost:{}{path}", exporter.addr.port());
    let metrics_with = |client: &reqwest::Client, password: &str| {
        client
            .get(url("/metrics"))
            .basic_auth("prometheus", Some(password.to_string()))
            .send()
    };
    let old = fresh_client(&pki.ca_pem);
    assert_eq!(metrics_with(&old, "s3cret-password").await.unwrap().status(), 200);

    // A new certificate from another CA and a new password, as a rotation writes them: new files,
    // then the web config renamed into place.
    let next_ca = ca("next server CA");
    let (cert, key) = leaf(&["localhost"], &next_ca);
    std::fs::write(dir.path().join("server2.key"), key).unwrap();
    std::fs::write(dir.path().join("server2.crt"), cert).unwrap();
    let new_hash = bcrypt::hash("rotated-password", 4).unwrap();
    let rotated = format!(
        "tls_server_config:\n  cert_file: server2.crt\n  key_file: server2.key\nbasic_auth_users:\n  prometheus: \"{new_hash}\"\n"
    );
    let replace = |name: &str, text: &str| {
        std::fs::write(dir.path().join("next.tmp"), text).unwrap();
        std::fs::rename(dir.path().join("next.tmp"), dir.path().join(name)).unwrap();
    };
    replace("web.yml", &rotated);
    let new = fresh_client(&next_ca.pem());
    let res = wait_for(Duration::from_secs(10), "the new certificate", || async {
        metrics_with(&new, "rotated-password").await.ok()
    })
    .await;
    assert_eq!(res.status(), 200, "the new password works");
    assert!(
        metrics_with(&old, "s3cret-password").await.is_err(),
        "new connections no longer get the old certificate"
    );
    assert_eq!(
        metrics_with(&new, "s3cret-password").await.unwrap().status(),
        401,
        "the old password no longer works"
    );
    let m = Metrics::parse(
        &metrics_with(&new, "rotated-password")
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    assert_eq!(m.get("tiw_exporter_web_config_last_reload_successful", &[]), Some(1.0));

    // A broken certificate: refused, logged and counted; the rotated one stays in force.
    replace("server2.crt", "-----BEGIN CERTIFICATE-----\nbroken\n");
    let m = wait_for(Duration::from_secs(10), "the refusal to be counted", || async {
        let res = metrics_with(&new, "rotated-password").await.ok()?;
        let m = Metrics::parse(&res.text().await.ok()?);
        (m.get("tiw_exporter_web_config_reload_failures_total", &[]) >= Some(1.0)).then_some(m)
    })
    .await;
    assert_eq!(m.get("tiw_exporter_web_config_last_reload_successful", &[]), Some(0.0));
    assert_eq!(new.get(url("/-/healthy")).send().await.unwrap().status(), 200);
    exporter.stop().await;
    sim.stop().await;
}
