//! The chain to a person, with real components from Debian: the exporter → `prometheus` with the
//! mixin's rules → `prometheus-alertmanager` with deploy/alertmanager/alertmanager.yml → a webhook
//! receiver here. An EXCEPTION finish arrives as one firing notification with the task's labels and
//! an absolute runbook URL, once (no "resolved": a finish is an event); while TiwApiDown fires for
//! an app, that app's per-task alerts are held back.

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tiw_push_exporter::simulator::app_level_fault;

use crate::common::*;
use crate::observability::{alerts, repo, start_prometheus};

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
    if !needs(&["jsonnet", "prometheus", "prometheus-alertmanager"]) {
        return;
    }
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
    wait_for(Duration::from_secs(30), "TiwApiDown to page", || async {
        notified(&inbox, "TiwApiDown", "firing")
            .iter()
            .any(|(_, r, a)| r == "pager" && a["labels"]["sdk_app_id"].as_str().map(str::parse) == Some(Ok(BLIND)))
            .then_some(())
    })
    .await;

    // PAGED's task leaves the registry 15 s after it ended. The page is an event: the alert does
    // not end with retention (it ends 30 minutes after the end), and no "resolved" is sent for it.
    wait_for(
        Duration::from_secs(30),
        "PAGED's task to leave the registry",
        || async { exporter.registry.get(PAGED, &paged).is_none().then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        alerts(&prom)
            .await
            .iter()
            .any(|a| a["labels"]["alertname"] == "TiwPushFinishedWithException"
                && a["labels"]["task_id"] == paged.as_str()
                && a["state"] == "firing"),
        "the finish alert outlives retention"
    );
    assert!(
        notified(&inbox, "TiwPushFinishedWithException", "resolved").is_empty(),
        "no resolved notification for a finish"
    );
    let pages: Vec<_> = notified(&inbox, "TiwPushFinishedWithException", "firing");
    assert!(
        pages.iter().all(|(_, _, a)| a["labels"]["task_id"] == paged.as_str()),
        "only PAGED's task paged: {pages:?}"
    );
    assert_eq!(pages.len(), 1, "one notification: {pages:?}");
    println!(
        "EXCEPTION finish to page: {:.1} s; BLIND's alert inhibited by TiwApiDown",
        delivered.as_secs_f64(),
    );
    exporter.stop().await;
}

/// The HA scenario through the real Prometheus and Alertmanager: two replica processes behind a
/// fail-over balancer, each killed with SIGKILL in turn while tasks end with EXCEPTION (one while
/// both run, one while a replica is down). The mixin's rules raise one alert per task, and
/// Alertmanager notifies each task once, never once per replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_page_once_per_exception_task() {
    if !needs(&["jsonnet", "prometheus", "prometheus-alertmanager"]) {
        return;
    }
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
    if !needs(&["amtool"]) {
        return;
    }
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
            "tiw-pager-events",
        ),
        (["severity=critical", "alertname=TiwPushFailed"], "tiw-pager-events"),
        (["severity=critical", "alertname=TiwPushExceptionFinishes"], "tiw-pager"),
        (["severity=critical", "alertname=TiwApiDown"], "tiw-pager"),
        (["severity=warning", "alertname=TiwPollingBehind"], "tiw-chat"),
    ] {
        let mut args = vec!["config", "routes", "test"];
        args.extend(labels);
        assert_eq!(amtool(&args), receiver, "{labels:?}");
    }
}

/// `dir/prometheus.yml` from the shipped prometheus/prometheus.yml, its intervals as shipped, its
/// target and Alertmanager pointed here; the shipped rules beside it.
fn shipped_prometheus_config(dir: &std::path::Path, am_port: u16, target: &str) {
    std::fs::copy(repo("prometheus/alerts.yml"), dir.join("alerts.yml")).unwrap();
    let shipped = std::fs::read_to_string(repo("prometheus/prometheus.yml")).unwrap();
    assert!(shipped.contains("alertmanager:9093") && shipped.contains("tiw-push-exporter:9897"));
    let config = shipped
        .replace("alertmanager:9093", &format!("127.0.0.1:{am_port}"))
        .replace("tiw-push-exporter:9897", target);
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
}

