//! The edge cases (docs/design.md §2, §3) of Tencent's replies and of callback trust, over real HTTP against the
//! simulator: never silently wrong, never poisoned.

use std::time::{Duration, Instant};

use serde_json::json;
use tiw_push_exporter::config::Config;
use tiw_push_exporter::instruments::ApiInstruments;
use tiw_push_exporter::simulator::callbacks::sign_event;
use tiw_push_exporter::simulator::{app_level_fault, SimCredential};
use tiw_push_exporter::tencentcloud::tiw::{RunningTasks, DESCRIBE_RUNNING_TASKS};
use tiw_push_exporter::tencentcloud::{Client, Limiters};

use crate::common::*;

const APP: u64 = 1400000001;
const KEY: &str = "trustKey-00000001";

fn polls(sim: &SimServerRef) -> u64 {
    sim.stats().requests.get("DescribeWhiteboardPush").copied().unwrap_or(0)
}

type SimServerRef = tiw_push_exporter::simulator::Simulator;

async fn post(url: &str, body: String) -> u16 {
    post_status(&reqwest::Client::new(), url, body).await
}

/// A failed task that Tencent answers the international site's way (a success reply with only
/// RequestId) ends FAILED after three such replies, is counted once, and is no longer polled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_task_answered_without_status_ends_failed_once() {
    let sim = start_sim(sim_config(&[APP])).await;
    let task = sim.sim.create_task(APP, 42);
    let exporter = start_exporter(&config_yaml(&sim.endpoint(), &[APP], "100ms", "")).await;
    wait_status(&exporter, &task, "PREPARED").await;
    sim.sim.fail_bare(&task);
    let m = wait_status(&exporter, &task, "FAILED").await;
    let app = ("sdk_app_id", "1400000001");
    assert_eq!(
        m.get("tiw_push_tasks_finished_total", &[app, ("reason", "FAILED")]),
        Some(1.0)
    );
    assert_eq!(
        m.get(
            "tiw_push_task_finish_reason",
            &[("task_id", task.as_str()), ("reason", "FAILED")]
        ),
        Some(1.0)
    );
    let after = polls(&sim.sim);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(polls(&sim.sim), after, "a failed task is no longer polled");
    let m = exporter.scrape().await;
    assert_eq!(m.sum("tiw_push_tasks_finished_total", &[app]), 1.0, "counted once");
    exporter.stop().await;
    sim.stop().await;
}

/// design §2's app-level rule covers bare codes: each takes `tiw_up` to 0, and it comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_app_level_codes_take_the_app_down() {
    let sim = start_sim(sim_config(&[APP])).await;
    sim.sim.create_task(APP, 1);
    let exporter = start_exporter(&config_yaml(&sim.endpoint(), &[APP], "100ms", "")).await;
    let up = || async { exporter.scrape().await.get("tiw_up", &[("sdk_app_id", "1400000001")]) };
    wait_for(Duration::from_secs(5), "tiw_up 1", || async {
        (up().await == Some(1.0)).then_some(())
    })
    .await;
    for code in [
        "ResourceUnavailable",
        "UnauthorizedOperation",
        "IpNotInWhitelist",
        "IpInBlacklist",
        "InvalidParameter.SdkAppIdNotFound",
    ] {
        sim.sim.set_app_fault(APP, Some(app_level_fault(code)));
        wait_for(Duration::from_secs(5), &format!("tiw_up 0 on {code}"), || async {
            (up().await == Some(0.0)).then_some(())
        })
        .await;
        let m = exporter.scrape().await;
        assert!(
            m.sum("tiw_exporter_api_requests_total", &[("code", code)]) >= 1.0,
            "{code} counted under its code"
        );
        sim.sim.set_app_fault(APP, None);
        wait_for(Duration::from_secs(5), "tiw_up back to 1", || async {
            (up().await == Some(1.0)).then_some(())
        })
        .await;
    }
    exporter.stop().await;
    sim.stop().await;
}

