//! The running-task census (docs/design.md §2): every type DescribeRunningTasks lists, counted per
//! status from complete passes, with the oldest creation time, over real HTTP against the simulator.

use std::time::Duration;

use crate::common::*;

const A: u64 = 1400000001;
const B: u64 = 1400000002;

/// The census series `name` of one app, type and status.
fn census(m: &Metrics, name: &str, app: u64, task_type: &str, status: &str) -> Option<f64> {
    let app = app.to_string();
    m.get(
        name,
        &[
            ("sdk_app_id", app.as_str()),
            ("task_type", task_type),
            ("status", status),
        ],
    )
}

fn running(m: &Metrics, app: u64, task_type: &str, status: &str) -> Option<f64> {
    census(m, "tiw_running_tasks", app, task_type, status)
}

fn oldest(m: &Metrics, app: u64, task_type: &str, status: &str) -> Option<f64> {
    census(
        m,
        "tiw_running_tasks_oldest_created_timestamp_seconds",
        app,
        task_type,
        status,
    )
}

/// Push tasks from discovery passes, transcodes and recordings from census passes; an app with
/// `census: false` has none of it; counts and the oldest queued follow the list as it moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_census_counts_every_type_from_complete_list_passes() {
    let sim = start_sim(sim_config(&[A, B])).await;
    let pushing = sim.sim.create_task(A, 1);
    sim.sim.start_pushing(&pushing);
    sim.sim.create_task(A, 2);
    sim.sim.create_task(B, 3);
    let h5_oldest = sim.sim.add_listed(A, "TranscodeH5", Duration::from_secs(1800), None);
    let h5_next = sim.sim.add_listed(A, "TranscodeH5", Duration::from_secs(300), None);
    let h5_new = sim.sim.add_listed(A, "TranscodeH5", Duration::from_secs(60), None);
    let jpg = sim.sim.add_listed(A, "TranscodeJPG", Duration::from_secs(120), None);
    sim.sim.set_listed_status(&jpg, "PROCESSING");
    sim.sim.add_listed(B, "TranscodeH5", Duration::from_secs(1800), None);
    let created = |id: &str| sim.sim.listed(id).unwrap().create_time as f64;

    let yaml = format!(
        "tencentcloud:\n  endpoint: {}\n  secret_id: {SECRET_ID}\n  secret_key: {SECRET_KEY}\n  timeout: 1s\n\
         apps:\n  - sdk_app_id: {A}\n  - sdk_app_id: {B}\n    census: false\n\
         poll:\n  interval: 300ms\n  discovery_interval: 300ms\n  census_interval: 300ms\n",
        sim.endpoint()
    );
    let exporter = start_exporter(&yaml).await;
    let m = wait_for(Duration::from_secs(15), "a census of every type", || async {
        let m = exporter.scrape().await;
        let push = running(&m, A, "WhiteboardPush", "PROCESSING");
        let jpg = running(&m, A, "TranscodeJPG", "PROCESSING");
        let h5 = running(&m, A, "TranscodeH5", "QUEUED");
        (h5 == Some(3.0) && jpg == Some(1.0) && push == Some(1.0)).then_some(m)
    })
    .await;
    // Every documented status has its line, OTHER none (nothing else was listed).
    for (task_type, counts) in [
        ("WhiteboardPush", [1.0, 1.0, 0.0]),
        ("TranscodeH5", [3.0, 0.0, 0.0]),
        ("TranscodeJPG", [0.0, 1.0, 0.0]),
        ("OnlineRecord", [0.0, 0.0, 0.0]),
    ] {
        for (status, n) in ["QUEUED", "PROCESSING", "FINISHED"].iter().zip(counts) {
            assert_eq!(running(&m, A, task_type, status), Some(n), "{task_type} {status}");
        }
        assert_eq!(running(&m, A, task_type, "OTHER"), None, "{task_type} OTHER");
    }
    // CreateTime is written in Beijing time, as Tencent does; read back to the second.
    assert_eq!(oldest(&m, A, "TranscodeH5", "QUEUED"), Some(created(&h5_oldest)));
    assert_eq!(oldest(&m, A, "TranscodeJPG", "PROCESSING"), Some(created(&jpg)));
    assert_eq!(oldest(&m, A, "TranscodeH5", "PROCESSING"), None, "none listed, no line");
    // The landing page says the same, with how long the oldest queued task has waited.
    let page = reqwest::get(exporter.url("/")).await.unwrap().text().await.unwrap();
    let section = &page[page.find("<h2>Running at Tencent</h2>").expect("a census section")..];
    let row = section
        .split("<tr>")
        .find(|r| r.contains(&format!("<td>{A}</td><td>TranscodeH5</td>")))
        .expect("a TranscodeH5 row");
    assert!(
        row.contains("<td class=\"n\">3</td><td class=\"n\">0</td>") && row.contains("created 30 min ago"),
        "{row}"
    );
    assert!(!section.contains(&format!("<td>{B}</td>")), "B has no census");
    // An app with census: false costs no list of another type and shows none.
    assert!(m
        .values("tiw_running_tasks", &[("sdk_app_id", &B.to_string())])
        .is_empty());
    assert!(m
        .values(
            "tiw_running_tasks_oldest_created_timestamp_seconds",
            &[("sdk_app_id", &B.to_string())]
        )
        .is_empty());

    // The oldest starts converting: the next one is now the oldest queued.
    sim.sim.set_listed_status(&h5_oldest, "PROCESSING");
    let m = wait_for(Duration::from_secs(15), "the queue to move", || async {
        let m = exporter.scrape().await;
        (running(&m, A, "TranscodeH5", "QUEUED") == Some(2.0)).then_some(m)
    })
    .await;
    assert_eq!(oldest(&m, A, "TranscodeH5", "QUEUED"), Some(created(&h5_next)));
    assert_eq!(oldest(&m, A, "TranscodeH5", "PROCESSING"), Some(created(&h5_oldest)));

    // Everything converted: the queue is empty, and its oldest line goes away.
    for id in [&h5_oldest, &h5_next, &h5_new] {
        sim.sim.set_listed_status(id, "FINISHED");
    }
    let m = wait_for(Duration::from_secs(15), "the queue to empty", || async {
        let m = exporter.scrape().await;
        (running(&m, A, "TranscodeH5", "QUEUED") == Some(0.0)
            && running(&m, A, "TranscodeH5", "PROCESSING") == Some(0.0))
        .then_some(m)
    })
    .await;
    assert_eq!(oldest(&m, A, "TranscodeH5", "QUEUED"), None);
    sim.stop().await;
}

