//! Real-time recording tasks against the simulator, over real signed HTTP: DescribeOnlineRecord
//! through every state Tencent documents, read by the exporter's own client (docs/design.md §2).

use std::time::Duration;

use tiw_push_exporter::census::TaskType;
use tiw_push_exporter::recording::{RecordAnswer, RecordFacts, RecordFinishReason, RecordStatus};
use tiw_push_exporter::simulator::recording::lifecycle;
use tiw_push_exporter::simulator::SimConfig;
use tiw_push_exporter::tencentcloud::TiwClient;

use crate::common::*;
use crate::faults::client_for;

const APP: u64 = 1400000001;
/// The recording feature's own callback key (SetOnlineRecordCallbackKey).
const RECORD_KEY: &str = "recordKey00000042";

async fn read(client: &TiwClient, task: &str) -> RecordFacts {
    match client.read_record(task, None).await.unwrap().answer {
        RecordAnswer::State(facts) => facts,
        other => panic!("{task}: {other:?}"),
    }
}

/// PREPARED → RECORDING ⇄ PAUSED → STOPPED (uploading) → FINISHED with its videos; FORCE_STOP after
/// too long a pause; a failed task and an unknown id; the OnlineRecord running list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_reads_as_tencent_documents_it() {
    let sim = start_sim(SimConfig {
        // Tencent's 90-minute pause limit, shortened.
        record_limits: (Duration::from_millis(1500), Duration::from_secs(24 * 3600)),
        ..sim_config(&[APP])
    })
    .await;
    let client = client_for(&sim.endpoint(), &[APP], APP, &[]);

    let task = sim.sim.create_record(APP, 880528);
    let f = read(&client, &task).await;
    assert_eq!((f.status, f.finish_reason), (RecordStatus::Prepared, None));
    assert_eq!((f.room_id, f.group_id.as_deref()), (Some(880528), Some("880528")));
    assert!(f
        .record_user_id
        .as_deref()
        .unwrap()
        .starts_with("tic_record_user_880528_"));

    sim.sim.update_record(&task, lifecycle::start);
    assert_eq!(read(&client, &task).await.status, RecordStatus::Recording);
    sim.sim.update_record(&task, lifecycle::pause);
    let f = read(&client, &task).await;
    assert_eq!(
        (f.status, f.paused_ms),
        (RecordStatus::Paused, Some(0)),
        "an open pause is not a duration yet"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    sim.sim.update_record(&task, lifecycle::resume);
    let f = read(&client, &task).await;
    assert_eq!(f.status, RecordStatus::Recording);
    assert!(f.paused_ms.unwrap() >= 1000, "{:?}", f.paused_ms);
    sim.sim.update_record(&task, |t| {
        t.interrupts = vec![("teacher".into(), 2), ("student".into(), 1)]
    });
    sim.sim.update_record(&task, |t| lifecycle::stop(t, "USER_CALL"));
    let f = read(&client, &task).await;
    assert_eq!(
        (f.status, f.finish_reason),
        (RecordStatus::Stopped, Some(RecordFinishReason::UserCall))
    );
    assert_eq!(
        (f.videos, f.stream_interrupts),
        (Some(0), Some(3)),
        "no video before the upload ends"
    );
    assert!(f.record_stop_time >= f.record_start_time);
    sim.sim.update_record(&task, lifecycle::finish);
    let f = read(&client, &task).await;
    assert_eq!(f.status, RecordStatus::Finished);
    assert_eq!(f.videos, Some(2));
    assert!(f.video_bytes.unwrap() > 0 && f.total_time_ms.unwrap() >= 0);

    // Paused past Tencent's limit: FORCE_STOP.
    let paused = sim.sim.create_record(APP, 2);
    sim.sim.update_record(&paused, lifecycle::start);
    sim.sim.update_record(&paused, lifecycle::pause);
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let f = read(&client, &paused).await;
    assert_eq!(
        (f.status, f.finish_reason),
        (RecordStatus::Stopped, Some(RecordFinishReason::ForceStop))
    );

    // A failed task: FailedOperation.Record with Tencent's message; an unknown id: TaskNotFound.
    let failed = sim.sim.create_record(APP, 3);
    sim.sim.update_record(&failed, |t| {
        lifecycle::fail(t, "code: 40004, msg: im login failed with code 6206")
    });
    match client.read_record(&failed, None).await.unwrap().answer {
        RecordAnswer::Failed(message) => assert!(message.contains("im login failed"), "{message}"),
        other => panic!("{other:?}"),
    }
    let unknown = client.read_record("nosuchrecording00000", None).await.unwrap();
    assert_eq!(unknown.answer, RecordAnswer::NotFound);

    // The OnlineRecord running list: the recordings still at work (the stopped ones upload).
    let prepared = sim.sim.create_record(APP, 4);
    let page = client
        .describe_running_tasks(TaskType::OnlineRecord, 0, 500)
        .await
        .unwrap();
    let listed: Vec<(String, String)> = page
        .tasks
        .unwrap_or_default()
        .into_iter()
        .map(|t| (t.task_id.unwrap(), t.status.unwrap()))
        .collect();
    assert!(listed.contains(&(prepared.clone(), "QUEUED".into())), "{listed:?}");
    assert!(listed.contains(&(paused.clone(), "PROCESSING".into())), "{listed:?}");
    assert!(
        !listed.iter().any(|(id, _)| *id == task),
        "a FINISHED task is not listed: {listed:?}"
    );
    let push = client
        .describe_running_tasks(TaskType::WhiteboardPush, 0, 500)
        .await
        .unwrap();
    assert_eq!(push.total, Some(0), "recordings are not push tasks");
    sim.stop().await;
}

