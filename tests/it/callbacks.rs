//! The callback receiver over real HTTP: hostile input, duplicates, order, loss, load.

use std::time::Duration;

use serde_json::{json, Value};
use tiw_push_exporter::simulator::callbacks::sign_event;
use tiw_push_exporter::simulator::{CallbackKnobs, LifecyclePlan, Outcome, SimStatus};

use crate::common::*;

const KEYED: u64 = 1400000001;
const OPEN: u64 = 1400000002;
/// An app with no key that does not allow unsigned events: it can receive no push callback.
const NOKEY: u64 = 1400000003;
const KEY: &str = "cbKey-0123456789";

/// Config for a keyed app, an app that allows unsigned callbacks and an app without a key.
fn callback_yaml(endpoint: &str, poll: &str) -> String {
    callback_yaml_with(endpoint, poll, "")
}

fn callback_yaml_with(endpoint: &str, poll: &str, extra: &str) -> String {
    config_yaml(endpoint, &[], poll, extra).replace(
        "apps:\n",
        &format!("apps:\n  - sdk_app_id: {KEYED}\n    callback_key: {KEY}\n    discover: false\n  - sdk_app_id: {OPEN}\n    allow_unsigned_callbacks: true\n    discover: false\n  - sdk_app_id: {NOKEY}\n    discover: false\n"),
    )
}

fn started(app: u64, task: &str) -> Value {
    json!({"EventType": "WhiteboardPushStarted", "SdkAppId": app, "Timestamp": now(),
           "EventData": {"TaskId": task, "RoomId": 1253, "PushUserId": "tic_push_user_1253_01", "PushStartTime": now() - 100}})
}

fn stopped(app: u64, task: &str, start: u64, stop: u64, exceptions: u64) -> Value {
    json!({"EventType": "WhiteboardPushStopped", "SdkAppId": app, "Timestamp": now(),
           "EventData": {"TaskId": task, "RoomId": 880528, "GroupId": "880528", "PushUserId": "tic_push_user_880528",
                         "FinishReason": "EXCEPTION", "PushStartTime": start, "PushStopTime": stop, "IMSyncTime": start,
                         "ExceptionCnt": exceptions}})
}

fn signed(v: Value) -> Value {
    sign_event(v, KEY, now() + 300)
}

async fn post(exporter: &Running, body: impl Into<reqwest::Body>) -> (u16, String) {
    let res = reqwest::Client::new()
        .post(exporter.url("/callback"))
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .expect("callback POST");
    let status = res.status().as_u16();
    (status, res.text().await.unwrap_or_default())
}

fn with(mut v: Value, pointer: &str, new: Value) -> Value {
    *v.pointer_mut(pointer).unwrap_or_else(|| panic!("{pointer}")) = new;
    v
}

