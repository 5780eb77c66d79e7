//! Relay mode: the exporter in front of the backend that owned TIW's callback URL (README,
//! "Callbacks and your existing backend").
//!
//! For an app with `callback_forward_url`, every request TIW sends to the callback path is queued
//! here as TIW sent it (its headers but the hop-by-hop ones, and its body's bytes), whatever the
//! exporter itself made of it, and TIW is answered 200 once the queue entry is in the store (the
//! writer commits it with the registry's changes, [`Relay::take_ops`]). One delivery loop per app
//! ([`deliver`]) sends the oldest entry to the backend until it answers 2xx, so an app's requests
//! arrive in the order TIW sent them, at least once across restarts and SIGKILL; a 4xx answer
//! (but 408 and 429) is a dead letter: kept in the store, counted and shown, not retried. A full
//! queue (`callback.forward.max_queue`, `max_queue_bytes`) answers TIW 503, so that TIW keeps the
//! request and sends it again.
//!
//! The relay adds no trust and takes none away: a request the exporter refuses (a bad Sign, an
//! event of another TIW feature) is relayed all the same, and the backend keeps its own checks.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::http::HeaderMap;
use tokio::sync::Notify;
use url::Url;

use crate::config::{Config, ForwardConfig};
use crate::instruments::RelayInstruments;
use crate::task::unix_now;

pub mod deliver;
mod gauges;

pub use gauges::RelayGauges;
#[cfg(test)]
mod tests;

/// Dead letters kept per app (the oldest go first); each is at most `callback.max_body_bytes`.
pub const DEAD_LETTERS_KEPT: usize = 1000;
/// Deliveries and failures kept for the landing page.
pub const RECENT_DELIVERIES: usize = 50;

/// Headers that belong to one connection, not to the request (RFC 9110 §7.6.1), and the ones the
/// HTTP client sets itself for the new connection: never copied to the backend.
const NOT_FORWARDED: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "host",
    "content-length",
    "expect",
];

/// One request as TIW sent it, queued for the app's backend.
#[derive(Debug, Clone, PartialEq)]
pub struct Forwarded {
    pub sdk_app_id: u64,
    /// Position in the relay's order (increasing over the store's life).
    pub seq: u64,
    /// Unix seconds when it was received.
    pub received_at: f64,
    /// Header names (lower case) and values, in the order received.
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Forwarded {
    /// What it counts against `max_queue_bytes`.
    fn size(&self) -> usize {
        self.body.len() + self.headers.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
    }
}

/// A request its backend refused for good (a 4xx answer).
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub request: Forwarded,
    /// Unix seconds of the refusal.
    pub at: f64,
    pub status: u16,
}

/// A change the store must make, in the order made.
#[derive(Debug, Clone)]
pub enum RelayOp {
    Queued(Arc<Forwarded>),
    Delivered {
        sdk_app_id: u64,
        seq: u64,
    },
    DeadLettered(Arc<DeadLetter>),
    /// A dead letter beyond [`DEAD_LETTERS_KEPT`] leaves the store.
    DeadPruned {
        sdk_app_id: u64,
        seq: u64,
    },
}

/// What the store held at start.
#[derive(Debug, Default)]
pub struct RelayRestored {
    /// Queued requests, in any order.
    pub queued: Vec<Forwarded>,
    pub dead: Vec<DeadLetter>,
}

/// One delivery attempt, for the landing page.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub at: f64,
    pub sdk_app_id: u64,
    pub seq: u64,
    /// `delivered`, `retried` or `dead_letter`.
    pub outcome: &'static str,
    /// The backend's status, or why there was none (`timeout`, `connect`, ...).
    pub answer: String,
    /// Seconds from receipt to this attempt.
    pub waited: f64,
}

/// Why a request was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotQueued {
    /// The app relays nothing (or the body names no app).
    NotRelayed,
    /// The app's queue is at `max_queue` or `max_queue_bytes`: TIW is answered 503.
    Full(u64),
}

#[derive(Default)]
struct AppQueue {
    entries: VecDeque<Arc<Forwarded>>,
    bytes: usize,
    /// Seqs of the dead letters kept, oldest first.
    dead: VecDeque<u64>,
    /// Woken when an entry arrives or the app's URL changes.
    wake: Arc<Notify>,
}

#[derive(Default)]
struct Inner {
    queues: HashMap<u64, AppQueue>,
    next_seq: u64,
    /// Changes not yet taken by the store's writer, in order.
    ops: Vec<RelayOp>,
    recent: VecDeque<Delivery>,
}

/// The relay queues of every app, their backends' URLs and the delivery settings.
pub struct Relay {
    inner: Mutex<Inner>,
    urls: std::sync::RwLock<HashMap<u64, Url>>,
    settings: std::sync::RwLock<ForwardConfig>,
    instruments: RelayInstruments,
    /// Woken when a reload may have added an app ([`deliver::spawn`] starts its loop).
    apps_changed: Notify,
}

/// The app a callback body names (`SdkAppId`), read without judging the rest of it.
pub fn body_app(body: &[u8]) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct AppOnly {
        #[serde(rename = "SdkAppId")]
        sdk_app_id: u64,
    }
    serde_json::from_slice::<AppOnly>(body).ok().map(|a| a.sdk_app_id)
}