/// A planned recording runs on its own, as the demo's do: prepared, recording, paused and resumed
/// (the pause reported in OmittedDurations), ended for its reason with its exceptions and
/// interrupts, then uploaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planned_recording_runs_through_its_course() {
    use tiw_push_exporter::simulator::lifecycle::Generator;
    use tiw_push_exporter::simulator::recording::RecordPlan;

    let sim = start_sim(sim_config(&[APP])).await;
    let client = client_for(&sim.endpoint(), &[APP], APP, &[]);
    let plan = RecordPlan {
        prepare_for: Duration::from_millis(200),
        record_for: Duration::from_millis(800),
        pause_for: Some(Duration::from_millis(1500)),
        reason: Some("EXCEPTION"),
        upload_for: Duration::from_secs(1),
        exceptions: 2,
        interrupts: 2,
    };
    let task = sim.sim.create_record_with(APP, 7, Some(plan));
    let token = tokio_util::sync::CancellationToken::new();
    let lifecycle = sim.sim.spawn_lifecycle(Generator::default(), token.clone());
    for (status, what) in [
        (RecordStatus::Recording, "recording"),
        (RecordStatus::Paused, "paused"),
        (RecordStatus::Recording, "resumed"),
        (RecordStatus::Stopped, "stopped, uploading"),
    ] {
        wait_for(Duration::from_secs(10), what, || async {
            (read(&client, &task).await.status == status).then_some(())
        })
        .await;
    }
    let f = read(&client, &task).await;
    assert_eq!(f.finish_reason, Some(RecordFinishReason::Exception));
    assert_eq!((f.exception_cnt, f.stream_interrupts), (Some(2), Some(2)));
    let f = wait_for(Duration::from_secs(10), "finished", || async {
        let f = read(&client, &task).await;
        (f.status == RecordStatus::Finished).then_some(f)
    })
    .await;
    assert!(f.paused_ms.unwrap() >= 1000, "{:?}", f.paused_ms);
    assert_eq!(f.videos, Some(2));
    token.cancel();
    let _ = lifecycle.await;
    sim.stop().await;
}

