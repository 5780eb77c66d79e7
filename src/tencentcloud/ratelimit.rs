//! A sliding-window rate limiter that keeps Tencent's *server-side* count under the limit.
//!
//! Tencent allows N requests of one action per second and account. Pacing at exactly N/s or
//! letting a burst through both trip a strict window on the server, because the server counts
//! arrivals, not sends. So the limiter keeps the send instants of the last N requests and lets
//! request k go only when request k−N is surely more than one second in the past *as the server saw
//! it*: request k−N arrived no later than its reply came back, and (assuming one-way latencies vary
//! by less than the jitter allowance) no later than its send plus that allowance. Whichever bound is
//! earlier is used, so with fast replies the full budget is used and with slow ones the allowance
//! costs about 2 % of it. A `RequestLimitExceeded` from the server widens the allowance
//! (doubling, up to half a second) and it shrinks back slowly with every success.
//!
//! Consecutive sends are also spaced by at least `0.9 s / N`, so the budget is spent evenly rather
//! than in bursts of N that then repeat every second: the server sees a steady stream, and a burst
//! after a quiet spell cannot meet a burst that the server still counts from its last second. (90 %
//! rather than 100 %: timer wake-ups run about a millisecond late, and on a per-request chain that
//! lag would otherwise cost 2–3 % of the budget; the sliding window still sets the rate.)
//!
//! Waiters queue on a fair (FIFO) `tokio::sync::Mutex`, so callers are served in arrival order.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::{ApiConfig, AppConfig};
use tokio::time::Instant;

/// The budget an app's requests draw from (the only place credentials are grouped): the account
/// named by `tencentcloud.account`, else the endpoint and SecretId (never the key). Tencent counts
/// per account (`RequestLimitExceeded.UinLimitExceeded`), so SecretIds of one account named alike
/// share one budget per action.
pub fn budget_key(api: &crate::config::ApiConfig) -> String {
    match &api.account {
        Some(account) => format!("account:{account}"),
        None => format!("{}|{}", api.endpoint, api.credentials.secret_id),
    }
}

/// The window Tencent counts requests in.
pub const WINDOW: Duration = Duration::from_secs(1);
/// Default allowance for one-way latency jitter between two requests.
pub const BASE_JITTER_ALLOWANCE: Duration = Duration::from_millis(20);
const MAX_JITTER_ALLOWANCE: Duration = Duration::from_millis(500);

/// Limits one action of one account to `limit` requests in any sliding second as the server sees them.
pub struct RateLimiter {
    limit: usize,
    origin: Instant,
    allowance_us: AtomicU64,
    /// Minimum time between two sends: 90 % of `WINDOW / limit`.
    spacing: Duration,
    slots: tokio::sync::Mutex<VecDeque<Arc<Slot>>>,
}

struct Slot {
    /// Microseconds since `origin` at send: when the permit was granted, moved later by
    /// [`Permit::sending`] when the request actually leaves (signing and scheduling take time,
    /// more so when the caller took its turn before choosing what to send).
    sent_us: AtomicU64,
    /// Microseconds since `origin` when the reply (or failure) came back; 0 while in flight.
    done_us: AtomicU64,
}

/// One granted request. Dropping it marks the request as finished, which lets later requests use
/// the reply time as the bound on when the server saw this one.
pub struct Permit {
    slot: Arc<Slot>,
    origin: Instant,
}

impl Permit {
    /// The request leaves now: later requests count its window from here, not from the grant.
    pub fn sending(&self) {
        let now = micros_since(self.origin, Instant::now());
        self.slot.sent_us.fetch_max(now, Ordering::Relaxed);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let now = micros_since(self.origin, Instant::now()).max(1);
        let _ = self
            .slot
            .done_us
            .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
    }
}

fn micros_since(origin: Instant, t: Instant) -> u64 {
    t.saturating_duration_since(origin).as_micros() as u64
}

impl RateLimiter {
    /// A limiter for `limit` requests per second (at least 1).
    pub fn new(limit: u32) -> Self {
        RateLimiter {
            limit: limit.max(1) as usize,
            spacing: WINDOW * 9 / (10 * limit.max(1)),
            origin: Instant::now(),
            allowance_us: AtomicU64::new(BASE_JITTER_ALLOWANCE.as_micros() as u64),
            slots: tokio::sync::Mutex::new(VecDeque::new()),
        }
    }

