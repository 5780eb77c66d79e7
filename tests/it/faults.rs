//! Bad replies, app-level errors and clock skew: clear errors, /metrics keeps serving.

use std::time::{Duration, Instant};

use serde_json::json;
use tiw_push_exporter::config::Config;
use tiw_push_exporter::instruments::ApiInstruments;
use tiw_push_exporter::simulator::Fault;
use tiw_push_exporter::tencentcloud::client::build_clients;

use crate::common::*;

const APP: u64 = 1400000001;
const OTHER: u64 = 1400000002;

/// A client of `app` on the test credentials, with each `(from, to)` replaced in its config.
pub fn client_for(
    endpoint: &str,
    apps: &[u64],
    app: u64,
    replace: &[(&str, &str)],
) -> tiw_push_exporter::tencentcloud::TiwClient {
    let yaml = replace
        .iter()
        .fold(config_yaml(endpoint, apps, "1s", ""), |y, (from, to)| {
            y.replace(from, to)
        });
    let config = Config::from_yaml(&yaml, &|_| None).unwrap();
    build_clients(&config, &ApiInstruments::unexposed(), fast_retry())
        .remove(&app)
        .unwrap()
}

/// Each bad reply, over real HTTP, gives an error that says what happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_reply_is_a_clear_error() {
    let sim = start_sim(sim_config(&[APP])).await;
    let client = client_for(&sim.endpoint(), &[APP], APP, &[]);
    let task = sim.sim.create_task(APP, 1);
    let cases: Vec<(Fault, &str)> = vec![
        (Fault::Http500, "HTTP 500"),
        (Fault::NotJson, "not JSON"),
        (Fault::Hang, "timed out"),
        (
            Fault::Error {
                code: "InternalError".into(),
                message: "backend busy".into(),
            },
            "InternalError: backend busy (RequestId ",
        ),
        (
            Fault::Error {
                code: "AuthFailure.UnauthorizedOperation".into(),
                message: "no CAM permission".into(),
            },
            "AuthFailure.UnauthorizedOperation",
        ),
    ];
    for (fault, expected) in cases {
        sim.sim.set_task_fault(&task, Some(fault.clone()));
        let started = Instant::now();
        let err = client
            .describe_whiteboard_push(&task)
            .await
            .expect_err("a fault is an error");
        let text = err.to_string();
        assert!(text.contains(expected), "{fault:?}: {text}");
        assert!(!text.contains(SECRET_KEY));
        if matches!(fault, Fault::Hang) {
            // 3 attempts of a 1 s timeout each, plus short backoff.
            assert!(started.elapsed() < Duration::from_secs(6), "{:?}", started.elapsed());
        }
    }
    // Missing and null fields are not errors: the reply is used for what it has.
    sim.sim.set_task_fault(
        &task,
        Some(Fault::Response(
            json!({"Status": "PUSHING", "RoomId": null, "ExceptionCnt": null, "Backup": null}),
        )),
    );
    let reply = client
        .describe_whiteboard_push(&task)
        .await
        .expect("nulls are tolerated");
    assert_eq!(reply.status.as_deref(), Some("PUSHING"));
    assert_eq!(reply.room_id, None);
    sim.sim.set_task_fault(&task, Some(Fault::Response(json!({}))));
    let reply = client
        .describe_whiteboard_push(&task)
        .await
        .expect("an empty reply is tolerated");
    assert_eq!(reply.status, None);
    assert!(reply.request_id.is_some());
    sim.stop().await;
}

