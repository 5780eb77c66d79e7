//! Unit tests of the relay's queues: bounds, order, headers, dead letters, the store's round trip.
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue};

use super::deliver::{backoff, classify, Attempt};
use super::*;
use crate::registry::Batch;
use crate::store::Store;

fn config(extra: &str) -> Config {
    let yaml = format!(
        "tencentcloud: {{secret_id: a, secret_key: b}}\napps:\n  - sdk_app_id: 7\n    callback_forward_url: http://127.0.0.1:1/tiw\n  - sdk_app_id: 8\ncallback:\n  max_body_bytes: 100\n  forward:\n    max_queue: 3\n    max_queue_bytes: 400\n{extra}"
    );
    Config::from_yaml(&yaml, &|_| None).unwrap()
}

fn body(app: u64, n: u32) -> Vec<u8> {
    format!(r#"{{"SdkAppId":{app},"EventType":"X","N":{n}}}"#).into_bytes()
}

fn tiw_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h.insert("user-agent", HeaderValue::from_static("TIW-Callback"));
    h.insert("host", HeaderValue::from_static("exporter.example.com"));
    h.insert("content-length", HeaderValue::from_static("40"));
    h.insert("connection", HeaderValue::from_static("keep-alive, x-hop"));
    h.insert("x-hop", HeaderValue::from_static("1"));
    h
}

#[test]
fn queues_only_relaying_apps_in_order_within_bounds() {
    let relay = Relay::new(&config(""), RelayRestored::default(), RelayInstruments::unexposed());
    assert_eq!(relay.enqueue(&tiw_headers(), &body(8, 0)), Err(NotQueued::NotRelayed));
    assert_eq!(relay.enqueue(&tiw_headers(), b"not json"), Err(NotQueued::NotRelayed));
    let seqs: Vec<u64> = (0..3)
        .map(|n| relay.enqueue(&tiw_headers(), &body(7, n)).unwrap())
        .collect();
    assert_eq!(seqs, [0, 1, 2]);
    assert_eq!(
        relay.enqueue(&tiw_headers(), &body(7, 3)),
        Err(NotQueued::Full(7)),
        "max_queue"
    );
    let (head, url) = relay.next(7).unwrap();
    assert_eq!((head.seq, url.as_str()), (0, "http://127.0.0.1:1/tiw"));
    assert_eq!(head.body, body(7, 0), "the body's bytes as received");
    let names: Vec<&str> = head.headers.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, ["content-type", "user-agent"], "no hop-by-hop header, no Host");
    // Only the head is taken; anything else is a stale answer.
    relay.delivered(7, 1, 200);
    assert_eq!(relay.next(7).unwrap().0.seq, 0);
    relay.delivered(7, 0, 200);
    assert_eq!(relay.next(7).unwrap().0.seq, 1);
    let ops = relay.take_ops();
    assert!(matches!(ops.last(), Some(RelayOp::Delivered { sdk_app_id: 7, seq: 0 })));
    assert_eq!(ops.len(), 4);
}