    /// Current jitter allowance.
    pub fn allowance(&self) -> Duration {
        Duration::from_micros(self.allowance_us.load(Ordering::Relaxed))
    }

    /// Waits until one more request may be sent, and records it as sent now.
    pub async fn acquire(&self) -> Permit {
        let mut slots = self.slots.lock().await;
        loop {
            let earliest = self.earliest(&slots);
            if Instant::now() >= earliest {
                return self.grant(&mut slots);
            }
            // One sleep for both bounds; holding the lock keeps the queue fair (FIFO). The loop
            // re-checks, since a reply that came back meanwhile can only make the bound earlier.
            tokio::time::sleep_until(earliest).await;
        }
    }

    /// A permit only if one may be sent now and nobody waits for one: spare budget, for work that
    /// must never delay what waits in line (the census's lists behind discovery's).
    pub fn try_acquire(&self) -> Option<Permit> {
        let mut slots = self.slots.try_lock().ok()?;
        (Instant::now() >= self.earliest(&slots)).then(|| self.grant(&mut slots))
    }

    /// When the next request may go: even spacing after the previous send, and a full window (as
    /// the server saw it) after the send `limit` requests back.
    fn earliest(&self, slots: &VecDeque<Arc<Slot>>) -> Instant {
        let now = Instant::now();
        let mut earliest = slots.back().map_or(now, |last| {
            self.origin + Duration::from_micros(last.sent_us.load(Ordering::Relaxed)) + self.spacing
        });
        if slots.len() >= self.limit {
            let oldest = &slots[0];
            let allowance = self.allowance_us.load(Ordering::Relaxed);
            let sent = oldest.sent_us.load(Ordering::Relaxed);
            let seen_by_server = match oldest.done_us.load(Ordering::Relaxed) {
                0 => sent + allowance,
                done => done.min(sent + allowance),
            };
            earliest = earliest.max(self.origin + Duration::from_micros(seen_by_server) + WINDOW);
        }
        earliest
    }

    /// Records one request as sent now.
    fn grant(&self, slots: &mut VecDeque<Arc<Slot>>) -> Permit {
        if slots.len() >= self.limit {
            slots.pop_front();
        }
        let slot = Arc::new(Slot {
            sent_us: AtomicU64::new(micros_since(self.origin, Instant::now())),
            done_us: AtomicU64::new(0),
        });
        slots.push_back(slot.clone());
        Permit {
            slot,
            origin: self.origin,
        }
    }

    /// The server said we were too fast: widen the jitter allowance.
    pub fn on_rate_limited(&self) {
        let cur = self.allowance_us.load(Ordering::Relaxed);
        let next = (cur * 2).min(MAX_JITTER_ALLOWANCE.as_micros() as u64);
        self.allowance_us.store(next, Ordering::Relaxed);
    }

    /// A request went through: let a widened allowance shrink back towards the base, by 1 %.
    pub fn on_success(&self) {
        let base = BASE_JITTER_ALLOWANCE.as_micros() as u64;
        let cur = self.allowance_us.load(Ordering::Relaxed);
        if cur > base {
            self.allowance_us.store((cur - cur / 100).max(base), Ordering::Relaxed);
        }
    }
}

/// Rate limiters shared by every app on the same credentials, one per action.
#[derive(Default)]
pub struct Limiters {
    rates: HashMap<String, u32>,
    limiters: Mutex<HashMap<(String, &'static str), Arc<RateLimiter>>>,
}

impl Limiters {
    /// Apps of one budget ([`budget_key`]) share it; its size is the lowest `requests_per_second` among them.
    pub fn new(apps: &[AppConfig]) -> Self {
        let mut rates: HashMap<String, u32> = HashMap::new();
        for app in apps {
            let rate = rates.entry(budget_key(&app.api)).or_insert(app.api.requests_per_second);
            *rate = (*rate).min(app.api.requests_per_second);
        }
        Limiters {
            rates,
            limiters: Mutex::new(HashMap::new()),
        }
    }

