//! What the landing page lists (like blackbox_exporter's recent probes): the last callbacks and API
//! errors, the last running-task census, and the first-time milestones and refusal throttling of
//! the log. Written by the sources
//! through their instrument groups ([`crate::instruments::CallbackSinks`], [`crate::instruments::PollSinks`]),
//! read by `http::landing`; not on `/metrics`.

use std::time::Duration;

use crate::census::{Census, TaskType};
use crate::task::unix_now;

/// Callbacks kept for the landing page, newest last.
pub const RECENT_CALLBACKS: usize = 50;
/// API errors kept per app for the landing page.
pub const RECENT_API_ERRORS: usize = 5;
/// Longest reason or error text kept.
const RECENT_TEXT: usize = 300;

/// One callback as the landing page lists it. Never a key, a Sign or a body: the reason is the
/// receiver's own words, and the task id is kept only for events whose signature verified.
#[derive(Debug, Clone)]
pub struct RecentCallback {
    /// Unix seconds when it was answered.
    pub at: f64,
    /// 0 when the body named no configured app.
    pub sdk_app_id: u64,
    pub event_type: &'static str,
    /// A verified Stopped event's FinishReason (as the body claims it).
    pub finish_reason: Option<&'static str>,
    pub task_id: Option<String>,
    /// The `outcome` label (`accepted`, `bad_signature`, …; `full` when the registry was full).
    pub outcome: &'static str,
    pub status: u16,
    pub reason: String,
}

/// One failed API call, as the landing page lists it.
#[derive(Debug, Clone)]
pub struct RecentApiError {
    pub at: f64,
    pub error: String,
}

