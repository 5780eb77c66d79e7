//! Running it as operators do: reload, graceful shutdown, the container image's promises.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;
use tiw_push_exporter::simulator::callbacks::sign_event;

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_tiw-push-exporter");
const A: u64 = 1400000001;
const B: u64 = 1400000002;
const C: u64 = 1400000003;

/// Starts the exporter binary on `config` with `extra` flags; returns once it listens.
pub fn spawn(config: &Path, extra: &[&str]) -> Proc {
    spawn_exporter(Path::new(BIN), config, extra)
}

fn apps_yaml(endpoint: &str, apps: &[(u64, &str)], state: &Path, tail: &str) -> String {
    let mut s = format!("tencentcloud:\n  endpoint: {endpoint}\n  secret_id: {SECRET_ID}\n  secret_key: {SECRET_KEY}\n  timeout: 1s\napps:\n");
    for (id, key) in apps {
        s.push_str(&format!("  - sdk_app_id: {id}\n    callback_key: \"{key}\"\n"));
    }
    s + &format!(
        "poll:\n  interval: 300ms\n  discovery_interval: 300ms\nstate:\n  path: {}\n{tail}",
        state.display()
    )
}

async fn wait_metrics(addr: &str, what: &str, check: impl Fn(&Metrics) -> bool) -> Metrics {
    wait_for(Duration::from_secs(15), what, || async {
        let m = scrape(addr).await;
        check(&m).then_some(m)
    })
    .await
}

fn tasks_of(m: &Metrics, app: u64) -> f64 {
    m.sum("tiw_push_tasks", &[("sdk_app_id", app.to_string().as_str())])
}

