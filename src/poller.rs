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

use crate::census::{Census, TaskType};
use crate::config::Config;
use crate::instruments::PollSinks;
use crate::recordings::poll::{RecordPoller, RecordSettings, RecordedApp};
use crate::recordings::RecordRegistry;
use crate::registry::{Answer, Source, TaskRegistry, Track};
use crate::task::{truncate, unix_now, FinishReason};
use crate::tencentcloud::client::build_clients;
use crate::tencentcloud::ratelimit::{budget_key, Permit};
use crate::tencentcloud::tiw::RUNNING_TASKS_PAGE;
use crate::tencentcloud::RetryPolicy;
use crate::tencentcloud::{ApiError, TiwClient};

/// Requests of one credential group in flight at once; enough to use 20/s with 3 s replies.
pub const MAX_IN_FLIGHT: usize = 64;
/// Safety stop for DescribeRunningTasks paging (a Total that never ends).
const MAX_PAGES: i64 = 200;
/// How often, at most, ended tasks past retention are removed.
const EXPIRY_PERIOD: Duration = Duration::from_secs(5);
/// How often, between sweeps, PREPARED tasks are checked for their next read.
const PREPARED_CHECK: Duration = Duration::from_secs(1);
/// Longest piece of Tencent's failure message put in a log line.
const MESSAGE_LOG_LIMIT: usize = 200;

/// Polling settings.
#[derive(Debug, Clone)]
pub struct PollSettings {
    pub interval: Duration,
    pub discovery_interval: Duration,
    pub census_interval: Duration,
    pub retention: Duration,
    /// `callback.confirm_timeout`: claims are counted unconfirmed after the API was unreachable this long.
    pub confirm_timeout: Duration,
    /// See [`PollOptions::follow_running_list`].
    pub follow_running_list: bool,
}

/// How polling runs, beside what the configuration says: set by the program that embeds it.
#[derive(Debug, Clone, Copy)]
pub struct PollOptions {
    /// Retry policy of API calls (tests shorten it).
    pub retry: RetryPolicy,
    /// Each complete DescribeRunningTasks pass is a status hint for the tasks already known (the
    /// default). `false` leaves end detection without callbacks to the per-task round robin alone,
    /// as before the exporter read the list that way: `bench/run` measures one against the other.
    pub follow_running_list: bool,
}

impl Default for PollOptions {
    fn default() -> Self {
        PollOptions {
            retry: RetryPolicy::default(),
            follow_running_list: true,
        }
    }
}

/// One app as the poller sees it.
#[derive(Clone)]
pub struct PolledApp {
    pub client: TiwClient,
    pub discover: bool,
    /// Counts the running tasks of every type (`tiw_running_tasks`).
    pub census: bool,
    /// Key of the credential group (shared rate budget).
    pub group: String,
    /// Where its API calls go, for the log line that confirms the first answer.
    pub region: String,
    pub endpoint: String,
}

impl Poller {
    /// A poller for the apps of `config`, with one API client each (rate limiters shared per budget).
    pub fn from_config(
        config: &Config,
        (registry, records): (&Arc<TaskRegistry>, &Arc<RecordRegistry>),
        metrics: &PollSinks,
        options: PollOptions,
    ) -> Arc<Poller> {
        let clients = build_clients(config, &metrics.api, options.retry);
        let apps: HashMap<u64, PolledApp> = config
            .apps
            .iter()
            .map(|app| {
                let client = clients[&app.sdk_app_id].clone();
                (
                    app.sdk_app_id,
                    PolledApp {
                        client,
                        discover: app.discover,
                        census: app.census,
                        group: budget_key(&app.api),
                        region: app.api.region.clone(),
                        endpoint: app.api.endpoint.to_string(),
                    },
                )
            })
            .collect();
        let settings = PollSettings {
            interval: config.poll.interval,
            discovery_interval: config.poll.discovery_interval,
            census_interval: config.poll.census_interval,
            retention: config.retention_stopped_tasks,
            confirm_timeout: config.callback.confirm_timeout,
            follow_running_list: options.follow_running_list,
        };
        registry.set_prepared_reread(settings.interval);
        let recording = apps
            .iter()
            .filter(|(id, _)| config.app(**id).is_some_and(|a| a.record))
            .map(|(id, app)| {
                let recorded = RecordedApp {
                    client: app.client.clone(),
                    group: app.group.clone(),
                    census: app.census,
                };
                (*id, recorded)
            })
            .collect();
        records.set_max_tasks(config.max_tasks);
        let records = RecordPoller::new(
            records.clone(),
            metrics.clone(),
            recording,
            RecordSettings {
                interval: settings.interval,
                discovery_interval: settings.discovery_interval,
                retention: settings.retention,
            },
        );
        Arc::new(Poller::new(registry.clone(), records, metrics.clone(), apps, settings))
    }
}