/// A recording's events go to the recording feature's own URL, signed with its own key:
/// OnlineRecordStarted, OnlineRecordStopped, OnlineRecordFinished with the result (Tencent's
/// "Real-Time Recording Event" page); none reaches the push feature's URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recordings_events_go_to_its_own_url_with_its_own_key() {
    use tiw_push_exporter::callback::compute_sign;

    let sim = start_sim(sim_config(&[APP])).await;
    // A receiver that takes everything (the sim keeps what was answered 2xx).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let receiver = listener.local_addr().unwrap();
    let router = axum::Router::new().fallback(|| async { "{\"code\":0}" });
    tokio::spawn(async move { axum::serve(listener, router).await });
    sim.sim.keep_acknowledged();
    sim.sim
        .set_record_callback(APP, &format!("http://{receiver}/record"), RECORD_KEY);
    sim.sim.set_callback(APP, "", "");
    let task = sim.sim.create_record(APP, 9);
    sim.sim.update_record(&task, lifecycle::start);
    sim.sim.update_record(&task, |t| {
        t.exception_cnt = 1;
        lifecycle::stop(t, "EXCEPTION")
    });
    sim.sim.update_record(&task, lifecycle::finish);
    let events = wait_for(Duration::from_secs(10), "three recording events", || async {
        let got = sim.sim.acknowledged();
        (got.len() >= 3).then_some(got)
    })
    .await;
    let bodies: Vec<serde_json::Value> = events
        .iter()
        .map(|(app, body)| {
            assert_eq!(*app, APP);
            serde_json::from_slice(body).unwrap()
        })
        .collect();
    // Each delivery goes on its own, as TIW's do: the order they arrive in is not promised.
    let mut types: Vec<&str> = bodies.iter().map(|b| b["EventType"].as_str().unwrap()).collect();
    types.sort_unstable();
    assert_eq!(
        types,
        ["OnlineRecordFinished", "OnlineRecordStarted", "OnlineRecordStopped"]
    );
    for b in &bodies {
        let expire = b["ExpireTime"].as_u64().unwrap();
        assert_eq!(
            b["Sign"],
            compute_sign(RECORD_KEY, expire),
            "signed with the recording key"
        );
        assert_eq!(b["EventData"]["TaskId"], task.as_str());
    }
    let result = &bodies
        .iter()
        .find(|b| b["EventType"] == "OnlineRecordFinished")
        .unwrap()["EventData"];
    assert_eq!(result["FinishReason"], "EXCEPTION");
    assert_eq!(result["ExceptionCnt"], 1);
    assert_eq!(result["VideoInfos"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        sim.sim.callback_stats().no_url,
        0,
        "nothing went to the push feature's (empty) URL"
    );
    // A recording that had not started stops with OnlineRecordStopped alone.
    let early = sim.sim.create_record(APP, 10);
    sim.sim.update_record(&early, |t| lifecycle::stop(t, "USER_CALL"));
    let got = wait_for(Duration::from_secs(10), "the early stop", || async {
        let got = sim.sim.acknowledged();
        (got.len() >= 4).then_some(got)
    })
    .await;
    let last: serde_json::Value = serde_json::from_slice(&got[3].1).unwrap();
    assert_eq!(last["EventType"], "OnlineRecordStopped");
    sim.stop().await;
}