/// Notifications about push tasks (TiwPush*) so far, firing or resolved.
fn push_notifications(inbox: &Inbox) -> Vec<(String, String)> {
    inbox
        .lock()
        .unwrap()
        .iter()
        .flat_map(|(_, _, n)| {
            n["alerts"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|a| {
                    a["labels"]["alertname"]
                        .as_str()
                        .is_some_and(|n| n.starts_with("TiwPush"))
                })
                .map(|a| {
                    (
                        format!("{}/{}", a["labels"]["alertname"], a["labels"]["task_id"]),
                        a["status"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// With the shipped exporter defaults, Prometheus intervals and Alertmanager config: an EXCEPTION
/// finish and a FAILED task each page once, the FAILED one with Tencent's code (and so do its task
/// page and its series); the finish-to-notification latency is measured. Then the exporter is
/// killed (SIGKILL) and stays down a minute: no push alert fires anew or re-notifies; back on the
/// same store, nothing pages again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_says_why_and_an_outage_pages_nothing_again() {
    if !needs(&["prometheus", "prometheus-alertmanager"]) {
        return;
    }
    const MESSAGE: &str =
        "code: 40006, msg: 2021-01-13 22:34:42, TRTC onError, code: -70003, msg: The UserSig in use is illegal.";
    let sim = start_sim(sim_config(&[PAGED])).await;
    let exception = sim.sim.create_task(PAGED, 880528);
    sim.sim.start_pushing(&exception);
    let failing = sim.sim.create_task(PAGED, 880529);
    let dir = tempfile::tempdir().unwrap();
    // The exporter's own defaults: poll.interval 15s, discovery every 5s.
    let yaml =
        config_yaml(&sim.endpoint(), &[PAGED], "15s", "").replace("discovery_interval: 15s", "discovery_interval: 5s");
    let config = write_config_file(dir.path(), &yaml);
    let addr = crate::ha::free_addr();
    let mut exporter = Some(crate::ha::replica(&config, addr));
    crate::ha::wait_replica_status(addr, &exception, "PUSHING").await;
    crate::ha::wait_replica_status(addr, &failing, "PREPARED").await;

    let (hook, inbox) = webhook_receiver().await;
    let (_alertmanager, am_port) = start_alertmanager(dir.path(), &hook).await;
    shipped_prometheus_config(dir.path(), am_port, &addr.to_string());
    let (_prometheus, prom) = start_prometheus(dir.path()).await;
    // Let Prometheus scrape the running tasks once before they end.
    tokio::time::sleep(Duration::from_secs(16)).await;

    let ended = Instant::now();
    sim.sim.stop(&exception, "EXCEPTION");
    sim.sim.fail(&failing, MESSAGE);
    let page = |alertname: &'static str, task: String| {
        let inbox = inbox.clone();
        async move {
            wait_for(Duration::from_secs(120), alertname, || async {
                notified(&inbox, alertname, "firing")
                    .into_iter()
                    .find(|(_, _, a)| a["labels"]["task_id"] == task.as_str())
            })
            .await
        }
    };
    let exception_page = page("TiwPushFinishedWithException", exception.clone()).await;
    let failed_page = page("TiwPushFailed", failing.clone()).await;
    let latencies = [
        exception_page.0.duration_since(ended).as_secs_f64(),
        failed_page.0.duration_since(ended).as_secs_f64(),
    ];
    println!(
        "finish to notification with the shipped intervals (exporter defaults, Prometheus 15s/15s, Alertmanager group_wait 5s): EXCEPTION {:.1} s, FAILED {:.1} s",
        latencies[0], latencies[1]
    );
    assert!(latencies.iter().all(|l| *l <= 60.0), "{latencies:?}");
    // Tencent's reason on the page, the task page and the series.
    let labels = &failed_page.2["labels"];
    assert_eq!(labels["code"], "FailedOperation.WhiteboardPush");
    assert_eq!(labels["push_code"], "40006");
    assert_eq!(labels["trtc_code"], "-70003");
    let description = failed_page.2["annotations"]["description"].as_str().unwrap_or_default();
    assert!(description.contains("TRTC code -70003"), "{description}");
    let task_page = reqwest::get(format!("http://{addr}/-/task?sdk_app_id={PAGED}&task_id={failing}"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(task_page.contains("The UserSig in use is illegal."), "{task_page}");
    let m = scrape(&addr.to_string()).await;
    assert_eq!(
        m.get(
            "tiw_push_task_failure_info",
            &[
                ("task_id", failing.as_str()),
                ("code", "FailedOperation.WhiteboardPush"),
                ("trtc_code", "-70003")
            ]
        ),
        Some(1.0)
    );
    assert!(m
        .get(
            "tiw_push_task_ended_timestamp_seconds",
            &[("task_id", failing.as_str())]
        )
        .is_some());

    // Killed, and down for a minute: nothing about push tasks fires anew or re-notifies.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let before = push_notifications(&inbox);
    exporter.take();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(
        push_notifications(&inbox),
        before,
        "push notifications while the exporter was down"
    );
    // Back on the same store: nothing pages again.
    exporter = Some(crate::ha::replica(&config, addr));
    crate::ha::wait_replica_status(addr, &exception, "STOPPED").await;
    tokio::time::sleep(Duration::from_secs(40)).await;
    assert_eq!(
        push_notifications(&inbox),
        before,
        "push notifications after the restart"
    );
    let firing: Vec<String> = alerts(&prom)
        .await
        .iter()
        .filter(|a| a["state"] == "firing")
        .filter_map(|a| a["labels"]["alertname"].as_str().map(str::to_string))
        .collect();
    assert!(
        !firing
            .iter()
            .any(|n| n == "TiwPushExceptionFinishes" || n == "TiwPushFailures"),
        "{firing:?}"
    );
    drop(exporter);
    sim.stop().await;
}

/// A first start against a list that names tasks FINISHED two days and twenty minutes ago (as
/// Tencent documents the list), and a configured id that ended two days ago: no finish is counted,
/// none of them shows as an end the exporter saw, and no alert fires for them, with the shipped
/// rules on a real Prometheus.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_start_does_not_replay_history_as_news() {
    if !needs(&["prometheus"]) {
        return;
    }
    let mut sim_cfg = sim_config(&[PAGED]);
    sim_cfg.list_finished = true;
    let sim = start_sim(sim_cfg).await;
    let now = tiw_push_exporter::task::unix_now() as i64;
    let mut old = Vec::new();
    for (ago, reason) in [(2 * 24 * 3600, "EXCEPTION"), (20 * 60, "EXCEPTION"), (20 * 60, "AUTO")] {
        let id = sim.sim.create_task(PAGED, 7);
        sim.sim.start_pushing(&id);
        sim.sim.stop(&id, reason);
        sim.sim.update_task(&id, |t| {
            t.create_time = now - ago - 600;
            t.push_start_time = now - ago - 600;
            t.push_stop_time = now - ago;
        });
        old.push(id);
    }
    let configured = sim.sim.create_task(PAGED, 8);
    sim.sim.start_pushing(&configured);
    sim.sim.stop(&configured, "EXCEPTION");
    sim.sim.update_task(&configured, |t| {
        t.push_start_time = now - 2 * 24 * 3600 - 600;
        t.push_stop_time = now - 2 * 24 * 3600;
    });
    // A live one, so the test sees the exporter working.
    let live = sim.sim.create_task(PAGED, 9);
    sim.sim.start_pushing(&live);
    let yaml = config_yaml(&sim.endpoint(), &[], "200ms", "").replace(
        "apps:\n",
        &format!("apps:\n  - sdk_app_id: {PAGED}\n    tasks: [{configured}]\n"),
    );
    let exporter = start_exporter(&yaml).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(repo("prometheus/alerts.yml"), dir.path().join("alerts.yml")).unwrap();
    write_prometheus_config(dir.path(), free_port(), &[exporter.addr.to_string()]);
    let (_prometheus, prom) = start_prometheus(dir.path()).await;
    wait_status(&exporter, &live, "PUSHING").await;
    // The configured id is read (and found ended two days ago) and several passes list the old ones.
    wait_for(Duration::from_secs(10), "the configured id's read", || async {
        exporter
            .registry
            .get(PAGED, &configured)
            .is_none_or(|t| t.shown().status().is_ended())
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let m = exporter.scrape().await;
    let app = ("sdk_app_id", "1400000001");
    assert_eq!(m.sum("tiw_push_tasks_finished_total", &[app]), 0.0, "history counted");
    assert_eq!(m.sum("tiw_push_duration_seconds_count", &[app]), 0.0);
    for id in old.iter().chain([&configured]) {
        assert!(
            m.get("tiw_push_task_ended_timestamp_seconds", &[("task_id", id.as_str())])
                .is_none(),
            "{id} shown as an end the exporter saw"
        );
        assert!(m.status_of(id).is_none(), "{id} is history and is not shown");
    }
    let fired: Vec<Value> = alerts(&prom)
        .await
        .into_iter()
        .filter(|a| {
            a["labels"]["task_id"]
                .as_str()
                .is_some_and(|t| old.iter().chain([&configured]).any(|o| o == t))
        })
        .collect();
    assert!(fired.is_empty(), "alerts for history: {fired:?}");
    exporter.stop().await;
    sim.stop().await;
}