async fn post_callback(addr: &str, app: u64, key: &str, task: &str) -> u16 {
    let body = json!({"EventType": "WhiteboardPushStarted", "SdkAppId": app, "Timestamp": now(),
                      "EventData": {"TaskId": task, "PushStartTime": now()}});
    let body = sign_event(body, key, now() + 300).to_string();
    let sent = reqwest::Client::new()
        .post(format!("http://{addr}/callback"))
        .body(body)
        .send()
        .await;
    sent.map(|r| r.status().as_u16()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_and_removes_apps_rotates_keys_and_refuses_a_broken_config() {
    let sim = start_sim(sim_config(&[A, B, C])).await;
    for app in [A, B, C] {
        let t = sim.sim.create_task(app, app as i64 % 100);
        sim.sim.start_pushing(&t);
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let config: PathBuf = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        apps_yaml(&sim.endpoint(), &[(A, "keyOne"), (B, "keyB")], &state, ""),
    )
    .unwrap();
    let proc = spawn(&config, &[]);
    let addr = proc.addr.clone();
    wait_metrics(&addr, "apps A and B polled", |m| {
        m.sum("tiw_push_tasks", &[("status", "PUSHING")]) == 2.0
    })
    .await;
    let loaded_at = scrape(&addr)
        .await
        .get("tiw_exporter_config_last_reload_success_timestamp_seconds", &[])
        .unwrap();
    assert_eq!(post_callback(&addr, A, "keyOne", "cbtask1").await, 200);

    // SIGHUP: B out, C in, A's callback key rotated.
    std::fs::write(
        &config,
        apps_yaml(&sim.endpoint(), &[(A, "keyTwo"), (C, "keyC")], &state, ""),
    )
    .unwrap();
    assert!(Command::new("kill")
        .args(["-HUP", &proc.child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let m = wait_metrics(&addr, "C polled and B gone after SIGHUP", |m| {
        tasks_of(m, C) == 1.0 && tasks_of(m, B) == 0.0
    })
    .await;
    assert!(
        m.values("tiw_up", &[("sdk_app_id", "1400000002")]).is_empty(),
        "a removed app has no series left"
    );
    assert_eq!(m.get("tiw_exporter_config_last_reload_successful", &[]), Some(1.0));
    assert!(
        m.get("tiw_exporter_config_last_reload_success_timestamp_seconds", &[])
            .unwrap()
            >= loaded_at
    );
    assert_eq!(
        post_callback(&addr, A, "keyOne", "cbtask2").await,
        401,
        "the old key is refused"
    );
    assert_eq!(
        post_callback(&addr, A, "keyTwo", "cbtask3").await,
        200,
        "the new key is taken"
    );
    assert_eq!(
        post_callback(&addr, B, "keyB", "cbtask4").await,
        403,
        "a removed app is unknown"
    );

    // POST /-/reload: B back.
    std::fs::write(
        &config,
        apps_yaml(&sim.endpoint(), &[(A, "keyTwo"), (B, "keyB"), (C, "keyC")], &state, ""),
    )
    .unwrap();
    let client = reqwest::Client::new();
    let r = client.post(format!("http://{addr}/-/reload")).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    wait_metrics(&addr, "B polled again", |m| tasks_of(m, B) == 1.0).await;

    // A broken config is refused; the old one keeps working.
    std::fs::write(
        &config,
        apps_yaml(&sim.endpoint(), &[(A, "keyTwo")], &state, "").replace("interval: 300ms", "interval: soon"),
    )
    .unwrap();
    let r = client.post(format!("http://{addr}/-/reload")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("poll.interval") && text.contains("previous one stays"),
        "{text}"
    );
    let m = scrape(&addr).await;
    assert_eq!(m.get("tiw_exporter_config_last_reload_successful", &[]), Some(0.0));
    let fresh = sim.sim.create_task(C, 77);
    sim.sim.start_pushing(&fresh);
    wait_metrics(&addr, "C still discovered after the refused reload", |m| {
        m.status_of(&fresh).as_deref() == Some("PUSHING")
    })
    .await;
    assert_eq!(
        post_callback(&addr, B, "keyB", "cbtask5").await,
        200,
        "B is still configured"
    );

    // A change that needs a restart is refused with that reason; GET only hints.
    std::fs::write(
        &config,
        apps_yaml(
            &sim.endpoint(),
            &[(A, "keyTwo"), (B, "keyB"), (C, "keyC")],
            &state,
            "callback:\n  path: /elsewhere\n",
        ),
    )
    .unwrap();
    let r = client.post(format!("http://{addr}/-/reload")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("callback.path changed"));
    let r = client.get(format!("http://{addr}/-/reload")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "POST");
    sim.stop().await;
}

/// SIGTERM in the middle of a burst of callbacks: exit 0 within 10 s, every 200 in the store.
///
/// The API cannot be reached, so every acknowledged claim stands. Against a simulator that never
/// created these tasks, a claim could be refuted by a poll (`ResourceNotFound`) and dropped by
/// design, before the SIGTERM: that is the forged-claim rule at work, not a lost callback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_burst_keeps_every_acknowledged_callback() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let config = dir.path().join("config.yaml");
    let tail = "callback:\n  max_unconfirmed_tasks: 1000000\n";
    std::fs::write(&config, apps_yaml(&closed_endpoint(), &[(A, "termKey")], &state, tail)).unwrap();
    let proc = spawn(&config, &[]);
    let addr = proc.addr.clone();
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut senders = tokio::task::JoinSet::new();
    for s in 0..8 {
        let (addr, acked) = (addr.clone(), acked.clone());
        senders.spawn(async move {
            for i in 0.. {
                let task = format!("term{s}n{i:05}");
                let status =
                    tokio::time::timeout(Duration::from_secs(12), post_callback(&addr, A, "termKey", &task)).await;
                match status {
                    Ok(200) => acked.lock().unwrap().push(task),
                    _ => return,
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let started = std::time::Instant::now();
    assert!(Command::new("kill")
        .args(["-TERM", &proc.child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let mut proc = proc;
    let (status, _exited) = tokio::task::spawn_blocking(move || (proc.child.wait().unwrap(), proc))
        .await
        .unwrap();
    // Senders stop at their first refused or failed request.
    let _ = tokio::time::timeout(Duration::from_secs(15), senders.join_all()).await;
    assert!(status.success(), "exit status {status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?} to stop",
        started.elapsed()
    );
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 50, "only {} callbacks before SIGTERM", acked.len());
    let again = spawn(&config, &[]);
    let m = wait_metrics(&again.addr, "the restarted exporter", |_| true).await;
    let statuses = m.statuses();
    let lost: Vec<&String> = acked.iter().filter(|t| !statuses.contains_key(*t)).collect();
    println!(
        "SIGTERM after {} acknowledged callbacks; {} lost; stopped in {:?}",
        acked.len(),
        lost.len(),
        started.elapsed()
    );
    assert!(
        lost.is_empty(),
        "{} acknowledged callbacks lost: {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn yaml_docs(path: &str) -> Vec<serde_yaml::Value> {
    let text = std::fs::read_to_string(repo(path)).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect()
}

/// The Dockerfile's promises that need no container engine (install.rs builds and runs the image):
/// nobody, the default port exposed and in the environment the health check reads, the volume.
#[test]
fn dockerfile_runs_as_nobody_on_the_default_port() {
    let dockerfile = std::fs::read_to_string(repo("Dockerfile")).unwrap();
    let user = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER line")
        .trim();
    assert_eq!(user, "65534:65534", "runs as nobody");
    let port = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("EXPOSE "))
        .expect("an EXPOSE line")
        .trim();
    let help = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains(&format!("[default: :{port}]")),
        "EXPOSE {port} is not the default listen address:\n{help}"
    );
    assert!(dockerfile.contains(&format!("TIW_WEB_LISTEN_ADDRESS=:{port}")));
    assert!(dockerfile.contains("VOLUME /data") && dockerfile.contains("\"healthcheck\""));
    // The image's default config file is where the Kubernetes ConfigMap is mounted.
    assert!(dockerfile.contains("TIW_CONFIG_FILE=/etc/tiw-push-exporter/config.yaml"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_subcommand_tells_up_from_down() {
    let sim = start_sim(sim_config(&[A])).await;
    let exporter = start_exporter(&config_yaml(&sim.endpoint(), &[A], "1s", "")).await;
    let addr = exporter.addr.to_string();
    let up = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(["healthcheck", "--web.listen-address", &addr])
            .status()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(up.success());
    let port = exporter.addr.port();
    exporter.stop().await;
    let down = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(["healthcheck", "--web.listen-address", &format!("127.0.0.1:{port}")])
            .stderr(Stdio::null())
            .status()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(!down.success());
    sim.stop().await;
}

/// The Kubernetes copies of the alert rules and the dashboard are the files themselves.
#[test]
fn kubernetes_manifests_carry_the_same_rules_and_dashboard() {
    if !needs(&["jsonnet"]) {
        return;
    }
    let rules: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(repo("prometheus/alerts.yml")).unwrap()).unwrap();
    let rule = &yaml_docs("deploy/kubernetes/prometheusrule.yaml")[0];
    assert_eq!(rule["kind"], "PrometheusRule");
    assert_eq!(rule["spec"]["groups"], rules["groups"], "run mixin/build");
    let cm = &yaml_docs("deploy/kubernetes/grafana-dashboard.yaml")[0];
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    let in_cm: serde_json::Value =
        serde_json::from_str(cm["data"]["tiw-push-exporter.json"].as_str().unwrap()).unwrap();
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo("grafana/dashboard.json")).unwrap()).unwrap();
    assert_eq!(in_cm, dashboard, "run mixin/build");

    let deployment = &yaml_docs("deploy/kubernetes/deployment.yaml")[0];
    let spec = &deployment["spec"]["template"]["spec"];
    let container = &spec["containers"][0];
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/-/ready");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/-/healthy");
    assert!(spec["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .any(|v| v["persistentVolumeClaim"].is_mapping()));
    // The ConfigMap's config is valid, with secrets from the environment the Secret provides.
    let cmap = &yaml_docs("deploy/kubernetes/configmap.yaml")[0];
    // The Secret's variables; TIW_HA_REPLICAS is unset in the base (the HA overlay sets it).
    let env = |name: &str| (name != "TIW_HA_REPLICAS").then(|| format!("value-of-{name}"));
    let config =
        tiw_push_exporter::config::Config::from_yaml(cmap["data"]["config.yaml"].as_str().unwrap(), &env).unwrap();
    assert_eq!(config.state_path, PathBuf::from("/data"));
    let secret = &yaml_docs("deploy/kubernetes/secret.example.yaml")[0];
    for key in [
        "TENCENTCLOUD_SECRET_ID",
        "TENCENTCLOUD_SECRET_KEY",
        "TIW_PUSH_CALLBACK_KEY",
    ] {
        assert!(secret["stringData"][key].is_string(), "{key}");
    }
}

/// Compose runs the demo with the Prometheus and Grafana files the end-to-end test uses.
#[test]
fn compose_uses_the_tested_prometheus_and_grafana_files() {
    let compose = &yaml_docs("deploy/compose/docker-compose.yml")[0];
    let services = &compose["services"];
    assert_eq!(services["tiw-push-exporter"]["command"][0], "demo");
    let mounts = |s: &str| {
        services[s]["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert!(mounts("prometheus").iter().any(|m| m.starts_with("../../prometheus:")));
    assert!(mounts("grafana")
        .iter()
        .any(|m| m.starts_with("../../grafana:/etc/grafana/tiw")));
    assert_eq!(
        services["grafana"]["environment"]["GF_PATHS_PROVISIONING"],
        "/etc/grafana/tiw/provisioning"
    );
    // Prometheus in compose reaches the exporter by its service name, the example's target.
    let prom: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(repo("prometheus/prometheus.yml")).unwrap()).unwrap();
    assert_eq!(
        prom["scrape_configs"][0]["static_configs"][0]["targets"][0],
        "tiw-push-exporter:9897"
    );
    let provider = std::fs::read_to_string(repo("grafana/provisioning/dashboards/tiw-push-exporter.yml")).unwrap();
    assert!(provider.contains("path: /etc/grafana/tiw"));
}

/// `--version` prints what node_exporter prints: version, branch, revision, build date, toolchain
/// and platform; `-V` the version alone.
#[test]
fn version_names_the_build() {
    let long = Command::new(BIN).arg("--version").output().unwrap();
    assert!(long.status.success());
    let long = String::from_utf8_lossy(&long.stdout);
    let first = format!("tiw-push-exporter {} (branch: ", env!("CARGO_PKG_VERSION"));
    assert!(long.starts_with(&first), "{long}");
    for part in [
        "revision: ",
        "build date:",
        "rust version:     rustc ",
        "platform:         ",
    ] {
        assert!(long.contains(part), "{part:?} missing:\n{long}");
    }
    let revision = long
        .split("revision: ")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .unwrap_or("");
    assert!(
        revision == "unknown" || (revision.len() == 12 && revision.chars().all(|c| c.is_ascii_hexdigit())),
        "{long}"
    );
    let short = Command::new(BIN).arg("-V").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&short.stdout).trim(),
        format!("tiw-push-exporter {}", env!("CARGO_PKG_VERSION"))
    );
}
