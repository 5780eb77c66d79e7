//! The task registry: every tracked push task, what the API confirmed and what callbacks claim,
//! and the per-app aggregates.
//!
//! This is the single source of truth. Two kinds of report reach it:
//! - **answers** of DescribeWhiteboardPush (the truth): folded into a task's `confirmed` facts,
//!   which only move forward (an ended task never reopens, ExceptionCnt never decreases);
//! - **claims** of callbacks: TIW's Sign covers only the key and ExpireTime, so a callback body is a
//!   claim until the API confirms it (design §3). A claim shows at once on the per-task series and asks
//!   for a confirming poll; that poll's answer wins, and a claim it contradicts is dropped.
//!
//! Aggregate counters move exactly once per task, and only on confirmed facts — or on a claim that
//! the app's API could not confirm for `callback.confirm_timeout` ([`TaskRegistry::settle_claims`]).
//! The metrics collector reads the registry under a short lock at scrape time.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub use crate::task::{
    is_task_id, plausible, unix_now, Answer, Facts, Failure, FinishReason, PushEvent, TaskStatus, DEFAULT_MAX_TASKS,
    MAX_TASK_ID,
};

mod apply;
mod journal;
mod record;
mod schedule;
#[cfg(test)]
mod tests;

use journal::Journal;
pub use journal::{Batch, Restored};
pub use record::{push_escaped, AppStats, Claim, DurationHistogram, LabelCache, RenderedLabels, Shown, Source, Task};
use schedule::{finished_key, Schedule};

/// How long an expired task id is remembered, so that discovery (which sees 3 days back) cannot
/// bring it back and count it a second time.
pub const TOMBSTONE_TTL: Duration = Duration::from_secs(4 * 24 * 3600);

/// Tasks only a callback named, not yet confirmed by the API, tracked at most per app unless
/// `callback.max_unconfirmed_tasks` says otherwise. Tencent runs
/// at most 100 push tasks per app at once (design §2), so a real app's starts and stops while its
/// first reads are pending fit twice over; past it a new id is answered 503, and TIW's own retries
/// keep a real event. Such tasks do not count against `retention.max_tasks`.
pub const MAX_UNCONFIRMED_PER_APP: usize = 200;
/// Task ids Tencent answered TaskNotFound for and that were dropped, remembered at most (oldest
/// forgotten first) so that a made-up id sent again costs no API call.
pub const MAX_REFUTED: usize = 10_000;
/// How long a dropped id is remembered.
pub const REFUTED_TTL: Duration = Duration::from_secs(6 * 3600);
/// How far from the time a claim arrives its PushStartTime and PushStopTime may lie: a class of up
/// to two days, a sender's clock a few minutes ahead. Times outside are dropped from the claim (a
/// forged 4294967295 never shows or counts); the API's own figures are taken as they are.
const CLAIM_PAST: f64 = 2.0 * 24.0 * 3600.0;
const CLAIM_FUTURE: f64 = 600.0;

/// Upper bounds (seconds) of `tiw_push_duration_seconds`: from failed starts to half-day classes.
pub const DURATION_BUCKETS: [f64; 14] = [
    10.0, 30.0, 60.0, 300.0, 600.0, 1200.0, 1800.0, 2700.0, 3600.0, 5400.0, 7200.0, 10800.0, 14400.0, 21600.0,
];

/// `InvalidParameter.TaskNotFound` answers in a row after which a task is dropped (or, if
/// configured, read only once per discovery interval) (design §2).
pub const NOT_FOUND_LIMIT: u8 = 3;
/// How often a PREPARED task is read until the poller says otherwise (the default `poll.interval`).
const DEFAULT_PREPARED_EVERY: Duration = Duration::from_secs(15);
/// Success replies without `Status` in a row after which a task has failed (design §2).
pub const NO_STATUS_LIMIT: usize = 3;

