//! The Prometheus exporter-toolkit's flags and conventions, each on the binary as an operator runs
//! it: several listen addresses, `--web.disable-exporter-metrics`, logfmt's `msg=`, and the health
//! check that follows the listen address and TLS the exporter runs with.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_tiw-push-exporter");
const APP: u64 = 1400000001;

fn config(dir: &Path, endpoint: &str) -> std::path::PathBuf {
    write_config_file(dir, &config_yaml(endpoint, &[APP], "1s", ""))
}

/// Every address the exporter logged it listens on, once `n` are logged.
async fn listening(proc: &Proc, n: usize) -> Vec<String> {
    wait_for(Duration::from_secs(10), "the listening lines", || async {
        let addresses: Vec<String> = proc
            .log
            .lock()
            .ok()?
            .iter()
            .filter(|l| l.contains("msg=listening"))
            .filter_map(|l| logged_address(l))
            .collect();
        (addresses.len() >= n).then_some(addresses)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_listen_address_serves_the_same_routes() {
    let sim = start_sim(sim_config(&[APP])).await;
    let dir = tempfile::tempdir().unwrap();
    let proc = spawn_exporter(
        Path::new(BIN),
        &config(dir.path(), &sim.endpoint()),
        &["--web.listen-address", "127.0.0.1:0"],
    );
    let addresses = listening(&proc, 2).await;
    assert_eq!(addresses.len(), 2, "{addresses:?}");
    assert_ne!(addresses[0], addresses[1]);
    for addr in &addresses {
        wait_ready(&format!("http://{addr}/-/ready")).await;
        let m = scrape(addr).await;
        assert!(m.sum("tiw_exporter_build_info", &[]) == 1.0, "{addr}");
    }
    // The same address twice cannot be bound twice: a clear error, not a silent half-start.
    let taken = &addresses[0];
    let other = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .arg("--config.file")
        .arg(config(other.path(), &sim.endpoint()))
        .args(["--web.listen-address", "127.0.0.1:0", "--web.listen-address", taken])
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("cannot listen on {taken}")), "{err}");
    drop(proc);
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_exporter_metrics_leaves_out_the_process_and_http_server() {
    let sim = start_sim(sim_config(&[APP])).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &sim.endpoint());
    let with = spawn_exporter(Path::new(BIN), &config, &[]);
    let text = |addr: String| async move {
        reqwest::get(format!("http://{addr}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let all = text(with.addr.clone()).await;
    assert!(
        all.contains("\nprocess_resident_memory_bytes "),
        "process metrics by default"
    );
    assert!(all.contains("tiw_exporter_http_requests_refused_total"));
    drop(with);
    let without = spawn_exporter(Path::new(BIN), &config, &["--web.disable-exporter-metrics"]);
    // Once the first API call is counted (its series appear with it).
    let some = wait_for(Duration::from_secs(10), "the first API call counted", || {
        let addr = without.addr.clone();
        async move {
            let some = text(addr).await;
            some.contains("tiw_exporter_api_requests_total{").then_some(some)
        }
    })
    .await;
    assert!(!some.contains("process_"), "{some}");
    assert!(!some.contains("tiw_exporter_http_"), "{some}");
    for kept in [
        "tiw_exporter_build_info",
        "tiw_exporter_api_requests_total",
        "tiw_exporter_callbacks_total",
        "tiw_exporter_config_last_reload_successful",
        "tiw_push_tasks{",
    ] {
        assert!(some.contains(kept), "{kept} stays:\n{some}");
    }
    drop(without);
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logfmt_lines_carry_msg_as_the_ecosystem_writes_it() {
    let sim = start_sim(sim_config(&[APP])).await;
    let dir = tempfile::tempdir().unwrap();
    let proc = spawn_exporter(Path::new(BIN), &config(dir.path(), &sim.endpoint()), &[]);
    let text = proc.log_text();
    let first = text.lines().next().unwrap_or_default();
    assert!(first.starts_with("ts=20"), "{first}");
    assert!(
        first.contains(" level=info ") && first.contains(r#" msg="starting tiw-push-exporter" "#),
        "{first}"
    );
    assert!(text.lines().any(|l| l.contains(" msg=listening ")), "{text}");
    assert!(!text.contains("message="), "{text}");
    drop(proc);
    sim.stop().await;
}

fn healthcheck(envs: &[(&str, &str)], args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN)
        .arg("healthcheck")
        .args(args)
        .envs(envs.iter().copied())
        .env_remove("TIW_WEB_CONFIG_FILE")
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_follows_the_listen_address_and_tls_it_is_given() {
    let sim = start_sim(sim_config(&[APP])).await;
    let dir = tempfile::tempdir().unwrap();
    // A self-signed certificate, as an operator might serve with.
    let cert = rcgen::generate_simple_self_signed(vec!["exporter.example.com".to_string()]).unwrap();
    std::fs::write(dir.path().join("tls.crt"), cert.cert.pem()).unwrap();
    std::fs::write(dir.path().join("tls.key"), cert.signing_key.serialize_pem()).unwrap();
    let web = dir.path().join("web.yml");
    std::fs::write(&web, "tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n").unwrap();
    let web_flag = web.display().to_string();
    let proc = spawn_exporter(
        Path::new(BIN),
        &config(dir.path(), &sim.endpoint()),
        &["--web.config.file", &web_flag],
    );
    let addr = proc.addr.clone();
    let checks = tokio::task::spawn_blocking(move || {
        [
            // Told about the TLS config, as the image's HEALTHCHECK is through the environment.
            healthcheck(&[("TIW_WEB_LISTEN_ADDRESS", &addr)], &["--web.config.file", &web_flag]),
            // Not told: plain HTTP gets no HTTP answer, so HTTPS is tried.
            healthcheck(&[], &["--web.listen-address", &addr]),
            // The address from the environment alone.
            healthcheck(&[("TIW_WEB_LISTEN_ADDRESS", &addr)], &[]),
        ]
    })
    .await
    .unwrap();
    for (i, (ok, err)) in checks.iter().enumerate() {
        assert!(ok, "check {i}: {err}");
    }
    let port = proc.addr.rsplit(':').next().unwrap().to_string();
    drop(proc);
    let (ok, err) =
        tokio::task::spawn_blocking(move || healthcheck(&[], &["--web.listen-address", &format!("127.0.0.1:{port}")]))
            .await
            .unwrap();
    assert!(!ok, "nothing listens any more");
    assert!(err.contains("/-/healthy"), "{err}");
    sim.stop().await;
}
