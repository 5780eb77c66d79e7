//! Discovery and polling loops: keep every unfinished task fresh within Tencent's rate limit.
//!
//! Each group of apps that shares credentials (and so one 20/s budget) runs its own sweeps. A sweep
//! reads every pollable task once, never-polled tasks first and then the least recently polled, at
//! most [`MAX_IN_FLIGHT`] at a time, each request waiting its turn in the shared rate limiter. The
//! next sweep starts `poll.interval` after the previous one started, or at once when the budget made
//! the sweep longer than that, so sweeps never overlap and polling degrades to a fair round robin
//! at the full budget. Between sweeps, tasks that want an early read (new ones, or ones a callback
//! ended) are read straight away.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::metrics::ExporterMetrics;
use crate::registry::{observation_from_poll, unix_now, Source, TaskRegistry};
use crate::tencentcloud::tiw::RUNNING_TASKS_PAGE;
use crate::tencentcloud::{ApiError, TiwClient};

/// Requests of one credential group in flight at once; enough to use 20/s with 3 s replies.
pub const MAX_IN_FLIGHT: usize = 64;
/// Safety stop for DescribeRunningTasks paging (a Total that never ends).
const MAX_PAGES: i64 = 200;
/// How often, at most, ended tasks past retention are removed.
const EXPIRY_PERIOD: Duration = Duration::from_secs(5);
/// Longest piece of Tencent's failure message put in a log line.
const MESSAGE_LOG_LIMIT: usize = 200;

/// Polling settings.
#[derive(Debug, Clone)]
pub struct PollSettings {
    pub interval: Duration,
    pub discovery_interval: Duration,
    pub retention: Duration,
}

/// One app as the poller sees it.
#[derive(Clone)]
pub struct PolledApp {
    pub client: TiwClient,
    pub discover: bool,
    /// Key of the credential group (shared rate budget).
    pub group: String,
}

/// Runs discovery, sweeps and expiry until cancelled.
pub struct Poller {
    registry: Arc<TaskRegistry>,
    metrics: Arc<ExporterMetrics>,
    apps: HashMap<u64, PolledApp>,
    settings: PollSettings,
    /// Last app-level error per app, so that a change of health is logged once, not per request.
    health: Mutex<HashMap<u64, Option<String>>>,
    /// Duration of the last sweep per credential group.
    sweeps: Mutex<HashMap<String, Duration>>,
}

impl Poller {
    pub fn new(
        registry: Arc<TaskRegistry>,
        metrics: Arc<ExporterMetrics>,
        apps: HashMap<u64, PolledApp>,
        settings: PollSettings,
    ) -> Arc<Self> {
        Arc::new(Poller {
            registry,
            metrics,
            apps,
            settings,
            health: Mutex::new(HashMap::new()),
            sweeps: Mutex::new(HashMap::new()),
        })
    }

    /// Spawns every loop on `tracker`; they stop when `token` is cancelled.
    pub fn spawn(self: &Arc<Self>, tracker: &tokio_util::task::TaskTracker, token: &CancellationToken) {
        let mut groups: HashMap<String, Vec<u64>> = HashMap::new();
        for (id, app) in &self.apps {
            groups.entry(app.group.clone()).or_default().push(*id);
            if app.discover {
                let (me, token, id) = (self.clone(), token.clone(), *id);
                tracker.spawn(async move { token.run_until_cancelled(me.discovery_loop(id)).await });
            }
        }
        for (group, apps) in groups {
            let (me, token) = (self.clone(), token.clone());
            tracker.spawn(async move { token.run_until_cancelled(me.sweep_loop(group, apps)).await });
        }
        let (me, token) = (self.clone(), token.clone());
        // A short retention is checked more often, so series do not outlive it by much.
        let period = (self.settings.retention / 4).clamp(Duration::from_millis(100), EXPIRY_PERIOD);
        tracker.spawn(async move {
            token
                .run_until_cancelled(async move {
                    loop {
                        tokio::time::sleep(period).await;
                        let n = me.registry.expire(me.settings.retention);
                        if n > 0 {
                            tracing::debug!(tasks = n, "ended tasks passed retention and were removed");
                        }
                    }
                })
                .await
        });
    }

