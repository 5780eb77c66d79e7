//! Relay mode against a real backend on loopback: down, then slow, then up, with the exporter
//! SIGKILLed twice on the way. The backend gets every request TIW was answered 200 for, byte for
//! byte, at least once, in the order TIW sent them per app; a 4xx answer is a dead letter.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use serde_json::json;
use tiw_push_exporter::simulator::CallbackKnobs;

use crate::common::*;

/// Relays, and verifies with the key TIW signs with.
const KEYED: u64 = 1400000001;
/// Relays, but has no key of its own: the exporter refuses its events as unsigned, and they are
/// relayed all the same.
const KEYLESS: u64 = 1400000002;
const KEY: &str = "backendKey000042";
const TASKS_PER_APP: usize = 70;

/// One request as the backend got it.
#[derive(Clone, Debug)]
struct Received {
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

#[derive(Clone, Default)]
struct Backend {
    got: Arc<Mutex<Vec<Received>>>,
    /// 1: slow (each answer after 400 ms), 2: up.
    mode: Arc<AtomicU8>,
}

async fn backend(State(b): State<Backend>, uri: Uri, headers: HeaderMap, body: Bytes) -> StatusCode {
    if b.mode.load(Ordering::Acquire) == 1 {
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let poison = body.windows(6).any(|w| w == b"Poison");
    b.got.lock().unwrap().push(Received {
        path: uri.path().to_string(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect(),
        body: body.to_vec(),
    });
    if poison {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    }
}

/// Points TIW's callback URL of both apps at the exporter listening at `addr`.
fn register(sim: &tiw_push_exporter::simulator::Simulator, addr: &str) {
    sim.set_callback(KEYED, &format!("http://{addr}/callback"), KEY);
    sim.set_callback(KEYLESS, &format!("http://{addr}/callback"), KEY);
}

/// Waits until TIW got a 200 for `n` of `app`'s requests.
async fn acked(sim: &tiw_push_exporter::simulator::Simulator, app: u64, n: usize) {
    wait_for(Duration::from_secs(60), "TIW's request acknowledged", || async {
        (sim.acknowledged().iter().filter(|(a, _)| *a == app).count() >= n).then_some(())
    })
    .await
}

/// One app's traffic, one request at a time (so TIW's order is the order the exporter received
/// them): a Started and a Stopped per task, and every tenth task a document-transcoding event
/// signed with that feature's own key; one of those the backend refuses for good.
async fn traffic(sim: tiw_push_exporter::simulator::Simulator, app: u64, room: i64) {
    let mut sent = 0;
    for i in 0..TASKS_PER_APP {
        let task = sim.create_task(app, room + i as i64);
        sim.start_pushing(&task);
        sent += 1;
        acked(&sim, app, sent).await;
        tokio::time::sleep(Duration::from_millis(40)).await;
        sim.stop(&task, if i % 7 == 0 { "EXCEPTION" } else { "AUTO" });
        sent += 1;
        acked(&sim, app, sent).await;
        if i % 10 == 5 {
            let data = if i == 25 {
                json!({"TaskId": format!("doc{i}"), "Progress": 100, "Poison": true})
            } else {
                json!({"TaskId": format!("doc{i}"), "Progress": 100})
            };
            sim.send_feature_event(app, "TranscodeFinished", data, Some("transcode-key"));
            sent += 1;
            acked(&sim, app, sent).await;
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_delivers_every_acknowledged_request_in_order_across_an_outage_and_sigkills() {
    let bin = release_bin();
    let started = Instant::now();
    let sim = start_sim(sim_config(&[KEYED, KEYLESS])).await;
    // TIW retries every 5 s, 5 times; here faster and longer, so that its requests outlive the
    // exporter's restarts within the test's time.
    sim.sim.set_callback_knobs(CallbackKnobs {
        retry_every: Duration::from_millis(200),
        retries: 300,
        ..Default::default()
    });
    sim.sim.keep_acknowledged();
    // Nothing listens there yet: the backend is down until it binds the port.
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let yaml = config_yaml(&sim.endpoint(), &[KEYED, KEYLESS], "1s", "").replace(
        &format!("  - sdk_app_id: {KEYED}\n"),
        &format!("  - sdk_app_id: {KEYED}\n    callback_key: {KEY}\n    callback_forward_url: http://127.0.0.1:{port}/tiw/{KEYED}\n"),
    ).replace(
        &format!("  - sdk_app_id: {KEYLESS}\n"),
        &format!("  - sdk_app_id: {KEYLESS}\n    callback_forward_url: http://127.0.0.1:{port}/tiw/{KEYLESS}\n"),
    ) + "callback:\n  forward:\n    timeout: 2s\n    retry_initial: 100ms\n    retry_max: 500ms\n";
    let config = write_config_file(dir.path(), &yaml);
    let mut proc = spawn_exporter(&bin, &config, &[]);
    register(&sim.sim, &proc.addr);

    let generators =
        [(KEYED, 1000), (KEYLESS, 5000)].map(|(app, room)| tokio::spawn(traffic(sim.sim.clone(), app, room)));

    // SIGKILL while the backend is down and the queue fills; back on another port.
    tokio::time::sleep(Duration::from_secs(6)).await;
    drop(proc);
    proc = spawn_exporter(&bin, &config, &[]);
    register(&sim.sim, &proc.addr);

    // The backend comes up after 20 s: slow first (400 ms an answer), then quick.
    let state = Backend::default();
    tokio::time::sleep(Duration::from_secs(20).saturating_sub(started.elapsed())).await;
    state.mode.store(1, Ordering::Release);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let router = axum::Router::new().fallback(backend).with_state(state.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    let m = scrape(&proc.addr).await;
    let queued = m.sum("tiw_exporter_callback_forward_queue_requests", &[]);
    let oldest = m
        .values("tiw_exporter_callback_forward_oldest_age_seconds", &[])
        .into_iter()
        .fold(0.0, f64::max);
    println!(
        "backend up after {:?}: {queued} requests queued, the oldest {oldest:.1} s",
        started.elapsed()
    );
    assert!(queued > 50.0 && oldest > 10.0, "{queued} {oldest}");
    // The exporter itself took the keyed app's events and refused the keyless app's (unsigned):
    // TIW got its 200 for both.
    let outcome = |app: &'static str, outcome: &'static str| {
        m.sum(
            "tiw_exporter_callbacks_total",
            &[("sdk_app_id", app), ("outcome", outcome)],
        )
    };
    assert!(outcome("1400000001", "accepted") > 0.0);
    assert!(outcome("1400000002", "unsigned") > 0.0);
    assert!(outcome("1400000001", "ignored") > 0.0, "the transcoding events");

    // SIGKILL again mid-delivery, while the backend is slow.
    tokio::time::sleep(Duration::from_secs(3)).await;
    drop(proc);
    proc = spawn_exporter(&bin, &config, &[]);
    register(&sim.sim, &proc.addr);
    tokio::time::sleep(Duration::from_secs(3)).await;
    state.mode.store(2, Ordering::Release);

    for g in generators {
        g.await.unwrap();
    }
    let addr = proc.addr.clone();
    let m = wait_for(Duration::from_secs(60), "the relay queues drained", || async {
        let m = scrape(&addr).await;
        (m.sum("tiw_exporter_callback_forward_queue_requests", &[]) == 0.0).then_some(m)
    })
    .await;

    let acknowledged = sim.sim.acknowledged();
    let got = state.got.lock().unwrap().clone();
    let mut duplicates = 0;
    for app in [KEYED, KEYLESS] {
        let tiw: Vec<&Vec<u8>> = acknowledged.iter().filter(|(a, _)| *a == app).map(|(_, b)| b).collect();
        let path = format!("/tiw/{app}");
        let at_backend: Vec<&Received> = got.iter().filter(|r| r.path == path).collect();
        // First arrivals, in order.
        let mut seen = HashSet::new();
        let first: Vec<&Vec<u8>> = at_backend
            .iter()
            .map(|r| &r.body)
            .filter(|b| seen.insert(b.to_vec()))
            .collect();
        duplicates += at_backend.len() - first.len();
        assert!(tiw.len() >= 2 * TASKS_PER_APP, "app {app}: {} acknowledged", tiw.len());
        for body in &tiw {
            assert!(
                seen.contains(*body),
                "app {app}: acknowledged but never delivered: {}",
                String::from_utf8_lossy(body)
            );
        }
        // TIW sent one at a time per app, so its order is the exporter's arrival order.
        let order: HashMap<&Vec<u8>, usize> = tiw.iter().enumerate().map(|(i, b)| (*b, i)).collect();
        let positions: Vec<usize> = first.iter().filter_map(|b| order.get(*b).copied()).collect();
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "app {app}: delivered out of order: {positions:?}"
        );
        for r in &at_backend {
            let names: HashSet<&str> = r.headers.iter().map(|(k, _)| k.as_str()).collect();
            assert!(
                r.headers.contains(&("content-type".into(), "application/json".into())),
                "{:?}",
                r.headers
            );
            let allowed: HashSet<&str> = ["content-type", "accept", "host", "content-length"].into();
            assert!(names.is_subset(&allowed), "a header TIW did not send: {names:?}");
        }
        let app_label = app.to_string();
        let app_label = [("sdk_app_id", app_label.as_str())];
        assert_eq!(
            m.get("tiw_exporter_callback_forward_dead_letters", &app_label),
            Some(1.0),
            "app {app}: the poisoned request is kept as a dead letter"
        );
        println!(
            "app {app}: {} acknowledged, {} delivered ({} first arrivals), dead letters 1",
            tiw.len(),
            at_backend.len(),
            first.len()
        );
    }
    println!(
        "{} requests reached the backend, {duplicates} of them again (at least once across two SIGKILLs)",
        got.len()
    );
    let page = reqwest::get(format!("http://{}/", proc.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("Relayed callbacks") && page.contains("delivered"),
        "the landing page shows the deliveries"
    );
}

/// A full queue answers TIW 503 (so TIW keeps the request), counted; an app that does not relay
/// is answered as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_relay_queue_answers_503_and_counts_it() {
    let sim = start_sim(sim_config(&[KEYED, KEYLESS])).await;
    let closed = closed_endpoint();
    let yaml = config_yaml(&sim.endpoint(), &[KEYED, KEYLESS], "1s", "").replace(
        &format!("  - sdk_app_id: {KEYED}\n"),
        &format!("  - sdk_app_id: {KEYED}\n    callback_forward_url: {closed}/tiw\n"),
    ) + "callback:\n  forward:\n    max_queue: 3\n    retry_initial: 50ms\n    retry_max: 100ms\n";
    let exporter = start_exporter(&yaml).await;
    let url = exporter.url("/callback");
    let other = |app: u64, n: u32| {
        json!({"EventType": "TranscodeFinished", "SdkAppId": app, "Timestamp": now(), "EventData": {"N": n}})
            .to_string()
    };
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    for n in 0..5 {
        let r = client.post(&url).body(other(KEYED, n)).send().await.unwrap();
        if r.status() == 503 {
            assert_eq!(r.headers()["retry-after"], "5");
        }
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 503, 503]);
    // Not relayed: answered as before (another feature's event: 200 ignored).
    assert_eq!(post_status(&client, &url, other(KEYLESS, 0)).await, 200);
    let app = [("sdk_app_id", "1400000001")];
    let m = wait_for(Duration::from_secs(10), "a failed delivery attempt", || async {
        let m = exporter.scrape().await;
        (m.sum("tiw_exporter_callback_forward_total", &[app[0], ("outcome", "retried")]) > 0.0).then_some(m)
    })
    .await;
    let count = |outcome: &str| m.sum("tiw_exporter_callback_forward_total", &[app[0], ("outcome", outcome)]);
    assert_eq!(
        (count("queued"), count("refused_full"), count("delivered")),
        (3.0, 2.0, 0.0)
    );
    assert_eq!(m.get("tiw_exporter_callback_forward_queue_requests", &app), Some(3.0));
    assert!(m.get("tiw_exporter_callback_forward_oldest_age_seconds", &app).unwrap() >= 0.0);
    assert_eq!(
        m.get(
            "tiw_exporter_callback_forward_queue_requests",
            &[("sdk_app_id", "1400000002")]
        ),
        None,
        "an app that does not relay has no queue series"
    );
    let page = reqwest::get(exporter.url("/")).await.unwrap().text().await.unwrap();
    assert!(page.contains("Relayed callbacks") && page.contains("retried"), "{page}");
    exporter.stop().await;
}

#[path = "../../examples/fan_in.rs"]
mod fan_in;

/// Fan-in, as `examples/fan_in.rs` does it: the backend keeps TIW's URL and passes each request on
/// unchanged; the exporter verifies it with the same key, and accepts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fan_in_example_passes_tiws_requests_on_for_the_exporter_to_verify() {
    let sim = start_sim(sim_config(&[KEYED])).await;
    let yaml = config_yaml(&sim.endpoint(), &[KEYED], "1s", "").replace(
        &format!("  - sdk_app_id: {KEYED}\n"),
        &format!("  - sdk_app_id: {KEYED}\n    callback_key: {KEY}\n"),
    );
    let exporter = start_exporter(&yaml).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    let router = fan_in::router(&exporter.url("/callback"));
    tokio::spawn(async move { axum::serve(listener, router).await });
    sim.sim
        .set_callback(KEYED, &format!("http://{backend}/tiw/callback"), KEY);
    sim.sim.keep_acknowledged();
    let task = sim.sim.create_task(KEYED, 77);
    sim.sim.start_pushing(&task);
    tokio::time::sleep(Duration::from_millis(300)).await;
    sim.sim.stop(&task, "EXCEPTION");
    let app = ("sdk_app_id", "1400000001");
    wait_for(
        Duration::from_secs(20),
        "both events accepted through the backend",
        || async {
            let m = exporter.scrape().await;
            (m.sum("tiw_exporter_callbacks_total", &[app, ("outcome", "accepted")]) == 2.0).then_some(())
        },
    )
    .await;
    assert_eq!(sim.sim.acknowledged().len(), 2, "TIW got the backend's 200 for both");
    exporter.stop().await;
}