impl Relay {
    /// The relay of `config`, holding what the store had queued.
    pub fn new(config: &Config, restored: RelayRestored, instruments: RelayInstruments) -> Arc<Relay> {
        let mut inner = Inner::default();
        let mut queued = restored.queued;
        queued.sort_by_key(|f| f.seq);
        let mut dead = restored.dead;
        dead.sort_by_key(|d| d.request.seq);
        inner.next_seq = queued
            .iter()
            .map(|f| f.seq)
            .chain(dead.iter().map(|d| d.request.seq))
            .max()
            .map_or(0, |s| s + 1);
        for f in queued {
            let q = inner.queues.entry(f.sdk_app_id).or_default();
            q.bytes += f.size();
            q.entries.push_back(Arc::new(f));
        }
        for d in dead {
            inner
                .queues
                .entry(d.request.sdk_app_id)
                .or_default()
                .dead
                .push_back(d.request.seq);
        }
        let relay = Relay {
            inner: Mutex::new(inner),
            urls: Default::default(),
            settings: std::sync::RwLock::new(config.callback.forward.clone()),
            instruments,
            apps_changed: Notify::new(),
        };
        relay.reconfigure(config);
        Arc::new(relay)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the backends' URLs and the delivery settings of a (re)loaded config. An app whose URL
    /// went keeps its queue, which waits (and shows, and alerts) until a URL returns.
    pub fn reconfigure(&self, config: &Config) {
        let urls: HashMap<u64, Url> = config
            .apps
            .iter()
            .filter_map(|a| Some((a.sdk_app_id, a.callback_forward_url.clone()?)))
            .collect();
        for app in urls.keys() {
            self.instruments.register_app(*app);
        }
        *self.settings.write().unwrap_or_else(|e| e.into_inner()) = config.callback.forward.clone();
        *self.urls.write().unwrap_or_else(|e| e.into_inner()) = urls.clone();
        let mut inner = self.lock();
        for app in urls.keys() {
            inner.queues.entry(*app).or_default();
        }
        for q in inner.queues.values() {
            q.wake.notify_one();
        }
        drop(inner);
        self.apps_changed.notify_one();
    }

    /// Whether any app relays (so the receiver keeps requests' headers).
    pub fn enabled(&self) -> bool {
        !self.urls.read().unwrap_or_else(|e| e.into_inner()).is_empty()
    }

    /// The backend of `app`, when it relays.
    pub fn url(&self, app: u64) -> Option<Url> {
        self.urls.read().unwrap_or_else(|e| e.into_inner()).get(&app).cloned()
    }

    pub fn settings(&self) -> ForwardConfig {
        self.settings.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Queues one request TIW sent (`headers` as received, `body` whole) for the app it names.
    /// It reaches the store with the writer's next commit: answer TIW only after a flush.
    pub fn enqueue(&self, headers: &HeaderMap, body: &[u8]) -> Result<u64, NotQueued> {
        let app = body_app(body).ok_or(NotQueued::NotRelayed)?;
        if self.url(app).is_none() {
            return Err(NotQueued::NotRelayed);
        }
        let settings = self.settings();
        let request = Forwarded {
            sdk_app_id: app,
            seq: 0,
            received_at: unix_now(),
            headers: forwardable(headers),
            body: body.to_vec(),
        };
        let size = request.size();
        let mut inner = self.lock();
        let seq = inner.next_seq;
        let q = inner.queues.entry(app).or_default();
        if q.entries.len() >= settings.max_queue || q.bytes + size > settings.max_queue_bytes {
            drop(inner);
            self.instruments.counted(app, "refused_full");
            return Err(NotQueued::Full(app));
        }
        let request = Arc::new(Forwarded { seq, ..request });
        q.entries.push_back(request.clone());
        q.bytes += size;
        q.wake.notify_one();
        inner.next_seq += 1;
        inner.ops.push(RelayOp::Queued(request));
        drop(inner);
        self.instruments.counted(app, "queued");
        Ok(seq)
    }

    /// The oldest request of `app` and its backend, or what to wait on until there is one.
    pub fn next(&self, app: u64) -> Result<(Arc<Forwarded>, Url), Arc<Notify>> {
        let url = self.url(app);
        let mut inner = self.lock();
        let q = inner.queues.entry(app).or_default();
        match (q.entries.front(), url) {
            (Some(head), Some(url)) => Ok((head.clone(), url)),
            _ => Err(q.wake.clone()),
        }
    }

    /// Removes the head of `app`'s queue if it is `seq`.
    fn pop(inner: &mut Inner, app: u64, seq: u64) -> Option<Arc<Forwarded>> {
        let q = inner.queues.get_mut(&app)?;
        if q.entries.front().map(|f| f.seq) != Some(seq) {
            return None;
        }
        let f = q.entries.pop_front()?;
        q.bytes = q.bytes.saturating_sub(f.size());
        Some(f)
    }

    /// Keeps an attempt at `app`'s request `seq` for the landing page; returns how long the
    /// request had waited since its receipt.
    fn remember(
        inner: &mut Inner,
        (app, seq, received_at): (u64, u64, f64),
        outcome: &'static str,
        answer: String,
    ) -> f64 {
        let at = unix_now();
        let waited = (at - received_at).max(0.0);
        if inner.recent.len() >= RECENT_DELIVERIES {
            inner.recent.pop_front();
        }
        inner.recent.push_back(Delivery {
            at,
            sdk_app_id: app,
            seq,
            outcome,
            answer,
            waited,
        });
        waited
    }

    /// The backend took request `seq` of `app` (answered `status`).
    pub fn delivered(&self, app: u64, seq: u64, status: u16) {
        let mut inner = self.lock();
        let Some(f) = Self::pop(&mut inner, app, seq) else {
            return;
        };
        inner.ops.push(RelayOp::Delivered { sdk_app_id: app, seq });
        let waited = Self::remember(&mut inner, (app, seq, f.received_at), "delivered", status.to_string());
        drop(inner);
        self.instruments.delivered(app, waited);
    }

    /// The backend refused request `seq` of `app` for good (`status` 4xx): it becomes a dead letter.
    pub fn dead_letter(&self, app: u64, seq: u64, status: u16) {
        let mut inner = self.lock();
        let Some(f) = Self::pop(&mut inner, app, seq) else {
            return;
        };
        Self::remember(&mut inner, (app, seq, f.received_at), "dead_letter", status.to_string());
        let letter = Arc::new(DeadLetter {
            request: (*f).clone(),
            at: unix_now(),
            status,
        });
        inner.ops.push(RelayOp::DeadLettered(letter));
        let q = inner.queues.entry(app).or_default();
        q.dead.push_back(seq);
        let pruned = (q.dead.len() > DEAD_LETTERS_KEPT).then(|| q.dead.pop_front()).flatten();
        if let Some(seq) = pruned {
            inner.ops.push(RelayOp::DeadPruned { sdk_app_id: app, seq });
        }
        drop(inner);
        self.instruments.counted(app, "dead_letter");
        tracing::warn!(
            sdk_app_id = app,
            seq,
            status,
            "the backend refused a relayed callback for good (4xx): kept as a dead letter, not retried"
        );
    }

    /// An attempt at request `seq` of `app` failed (`why`: a 5xx status, `timeout`, `connect`, ...);
    /// it stays at the head and is tried again.
    pub fn failed(&self, app: u64, seq: u64, why: &str) {
        let mut inner = self.lock();
        let received_at = inner
            .queues
            .get(&app)
            .and_then(|q| q.entries.front())
            .map_or_else(unix_now, |f| f.received_at);
        Self::remember(&mut inner, (app, seq, received_at), "retried", why.to_string());
        drop(inner);
        self.instruments.counted(app, "retried");
    }

    /// The changes made since the last call, for the store's writer to commit.
    pub fn take_ops(&self) -> Vec<RelayOp> {
        std::mem::take(&mut self.lock().ops)
    }

    /// Gives back changes the store could not commit, ahead of the ones made since.
    pub fn return_ops(&self, mut ops: Vec<RelayOp>) {
        let mut inner = self.lock();
        ops.append(&mut inner.ops);
        inner.ops = ops;
    }

    /// Per app: requests queued, their bytes, the oldest one's receive time, dead letters kept.
    pub fn depths(&self) -> Vec<QueueDepth> {
        let inner = self.lock();
        let mut out: Vec<QueueDepth> = inner
            .queues
            .iter()
            .map(|(app, q)| QueueDepth {
                sdk_app_id: *app,
                requests: q.entries.len(),
                bytes: q.bytes,
                oldest: q.entries.front().map(|f| f.received_at),
                dead_letters: q.dead.len(),
            })
            .collect();
        out.sort_by_key(|d| d.sdk_app_id);
        out
    }

    /// The last deliveries and failures, newest first.
    pub fn recent(&self) -> Vec<Delivery> {
        self.lock().recent.iter().rev().cloned().collect()
    }

    /// Apps with a queue or a backend: each gets a delivery loop.
    pub fn apps(&self) -> Vec<u64> {
        let mut apps: Vec<u64> = self.lock().queues.keys().copied().collect();
        apps.sort_unstable();
        apps
    }
}

/// One app's queue, as `/metrics` and the landing page show it.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueDepth {
    pub sdk_app_id: u64,
    pub requests: usize,
    pub bytes: usize,
    /// Unix seconds when the oldest queued request was received.
    pub oldest: Option<f64>,
    pub dead_letters: usize,
}

/// The headers to send on: all as received but the connection's own.
fn forwardable(headers: &HeaderMap) -> Vec<(String, Vec<u8>)> {
    // Headers the Connection header names are the connection's too.
    let named: Vec<String> = headers
        .get_all(axum::http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .collect();
    headers
        .iter()
        .filter(|(name, _)| {
            let name = name.as_str();
            !NOT_FORWARDED.contains(&name) && !named.iter().any(|n| n == name)
        })
        .map(|(name, value)| (name.as_str().to_string(), value.as_bytes().to_vec()))
        .collect()
}