/// How a callback was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackApplied {
    /// First delivery: its claim is recorded and a confirming poll is owed.
    Accepted {
        /// The claim ended the task (as shown).
        ended: bool,
    },
    /// This event was applied before, or its task has expired: nothing changed.
    Duplicate,
    /// Tencent answered TaskNotFound for this id 3 times and it was dropped: a made-up id, sent
    /// again. Nothing changed and no API call is made (`outcome="contradicted"`).
    Refuted,
    /// A new task, and `retention.max_tasks` tasks are tracked, none of them ended: refused.
    Full,
}

/// Whether [`TaskRegistry::track`] took a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Track {
    /// Newly tracked.
    Added,
    /// Tracked already, or expired recently (a tombstone).
    Known,
    /// `retention.max_tasks` reached: not tracked.
    Full,
}

/// What one answer did to its task.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AnswerApplied {
    /// The answer ended the task, with this reason.
    pub ended: Option<FinishReason>,
    /// The answer contradicted this callback's claim (`outcome="contradicted"`), and what the claim said.
    pub contradicted: Option<(PushEvent, TaskStatus, Option<FinishReason>)>,
    /// The task failed after [`NO_STATUS_LIMIT`] replies without `Status`: their RequestIds.
    pub failed_without_status: Option<Vec<String>>,
    /// Dropped after [`NOT_FOUND_LIMIT`] TaskNotFound answers (`tasks_dropped_total{reason="not_found"}`).
    pub dropped: bool,
    /// A configured task Tencent does not know: read again at most once per discovery interval.
    pub parked: bool,
    /// What the task shows after the answer, for the log line of an end: its room, how long it
    /// pushed, and its exceptions (so the poller needs no second look at the registry).
    pub room_id: Option<i64>,
    pub duration: Option<f64>,
    pub exceptions: u64,
}

/// Read-only view handed to the collector.
pub struct View<'a> {
    inner: MutexGuard<'a, Inner>,
}

