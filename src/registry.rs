//! The task registry: every tracked push task, its state machine, and the per-app aggregates.
//!
//! This is the single source of truth. Polls and callbacks report [`Observation`]s; the registry
//! merges them so that state only moves forward (an ended task never reopens, ExceptionCnt never
//! decreases, the first finish reason is kept) and every counter moves exactly once per task.
//! The metrics collector reads it under a short lock at scrape time.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long an expired task id is remembered, so that discovery (which sees 3 days back) cannot
/// bring it back and count it a second time.
pub const TOMBSTONE_TTL: Duration = Duration::from_secs(4 * 24 * 3600);

/// Upper bounds (seconds) of `tiw_push_duration_seconds`: from failed starts to half-day classes.
pub const DURATION_BUCKETS: [f64; 14] = [
    10.0, 30.0, 60.0, 300.0, 600.0, 1200.0, 1800.0, 2700.0, 3600.0, 5400.0, 7200.0, 10800.0, 14400.0, 21600.0,
];

/// Status of a task as the exporter knows it (SPEC §4: the five values of the state set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TaskStatus {
    Prepared,
    Pushing,
    Stopped,
    Failed,
    /// Not known yet, or Tencent does not know the id.
    Unknown,
}

impl TaskStatus {
    pub const ALL: [TaskStatus; 5] = [
        TaskStatus::Prepared,
        TaskStatus::Pushing,
        TaskStatus::Stopped,
        TaskStatus::Failed,
        TaskStatus::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Prepared => "PREPARED",
            TaskStatus::Pushing => "PUSHING",
            TaskStatus::Stopped => "STOPPED",
            TaskStatus::Failed => "FAILED",
            TaskStatus::Unknown => "UNKNOWN",
        }
    }

    /// Tencent's Status field; anything else is not a status we can act on.
    pub fn from_tencent(s: &str) -> Option<TaskStatus> {
        match s {
            "PREPARED" => Some(TaskStatus::Prepared),
            "PUSHING" => Some(TaskStatus::Pushing),
            "STOPPED" => Some(TaskStatus::Stopped),
            _ => None,
        }
    }

    pub fn is_ended(self) -> bool {
        matches!(self, TaskStatus::Stopped | TaskStatus::Failed)
    }

    /// Position in the lifecycle; a report never moves a task to a lower rank.
    fn rank(self) -> u8 {
        match self {
            TaskStatus::Unknown => 0,
            TaskStatus::Prepared => 1,
            TaskStatus::Pushing => 2,
            TaskStatus::Stopped | TaskStatus::Failed => 3,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Why a task ended (SPEC §4); `Failed` for a task that failed outright.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum FinishReason {
    Auto,
    UserCall,
    Exception,
    Failed,
}

impl FinishReason {
    pub const ALL: [FinishReason; 4] = [
        FinishReason::Auto,
        FinishReason::UserCall,
        FinishReason::Exception,
        FinishReason::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Auto => "AUTO",
            FinishReason::UserCall => "USER_CALL",
            FinishReason::Exception => "EXCEPTION",
            FinishReason::Failed => "FAILED",
        }
    }

    /// Tencent's FinishReason field.
    pub fn from_tencent(s: &str) -> Option<FinishReason> {
        match s {
            "AUTO" => Some(FinishReason::Auto),
            "USER_CALL" => Some(FinishReason::UserCall),
            "EXCEPTION" => Some(FinishReason::Exception),
            _ => None,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Where the exporter first heard of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Source {
    Config,
    Discovery,
    Callback,
}

/// What one poll or callback says about a task. `None` means "not said".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observation {
    pub status: Option<TaskStatus>,
    pub finish_reason: Option<FinishReason>,
    pub room_id: Option<i64>,
    pub group_id: Option<String>,
    pub push_user_id: Option<String>,
    pub push_start_time: Option<i64>,
    pub push_stop_time: Option<i64>,
    pub exception_cnt: Option<u64>,
    pub im_sync_time: Option<i64>,
}

/// One tracked task. Everything but the poller's bookkeeping is persisted by the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub sdk_app_id: u64,
    pub task_id: String,
    pub room_id: Option<i64>,
    pub group_id: String,
    pub push_user_id: String,
    pub status: TaskStatus,
    pub finish_reason: Option<FinishReason>,
    pub push_start_time: Option<i64>,
    pub push_stop_time: Option<i64>,
    pub exception_cnt: u64,
    pub im_sync_time: Option<i64>,
    /// Unix seconds when the exporter last learned anything about the task.
    pub last_update: f64,
    /// Unix seconds when the exporter saw the task end (drives retention).
    pub ended_at: Option<f64>,
    pub source: Source,
    /// A WhiteboardPushStarted / WhiteboardPushStopped callback was applied: later copies are duplicates.
    seen_started_event: bool,
    seen_stopped_event: bool,
    started_counted: bool,
    finished_counted: bool,
    /// A poll is owed soon: the task is new, or it ended without a poll confirming the final figures.
    #[serde(skip)]
    needs_poll: bool,
    /// The final DescribeWhiteboardPush after the end has been read: never poll again.
    final_read: bool,
    #[serde(skip)]
    polling: bool,
    #[serde(skip)]
    last_polled: Option<Instant>,
}

impl Task {
    fn new(sdk_app_id: u64, task_id: String, source: Source, now: f64) -> Task {
        Task {
            sdk_app_id,
            task_id,
            room_id: None,
            group_id: String::new(),
            push_user_id: String::new(),
            status: TaskStatus::Unknown,
            finish_reason: None,
            push_start_time: None,
            push_stop_time: None,
            exception_cnt: 0,
            im_sync_time: None,
            last_update: now,
            ended_at: None,
            source,
            seen_started_event: false,
            seen_stopped_event: false,
            started_counted: false,
            finished_counted: false,
            needs_poll: true,
            final_read: false,
            polling: false,
            last_polled: None,
        }
    }

    /// Whether the poller should still read this task.
    pub fn is_pollable(&self) -> bool {
        !self.final_read
    }

    /// Push duration: stop − start once ended, now − start while pushing.
    pub fn duration(&self, now: f64) -> Option<f64> {
        let start = self.push_start_time.filter(|s| *s > 0)? as f64;
        match (self.status, self.push_stop_time.filter(|s| *s > 0)) {
            (_, Some(stop)) if self.status.is_ended() => Some((stop as f64 - start).max(0.0)),
            (TaskStatus::Pushing, _) => Some((now - start).max(0.0)),
            _ => None,
        }
    }
}

/// A cumulative histogram kept in the registry, so it can be persisted with the counters.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DurationHistogram {
    /// Count per bucket of [`DURATION_BUCKETS`] (not cumulative).
    pub counts: [u64; DURATION_BUCKETS.len()],
    pub count: u64,
    pub sum: f64,
}

impl DurationHistogram {
    fn observe(&mut self, v: f64) {
        if let Some(i) = DURATION_BUCKETS.iter().position(|b| v <= *b) {
            self.counts[i] += 1;
        }
        self.count += 1;
        self.sum += v;
    }
}

/// Aggregates of one app. Counters never go down and never disappear.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AppStats {
    pub started_total: u64,
    /// Indexed by [`FinishReason`].
    pub finished_total: [u64; 4],
    pub exceptions_total: u64,
    /// Indexed by [`FinishReason`].
    pub durations: [DurationHistogram; 4],
}