/// CAM grants permissions per action: credentials refused DescribeRunningTasks alone keep the app
/// up (its reads succeed), say so on a gauge per action, and log once which action to grant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_refused_by_cam_keeps_the_app_up() {
    let mut config = sim_config(&[APP]);
    config.credentials[0].denied_actions = vec!["DescribeRunningTasks".into()];
    let sim = start_sim(config).await;
    let task = sim.sim.create_task(APP, 1);
    sim.sim.start_pushing(&task);
    let yaml = config_yaml(&sim.endpoint(), &[], "100ms", "").replace(
        "apps:\n",
        &format!("apps:\n  - sdk_app_id: {APP}\n    tasks: [{task}]\n"),
    );
    let exporter = start_exporter(&yaml).await;
    wait_status(&exporter, &task, "PUSHING").await;
    // Several discovery passes (every 100 ms) refused meanwhile.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let mut ups = Vec::new();
    for _ in 0..10 {
        let m = exporter.scrape().await;
        ups.push(m.get("tiw_up", &[("sdk_app_id", "1400000001")]));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ups.iter().all(|u| *u == Some(1.0)), "tiw_up flipped: {ups:?}");
    let m = exporter.scrape().await;
    assert_eq!(
        m.get(
            "tiw_exporter_api_action_permitted",
            &[("sdk_app_id", "1400000001"), ("action", "DescribeRunningTasks")]
        ),
        Some(0.0)
    );
    assert_eq!(
        m.get(
            "tiw_exporter_api_action_permitted",
            &[("sdk_app_id", "1400000001"), ("action", "DescribeWhiteboardPush")]
        ),
        Some(1.0)
    );
    assert!(
        m.sum(
            "tiw_exporter_api_requests_total",
            &[("code", "AuthFailure.UnauthorizedOperation")]
        ) >= 2.0
    );
    exporter.stop().await;
    sim.stop().await;
}

/// A Stopped without FinishReason, or with one Tencent does not document, is taken (200, not
/// a 400 that TIW would retry until it gives up) and shows OTHER; the confirming poll refines it,
/// and the counters move once, under the refined reason. A poll that itself answers STOPPED with
/// an empty reason ends the task as OTHER.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stops_without_a_documented_reason() {
    let sim = start_sim(sim_config(&[APP])).await;
    let yaml = config_yaml(&sim.endpoint(), &[], "1h", "").replace(
        "apps:\n",
        &format!("apps:\n  - sdk_app_id: {APP}\n    callback_key: {KEY}\n    discover: false\n"),
    );
    let exporter = start_exporter(&yaml).await;
    let url = exporter.url("/callback");
    let refined = sim.sim.create_task(APP, 7);
    sim.sim.start_pushing(&refined);
    sim.sim.stop(&refined, "EXCEPTION");
    let odd = sim.sim.create_task(APP, 8);
    sim.sim.start_pushing(&odd);
    sim.sim.update_task(&odd, |t| {
        tiw_push_exporter::simulator::lifecycle::stop(t, "");
    });
    for (task, data) in [
        (&refined, json!({"TaskId": refined, "RoomId": 7})),
        (
            &odd,
            json!({"TaskId": odd, "RoomId": 8, "FinishReason": "RENDER_CRASHED"}),
        ),
    ] {
        let event =
            json!({"EventType": "WhiteboardPushStopped", "SdkAppId": APP, "Timestamp": now(), "EventData": data});
        assert_eq!(
            post(&url, sign_event(event, KEY, now() + 300).to_string()).await,
            200,
            "{task}"
        );
    }
    let app = ("sdk_app_id", "1400000001");
    let m = wait_for(Duration::from_secs(10), "both confirmed", || async {
        let m = exporter.scrape().await;
        (m.sum("tiw_push_tasks_finished_total", &[app]) == 2.0).then_some(m)
    })
    .await;
    let reasons = m.finish_reasons();
    assert_eq!(reasons.get(&refined).map(String::as_str), Some("EXCEPTION"));
    assert_eq!(reasons.get(&odd).map(String::as_str), Some("OTHER"));
    assert_eq!(
        m.get("tiw_push_tasks_finished_total", &[app, ("reason", "EXCEPTION")]),
        Some(1.0)
    );
    assert_eq!(
        m.get("tiw_push_tasks_finished_total", &[app, ("reason", "OTHER")]),
        Some(1.0)
    );
    assert_eq!(
        m.sum("tiw_exporter_callbacks_total", &[("outcome", "contradicted")]),
        0.0
    );
    exporter.stop().await;
    sim.stop().await;
}

