//! The chain to a person, with real components from Debian: the exporter → `prometheus` with the
//! mixin's rules → `prometheus-alertmanager` with deploy/alertmanager/alertmanager.yml → a webhook
//! receiver here. An EXCEPTION finish arrives as one firing notification with the task's labels and
//! an absolute runbook URL, and resolves once the task's series expire; while TiwApiDown fires for
//! an app, that app's per-task alerts are held back.

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tiw_push_exporter::simulator::app_level_fault;

use crate::common::*;
use crate::observability::{alerts, free_port, repo, start_prometheus};

const PAGED: u64 = 1400000001;
const BLIND: u64 = 1400000002;
const KEY: &str = "alerting-callback-key";

/// Notifications Alertmanager posted, with when they arrived.
type Inbox = Arc<Mutex<Vec<(Instant, String, Value)>>>;

async fn webhook_receiver() -> (String, Inbox) {
    let inbox: Inbox = Arc::default();
    let kept = inbox.clone();
    let app = axum::Router::new().route(
        "/{receiver}",
        axum::routing::post(
            move |axum::extract::Path(receiver): axum::extract::Path<String>, body: axum::Json<Value>| {
                let kept = kept.clone();
                async move {
                    kept.lock().unwrap().push((Instant::now(), receiver, body.0));
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, inbox)
}

/// The shipped Alertmanager config, its receivers pointed at `hook`, run by the real Alertmanager
/// in `dir`; returns once it is ready, with its port.
async fn start_alertmanager(dir: &std::path::Path, hook: &str) -> (KillOnDrop, u16) {
    let am_config = std::fs::read_to_string(repo("deploy/alertmanager/alertmanager.yml"))
        .unwrap()
        .replace("http://127.0.0.1:9095", hook);
    std::fs::write(dir.join("alertmanager.yml"), am_config).unwrap();
    let port = free_port();
    let alertmanager = KillOnDrop(
        Command::new("prometheus-alertmanager")
            .arg(format!("--config.file={}", dir.join("alertmanager.yml").display()))
            .arg(format!("--storage.path={}", dir.join("am").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("Alertmanager is installed (Debian's prometheus-alertmanager; .ci/run installs it)"),
    );
    wait_ready(&format!("http://127.0.0.1:{port}/-/ready")).await;
    (alertmanager, port)
}

/// `dir/prometheus.yml`: the rules in `dir/alerts.yml`, the Alertmanager on `am_port`, and the
/// exporters at `targets`, scraped and evaluated every second.
fn write_prometheus_config(dir: &std::path::Path, am_port: u16, targets: &[String]) {
    let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [alerts.yml]\n\
             alerting:\n  alertmanagers:\n    - static_configs: [{{targets: ['127.0.0.1:{am_port}']}}]\n\
             scrape_configs:\n  - job_name: tiw-push-exporter\n    static_configs: [{{targets: [{}]}}]\n",
            targets.join(", ")
        ),
    )
    .unwrap();
}

/// Alerts of `alertname` in notifications of `status` so far, with when each notification came.
fn notified(inbox: &Inbox, alertname: &str, status: &str) -> Vec<(Instant, String, Value)> {
    inbox
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, _, n)| n["status"] == status)
        .flat_map(|(at, receiver, n)| {
            n["alerts"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|a| a["labels"]["alertname"] == alertname && a["status"] == status)
                .map(|a| (*at, receiver.clone(), a.clone()))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exception_finish_pages_once_and_api_down_holds_back_its_apps_alerts() {
    let sim = start_sim(sim_config(&[PAGED, BLIND])).await;
    let paged = sim.sim.create_task(PAGED, 880528);
    sim.sim.start_pushing(&paged);
    let blind = sim.sim.create_task(BLIND, 102);
    sim.sim.start_pushing(&blind);
    let yaml = config_yaml(&sim.endpoint(), &[], "200ms", "retention:\n  stopped_tasks: 15s\n").replace(
        "apps:\n",
        &format!("apps:\n  - sdk_app_id: {PAGED}\n  - sdk_app_id: {BLIND}\n    callback_key: {KEY}\n"),
    );
    let exporter = start_exporter(&yaml).await;
    sim.sim.set_callback(BLIND, &exporter.url("/callback"), KEY);
    wait_status(&exporter, &paged, "PUSHING").await;
    wait_status(&exporter, &blind, "PUSHING").await;

    // The mixin's rules, as a user renders them: TiwApiDown's `for` shortened to fit a test.
    let dir = tempfile::tempdir().unwrap();
    let rules = run_ok(
        Command::new("jsonnet")
            .args(["-J", "mixin", "-e"])
            .arg(r#"((import "mixin.libsonnet") + { _config+:: { apiDownFor: "5s" } }).prometheusAlerts"#)
            .current_dir(repo("")),
        "jsonnet (Debian's jsonnet; .ci/run installs it)",
    );
    std::fs::write(dir.path().join("alerts.yml"), rules).unwrap();

    let (hook, inbox) = webhook_receiver().await;
    let (_alertmanager, am_port) = start_alertmanager(dir.path(), &hook).await;
    let am = format!("http://127.0.0.1:{am_port}");
    write_prometheus_config(dir.path(), am_port, &[exporter.addr.to_string()]);
    let (_prometheus, prom) = start_prometheus(dir.path()).await;

    // BLIND's API goes down; TiwApiDown fires for it (and pages).
    sim.sim
        .set_app_fault(BLIND, Some(app_level_fault("ResourceUnavailable.NotExist")));
    wait_for(Duration::from_secs(60), "TiwApiDown to fire for BLIND", || async {
        alerts(&prom)
            .await
            .into_iter()
            .find(|a| a["labels"]["alertname"] == "TiwApiDown" && a["state"] == "firing")
    })
    .await;

    // Both tasks end with EXCEPTION: PAGED's learned by polling, BLIND's by its signed callback alone.
    let finished = Instant::now();
    sim.sim.stop(&paged, "EXCEPTION");
    sim.sim.stop(&blind, "EXCEPTION");
    let page = wait_for(Duration::from_secs(60), "the EXCEPTION page", || async {
        notified(&inbox, "TiwPushFinishedWithException", "firing")
            .into_iter()
            .next()
    })
    .await;
    let delivered = page.0.duration_since(finished);
    let (receiver, alert) = (page.1, page.2);
    assert_eq!(receiver, "pager", "critical alerts page");
    let labels = &alert["labels"];
    assert_eq!(labels["sdk_app_id"], PAGED.to_string());
    assert_eq!(labels["task_id"], paged.as_str());
    assert_eq!(labels["room_id"], "880528");
    assert_eq!(labels["severity"], "critical");
    assert_eq!(
        alert["annotations"]["runbook_url"],
        "https://github.com/tiw-push-exporter/tiw-push-exporter/blob/main/docs/runbooks.md#tiwpushfinishedwithexception"
    );
    assert!(alert["annotations"]["description"]
        .as_str()
        .is_some_and(|d| d.contains(&paged) && d.contains("880528") && !d.contains("{{")));

    // BLIND's EXCEPTION fires in Prometheus, but Alertmanager holds it back behind TiwApiDown.
    wait_for(
        Duration::from_secs(30),
        "BLIND's EXCEPTION alert in Prometheus",
        || async {
            alerts(&prom).await.into_iter().find(|a| {
                a["labels"]["alertname"] == "TiwPushFinishedWithException" && a["labels"]["task_id"] == blind.as_str()
            })
        },
    )
    .await;
    let suppressed = wait_for(
        Duration::from_secs(30),
        "BLIND's alert inhibited in Alertmanager",
        || async {
            let held: Vec<Value> = reqwest::get(format!("{am}/api/v2/alerts?filter=task_id=\"{blind}\""))
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            held.into_iter().find(|a| a["status"]["state"] == "suppressed")
        },
    )
    .await;
    assert!(
        suppressed["status"]["inhibitedBy"]
            .as_array()
            .is_some_and(|by| !by.is_empty()),
        "{suppressed}"
    );
    assert!(
        notified(&inbox, "TiwApiDown", "firing")
            .iter()
            .any(|(_, r, a)| r == "pager" && a["labels"]["sdk_app_id"].as_str().map(str::parse) == Some(Ok(BLIND))),
        "TiwApiDown pages"
    );

    // PAGED's task leaves the registry 15 s after it ended: the page resolves.
    let resolved = wait_for(Duration::from_secs(150), "the resolved notification", || async {
        notified(&inbox, "TiwPushFinishedWithException", "resolved")
            .into_iter()
            .find(|(_, _, a)| a["labels"]["task_id"] == paged.as_str())
    })
    .await;
    let pages: Vec<_> = notified(&inbox, "TiwPushFinishedWithException", "firing");
    assert!(
        pages.iter().all(|(_, _, a)| a["labels"]["task_id"] == paged.as_str()),
        "only PAGED's task paged: {pages:?}"
    );
    println!(
        "EXCEPTION finish to page: {:.1} s; to resolved: {:.1} s; BLIND's alert inhibited by TiwApiDown",
        delivered.as_secs_f64(),
        resolved.0.duration_since(finished).as_secs_f64()
    );
    exporter.stop().await;
}

/// The HA scenario through the real Prometheus and Alertmanager: two replica processes behind a
/// fail-over balancer, each killed with SIGKILL in turn while tasks end with EXCEPTION (one while
/// both run, one while a replica is down). The mixin's rules raise one alert per task, and
/// Alertmanager notifies each task once, never once per replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_page_once_per_exception_task() {
    use crate::ha::{balancer, free_addr, replica, wait_replica_status};
    let sim = start_sim(sim_config(&[PAGED])).await;
    let addrs = [free_addr(), free_addr()];
    let lb = balancer(addrs.to_vec(), Arc::default()).await;
    sim.sim.set_callback(PAGED, &format!("http://{lb}/callback"), KEY);
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let configs: Vec<std::path::PathBuf> = dirs
        .iter()
        .map(|d| {
            let yaml = config_yaml(&sim.endpoint(), &[PAGED], "200ms", "ha:\n  replicas: 2\n").replace(
                &format!("  - sdk_app_id: {PAGED}\n"),
                &format!("  - sdk_app_id: {PAGED}\n    callback_key: {KEY}\n"),
            );
            write_config_file(d.path(), &yaml)
        })
        .collect();
    let mut replicas = [
        Some(replica(&configs[0], addrs[0])),
        Some(replica(&configs[1], addrs[1])),
    ];
    let dir = tempfile::tempdir().unwrap();
    let rules = run_ok(
        Command::new("jsonnet")
            .args(["-J", "mixin", "-e", r#"(import "mixin.libsonnet").prometheusAlerts"#])
            .current_dir(repo("")),
        "jsonnet (Debian's jsonnet; .ci/run installs it)",
    );
    std::fs::write(dir.path().join("alerts.yml"), rules).unwrap();
    let (hook, inbox) = webhook_receiver().await;
    let (_alertmanager, am_port) = start_alertmanager(dir.path(), &hook).await;
    write_prometheus_config(dir.path(), am_port, &addrs.map(|a| a.to_string()));
    let (_prometheus, prom) = start_prometheus(dir.path()).await;
    for addr in addrs {
        wait_ready(&format!("http://{addr}/-/ready")).await;
    }

    // Both replicas up: the first task ends with EXCEPTION and both report it.
    let both = sim.sim.create_task(PAGED, 501);
    sim.sim.start_pushing(&both);
    for addr in addrs {
        wait_replica_status(addr, &both, "PUSHING").await;
    }
    sim.sim.stop(&both, "EXCEPTION");
    for addr in addrs {
        wait_replica_status(addr, &both, "STOPPED").await;
    }
    // Replica 1 killed: a task starts and ends with EXCEPTION inside its outage; then it returns.
    drop(replicas[1].take());
    let inside = sim.sim.create_task(PAGED, 502);
    sim.sim.start_pushing(&inside);
    wait_replica_status(addrs[0], &inside, "PUSHING").await;
    sim.sim.stop(&inside, "EXCEPTION");
    wait_replica_status(addrs[0], &inside, "STOPPED").await;
    replicas[1] = Some(replica(&configs[1], addrs[1]));
    wait_ready(&format!("http://{}/-/ready", addrs[1])).await;
    // Replica 0 killed in its turn, and back.
    drop(replicas[0].take());
    tokio::time::sleep(Duration::from_secs(2)).await;
    replicas[0] = Some(replica(&configs[0], addrs[0]));
    wait_ready(&format!("http://{}/-/ready", addrs[0])).await;

    let pages = wait_for(Duration::from_secs(60), "a page for each task", || async {
        let pages = notified(&inbox, "TiwPushFinishedWithException", "firing");
        let tasks: HashSet<String> = pages
            .iter()
            .filter_map(|(_, _, a)| a["labels"]["task_id"].as_str().map(str::to_string))
            .collect();
        (tasks.contains(&both) && tasks.contains(&inside)).then_some(pages)
    })
    .await;
    // Prometheus: one alert per task, though two replicas reported the first.
    let firing: Vec<Value> = alerts(&prom)
        .await
        .into_iter()
        .filter(|a| a["labels"]["alertname"] == "TiwPushFinishedWithException")
        .collect();
    for task in [&both, &inside] {
        let n = firing
            .iter()
            .filter(|a| a["labels"]["task_id"] == task.as_str())
            .count();
        assert_eq!(n, 1, "one alert for {task} in Prometheus: {firing:?}");
    }
    // Alertmanager: every notification names each task once, and no alert carries a replica's label.
    let notifications = inbox.lock().unwrap().clone();
    for (_, _, n) in &notifications {
        let tasks: Vec<&str> = n["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["labels"]["alertname"] == "TiwPushFinishedWithException")
            .filter_map(|a| a["labels"]["task_id"].as_str())
            .collect();
        let distinct: HashSet<&&str> = tasks.iter().collect();
        assert_eq!(distinct.len(), tasks.len(), "a task twice in one notification: {n}");
    }
    assert!(
        pages.iter().all(|(_, _, a)| a["labels"].get("instance").is_none()),
        "{pages:?}"
    );
    let first_pages = |task: &str| {
        notifications
            .iter()
            .filter(|(_, _, n)| n["status"] == "firing")
            .filter(|(_, _, n)| {
                n["alerts"].as_array().into_iter().flatten().any(|a| {
                    a["labels"]["alertname"] == "TiwPushFinishedWithException" && a["labels"]["task_id"] == task
                })
            })
            .count()
    };
    println!(
        "two replicas, each killed once: {} notifications; {both} in {}, {inside} in {}; one alert per task",
        notifications.len(),
        first_pages(&both),
        first_pages(&inside)
    );
    drop(replicas);
    sim.stop().await;
}

/// The shipped Alertmanager config passes `amtool check-config`, and its routes send critical
/// alerts to the pager and the rest to chat (`amtool config routes test`).
#[test]
fn the_alertmanager_config_checks_and_routes_by_severity() {
    let config = repo("deploy/alertmanager/alertmanager.yml");
    let what = "amtool (Debian's prometheus-alertmanager; .ci/run installs it)";
    let amtool = |args: &[&str]| {
        let mut cmd = Command::new("amtool");
        cmd.args(args).arg(format!("--config.file={}", config.display()));
        run_ok(&mut cmd, what).trim().to_string()
    };
    let checked = run_ok(Command::new("amtool").arg("check-config").arg(&config), what);
    assert!(checked.contains("3 inhibit rules"), "{checked}");
    for (labels, receiver) in [
        (
            ["severity=critical", "alertname=TiwPushFinishedWithException"],
            "tiw-pager",
        ),
        (["severity=critical", "alertname=TiwApiDown"], "tiw-pager"),
        (["severity=warning", "alertname=TiwPollingBehind"], "tiw-chat"),
    ] {
        let mut args = vec!["config", "routes", "test"];
        args.extend(labels);
        assert_eq!(amtool(&args), receiver, "{labels:?}");
    }
}
