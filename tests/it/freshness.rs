//! Without callbacks, a task's end is noticed through DescribeRunningTasks: a complete pass that no
//! longer lists a known task sends its confirming DescribeWhiteboardPush first, instead of waiting
//! for the round robin to come back to it. Tencent's list only covers 3 days: an older task that
//! still pushes is read once when it goes missing, then left to the round robin.

use std::time::{Duration, Instant};

use tiw_push_exporter::simulator::api::RUNNING_LIST_WINDOW_SECS;

use crate::common::*;

const APP: u64 = 1400000001;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unlisted_task_is_confirmed_at_the_next_pass_not_the_next_sweep() {
    let sim = start_sim(sim_config(&[APP])).await;
    let tasks: Vec<String> = (0..40)
        .map(|room| {
            let t = sim.sim.create_task(APP, 1000 + room);
            sim.sim.start_pushing(&t);
            t
        })
        .collect();
    // Older than the list's window and still pushing: never listed.
    let old = sim.sim.create_task(APP, 999);
    sim.sim
        .update_task(&old, |t| t.create_time -= RUNNING_LIST_WINDOW_SECS + 3600);
    sim.sim.start_pushing(&old);
    // A sweep every 10 minutes: only the running list can tell of an end in time.
    let yaml =
        config_yaml(&sim.endpoint(), &[APP], "600s", "").replace("discovery_interval: 600s", "discovery_interval: 1s");
    let exporter = start_exporter(&yaml).await;
    wait_for(Duration::from_secs(15), "every task read once", || async {
        let m = exporter.scrape().await;
        (m.get("tiw_push_tasks", &[("sdk_app_id", "1400000001"), ("status", "PUSHING")]) == Some(40.0)).then_some(())
    })
    .await;
    // The old task is tracked only if configured or called back; track it the way a callback would.
    exporter
        .registry
        .track(APP, &old, Some(999), tiw_push_exporter::registry::Source::Callback);
    wait_status(&exporter, &old, "PUSHING").await;
    let reads_before = sim
        .sim
        .stats()
        .admitted
        .get("DescribeWhiteboardPush")
        .map_or(0, Vec::len);

    let ended = Instant::now();
    sim.sim.stop(&tasks[7], "EXCEPTION");
    let m = wait_for(Duration::from_secs(10), "the EXCEPTION finish on /metrics", || async {
        let m = exporter.scrape().await;
        (m.status_of(&tasks[7]).as_deref() == Some("STOPPED")).then_some(m)
    })
    .await;
    let noticed = ended.elapsed();
    assert_eq!(m.finish_reasons().get(&tasks[7]).map(String::as_str), Some("EXCEPTION"));

    // A few more passes: the old task, off the list but pushing, is not read on every pass.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let reads = sim
        .sim
        .stats()
        .admitted
        .get("DescribeWhiteboardPush")
        .map_or(0, Vec::len)
        - reads_before;
    assert!(
        reads <= 3,
        "{reads} DescribeWhiteboardPush in 4 passes: the old task is re-read every pass"
    );
    assert_eq!(exporter.scrape().await.status_of(&old).as_deref(), Some("PUSHING"));
    let m = exporter.scrape().await;
    assert!(
        m.get(
            "tiw_exporter_last_discovery_success_timestamp_seconds",
            &[("sdk_app_id", "1400000001")]
        )
        .is_some_and(|t| t > 0.0)
            && m.get(
                "tiw_exporter_discovery_duration_seconds",
                &[("sdk_app_id", "1400000001")]
            )
            .is_some(),
        "discovery pass metrics"
    );
    println!("ended at the simulator -> STOPPED on /metrics: {noticed:?} (sweep interval 600 s); {reads} reads after");
    exporter.stop().await;
}
