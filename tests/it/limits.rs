//! The HTTP server's limits over raw TCP: slow heads and bodies are cut off, connections and
//! in-flight callbacks are capped, bodies are bounded on every route, and `/metrics` keeps
//! answering while callbacks flood.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tiw_push_exporter::exporter::ServeOptions;
use tiw_push_exporter::server::Limits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

const APP: u64 = 1400000002;

fn limits(read_header_timeout: Duration, read_timeout: Duration, max_connections: usize) -> ServeOptions {
    ServeOptions {
        limits: Limits {
            max_connections,
            read_header_timeout,
            read_timeout,
            max_requests: 40,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// An exporter with one app that takes unsigned callbacks and no API to poll.
async fn exporter(options: ServeOptions, extra: &str) -> Running {
    let yaml = config_yaml("http://127.0.0.1:9", &[], "1h", extra).replace(
        "apps:\n",
        &format!("apps:\n  - sdk_app_id: {APP}\n    discover: false\n    allow_unsigned_callbacks: true\n"),
    );
    start_exporter_with(&yaml, tempfile::tempdir().expect("temp dir"), options).await
}

async fn connect(exporter: &Running) -> TcpStream {
    TcpStream::connect(exporter.addr).await.expect("connect")
}

/// Everything the server sends until it closes the connection or `within` passes; `None` if
/// the connection was still open at the deadline.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> Option<String> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(String::from_utf8_lossy(&out).into_owned()),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// The status line of a reply read off a raw connection, once the head is in.
async fn read_status(stream: &mut TcpStream, within: Duration) -> Option<String> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    while !out.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => out.extend_from_slice(&buf[..n]),
            _ => return None,
        }
    }
    let text = String::from_utf8_lossy(&out);
    text.lines().next().map(str::to_string)
}

fn callback_body(task: &str) -> String {
    json!({"EventType": "WhiteboardPushStarted", "SdkAppId": APP, "Timestamp": 1_700_000_000u64,
           "EventData": {"TaskId": task, "RoomId": 1253, "PushUserId": "u", "PushStartTime": 1_700_000_000u64}})
    .to_string()
}

fn refused(m: &Metrics, handler: &str, reason: &str) -> f64 {
    m.get(
        "tiw_exporter_http_requests_refused_total",
        &[("handler", handler), ("reason", reason)],
    )
    .unwrap_or(-1.0)
}

/// A client that sends its request head a byte at a time (slowloris) is disconnected once
/// `--web.read-header-timeout` has passed, and so is one that connects and sends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_heads_are_cut_off() {
    let exporter = exporter(limits(Duration::from_secs(1), Duration::from_secs(10), 64), "").await;
    let mut silent = connect(&exporter).await;
    let mut slow = connect(&exporter).await;
    let started = Instant::now();
    let head = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut cut_off = false;
    for byte in head {
        if slow.write_all(&[*byte]).await.is_err() {
            cut_off = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        if started.elapsed() > Duration::from_secs(30) {
            break;
        }
    }
    // Either the write failed on a closed socket, or the close is waiting to be read.
    let reply = read_until_closed(&mut slow, Duration::from_secs(10)).await;
    assert!(cut_off || reply.is_some(), "a trickled head kept its connection");
    assert!(
        reply.as_deref().is_none_or(|r| !r.contains("200 OK")),
        "a trickled head was answered: {reply:?}"
    );
    assert!(
        read_until_closed(&mut silent, Duration::from_secs(10)).await.is_some(),
        "a silent connection stayed open"
    );
    // The server is unharmed.
    assert_eq!(reqwest::get(exporter.url("/metrics")).await.unwrap().status(), 200);
    exporter.stop().await;
}

/// Past `--web.max-connections`, a new client waits to be accepted; it is served as soon as a
/// slot frees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_wait_for_a_slot() {
    let exporter = exporter(limits(Duration::from_secs(30), Duration::from_secs(10), 3), "").await;
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(connect(&exporter).await);
    }
    // Let the server accept the three.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut waiting = connect(&exporter).await;
    waiting
        .write_all(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        read_status(&mut waiting, Duration::from_millis(700)).await,
        None,
        "a fourth connection was served past a cap of three"
    );
    drop(idle.pop());
    let status = read_status(&mut waiting, Duration::from_secs(10)).await;
    assert_eq!(status.as_deref(), Some("HTTP/1.1 200 OK"));
    drop(idle);
    exporter.stop().await;
}