impl View<'_> {
    /// Tasks of the configured apps (a reload that leaves an app out hides it; its state stays).
    pub fn tasks(&self) -> impl Iterator<Item = &Task> {
        self.inner
            .tasks
            .values()
            .map(|t| &**t)
            .filter(|t| self.inner.shown(t.sdk_app_id))
    }
    /// Aggregates of the configured apps.
    pub fn apps(&self) -> impl Iterator<Item = (&u64, &AppStats)> {
        self.inner.apps.iter().filter(|(id, _)| self.inner.shown(**id))
    }
    /// Tracked tasks per app and status, every configured app and every status present.
    pub fn status_counts(&self) -> BTreeMap<u64, [u64; 5]> {
        self.inner.status_counts()
    }
    pub fn len(&self) -> usize {
        self.tasks().count()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What [`TaskRegistry::render_snapshot`] copies out for a scrape.
pub struct RenderSnapshot<R> {
    pub rows: Vec<R>,
    /// Tracked tasks per shown app and status (every shown app present); empty when the
    /// snapshot has rows (count them from the rows).
    pub counts: BTreeMap<u64, [u64; 5]>,
    /// Every shown app's aggregates, by app.
    pub apps: Vec<(u64, AppStats)>,
}

/// A task's identity: SdkAppId and TaskId.
pub type Key = (u64, String);

struct Inner {
    /// Boxed: the table is sized in powers of two, so its empty buckets cost a pointer, not a task.
    tasks: HashMap<Key, Box<Task>>,
    apps: BTreeMap<u64, AppStats>,
    /// Expired task ids and when they expired (unix seconds).
    tombstones: HashMap<Key, f64>,
    /// Changes since the store last took a batch.
    journal: Journal,
    /// Which task is read next (see [`Schedule`]).
    schedule: Schedule,
    /// Tasks whose end the API confirmed, oldest end first: the first to go when the registry is full.
    finished: BTreeSet<(u64, Key)>,
    /// Bumped by every callback claim and read by every poll handed out.
    seq: u64,
    /// `retention.max_tasks`.
    max_tasks: usize,
    /// `callback.max_unconfirmed_tasks`.
    max_unconfirmed: usize,
    /// Every task only a callback named and the API has not confirmed, per app, queued or not.
    unconfirmed: HashMap<u64, HashSet<String>>,
    /// Every task per app, and the tasks with a pending claim per app (see [`Inner::sync`]).
    by_app: HashMap<u64, HashSet<String>>,
    claimed: HashMap<u64, HashSet<String>>,
    unconfirmed_total: usize,
    /// Ids dropped after TaskNotFound, with when, oldest first (bounded by [`MAX_REFUTED`]).
    refuted: crate::task::Refuted,
    /// When the last "registry full" warning was logged.
    last_full_warning: Option<Instant>,
    /// The apps of the configuration in force (`None`: every app). Others are kept, not shown.
    configured: Option<BTreeSet<u64>>,
}

impl Inner {
    fn new(max_tasks: usize) -> Inner {
        Inner {
            tasks: HashMap::new(),
            apps: BTreeMap::new(),
            tombstones: HashMap::new(),
            journal: Journal::default(),
            schedule: Schedule::new(DEFAULT_PREPARED_EVERY),
            finished: BTreeSet::new(),
            seq: 0,
            max_tasks,
            max_unconfirmed: MAX_UNCONFIRMED_PER_APP,
            unconfirmed: HashMap::new(),
            by_app: HashMap::new(),
            claimed: HashMap::new(),
            unconfirmed_total: 0,
            refuted: Default::default(),
            last_full_warning: None,
            configured: None,
        }
    }

    /// Whether an app's series are shown: it is in the configuration in force.
    fn shown(&self, sdk_app_id: u64) -> bool {
        self.configured.as_ref().is_none_or(|c| c.contains(&sdk_app_id))
    }

    /// Tracked tasks per shown app and status, every shown app and every status present.
    fn status_counts(&self) -> BTreeMap<u64, [u64; 5]> {
        let mut counts: BTreeMap<u64, [u64; 5]> = self
            .apps
            .keys()
            .filter(|id| self.shown(**id))
            .map(|id| (*id, [0; 5]))
            .collect();
        for t in self.tasks.values().filter(|t| self.shown(t.sdk_app_id)) {
            counts.entry(t.sdk_app_id).or_insert([0; 5])[t.shown().status().index()] += 1;
        }
        counts
    }

    fn queued(t: &Task) -> bool {
        t.is_pollable() && !t.poll.polling && t.poll.parked_until.is_none()
    }

    /// Brings everything derived from the task (or its absence) in step with it: its place in
    /// the poll order ([`Inner::file`]) and the per-app indexes (the app's tasks, its tasks with a
    /// pending claim, its unconfirmed callback-only tasks), so that a pick and the per-pass work
    /// (settling claims, following the running list) cost what they touch, not the whole fleet.
    /// Every method that changes a task calls it once, after the change; nothing is taken out
    /// before.
    fn sync(&mut self, key: &Key) {
        let task = self.tasks.get(key);
        let (exists, claimed) = (task.is_some(), task.is_some_and(|t| t.claim.is_some()));
        for (index, member) in [(&mut self.by_app, exists), (&mut self.claimed, claimed)] {
            if member {
                index.entry(key.0).or_default().insert(key.1.clone());
            } else if let Some(set) = index.get_mut(&key.0) {
                set.remove(&key.1);
                if set.is_empty() {
                    index.remove(&key.0);
                }
            }
        }
        let unconfirmed = self.tasks.get(key).is_some_and(|t| t.in_claims_lane());
        let set = self.unconfirmed.entry(key.0).or_default();
        let changed = if unconfirmed {
            set.insert(key.1.clone())
        } else {
            set.remove(&key.1)
        };
        if set.is_empty() {
            self.unconfirmed.remove(&key.0);
        }
        if changed {
            if unconfirmed {
                self.unconfirmed_total += 1;
            } else {
                self.unconfirmed_total -= 1;
            }
        }
        self.file(key);
    }

    fn unconfirmed_of(&self, sdk_app_id: u64) -> usize {
        self.unconfirmed.get(&sdk_app_id).map_or(0, HashSet::len)
    }

    /// Remembers an id Tencent does not know, forgetting the oldest past [`MAX_REFUTED`].
    fn refute(&mut self, key: Key, now: f64) {
        self.refuted.insert(key, now, (MAX_REFUTED, REFUTED_TTL.as_secs_f64()));
    }

    /// Whether `key` was dropped after TaskNotFound within [`REFUTED_TTL`].
    fn is_refuted(&self, key: &Key, now: f64) -> bool {
        self.refuted.contains(key, now, REFUTED_TTL.as_secs_f64())
    }

    /// Whether an entry of the `finished` index still describes its task: an end counted on a
    /// claim's word that the API later contradicted leaves a stale entry behind, skipped here.
    fn finished_entry_current(&self, entry: &(u64, Key)) -> bool {
        self.tasks
            .get(&entry.1)
            .is_some_and(|t| (t.final_read || t.settled) && finished_key(t).as_ref() == Some(entry))
    }

    fn touch(&mut self, key: &Key) {
        self.journal.task(key);
    }

    /// Removes a task from everything; a tombstone keeps it from coming back when `tombstone`.
    fn remove_task(&mut self, key: &Key, tombstone: Option<f64>) -> Option<Task> {
        self.refile(key, None);
        let t = *self.tasks.remove(key)?;
        if let Some(k) = finished_key(&t) {
            self.finished.remove(&k);
        }
        if let Some(until) = t.poll.parked_until {
            self.schedule.parked.remove(&(until, key.clone()));
        }
        self.journal.removed(key, tombstone);
        self.sync(key);
        if let Some(at) = tombstone {
            self.tombstones.insert(key.clone(), at);
        }
        Some(t)
    }

    /// Room for one more task: when full, the task whose confirmed end is oldest goes (as if
    /// retention had expired it). False when every tracked task is still running.
    ///
    /// Tasks only a callback named and the API has not confirmed are bounded per app
    /// ([`MAX_UNCONFIRMED_PER_APP`]) and do not count here: a flood of made-up ids at one app can
    /// neither refuse another app's tasks nor evict an ended one.
    fn make_room(&mut self, now: f64) -> bool {
        let tracked = |inner: &Inner| inner.tasks.len() - inner.unconfirmed_total;
        if tracked(self) < self.max_tasks {
            return true;
        }
        while tracked(self) >= self.max_tasks {
            let Some(entry) = self.finished.pop_first() else {
                break;
            };
            if self.finished_entry_current(&entry) {
                self.remove_task(&entry.1, Some(now));
            }
        }
        if tracked(self) < self.max_tasks {
            return true;
        }
        let warn = self
            .last_full_warning
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(60));
        if warn {
            self.last_full_warning = Some(Instant::now());
            tracing::warn!(
                max_tasks = self.max_tasks,
                "retention.max_tasks unfinished tasks are tracked: new tasks are refused (callbacks answered 503 so TIW retries) until some end; raise retention.max_tasks if this fleet is real"
            );
        }
        false
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
        TaskRegistry::with_max_tasks(DEFAULT_MAX_TASKS)
    }
}