/// Tracks the task ids the configuration lists.
pub fn track_configured_tasks(config: &Config, registry: &TaskRegistry) {
    for app in &config.apps {
        for task in &app.tasks {
            registry.track(app.sdk_app_id, task, None, Source::Config);
        }
    }
}

/// Runs discovery, sweeps and expiry until cancelled.
pub struct Poller {
    registry: Arc<TaskRegistry>,
    metrics: PollSinks,
    apps: HashMap<u64, PolledApp>,
    settings: PollSettings,
    /// Last app-level error per app, so that a change of health is logged once, not per request.
    health: Mutex<HashMap<u64, Option<String>>>,
    /// Duration of the last sweep per credential group.
    sweeps: Mutex<HashMap<String, Duration>>,
    /// Unix time of the last answer from Tencent per app (any answer, task-level errors included).
    answered: Mutex<HashMap<u64, f64>>,
    /// Unix time the poller started.
    started: f64,
    /// The recording tasks of the apps with `apps[].record` (none unless set).
    records: Arc<RecordPoller>,
}

impl Poller {
    pub fn new(
        registry: Arc<TaskRegistry>,
        records: Arc<RecordPoller>,
        metrics: PollSinks,
        apps: HashMap<u64, PolledApp>,
        settings: PollSettings,
    ) -> Poller {
        metrics.recent.keep_apps(&apps.keys().copied().collect());
        Poller {
            records,
            registry,
            metrics,
            apps,
            settings,
            health: Mutex::new(HashMap::new()),
            sweeps: Mutex::new(HashMap::new()),
            answered: Mutex::new(HashMap::new()),
            started: unix_now(),
        }
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
        for (group, mut apps) in groups {
            apps.sort_unstable();
            let census: Vec<u64> = apps.iter().copied().filter(|id| self.apps[id].census).collect();
            if !census.is_empty() {
                let (me, token) = (self.clone(), token.clone());
                tracker.spawn(async move { token.run_until_cancelled(me.census_loop(census)).await });
            }
            let (me, token) = (self.clone(), token.clone());
            tracker.spawn(async move { token.run_until_cancelled(me.sweep_loop(group, apps)).await });
        }
        self.records.spawn(tracker, token);
        let (me, token) = (self.clone(), token.clone());
        // A short retention (or confirm timeout) is checked more often, so series do not outlive
        // it by much.
        let period = (self.settings.retention.min(self.settings.confirm_timeout) / 4)
            .clamp(Duration::from_millis(100), EXPIRY_PERIOD);
        tracker.spawn(async move {
            token
                .run_until_cancelled(async move {
                    loop {
                        tokio::time::sleep(period).await;
                        let n = me.registry.expire(me.settings.retention);
                        if n > 0 {
                            tracing::debug!(tasks = n, "ended tasks passed retention and were removed");
                        }
                        me.settle_claims();
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

    /// The census of the task types discovery does not list (WhiteboardPush too for an app that
    /// does not discover), every `poll.census_interval`, for the apps of one credential group one
    /// after the other: they share the budget, so one loop looks for its spare turns.
    async fn census_loop(self: Arc<Self>, apps: Vec<u64>) {
        loop {
            let started = tokio::time::Instant::now();
            for &sdk_app_id in &apps {
                let discovers = self.apps.get(&sdk_app_id).is_some_and(|a| a.discover);
                for task_type in TaskType::ALL {
                    // Discovery lists these every pass, the census with it.
                    let listed_anyway = match task_type {
                        TaskType::WhiteboardPush => discovers,
                        TaskType::OnlineRecord => self.records.tracks(sdk_app_id),
                        _ => false,
                    };
                    if listed_anyway {
                        continue;
                    }
                    let patience = (started + self.settings.census_interval)
                        .saturating_duration_since(tokio::time::Instant::now())
                        .max(Duration::from_secs(1));
                    if !self.census_once(sdk_app_id, task_type, patience).await {
                        break;
                    }
                }
            }
            tokio::time::sleep_until(started + self.settings.census_interval).await;
        }
    }

    /// Pages through DescribeRunningTasks for `task_type`, in spare budget only (a page waits at
    /// most `patience` for its turn), and publishes what it counted, if the pass was complete.
    /// Returns false when the pass was refused, failed or found no spare budget (the other types
    /// are then left for the next interval: they would meet the same).
    pub async fn census_once(&self, sdk_app_id: u64, task_type: TaskType, patience: Duration) -> bool {
        let Some(app) = self.apps.get(&sdk_app_id) else {
            return false;
        };
        let mut census = Census::default();
        let mut offset = 0;
        for _ in 0..MAX_PAGES {
            // Spare budget only: at ~100 discovering apps per account discovery's passes use all
            // of DescribeRunningTasks' 20/s, and an end noticed late is worth more than a count.
            let page = app
                .client
                .describe_running_tasks_spare(task_type, offset, RUNNING_TASKS_PAGE, patience)
                .await;
            let page = match page {
                Some(Ok(page)) => page,
                Some(Err(e)) => {
                    self.list_failed(sdk_app_id, &e);
                    return false;
                }
                None => {
                    tracing::debug!(
                        sdk_app_id,
                        task_type = task_type.as_str(),
                        "no spare DescribeRunningTasks budget for the census this interval"
                    );
                    return false;
                }
            };
            self.list_answered(sdk_app_id);
            let tasks = page.tasks.unwrap_or_default();
            let n = tasks.len() as i64;
            let now = unix_now();
            for t in tasks.iter().filter(|t| t.is_of(task_type)) {
                census.add(t.status.as_deref(), t.create_time.as_deref(), now);
            }
            offset += n;
            if n == 0 || offset >= page.total.unwrap_or(0) {
                self.publish_census(sdk_app_id, task_type, &census);
                return true;
            }
        }
        true
    }

    /// A complete pass's census, on `/metrics` and the landing page.
    fn publish_census(&self, sdk_app_id: u64, task_type: TaskType, census: &Census) {
        self.metrics.poll.census(sdk_app_id, task_type, census);
        self.metrics.recent.census(sdk_app_id, task_type, census);
    }

    /// A DescribeRunningTasks call of the app was answered.
    fn list_answered(&self, sdk_app_id: u64) {
        self.record_health(sdk_app_id, Ok(()));
        self.metrics
            .poll
            .set_permitted(sdk_app_id, "DescribeRunningTasks", true);
    }

    /// A DescribeRunningTasks call of the app failed with `e`.
    fn list_failed(&self, sdk_app_id: u64, e: &ApiError) {
        // CAM refused the list alone (permissions are per action): the app's tasks are still
        // read, so tiw_up follows the reads; said once, shown per action.
        if e.is_action_denied() {
            self.metrics
                .poll
                .set_permitted(sdk_app_id, "DescribeRunningTasks", false);
            self.metrics.recent.api_error(sdk_app_id, e);
            if self.metrics.recent.first(sdk_app_id, "discovery denied") {
                tracing::error!(sdk_app_id, error = %e, cam_action = "tiw:DescribeRunningTasks", "Tencent Cloud refuses DescribeRunningTasks for these credentials: grant the CAM action tiw:DescribeRunningTasks. Until then only configured task ids and callbacks bring tasks, ends are noticed by polling alone, and tiw_running_tasks is not counted");
            }
            return;
        }
        self.record_health(sdk_app_id, Err(e));
        if !e.is_app_down() {
            tracing::warn!(sdk_app_id, error = %e, "DescribeRunningTasks failed; the list is read again next interval");
        }
    }

    /// Pages through DescribeRunningTasks once and tracks every whiteboard-push task it lists.
    /// A complete pass is also a status signal for the tasks already known: one no longer listed,
    /// or listed FINISHED, gets its confirming poll first ([`TaskRegistry::hint_running_list`]).
    pub async fn discover_once(&self, sdk_app_id: u64) -> usize {
        let Some(app) = self.apps.get(&sdk_app_id) else {
            return 0;
        };
        let started = Instant::now();
        let mut listed: HashMap<String, bool> = HashMap::new();
        let mut census = Census::default();
        let mut complete = false;
        let mut found = 0;
        let mut offset = 0;
        for _ in 0..MAX_PAGES {
            let page = match app
                .client
                .describe_running_tasks(TaskType::WhiteboardPush, offset, RUNNING_TASKS_PAGE)
                .await
            {
                Ok(page) => page,
                Err(e) => {
                    self.list_failed(sdk_app_id, &e);
                    return found;
                }
            };
            self.list_answered(sdk_app_id);
            let tasks = page.tasks.unwrap_or_default();
            let n = tasks.len() as i64;
            let now = unix_now();
            for t in tasks {
                if t.is_of(TaskType::WhiteboardPush) {
                    census.add(t.status.as_deref(), t.create_time.as_deref(), now);
                }
                let finished = t.status.as_deref() == Some("FINISHED");
                let Some((id, room_id)) = discovered(sdk_app_id, t) else {
                    continue;
                };
                listed.insert(id.clone(), finished);
                // Tencent lists tasks `QUEUED | PROCESSING | FINISHED`: one listed FINISHED that
                // the exporter never tracked ended before it could see it. History, not news: not
                // tracked at all (nor read to find out how it ended).
                if finished && !self.registry.knows(sdk_app_id, &id) {
                    continue;
                }
                match self.registry.track_listed(sdk_app_id, &id, room_id, !finished) {
                    Track::Added => {
                        found += 1;
                        tracing::debug!(sdk_app_id, task_id = %id, "discovered task");
                    }
                    Track::Full => self.metrics.tasks.dropped(sdk_app_id, "limit"),
                    Track::Known => {}
                }
            }
            offset += n;
            if n == 0 || offset >= page.total.unwrap_or(0) {
                complete = true;
                break;
            }
        }
        // Only a pass that saw the whole list may say a task is gone from it.
        if complete && self.settings.follow_running_list {
            let hinted = self.registry.hint_running_list(sdk_app_id, &listed, started);
            if hinted > 0 {
                tracing::debug!(
                    sdk_app_id,
                    tasks = hinted,
                    "tasks gone from DescribeRunningTasks or listed FINISHED: confirming them first"
                );
            }
        }
        if complete {
            self.metrics.poll.discovered(sdk_app_id, started.elapsed());
            if app.census {
                self.publish_census(sdk_app_id, TaskType::WhiteboardPush, &census);
            }
            if self.metrics.recent.first(sdk_app_id, "api answer") {
                tracing::info!(
                    sdk_app_id,
                    region = %app.region,
                    endpoint = %app.endpoint,
                    running_tasks = listed.len(),
                    new_tasks = found,
                    "Tencent Cloud API answers for this app: credentials accepted, running tasks listed"
                );
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
                    // PREPARED tasks come due by the clock, not by a change.
                    _ = tokio::time::sleep(PREPARED_CHECK) => self.poll_until_done(&apps, None).await,
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
        self.metrics.poll.swept(longest);
    }

    /// Polls tasks of `apps` (one credential group) until none is left to poll (see
    /// [`TaskRegistry::next_to_poll`]).
    ///
    /// The send turn in the group's rate limit is taken first and the task chosen after: at the
    /// full budget, a read that turned urgent meanwhile (a callback's claim, the running list's
    /// hint) goes in the very next turn, instead of behind requests queued for the limiter.
    pub async fn poll_until_done(self: &Arc<Self>, apps: &[u64], since: Option<Instant>) {
        // Every app of a group draws from the same limiter.
        let Some(client) = apps.iter().find_map(|id| self.apps.get(id)).map(|a| a.client.clone()) else {
            return;
        };
        let mut in_flight = JoinSet::new();
        loop {
            while in_flight.try_join_next().is_some() {}
            while in_flight.len() >= MAX_IN_FLIGHT {
                in_flight.join_next().await;
            }
            if !self.registry.has_due(apps, since) {
                if in_flight.is_empty() {
                    return;
                }
                in_flight.join_next().await;
                continue;
            }
            let turn = client.read_turn().await;
            // Nothing may be due any more (a reply ended the last one): the turn goes unused.
            if let Some((app, task)) = self.registry.next_to_poll(apps, since) {
                let me = self.clone();
                in_flight.spawn(async move { me.poll_task(app, &task, Some(turn)).await });
            }
        }
    }

    /// Claims of each app that its API could not confirm for `callback.confirm_timeout` are
    /// counted on their own word (design §3), and logged as such.
    fn settle_claims(&self) {
        let answered = self.answered.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for &sdk_app_id in self.apps.keys() {
            let settled = self.registry.settle_claims(
                sdk_app_id,
                self.settings.confirm_timeout,
                answered.get(&sdk_app_id).copied(),
                self.started,
            );
            for task_id in settled {
                tracing::warn!(sdk_app_id, task_id = %task_id, timeout = ?self.settings.confirm_timeout, "counted a callback's claim unconfirmed: the app's API could not be reached to confirm it");
            }
        }
    }

    /// How often a configured task Tencent does not know is read again: once per discovery
    /// interval (design §2), and never more often than a running task is (`poll.interval`), so a
    /// stale id in the config costs little now that passes run every few seconds.
    fn unknown_reread(&self) -> Duration {
        self.settings.discovery_interval.max(self.settings.interval)
    }

    /// Reads one task with DescribeWhiteboardPush (in `turn`, if one was taken) and applies the answer.
    pub async fn poll_task(&self, sdk_app_id: u64, task_id: &str, turn: Option<Permit>) {
        let Some(app) = self.apps.get(&sdk_app_id) else {
            self.registry.finish_poll(sdk_app_id, task_id, Instant::now());
            return;
        };
        let result = app.client.read_task(task_id, turn).await;
        match &result {
            Ok(answered) => {
                let answer = &answered.answer;
                let message = match answer {
                    Answer::State(obs) => {
                        self.metrics.tasks.truncated("api", obs.truncated);
                        None
                    }
                    Answer::Failed(message) => Some(message.as_str()),
                    Answer::NoStatus(_) | Answer::NotFound => None,
                };
                let applied =
                    self.registry
                        .answer_poll((sdk_app_id, task_id), answer, self.unknown_reread(), Instant::now());
                if let Some((event, status, reason)) = applied.contradicted {
                    self.metrics
                        .callbacks
                        .received(sdk_app_id, event.event_type(), "contradicted");
                    tracing::warn!(sdk_app_id, task_id, event_type = event.event_type(), claimed_status = status.as_str(), claimed_reason = reason.map(FinishReason::as_str), request_id = %answered.request_id, "DescribeWhiteboardPush contradicts a callback; the API's answer wins");
                }
                // An end that may have cost a class its recording: with what a person needs to
                // find the class (room) and judge it (how long it pushed, how many exceptions).
                let room_id = applied.room_id.map(|r| r.to_string()).unwrap_or_default();
                let duration_seconds = applied.duration.map(|d| d.to_string()).unwrap_or_default();
                let exceptions = applied.exceptions;
                if let Some(request_ids) = &applied.failed_without_status {
                    tracing::warn!(sdk_app_id, task_id, room_id, request_ids = %request_ids.join(","), "whiteboard push task failed: DescribeWhiteboardPush answered without Status 3 times in a row");
                } else if let (Some(FinishReason::Failed), Some(message)) = (applied.ended, message) {
                    tracing::warn!(sdk_app_id, task_id, room_id, request_id = %answered.request_id, reason = %truncate(message, MESSAGE_LOG_LIMIT), "whiteboard push task failed");
                } else if applied.ended == Some(FinishReason::Failed) {
                    tracing::warn!(sdk_app_id, task_id, room_id, request_id = %answered.request_id, "whiteboard push task failed");
                } else if applied.ended == Some(FinishReason::Exception) {
                    tracing::warn!(sdk_app_id, task_id, room_id, duration_seconds, exceptions, request_id = %answered.request_id, "whiteboard push task ended with EXCEPTION: the class's recording or relay may be incomplete");
                } else if applied.ended.is_some() {
                    tracing::debug!(sdk_app_id, task_id, reason = ?applied.ended, "task ended");
                }
                if applied.dropped {
                    self.metrics.tasks.dropped(sdk_app_id, "not_found");
                    tracing::info!(
                        sdk_app_id,
                        task_id,
                        "dropped a task Tencent does not know (TaskNotFound 3 times in a row)"
                    );
                } else if applied.parked {
                    tracing::warn!(sdk_app_id, task_id, every = ?self.unknown_reread(), "Tencent does not know this configured task id (TaskNotFound 3 times in a row); it stays UNKNOWN and is read again once per discovery interval (or poll interval, if longer)");
                }
            }
            Err(e) if !e.is_app_down() => {
                tracing::debug!(sdk_app_id, task_id, error = %e, "DescribeWhiteboardPush failed");
            }
            Err(_) => {}
        }
        // Any answer from Tencent counts, a task-level error included.
        if !result.as_ref().is_err_and(ApiError::is_app_down) {
            self.metrics.poll.answered(sdk_app_id);
        }
        match &result {
            Err(e) if e.is_action_denied() => {
                self.metrics
                    .poll
                    .set_permitted(sdk_app_id, "DescribeWhiteboardPush", false)
            }
            Ok(_) => self
                .metrics
                .poll
                .set_permitted(sdk_app_id, "DescribeWhiteboardPush", true),
            Err(_) => {}
        }
        self.record_health(sdk_app_id, result.as_ref().map(|_| ()));
        if result.is_err() {
            // An answered poll was finished with its answer (answer_poll).
            self.registry.finish_poll(sdk_app_id, task_id, Instant::now());
        }
    }

    /// Sets `tiw_up` from a call's outcome and logs once when an app's health changes.
    fn record_health(&self, sdk_app_id: u64, outcome: Result<(), &ApiError>) {
        if let Err(e) = outcome {
            self.metrics.recent.api_error(sdk_app_id, e);
        }
        let problem = match outcome {
            Err(e) if e.is_app_down() => Some(e.to_string()),
            _ => None,
        };
        // Apps that do not discover confirm their credentials with their first task read.
        let quiet_app = self.apps.get(&sdk_app_id).filter(|a| !a.discover);
        if let (None, Some(app)) = (&problem, quiet_app) {
            if self.metrics.recent.first(sdk_app_id, "api answer") {
                tracing::info!(sdk_app_id, region = %app.region, endpoint = %app.endpoint, "Tencent Cloud API answers for this app: credentials accepted");
            }
        }
        if problem.is_none() {
            self.answered
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(sdk_app_id, unix_now());
        }
        self.metrics.poll.set_up(sdk_app_id, problem.is_none());
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

/// The task one entry of a DescribeRunningTasks page names, with its room: only whiteboard
/// pushes, only ids that can be Tencent's (a broken or hostile page cannot put newlines or
/// megabytes into label values), only plausible room ids.
pub fn discovered(sdk_app_id: u64, t: crate::tencentcloud::tiw::RunningTask) -> Option<(String, Option<i64>)> {
    let is_push = t.is_of(TaskType::WhiteboardPush);
    let id = t.task_id.filter(|id| is_push && !id.is_empty())?;
    if !crate::task::is_task_id(&id) {
        tracing::warn!(sdk_app_id, task_id = ?truncate(&id, 64), "DescribeRunningTasks listed something that is not a task id; skipped");
        return None;
    }
    Some((id, crate::task::plausible(t.room_id)))
}