    /// The limiter of one action on one set of credentials.
    pub fn get(&self, api: &ApiConfig, action: &'static str) -> Arc<RateLimiter> {
        let key = budget_key(api);
        let rate = self.rates.get(&key).copied().unwrap_or(api.requests_per_second);
        let mut map = self.limiters.lock().unwrap_or_else(|e| e.into_inner());
        map.entry((key, action))
            .or_insert_with(|| Arc::new(RateLimiter::new(rate)))
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Max number of instants in any window of length `WINDOW` (half-open).
    fn max_in_window(ts: &[Instant]) -> usize {
        let mut best = 0;
        let mut lo = 0;
        for hi in 0..ts.len() {
            while ts[hi] - ts[lo] >= WINDOW {
                lo += 1;
            }
            best = best.max(hi - lo + 1);
        }
        best
    }

    #[tokio::test(start_paused = true)]
    async fn never_more_than_limit_in_any_window_even_with_jitter() {
        let limiter = Arc::new(RateLimiter::new(20));
        let mut arrivals = Vec::new();
        let start = Instant::now();
        // Replies take 200 ms; the server sees each request between 0 and 20 ms after its send.
        for i in 0..200u64 {
            let permit = limiter.acquire().await;
            let jitter = Duration::from_millis((i * 7919) % 21);
            arrivals.push(Instant::now() + jitter);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                drop(permit);
            });
        }
        arrivals.sort();
        assert!(max_in_window(&arrivals) <= 20, "{}", max_in_window(&arrivals));
        // And the budget is used: 200 requests, evenly paced at 20 per 1.02 s, in about 10.1 s.
        let elapsed = Instant::now() - start;
        assert!(elapsed < Duration::from_millis(10_400), "{elapsed:?}");
        assert!(elapsed >= Duration::from_millis(9_900), "{elapsed:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn fast_replies_use_the_full_budget() {
        let limiter = RateLimiter::new(20);
        let start = Instant::now();
        for _ in 0..100 {
            let permit = limiter.acquire().await;
            tokio::time::sleep(Duration::from_millis(1)).await;
            drop(permit);
        }
        // Fast replies bound the server's view tightly: 100 requests = 5 windows of 20, the 100th
        // going once the 80th is a second old (plus its 1 ms reply).
        let elapsed = Instant::now() - start;
        assert!(elapsed <= Duration::from_millis(4 * 1001 + 19 * 46), "{elapsed:?}");
        assert!(elapsed >= Duration::from_millis(4_000), "{elapsed:?}");
    }

    /// Spare turns: granted when a send may go now and nobody waits; never ahead of a waiter,
    /// never past the limit.
    #[tokio::test(start_paused = true)]
    async fn a_spare_turn_never_jumps_the_queue() {
        let limiter = Arc::new(RateLimiter::new(2));
        let first = limiter.try_acquire();
        assert!(first.is_some(), "an idle limiter has a spare turn");
        assert!(limiter.try_acquire().is_none(), "not before the spacing");
        // Someone waits in line for the next turn: the spare one goes to nobody.
        let waiter = tokio::spawn({
            let limiter = limiter.clone();
            async move { drop(limiter.acquire().await) }
        });
        tokio::task::yield_now().await;
        tokio::time::advance(Duration::from_millis(460)).await;
        assert!(limiter.try_acquire().is_none(), "a waiter goes first");
        waiter.await.unwrap();
        // The window holds two sends (the first and the waiter's) until the first is a second old.
        tokio::time::advance(Duration::from_millis(460)).await;
        assert!(limiter.try_acquire().is_none(), "never past the limit");
        tokio::time::advance(Duration::from_millis(200)).await;
        assert!(limiter.try_acquire().is_some());
        drop(first);
    }

    #[tokio::test(start_paused = true)]
    async fn sends_are_spaced_evenly() {
        let limiter = RateLimiter::new(20);
        let mut sent = Vec::new();
        for _ in 0..40 {
            drop(limiter.acquire().await);
            sent.push(Instant::now());
        }
        for pair in sent.windows(2) {
            assert!(
                pair[1] - pair[0] >= Duration::from_millis(44),
                "{:?}",
                pair[1] - pair[0]
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limited_widens_then_recovers() {
        let limiter = RateLimiter::new(5);
        limiter.on_rate_limited();
        assert_eq!(limiter.allowance(), BASE_JITTER_ALLOWANCE * 2);
        for _ in 0..1000 {
            limiter.on_success();
        }
        assert_eq!(limiter.allowance(), BASE_JITTER_ALLOWANCE);
    }
}
