//! Issue 25's attacks, over real HTTP: a burst of forged claims under one captured Sign, watched by
//! the real Prometheus with the shipped rules; connections that declare a body and send nothing;
//! web-config changes, careless and half-written, while serving with basic auth.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::json;
use tiw_push_exporter::simulator::callbacks::sign_event;
use tiw_push_exporter::simulator::random_task_id;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;
use crate::observability::{alerts, repo, start_prometheus};

const FLOODED: u64 = 1400000001;
const OTHER: u64 = 1400000002;
const KEY: &str = "burst-callback-key";

/// 1,000 forged `WhiteboardPushStopped(EXCEPTION)` bodies with made-up ids under one valid Sign at
/// one app, with the shipped rules on a real Prometheus: no alert names a made-up task; every real
/// task of both apps is read again within 30 s; the other app's new task is taken and nothing of
/// it dropped; a real EXCEPTION finish at the flooded app still shows and pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_burst_under_one_sign_pages_nobody_and_starves_no_app() {
    if !needs(&["prometheus"]) {
        return;
    }
    let sim = start_sim(sim_config(&[FLOODED, OTHER])).await;
    let mut real: Vec<(u64, String)> = Vec::new();
    for (app, room) in [(FLOODED, 11), (FLOODED, 12), (FLOODED, 13), (OTHER, 21), (OTHER, 22)] {
        let id = sim.sim.create_task(app, room);
        sim.sim.start_pushing(&id);
        real.push((app, id));
    }
    let yaml = config_yaml(
        &sim.endpoint(),
        &[],
        "2s",
        // A small registry: the flood must not fill it, and nothing of OTHER's may be refused.
        "retention:\n  max_tasks: 20\n",
    )
    .replace(
        "apps:\n",
        &format!("apps:\n  - sdk_app_id: {FLOODED}\n    callback_key: {KEY}\n  - sdk_app_id: {OTHER}\n    callback_key: {KEY}-other\n"),
    );
    let exporter = start_exporter(&yaml).await;
    for (_, id) in &real {
        wait_status(&exporter, id, "PUSHING").await;
    }

    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(repo("prometheus/alerts.yml"), dir.path().join("alerts.yml")).unwrap();
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [alerts.yml]\n\
             scrape_configs:\n  - job_name: tiw-push-exporter\n    static_configs: [{{targets: ['{}']}}]\n",
            exporter.addr
        ),
    )
    .unwrap();
    let (_prometheus, prom) = start_prometheus(dir.path()).await;

    // One captured Sign (TIW's covers only the key and ExpireTime) on 1,000 made-up bodies.
    let captured = sign_event(
        json!({"EventType": "TranscodeFinished", "SdkAppId": FLOODED, "Timestamp": now(), "EventData": {}}),
        KEY,
        now() + 600,
    );
    let forged_ids: Vec<String> = (0..1000).map(|_| random_task_id()).collect();
    let bodies: Vec<String> = forged_ids
        .iter()
        .map(|id| {
            json!({"EventType": "WhiteboardPushStopped", "SdkAppId": FLOODED, "Timestamp": now(),
                   "ExpireTime": captured["ExpireTime"], "Sign": captured["Sign"],
                   "EventData": {"TaskId": id, "RoomId": 666, "FinishReason": "EXCEPTION",
                                 "ExceptionCnt": 4294967295u64, "PushStartTime": now() - 60, "PushStopTime": now()}})
            .to_string()
        })
        .collect();
    let statuses = post_all(&exporter.url("/callback"), bodies, 32).await;
    // From the flood's end, when the lanes of claims are full: 200 made-up ids wanting 600 reads.
    let flood_started = Instant::now();
    let flooded_at = tiw_push_exporter::task::unix_now();
    let taken = statuses.iter().filter(|s| **s == 200).count();
    let refused = statuses.iter().filter(|s| **s == 503).count();
    assert_eq!(taken + refused, 1000, "every forged body answered 200 or 503");
    assert!(
        taken <= 200 + 40,
        "at most the app's cap, plus what drained meanwhile: {taken}"
    );

    // During and after the flood: the other app's new task, and a real EXCEPTION at the flooded app.
    let newcomer = sim.sim.create_task(OTHER, 23);
    sim.sim.start_pushing(&newcomer);
    let exception = real[0].1.clone();
    sim.sim.stop(&exception, "EXCEPTION");

    let forged: HashSet<&str> = forged_ids.iter().map(String::as_str).collect();
    let mut forged_alerts = Vec::new();
    let mut read_within: Vec<(String, Duration)> = Vec::new();
    let mut unread: HashSet<(u64, String)> = real.iter().cloned().collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut paged = false;
    while Instant::now() < deadline && (!unread.is_empty() || !paged) {
        let m = exporter.scrape().await;
        for (app, id) in unread.clone() {
            let updated = m
                .get(
                    "tiw_push_task_last_update_timestamp_seconds",
                    &[("sdk_app_id", &app.to_string()), ("task_id", &id)],
                )
                .unwrap_or(0.0);
            if updated > flooded_at {
                read_within.push((id.clone(), flood_started.elapsed()));
                unread.remove(&(app, id));
            }
        }
        for a in alerts(&prom).await {
            let task = a["labels"]["task_id"].as_str().unwrap_or_default().to_string();
            if forged.contains(task.as_str()) {
                forged_alerts.push(a.clone());
            }
            if a["labels"]["alertname"] == "TiwPushFinishedWithException" && task == exception {
                paged = true;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "forged burst: {taken} taken, {refused} refused 503; real tasks read again after {read_within:?}; the real EXCEPTION paged: {paged}"
    );
    assert!(unread.is_empty(), "real tasks not read again within 30 s: {unread:?}");
    assert!(forged_alerts.is_empty(), "alerts for made-up tasks: {forged_alerts:?}");
    assert!(paged, "the real EXCEPTION finish fires TiwPushFinishedWithException");

    let m = wait_status(&exporter, &newcomer, "PUSHING").await;
    assert_eq!(
        m.sum(
            "tiw_exporter_tasks_dropped_total",
            &[("sdk_app_id", &OTHER.to_string())]
        ),
        0.0,
        "nothing of the other app refused or dropped"
    );
    assert_eq!(
        m.finish_reasons().get(&exception).map(String::as_str),
        Some("EXCEPTION")
    );
    // A made-up id never shows a status other than UNKNOWN, nor counts.
    for id in &forged_ids {
        if let Some(status) = m.status_of(id) {
            assert_eq!(status, "UNKNOWN", "{id}");
        }
    }
    let flooded = ("sdk_app_id", "1400000001");
    assert_eq!(
        m.get("tiw_push_tasks_finished_total", &[flooded, ("reason", "EXCEPTION")]),
        Some(1.0),
        "only the real EXCEPTION counted"
    );
    assert!(m.get("tiw_push_exceptions_total", &[flooded]).unwrap_or(0.0) < 1e6);
    // For a forged burst the pages are the security ones (refusals), never a task's.
    let names: HashSet<String> = alerts(&prom)
        .await
        .iter()
        .filter_map(|a| a["labels"]["alertname"].as_str().map(str::to_string))
        .collect();
    assert!(!names.contains("TiwPushFailed"), "{names:?}");
    exporter.stop().await;
    sim.stop().await;
}

/// Opens a connection from `from` that declares a 60 KB body and then sends one byte of it.
async fn idle_declared_body(from: std::net::IpAddr, to: SocketAddr) -> Option<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4().ok()?;
    socket.bind(SocketAddr::new(from, 0)).ok()?;
    let mut stream = socket.connect(to).await.ok()?;
    let head = format!(
        "POST /callback HTTP/1.1\r\nhost: {to}\r\ncontent-type: application/json\r\ncontent-length: 60000\r\n\r\n{{"
    );
    stream.write_all(head.as_bytes()).await.ok()?;
    Some(stream)
}