impl AppStats {
    pub fn finished(&self, reason: FinishReason) -> u64 {
        self.finished_total[reason.index()]
    }
    pub fn duration(&self, reason: FinishReason) -> &DurationHistogram {
        &self.durations[reason.index()]
    }
}

/// The two push events TIW calls back with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushEvent {
    Started,
    Stopped,
}

/// How a callback was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackApplied {
    /// First delivery: applied (it may still have changed nothing, e.g. a Started after the Stopped).
    Accepted(Applied),
    /// This event was applied before, or its task has expired: nothing changed.
    Duplicate,
}

/// What changed when an observation was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Applied {
    /// The task is tracked (it was not expired or unknown).
    pub tracked: bool,
    /// This observation moved the task's status.
    pub status_changed: bool,
    /// This observation ended the task.
    pub ended: bool,
}

/// Read-only view handed to the collector.
pub struct View<'a> {
    inner: MutexGuard<'a, Inner>,
}

impl View<'_> {
    pub fn tasks(&self) -> impl Iterator<Item = &Task> {
        self.inner.tasks.values()
    }
    pub fn apps(&self) -> impl Iterator<Item = (&u64, &AppStats)> {
        self.inner.apps.iter()
    }
    /// Tracked tasks per app and status, every configured app and every status present.
    pub fn status_counts(&self) -> BTreeMap<u64, [u64; 5]> {
        let mut counts: BTreeMap<u64, [u64; 5]> = self.inner.apps.keys().map(|k| (*k, [0; 5])).collect();
        for t in self.inner.tasks.values() {
            counts.entry(t.sdk_app_id).or_insert([0; 5])[t.status.index()] += 1;
        }
        counts
    }
    pub fn len(&self) -> usize {
        self.inner.tasks.len()
    }
    pub fn is_empty(&self) -> bool {
        self.inner.tasks.is_empty()
    }
}

/// A task's identity: SdkAppId and TaskId.
pub type Key = (u64, String);

/// Changes not yet written to the store, taken as one consistent cut under the registry lock.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    /// Tasks to write (their state at the cut).
    pub tasks: Vec<Task>,
    /// Tasks removed by retention.
    pub removed: Vec<Key>,
    /// Tombstones to add (unix seconds of expiry) and to forget.
    pub tombstones_added: Vec<(Key, f64)>,
    pub tombstones_pruned: Vec<Key>,
    /// Every app's aggregates at the cut.
    pub apps: Vec<(u64, AppStats)>,
    /// Apps taken out of the configuration: their aggregates go too.
    pub apps_removed: Vec<u64>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
            && self.removed.is_empty()
            && self.tombstones_added.is_empty()
            && self.tombstones_pruned.is_empty()
            && self.apps.is_empty()
            && self.apps_removed.is_empty()
    }
}