    async fn discovery_loop(self: Arc<Self>, sdk_app_id: u64) {
        loop {
            self.discover_once(sdk_app_id).await;
            tokio::time::sleep(self.settings.discovery_interval).await;
        }
    }

    /// Pages through DescribeRunningTasks once and tracks every whiteboard-push task it lists.
    pub async fn discover_once(&self, sdk_app_id: u64) -> usize {
        let Some(app) = self.apps.get(&sdk_app_id) else {
            return 0;
        };
        let mut found = 0;
        let mut offset = 0;
        for _ in 0..MAX_PAGES {
            let page = match app.client.describe_running_tasks(offset, RUNNING_TASKS_PAGE).await {
                Ok(page) => page,
                Err(e) => {
                    self.record_health(sdk_app_id, Err(&e));
                    if !e.is_app_level() && !e.is_transport() {
                        tracing::warn!(sdk_app_id, error = %e, "DescribeRunningTasks failed; discovery retries next interval");
                    }
                    return found;
                }
            };
            self.record_health(sdk_app_id, Ok(()));
            let tasks = page.tasks.unwrap_or_default();
            let n = tasks.len() as i64;
            for t in tasks {
                let Some((id, room_id)) = discovered(sdk_app_id, t) else {
                    continue;
                };
                if self.registry.track(sdk_app_id, &id, room_id, Source::Discovery) {
                    found += 1;
                    tracing::debug!(sdk_app_id, task_id = %id, "discovered task");
                }
            }
            offset += n;
            if n == 0 || offset >= page.total.unwrap_or(0) {
                break;
            }
        }
        found
    }