/// The exporter tracks recordings one by one for an app with `record: true`: found in the
/// OnlineRecord list, shown in every state, an end noticed from the list (reads are a minute apart
/// here, so only the list's hint can show it within seconds), counted once, and kept across a
/// restart. An app without `record` costs no DescribeOnlineRecord and shows no recording.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exporter_follows_recordings_through_their_states() {
    const OTHER: u64 = 1400000002;
    let sim = start_sim(sim_config(&[APP, OTHER])).await;
    let recording = sim.sim.create_record(APP, 11);
    sim.sim.update_record(&recording, lifecycle::start);
    let paused = sim.sim.create_record(APP, 12);
    sim.sim.update_record(&paused, lifecycle::start);
    sim.sim.update_record(&paused, lifecycle::pause);
    let failed = sim.sim.create_record(APP, 13);
    sim.sim
        .update_record(&failed, |t| lifecycle::fail(t, "code: 40004, msg: im login failed"));
    let prepared = sim.sim.create_record(APP, 14);
    sim.sim.create_record(OTHER, 15);

    let yaml = format!(
        "tencentcloud:\n  endpoint: {}\n  secret_id: {SECRET_ID}\n  secret_key: {SECRET_KEY}\n  timeout: 1s\n\
         apps:\n  - sdk_app_id: {APP}\n    record: true\n  - sdk_app_id: {OTHER}\n\
         poll:\n  interval: 60s\n  discovery_interval: 300ms\n",
        sim.endpoint()
    );
    let app = APP.to_string();
    let status = |m: &Metrics, task: &str| -> Option<String> {
        [
            "PREPARED",
            "RECORDING",
            "PAUSED",
            "STOPPED",
            "FINISHED",
            "FAILED",
            "UNKNOWN",
        ]
        .into_iter()
        .find(|s| {
            m.get(
                "tiw_record_task_status",
                &[("sdk_app_id", &app), ("task_id", task), ("status", s)],
            ) == Some(1.0)
        })
        .map(str::to_string)
    };
    let exporter = start_exporter(&yaml).await;
    // A recording that failed before the exporter's first pass is not in the running list: history,
    // not tracked.
    let m = wait_for(Duration::from_secs(15), "recordings in their states", || async {
        let m = exporter.scrape().await;
        let states: Vec<Option<String>> = [&recording, &paused, &prepared].iter().map(|t| status(&m, t)).collect();
        (states == [Some("RECORDING".into()), Some("PAUSED".into()), Some("PREPARED".into())]).then_some(m)
    })
    .await;
    assert_eq!(status(&m, &failed), None, "{failed} failed before it was ever listed");
    assert_eq!(
        m.sum("tiw_record_task_status", &[("sdk_app_id", &OTHER.to_string())]),
        0.0
    );
    assert_eq!(m.sum("tiw_record_tasks", &[("sdk_app_id", &OTHER.to_string())]), 0.0);
    let reads = sim
        .sim
        .stats()
        .requests
        .get("DescribeOnlineRecord")
        .copied()
        .unwrap_or(0);
    assert_eq!(
        reads, 3,
        "one read per recording of the recording app, none of the other"
    );

    // Ended with EXCEPTION and uploaded: gone from the list, so read first, well before a minute.
    sim.sim.update_record(&recording, |t| lifecycle::stop(t, "EXCEPTION"));
    sim.sim.update_record(&recording, lifecycle::finish);
    let ended = std::time::Instant::now();
    let m = wait_for(Duration::from_secs(10), "the end, from the list's hint", || async {
        let m = exporter.scrape().await;
        (status(&m, &recording).as_deref() == Some("FINISHED")).then_some(m)
    })
    .await;
    assert!(ended.elapsed() < Duration::from_secs(10));
    let reason = |m: &Metrics, r: &str| {
        m.get(
            "tiw_record_tasks_finished_total",
            &[("sdk_app_id", &app), ("reason", r)],
        )
    };
    assert_eq!(reason(&m, "EXCEPTION"), Some(1.0));
    assert_eq!(m.sum("tiw_record_tasks_finished_total", &[("sdk_app_id", &app)]), 1.0);
    assert_eq!(
        m.get(
            "tiw_record_task_finish_reason",
            &[("sdk_app_id", &app), ("task_id", &recording), ("reason", "EXCEPTION")]
        ),
        Some(1.0)
    );
    assert!(m.get("tiw_record_video_bytes_total", &[("sdk_app_id", &app)]).unwrap() > 0.0);
    assert_eq!(
        m.get("tiw_record_duration_seconds_count", &[("sdk_app_id", &app)]),
        Some(1.0)
    );

    // A restart on the same store: the recordings and their counters are back, nothing counted twice.
    let state = exporter.stop_keeping_state().await;
    let exporter = start_exporter_with_state(&yaml, state).await;
    let m = wait_for(
        Duration::from_secs(10),
        "the recordings back after a restart",
        || async {
            let m = exporter.scrape().await;
            (status(&m, &paused).as_deref() == Some("PAUSED")).then_some(m)
        },
    )
    .await;
    assert_eq!(status(&m, &recording).as_deref(), Some("FINISHED"));
    assert_eq!(reason(&m, "EXCEPTION"), Some(1.0));
    assert_eq!(m.sum("tiw_record_tasks_finished_total", &[("sdk_app_id", &app)]), 1.0);
    exporter.stop().await;
    sim.stop().await;
}

