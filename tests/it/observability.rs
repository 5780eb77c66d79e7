//! Alert rules with promtool, the dashboard's queries against the metrics the exporter serves, and
//! the whole chain end to end: demo → the real Prometheus (Debian's) → alerts.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_tiw-push-exporter");

pub(crate) fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Rules whose `for` absorbs what the demo does for a moment: tasks pass through PREPARED for a
/// second or two, and an end the running list reveals can be polled a moment before its callback
/// arrives (TiwCallbacksMissing waits 15 minutes). Pending, never firing.
const MAY_BE_PENDING_IN_DEMO: [&str; 2] = ["TiwPushStuckPreparing", "TiwCallbacksMissing"];

/// Alerts that must stay quiet while the demo runs normally.
const QUIET_IN_DEMO: [&str; 9] = [
    "TiwApiDown",
    "TiwRecordUploadStuck",
    "TiwApiRateLimited",
    "TiwCallbacksRejected",
    "TiwCallbacksMissing",
    "TiwStoreWriteFailing",
    "TiwExporterDown",
    "TiwExporterOverloaded",
    "TiwPushStuckPreparing",
];

#[test]
fn promtool_checks_and_unit_tests_the_rules() {
    if !needs(&["promtool"]) {
        return;
    }
    for args in [
        vec!["check", "rules", "alerts.yml"],
        vec!["test", "rules", "alerts.test.yml"],
        vec!["check", "config", "prometheus.yml"],
    ] {
        run_ok(
            Command::new("promtool").args(&args).current_dir(repo("prometheus")),
            &format!("promtool {args:?} (Debian's prometheus)"),
        );
    }
    // Every alert: a firing and a quiet promtool case, a runbook section in docs/runbooks.md that
    // its absolute runbook_url points at (under the project's home, Cargo.toml's `repository`),
    // severity, summary and description.
    let rules: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(repo("prometheus/alerts.yml")).unwrap()).unwrap();
    let tests: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(repo("prometheus/alerts.test.yml")).unwrap()).unwrap();
    let runbooks = std::fs::read_to_string(repo("docs/runbooks.md")).unwrap();
    let cargo = std::fs::read_to_string(repo("Cargo.toml")).unwrap();
    let home = cargo
        .lines()
        .find_map(|l| l.strip_prefix("repository = \""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("Cargo.toml declares the project's repository");
    let cases: Vec<(&str, bool)> = tests["tests"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_sequence().unwrap())
        .map(|c| {
            let fires = c["exp_alerts"].as_sequence().is_some_and(|a| !a.is_empty());
            (c["alertname"].as_str().unwrap(), fires)
        })
        .collect();
    let mut names = Vec::new();
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            let name = rule["alert"].as_str().unwrap();
            names.push(name);
            for fires in [true, false] {
                assert!(
                    cases.contains(&(name, fires)),
                    "{name} has no promtool case where it {}",
                    if fires { "fires" } else { "stays quiet" }
                );
            }
            assert!(
                runbooks.contains(&format!("\n## {name}\n")),
                "{name} has no section in docs/runbooks.md"
            );
            let url = rule["annotations"]["runbook_url"].as_str().unwrap_or("");
            assert_eq!(
                url,
                format!("{home}/blob/main/docs/runbooks.md#{}", name.to_lowercase()),
                "{name}'s runbook_url"
            );
            for key in ["summary", "description"] {
                assert!(rule["annotations"][key].is_string(), "{name} lacks {key}");
            }
            assert!(
                matches!(rule["labels"]["severity"].as_str(), Some("critical" | "warning")),
                "{name} lacks severity"
            );
        }
    }
    for new in [
        "TiwExporterAbsent",
        "TiwConfigReloadFailed",
        "TiwPollingBehind",
        "TiwPushExceptionFinishes",
        "TiwPushFailures",
    ] {
        assert!(names.contains(&new), "{new} is missing");
    }
}