/// A callback body that stops arriving is answered 408 after `--web.read-timeout`, counted, and
/// changes nothing; a head larger than 16 KiB gets 431; a body declared on a route that reads
/// none gets 413.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_and_heads_are_bounded() {
    let exporter = exporter(limits(Duration::from_secs(10), Duration::from_secs(1), 64), "").await;
    let before = exporter.registry.snapshot();
    let body = callback_body("slowbody000000000001");
    let mut slow = connect(&exporter).await;
    let head = format!(
        "POST /callback HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    slow.write_all(&body.as_bytes()[..10]).await.unwrap();
    let status = read_status(&mut slow, Duration::from_secs(10)).await;
    assert_eq!(status.as_deref(), Some("HTTP/1.1 408 Request Timeout"));
    assert_eq!(
        exporter.registry.snapshot(),
        before,
        "a timed-out body changed the registry"
    );

    let cases: Vec<(&str, String, &str)> = vec![
        (
            "a 20 KiB header",
            format!(
                "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
                "a".repeat(20 * 1024)
            ),
            "HTTP/1.1 431 Request Header Fields Too Large",
        ),
        (
            "a body declared on /-/reload",
            "POST /-/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n".into(),
            "HTTP/1.1 413 Payload Too Large",
        ),
        (
            "a body declared on /metrics",
            "GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 50000\r\n\r\n".into(),
            "HTTP/1.1 413 Payload Too Large",
        ),
        (
            "a body declared over callback.max_body_bytes",
            "POST /callback HTTP/1.1\r\nHost: x\r\nContent-Length: 70000\r\nConnection: close\r\n\r\n".to_string()
                + &"x".repeat(70_000),
            "HTTP/1.1 413 Payload Too Large",
        ),
        (
            "a request line that is not HTTP",
            "HELLO\r\n\r\n".into(),
            "HTTP/1.1 400 Bad Request",
        ),
    ];
    for (name, request, expected) in cases {
        let mut s = connect(&exporter).await;
        let _ = s.write_all(request.as_bytes()).await;
        let status = read_status(&mut s, Duration::from_secs(10)).await;
        assert_eq!(status.as_deref(), Some(expected), "{name}");
    }
    assert_eq!(exporter.registry.snapshot(), before);
    let m = exporter.scrape().await;
    assert_eq!(refused(&m, "callback", "body_timeout"), 1.0);
    exporter.stop().await;
}

/// Past `callback.max_in_flight`, a callback is answered 503 with Retry-After at once (TIW
/// retries it) and counted; the held ones finish normally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_beyond_max_in_flight_are_shed() {
    let exporter = exporter(
        limits(Duration::from_secs(10), Duration::from_secs(30), 512),
        "callback:\n  max_in_flight: 2\n  max_unconfirmed_tasks: 100000\n",
    )
    .await;
    exporter.scrape().await;
    // Two callbacks whose heads are sent and bodies not yet: they hold no processing slot.
    let mut held = Vec::new();
    for i in 0..2 {
        let body = callback_body(&format!("heldtask00000000000{i}"));
        let mut s = connect(&exporter).await;
        let head = format!(
            "POST /callback HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).await.unwrap();
        held.push((s, body));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let client = reqwest::Client::new();
    let post = |id: String| {
        let client = client.clone();
        let url = exporter.url("/callback");
        async move {
            client
                .post(url)
                .body(callback_body(&id))
                .send()
                .await
                .expect("callback POST")
        }
    };
    assert_eq!(
        post("takentask00000000001".into()).await.status(),
        200,
        "bodies that have not arrived hold no slot"
    );
    // 100 at once against 2 slots (each waits for its group commit): the rest are shed at once
    // with Retry-After, and every one answered 200 is tracked. (100: within the per-peer cap.)
    let burst: Vec<_> = (0..100)
        .map(|i| tokio::spawn(post(format!("bursttask{i:011}"))))
        .collect();
    let mut replies = Vec::new();
    for send in burst {
        replies.push(send.await.unwrap());
    }
    let shed: Vec<&reqwest::Response> = replies.iter().filter(|r| r.status() == 503).collect();
    assert!(!shed.is_empty(), "nothing shed past max_in_flight");
    assert!(shed.iter().all(|r| r.headers()["retry-after"] == "1"));
    assert!(replies.iter().all(|r| matches!(r.status().as_u16(), 200 | 503)));
    for (i, r) in replies.iter().enumerate() {
        let tracked = exporter.registry.get(APP, &format!("bursttask{i:011}")).is_some();
        assert_eq!(tracked, r.status() == 200, "bursttask{i:011}");
    }
    for (s, body) in &mut held {
        s.write_all(body.as_bytes()).await.unwrap();
        assert_eq!(
            read_status(s, Duration::from_secs(10)).await.as_deref(),
            Some("HTTP/1.1 200 OK")
        );
    }
    assert!(exporter.registry.get(APP, "heldtask000000000000").is_some());
    assert!(refused(&exporter.scrape().await, "callback", "overloaded") >= 1.0);
    exporter.stop().await;
}

/// While 32 clients post callbacks as fast as they can, every scrape is answered 200 within 1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_answer_while_callbacks_flood() {
    let exporter = exporter(limits(Duration::from_secs(10), Duration::from_secs(10), 512), "").await;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let mut flood = Vec::new();
    for c in 0..32 {
        let (url, stop, sent) = (exporter.url("/callback"), stop.clone(), sent.clone());
        flood.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let body = callback_body(&format!("flood{c:03}{i:012}"));
                if let Ok(res) = client.post(&url).body(body).send().await {
                    let _ = res.bytes().await;
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
            }
        }));
    }
    let client = reqwest::Client::new();
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = Instant::now();
        let res = client.get(exporter.url("/metrics")).send().await.expect("scrape");
        assert_eq!(res.status(), 200);
        let _ = res.text().await.expect("scrape body");
        slowest = slowest.max(started.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    for f in flood {
        let _ = f.await;
    }
    let sent = sent.load(Ordering::Relaxed);
    assert!(sent > 100, "the flood sent only {sent} callbacks");
    assert!(
        slowest < Duration::from_secs(1),
        "a scrape took {slowest:?} under the flood"
    );
    exporter.stop().await;
}