/// Whether the server has closed `stream` (end of file or reset), looking for at most `wait`.
async fn closed_by_server(stream: &mut tokio::net::TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 256];
    matches!(
        tokio::time::timeout(wait, stream.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// 300 connections that declare a body and send nothing hold no processing slot: real signed
/// callbacks are all taken (200) while they hang; one peer cannot hold more than its share of
/// connections; a declared length over the limit is refused 413 at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_declared_bodies_do_not_refuse_real_callbacks() {
    // The API cannot be reached: real events are claims, answered 200 once durable.
    let yaml = config_yaml(&closed_endpoint(), &[], "1h", "callback:\n  max_in_flight: 8\n").replace(
        "apps:\n",
        &format!("apps:\n  - sdk_app_id: {FLOODED}\n    callback_key: {KEY}\n    discover: false\n"),
    );
    let exporter = start_exporter(&yaml).await;
    // The attacker from 127.0.0.2, TIW from 127.0.0.1: two peers, as on the internet.
    let attacker: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    let mut idle = Vec::new();
    for _ in 0..300 {
        if let Some(s) = idle_declared_body(attacker, exporter.addr).await {
            idle.push(s);
        }
    }
    assert_eq!(idle.len(), 300, "the kernel accepts every connection");
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    for i in 0..5 {
        let body = sign_event(
            json!({"EventType": "WhiteboardPushStarted", "SdkAppId": FLOODED, "Timestamp": now(),
                   "EventData": {"TaskId": format!("realtask{i:012}"), "PushStartTime": now()}}),
            KEY,
            now() + 300,
        );
        statuses.push(post_status(&client, &exporter.url("/callback"), body.to_string()).await);
    }
    // The per-peer cap (128 by default) closed the attacker's connections past it at once.
    let mut closed = 0;
    for s in &mut idle {
        if closed_by_server(s, Duration::from_millis(2)).await {
            closed += 1;
        }
    }
    println!(
        "300 idle declared-body connections from 127.0.0.2 ({closed} closed at once by the per-peer cap); real signed callbacks answered {statuses:?}"
    );
    assert_eq!(statuses, [200; 5], "real callbacks while 300 declared bodies hang");
    assert_eq!(
        closed,
        300 - 128,
        "connections past the per-peer cap are closed at once"
    );

    // A body declared over callback.max_body_bytes: 413 at once, without a byte of it sent.
    let started = Instant::now();
    let mut big = tokio::net::TcpStream::connect(exporter.addr).await.unwrap();
    big.write_all(
        format!(
            "POST /callback HTTP/1.1\r\nhost: {}\r\ncontent-length: 100000000\r\n\r\n",
            exporter.addr
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut reply = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(2), big.read(&mut reply))
        .await
        .expect("answered at once")
        .unwrap();
    let reply = String::from_utf8_lossy(&reply[..n]).to_string();
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert!(started.elapsed() < Duration::from_secs(2));
    drop(idle);
    exporter.stop().await;
}

/// Every careless or half-written change to a web config with basic auth, while serving: each is
/// refused and counted, the users in force stay, the good file put back is taken, and no
/// unauthenticated request is answered anything but 401 at any moment, throughout and afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_hot_web_config_change_opens_basic_auth() {
    use tiw_push_exporter::exporter::ServeOptions;
    use tiw_push_exporter::webconfig::WebConfig;
    let dir = tempfile::tempdir().unwrap();
    let web_yml = dir.path().join("web.yml");
    let hash = bcrypt::hash("s3cret-password", 4).unwrap();
    let good = format!("basic_auth_users:\n  prometheus: \"{hash}\"\n");
    std::fs::write(&web_yml, &good).unwrap();
    let options = ServeOptions {
        web: WebConfig::load(&web_yml).unwrap(),
        web_config_file: Some(web_yml.clone()),
        ..Default::default()
    };
    let yaml = config_yaml(&closed_endpoint(), &[1400000001], "1h", "");
    let exporter = start_exporter_with(&yaml, tempfile::tempdir().unwrap(), options).await;
    let base = format!("http://{}", exporter.addr);

    // Unauthenticated GET /metrics and POST /-/reload, every 20 ms for the whole test.
    let stop = tokio_util::sync::CancellationToken::new();
    let prober = {
        let (stop, base) = (stop.clone(), base.clone());
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut answered = Vec::new();
            while !stop.is_cancelled() {
                for req in [
                    client.get(format!("{base}/metrics")),
                    client.post(format!("{base}/-/reload")),
                ] {
                    if let Ok(res) = req.send().await {
                        answered.push(res.status().as_u16());
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            answered
        })
    };
    let client = reqwest::Client::new();
    let scrape = || async {
        let res = client
            .get(format!("{base}/metrics"))
            .basic_auth("prometheus", Some("s3cret-password"))
            .send()
            .await
            .ok()?;
        (res.status() == 200).then_some(())?;
        Some(Metrics::parse(&res.text().await.ok()?))
    };
    let failures = |m: &Metrics| {
        m.get("tiw_exporter_web_config_reload_failures_total", &[])
            .unwrap_or(0.0)
    };
    let taken = |m: &Metrics| m.get("tiw_exporter_web_config_last_reload_successful", &[]) == Some(1.0);
    // Puts `change` in place and waits for its refusal to be counted, then the good file back and
    // waits for it to be taken.
    let mut refused = 0.0;
    let write = |text: &str| {
        let _ = std::fs::remove_file(&web_yml);
        std::fs::write(&web_yml, text).unwrap();
    };
    type Change<'a> = Box<dyn Fn() + 'a>;
    let cases: Vec<(&str, Change)> = vec![
        ("a 0-byte file", Box::new(|| write(""))),
        ("comments only", Box::new(|| write("# nothing here yet\n"))),
        ("null", Box::new(|| write("null\n"))),
        (
            "a symlink to /dev/null",
            Box::new(|| {
                let _ = std::fs::remove_file(&web_yml);
                std::os::unix::fs::symlink("/dev/null", &web_yml).unwrap();
            }),
        ),
        ("basic_auth_users: {}", Box::new(|| write("basic_auth_users: {}\n"))),
        ("basic_auth_users: null", Box::new(|| write("basic_auth_users:\n"))),
        (
            "a hash cut short (half-written)",
            Box::new(|| write(&good[..good.len() - 20])),
        ),
    ];
    for (what, change) in &cases {
        change();
        let m = wait_for(Duration::from_secs(10), &format!("{what} to be refused"), || async {
            scrape().await.filter(|m| failures(m) > refused)
        })
        .await;
        assert_eq!(
            m.get("tiw_exporter_web_config_last_reload_successful", &[]),
            Some(0.0),
            "{what}"
        );
        write(&good);
        let m = wait_for(
            Duration::from_secs(10),
            &format!("the good file back after {what}"),
            || async { scrape().await.filter(taken) },
        )
        .await;
        // Putting the good file back is itself a rewrite (removed, then written) that the watcher
        // may catch half-done and refuse: the next case's refusal is counted from here, or a stale
        // one would pass for it before the watcher has seen the change.
        refused = failures(&m);
    }
    // A non-atomic rewrite of the good file, as an editor or `cat > web.yml` does it: truncated,
    // then written in two pieces with pauses the watcher sees.
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&web_yml)
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        use std::io::Write;
        f.write_all(&good.as_bytes()[..good.len() / 2]).unwrap();
        f.flush().unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        f.write_all(&good.as_bytes()[good.len() / 2..]).unwrap();
    }
    wait_for(Duration::from_secs(10), "the rewritten file to be taken", || async {
        scrape().await.filter(|m| taken(m) && failures(m) > refused)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    let answered = prober.await.unwrap();
    let opened: Vec<&u16> = answered.iter().filter(|s| **s != 401).collect();
    println!(
        "{} unauthenticated requests during {} refused changes and a non-atomic rewrite: {} answered other than 401",
        answered.len(),
        cases.len(),
        opened.len()
    );
    assert!(answered.len() > 100, "the prober ran: {}", answered.len());
    assert!(opened.is_empty(), "unauthenticated requests answered {opened:?}");
    exporter.stop().await;
}