/// What the store holds, handed back at start.
#[derive(Debug, Clone, Default)]
pub struct Restored {
    pub tasks: Vec<Task>,
    pub apps: Vec<(u64, AppStats)>,
    pub tombstones: Vec<(Key, f64)>,
}

#[derive(Default)]
struct Inner {
    tasks: HashMap<Key, Task>,
    apps: BTreeMap<u64, AppStats>,
    /// Expired task ids and when they expired (unix seconds).
    tombstones: HashMap<Key, f64>,
    /// Changes since the last batch.
    dirty: HashSet<Key>,
    apps_dirty: bool,
    removed: HashSet<Key>,
    apps_removed: Vec<u64>,
    tombstones_added: Vec<(Key, f64)>,
    tombstones_pruned: Vec<Key>,
    /// Every pollable task that is not in flight, in poll order: wanted-now first, then never
    /// polled, then least recently polled. Picking the next task is O(log n), and ended tasks cost
    /// nothing. Invariant: a task is here, under [`order_key`], iff it is pollable and not polling.
    queue: std::collections::BTreeSet<OrderKey>,
}

/// (not wanted now, last polled, SdkAppId, TaskId): the poll order.
type OrderKey = (bool, Option<Instant>, u64, String);

fn order_key(t: &Task) -> OrderKey {
    (!t.needs_poll, t.last_polled, t.sdk_app_id, t.task_id.clone())
}

impl Inner {
    /// Takes a task out of the poll order; call before changing what [`order_key`] reads.
    fn unqueue(&mut self, key: &Key) {
        if let Some(t) = self.tasks.get(key) {
            self.queue.remove(&order_key(t));
        }
    }

    /// Puts a task back in the poll order if it belongs there.
    fn requeue(&mut self, key: &Key) {
        if let Some(t) = self.tasks.get(key) {
            if t.is_pollable() && !t.polling {
                self.queue.insert(order_key(t));
            }
        }
    }

    fn touch(&mut self, key: &Key) {
        self.dirty.insert(key.clone());
        self.apps_dirty = true;
    }
}

/// The registry. Cheap to share behind an `Arc`; every method takes a short std lock.
pub struct TaskRegistry {
    inner: Mutex<Inner>,
    /// Bumped whenever a task needs an early poll; the poller watches it.
    poll_wanted: tokio::sync::watch::Sender<u64>,
}

impl Default for TaskRegistry {
    fn default() -> Self {
        TaskRegistry {
            inner: Mutex::new(Inner::default()),
            poll_wanted: tokio::sync::watch::channel(0).0,
        }
    }
}