/// Recording events at the exporter's callback path, for an app with `record: true` and its own
/// `record_callback_key`: verified with that key (the push key does not sign them), each puts the
/// recording's read first, so an end shows in about a read although reads are a minute apart and
/// the list is read once a minute; a made-up id is read, never shown, and after three
/// TaskNotFound answers its events are `contradicted`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recording_events_signed_with_the_recording_key_put_the_read_first() {
    use serde_json::json;
    use tiw_push_exporter::simulator::callbacks::sign_event;
    const PUSH_KEY: &str = "push-key";
    let sim = start_sim(sim_config(&[APP])).await;
    let task = sim.sim.create_record(APP, 31);
    sim.sim.update_record(&task, lifecycle::start);
    let yaml = format!(
        "tencentcloud:\n  endpoint: {}\n  secret_id: {SECRET_ID}\n  secret_key: {SECRET_KEY}\n  timeout: 1s\n\
         apps:\n  - sdk_app_id: {APP}\n    callback_key: {PUSH_KEY}\n    record: true\n    record_callback_key: {RECORD_KEY}\n\
         poll:\n  interval: 60s\n  discovery_interval: 60s\n",
        sim.endpoint()
    );
    let exporter = start_exporter(&yaml).await;
    sim.sim.set_record_callback(APP, &exporter.url("/callback"), RECORD_KEY);
    let app = APP.to_string();
    let shows = |m: &Metrics, task: &str, status: &str| {
        m.get(
            "tiw_record_task_status",
            &[("sdk_app_id", &app), ("task_id", task), ("status", status)],
        ) == Some(1.0)
    };
    wait_for(Duration::from_secs(10), "the recording found", || async {
        shows(&exporter.scrape().await, &task, "RECORDING").then_some(())
    })
    .await;

    // Stopped at Tencent: TIW's OnlineRecordStopped, signed with the recording key, brings the read.
    sim.sim.update_record(&task, |t| lifecycle::stop(t, "USER_CALL"));
    let stopped = std::time::Instant::now();
    wait_for(Duration::from_secs(10), "STOPPED after the event", || async {
        shows(&exporter.scrape().await, &task, "STOPPED").then_some(())
    })
    .await;
    assert!(stopped.elapsed() < Duration::from_secs(10), "not the minute's read");
    let accepted = |m: &Metrics, event: &str, outcome: &str| {
        m.get(
            "tiw_exporter_callbacks_total",
            &[("sdk_app_id", &app), ("event_type", event), ("outcome", outcome)],
        )
        .unwrap_or(0.0)
    };
    let m = exporter.scrape().await;
    assert!(accepted(&m, "OnlineRecordStopped", "accepted") >= 1.0);

    let post = |body: serde_json::Value| {
        let url = exporter.url("/callback");
        async move {
            let res = reqwest::Client::new().post(url).json(&body).send().await.unwrap();
            let status = res.status().as_u16();
            (status, res.text().await.unwrap_or_default())
        }
    };
    let event = |id: &str| {
        json!({"EventType": "OnlineRecordStarted", "SdkAppId": APP, "Timestamp": now(),
               "EventData": {"TaskId": id, "RoomId": 31, "RecordUserId": "tic_record_user_31"}})
    };
    // The push feature's key does not sign recording events.
    let (status, _) = post(sign_event(event(&task), PUSH_KEY, now() + 300)).await;
    assert_eq!(status, 401);
    let (status, _) = post(event(&task)).await;
    assert_eq!(status, 401, "unsigned");
    // A made-up id: read, never shown, dropped after three TaskNotFound, then contradicted.
    let made_up = "madeuprecording00001";
    let (status, body) = post(sign_event(event(made_up), RECORD_KEY, now() + 300)).await;
    assert_eq!(status, 200, "{body}");
    wait_for(Duration::from_secs(10), "the made-up id dropped", || async {
        let m = exporter.scrape().await;
        (m.get(
            "tiw_exporter_tasks_dropped_total",
            &[("sdk_app_id", &app), ("reason", "not_found")],
        ) >= Some(1.0))
        .then_some(())
    })
    .await;
    let (status, _) = post(sign_event(event(made_up), RECORD_KEY, now() + 300)).await;
    assert_eq!(status, 200);
    let m = exporter.scrape().await;
    assert_eq!(accepted(&m, "OnlineRecordStarted", "contradicted"), 1.0);
    assert_eq!(
        m.sum("tiw_record_task_status", &[("task_id", made_up)]),
        0.0,
        "a recording only a callback named is never shown"
    );
    let reads = sim
        .sim
        .stats()
        .requests
        .get("DescribeOnlineRecord")
        .copied()
        .unwrap_or(0);
    let (status, _) = post(sign_event(event(made_up), RECORD_KEY, now() + 300)).await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        sim.sim
            .stats()
            .requests
            .get("DescribeOnlineRecord")
            .copied()
            .unwrap_or(0),
        reads,
        "a refuted id costs no more reads"
    );
    exporter.stop().await;
    sim.stop().await;
}
