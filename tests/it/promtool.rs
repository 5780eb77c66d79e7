//! The exposition passes `promtool check metrics` (Debian's `prometheus` package).

use std::io::Write;
use std::process::{Command, Stdio};

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_check_metrics() {
    if !needs(&["promtool"]) {
        return;
    }
    let app = 1400000001;
    let sim = start_sim(sim_config(&[app])).await;
    let pushing = sim.sim.create_task(app, 1);
    let stopped = sim.sim.create_task(app, 2);
    let failed = sim.sim.create_task(app, 3);
    sim.sim.start_pushing(&pushing);
    sim.sim.start_pushing(&stopped);
    sim.sim.update_task(&pushing, |t| t.exception_cnt = 2);
    let exporter = start_exporter(&config_yaml(&sim.endpoint(), &[app], "200ms", "")).await;
    wait_status(&exporter, &stopped, "PUSHING").await;
    sim.sim.stop(&stopped, "EXCEPTION");
    sim.sim.fail(&failed, "illegal UserSig");
    wait_status(&exporter, &stopped, "STOPPED").await;
    let m = wait_status(&exporter, &failed, "FAILED").await;

    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (apt-get install prometheus; .ci/run does it)");
    child.stdin.take().unwrap().write_all(m.text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool check metrics:\n{report}"
    );
    // The scrape had every kind of series in it.
    for family in [
        "tiw_push_task_finish_reason",
        "tiw_push_task_stop_timestamp_seconds",
        "tiw_push_duration_seconds_bucket",
        "process_resident_memory_bytes",
    ] {
        assert!(m.text.contains(family), "{family} missing");
    }
    assert!(!m.text.contains(SECRET_KEY));
    exporter.stop().await;
    sim.stop().await;
}
