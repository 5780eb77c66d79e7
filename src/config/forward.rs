//! Relay mode's settings: `apps[].callback_forward_url` and the `callback.forward` block
//! (README, "Callbacks and your existing backend").

use std::time::Duration;

use serde::Deserialize;
use serde_yaml::Value;
use url::Url;

use super::check::Check;
use super::ForwardConfig;

/// `callback.forward.max_queue` unless set: requests waiting per app. TIW sends two push events per
/// task and runs at most 100 push tasks per app, so this is hours of a backend outage.
pub const DEFAULT_MAX_QUEUE: usize = 10_000;
/// `callback.forward.max_queue_bytes` unless set, per app.
pub const DEFAULT_MAX_QUEUE_BYTES: usize = 64 * 1024 * 1024;

#[derive(Deserialize, Default)]
pub(super) struct RawForward {
    timeout: Option<Value>,
    retry_initial: Option<Value>,
    retry_max: Option<Value>,
    max_queue: Option<Value>,
    max_queue_bytes: Option<Value>,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        ForwardConfig {
            timeout: Duration::from_secs(5),
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            max_queue: DEFAULT_MAX_QUEUE,
            max_queue_bytes: DEFAULT_MAX_QUEUE_BYTES,
        }
    }
}

/// The `callback.forward` block.
pub(super) fn forward(c: &mut Check<'_>, raw: Option<&RawForward>, max_body_bytes: usize) -> ForwardConfig {
    let d = ForwardConfig::default();
    let Some(raw) = raw else { return d };
    let count = |c: &mut Check<'_>, path: &str, v: Option<&Value>, default: usize| match c.integer(path, v) {
        None => default,
        Some(n) if n > 0 => n as usize,
        Some(n) => {
            c.fail(path, format!("must be positive, got {n}"));
            default
        }
    };
    let f = ForwardConfig {
        timeout: c.duration("callback.forward.timeout", raw.timeout.as_ref(), d.timeout),
        retry_initial: c.duration(
            "callback.forward.retry_initial",
            raw.retry_initial.as_ref(),
            d.retry_initial,
        ),
        retry_max: c.duration("callback.forward.retry_max", raw.retry_max.as_ref(), d.retry_max),
        max_queue: count(c, "callback.forward.max_queue", raw.max_queue.as_ref(), d.max_queue),
        max_queue_bytes: count(
            c,
            "callback.forward.max_queue_bytes",
            raw.max_queue_bytes.as_ref(),
            d.max_queue_bytes,
        ),
    };
    if f.retry_max < f.retry_initial {
        c.fail(
            "callback.forward.retry_max",
            format!(
                "shorter than retry_initial ({})",
                humantime::format_duration(f.retry_initial)
            ),
        );
    }
    if f.max_queue_bytes < max_body_bytes {
        c.fail(
            "callback.forward.max_queue_bytes",
            format!("smaller than callback.max_body_bytes ({max_body_bytes}): one request would not fit"),
        );
    }
    f
}

/// `apps[i].callback_forward_url`: an http(s) URL with a host, no user info (it would be sent to
/// the backend on every request and shown on the landing page).
pub(super) fn forward_url(c: &mut Check<'_>, path: &str, v: Option<&Value>) -> Option<Url> {
    let text = c.string(path, v).filter(|s| !s.trim().is_empty())?;
    match Url::parse(text.trim()) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {
            if !u.username().is_empty() || u.password().is_some() {
                c.fail(path, "must not carry a user or password");
                return None;
            }
            if u.fragment().is_some() {
                c.fail(path, "must not have a #fragment");
                return None;
            }
            Some(u)
        }
        _ => {
            c.fail(
                path,
                format!(
                    "expected the backend's http(s) URL, such as https://backend.internal/tiw/callback, got {text:?}"
                ),
            );
            None
        }
    }
}