/// With every kind of fault going on, /metrics answers, the exporter counts what happened, and
/// once the faults stop every task shows its real state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_never_stop_metrics_and_polling_recovers() {
    let sim = start_sim(sim_config(&[APP])).await;
    let faults = [
        Fault::Http500,
        Fault::NotJson,
        Fault::Hang,
        Fault::Error {
            code: "InternalError".into(),
            message: "x".into(),
        },
        Fault::Response(json!({"Status": null, "FinishReason": null, "RoomId": null, "PushStartTime": null})),
    ];
    let mut tasks = Vec::new();
    for (i, fault) in faults.iter().enumerate() {
        let t = sim.sim.create_task(APP, i as i64);
        sim.sim.start_pushing(&t);
        sim.sim.set_task_fault(&t, Some(fault.clone()));
        tasks.push(t);
    }
    let exporter = start_exporter(&config_yaml(&sim.endpoint(), &[APP], "300ms", "")).await;
    wait_for(Duration::from_secs(20), "every fault to be met", || async {
        let m = exporter.scrape().await;
        let code = |c: &str| {
            m.sum(
                "tiw_exporter_api_requests_total",
                &[("action", "DescribeWhiteboardPush"), ("code", c)],
            )
        };
        (code("transport") >= 3.0 && code("InternalError") >= 1.0 && code("OK") >= 1.0).then_some(())
    })
    .await;
    for _ in 0..5 {
        let started = Instant::now();
        let res = reqwest::get(exporter.url("/metrics")).await.unwrap();
        assert_eq!(res.status(), 200);
        assert!(started.elapsed() < Duration::from_secs(1));
    }
    // The null-fields task is tracked, with nothing invented for it.
    let m = exporter.scrape().await;
    assert_eq!(m.status_of(&tasks[4]).as_deref(), Some("UNKNOWN"));
    for t in &tasks {
        sim.sim.set_task_fault(t, None);
    }
    for t in &tasks {
        wait_status(&exporter, t, "PUSHING").await;
    }
    assert_eq!(
        exporter.scrape().await.get("tiw_up", &[("sdk_app_id", "1400000001")]),
        Some(1.0)
    );
    exporter.stop().await;
    sim.stop().await;
}

/// An app-level error takes only that app down; the other keeps being polled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_level_error_sets_tiw_up_zero_for_that_app_only() {
    let sim = start_sim(sim_config(&[APP, OTHER])).await;
    let ok_task = sim.sim.create_task(APP, 1);
    let down_task = sim.sim.create_task(OTHER, 2);
    let exporter = start_exporter(&config_yaml(&sim.endpoint(), &[APP, OTHER], "200ms", "")).await;
    wait_status(&exporter, &down_task, "PREPARED").await;
    sim.sim.set_app_fault(
        OTHER,
        Some(Fault::Error {
            code: "ResourceUnavailable.ServiceExpired".into(),
            message: "The service has expired.".into(),
        }),
    );
    wait_for(Duration::from_secs(10), "tiw_up{OTHER}=0", || async {
        (exporter.scrape().await.get("tiw_up", &[("sdk_app_id", "1400000002")]) == Some(0.0)).then_some(())
    })
    .await;
    sim.sim.start_pushing(&ok_task);
    sim.sim.start_pushing(&down_task);
    let m = wait_status(&exporter, &ok_task, "PUSHING").await;
    assert_eq!(m.get("tiw_up", &[("sdk_app_id", "1400000001")]), Some(1.0));
    assert_eq!(
        m.status_of(&down_task).as_deref(),
        Some("PREPARED"),
        "no state from an app that is down"
    );
    sim.sim.set_app_fault(OTHER, None);
    wait_status(&exporter, &down_task, "PUSHING").await;
    wait_for(Duration::from_secs(10), "tiw_up{OTHER}=1", || async {
        (exporter.scrape().await.get("tiw_up", &[("sdk_app_id", "1400000002")]) == Some(1.0)).then_some(())
    })
    .await;
    exporter.stop().await;
    sim.stop().await;
}

/// Tencent refuses a clock more than 5 minutes off; the error says so and is not retried blindly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_skew_is_named_and_not_retried() {
    let mut config = sim_config(&[APP]);
    config.clock_offset_secs = 600;
    let sim = start_sim(config).await;
    let client = client_for(&sim.endpoint(), &[APP], APP, &[]);
    let err = client.describe_whiteboard_push("x").await.unwrap_err();
    assert_eq!(err.code(), Some("AuthFailure.SignatureExpire"));
    assert!(err.to_string().contains("clock"), "{err}");
    assert_eq!(
        sim.sim.stats().requests["DescribeWhiteboardPush"],
        1,
        "AuthFailure is not retried"
    );
    sim.stop().await;
}