fn without(mut v: Value, pointer: &str) -> Value {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let target = if parent.is_empty() {
        &mut v
    } else {
        v.pointer_mut(parent).unwrap()
    };
    target.as_object_mut().unwrap().remove(key);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_callbacks_are_refused_and_change_nothing() {
    let sim = start_sim(sim_config(&[KEYED, OPEN, NOKEY])).await;
    let exporter = start_exporter(&callback_yaml(&sim.endpoint(), "1h")).await;
    sim.sim.create_task_named(KEYED, 1253, "knowntask0000000000a", None);
    sim.sim.start_pushing("knowntask0000000000a");
    // One known task, so "unchanged" covers an existing task too; its first poll settles first.
    assert_eq!(
        post(&exporter, signed(started(KEYED, "knowntask0000000000a")).to_string())
            .await
            .0,
        200
    );
    wait_for(Duration::from_secs(5), "the seeded task's first poll", || async {
        (sim.sim.stats().requests.get("DescribeWhiteboardPush") == Some(&1)).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = exporter.registry.snapshot();

    let stop = stopped(KEYED, "hostiletask000000001", now() - 100, now() - 10, 2);
    let good = signed(stop.clone());
    let text = good.to_string();
    let past = now() - 10;
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("body over max_body_bytes", format!("{{\"pad\":\"{}\"}}", "x".repeat(70_000)).into_bytes(), 413, "malformed"),
        // A body declared far larger is refused 413 before a byte of it is read, so a client still
        // writing it may see its connection closed first: burst.rs tests that with a raw socket.
        ("empty body", vec![], 400, "malformed"),
        ("not JSON", b"hello".to_vec(), 400, "malformed"),
        ("truncated JSON", text.as_bytes()[..text.len() / 2].to_vec(), 400, "malformed"),
        ("JSON array", b"[1,2,3]".to_vec(), 400, "malformed"),
        ("JSON string", b"\"WhiteboardPushStopped\"".to_vec(), 400, "malformed"),
        ("JSON null", b"null".to_vec(), 400, "malformed"),
        ("SdkAppId as string", with(good.clone(), "/SdkAppId", json!("1400000001")).to_string().into_bytes(), 400, "malformed"),
        ("SdkAppId negative", with(good.clone(), "/SdkAppId", json!(-1)).to_string().into_bytes(), 400, "malformed"),
        ("SdkAppId huge", text.replace("1400000001", "184467440737095516160000").into_bytes(), 400, "malformed"),
        ("SdkAppId fractional", with(good.clone(), "/SdkAppId", json!(1.5)).to_string().into_bytes(), 400, "malformed"),
        ("Timestamp as string", with(good.clone(), "/Timestamp", json!("1575545412")).to_string().into_bytes(), 400, "malformed"),
        ("Timestamp negative", with(good.clone(), "/Timestamp", json!(-5)).to_string().into_bytes(), 400, "malformed"),
        ("missing EventData", without(good.clone(), "/EventData").to_string().into_bytes(), 400, "malformed"),
        ("EventData an array", with(good.clone(), "/EventData", json!([1])).to_string().into_bytes(), 400, "malformed"),
        ("missing EventType", without(good.clone(), "/EventType").to_string().into_bytes(), 400, "malformed"),
        ("EventType a number", with(good.clone(), "/EventType", json!(7)).to_string().into_bytes(), 400, "malformed"),
        ("missing TaskId", without(good.clone(), "/EventData/TaskId").to_string().into_bytes(), 400, "malformed"),
        ("empty TaskId", with(good.clone(), "/EventData/TaskId", json!("")).to_string().into_bytes(), 400, "malformed"),
        ("TaskId a number", with(good.clone(), "/EventData/TaskId", json!(42)).to_string().into_bytes(), 400, "malformed"),
        ("TaskId with spaces", with(good.clone(), "/EventData/TaskId", json!("a b\nc")).to_string().into_bytes(), 400, "malformed"),
        ("ExceptionCnt as string", with(good.clone(), "/EventData/ExceptionCnt", json!("3")).to_string().into_bytes(), 400, "malformed"),
        ("ExceptionCnt negative", with(good.clone(), "/EventData/ExceptionCnt", json!(-3)).to_string().into_bytes(), 400, "malformed"),
        ("ExceptionCnt huge", with(good.clone(), "/EventData/ExceptionCnt", json!(1u64 << 40)).to_string().into_bytes(), 400, "malformed"),
        ("PushStopTime beyond u64", text.replace(&format!("\"PushStopTime\":{}", now() - 10), "\"PushStopTime\":99999999999999999999999").into_bytes(), 400, "malformed"),
        ("RoomId as string", with(good.clone(), "/EventData/RoomId", json!("880528")).to_string().into_bytes(), 400, "malformed"),
        ("ExpireTime as string", with(good.clone(), "/ExpireTime", json!("9999999999")).to_string().into_bytes(), 400, "malformed"),
        ("Sign a number", with(good.clone(), "/Sign", json!(12345)).to_string().into_bytes(), 400, "malformed"),
        ("unknown SdkAppId", with(good.clone(), "/SdkAppId", json!(1400000099)).to_string().into_bytes(), 403, "unknown_app"),
        ("keyed app, unsigned", stop.to_string().into_bytes(), 401, "unsigned"),
        ("app without a key, unsigned push event", with(stop.clone(), "/SdkAppId", json!(NOKEY)).to_string().into_bytes(), 401, "unsigned"),
        ("app without a key, Started with a made-up id", started(NOKEY, "forgedtask0000000001").to_string().into_bytes(), 401, "unsigned"),
        ("app without a key, signed anyway", sign_event(with(stop.clone(), "/SdkAppId", json!(NOKEY)), KEY, now() + 300).to_string().into_bytes(), 401, "unsigned"),
        ("keyed app, Sign without ExpireTime", without(good.clone(), "/ExpireTime").to_string().into_bytes(), 401, "unsigned"),
        ("signed with another key", sign_event(stop.clone(), "not-the-key", now() + 300).to_string().into_bytes(), 401, "bad_signature"),
        ("Sign in upper case", with(good.clone(), "/Sign", json!(good["Sign"].as_str().unwrap().to_uppercase())).to_string().into_bytes(), 401, "bad_signature"),
        ("ExpireTime pushed out, old Sign", with(good.clone(), "/ExpireTime", json!(now() + 86_400)).to_string().into_bytes(), 401, "bad_signature"),
        ("expired", sign_event(stop.clone(), KEY, past).to_string().into_bytes(), 401, "expired"),
        ("Tencent's doc example as is (Sign of another ExpireTime)", with(json!({
            "EventData": {"TaskId": "ghucnligqtgtvk2624mb", "RoomId": 880528, "GroupId": "880528", "PushUserId": "tic_push_user_880528_test-01",
                          "FinishReason": "USER_CALL", "PushStartTime": 1568949369, "PushStopTime": 1568949392, "IMSyncTime": 1568949369, "ExceptionCnt": 0},
            "EventType": "WhiteboardPushStopped", "ExpireTime": 1590046391, "SdkAppId": 0, "Sign": "a2dabb362a9b811c0e26953a6276a41c", "Timestamp": 1575545412
        }), "/SdkAppId", json!(KEYED)).to_string().into_bytes(), 401, "bad_signature"),
        ("EventType in the wrong case", signed(with(stop.clone(), "/EventType", json!("whiteboardpushstopped"))).to_string().into_bytes(), 200, "ignored"),
        ("another TIW event", signed(json!({"EventType": "TranscodeFinished", "SdkAppId": KEYED, "Timestamp": now(), "EventData": {"TaskId": "x"}})).to_string().into_bytes(), 200, "ignored"),
        // Each TIW feature has its own key API (SetTranscodeCallbackKey, ...): another feature's
        // event is signed with another key and must not be refused as bad_signature.
        ("another feature's event, its own key", sign_event(json!({"EventType": "TranscodeFinished", "SdkAppId": KEYED, "Timestamp": now(), "EventData": {"TaskId": "x", "Progress": 100}}), "transcode-feature-key", now() + 300).to_string().into_bytes(), 200, "ignored"),
        ("recording event, expired Sign of another key", sign_event(json!({"EventType": "OnlineRecordStopped", "SdkAppId": KEYED, "Timestamp": now(), "EventData": {}}), "record-key", past).to_string().into_bytes(), 200, "ignored"),
        ("another feature's event at an app without a key", json!({"EventType": "TranscodeFinished", "SdkAppId": NOKEY, "Timestamp": now(), "EventData": {}}).to_string().into_bytes(), 200, "ignored"),
        ("OnlineRecordStarted on the open app", json!({"EventType": "OnlineRecordStarted", "SdkAppId": OPEN, "Timestamp": now(), "EventData": {}}).to_string().into_bytes(), 200, "ignored"),
    ];
    assert!(cases.len() >= 30);
    let mut last = exporter.scrape().await;
    for (name, body, status, outcome) in cases {
        let (got, reply) = post(&exporter, body).await;
        assert_eq!(got, status, "{name}: {reply}");
        let now_m = exporter.scrape().await;
        let count = |m: &Metrics| m.sum("tiw_exporter_callbacks_total", &[("outcome", outcome)]);
        assert_eq!(
            count(&now_m) - count(&last),
            1.0,
            "{name}: outcome {outcome} counted once"
        );
        if status == 200 {
            assert_eq!(reply, r#"{"error_code":0}"#, "{name}");
        }
        last = now_m;
    }
    assert_eq!(
        exporter.registry.snapshot(),
        before,
        "no refused or ignored callback changed the registry"
    );
    // A malformed push event is still labelled with its event type.
    assert!(
        last.sum(
            "tiw_exporter_callbacks_total",
            &[("event_type", "WhiteboardPushStopped"), ("outcome", "malformed")]
        ) >= 10.0
    );
    // Each refusal is counted under the configured app it names, or "" (bounded) when none.
    let counted = |app: &str, event_type: &str, outcome: &str| {
        last.get(
            "tiw_exporter_callbacks_total",
            &[("sdk_app_id", app), ("event_type", event_type), ("outcome", outcome)],
        )
    };
    assert_eq!(counted("1400000003", "WhiteboardPushStopped", "unsigned"), Some(2.0));
    assert_eq!(counted("1400000003", "WhiteboardPushStarted", "unsigned"), Some(1.0));
    assert_eq!(counted("", "WhiteboardPushStopped", "unknown_app"), Some(1.0));
    assert_eq!(
        counted("1400000001", "WhiteboardPushStopped", "bad_signature"),
        Some(4.0)
    );
    assert!(
        !last.text.contains("sdk_app_id=\"1400000099\""),
        "an unknown app is never a label value"
    );
    exporter.stop().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_a_stopped_event_counts_it_once() {
    let sim = start_sim(sim_config(&[KEYED, OPEN])).await;
    let exporter = start_exporter(&callback_yaml(&sim.endpoint(), "1h")).await;
    let task = "replayedtask00000001";
    sim.sim.create_task_named(KEYED, 880528, task, None);
    sim.sim.update_task(task, |t| {
        tiw_push_exporter::simulator::lifecycle::start(t);
        t.exception_cnt = 4;
        tiw_push_exporter::simulator::lifecycle::stop(t, "EXCEPTION");
    });
    let event = stopped(KEYED, task, now() - 100, now() - 10, 4);
    for i in 0..10 {
        // TIW re-signs retries: a fresh ExpireTime does not make a copy a new event.
        let body = sign_event(event.clone(), KEY, now() + 100 + i);
        assert_eq!(post(&exporter, body.to_string()).await.0, 200);
    }
    let app = ("sdk_app_id", "1400000001");
    // The claim is counted once the confirming poll agrees.
    let m = wait_for(Duration::from_secs(10), "the confirming poll", || async {
        let m = exporter.scrape().await;
        (m.get("tiw_push_tasks_finished_total", &[app, ("reason", "EXCEPTION")]) == Some(1.0)).then_some(m)
    })
    .await;
    assert_eq!(
        m.get("tiw_push_tasks_finished_total", &[app, ("reason", "EXCEPTION")]),
        Some(1.0)
    );
    assert_eq!(m.sum("tiw_push_tasks_finished_total", &[app]), 1.0);
    assert_eq!(m.get("tiw_push_exceptions_total", &[app]), Some(4.0));
    assert_eq!(m.get("tiw_push_tasks_started_total", &[app]), Some(1.0));
    let stopped = ("event_type", "WhiteboardPushStopped");
    assert_eq!(
        m.get("tiw_exporter_callbacks_total", &[app, stopped, ("outcome", "accepted")]),
        Some(1.0)
    );
    assert_eq!(
        m.get(
            "tiw_exporter_callbacks_total",
            &[app, stopped, ("outcome", "duplicate")]
        ),
        Some(9.0)
    );
    assert_eq!(
        m.get(
            "tiw_exporter_callbacks_total",
            &[app, stopped, ("outcome", "contradicted")]
        ),
        Some(0.0)
    );
    assert_eq!(
        m.get("tiw_exporter_callback_delay_seconds_count", &[stopped]),
        Some(10.0)
    );
    exporter.stop().await;
    sim.stop().await;
}

/// What /metrics says about one app's single task, without the values that move with time.
fn projection(m: &Metrics, app: &str) -> Vec<(String, Vec<f64>)> {
    let a = ("sdk_app_id", app);
    let mut out: Vec<(String, Vec<f64>)> = [
        "tiw_push_task_status",
        "tiw_push_task_finish_reason",
        "tiw_push_task_start_timestamp_seconds",
        "tiw_push_task_stop_timestamp_seconds",
        "tiw_push_task_duration_seconds",
        "tiw_push_task_exceptions",
        "tiw_push_task_im_sync_timestamp_seconds",
        "tiw_push_task_info",
        "tiw_push_tasks",
        "tiw_push_tasks_started_total",
        "tiw_push_tasks_finished_total",
        "tiw_push_exceptions_total",
        "tiw_push_duration_seconds_count",
        "tiw_push_duration_seconds_sum",
    ]
    .iter()
    .map(|name| (name.to_string(), m.values(name, &[a])))
    .collect();
    out.push(("status".into(), vec![]));
    out
}

/// The same task history reaches the exporter in five ways; /metrics ends the same in each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_loss_duplicates_and_stale_polls_end_in_the_same_metrics() {
    let apps: [u64; 5] = [1400000011, 1400000012, 1400000013, 1400000014, 1400000015];
    let sim = start_sim(sim_config(&apps)).await;
    let yaml = config_yaml(&sim.endpoint(), &apps, "200ms", "").replace(
        "  - sdk_app_id: ",
        "  - allow_unsigned_callbacks: true\n    sdk_app_id: ",
    );
    let exporter = start_exporter(&yaml).await;
    let (start, stop) = (now() - 100, now() - 10);
    let mut tasks = Vec::new();
    for app in apps {
        let t = sim.sim.create_task(app, 880528);
        sim.sim.update_task(&t, |t| {
            t.group_id = "880528".into();
            t.push_user_id = "tic_push_user_880528".into();
        });
        tasks.push(t);
    }
    let push = |t: &str| {
        sim.sim.update_task(t, |t| {
            t.status = SimStatus::Pushing;
            t.push_start_time = start as i64;
            t.im_sync_time = start as i64;
        })
    };
    let end = |t: &str| {
        sim.sim.update_task(t, |t| {
            t.status = SimStatus::Stopped;
            t.finish_reason = Some("EXCEPTION");
            t.push_stop_time = stop as i64;
            t.exception_cnt = 2;
        })
    };
    let started_ev = |app: u64, t: &str| {
        with(
            with(
                with(started(app, t), "/EventData/PushStartTime", json!(start)),
                "/EventData/PushUserId",
                json!("tic_push_user_880528"),
            ),
            "/EventData/RoomId",
            json!(880528),
        )
        .to_string()
    };
    let stopped_ev = |app: u64, t: &str| stopped(app, t, start, stop, 2).to_string();

    // 1. In order.
    push(&tasks[0]);
    post(&exporter, started_ev(apps[0], &tasks[0])).await;
    end(&tasks[0]);
    post(&exporter, stopped_ev(apps[0], &tasks[0])).await;
    // 2. Stopped before Started.
    push(&tasks[1]);
    end(&tasks[1]);
    post(&exporter, stopped_ev(apps[1], &tasks[1])).await;
    post(&exporter, started_ev(apps[1], &tasks[1])).await;
    // 3. Both callbacks lost: discovery and polling fill it in.
    push(&tasks[2]);
    wait_status(&exporter, &tasks[2], "PUSHING").await;
    end(&tasks[2]);
    // 4. Every callback delivered three times.
    push(&tasks[3]);
    for _ in 0..3 {
        post(&exporter, started_ev(apps[3], &tasks[3])).await;
    }
    end(&tasks[3]);
    for _ in 0..3 {
        post(&exporter, stopped_ev(apps[3], &tasks[3])).await;
    }
    // 5. The Stopped callback overtakes Tencent: the confirming poll still answers PUSHING. The
    //    API wins (design §3): back to PUSHING, the callback counted contradicted, until the API
    //    itself says STOPPED.
    push(&tasks[4]);
    post(&exporter, started_ev(apps[4], &tasks[4])).await;
    post(&exporter, stopped_ev(apps[4], &tasks[4])).await;
    let contradicted = [("sdk_app_id", "1400000015"), ("outcome", "contradicted")];
    wait_for(Duration::from_secs(5), "the claim contradicted", || async {
        let m = exporter.scrape().await;
        (m.sum("tiw_exporter_callbacks_total", &contradicted) == 1.0
            && m.status_of(&tasks[4]).as_deref() == Some("PUSHING"))
        .then_some(())
    })
    .await;
    end(&tasks[4]);

    let m = wait_for(Duration::from_secs(15), "every scenario to settle", || async {
        let m = exporter.scrape().await;
        let done = apps.iter().all(|a| {
            m.get(
                "tiw_push_tasks_finished_total",
                &[("sdk_app_id", a.to_string().as_str()), ("reason", "EXCEPTION")],
            ) == Some(1.0)
        });
        let confirmed = apps
            .iter()
            .zip(&tasks)
            .all(|(a, t)| exporter.registry.get(*a, t).is_some_and(|t| !t.is_pollable()));
        (done && confirmed).then_some(m)
    })
    .await;
    let reference = projection(&m, &apps[0].to_string());
    assert!(
        reference
            .iter()
            .any(|(n, v)| n == "tiw_push_task_stop_timestamp_seconds" && v == &vec![stop as f64]),
        "{reference:?}"
    );
    for app in &apps[1..] {
        assert_eq!(
            projection(&m, &app.to_string()),
            reference,
            "app {app} differs from the in-order delivery"
        );
    }
    for (app, task) in apps.iter().zip(&tasks) {
        assert!(
            !exporter.registry.get(*app, task).unwrap().is_pollable(),
            "{task}: confirmed by a final poll"
        );
    }
    exporter.stop().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_signed_events_are_all_taken() {
    // The API cannot be reached: the claims wait for it. 200 made-up tasks (the app's cap of tasks
    // only callbacks named), each Started, Stopped and three copies, 64 at a time.
    let yaml = callback_yaml_with(&closed_endpoint(), "1h", "callback:\n  confirm_timeout: 500ms\n");
    let exporter = std::sync::Arc::new(start_exporter(&yaml).await);
    let cap = tiw_push_exporter::registry::MAX_UNCONFIRMED_PER_APP;
    let bodies = (0..cap).flat_map(|i| {
        let task = format!("loadtask{i:012}");
        let start = signed(started(KEYED, &task)).to_string();
        let stop = signed(stopped(KEYED, &task, now() - 100, now() - 5, 1)).to_string();
        [start.clone(), stop.clone(), start, stop.clone(), stop]
    });
    let statuses = post_all(&exporter.url("/callback"), bodies, 64).await;
    assert_eq!(statuses.len(), 5 * cap);
    assert!(
        statuses.iter().all(|s| *s == 200),
        "{:?}",
        statuses.iter().filter(|s| **s != 200).take(5).collect::<Vec<_>>()
    );
    // One more made-up task is refused so that TIW would retry it.
    let more = signed(started(KEYED, "loadtaskonemore00001")).to_string();
    assert_eq!(post_all(&exporter.url("/callback"), [more], 1).await, [503]);
    // Past confirm_timeout, claims about tasks the API never confirmed are still not counted.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let app = ("sdk_app_id", "1400000001");
    let m = exporter.scrape().await;
    assert_eq!(
        m.sum("tiw_exporter_callbacks_total", &[("outcome", "accepted")]),
        2.0 * cap as f64
    );
    assert_eq!(
        m.sum("tiw_exporter_callbacks_total", &[("outcome", "duplicate")]),
        3.0 * cap as f64
    );
    assert_eq!(m.sum("tiw_push_tasks_finished_total", &[app]), 0.0);
    assert_eq!(m.get("tiw_push_tasks_started_total", &[app]), Some(0.0));
    assert_eq!(m.get("tiw_push_tasks", &[app, ("status", "UNKNOWN")]), Some(cap as f64));
    assert_eq!(m.get("tiw_push_exceptions_total", &[app]), Some(0.0));
    assert_eq!(exporter.registry.len(), cap);
    std::sync::Arc::into_inner(exporter).unwrap().stop().await;
}

/// The simulator calls back on its own, dropping, duplicating, delaying and reordering; the
/// exporter still ends with the simulator's truth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulator_callbacks_with_faults_end_in_the_truth() {
    let sim = start_sim(sim_config(&[KEYED])).await;
    let exporter = start_exporter(&config_yaml(&sim.endpoint(), &[], "300ms", "").replace(
        "apps:\n",
        &format!("apps:\n  - sdk_app_id: {KEYED}\n    callback_key: {KEY}\n"),
    ))
    .await;
    sim.sim.set_callback(KEYED, &exporter.url("/callback"), KEY);
    sim.sim.set_callback_knobs(CallbackKnobs {
        drop: 0.3,
        duplicate: 0.5,
        delay: Duration::from_millis(20),
        reorder: 0.5,
        retry_every: Duration::from_millis(200),
        retries: 3,
    });
    let outcomes = [Outcome::Auto, Outcome::UserCall, Outcome::Exception, Outcome::Failed];
    for i in 0..24 {
        let plan = LifecyclePlan {
            prepare_for: Duration::from_millis(200 + 50 * i),
            push_for: Duration::from_millis(400 + 70 * i),
            outcome: outcomes[i as usize % 4],
            exceptions: (i % 3) as u32,
        };
        sim.sim.create_task_with(KEYED, i as i64, Some(plan));
    }
    let token = tokio_util::sync::CancellationToken::new();
    let lifecycle = sim.sim.spawn_lifecycle(Default::default(), token.clone());
    wait_for(
        Duration::from_secs(20),
        "the exporter to match the simulator",
        || async {
            let truth = sim.sim.tasks();
            let all_ended = truth
                .iter()
                .all(|t| matches!(t.status, SimStatus::Stopped | SimStatus::Failed));
            let matches = truth.iter().all(|t| {
                exporter.registry.get(KEYED, &t.task_id).is_some_and(|mine| {
                    let reason = mine.shown().finish_reason().map(|r| r.as_str());
                    match t.status {
                        SimStatus::Failed => reason == Some("FAILED"),
                        _ => {
                            reason == t.finish_reason
                                && mine.shown().exception_cnt() == t.exception_cnt as u64
                                && !mine.is_pollable()
                        }
                    }
                })
            });
            (all_ended && matches).then_some(())
        },
    )
    .await;
    let m = exporter.scrape().await;
    let app = ("sdk_app_id", "1400000001");
    for (reason, n) in [("AUTO", 6.0), ("USER_CALL", 6.0), ("EXCEPTION", 6.0), ("FAILED", 6.0)] {
        assert_eq!(
            m.get("tiw_push_tasks_finished_total", &[app, ("reason", reason)]),
            Some(n),
            "{reason}"
        );
    }
    let stats = sim.sim.callback_stats();
    assert!(stats.delivered > 0 && stats.dropped > 0, "{stats:?}");
    assert!(m.sum("tiw_exporter_callbacks_total", &[("outcome", "accepted")]) > 0.0);
    token.cancel();
    let _ = lifecycle.await;
    exporter.stop().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_can_have_their_own_listener() {
    let sim = start_sim(sim_config(&[KEYED, OPEN])).await;
    let cb = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let cb_addr = cb.local_addr().unwrap();
    drop(cb);
    let yaml = callback_yaml(&sim.endpoint(), "1h").replace(
        "poll:\n",
        &format!("callback:\n  listen_address: {cb_addr}\n  path: /tiw/events\npoll:\n"),
    );
    let exporter = start_exporter(&yaml).await;
    sim.sim.create_task_named(OPEN, 1, "ownlistener000000001", None);
    sim.sim.start_pushing("ownlistener000000001");
    let body = json!({"EventType": "WhiteboardPushStarted", "SdkAppId": OPEN, "Timestamp": now(), "EventData": {"TaskId": "ownlistener000000001", "PushStartTime": now()}}).to_string();
    let client = reqwest::Client::new();
    let on_main = client
        .post(exporter.url("/tiw/events"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(on_main.status(), 404, "not served on the main listener");
    let url = format!("http://{cb_addr}/tiw/events");
    let res = wait_for(Duration::from_secs(5), "the callback listener", || async {
        client.post(&url).body(body.clone()).send().await.ok()
    })
    .await;
    assert_eq!(res.status(), 200);
    let metrics_there = client.get(format!("http://{cb_addr}/metrics")).send().await.unwrap();
    assert_eq!(
        metrics_there.status(),
        404,
        "metrics are not served on the callback listener"
    );
    // Nothing but the callback path: no reload, landing page or probes where TIW reaches.
    let reload_there = client.post(format!("http://{cb_addr}/-/reload")).send().await.unwrap();
    assert_eq!(
        reload_there.status(),
        404,
        "reload is not served on the callback listener"
    );
    for path in ["/", "/-/healthy", "/-/ready", "/callback"] {
        let there = client.get(format!("http://{cb_addr}{path}")).send().await.unwrap();
        assert_eq!(there.status(), 404, "{path} on the callback listener");
    }
    assert_eq!(
        exporter.scrape().await.status_of("ownlistener000000001").as_deref(),
        Some("PUSHING")
    );
    exporter.stop().await;
    sim.stop().await;
}