impl TaskRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry that tracks at most `max_tasks` tasks (`retention.max_tasks`).
    pub fn with_max_tasks(max_tasks: usize) -> Self {
        TaskRegistry {
            inner: Mutex::new(Inner::new(max_tasks.max(1))),
            poll_wanted: tokio::sync::watch::channel(0).0,
        }
    }

    /// How often a task the API last answered PREPARED is read again, whatever the round robin's
    /// length (the poller sets `poll.interval`).
    pub fn set_prepared_reread(&self, every: Duration) {
        self.lock().schedule.prepared_every = every;
    }

    /// A reload changed `retention.max_tasks`; tasks beyond a lower bound are not evicted.
    pub fn set_max_tasks(&self, max_tasks: usize) {
        self.lock().max_tasks = max_tasks.max(1);
    }

    /// `callback.max_unconfirmed_tasks`: tasks only callbacks named that wait for the API's
    /// confirmation, per app. A lower bound evicts none; new ones are refused until it is met.
    pub fn set_max_unconfirmed(&self, max: usize) {
        self.lock().max_unconfirmed = max.max(1);
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
                inner.journal.apps();
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
            task.poll.needs_poll = !task.final_read;
            inner.apps.entry(task.sdk_app_id).or_default();
            let key = (task.sdk_app_id, task.task_id.clone());
            let final_read = task.final_read;
            let settled = task.settled && task.shown().status().is_ended();
            inner.tasks.insert(key.clone(), Box::new(task));
            if final_read {
                inner.set_final(&key);
            } else if settled {
                inner.set_settled(&key);
            }
            inner.sync(&key);
        }
        inner.tombstones.extend(restored.tombstones);
        drop(inner);
        self.want_poll();
    }

    /// The apps of the configuration in force: they get aggregates, and only they are shown.
    /// An app left out keeps its tasks and counters, here and in the store, unchanged (not
    /// polled, not expired), and shows them again when a later configuration lists it (design §5).
    /// Forgetting an app is a deliberate act on a stopped exporter (`state forget`).
    pub fn set_configured(&self, apps: impl IntoIterator<Item = u64>) {
        let apps: BTreeSet<u64> = apps.into_iter().collect();
        let mut inner = self.lock();
        for id in &apps {
            if let std::collections::btree_map::Entry::Vacant(e) = inner.apps.entry(*id) {
                e.insert(AppStats::default());
                inner.journal.apps();
            }
        }
        inner.configured = Some(apps);
    }

    /// Apps the registry holds state for that the configuration in force leaves out.
    pub fn hidden_apps(&self) -> Vec<(u64, usize)> {
        let inner = self.lock();
        inner
            .apps
            .keys()
            .filter(|id| !inner.shown(**id))
            .map(|id| (*id, inner.tasks.keys().filter(|k| k.0 == *id).count()))
            .collect()
    }

    /// Starts tracking a task (`room_id` as DescribeRunningTasks lists it). A configured id is
    /// marked as configured even when it was tracked already.
    pub fn track(&self, sdk_app_id: u64, task_id: &str, room_id: Option<i64>, source: Source) -> Track {
        // A task tracked from discovery was listed queued or running (see `track_listed`).
        self.track_as(sdk_app_id, task_id, room_id, source, source == Source::Discovery)
    }

    /// [`TaskRegistry::track`] for a task DescribeRunningTasks lists, `running` unless it is listed
    /// FINISHED: a task seen queued or running is never history, whatever its first read says.
    pub fn track_listed(&self, sdk_app_id: u64, task_id: &str, room_id: Option<i64>, running: bool) -> Track {
        self.track_as(sdk_app_id, task_id, room_id, Source::Discovery, running)
    }

    fn track_as(&self, sdk_app_id: u64, task_id: &str, room_id: Option<i64>, source: Source, running: bool) -> Track {
        let key = (sdk_app_id, task_id.to_string());
        let now = unix_now();
        {
            let mut inner = self.lock();
            if source != Source::Callback {
                // The API's own list (or the operator) names it: not a made-up id after all.
                inner.refuted.remove(&key);
            }
            if let Some(t) = inner.tasks.get_mut(&key) {
                let mut changed = false;
                if running && !t.listed_running {
                    t.listed_running = true;
                    changed = true;
                }
                // Listed by DescribeRunningTasks, a task only a callback named leaves the lane of
                // claims: its first read goes ahead like any discovered task's.
                let promote = source == Source::Config || (source == Source::Discovery && t.source == Source::Callback);
                if promote && t.source != source {
                    t.source = source;
                    changed = true;
                }
                if let (None, Some(room)) = (t.confirmed().room_id, room_id) {
                    t.confirmed_mut().room_id = Some(room);
                    t.refresh(now);
                    changed = true;
                }
                if changed {
                    inner.touch(&key);
                }
                inner.sync(&key);
                return Track::Known;
            }
            if inner.tombstones.contains_key(&key) {
                return Track::Known;
            }
            if !inner.make_room(now) {
                return Track::Full;
            }
            let mut task = Task::new(sdk_app_id, task_id.to_string(), source, now);
            task.listed_running = running;
            task.confirmed_mut().room_id = room_id;
            task.refresh(now);
            inner.apps.entry(sdk_app_id).or_default();
            inner.touch(&key);
            inner.tasks.insert(key.clone(), Box::new(task));
            inner.sync(&key);
        }
        self.want_poll();
        Track::Added
    }

    /// Removes tasks whose confirmed end is older than `retention` and forgets old tombstones.
    pub fn expire(&self, retention: Duration) -> usize {
        let now = unix_now();
        let mut inner = self.lock();
        let cutoff = ((now - retention.as_secs_f64()).max(0.0) * 1000.0) as u64;
        // An app left out of the configuration keeps its tasks as they were until it returns.
        let due: Vec<(u64, Key)> = inner
            .finished
            .iter()
            .take_while(|(ended, _)| *ended <= cutoff)
            .filter(|(_, key)| inner.shown(key.0))
            .cloned()
            .collect();
        let mut expired = 0;
        for entry in due {
            inner.finished.remove(&entry);
            if inner.finished_entry_current(&entry) {
                inner.remove_task(&entry.1, Some(now));
                expired += 1;
            }
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
            inner.journal.pruned(key);
        }
        expired
    }

    /// A short-lived read lock for rendering.
    pub fn view(&self) -> View<'_> {
        View { inner: self.lock() }
    }

    /// What a scrape needs, under one short lock: a row per shown task (`row` may fill the task's
    /// [`LabelCache`]; with `per_task` false, none) and a copy of every shown app's aggregates.
    /// With rows, the tracked tasks per app and status are left for the caller to count from
    /// them after the lock is released; without, they are counted here. Sorting, rendering and
    /// compressing happen after the lock is released, so that a scrape never holds callbacks and
    /// polls back for long.
    pub fn render_snapshot<R>(&self, per_task: bool, mut row: impl FnMut(&mut Task) -> R) -> RenderSnapshot<R> {
        let mut inner = self.lock();
        let counts = if per_task {
            BTreeMap::new()
        } else {
            inner.status_counts()
        };
        let apps = inner
            .apps
            .iter()
            .filter(|(id, _)| inner.shown(**id))
            .map(|(id, s)| (*id, s.clone()))
            .collect();
        let mut rows = Vec::new();
        if per_task {
            let Inner { tasks, configured, .. } = &mut *inner;
            rows.reserve_exact(tasks.len());
            match &*configured {
                // Every app shown: nothing to look up per task.
                None => rows.extend(tasks.values_mut().map(|t| row(t))),
                Some(c) => rows.extend(tasks.values_mut().filter(|t| c.contains(&t.sdk_app_id)).map(|t| row(t))),
            }
        }
        RenderSnapshot { rows, counts, apps }
    }

    /// A copy of every task (sorted by app and id) and every app's aggregates.
    pub fn snapshot(&self) -> (Vec<Task>, BTreeMap<u64, AppStats>) {
        let inner = self.lock();
        let mut tasks: Vec<Task> = inner.tasks.values().map(|t| (**t).clone()).collect();
        tasks.sort_by(|a, b| (a.sdk_app_id, &a.task_id).cmp(&(b.sdk_app_id, &b.task_id)));
        (tasks, inner.apps.clone())
    }

    /// Whether the registry tracks `task_id` of `sdk_app_id`, or did until it expired recently.
    pub fn knows(&self, sdk_app_id: u64, task_id: &str) -> bool {
        let key = (sdk_app_id, task_id.to_string());
        let inner = self.lock();
        inner.tasks.contains_key(&key) || inner.tombstones.contains_key(&key)
    }

    /// A copy of one task.
    pub fn get(&self, sdk_app_id: u64, task_id: &str) -> Option<Task> {
        self.lock()
            .tasks
            .get(&(sdk_app_id, task_id.to_string()))
            .map(|t| (**t).clone())
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