/// A forged body under a reused Sign (TIW's Sign covers only key and ExpireTime): the API's
/// answer wins within one confirming poll; no counter moves; the callback is counted
/// `contradicted`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_body_under_a_reused_sign_is_reverted() {
    let sim = start_sim(sim_config(&[APP])).await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = config_yaml(&sim.endpoint(), &[], "2s", "").replace(
        "apps:\n",
        &format!("apps:\n  - sdk_app_id: {APP}\n    callback_key: {KEY}\n"),
    );
    let config = write_config_file(dir.path(), &yaml);
    let task = sim.sim.create_task(APP, 9);
    sim.sim.start_pushing(&task);
    // The release binary, as an operator runs it.
    let proc = spawn_exporter(&release_bin(), &config, &[]);
    let addr = proc.addr.clone();
    let url = format!("http://{addr}/callback");
    wait_for(Duration::from_secs(10), "PUSHING", || async {
        (scrape(&addr).await.status_of(&task).as_deref() == Some("PUSHING")).then_some(())
    })
    .await;
    let app = ("sdk_app_id", "1400000001");
    let before = scrape(&addr).await;
    // A captured Sign: valid until its ExpireTime for any body.
    let captured = sign_event(
        json!({"EventType": "TranscodeFinished", "SdkAppId": APP, "Timestamp": now(), "EventData": {}}),
        KEY,
        now() + 600,
    );
    let forged = json!({"EventType": "WhiteboardPushStopped", "SdkAppId": APP, "Timestamp": now(),
        "ExpireTime": captured["ExpireTime"], "Sign": captured["Sign"],
        "EventData": {"TaskId": task, "FinishReason": "EXCEPTION", "ExceptionCnt": 4294967295u64,
                      "PushStartTime": now() - 60, "PushStopTime": now()}});
    let sent = Instant::now();
    assert_eq!(post(&url, forged.to_string()).await, 200);
    let m = wait_for(Duration::from_secs(5), "the API's answer to win", || async {
        let m = scrape(&addr).await;
        (m.status_of(&task).as_deref() == Some("PUSHING")
            && m.sum("tiw_exporter_callbacks_total", &[app, ("outcome", "contradicted")]) == 1.0)
            .then_some(m)
    })
    .await;
    println!("forged Stopped reverted in {:?}", sent.elapsed());
    // The confirming poll is sent at once: far inside three poll intervals (6 s here).
    assert!(sent.elapsed() < Duration::from_secs(6), "within three poll intervals");
    for name in [
        "tiw_push_tasks_finished_total",
        "tiw_push_exceptions_total",
        "tiw_push_duration_seconds_count",
    ] {
        assert_eq!(m.sum(name, &[app]), before.sum(name, &[app]), "{name} moved");
    }
    assert_eq!(
        m.get("tiw_push_task_exceptions", &[("task_id", task.as_str())]),
        Some(0.0)
    );
    assert!(m
        .values("tiw_push_task_finish_reason", &[("task_id", task.as_str())])
        .is_empty());
    drop(proc);
    sim.stop().await;
}