/// A reload that turns an app's census off takes its counts away: nothing would update them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turning_the_census_off_by_reload_removes_its_series() {
    let sim = start_sim(sim_config(&[A])).await;
    sim.sim.add_listed(A, "TranscodeJPG", Duration::from_secs(60), None);
    let dir = tempfile::tempdir().unwrap();
    let yaml = |census: bool| {
        format!(
            "tencentcloud:\n  endpoint: {}\n  secret_id: {SECRET_ID}\n  secret_key: {SECRET_KEY}\n  timeout: 1s\n\
             apps:\n  - sdk_app_id: {A}\n    census: {census}\n\
             poll:\n  interval: 300ms\n  discovery_interval: 300ms\n  census_interval: 300ms\n\
             state:\n  path: {}\n",
            sim.endpoint(),
            dir.path().join("state").display()
        )
    };
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, yaml(true)).unwrap();
    let exporter = spawn_exporter(
        std::path::Path::new(env!("CARGO_BIN_EXE_tiw-push-exporter")),
        &config,
        &[],
    );
    wait_for(Duration::from_secs(15), "the census", || async {
        (running(&scrape(&exporter.addr).await, A, "TranscodeJPG", "QUEUED") == Some(1.0)).then_some(())
    })
    .await;
    std::fs::write(&config, yaml(false)).unwrap();
    let reloaded = reqwest::Client::new()
        .post(format!("http://{}/-/reload", exporter.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(reloaded.status(), 200);
    let m = scrape(&exporter.addr).await;
    assert!(m.values("tiw_running_tasks", &[]).is_empty(), "{}", m.text);
    assert!(m
        .values("tiw_running_tasks_oldest_created_timestamp_seconds", &[])
        .is_empty());
    // And it stays so: no census loop runs for the app any more.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(scrape(&exporter.addr).await.values("tiw_running_tasks", &[]).is_empty());
    sim.stop().await;
}
