//! A task's life as /metrics shows it, with the simulator moving the task.

use std::time::Duration;

use crate::common::*;

const APP: u64 = 1400000001;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_walks_prepared_pushing_stopped_exception() {
    let sim = start_sim(sim_config(&[APP])).await;
    let task = sim.sim.create_task(APP, 880528);
    let exporter = start_exporter(&config_yaml(&sim.endpoint(), &[APP], "200ms", "")).await;
    let labels = [
        ("sdk_app_id", "1400000001"),
        ("task_id", task.as_str()),
        ("room_id", "880528"),
    ];

    let m = wait_status(&exporter, &task, "PREPARED").await;
    assert_eq!(
        m.get(
            "tiw_push_tasks",
            &[("sdk_app_id", "1400000001"), ("status", "PREPARED")]
        ),
        Some(1.0)
    );
    assert!(m.values("tiw_push_task_finish_reason", &labels).is_empty());

    // Started 90 s ago as far as Tencent is concerned, so the duration is a known figure.
    sim.sim.update_task(&task, |t| {
        tiw_push_exporter::simulator::lifecycle::start(t);
        t.push_start_time -= 90;
        t.exception_cnt = 1;
    });
    let m = wait_status(&exporter, &task, "PUSHING").await;
    assert_eq!(
        m.get("tiw_push_tasks_started_total", &[("sdk_app_id", "1400000001")]),
        Some(1.0)
    );
    // design §4: a running task has no duration series; its age is time() - start.
    assert!(m.get("tiw_push_task_duration_seconds", &labels).is_none());
    assert!(m.get("tiw_push_task_start_timestamp_seconds", &labels).is_some());
    assert_eq!(m.get("tiw_push_task_exceptions", &labels), Some(1.0));

    sim.sim.update_task(&task, |t| t.exception_cnt = 3);
    sim.sim.stop(&task, "EXCEPTION");
    let m = wait_status(&exporter, &task, "STOPPED").await;
    let finished = sim.sim.task(&task).unwrap();
    assert_eq!(
        m.get(
            "tiw_push_task_finish_reason",
            &[("task_id", task.as_str()), ("reason", "EXCEPTION")]
        ),
        Some(1.0)
    );
    assert_eq!(m.get("tiw_push_task_exceptions", &labels), Some(3.0));
    assert_eq!(
        m.get("tiw_push_task_stop_timestamp_seconds", &labels),
        Some(finished.push_stop_time as f64)
    );
    let duration = (finished.push_stop_time - finished.push_start_time) as f64;
    assert_eq!(m.get("tiw_push_task_duration_seconds", &labels), Some(duration));
    assert_eq!(
        m.get("tiw_push_exceptions_total", &[("sdk_app_id", "1400000001")]),
        Some(3.0)
    );
    let info = [
        ("task_id", task.as_str()),
        ("group_id", "880528"),
        ("push_user_id", finished.push_user_id.as_str()),
    ];
    assert_eq!(m.get("tiw_push_task_info", &info), Some(1.0));

    // Several poll intervals later the counters have still moved exactly once, and the ended
    // task is no longer polled.
    let polls_after_stop = sim.sim.stats().requests["DescribeWhiteboardPush"];
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let m = exporter.scrape().await;
    let finished_exception = [("sdk_app_id", "1400000001"), ("reason", "EXCEPTION")];
    assert_eq!(m.get("tiw_push_tasks_finished_total", &finished_exception), Some(1.0));
    assert_eq!(
        m.sum("tiw_push_tasks_finished_total", &[("sdk_app_id", "1400000001")]),
        1.0
    );
    assert_eq!(
        m.get("tiw_push_tasks_started_total", &[("sdk_app_id", "1400000001")]),
        Some(1.0)
    );
    assert_eq!(m.get("tiw_push_duration_seconds_count", &finished_exception), Some(1.0));
    assert_eq!(
        m.get("tiw_push_duration_seconds_sum", &finished_exception),
        Some(duration)
    );
    assert_eq!(
        sim.sim.stats().requests["DescribeWhiteboardPush"],
        polls_after_stop,
        "an ended task is never polled again"
    );
    exporter.stop().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_and_unknown_tasks_and_all_statuses() {
    let sim = start_sim(sim_config(&[APP])).await;
    let failed = sim.sim.create_task(APP, 1);
    let pushing = sim.sim.create_task(APP, 2);
    let stopped = sim.sim.create_task(APP, 3);
    let prepared = sim.sim.create_task(APP, 4);
    sim.sim.start_pushing(&pushing);
    sim.sim.start_pushing(&stopped);
    let yaml = config_yaml(&sim.endpoint(), &[], "200ms", "").replace(
        "apps:\n",
        &format!("apps:\n  - sdk_app_id: {APP}\n    tasks: [doesnotexist0000000, {stopped}]\n"),
    );
    let exporter = start_exporter(&yaml).await;
    wait_status(&exporter, &pushing, "PUSHING").await;
    sim.sim.stop(&stopped, "AUTO");
    sim.sim.fail(
        &failed,
        "code: 40006, msg: TRTC onError, code: -70003, msg: The UserSig in use is illegal.",
    );
    let m = wait_status(&exporter, &failed, "FAILED").await;
    assert_eq!(
        m.get(
            "tiw_push_task_finish_reason",
            &[("task_id", failed.as_str()), ("reason", "FAILED")]
        ),
        Some(1.0)
    );
    wait_status(&exporter, &stopped, "STOPPED").await;
    // A discovered task is UNKNOWN until its first read answers, and on a loaded machine that
    // answer can come after the ones above (several reads are in flight at once): wait for it.
    let m = wait_status(&exporter, &prepared, "PREPARED").await;
    assert_eq!(m.status_of(&stopped).as_deref(), Some("STOPPED"));
    assert_eq!(m.status_of("doesnotexist0000000").as_deref(), Some("UNKNOWN"));
    let app = [("sdk_app_id", "1400000001")];
    for status in ["PREPARED", "PUSHING", "STOPPED", "FAILED", "UNKNOWN"] {
        let n = m.get("tiw_push_tasks", &[app[0], ("status", status)]);
        assert_eq!(n, Some(1.0), "tiw_push_tasks{{status={status}}}");
        // The state set has every status for every task, exactly one of them 1.
        assert_eq!(
            m.values(
                "tiw_push_task_status",
                &[("task_id", failed.as_str()), ("status", status)]
            )
            .len(),
            1
        );
    }
    assert_eq!(
        m.get("tiw_push_tasks_finished_total", &[app[0], ("reason", "FAILED")]),
        Some(1.0)
    );
    assert_eq!(
        m.get("tiw_push_tasks_finished_total", &[app[0], ("reason", "AUTO")]),
        Some(1.0)
    );
    // Task-level answers are answers: the app is up.
    assert_eq!(m.get("tiw_up", &app), Some(1.0));
    assert!(
        m.get(
            "tiw_exporter_api_requests_total",
            &[
                ("action", "DescribeWhiteboardPush"),
                ("code", "InvalidParameter.TaskNotFound")
            ]
        )
        .unwrap()
            >= 1.0
    );
    assert!(m.get("tiw_exporter_last_poll_success_timestamp_seconds", &app).unwrap() > 1.6e9);
    exporter.stop().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_pages_through_running_tasks() {
    let sim = start_sim(sim_config(&[APP])).await;
    for i in 0..1100 {
        sim.sim.create_task(APP, i);
    }
    let exporter = start_exporter(&config_yaml(&sim.endpoint(), &[APP], "60s", "")).await;
    wait_for(Duration::from_secs(10), "all 1100 tasks discovered", || async {
        (exporter.registry.len() == 1100).then_some(())
    })
    .await;
    // Limit 500: three pages, each signed and accepted.
    assert_eq!(sim.sim.stats().running_lists["WhiteboardPush"], 3);
    assert_eq!(sim.sim.stats().auth_failures, 0);
    exporter.stop().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ended_tasks_leave_per_task_series_after_retention() {
    let sim = start_sim(sim_config(&[APP])).await;
    let task = sim.sim.create_task(APP, 5);
    sim.sim.start_pushing(&task);
    let exporter = start_exporter(&config_yaml(
        &sim.endpoint(),
        &[APP],
        "200ms",
        "retention:\n  stopped_tasks: 1s\n",
    ))
    .await;
    wait_status(&exporter, &task, "PUSHING").await;
    sim.sim.stop(&task, "USER_CALL");
    wait_status(&exporter, &task, "STOPPED").await;
    let m = wait_for(Duration::from_secs(10), "the ended task's series to go", || async {
        let m = exporter.scrape().await;
        m.values("tiw_push_task_info", &[("task_id", task.as_str())])
            .is_empty()
            .then_some(m)
    })
    .await;
    assert!(!m.text.contains(task.as_str()), "no series of an expired task remains");
    let app = ("sdk_app_id", "1400000001");
    assert_eq!(
        m.get("tiw_push_tasks_finished_total", &[app, ("reason", "USER_CALL")]),
        Some(1.0),
        "aggregates stay"
    );
    assert_eq!(m.get("tiw_push_tasks_started_total", &[app]), Some(1.0));
    assert_eq!(m.get("tiw_push_tasks", &[app, ("status", "STOPPED")]), Some(0.0));
    exporter.stop().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_credentials_send_the_session_token() {
    let mut config = sim_config(&[APP]);
    config.credentials[0].session_token = Some("sessionTokenValue".into());
    let sim = start_sim(config).await;
    let task = sim.sim.create_task(APP, 7);
    sim.sim.start_pushing(&task);
    let without = start_exporter(&config_yaml(&sim.endpoint(), &[APP], "200ms", "")).await;
    wait_for(Duration::from_secs(10), "TokenFailure to set tiw_up=0", || async {
        let m = without.scrape().await;
        (m.get("tiw_up", &[("sdk_app_id", "1400000001")]) == Some(0.0)
            && m.get(
                "tiw_exporter_api_requests_total",
                &[("code", "AuthFailure.TokenFailure")],
            )
            .is_some())
        .then_some(())
    })
    .await;
    without.stop().await;
    let yaml = config_yaml(&sim.endpoint(), &[APP], "200ms", "")
        .replace("  timeout: 1s\n", "  timeout: 1s\n  session_token: sessionTokenValue\n");
    let with = start_exporter(&yaml).await;
    wait_status(&with, &task, "PUSHING").await;
    with.stop().await;
    sim.stop().await;
}