/// What an operator debugging a deployment looks at first (blackbox_exporter's "recent probes"):
/// the last [`RECENT_CALLBACKS`] callbacks and the last [`RECENT_API_ERRORS`] API errors per app.
/// Bounded whatever arrives; the apps are the configured ones and `0` (which keeps one ring).
#[derive(Default)]
pub struct RecentEvents {
    callbacks: std::sync::Mutex<std::collections::VecDeque<RecentCallback>>,
    api_errors: std::sync::Mutex<std::collections::BTreeMap<u64, std::collections::VecDeque<RecentApiError>>>,
    /// (app, what) said once per process: the first API answer, the first accepted callback.
    said: std::sync::Mutex<std::collections::HashSet<(u64, &'static str)>>,
    /// (app, outcome) of refused callbacks: when one was last logged, and how many since.
    refusals: std::sync::Mutex<std::collections::HashMap<RefusalKey, (std::time::Instant, u64)>>,
    /// The last complete census per app and task type, with when it was taken (unix seconds).
    census: std::sync::Mutex<std::collections::BTreeMap<(u64, TaskType), (Census, f64)>>,
}

/// (app, outcome) of a refused callback.
type RefusalKey = (u64, &'static str);

/// Refused callbacks of one app and outcome are logged at most once per this.
pub const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(60);

impl RecentEvents {
    /// True the first time `what` happens for `app` in this process (reloads included), so that
    /// a milestone is logged once.
    pub fn first(&self, app: u64, what: &'static str) -> bool {
        self.said.lock().unwrap_or_else(|e| e.into_inner()).insert((app, what))
    }

    /// Whether to log a refused callback of `app` with `outcome` now: `Some(n)` with the refusals
    /// not logged since the last line, at most once per [`REFUSAL_LOG_EVERY`] per app and outcome
    /// (a flood of forged callbacks costs one line a minute). `app` is a configured app or 0, and
    /// outcomes are a fixed set, so this stays small.
    pub fn refusal_to_log(&self, app: u64, outcome: &'static str) -> Option<u64> {
        let now = std::time::Instant::now();
        let mut map = self.refusals.lock().unwrap_or_else(|e| e.into_inner());
        match map.get_mut(&(app, outcome)) {
            Some((last, quiet)) if now.duration_since(*last) < REFUSAL_LOG_EVERY => {
                *quiet += 1;
                None
            }
            Some((last, quiet)) => {
                let suppressed = *quiet;
                *last = now;
                *quiet = 0;
                Some(suppressed)
            }
            None => {
                map.insert((app, outcome), (now, 0));
                Some(0)
            }
        }
    }

    pub fn callback(&self, mut callback: RecentCallback) {
        callback.reason = crate::task::truncate(&callback.reason, RECENT_TEXT);
        let mut ring = self.callbacks.lock().unwrap_or_else(|e| e.into_inner());
        if ring.len() >= RECENT_CALLBACKS {
            ring.pop_front();
        }
        ring.push_back(callback);
    }

    pub fn api_error(&self, sdk_app_id: u64, error: &dyn std::fmt::Display) {
        let error = RecentApiError {
            at: unix_now(),
            error: crate::task::truncate(&error.to_string(), RECENT_TEXT),
        };
        let mut apps = self.api_errors.lock().unwrap_or_else(|e| e.into_inner());
        let ring = apps.entry(sdk_app_id).or_default();
        if ring.len() >= RECENT_API_ERRORS {
            ring.pop_front();
        }
        ring.push_back(error);
    }

    /// The callbacks kept, newest first.
    pub fn callbacks(&self) -> Vec<RecentCallback> {
        let ring = self.callbacks.lock().unwrap_or_else(|e| e.into_inner());
        ring.iter().rev().cloned().collect()
    }

    /// The API errors kept, by app, newest first.
    pub fn api_errors(&self) -> Vec<(u64, Vec<RecentApiError>)> {
        let apps = self.api_errors.lock().unwrap_or_else(|e| e.into_inner());
        apps.iter()
            .map(|(app, ring)| (*app, ring.iter().rev().cloned().collect()))
            .collect()
    }

    /// Forgets the API errors of apps no longer configured (a reload), so the map stays bounded.
    pub fn keep_apps(&self, apps: &std::collections::HashSet<u64>) {
        let mut map = self.api_errors.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|app, _| apps.contains(app));
        let mut census = self.census.lock().unwrap_or_else(|e| e.into_inner());
        census.retain(|(app, _), _| apps.contains(app));
    }

    /// A complete list pass of `task_type` for `app` counted `census`, just now.
    pub fn census(&self, app: u64, task_type: TaskType, census: &Census) {
        let mut map = self.census.lock().unwrap_or_else(|e| e.into_inner());
        map.insert((app, task_type), (census.clone(), unix_now()));
    }

    /// The last census of every app and type, by app and type.
    pub fn censuses(&self) -> Vec<(u64, TaskType, Census, f64)> {
        let map = self.census.lock().unwrap_or_else(|e| e.into_inner());
        map.iter()
            .map(|((app, t), (c, at))| (*app, *t, c.clone(), *at))
            .collect()
    }

    /// Forgets the census of `app` (its census was turned off).
    pub fn forget_census(&self, app: u64) {
        let mut map = self.census.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|(a, _), _| *a != app);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_events_stay_bounded_newest_first() {
        let recent = RecentEvents::default();
        for i in 0..(RECENT_CALLBACKS * 3) {
            recent.callback(RecentCallback {
                at: i as f64,
                sdk_app_id: 7,
                event_type: "WhiteboardPushStarted",
                finish_reason: None,
                task_id: None,
                outcome: "bad_signature",
                status: 401,
                reason: "x".repeat(10_000),
            });
            recent.api_error(7, &format!("error {i}"));
        }
        let callbacks = recent.callbacks();
        assert_eq!(callbacks.len(), RECENT_CALLBACKS);
        assert_eq!(callbacks[0].at, (RECENT_CALLBACKS * 3 - 1) as f64, "newest first");
        assert!(callbacks[0].reason.chars().count() <= RECENT_TEXT + 1);
        let errors = recent.api_errors();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].1.len(), RECENT_API_ERRORS);
        assert_eq!(errors[0].1[0].error, format!("error {}", RECENT_CALLBACKS * 3 - 1));
        recent.keep_apps(&[8].into_iter().collect());
        assert!(
            recent.api_errors().is_empty(),
            "apps no longer configured are forgotten"
        );
    }
}
