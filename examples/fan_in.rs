//! Fan-in: your backend keeps TIW's callback URL and passes every request on to the exporter,
//! unchanged, so the exporter verifies it itself (README, "Callbacks and your existing backend").
//!
//! ```sh
//! cargo run --example fan_in -- 127.0.0.1:8080 http://127.0.0.1:9897/callback
//! ```
//!
//! This stands for the backend that owns TIW's callback URL: it handles each event as it always has
//! (here: one line printed) and answers TIW at once; beside that it posts the request's body, byte
//! for byte, with its Content-Type, to the exporter's `callback.path`. Three rules make it safe:
//! - **Unchanged.** The same bytes TIW sent (not a re-serialised JSON), so the exporter's checks
//!   (SdkAppId, Sign, ExpireTime) are TIW's. The exporter needs the same `callback_key` as the
//!   backend: TIW has one key per app.
//! - **Never in TIW's way.** The backend's own answer does not wait for the exporter, and a slow or
//!   absent exporter costs TIW nothing; it is told off the request's path (a task here).
//! - **Retried while the exporter is away** (5xx or no answer; a few times, as TIW would): a
//!   4xx is the exporter's verdict on the request (a bad Sign, an expired one) and is not retried.
//!
//! With nginx in front of the backend, `mirror` does the same without code (README).

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::routing::post;
use axum::Router;

/// Where the exporter takes callbacks, e.g. `http://127.0.0.1:9897/callback`.
#[derive(Clone)]
pub struct Exporter {
    pub url: String,
    pub client: reqwest::Client,
}

/// The backend's callback route: its own handling, then the copy to the exporter.
pub fn router(exporter_url: &str) -> Router {
    let exporter = Exporter {
        url: exporter_url.to_string(),
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default(),
    };
    Router::new()
        .route("/tiw/callback", post(callback))
        .with_state(exporter)
}

async fn callback(State(exporter): State<Exporter>, headers: HeaderMap, body: Bytes) -> &'static str {
    // 1. What the backend always did with TIW's event.
    let event: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    println!(
        "backend: {} for task {}",
        event["EventType"].as_str().unwrap_or("?"),
        event["EventData"]["TaskId"].as_str().unwrap_or("?")
    );
    // 2. The same request to the exporter, off TIW's path.
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    tokio::spawn(pass_on(exporter, content_type, body));
    // 3. TIW's answer, as before.
    r#"{"error_code":0}"#
}

/// Posts `body` to the exporter, retrying while it is away.
pub async fn pass_on(exporter: Exporter, content_type: String, body: Bytes) {
    for attempt in 0..5u32 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(1 << attempt)).await;
        }
        let sent = exporter
            .client
            .post(&exporter.url)
            .header(header::CONTENT_TYPE, content_type.as_str())
            .body(body.clone())
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() || r.status().is_client_error() => return,
            Ok(r) => eprintln!("fan_in: the exporter answered {}; retrying", r.status()),
            Err(e) => eprintln!("fan_in: the exporter is unreachable ({e}); retrying"),
        }
    }
    eprintln!("fan_in: gave up on one request; the exporter still learns of the task by polling");
}

#[allow(dead_code)] // the tests include this file for `router` and run their own server
#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let address = args.next().unwrap_or_else(|| "127.0.0.1:8080".into());
    let exporter = args.next().unwrap_or_else(|| "http://127.0.0.1:9897/callback".into());
    let listener = tokio::net::TcpListener::bind(&address).await?;
    eprintln!("fan_in: TIW's callbacks on http://{address}/tiw/callback, passed on to {exporter}");
    axum::serve(listener, router(&exporter)).await
}