/// Unix seconds now.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl TaskRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-applied update behind (every update is
        // computed before it is stored), so a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes sure every configured app has its aggregates, even with no task yet.
    pub fn ensure_apps(&self, ids: impl IntoIterator<Item = u64>) {
        let mut inner = self.lock();
        for id in ids {
            if let std::collections::btree_map::Entry::Vacant(e) = inner.apps.entry(id) {
                e.insert(AppStats::default());
                inner.apps_dirty = true;
            }
        }
    }

    /// Loads what the store held: tasks, aggregates and tombstones. Every task that has not had
    /// its final read is polled again at once.
    pub fn restore(&self, restored: Restored) {
        let mut inner = self.lock();
        for (id, stats) in restored.apps {
            inner.apps.insert(id, stats);
        }
        for mut task in restored.tasks {
            task.needs_poll = !task.final_read;
            inner.apps.entry(task.sdk_app_id).or_default();
            let key = (task.sdk_app_id, task.task_id.clone());
            inner.tasks.insert(key.clone(), task);
            inner.requeue(&key);
        }
        inner.tombstones.extend(restored.tombstones);
        drop(inner);
        self.want_poll();
    }

    /// Forgets that polls were in flight: their poller was stopped (a reload) and will not finish them.
    pub fn clear_polling(&self) {
        let mut inner = self.lock();
        let in_flight: Vec<Key> = inner
            .tasks
            .iter()
            .filter(|(_, t)| t.polling)
            .map(|(k, _)| k.clone())
            .collect();
        for key in in_flight {
            if let Some(t) = inner.tasks.get_mut(&key) {
                t.polling = false;
            }
            inner.requeue(&key);
        }
    }

    /// Removes an app taken out of the configuration: its tasks and aggregates, here and in the
    /// store. Returns how many tasks went.
    pub fn remove_app(&self, sdk_app_id: u64) -> usize {
        let mut inner = self.lock();
        let keys: Vec<Key> = inner.tasks.keys().filter(|k| k.0 == sdk_app_id).cloned().collect();
        for key in &keys {
            inner.unqueue(key);
            inner.tasks.remove(key);
            inner.dirty.remove(key);
            inner.removed.insert(key.clone());
        }
        inner.tombstones.retain(|k, _| k.0 != sdk_app_id);
        if inner.apps.remove(&sdk_app_id).is_some() {
            inner.apps_removed.push(sdk_app_id);
        }
        keys.len()
    }

    /// Takes every change since the last batch, for the store.
    pub fn take_batch(&self) -> Batch {
        let mut inner = self.lock();
        let dirty = std::mem::take(&mut inner.dirty);
        let tasks = dirty.iter().filter_map(|k| inner.tasks.get(k).cloned()).collect();
        let apps = if std::mem::take(&mut inner.apps_dirty) {
            inner.apps.iter().map(|(k, v)| (*k, v.clone())).collect()
        } else {
            Vec::new()
        };
        Batch {
            tasks,
            removed: std::mem::take(&mut inner.removed).into_iter().collect(),
            tombstones_added: std::mem::take(&mut inner.tombstones_added),
            tombstones_pruned: std::mem::take(&mut inner.tombstones_pruned),
            apps,
            apps_removed: std::mem::take(&mut inner.apps_removed),
        }
    }

    /// A batch the store could not write: mark its changes dirty again, so the next write has them.
    pub fn return_batch(&self, batch: Batch) {
        let mut inner = self.lock();
        for t in batch.tasks {
            let key = (t.sdk_app_id, t.task_id);
            if inner.tasks.contains_key(&key) {
                inner.dirty.insert(key);
            }
        }
        inner.apps_dirty |= !batch.apps.is_empty();
        for id in batch.apps_removed {
            if !inner.apps.contains_key(&id) && !inner.apps_removed.contains(&id) {
                inner.apps_removed.push(id);
            }
        }
        for key in batch.removed {
            if !inner.tasks.contains_key(&key) {
                inner.removed.insert(key);
            }
        }
        // Newer entries win: what was taken is older than what is there now.
        let mut added = batch.tombstones_added;
        added.append(&mut inner.tombstones_added);
        inner.tombstones_added = added;
        let mut pruned = batch.tombstones_pruned;
        pruned.append(&mut inner.tombstones_pruned);
        inner.tombstones_pruned = pruned;
    }

    /// Subscribes to "a task wants an early poll".
    pub fn subscribe_poll_wanted(&self) -> tokio::sync::watch::Receiver<u64> {
        self.poll_wanted.subscribe()
    }

    fn want_poll(&self) {
        self.poll_wanted.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Starts tracking a task. Returns false when it is tracked already or expired recently.
    pub fn track(&self, sdk_app_id: u64, task_id: &str, room_id: Option<i64>, source: Source) -> bool {
        let key = (sdk_app_id, task_id.to_string());
        {
            let mut inner = self.lock();
            if inner.tasks.contains_key(&key) || inner.tombstones.contains_key(&key) {
                if let (Some(t), Some(room)) = (inner.tasks.get_mut(&key), room_id) {
                    if t.room_id.is_none() {
                        t.room_id = Some(room);
                        inner.touch(&key);
                    }
                }
                return false;
            }
            let mut task = Task::new(sdk_app_id, task_id.to_string(), source, unix_now());
            task.room_id = room_id;
            inner.apps.entry(sdk_app_id).or_default();
            inner.touch(&key);
            inner.tasks.insert(key.clone(), task);
            inner.requeue(&key);
        }
        self.want_poll();
        true
    }

    /// Applies an observation from a poll or a callback.
    pub fn observe(&self, sdk_app_id: u64, task_id: &str, obs: &Observation) -> Applied {
        let now = unix_now();
        let key = (sdk_app_id, task_id.to_string());
        let mut inner = self.lock();
        let Inner { tasks, apps, .. } = &mut *inner;
        let Some(task) = tasks.get_mut(&key) else {
            return Applied::default();
        };
        let stats = apps.entry(sdk_app_id).or_default();
        let applied = merge(task, stats, obs, now);
        inner.touch(&key);
        applied
    }

    /// Applies a DescribeWhiteboardPush answer and records the poll.
    pub fn observe_poll(&self, sdk_app_id: u64, task_id: &str, obs: &Observation) -> Applied {
        let applied = self.observe(sdk_app_id, task_id, obs);
        let mut inner = self.lock();
        let key = (sdk_app_id, task_id.to_string());
        inner.unqueue(&key);
        if let Some(t) = inner.tasks.get_mut(&key) {
            // The final read is the one where Tencent itself says the task ended, with a reason.
            // A reply older than a Stopped callback, or a STOPPED without FinishReason, is read again.
            if obs.status.is_some_and(TaskStatus::is_ended) && t.finish_reason.is_some() {
                t.final_read = true;
            }
        }
        inner.requeue(&key);
        applied
    }

    /// Applies a verified push callback: tracks its task if new, applies it once, and asks for the
    /// final DescribeWhiteboardPush when it ended the task.
    pub fn observe_callback(
        &self,
        sdk_app_id: u64,
        task_id: &str,
        event: PushEvent,
        obs: &Observation,
    ) -> CallbackApplied {
        let now = unix_now();
        let key = (sdk_app_id, task_id.to_string());
        let result = {
            let mut inner = self.lock();
            if inner.tombstones.contains_key(&key) {
                return CallbackApplied::Duplicate;
            }
            inner.unqueue(&key);
            let Inner { tasks, apps, .. } = &mut *inner;
            let stats = apps.entry(sdk_app_id).or_default();
            let task = tasks
                .entry(key.clone())
                .or_insert_with(|| Task::new(sdk_app_id, task_id.to_string(), Source::Callback, now));
            let seen = match event {
                PushEvent::Started => &mut task.seen_started_event,
                PushEvent::Stopped => &mut task.seen_stopped_event,
            };
            if *seen {
                inner.requeue(&key);
                return CallbackApplied::Duplicate;
            }
            *seen = true;
            let applied = merge(task, stats, obs, now);
            if task.status.is_ended() && !task.final_read {
                task.needs_poll = true;
            }
            inner.touch(&key);
            inner.requeue(&key);
            CallbackApplied::Accepted(applied)
        };
        self.want_poll();
        result
    }

    /// Marks a poll as done (whatever its outcome), releasing the task for the next sweep.
    pub fn finish_poll(&self, sdk_app_id: u64, task_id: &str, at: Instant) {
        let mut inner = self.lock();
        let key = (sdk_app_id, task_id.to_string());
        inner.unqueue(&key);
        if let Some(t) = inner.tasks.get_mut(&key) {
            t.polling = false;
            t.needs_poll = false;
            t.last_polled = Some(at);
        }
        inner.requeue(&key);
    }

    /// Picks the next task of `apps` to poll and marks it in flight.
    ///
    /// With `since = Some(t)`: any pollable task not polled since `t` (a sweep). With `None`: only
    /// tasks that want an early poll. Never-polled tasks come first, then the least recently polled,
    /// so a sweep that the budget cannot finish in time degrades to a fair round robin.
    pub fn next_to_poll(&self, apps: &[u64], since: Option<Instant>) -> Option<(u64, String)> {
        let mut inner = self.lock();
        // The queue is in poll order, so the first entry of these apps is the best candidate; if
        // it is not due, none after it is.
        let first = inner.queue.iter().find(|(_, _, app, _)| apps.contains(app)).cloned()?;
        let (not_wanted, last_polled, app, task_id) = first.clone();
        let due = match since {
            Some(since) => !not_wanted || last_polled.is_none_or(|p| p < since),
            None => !not_wanted,
        };
        if !due {
            return None;
        }
        inner.queue.remove(&first);
        let key = (app, task_id);
        if let Some(t) = inner.tasks.get_mut(&key) {
            t.polling = true;
        }
        Some(key)
    }

    /// DescribeWhiteboardPush answered `FailedOperation.WhiteboardPush`: the task failed.
    pub fn mark_failed(&self, sdk_app_id: u64, task_id: &str) -> Applied {
        let obs = Observation {
            status: Some(TaskStatus::Failed),
            finish_reason: Some(FinishReason::Failed),
            ..Default::default()
        };
        self.observe_poll(sdk_app_id, task_id, &obs)
    }

    /// DescribeWhiteboardPush answered `InvalidParameter.TaskNotFound`.
    pub fn mark_not_found(&self, sdk_app_id: u64, task_id: &str) -> Applied {
        let now = unix_now();
        let mut inner = self.lock();
        let key = (sdk_app_id, task_id.to_string());
        inner.unqueue(&key);
        let Some(t) = inner.tasks.get_mut(&key) else {
            return Applied::default();
        };
        // A task that was known once keeps what it was; UNKNOWN is only for ids Tencent never knew.
        t.last_update = now;
        // An ended task Tencent no longer knows has nothing more to tell: that was its final read.
        if t.status.is_ended() && t.finish_reason.is_some() {
            t.final_read = true;
        }
        inner.touch(&key);
        inner.requeue(&key);
        Applied {
            tracked: true,
            ..Default::default()
        }
    }

    /// Removes tasks that ended longer than `retention` ago and forgets old tombstones.
    pub fn expire(&self, retention: Duration) -> usize {
        let now = unix_now();
        let mut inner = self.lock();
        let cutoff = now - retention.as_secs_f64();
        let expired: Vec<Key> = inner
            .tasks
            .iter()
            .filter(|(_, t)| t.ended_at.is_some_and(|e| e <= cutoff) && !t.polling)
            .map(|(k, _)| k.clone())
            .collect();
        for key in &expired {
            inner.unqueue(key);
            inner.tasks.remove(key);
            inner.dirty.remove(key);
            inner.removed.insert(key.clone());
            inner.tombstones.insert(key.clone(), now);
            inner.tombstones_added.push((key.clone(), now));
        }
        let tomb_cutoff = now - TOMBSTONE_TTL.as_secs_f64();
        let pruned: Vec<Key> = inner
            .tombstones
            .iter()
            .filter(|(_, at)| **at <= tomb_cutoff)
            .map(|(k, _)| k.clone())
            .collect();
        for key in pruned {
            inner.tombstones.remove(&key);
            inner.tombstones_pruned.push(key);
        }
        expired.len()
    }

    /// A short-lived read lock for rendering.
    pub fn view(&self) -> View<'_> {
        View { inner: self.lock() }
    }

    /// A copy of every task (sorted by app and id) and every app's aggregates.
    pub fn snapshot(&self) -> (Vec<Task>, BTreeMap<u64, AppStats>) {
        let inner = self.lock();
        let mut tasks: Vec<Task> = inner.tasks.values().cloned().collect();
        tasks.sort_by(|a, b| (a.sdk_app_id, &a.task_id).cmp(&(b.sdk_app_id, &b.task_id)));
        (tasks, inner.apps.clone())
    }

    /// A copy of one task.
    pub fn get(&self, sdk_app_id: u64, task_id: &str) -> Option<Task> {
        self.lock().tasks.get(&(sdk_app_id, task_id.to_string())).cloned()
    }

    /// A copy of one app's aggregates.
    pub fn stats(&self, sdk_app_id: u64) -> Option<AppStats> {
        self.lock().apps.get(&sdk_app_id).cloned()
    }

    /// Number of tracked tasks.
    pub fn len(&self) -> usize {
        self.lock().tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Merges one observation into a task, moving counters exactly once. Pure: no I/O, no clock but `now`.
fn merge(task: &mut Task, stats: &mut AppStats, obs: &Observation, now: f64) -> Applied {
    let mut applied = Applied {
        tracked: true,
        ..Default::default()
    };
    task.last_update = now;
    if let Some(room) = obs.room_id.filter(|r| *r != 0) {
        task.room_id.get_or_insert(room);
    }
    if let Some(g) = obs.group_id.as_ref().filter(|g| !g.is_empty()) {
        if task.group_id.is_empty() {
            task.group_id = g.clone();
        }
    }
    if let Some(u) = obs.push_user_id.as_ref().filter(|u| !u.is_empty()) {
        if task.push_user_id.is_empty() {
            task.push_user_id = u.clone();
        }
    }
    if let Some(s) = obs.push_start_time.filter(|s| *s > 0) {
        task.push_start_time.get_or_insert(s);
    }
    if let Some(s) = obs.push_stop_time.filter(|s| *s > 0) {
        task.push_stop_time.get_or_insert(s);
    }
    if let Some(s) = obs.im_sync_time.filter(|s| *s > 0) {
        task.im_sync_time.get_or_insert(s);
    }
    if let Some(n) = obs.exception_cnt {
        if n > task.exception_cnt {
            stats.exceptions_total += n - task.exception_cnt;
            task.exception_cnt = n;
        }
    }
    if let Some(status) = obs.status {
        if status.rank() > task.status.rank() {
            task.status = status;
            applied.status_changed = true;
            if status.is_ended() {
                task.ended_at = Some(now);
                applied.ended = true;
            }
        }
    }
    if task.status.is_ended() && task.finish_reason.is_none() {
        task.finish_reason = match task.status {
            TaskStatus::Failed => Some(FinishReason::Failed),
            _ => obs.finish_reason.filter(|r| *r != FinishReason::Failed),
        };
    }
    let did_start =
        task.status == TaskStatus::Pushing || (task.status == TaskStatus::Stopped && task.push_start_time.is_some());
    if did_start && !task.started_counted {
        task.started_counted = true;
        stats.started_total += 1;
    }
    if let (false, Some(reason)) = (task.finished_counted, task.finish_reason) {
        task.finished_counted = true;
        stats.finished_total[reason.index()] += 1;
        if let Some(d) = task.duration(now) {
            stats.durations[reason.index()].observe(d);
        }
    }
    applied
}

/// The longest task id taken; Tencent's are 20 characters.
pub const MAX_TASK_ID: usize = 128;

/// Whether `id` can be a task id: 1 to [`MAX_TASK_ID`] printable ASCII characters, no spaces.
/// Ids from callbacks and from DescribeRunningTasks alike must pass before they are tracked, so
/// a hostile or broken sender cannot put newlines or megabytes into label values.
pub fn is_task_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_TASK_ID && id.bytes().all(|b| b.is_ascii_graphic())
}

