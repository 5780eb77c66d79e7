//! The API budget: used in full, never exceeded as the simulator counts it.

use std::time::{Duration, Instant};

use crate::common::*;

/// 150 active tasks over 3 apps on one account, 20 requests/s, 200 ms replies: polling needs 30/s,
/// so it is budget-bound for the whole run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uses_the_full_budget_without_ever_tripping_it() {
    // 150 tasks keep the sweep budget-bound (7.5 s at 20/s against a 5 s interval), and 12 s hold
    // 240 requests: the sliding-second bound is checked on every one of them.
    const TASKS_PER_APP: i64 = 50;
    const WINDOW: Duration = Duration::from_secs(12);
    let apps = [1400000001, 1400000002, 1400000003];
    let mut config = sim_config(&apps);
    config.latency = Duration::from_millis(200);
    config.latency_jitter = Duration::from_millis(10);
    let sim = start_sim(config).await;
    for app in apps {
        for i in 0..TASKS_PER_APP {
            let t = sim.sim.create_task(app, i);
            sim.sim.start_pushing(&t);
        }
    }
    let exporter = start_exporter(&config_yaml(&sim.endpoint(), &apps, "5s", "")).await;
    // Warm up: discovery and the first requests.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let from = Instant::now();
    tokio::time::sleep(WINDOW).await;
    let to = Instant::now();
    let stats = sim.sim.stats();
    let polls = stats.admitted_between("DescribeWhiteboardPush", from, to);
    let rate = polls as f64 / (to - from).as_secs_f64();
    eprintln!(
        "DescribeWhiteboardPush: {polls} in {WINDOW:?} = {rate:.2}/s; RequestLimitExceeded: {}; max in any sliding second: {}",
        stats.rate_limited,
        stats.max_per_second("DescribeWhiteboardPush")
    );
    assert_eq!(stats.rate_limited, 0, "the simulator refused requests");
    assert!(stats.max_per_second("DescribeWhiteboardPush") <= 20);
    assert!(rate >= 19.0, "sustained only {rate:.2} requests/s");
    // Budget-bound: a sweep of 150 tasks takes about 150/20 = 7.5 s, more than the 5 s interval.
    // The first full sweep begins at the first interval, behind the tasks' first reads, and may
    // end just after the window.
    let waited = Instant::now();
    let (m, sweep) = loop {
        let m = exporter.scrape().await;
        let sweep = m.get("tiw_exporter_poll_sweep_duration_seconds", &[]).unwrap();
        if sweep > 1.0 || waited.elapsed() > Duration::from_secs(15) {
            break (m, sweep);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(sweep > 6.5 && sweep < 10.0, "sweep took {sweep}");
    // Every task got polled: the round robin is fair.
    for app in ["1400000001", "1400000002", "1400000003"] {
        assert_eq!(
            m.get("tiw_push_tasks", &[("sdk_app_id", app), ("status", "PUSHING")]),
            Some(TASKS_PER_APP as f64)
        );
    }
    exporter.stop().await;
    sim.stop().await;
}

/// A configured budget below Tencent's is honoured too, and shared by apps on one account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lower_configured_budget_is_honoured() {
    let apps = [1400000001, 1400000002];
    let sim = start_sim(sim_config(&apps)).await;
    for app in apps {
        for i in 0..30 {
            sim.sim.create_task(app, i);
        }
    }
    let yaml = config_yaml(&sim.endpoint(), &apps, "1s", "")
        .replace("  timeout: 1s\n", "  timeout: 1s\n  requests_per_second: 5\n");
    let exporter = start_exporter(&yaml).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let stats = sim.sim.stats();
    assert_eq!(stats.rate_limited, 0);
    assert!(
        stats.max_per_second("DescribeWhiteboardPush") <= 5,
        "{}",
        stats.max_per_second("DescribeWhiteboardPush")
    );
    let polls = stats.requests["DescribeWhiteboardPush"];
    assert!(polls >= 20, "the lower budget is still used: {polls} in 6 s");
    exporter.stop().await;
    sim.stop().await;
}
