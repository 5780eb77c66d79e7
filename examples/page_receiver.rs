//! See a page without a pager: a webhook receiver for the shipped Alertmanager config
//! (`deploy/alertmanager/alertmanager.yml` sends to `http://127.0.0.1:9095/pager` and `/chat`),
//! printing one line per alert of each notification.
//!
//! ```sh
//! cargo run --example page_receiver            # listens on 127.0.0.1:9095
//! cargo run --example page_receiver -- 0.0.0.0:9095
//! ```
//!
//! A line reads `pager FIRING TiwPushFinishedWithException: <summary> — <description> (runbook: <url>)`.
//! It prints what Alertmanager sends and nothing else: no key or body of TIW's ever reaches it.

use axum::extract::Path;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::Value;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let address = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9095".into());
    let app = Router::new().route("/{receiver}", post(notification));
    let listener = tokio::net::TcpListener::bind(&address).await?;
    eprintln!("page_receiver: listening on http://{address} (point Alertmanager's webhook_configs here)");
    axum::serve(listener, app).await
}

/// One Alertmanager webhook notification (its version 4 payload): a line per alert.
async fn notification(Path(receiver): Path<String>, Json(body): Json<Value>) -> &'static str {
    for line in lines(&receiver, &body) {
        println!("{line}");
    }
    "ok"
}

fn lines(receiver: &str, body: &Value) -> Vec<String> {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    body["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            format!(
                "{receiver} {} {}: {} — {} (runbook: {})",
                text(&a["status"]).to_uppercase(),
                text(&a["labels"]["alertname"]),
                text(&a["annotations"]["summary"]),
                text(&a["annotations"]["description"]),
                text(&a["annotations"]["runbook_url"]),
            )
        })
        .collect()
}