    async fn sweep_loop(self: Arc<Self>, group: String, apps: Vec<u64>) {
        let mut wanted = self.registry.subscribe_poll_wanted();
        loop {
            let start = Instant::now();
            wanted.mark_unchanged();
            self.poll_until_done(&apps, Some(start)).await;
            let took = start.elapsed();
            self.record_sweep(&group, took);
            let next = tokio::time::Instant::from_std(start + self.settings.interval);
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(next) => break,
                    changed = wanted.changed() => {
                        if changed.is_err() {
                            tokio::time::sleep_until(next).await;
                            break;
                        }
                        self.poll_until_done(&apps, None).await;
                    }
                }
            }
        }
    }

    fn record_sweep(&self, group: &str, took: Duration) {
        let mut sweeps = self.sweeps.lock().unwrap_or_else(|e| e.into_inner());
        sweeps.insert(group.to_string(), took);
        let longest = sweeps.values().max().copied().unwrap_or_default();
        self.metrics.poll_sweep_duration.set(longest.as_secs_f64());
    }

    /// Polls tasks of `apps` until none is left to poll (see [`TaskRegistry::next_to_poll`]).
    pub async fn poll_until_done(self: &Arc<Self>, apps: &[u64], since: Option<Instant>) {
        let mut in_flight = JoinSet::new();
        loop {
            while in_flight.len() >= MAX_IN_FLIGHT {
                in_flight.join_next().await;
            }
            match self.registry.next_to_poll(apps, since) {
                Some((app, task)) => {
                    let me = self.clone();
                    in_flight.spawn(async move { me.poll_task(app, &task).await });
                }
                None if in_flight.is_empty() => return,
                None => {
                    in_flight.join_next().await;
                }
            }
        }
    }

    /// Reads one task with DescribeWhiteboardPush and applies the answer.
    pub async fn poll_task(&self, sdk_app_id: u64, task_id: &str) {
        let Some(app) = self.apps.get(&sdk_app_id) else {
            self.registry.finish_poll(sdk_app_id, task_id, Instant::now());
            return;
        };
        let result = app.client.describe_whiteboard_push(task_id).await;
        match &result {
            Ok(reply) => {
                let applied = self
                    .registry
                    .observe_poll(sdk_app_id, task_id, &observation_from_poll(reply));
                if applied.status_changed {
                    tracing::debug!(sdk_app_id, task_id, status = ?reply.status, "task status changed");
                }
            }
            Err(ApiError::Tencent {
                code,
                message,
                request_id,
            }) if code == "FailedOperation.WhiteboardPush" => {
                let applied = self.registry.mark_failed(sdk_app_id, task_id);
                if applied.ended {
                    tracing::warn!(sdk_app_id, task_id, request_id = %request_id, reason = %truncate(message, MESSAGE_LOG_LIMIT), "whiteboard push task failed");
                }
            }
            Err(ApiError::Tencent { code, .. }) if code == "InvalidParameter.TaskNotFound" => {
                self.registry.mark_not_found(sdk_app_id, task_id);
                tracing::debug!(sdk_app_id, task_id, "Tencent does not know this task id");
            }
            Err(e) if !e.is_app_level() && !e.is_transport() => {
                tracing::debug!(sdk_app_id, task_id, error = %e, "DescribeWhiteboardPush failed");
            }
            Err(_) => {}
        }
        let answered = match &result {
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        };
        if answered.is_ok() || answered.is_err_and(|e| !e.is_app_level() && !e.is_transport()) {
            self.metrics
                .last_poll_success
                .with_label_values(&[&sdk_app_id.to_string()])
                .set(unix_now());
        }
        self.record_health(sdk_app_id, result.as_ref().map(|_| ()));
        self.registry.finish_poll(sdk_app_id, task_id, Instant::now());
    }

    /// Sets `tiw_up` from a call's outcome and logs once when an app's health changes.
    fn record_health(&self, sdk_app_id: u64, outcome: Result<(), &ApiError>) {
        let problem = match outcome {
            Err(e) if e.is_app_level() || e.is_transport() => Some(e.to_string()),
            _ => None,
        };
        self.metrics
            .up
            .with_label_values(&[&sdk_app_id.to_string()])
            .set(if problem.is_some() { 0.0 } else { 1.0 });
        let mut health = self.health.lock().unwrap_or_else(|e| e.into_inner());
        let previous = health.insert(sdk_app_id, problem.clone());
        match (previous.flatten(), problem) {
            (None, Some(p)) => {
                tracing::error!(sdk_app_id, error = %p, "Tencent Cloud API unusable for this app; tiw_up=0")
            }
            (Some(_), None) => tracing::info!(sdk_app_id, "Tencent Cloud API answers again for this app; tiw_up=1"),
            (Some(old), Some(new)) if old != new && kind(&old) != kind(&new) => {
                tracing::error!(sdk_app_id, error = %new, "Tencent Cloud API still unusable for this app")
            }
            _ => {}
        }
    }
}

/// The error code (or transport) at the start of an error text, to log a change of cause only.
fn kind(s: &str) -> &str {
    s.split([':', ' ']).next().unwrap_or(s)
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    }
}

/// The task one entry of a DescribeRunningTasks page names, with its room: only whiteboard
/// pushes, only ids that can be Tencent's (a broken or hostile page cannot put newlines or
/// megabytes into label values), only plausible room ids.
pub fn discovered(sdk_app_id: u64, t: crate::tencentcloud::tiw::RunningTask) -> Option<(String, Option<i64>)> {
    let is_push = t.task_type.as_deref().is_none_or(|ty| ty == "WhiteboardPush");
    let id = t.task_id.filter(|id| is_push && !id.is_empty())?;
    if !crate::registry::is_task_id(&id) {
        tracing::warn!(sdk_app_id, task_id = ?truncate(&id, 64), "DescribeRunningTasks listed something that is not a task id; skipped");
        return None;
    }
    Some((id, crate::registry::plausible(t.room_id)))
}