/// The flood: 10,000 unsigned Started events with made-up ids at an app without a key and
/// 10,000 wrongly signed ones at an app with a key. Every one refused, nothing tracked, no API call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_callback_flood_is_refused_and_costs_no_api_call() {
    const NOKEY: u64 = 1400000002;
    let sim = start_sim(sim_config(&[APP, NOKEY])).await;
    let yaml = config_yaml(&sim.endpoint(), &[], "200ms", "").replace(
        "apps:\n",
        &format!("apps:\n  - sdk_app_id: {APP}\n    callback_key: {KEY}\n    discover: false\n  - sdk_app_id: {NOKEY}\n    discover: false\n"),
    );
    let exporter = start_exporter(&yaml).await;
    let bodies = (0..20_000u32).map(|i| {
        let (app, signed) = if i % 2 == 0 { (NOKEY, false) } else { (APP, true) };
        let event = json!({"EventType": "WhiteboardPushStarted", "SdkAppId": app, "Timestamp": now(),
                           "EventData": {"TaskId": tiw_push_exporter::simulator::random_task_id(), "PushStartTime": now()}});
        if signed {
            sign_event(event, "guessed-key", now() + 300).to_string()
        } else {
            event.to_string()
        }
    });
    let statuses = post_all(&exporter.url("/callback"), bodies, 32).await;
    assert!(
        statuses.iter().all(|s| *s == 401),
        "{:?}",
        statuses.iter().find(|s| **s != 401)
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(exporter.registry.len(), 0, "nothing tracked");
    assert_eq!(polls(&sim.sim), 0, "no API call caused");
    let m = exporter.scrape().await;
    assert_eq!(
        m.get(
            "tiw_exporter_callbacks_total",
            &[
                ("sdk_app_id", "1400000002"),
                ("event_type", "WhiteboardPushStarted"),
                ("outcome", "unsigned")
            ]
        ),
        Some(10_000.0)
    );
    assert_eq!(
        m.get(
            "tiw_exporter_callbacks_total",
            &[
                ("sdk_app_id", "1400000001"),
                ("event_type", "WhiteboardPushStarted"),
                ("outcome", "bad_signature")
            ]
        ),
        Some(10_000.0)
    );
    assert_eq!(m.sum("tiw_push_tasks_started_total", &[]), 0.0);
    exporter.stop().await;
    sim.stop().await;
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// The flood where unsigned events are allowed: tasks only callbacks named never exceed the
/// app's cap (the rest are refused 503 so a real TIW would retry), none shows anything but
/// UNKNOWN, every made-up id is dropped after three TaskNotFound, and no forged id costs more than
/// three API calls. Against the binary, so its RSS is the exporter's own. The cap is configured
/// at 60 (`callback.max_unconfirmed_tasks`): draining the default 200 at three reads each within
/// 20/s took 30 s of wall clock for the same checks (the default is held in
/// `callbacks::` and the registry's tests).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_flood_stays_bounded_and_costs_at_most_three_calls_per_id() {
    let sim = start_sim(sim_config(&[APP])).await;
    let dir = tempfile::tempdir().unwrap();
    const CAP: usize = 60;
    let extra = format!("retention:\n  max_tasks: 1000\ncallback:\n  max_unconfirmed_tasks: {CAP}\n");
    let yaml = config_yaml(&sim.endpoint(), &[], "100ms", &extra).replace(
        "apps:\n",
        &format!("apps:\n  - sdk_app_id: {APP}\n    allow_unsigned_callbacks: true\n    discover: false\n"),
    );
    let config = write_config_file(dir.path(), &yaml);
    let proc = spawn_exporter(
        std::path::Path::new(env!("CARGO_BIN_EXE_tiw-push-exporter")),
        &config,
        &[],
    );
    let pid = proc.child.id();
    let url = format!("http://{}/callback", proc.addr);
    let rss_before = rss_kib(pid);
    let bodies: Vec<String> = (0..10_000u32)
        .map(|_| {
            json!({"EventType": "WhiteboardPushStarted", "SdkAppId": APP, "Timestamp": now(),
                   "EventData": {"TaskId": tiw_push_exporter::simulator::random_task_id(), "PushStartTime": now()}})
            .to_string()
        })
        .collect();
    // 32 at a time, while the tracked count is watched.
    let flood = tokio::spawn(async move { post_all(&url, bodies, 32).await });
    let mut peak = 0.0f64;
    let mut shown_other_than_unknown = 0.0;
    while !flood.is_finished() {
        let m = scrape(&proc.addr).await;
        peak = peak.max(m.sum("tiw_push_tasks", &[]));
        shown_other_than_unknown += m.sum("tiw_push_tasks", &[]) - m.sum("tiw_push_tasks", &[("status", "UNKNOWN")]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let statuses = flood.await.unwrap();
    let accepted = statuses.iter().filter(|s| **s == 200).count() as f64;
    let refused = statuses.iter().filter(|s| **s == 503).count() as f64;
    assert_eq!(accepted + refused, 10_000.0, "every event answered 200 or 503");
    // Every made-up id costs three reads at 20/s: the 60 of a full lane take about 9 s to drain.
    // Watch the bound all the while.
    let flooded = Instant::now();
    // A drop is counted just after the task leaves the registry: a scrape may fall in between, so
    // the drain ends when nothing is tracked and the count has caught up (or the time is up).
    let m = loop {
        let m = scrape(&proc.addr).await;
        let tracked = m.sum("tiw_push_tasks", &[]);
        peak = peak.max(tracked);
        let counted = m.sum("tiw_exporter_tasks_dropped_total", &[("reason", "not_found")]);
        if tracked == 0.0 && counted >= accepted {
            break m;
        }
        if flooded.elapsed() > Duration::from_secs(280) {
            assert_eq!(tracked, 0.0, "forged ids still tracked");
            break m;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let drained = flooded.elapsed();
    let stats = sim.sim.stats();
    // Answered reads: a request the simulator refused for the rate limit is retried, not an answer.
    let calls = stats.admitted.get("DescribeWhiteboardPush").map_or(0, Vec::len) as f64;
    let dropped = m
        .get(
            "tiw_exporter_tasks_dropped_total",
            &[("sdk_app_id", "1400000001"), ("reason", "not_found")],
        )
        .unwrap();
    let limited = m
        .get(
            "tiw_exporter_tasks_dropped_total",
            &[("sdk_app_id", "1400000001"), ("reason", "limit")],
        )
        .unwrap();
    let rss_after = rss_kib(pid);
    println!(
        "allowed flood: {accepted} taken, {refused} refused 503 (limit counted {limited}); peak tracked {peak}; \
         {calls} DescribeWhiteboardPush answered for {accepted} forged ids ({:.2} per id, {} refused for the rate limit); \
         {dropped} dropped after 3 TaskNotFound, all within {drained:?}; RSS {rss_before} KiB before, {rss_after} KiB after",
        calls / accepted.max(1.0),
        stats.rate_limited
    );
    assert!(
        peak <= CAP as f64,
        "tasks only callbacks named exceeded the app's cap: {peak}"
    );
    assert_eq!(shown_other_than_unknown, 0.0, "a made-up id showed a status");
    assert_eq!(limited, refused, "every refusal counted");
    assert_eq!(dropped, accepted, "every made-up id is dropped");
    assert_eq!(calls, 3.0 * accepted, "exactly three reads per forged id");
    // The limiter keeps within 20/s as the server counts; on a loaded machine a reply's jitter can
    // cost a rare refusal, which widens its allowance.
    assert!(
        stats.rate_limited * 100 <= stats.requests["DescribeWhiteboardPush"],
        "{} refused",
        stats.rate_limited
    );
    assert_eq!(
        m.sum("tiw_push_tasks_started_total", &[]),
        0.0,
        "nothing forged was counted"
    );
    sim.stop().await;
}

/// A configured id Tencent does not know stays UNKNOWN and is read at most once per
/// discovery interval after its third TaskNotFound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_unknown_task_is_read_once_per_discovery_interval() {
    let sim = start_sim(sim_config(&[APP])).await;
    let yaml = format!(
        "tencentcloud:\n  endpoint: {}\n  secret_id: {SECRET_ID}\n  secret_key: {SECRET_KEY}\n  timeout: 1s\napps:\n  - sdk_app_id: {APP}\n    discover: false\n    tasks: [nosuchtask0000000001]\npoll:\n  interval: 100ms\n  discovery_interval: 2s\n",
        sim.endpoint()
    );
    let exporter = start_exporter(&yaml).await;
    wait_for(Duration::from_secs(5), "three reads", || async {
        (polls(&sim.sim) >= 3).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(polls(&sim.sim), 3, "parked after the third TaskNotFound");
    let m = exporter.scrape().await;
    assert_eq!(
        m.status_of("nosuchtask0000000001").as_deref(),
        Some("UNKNOWN"),
        "still tracked"
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(polls(&sim.sim), 3, "not read again before the discovery interval");
    wait_for(Duration::from_secs(5), "one read per discovery interval", || async {
        (polls(&sim.sim) >= 4).then_some(())
    })
    .await;
    exporter.stop().await;
    sim.stop().await;
}

/// `tencentcloud.account`: two SecretIds of one account share one budget per action. Without
/// it, each SecretId is paced alone and the account's limit is tripped
/// (`RequestLimitExceeded.UinLimitExceeded`); with it, never.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_ids_of_one_account_share_its_budget() {
    const OTHER: u64 = 1400000002;
    let mut sim_cfg = sim_config(&[APP, OTHER]);
    for c in &mut sim_cfg.credentials {
        c.account = Some("100000000001".into());
    }
    sim_cfg.credentials.push(SimCredential {
        secret_id: "AKIDsecondKeyOfTheAccount000000000".into(),
        secret_key: "secondSecretKey00000000000000000".into(),
        account: Some("100000000001".into()),
        ..Default::default()
    });
    let run = |account: &'static str| {
        let sim_cfg = sim_cfg.clone();
        async move {
            let sim = start_sim(sim_cfg).await;
            for i in 0..100 {
                sim.sim.create_task(APP, i);
                sim.sim.create_task(OTHER, 1000 + i);
            }
            let yaml = format!(
                "tencentcloud:\n  endpoint: {}\n  secret_id: {SECRET_ID}\n  secret_key: {SECRET_KEY}\n  timeout: 1s\n{account}apps:\n  - sdk_app_id: {APP}\n  - sdk_app_id: {OTHER}\n    tencentcloud:\n      secret_id: AKIDsecondKeyOfTheAccount000000000\n      secret_key: secondSecretKey00000000000000000\npoll:\n  interval: 100ms\n  discovery_interval: 1h\n",
                sim.endpoint()
            );
            let exporter = start_exporter(&yaml).await;
            tokio::time::sleep(Duration::from_secs(3)).await;
            let stats = sim.sim.stats();
            exporter.stop().await;
            sim.stop().await;
            stats
        }
    };
    let separate = run("").await;
    let shared = run("  account: \"100000000001\"\n").await;
    let (sep_max, shared_max) = (
        separate.max_per_second("DescribeWhiteboardPush"),
        shared.max_per_second("DescribeWhiteboardPush"),
    );
    println!(
        "two SecretIds of one account: without account {} refusals (max {sep_max}/s admitted), with account {} refusals (max {shared_max}/s)",
        separate.rate_limited, shared.rate_limited
    );
    assert!(
        separate.rate_limited > 0,
        "without `account` the pair trips the account's limit"
    );
    assert_eq!(shared.rate_limited, 0);
    assert!((15..=20).contains(&shared_max), "{shared_max}");
}

/// The simulator as Tencent documents it: DescribeRunningTasks' Limit defaults to 100, and a
/// region TIW does not serve is refused with UnsupportedRegion, which takes the app down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_pages_and_refuses_regions_like_tencent() {
    let sim = start_sim(sim_config(&[APP])).await;
    for i in 0..150 {
        let t = sim.sim.create_task(APP, i);
        sim.sim.start_pushing(&t);
    }
    let client_for = |region: &str| {
        let yaml = format!(
            "tencentcloud:\n  endpoint: {}\n  region: {region}\n  secret_id: {SECRET_ID}\n  secret_key: {SECRET_KEY}\napps:\n  - sdk_app_id: {APP}\n",
            sim.endpoint()
        );
        let config = Config::from_yaml(&yaml, &|_| None).unwrap();
        Client::new(
            reqwest::Client::new(),
            config.apps[0].api.clone(),
            std::sync::Arc::new(Limiters::new(&config.apps)),
            ApiInstruments::unexposed(),
        )
        .with_retry(fast_retry())
    };
    let page: RunningTasks = client_for("ap-guangzhou")
        .call(
            DESCRIBE_RUNNING_TASKS,
            &json!({"SdkAppID": APP, "TaskType": "WhiteboardPush", "Offset": 0}),
        )
        .await
        .unwrap();
    assert_eq!((page.total, page.tasks.unwrap().len()), (Some(150), 100));
    let err = client_for("ap-guangzhuo")
        .call::<_, RunningTasks>(
            DESCRIBE_RUNNING_TASKS,
            &json!({"SdkAppID": APP, "TaskType": "WhiteboardPush", "Offset": 0, "Limit": 10}),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("UnsupportedRegion"));
    assert!(err.is_app_down());
    sim.stop().await;
}