#[test]
fn bytes_bound_counts_headers_and_body() {
    let relay = Relay::new(&config(""), RelayRestored::default(), RelayInstruments::unexposed());
    let big = format!(r#"{{"SdkAppId":7,"Pad":"{}"}}"#, "x".repeat(300)).into_bytes();
    relay.enqueue(&tiw_headers(), &big).unwrap();
    assert_eq!(
        relay.enqueue(&tiw_headers(), &big),
        Err(NotQueued::Full(7)),
        "max_queue_bytes"
    );
    let depth = &relay.depths()[0];
    assert_eq!((depth.sdk_app_id, depth.requests), (7, 1));
    assert!(depth.bytes > big.len() && depth.oldest.is_some());
}

#[test]
fn a_refused_request_becomes_a_dead_letter_and_the_next_one_goes() {
    let relay = Relay::new(&config(""), RelayRestored::default(), RelayInstruments::unexposed());
    relay.enqueue(&tiw_headers(), &body(7, 0)).unwrap();
    relay.enqueue(&tiw_headers(), &body(7, 1)).unwrap();
    relay.failed(7, 0, "503");
    assert_eq!(relay.next(7).unwrap().0.seq, 0, "a failure keeps the head");
    relay.dead_letter(7, 0, 400);
    assert_eq!(relay.next(7).unwrap().0.seq, 1);
    assert_eq!(relay.depths()[0].dead_letters, 1);
    let recent = relay.recent();
    assert_eq!(recent[0].outcome, "dead_letter");
    assert_eq!(recent[1].outcome, "retried");
}

#[test]
fn ops_the_store_could_not_take_go_back_first() {
    let relay = Relay::new(&config(""), RelayRestored::default(), RelayInstruments::unexposed());
    relay.enqueue(&tiw_headers(), &body(7, 0)).unwrap();
    let first = relay.take_ops();
    relay.enqueue(&tiw_headers(), &body(7, 1)).unwrap();
    relay.return_ops(first);
    let seqs: Vec<u64> = relay
        .take_ops()
        .iter()
        .map(|op| match op {
            RelayOp::Queued(f) => f.seq,
            _ => u64::MAX,
        })
        .collect();
    assert_eq!(seqs, [0, 1]);
}

#[test]
fn the_store_keeps_queued_requests_and_dead_letters_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::new(&config(""), RelayRestored::default(), RelayInstruments::unexposed());
    for n in 0..3 {
        relay.enqueue(&tiw_headers(), &body(7, n)).unwrap();
    }
    relay.delivered(7, 0, 204);
    relay.dead_letter(7, 1, 410);
    let store = Store::open(dir.path()).unwrap();
    store.commit(&Batch::default(), &relay.take_ops()).unwrap();
    drop(store);
    let restored = Store::open(dir.path()).unwrap().load_relay().unwrap();
    assert_eq!(restored.queued.len(), 1);
    assert_eq!(restored.queued[0].seq, 2);
    assert_eq!(restored.queued[0].body, body(7, 2));
    assert_eq!(restored.dead.len(), 1);
    assert_eq!((restored.dead[0].request.seq, restored.dead[0].status), (1, 410));
    // The relay goes on where it stopped, numbering after what it had.
    let again = Relay::new(&config(""), restored, RelayInstruments::unexposed());
    assert_eq!(again.next(7).unwrap().0.seq, 2);
    assert_eq!(again.enqueue(&tiw_headers(), &body(7, 9)).unwrap(), 3);
}

#[test]
fn an_app_without_a_backend_keeps_its_queue_waiting() {
    let relay = Relay::new(&config(""), RelayRestored::default(), RelayInstruments::unexposed());
    relay.enqueue(&tiw_headers(), &body(7, 0)).unwrap();
    let without = Config::from_yaml(
        "tencentcloud: {secret_id: a, secret_key: b}\napps: [{sdk_app_id: 7}]\n",
        &|_| None,
    )
    .unwrap();
    relay.reconfigure(&without);
    assert!(relay.next(7).is_err(), "no URL: nothing is sent, nothing dropped");
    assert_eq!(relay.depths()[0].requests, 1);
    relay.reconfigure(&config(""));
    assert!(relay.next(7).is_ok());
}

#[test]
fn statuses_and_backoff() {
    assert_eq!(classify(200), Attempt::Taken(200));
    assert_eq!(classify(204), Attempt::Taken(204));
    assert_eq!(classify(400), Attempt::Refused(400));
    assert_eq!(classify(404), Attempt::Refused(404));
    for retried in [301, 408, 429, 500, 502, 503] {
        assert!(matches!(classify(retried), Attempt::Failed(_)), "{retried}");
    }
    let (a, b) = (Duration::from_secs(1), Duration::from_secs(60));
    let waits: Vec<u64> = (1..=8).map(|n| backoff(a, b, n).as_secs()).collect();
    assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
    assert_eq!(backoff(a, b, u32::MAX), b);
}

#[test]
fn check_config_names_the_forward_keys() {
    let bad = "tencentcloud: {secret_id: a, secret_key: b}\napps:\n  - sdk_app_id: 7\n    callback_forward_url: ftp://x\n  - sdk_app_id: 8\n    callback_forward_url: https://user:pw@backend/tiw\ncallback:\n  forward:\n    timeout: soon\n    max_queue: 0\n    retry_initial: 10s\n    retry_max: 1s\n    max_queue_bytez: 1\n";
    let e = Config::from_yaml(bad, &|_| None).unwrap_err().to_string();
    for key in [
        "apps[0].callback_forward_url",
        "apps[1].callback_forward_url: must not carry a user or password",
        "callback.forward.timeout",
        "callback.forward.max_queue: must be positive",
        "callback.forward.retry_max: shorter than retry_initial",
        "callback.forward.max_queue_bytez",
    ] {
        assert!(e.contains(key), "{key} in {e}");
    }
    assert!(!e.contains("pw@"), "a password is not echoed: {e}");
}