/// The shipped rules, PrometheusRule and dashboard are exactly what mixin/ renders (Debian's jsonnet).
#[test]
fn shipped_rules_and_dashboard_are_the_mixins_output() {
    if !needs(&["jsonnet"]) {
        return;
    }
    run_ok(
        Command::new("bash").arg(repo("mixin/build")).arg("--check"),
        "mixin/build --check (needs Debian's jsonnet)",
    );
}

fn dashboard() -> Value {
    serde_json::from_str(&std::fs::read_to_string(repo("grafana/dashboard.json")).unwrap()).unwrap()
}

/// Every PromQL expression of the dashboard, with Grafana's variables put in.
fn dashboard_queries() -> Vec<(String, String)> {
    let d = dashboard();
    let mut out = Vec::new();
    for panel in d["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"]
                .as_str()
                .unwrap()
                .replace("$sdk_app_id", ".*")
                .replace("$job", "tiw-push-exporter")
                .replace("$instance", ".*")
                .replace("$__rate_interval", "1m")
                .replace("$__range", "5m");
            out.push((
                format!(
                    "{} / {}",
                    panel["title"].as_str().unwrap(),
                    t["refId"].as_str().unwrap()
                ),
                expr,
            ));
        }
    }
    out
}

fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_alphabetic() || bytes[i] == b'_' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b':') {
                i += 1;
            }
            let word = &expr[start..i];
            let before = expr[..start].chars().last();
            let in_string = expr[..start].matches('"').count() % 2 == 1;
            if !in_string
                && before != Some('$')
                && (word.starts_with("tiw_")
                    || word.starts_with("process_")
                    || (word == "up" && expr[i..].starts_with('{')))
            {
                names.insert(word.to_string());
            }
        } else {
            i += 1;
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_is_importable_and_queries_only_served_metrics() {
    let d = dashboard();
    assert!(d["schemaVersion"].as_u64().unwrap() >= 39);
    assert_eq!(d["uid"], "tiw-push-exporter");
    let vars = d["templating"]["list"].as_array().unwrap();
    assert!(vars
        .iter()
        .any(|v| v["name"] == "DS_PROMETHEUS" && v["type"] == "datasource" && v["query"] == "prometheus"));
    assert!(vars
        .iter()
        .any(|v| v["name"] == "sdk_app_id" && v["multi"] == true && v["includeAll"] == true));
    // Importable grafana.com-style, and scoped: every query filters on $job and $instance, every
    // panel that shows numbers says in what unit (or maps them to words).
    assert_eq!(d["__inputs"][0]["name"], "DS_PROMETHEUS");
    assert!(d["__requires"]
        .as_array()
        .is_some_and(|r| r.iter().any(|x| x["id"] == "prometheus")));
    for name in ["job", "instance"] {
        assert!(vars.iter().any(|v| v["name"] == name), "no ${name} variable");
    }
    assert!(vars
        .iter()
        .any(|v| v["name"] == "sdk_app_id" && v["definition"].as_str().is_some_and(|q| q.contains("$job"))));
    for p in d["panels"].as_array().unwrap().iter().filter(|p| p["type"] != "row") {
        let title = p["title"].as_str().unwrap();
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            assert!(
                expr.contains(r#"job=~"$job""#) && expr.contains(r#"instance=~"$instance""#),
                "{title}: {expr} is not scoped by $job and $instance"
            );
        }
        let defaults = &p["fieldConfig"]["defaults"];
        assert!(
            p["type"] == "table" || defaults["unit"].is_string() || defaults["mappings"].is_array(),
            "{title} has no unit"
        );
        assert!(
            p["description"].as_str().is_some_and(|s| !s.is_empty()),
            "{title} has no description"
        );
        assert_eq!(
            p["datasource"]["uid"], "${DS_PROMETHEUS}",
            "{title} does not use the datasource variable"
        );
    }
    // What an exporter with every kind of task serves, its app in relay mode.
    let app = 1400000001;
    let sim = start_sim(sim_config(&[app])).await;
    let t = sim.sim.create_task(app, 1);
    sim.sim.start_pushing(&t);
    // Its recordings tracked too, one of them at work.
    let recording = sim.sim.create_record(app, 2);
    sim.sim
        .update_record(&recording, tiw_push_exporter::simulator::recording::lifecycle::start);
    let relay = format!(
        "  - sdk_app_id: {app}\n    callback_forward_url: {}/tiw\n    record: true\n",
        closed_endpoint()
    );
    let yaml = config_yaml(&sim.endpoint(), &[app], "200ms", "").replace(&format!("  - sdk_app_id: {app}\n"), &relay);
    let exporter = start_exporter(&yaml).await;
    wait_status(&exporter, &t, "PUSHING").await;
    // Families set just after a poll's answer is applied (the scrape may fall in between).
    let m = wait_for(Duration::from_secs(10), "the poll's own metrics", || async {
        let m = exporter.scrape().await;
        (m.text.contains("tiw_exporter_last_poll_success_timestamp_seconds{")
            && m.text.contains("tiw_up{")
            && m.text.contains("tiw_record_task_stream_interrupts{"))
        .then_some(m)
    })
    .await;
    let mut served: BTreeSet<String> = m
        .text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .flat_map(|l| {
            let mut parts = l.split_whitespace();
            let (name, kind) = (parts.next().unwrap().to_string(), parts.next().unwrap_or(""));
            let mut names = vec![name.clone()];
            if kind == "histogram" {
                names.extend(["_bucket", "_sum", "_count"].map(|s| format!("{name}{s}")));
            }
            names
        })
        .collect();
    served.insert("up".into());
    // Series that only exist once a task ended.
    served.extend(
        [
            "tiw_push_task_finish_reason",
            "tiw_push_task_stop_timestamp_seconds",
            "tiw_record_task_finish_reason",
        ]
        .map(String::from),
    );
    let queries = dashboard_queries();
    assert!(queries.len() >= 30);
    for (panel, expr) in &queries {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{panel}: no metric found in {expr}");
        for name in names {
            assert!(
                served.contains(&name),
                "{panel} queries {name}, which the exporter does not serve"
            );
        }
    }
    // And the check itself catches a wrong name.
    assert!(metric_names(r#"sum(rate(tiw_push_task_count{sdk_app_id=~".*"}[1m]))"#)
        .iter()
        .any(|n| !served.contains(n)));
    exporter.stop().await;
    sim.stop().await;
}

async fn query(prom: &str, expr: &str) -> Result<Vec<Value>, String> {
    let res = reqwest::Client::new()
        .get(format!("{prom}/api/v1/query"))
        .query(&[("query", expr)])
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let body: Value = res.json().await.map_err(|e| e.to_string())?;
    if body["status"] != "success" {
        return Err(format!("{}: {}", body["errorType"], body["error"]));
    }
    Ok(body["data"]["result"].as_array().cloned().unwrap_or_default())
}

/// Starts Debian's Prometheus on `dir/prometheus.yml` (its data in `dir/data`) and waits until it
/// is ready; returns the process and its URL.
pub(crate) async fn start_prometheus(dir: &Path) -> (KillOnDrop, String) {
    let port = free_port();
    let prom = format!("http://127.0.0.1:{port}");
    let process = KillOnDrop(
        Command::new("prometheus")
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus is installed (Debian's prometheus package; .ci/run installs it)"),
    );
    wait_ready(&format!("{prom}/-/ready")).await;
    (process, prom)
}

pub(crate) async fn alerts(prom: &str) -> Vec<Value> {
    let body: Value = reqwest::get(format!("{prom}/api/v1/alerts"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["data"]["alerts"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_to_prometheus_end_to_end() {
    if !needs(&["prometheus"]) {
        return;
    }
    // The demo, as a user starts it.
    let mut demo = Command::new(BIN)
        .args(["demo", "--web.listen-address", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(demo.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok);
    let (mut metrics_url, mut sim_url) = (String::new(), String::new());
    for line in lines.by_ref() {
        if let Some(u) = line.trim().strip_prefix("metrics:") {
            metrics_url = u.trim().to_string();
        }
        if let Some(u) = line.trim().strip_prefix("simulator API:") {
            sim_url = u.split_whitespace().next().unwrap().to_string();
            break;
        }
    }
    std::thread::spawn(move || lines.for_each(drop));
    let _demo = KillOnDrop(demo);
    let target = metrics_url
        .trim_start_matches("http://")
        .trim_end_matches("/metrics")
        .to_string();

    // The real Prometheus, with the repository's prometheus.yml and alerts.yml.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(repo("prometheus/alerts.yml"), dir.path().join("alerts.yml")).unwrap();
    let mut config: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(repo("prometheus/prometheus.yml")).unwrap()).unwrap();
    config["global"]["scrape_interval"] = "1s".into();
    config["global"]["evaluation_interval"] = "1s".into();
    config["scrape_configs"][0]["static_configs"][0]["targets"] =
        serde_yaml::Value::Sequence(vec![target.clone().into()]);
    std::fs::write(
        dir.path().join("prometheus.yml"),
        serde_yaml::to_string(&config).unwrap(),
    )
    .unwrap();
    let (_prometheus, prom) = start_prometheus(dir.path()).await;

    // TiwPushFinishedWithException fires for a task the simulator ended with EXCEPTION.
    let fired = wait_for(
        Duration::from_secs(60),
        "TiwPushFinishedWithException to fire",
        || async {
            let truth: Vec<Value> = reqwest::get(format!("{sim_url}/sim/tasks"))
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let exception_tasks: BTreeSet<String> = truth
                .iter()
                .filter(|t| t["FinishReason"] == "EXCEPTION")
                .map(|t| t["TaskId"].as_str().unwrap().to_string())
                .collect();
            alerts(&prom).await.into_iter().find(|a| {
                a["labels"]["alertname"] == "TiwPushFinishedWithException"
                    && a["state"] == "firing"
                    && a["labels"]["task_id"]
                        .as_str()
                        .is_some_and(|id| exception_tasks.contains(id))
            })
        },
    )
    .await;
    assert_eq!(fired["labels"]["severity"], "critical");
    assert!(fired["annotations"]["description"]
        .as_str()
        .unwrap()
        .contains(fired["labels"]["task_id"].as_str().unwrap()));
    assert!(fired["labels"]["room_id"].is_string() && fired["labels"]["sdk_app_id"].is_string());

    // Every dashboard query evaluates and returns data.
    let queries = dashboard_queries();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut pending = queries.clone();
    loop {
        let mut left = Vec::new();
        for (panel, expr) in pending {
            match query(&prom, &expr).await {
                Ok(result) if !result.is_empty() => {}
                Ok(_) => left.push((panel, expr)),
                Err(e) => panic!("{panel}: {expr} does not evaluate: {e}"),
            }
        }
        pending = left;
        if pending.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "dashboard queries without data: {pending:#?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // Nothing that should stay quiet fires, and no fault condition is even pending, but for the
    // moments MAY_BE_PENDING_IN_DEMO names.
    let noisy: Vec<String> = alerts(&prom)
        .await
        .iter()
        .filter(|a| QUIET_IN_DEMO.contains(&a["labels"]["alertname"].as_str().unwrap_or("")))
        .filter(|a| {
            a["state"] == "firing" || !MAY_BE_PENDING_IN_DEMO.contains(&a["labels"]["alertname"].as_str().unwrap_or(""))
        })
        .map(|a| format!("{} ({})", a["labels"]["alertname"], a["state"]))
        .collect();
    assert!(noisy.is_empty(), "alerts that should stay quiet: {noisy:?}");
    println!(
        "{} dashboard queries returned data; TiwPushFinishedWithException fired for {}",
        queries.len(),
        fired["labels"]["task_id"]
    );
}