/// A wrong SecretKey is refused by the signature check, once, and the key appears nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_key_is_a_signature_failure() {
    let sim = start_sim(sim_config(&[APP])).await;
    let yaml = config_yaml(&sim.endpoint(), &[APP], "1s", "").replace(SECRET_KEY, "wrongKeyValue");
    let config = Config::from_yaml(&yaml, &|_| None).unwrap();
    let wrong = build_clients(&config, &ApiInstruments::unexposed(), fast_retry())
        .remove(&APP)
        .unwrap();
    let err = wrong.describe_whiteboard_push("x").await.unwrap_err();
    assert_eq!(err.code(), Some("AuthFailure.SignatureFailure"));
    assert!(!err.to_string().contains("wrongKeyValue"));
    assert_eq!(sim.sim.stats().auth_failures, 1);
    sim.stop().await;
}

/// The acceptance run, against the real binary: 30 % of API calls faulted for 60 s,
/// spread over every kind the simulator has (5xx, resets, hangs, truncated and non-JSON bodies,
/// InternalError, RequestLimitExceeded, 3 s late replies, SignatureExpire), while tasks start and
/// end and TIW calls back. Every scrape answers 200 within 1 s; `tiw_up` goes to 0 and back;
/// once the faults stop (and the simulated world holds still), every task's series equal the
/// simulator's truth within two poll intervals; nothing panics.
///
/// One kind of task is out of anyone's reach: one that failed before it ever pushed, while every
/// DescribeRunningTasks of its short life was faulted. TIW sends no callback for a failed task
/// and lists only running ones, so nothing ever names it again; such tasks must then be wholly
/// absent (never half-known), and they are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_percent_faults_for_a_minute() {
    use tiw_push_exporter::simulator::lifecycle::Generator;
    use tiw_push_exporter::simulator::{FaultRates, SimStatus};

    const KEY: &str = "faultsCallbackKey0001";
    const POLL: Duration = Duration::from_secs(2);
    let apps = [APP, OTHER];
    let sim = start_sim(sim_config(&apps)).await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = config_yaml(&sim.endpoint(), &[], "2s", "").replace(
        "apps:\n",
        &format!(
            "apps:\n  - sdk_app_id: {APP}\n    callback_key: {KEY}\n  - sdk_app_id: {OTHER}\n    callback_key: {KEY}\n"
        ),
    ) + &format!("state:\n  path: {}\n", dir.path().join("state").display());
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, yaml).unwrap();
    let exporter = spawn_exporter(
        std::path::Path::new(env!("CARGO_BIN_EXE_tiw-push-exporter")),
        &config,
        &["--log.level", "debug"],
    );
    for app in apps {
        sim.sim
            .set_callback(app, &format!("http://{}/callback", exporter.addr), KEY);
    }
    sim.sim.set_fault_rates(FaultRates::uniform(0.3)).unwrap();
    let world = tokio_util::sync::CancellationToken::new();
    let lifecycle = sim.sim.spawn_lifecycle(
        Generator {
            apps: apps.to_vec(),
            target_per_app: 5,
            create_every: Duration::from_millis(1500),
            prepare_for: (Duration::from_millis(500), Duration::from_secs(3)),
            push_for: (Duration::from_secs(2), Duration::from_secs(20)),
            ..Default::default()
        },
        world.clone(),
    );

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let url = format!("http://{}/metrics", exporter.addr);
    let mut down_seen = [false; 2];
    let mut up_after_down = [false; 2];
    let mut slowest = Duration::ZERO;
    let mut scrapes = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        let t = Instant::now();
        let res = client.get(&url).send().await.expect("a scrape under faults");
        assert_eq!(res.status(), 200);
        let m = Metrics::parse(&res.text().await.expect("scrape body"));
        let took = t.elapsed();
        slowest = slowest.max(took);
        assert!(took < Duration::from_secs(1), "a scrape took {took:?} under faults");
        scrapes += 1;
        for (i, app) in apps.iter().enumerate() {
            match m.get("tiw_up", &[("sdk_app_id", &app.to_string())]) {
                Some(0.0) => down_seen[i] = true,
                Some(v) if v == 1.0 && down_seen[i] => up_after_down[i] = true,
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let stats = sim.sim.stats();
    for kind in [
        "http_5xx",
        "connection_reset",
        "hang",
        "truncated",
        "not_json",
        "internal_error",
        "rate_limited",
        "slow",
        "clock_skew",
    ] {
        assert!(
            stats.faults_injected.get(kind).copied().unwrap_or(0) > 0,
            "no {kind} injected: {stats:?}"
        );
    }
    assert!(down_seen.iter().all(|d| *d), "tiw_up never went to 0: {down_seen:?}");
    assert!(
        up_after_down.iter().all(|u| *u),
        "tiw_up never came back: {up_after_down:?}"
    );

    // Faults off, and the world holds still: the exporter must catch up within two intervals.
    sim.sim.set_fault_rates(FaultRates::default()).unwrap();
    world.cancel();
    let _ = lifecycle.await;
    let stopped_at = Instant::now();
    let truth = sim.sim.tasks();
    assert!(truth.len() >= 20, "only {} tasks in a minute", truth.len());
    let mut mismatch = String::new();
    let mut unreachable = 0;
    while stopped_at.elapsed() < 2 * POLL {
        unreachable = 0;
        let m = scrape(&exporter.addr).await;
        mismatch = truth
            .iter()
            .filter_map(|t| {
                let (status, reason) = match t.status {
                    SimStatus::Prepared => ("PREPARED", None),
                    SimStatus::Pushing => ("PUSHING", None),
                    SimStatus::Stopped => ("STOPPED", t.finish_reason),
                    SimStatus::Failed => ("FAILED", Some("FAILED")),
                };
                let mine = (m.status_of(&t.task_id), m.finish_reasons().get(&t.task_id).cloned());
                if t.status == SimStatus::Failed && !m.text.contains(&t.task_id) {
                    unreachable += 1;
                    return None;
                }
                let exceptions = m.get(
                    "tiw_push_task_exceptions",
                    &[("sdk_app_id", &t.sdk_app_id.to_string()), ("task_id", &t.task_id)],
                );
                let exceptions_ok = t.status == SimStatus::Failed || exceptions == Some(t.exception_cnt as f64);
                let ok = mine.0.as_deref() == Some(status) && mine.1.as_deref() == reason && exceptions_ok;
                (!ok).then(|| {
                    format!(
                        "{} is {status}/{reason:?}/{}, exporter says {mine:?}/{exceptions:?}\n",
                        t.task_id, t.exception_cnt
                    )
                })
            })
            .collect();
        let up = apps
            .iter()
            .all(|a| m.get("tiw_up", &[("sdk_app_id", &a.to_string())]) == Some(1.0));
        if mismatch.is_empty() && up {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        mismatch.is_empty(),
        "two poll intervals after the faults stopped:\n{mismatch}"
    );
    let log = exporter.log_text();
    assert!(!log.contains("panicked"), "the exporter panicked:\n{log}");
    assert!(
        unreachable * 4 < truth.len(),
        "{unreachable} of {} tasks never seen",
        truth.len()
    );
    eprintln!(
        "{scrapes} scrapes, slowest {slowest:?}; {} tasks ({unreachable} failed unseen); faults injected: {:?}; caught up in {:?}",
        truth.len(),
        stats.faults_injected,
        stopped_at.elapsed()
    );
    drop(exporter);
    sim.stop().await;
}