/// `v` if it can be one of Tencent's room ids, unix times or counts (0 to 2³²−1, the range
/// callbacks are held to); anything else is unknown. Beyond 2⁵³ a value would not even survive
/// Prometheus' float64 samples.
pub fn plausible(v: Option<i64>) -> Option<i64> {
    v.filter(|v| (0..=i64::from(u32::MAX)).contains(v))
}

/// Turns a DescribeWhiteboardPush reply into an observation; implausible numbers are unknown.
pub fn observation_from_poll(p: &crate::tencentcloud::tiw::WhiteboardPush) -> Observation {
    Observation {
        status: p.status.as_deref().and_then(TaskStatus::from_tencent),
        finish_reason: p.finish_reason.as_deref().and_then(FinishReason::from_tencent),
        room_id: plausible(p.room_id),
        group_id: p.group_id.clone(),
        push_user_id: p.push_user_id.clone(),
        push_start_time: plausible(p.push_start_time),
        push_stop_time: plausible(p.push_stop_time),
        exception_cnt: plausible(p.exception_cnt).map(|n| n as u64),
        im_sync_time: plausible(p.im_sync_time),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by `cargo fuzz` (fuzz/regressions/api_reply): a PushStartTime beyond 2⁵³ was
    /// exported as an integer no float64 sample can hold.
    #[test]
    fn implausible_numbers_from_a_poll_are_unknown() {
        let reply: crate::tencentcloud::tiw::WhiteboardPush = serde_json::from_value(serde_json::json!({
            "Status": "PUSHING", "PushStartTime": 16105911610591759i64, "RoomId": -3, "ExceptionCnt": 5_000_000_000i64,
            "IMSyncTime": 1610591726
        }))
        .unwrap();
        let obs = observation_from_poll(&reply);
        assert_eq!(
            (obs.push_start_time, obs.room_id, obs.exception_cnt, obs.im_sync_time),
            (None, None, None, Some(1610591726))
        );
        assert_eq!(obs.status, Some(TaskStatus::Pushing));
    }

    fn obs(status: TaskStatus) -> Observation {
        Observation {
            status: Some(status),
            ..Default::default()
        }
    }

    #[test]
    fn walks_forward_and_counts_once() {
        let r = TaskRegistry::new();
        assert!(r.track(1, "t", None, Source::Discovery));
        assert!(!r.track(1, "t", None, Source::Discovery));
        r.observe(1, "t", &obs(TaskStatus::Prepared));
        let pushing = Observation {
            push_start_time: Some(100),
            exception_cnt: Some(1),
            ..obs(TaskStatus::Pushing)
        };
        r.observe(1, "t", &pushing);
        r.observe(1, "t", &pushing);
        let stopped = Observation {
            finish_reason: Some(FinishReason::Exception),
            push_stop_time: Some(400),
            exception_cnt: Some(3),
            ..obs(TaskStatus::Stopped)
        };
        let a = r.observe_poll(1, "t", &stopped);
        assert!(a.ended);
        r.observe_poll(1, "t", &stopped);
        // A stale reply cannot move it back, lower the count or change the reason.
        let stale = Observation {
            exception_cnt: Some(0),
            finish_reason: Some(FinishReason::Auto),
            ..obs(TaskStatus::Pushing)
        };
        r.observe(1, "t", &stale);
        let t = r.get(1, "t").unwrap();
        assert_eq!(t.status, TaskStatus::Stopped);
        assert_eq!(t.finish_reason, Some(FinishReason::Exception));
        assert_eq!(t.exception_cnt, 3);
        assert_eq!(t.duration(1e9), Some(300.0));
        let s = r.stats(1).unwrap();
        assert_eq!(s.started_total, 1);
        assert_eq!(s.finished(FinishReason::Exception), 1);
        assert_eq!(s.finished_total.iter().sum::<u64>(), 1);
        assert_eq!(s.exceptions_total, 3);
        assert_eq!(s.duration(FinishReason::Exception).count, 1);
        assert_eq!(s.duration(FinishReason::Exception).sum, 300.0);
        assert!(!t.is_pollable());
    }

    #[test]
    fn failed_task_gets_reason_failed_and_never_started() {
        let r = TaskRegistry::new();
        r.track(1, "f", None, Source::Config);
        r.mark_failed(1, "f");
        let t = r.get(1, "f").unwrap();
        assert_eq!(
            (t.status, t.finish_reason),
            (TaskStatus::Failed, Some(FinishReason::Failed))
        );
        let s = r.stats(1).unwrap();
        assert_eq!((s.started_total, s.finished(FinishReason::Failed)), (0, 1));
    }

    #[test]
    fn first_seen_with_exceptions_adds_them_all() {
        let r = TaskRegistry::new();
        r.track(1, "x", None, Source::Discovery);
        r.observe(
            1,
            "x",
            &Observation {
                exception_cnt: Some(5),
                ..obs(TaskStatus::Pushing)
            },
        );
        assert_eq!(r.stats(1).unwrap().exceptions_total, 5);
    }

    #[test]
    fn not_found_keeps_known_status() {
        let r = TaskRegistry::new();
        r.track(1, "n", None, Source::Config);
        r.mark_not_found(1, "n");
        assert_eq!(r.get(1, "n").unwrap().status, TaskStatus::Unknown);
        r.observe(1, "n", &obs(TaskStatus::Pushing));
        r.mark_not_found(1, "n");
        assert_eq!(r.get(1, "n").unwrap().status, TaskStatus::Pushing);
    }

    #[test]
    fn poll_order_is_never_polled_then_least_recent() {
        let r = TaskRegistry::new();
        let t0 = Instant::now();
        for id in ["a", "b", "c"] {
            r.track(1, id, None, Source::Discovery);
        }
        let mut seen = vec![];
        while let Some((_, id)) = r.next_to_poll(&[1], Some(t0)) {
            seen.push(id);
        }
        assert_eq!(seen.len(), 3);
        // In flight: not handed out twice.
        assert!(r.next_to_poll(&[1], Some(Instant::now())).is_none());
        r.finish_poll(1, "b", t0);
        r.finish_poll(1, "a", t0 + Duration::from_millis(1));
        r.finish_poll(1, "c", t0 + Duration::from_millis(2));
        let later = t0 + Duration::from_secs(1);
        let order: Vec<String> = std::iter::from_fn(|| r.next_to_poll(&[1], Some(later)).map(|k| k.1)).collect();
        assert_eq!(order, ["b", "a", "c"]);
        // Other apps are not handed out.
        assert!(r.next_to_poll(&[2], Some(later)).is_none());
    }

    #[test]
    fn callbacks_apply_once_in_any_order() {
        let r = TaskRegistry::new();
        let started = Observation {
            push_start_time: Some(100),
            ..obs(TaskStatus::Pushing)
        };
        let stopped = Observation {
            finish_reason: Some(FinishReason::Exception),
            push_start_time: Some(100),
            push_stop_time: Some(200),
            exception_cnt: Some(2),
            ..obs(TaskStatus::Stopped)
        };
        // Stopped first, then Started, then copies of both.
        assert!(
            matches!(r.observe_callback(1, "c", PushEvent::Stopped, &stopped), CallbackApplied::Accepted(a) if a.ended)
        );
        assert!(
            matches!(r.observe_callback(1, "c", PushEvent::Started, &started), CallbackApplied::Accepted(a) if !a.status_changed)
        );
        for _ in 0..5 {
            assert_eq!(
                r.observe_callback(1, "c", PushEvent::Stopped, &stopped),
                CallbackApplied::Duplicate
            );
            assert_eq!(
                r.observe_callback(1, "c", PushEvent::Started, &started),
                CallbackApplied::Duplicate
            );
        }
        let t = r.get(1, "c").unwrap();
        assert_eq!(
            (t.status, t.finish_reason, t.source),
            (TaskStatus::Stopped, Some(FinishReason::Exception), Source::Callback)
        );
        let s = r.stats(1).unwrap();
        assert_eq!(
            (s.started_total, s.finished(FinishReason::Exception), s.exceptions_total),
            (1, 1, 2)
        );
        // The callback-ended task wants its final read; a stale PUSHING reply is not it.
        assert_eq!(r.next_to_poll(&[1], None).map(|k| k.1).as_deref(), Some("c"));
        r.observe_poll(1, "c", &obs(TaskStatus::Pushing));
        r.finish_poll(1, "c", Instant::now());
        assert!(r.get(1, "c").unwrap().is_pollable());
        r.observe_poll(
            1,
            "c",
            &Observation {
                finish_reason: Some(FinishReason::Auto),
                ..obs(TaskStatus::Stopped)
            },
        );
        let t = r.get(1, "c").unwrap();
        assert!(!t.is_pollable());
        assert_eq!(
            t.finish_reason,
            Some(FinishReason::Exception),
            "the first reason is kept"
        );
    }

    /// The poll order index holds exactly the pollable tasks that are not in flight.
    #[test]
    fn poll_queue_stays_consistent() {
        let r = TaskRegistry::new();
        let check = |r: &TaskRegistry| {
            let inner = r.lock();
            let expected: std::collections::BTreeSet<OrderKey> = inner
                .tasks
                .values()
                .filter(|t| t.is_pollable() && !t.polling)
                .map(order_key)
                .collect();
            assert_eq!(inner.queue, expected);
        };
        for i in 0..20 {
            r.track(1 + i % 2, &format!("t{i}"), None, Source::Discovery);
        }
        check(&r);
        let t0 = Instant::now();
        let mut picked = vec![];
        while let Some(k) = r.next_to_poll(&[1], Some(t0)) {
            picked.push(k);
        }
        assert_eq!(picked.len(), 10);
        check(&r);
        for (i, (app, id)) in picked.iter().enumerate() {
            if i % 3 == 0 {
                r.observe_poll(
                    *app,
                    id,
                    &Observation {
                        finish_reason: Some(FinishReason::Auto),
                        ..obs(TaskStatus::Stopped)
                    },
                );
            }
            r.finish_poll(*app, id, t0 + Duration::from_millis(i as u64));
        }
        check(&r);
        r.observe_callback(
            2,
            "t1",
            PushEvent::Stopped,
            &Observation {
                finish_reason: Some(FinishReason::Exception),
                ..obs(TaskStatus::Stopped)
            },
        );
        r.observe_callback(2, "fresh", PushEvent::Started, &obs(TaskStatus::Pushing));
        check(&r);
        assert_eq!(r.next_to_poll(&[2], None).map(|k| k.1).as_deref(), Some("fresh"));
        r.mark_not_found(2, "t1");
        r.clear_polling();
        check(&r);
        r.expire(Duration::ZERO);
        r.remove_app(2);
        check(&r);
    }

    #[test]
    fn expiry_removes_and_tombstones() {
        let r = TaskRegistry::new();
        r.track(1, "e", None, Source::Discovery);
        r.observe_poll(
            1,
            "e",
            &Observation {
                finish_reason: Some(FinishReason::Auto),
                ..obs(TaskStatus::Stopped)
            },
        );
        assert_eq!(r.expire(Duration::from_secs(3600)), 0);
        assert_eq!(r.expire(Duration::ZERO), 1);
        assert!(r.get(1, "e").is_none());
        assert!(
            !r.track(1, "e", None, Source::Discovery),
            "an expired task must not come back"
        );
        assert_eq!(r.stats(1).unwrap().finished(FinishReason::Auto), 1);
    }
}
