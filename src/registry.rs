//! The task registry: every tracked push task, what the API confirmed and what callbacks claim,
//! and the per-app aggregates.
//!
//! This is the single source of truth. Two kinds of report reach it:
//! - **answers** of DescribeWhiteboardPush (the truth): folded into a task's `confirmed` facts,
//!   which only move forward (an ended task never reopens, ExceptionCnt never decreases);
//! - **claims** of callbacks: TIW's Sign covers only the key and ExpireTime, so a callback body is a
//!   claim until the API confirms it (SPEC §3). A claim shows at once on the per-task series and asks
//!   for a confirming poll; that poll's answer wins, and a claim it contradicts is dropped.
//!
//! Aggregate counters move exactly once per task, and only on confirmed facts — or on a claim that
//! the app's API could not confirm for `callback.confirm_timeout` ([`TaskRegistry::settle_claims`]).
//! The metrics collector reads the registry under a short lock at scrape time.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub use crate::task::{is_task_id, plausible, unix_now, FinishReason, Observation, PushEvent, TaskStatus, MAX_TASK_ID};

/// How long an expired task id is remembered, so that discovery (which sees 3 days back) cannot
/// bring it back and count it a second time.
pub const TOMBSTONE_TTL: Duration = Duration::from_secs(4 * 24 * 3600);

/// Upper bounds (seconds) of `tiw_push_duration_seconds`: from failed starts to half-day classes.
pub const DURATION_BUCKETS: [f64; 14] = [
    10.0, 30.0, 60.0, 300.0, 600.0, 1200.0, 1800.0, 2700.0, 3600.0, 5400.0, 7200.0, 10800.0, 14400.0, 21600.0,
];

/// `retention.max_tasks` unless set (SPEC §5).
pub const DEFAULT_MAX_TASKS: usize = 100_000;
/// `InvalidParameter.TaskNotFound` answers in a row after which a task is dropped (or, if
/// configured, read only once per discovery interval) (SPEC §2).
pub const NOT_FOUND_LIMIT: u8 = 3;
/// Success replies without `Status` in a row after which a task has failed (SPEC §2).
pub const NO_STATUS_LIMIT: usize = 3;

/// Where the exporter first heard of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Source {
    Config,
    Discovery,
    Callback,
}

/// What is known of a task from one side (the API's answers, or the callbacks' claims).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Facts {
    pub status: TaskStatus,
    pub finish_reason: Option<FinishReason>,
    pub room_id: Option<i64>,
    pub group_id: Option<String>,
    pub push_user_id: Option<String>,
    pub push_start_time: Option<i64>,
    pub push_stop_time: Option<i64>,
    pub exception_cnt: Option<u64>,
    pub im_sync_time: Option<i64>,
}

impl Facts {
    /// Folds one report in: identities and times are kept as first known, the status only moves
    /// forward (taking the report's finish reason when it ends), ExceptionCnt never decreases.
    fn absorb(&mut self, obs: &Observation) {
        fn first<T: Clone>(slot: &mut Option<T>, v: Option<&T>) {
            if slot.is_none() {
                *slot = v.cloned();
            }
        }
        first(&mut self.room_id, obs.room_id.filter(|r| *r != 0).as_ref());
        first(&mut self.group_id, obs.group_id.as_ref().filter(|g| !g.is_empty()));
        first(
            &mut self.push_user_id,
            obs.push_user_id.as_ref().filter(|u| !u.is_empty()),
        );
        first(
            &mut self.push_start_time,
            obs.push_start_time.filter(|s| *s > 0).as_ref(),
        );
        first(&mut self.push_stop_time, obs.push_stop_time.filter(|s| *s > 0).as_ref());
        first(&mut self.im_sync_time, obs.im_sync_time.filter(|s| *s > 0).as_ref());
        if let Some(n) = obs.exception_cnt {
            self.exception_cnt = Some(self.exception_cnt.map_or(n, |old| old.max(n)));
        }
        if let Some(status) = obs.status {
            if status.rank() > self.status.rank() {
                self.status = status;
                if status.is_ended() {
                    self.finish_reason = Some(match status {
                        TaskStatus::Failed => FinishReason::Failed,
                        _ => obs
                            .finish_reason
                            .filter(|r| *r != FinishReason::Failed)
                            .unwrap_or(FinishReason::Other),
                    });
                }
            }
        }
    }
}

/// What callbacks said about a task that the API has not confirmed yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    pub facts: Facts,
    /// Unix seconds of the latest callback in the claim.
    pub at: f64,
    /// Registry sequence number of the latest callback: a poll handed out at or after it answers it.
    #[serde(skip)]
    seq: u64,
}

/// Which counters a task has moved already, so that each moves once per task.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Counted {
    started: bool,
    finished: bool,
    /// ExceptionCnt already added to `exceptions_total`.
    exceptions: u64,
}

/// One tracked task. Everything but the poller's bookkeeping is persisted by the store.
///
/// The public status and figures are what `/metrics` shows: the confirmed facts, overlaid by a
/// pending claim where the claim is ahead ([`Task::refresh`]).
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
    /// What DescribeWhiteboardPush answered (`None` only in a store written before claims existed).
    #[serde(default)]
    confirmed: Option<Facts>,
    /// What callbacks claim and the API has not confirmed yet.
    #[serde(default)]
    pub claim: Option<Claim>,
    #[serde(default)]
    counted: Counted,
    /// A WhiteboardPushStarted / WhiteboardPushStopped callback was applied: later copies are duplicates.
    seen_started_event: bool,
    seen_stopped_event: bool,
    /// The API confirmed the end: never poll again.
    final_read: bool,
    /// `InvalidParameter.TaskNotFound` answers in a row.
    #[serde(default)]
    not_found: u8,
    /// RequestIds of success replies without `Status`, in a row.
    #[serde(default)]
    no_status: Vec<String>,
    /// Stores written before claims existed kept these instead of [`Counted`].
    #[serde(default, skip_serializing)]
    started_counted: bool,
    #[serde(default, skip_serializing)]
    finished_counted: bool,
    /// A poll is owed soon: the task is new, or a claim waits for its confirming poll.
    #[serde(skip)]
    needs_poll: bool,
    #[serde(skip)]
    polling: bool,
    #[serde(skip)]
    last_polled: Option<Instant>,
    /// Registry sequence number when the poll in flight was handed out.
    #[serde(skip)]
    poll_seq: u64,
    /// A configured task Tencent does not know: not read again before this.
    #[serde(skip)]
    parked_until: Option<Instant>,
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
            confirmed: Some(Facts::default()),
            claim: None,
            counted: Counted::default(),
            seen_started_event: false,
            seen_stopped_event: false,
            final_read: false,
            not_found: 0,
            no_status: Vec::new(),
            started_counted: false,
            finished_counted: false,
            needs_poll: true,
            polling: false,
            last_polled: None,
            poll_seq: 0,
            parked_until: None,
        }
    }

    /// Whether the poller should still read this task.
    pub fn is_pollable(&self) -> bool {
        !self.final_read
    }

    /// Push duration, stop − start, of an ended task (SPEC §4: a running task's age is
    /// `time() - tiw_push_task_start_timestamp_seconds`, not a series of its own).
    pub fn duration(&self) -> Option<f64> {
        if !self.status.is_ended() {
            return None;
        }
        let start = self.push_start_time.filter(|s| *s > 0)?;
        let stop = self.push_stop_time.filter(|s| *s > 0)?;
        Some((stop - start).max(0) as f64)
    }

    /// What the API confirmed.
    pub fn confirmed(&self) -> &Facts {
        const NOTHING: &Facts = &Facts {
            status: TaskStatus::Unknown,
            finish_reason: None,
            room_id: None,
            group_id: None,
            push_user_id: None,
            push_start_time: None,
            push_stop_time: None,
            exception_cnt: None,
            im_sync_time: None,
        };
        self.confirmed.as_ref().unwrap_or(NOTHING)
    }

    fn confirmed_mut(&mut self) -> &mut Facts {
        self.confirmed.get_or_insert_with(Facts::default)
    }

    /// Recomputes what is shown from the confirmed facts and a pending claim: the claim's status
    /// where it is ahead, the claim's figures where nothing confirmed says otherwise.
    fn refresh(&mut self, now: f64) {
        let c = self.confirmed().clone();
        let claim = self.claim.as_ref().map(|c| &c.facts);
        let ahead = claim.filter(|f| f.status.rank() > c.status.rank());
        (self.status, self.finish_reason) = match ahead {
            Some(f) => (f.status, f.finish_reason),
            None => (c.status, c.finish_reason),
        };
        let or_claim_i64 = |mine: Option<i64>, pick: fn(&Facts) -> Option<i64>| mine.or_else(|| claim.and_then(pick));
        self.room_id = or_claim_i64(c.room_id, |f| f.room_id);
        self.push_start_time = or_claim_i64(c.push_start_time, |f| f.push_start_time);
        self.push_stop_time = or_claim_i64(c.push_stop_time, |f| f.push_stop_time);
        self.im_sync_time = or_claim_i64(c.im_sync_time, |f| f.im_sync_time);
        self.group_id = c
            .group_id
            .clone()
            .or_else(|| claim.and_then(|f| f.group_id.clone()))
            .unwrap_or_default();
        self.push_user_id = c
            .push_user_id
            .clone()
            .or_else(|| claim.and_then(|f| f.push_user_id.clone()))
            .unwrap_or_default();
        self.exception_cnt = c
            .exception_cnt
            .unwrap_or(0)
            .max(claim.and_then(|f| f.exception_cnt).unwrap_or(0));
        if self.status.is_ended() {
            self.ended_at.get_or_insert(now);
        } else {
            self.ended_at = None;
        }
    }

    /// The facts as shown, for counting a claim that could not be confirmed.
    fn shown(&self) -> Facts {
        Facts {
            status: self.status,
            finish_reason: self.finish_reason,
            room_id: self.room_id,
            group_id: Some(self.group_id.clone()),
            push_user_id: Some(self.push_user_id.clone()),
            push_start_time: self.push_start_time,
            push_stop_time: self.push_stop_time,
            exception_cnt: Some(self.exception_cnt),
            im_sync_time: self.im_sync_time,
        }
    }

    /// Moves the app's counters by what `facts` add to what this task counted; each counter moves
    /// once per task, ExceptionCnt by its increase. Returns whether anything moved.
    fn count(&mut self, facts: &Facts, stats: &mut AppStats) -> bool {
        let mut moved = false;
        let started = facts.status == TaskStatus::Pushing
            || (facts.status == TaskStatus::Stopped && facts.push_start_time.is_some());
        if started && !self.counted.started {
            self.counted.started = true;
            stats.started_total += 1;
            moved = true;
        }
        if let Some(n) = facts.exception_cnt.filter(|n| *n > self.counted.exceptions) {
            stats.exceptions_total += n - self.counted.exceptions;
            self.counted.exceptions = n;
            moved = true;
        }
        if facts.status.is_ended() && !self.counted.finished {
            let reason = facts.finish_reason.unwrap_or(FinishReason::Other);
            self.counted.finished = true;
            stats.finished_total[reason.index()] += 1;
            if let (Some(start), Some(stop)) = (facts.push_start_time, facts.push_stop_time) {
                stats.durations[reason.index()].observe((stop - start).max(0) as f64);
            }
            moved = true;
        }
        moved
    }

    /// A task from a store written before claims existed: what it showed was confirmed and counted.
    fn migrate(&mut self) {
        if self.confirmed.is_some() {
            return;
        }
        self.confirmed = Some(Facts {
            status: self.status,
            finish_reason: self.finish_reason,
            room_id: self.room_id,
            group_id: Some(self.group_id.clone()).filter(|g| !g.is_empty()),
            push_user_id: Some(self.push_user_id.clone()).filter(|u| !u.is_empty()),
            push_start_time: self.push_start_time,
            push_stop_time: self.push_stop_time,
            exception_cnt: Some(self.exception_cnt),
            im_sync_time: self.im_sync_time,
        });
        self.counted = Counted {
            started: self.started_counted,
            finished: self.finished_counted,
            exceptions: self.exception_cnt,
        };
        if self.status.is_ended() && self.finish_reason.is_none() {
            self.final_read = false;
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
    /// Indexed by [`FinishReason`]; stores from before `OTHER` hold four entries.
    #[serde(deserialize_with = "padded")]
    pub finished_total: [u64; 5],
    pub exceptions_total: u64,
    /// Indexed by [`FinishReason`].
    #[serde(deserialize_with = "padded")]
    pub durations: [DurationHistogram; 5],
}

/// A fixed-size array from a list that may be shorter (a reason added since it was written).
fn padded<'de, D, T, const N: usize>(d: D) -> Result<[T; N], D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    let items: Vec<T> = Vec::deserialize(d)?;
    if items.len() > N {
        return Err(serde::de::Error::invalid_length(
            items.len(),
            &"at most one entry per reason",
        ));
    }
    let mut items = items.into_iter();
    Ok(std::array::from_fn(|_| items.next().unwrap_or_default()))
}

impl AppStats {
    pub fn finished(&self, reason: FinishReason) -> u64 {
        self.finished_total[reason.index()]
    }
    pub fn duration(&self, reason: FinishReason) -> &DurationHistogram {
        &self.durations[reason.index()]
    }
}

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

/// One answer of DescribeWhiteboardPush, in domain terms (see `tencentcloud::tiw::PushAnswer`).
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// A reply with a status.
    State(Observation),
    /// A success reply with no `Status`, with its RequestId.
    NoStatus(String),
    /// `FailedOperation.WhiteboardPush`.
    Failed,
    /// `InvalidParameter.TaskNotFound`.
    NotFound,
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
}

/// Read-only view handed to the collector.
pub struct View<'a> {
    inner: MutexGuard<'a, Inner>,
}

impl View<'_> {
    /// Tasks of the configured apps (a reload that leaves an app out hides it; its state stays).
    pub fn tasks(&self) -> impl Iterator<Item = &Task> {
        self.inner.tasks.values().filter(|t| self.inner.shown(t.sdk_app_id))
    }
    /// Aggregates of the configured apps.
    pub fn apps(&self) -> impl Iterator<Item = (&u64, &AppStats)> {
        self.inner.apps.iter().filter(|(id, _)| self.inner.shown(**id))
    }
    /// Tracked tasks per app and status, every configured app and every status present.
    pub fn status_counts(&self) -> BTreeMap<u64, [u64; 5]> {
        let mut counts: BTreeMap<u64, [u64; 5]> = self.apps().map(|(k, _)| (*k, [0; 5])).collect();
        for t in self.tasks() {
            counts.entry(t.sdk_app_id).or_insert([0; 5])[t.status.index()] += 1;
        }
        counts
    }
    pub fn len(&self) -> usize {
        self.tasks().count()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A task's identity: SdkAppId and TaskId.
pub type Key = (u64, String);

/// Changes not yet written to the store, taken as one consistent cut under the registry lock.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    /// Tasks to write (their state at the cut).
    pub tasks: Vec<Task>,
    /// Tasks removed by retention or dropped.
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
    /// Every pollable task that is neither in flight nor parked, in poll order: wanted-now first,
    /// then never polled, then least recently polled. Picking the next task is O(log n), and ended
    /// tasks cost nothing. Invariant: a task is here, under [`order_key`], iff [`Inner::queued`].
    queue: BTreeSet<OrderKey>,
    /// Parked tasks by the time they may be read again.
    parked: BTreeSet<(Instant, Key)>,
    /// Tasks whose end the API confirmed, oldest end first: the first to go when the registry is full.
    finished: BTreeSet<(u64, Key)>,
    /// Bumped by every callback claim and read by every poll handed out.
    seq: u64,
    /// `retention.max_tasks`.
    max_tasks: usize,
    /// When the last "registry full" warning was logged.
    last_full_warning: Option<Instant>,
    /// The apps of the configuration in force (`None`: every app). Others are kept, not shown.
    configured: Option<BTreeSet<u64>>,
}

/// (not wanted now, last polled, SdkAppId, TaskId): the poll order.
type OrderKey = (bool, Option<Instant>, u64, String);

fn order_key(t: &Task) -> OrderKey {
    (!t.needs_poll, t.last_polled, t.sdk_app_id, t.task_id.clone())
}

/// Key of the `finished` index: when the task ended, in milliseconds.
fn finished_key(t: &Task) -> Option<(u64, Key)> {
    let ended = t.ended_at?;
    Some(((ended.max(0.0) * 1000.0) as u64, (t.sdk_app_id, t.task_id.clone())))
}

impl Inner {
    fn new(max_tasks: usize) -> Inner {
        Inner {
            tasks: HashMap::new(),
            apps: BTreeMap::new(),
            tombstones: HashMap::new(),
            dirty: HashSet::new(),
            apps_dirty: false,
            removed: HashSet::new(),
            apps_removed: Vec::new(),
            tombstones_added: Vec::new(),
            tombstones_pruned: Vec::new(),
            queue: BTreeSet::new(),
            parked: BTreeSet::new(),
            finished: BTreeSet::new(),
            seq: 0,
            max_tasks,
            last_full_warning: None,
            configured: None,
        }
    }

    /// Whether an app's series are shown: it is in the configuration in force.
    fn shown(&self, sdk_app_id: u64) -> bool {
        self.configured.as_ref().is_none_or(|c| c.contains(&sdk_app_id))
    }

    fn queued(t: &Task) -> bool {
        t.is_pollable() && !t.polling && t.parked_until.is_none()
    }

    /// Takes a task out of the poll order; call before changing what [`order_key`] reads.
    fn unqueue(&mut self, key: &Key) {
        if let Some(t) = self.tasks.get(key) {
            self.queue.remove(&order_key(t));
        }
    }

    /// Puts a task back in the poll order if it belongs there.
    fn requeue(&mut self, key: &Key) {
        if let Some(t) = self.tasks.get(key) {
            if Inner::queued(t) {
                self.queue.insert(order_key(t));
            }
        }
    }

    fn touch(&mut self, key: &Key) {
        self.dirty.insert(key.clone());
        self.apps_dirty = true;
    }

    /// The API confirmed the end: no more polls, and first in line when the registry is full.
    fn set_final(&mut self, key: &Key) {
        if let Some(t) = self.tasks.get_mut(key) {
            t.final_read = true;
            t.needs_poll = false;
            if let Some(k) = finished_key(t) {
                self.finished.insert(k);
            }
        }
    }

    /// Removes a task from everything; a tombstone keeps it from coming back when `tombstone`.
    fn remove_task(&mut self, key: &Key, tombstone: Option<f64>) -> Option<Task> {
        self.unqueue(key);
        let t = self.tasks.remove(key)?;
        if let Some(k) = finished_key(&t) {
            self.finished.remove(&k);
        }
        if let Some(until) = t.parked_until {
            self.parked.remove(&(until, key.clone()));
        }
        self.dirty.remove(key);
        self.removed.insert(key.clone());
        if let Some(at) = tombstone {
            self.tombstones.insert(key.clone(), at);
            self.tombstones_added.push((key.clone(), at));
        }
        Some(t)
    }

    /// Room for one more task: when full, the task whose confirmed end is oldest goes (as if
    /// retention had expired it). False when every tracked task is still running.
    fn make_room(&mut self, now: f64) -> bool {
        if self.tasks.len() < self.max_tasks {
            return true;
        }
        while self.tasks.len() >= self.max_tasks {
            let Some((_, key)) = self.finished.pop_first() else {
                break;
            };
            self.remove_task(&key, Some(now));
        }
        if self.tasks.len() < self.max_tasks {
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

    /// Parked tasks whose time has come go back into the poll order.
    fn wake_parked(&mut self, now: Instant) {
        while let Some((until, key)) = self.parked.first().cloned() {
            if until > now {
                break;
            }
            self.parked.pop_first();
            if let Some(t) = self.tasks.get_mut(&key) {
                t.parked_until = None;
            }
            self.requeue(&key);
        }
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

    /// A reload changed `retention.max_tasks`; tasks beyond a lower bound are not evicted.
    pub fn set_max_tasks(&self, max_tasks: usize) {
        self.lock().max_tasks = max_tasks.max(1);
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
            task.migrate();
            task.needs_poll = !task.final_read;
            inner.apps.entry(task.sdk_app_id).or_default();
            let key = (task.sdk_app_id, task.task_id.clone());
            let final_read = task.final_read;
            inner.tasks.insert(key.clone(), task);
            if final_read {
                inner.set_final(&key);
            }
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

    /// The apps of the configuration in force: they get aggregates, and only they are shown.
    /// An app left out keeps its tasks and counters, here and in the store, unchanged (not
    /// polled, not expired), and shows them again when a later configuration lists it (SPEC §5).
    /// Forgetting an app is a deliberate act on a stopped exporter (`state forget`).
    pub fn set_configured(&self, apps: impl IntoIterator<Item = u64>) {
        let apps: BTreeSet<u64> = apps.into_iter().collect();
        let mut inner = self.lock();
        for id in &apps {
            if let std::collections::btree_map::Entry::Vacant(e) = inner.apps.entry(*id) {
                e.insert(AppStats::default());
                inner.apps_dirty = true;
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

    /// Starts tracking a task (`room_id` as DescribeRunningTasks lists it). A configured id is
    /// marked as configured even when it was tracked already.
    pub fn track(&self, sdk_app_id: u64, task_id: &str, room_id: Option<i64>, source: Source) -> Track {
        let key = (sdk_app_id, task_id.to_string());
        let now = unix_now();
        {
            let mut inner = self.lock();
            if let Some(t) = inner.tasks.get_mut(&key) {
                let mut changed = false;
                if source == Source::Config && t.source != Source::Config {
                    t.source = Source::Config;
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
                return Track::Known;
            }
            if inner.tombstones.contains_key(&key) {
                return Track::Known;
            }
            if !inner.make_room(now) {
                return Track::Full;
            }
            let mut task = Task::new(sdk_app_id, task_id.to_string(), source, now);
            task.confirmed_mut().room_id = room_id;
            task.refresh(now);
            inner.apps.entry(sdk_app_id).or_default();
            inner.touch(&key);
            inner.tasks.insert(key.clone(), task);
            inner.requeue(&key);
        }
        self.want_poll();
        Track::Added
    }

    /// Applies an answer of DescribeWhiteboardPush and records the poll's end.
    ///
    /// The answer is the truth: it is folded into the confirmed facts and moves the counters. A
    /// pending claim is settled by an answer to a poll handed out after it: kept where the answer
    /// agrees, counted `contradicted` where the claim was ahead of the answer. An answer to a poll
    /// handed out before the latest claim cannot judge it, so another poll is owed.
    /// `park_for` is how long a configured task Tencent does not know waits for its next read.
    pub fn apply_answer(&self, sdk_app_id: u64, task_id: &str, answer: &Answer, park_for: Duration) -> AnswerApplied {
        let now = unix_now();
        let key = (sdk_app_id, task_id.to_string());
        let mut out = AnswerApplied::default();
        let mut inner = self.lock();
        inner.unqueue(&key);
        let Inner { tasks, apps, .. } = &mut *inner;
        let Some(task) = tasks.get_mut(&key) else {
            return out;
        };
        let stats = apps.entry(sdk_app_id).or_default();
        let was_ended = task.confirmed().status.is_ended();
        let answers_claim = task.claim.as_ref().is_some_and(|c| task.poll_seq >= c.seq);
        task.last_update = now;
        match answer {
            Answer::State(obs) => {
                task.not_found = 0;
                task.no_status.clear();
                task.confirmed_mut().absorb(obs);
            }
            Answer::Failed => {
                task.not_found = 0;
                task.no_status.clear();
                task.confirmed_mut().absorb(&Observation {
                    status: Some(TaskStatus::Failed),
                    ..Default::default()
                });
            }
            Answer::NoStatus(request_id) => {
                task.not_found = 0;
                task.no_status.push(request_id.clone());
                if task.no_status.len() >= NO_STATUS_LIMIT {
                    out.failed_without_status = Some(std::mem::take(&mut task.no_status));
                    task.confirmed_mut().absorb(&Observation {
                        status: Some(TaskStatus::Failed),
                        ..Default::default()
                    });
                }
            }
            Answer::NotFound => {
                task.no_status.clear();
                task.not_found = task.not_found.saturating_add(1);
            }
        }
        // The claim: superseded once the truth has caught up with it; contradicted when a poll sent
        // after it answers something behind it (or that the task does not exist).
        if let Some(claim) = &task.claim {
            let confirmed = task.confirmed();
            let behind = claim.facts.status.rank() > confirmed.status.rank();
            let other_reason = matches!(
                (claim.facts.finish_reason, confirmed.finish_reason),
                (Some(c), Some(a)) if c != a && c != FinishReason::Other && a != FinishReason::Failed
            );
            if answers_claim && (behind || other_reason || *answer == Answer::NotFound) {
                out.contradicted = Some((
                    PushEvent::claiming(claim.facts.status),
                    claim.facts.status,
                    claim.facts.finish_reason,
                ));
                task.claim = None;
            } else if !behind {
                task.claim = None;
            } else {
                task.needs_poll = true;
            }
        }
        let confirmed = task.confirmed().clone();
        task.count(&confirmed, stats);
        task.refresh(now);
        if confirmed.status.is_ended() && !was_ended {
            out.ended = confirmed.finish_reason;
        }
        if task.not_found >= NOT_FOUND_LIMIT && !confirmed.status.is_ended() {
            if task.source == Source::Config {
                let until = Instant::now() + park_for;
                task.parked_until = Some(until);
                task.not_found = 0;
                inner.parked.insert((until, key.clone()));
                out.parked = true;
            } else {
                inner.remove_task(&key, None);
                out.dropped = true;
                return out;
            }
        }
        if confirmed.status.is_ended() {
            inner.set_final(&key);
        }
        inner.touch(&key);
        inner.requeue(&key);
        out
    }

    /// Applies a DescribeWhiteboardPush reply with a status, as if answering a fresh poll.
    pub fn observe_poll(&self, sdk_app_id: u64, task_id: &str, obs: &Observation) -> AnswerApplied {
        self.mark_poll_sent(sdk_app_id, task_id);
        self.apply_answer(sdk_app_id, task_id, &Answer::State(obs.clone()), Duration::ZERO)
    }

    /// Records that a poll of this task is sent now (what [`TaskRegistry::next_to_poll`] does).
    fn mark_poll_sent(&self, sdk_app_id: u64, task_id: &str) {
        let mut inner = self.lock();
        let seq = inner.seq;
        if let Some(t) = inner.tasks.get_mut(&(sdk_app_id, task_id.to_string())) {
            t.poll_seq = seq;
        }
    }

    /// Applies a verified push callback as a claim: tracks its task if new, applies each event once,
    /// shows the claim at once and asks for the confirming DescribeWhiteboardPush.
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
            if !inner.tasks.contains_key(&key) {
                if !inner.make_room(now) {
                    return CallbackApplied::Full;
                }
                inner.tasks.insert(
                    key.clone(),
                    Task::new(sdk_app_id, task_id.to_string(), Source::Callback, now),
                );
                inner.apps.entry(sdk_app_id).or_default();
            }
            inner.unqueue(&key);
            inner.seq += 1;
            let seq = inner.seq;
            let Some(task) = inner.tasks.get_mut(&key) else {
                return CallbackApplied::Duplicate;
            };
            let seen = match event {
                PushEvent::Started => &mut task.seen_started_event,
                PushEvent::Stopped => &mut task.seen_stopped_event,
            };
            if *seen {
                inner.requeue(&key);
                return CallbackApplied::Duplicate;
            }
            *seen = true;
            let was_ended = task.status.is_ended();
            task.last_update = now;
            if !task.final_read {
                let claim = task.claim.get_or_insert_with(|| Claim {
                    facts: Facts::default(),
                    at: now,
                    seq,
                });
                claim.facts.absorb(obs);
                claim.at = now;
                claim.seq = seq;
                task.needs_poll = true;
                task.refresh(now);
            }
            let ended = task.status.is_ended() && !was_ended;
            inner.touch(&key);
            inner.requeue(&key);
            CallbackApplied::Accepted { ended }
        };
        self.want_poll();
        result
    }

    /// Counts the claims the API could not confirm: those of `sdk_app_id` pending for at least
    /// `timeout` with no answer from the app's API since they arrived (`last_answer`, unix
    /// seconds) and the poller running for at least `timeout` (`since`). Each counter still moves
    /// once per task. A claimed end counted this way is final: the task is no longer polled and
    /// leaves with retention, so an unreachable API cannot keep it forever. A claimed start stays
    /// pending, so a later answer still corrects what is shown. Returns the ids whose counters
    /// moved, to be logged as unconfirmed.
    pub fn settle_claims(
        &self,
        sdk_app_id: u64,
        timeout: Duration,
        last_answer: Option<f64>,
        since: f64,
    ) -> Vec<String> {
        let now = unix_now();
        let timeout = timeout.as_secs_f64();
        if now - since < timeout {
            return Vec::new();
        }
        let mut inner = self.lock();
        let Inner { tasks, apps, dirty, .. } = &mut *inner;
        let stats = apps.entry(sdk_app_id).or_default();
        let mut settled = Vec::new();
        let mut ended = Vec::new();
        for (key, task) in tasks.iter_mut().filter(|(k, _)| k.0 == sdk_app_id) {
            let Some(claim) = &task.claim else { continue };
            let unconfirmable = now - claim.at >= timeout && last_answer.is_none_or(|a| a < claim.at);
            if unconfirmable {
                let shown = task.shown();
                if task.count(&shown, stats) {
                    dirty.insert(key.clone());
                    settled.push(task.task_id.clone());
                }
                if shown.status.is_ended() {
                    ended.push(key.clone());
                }
            }
        }
        for key in ended {
            inner.unqueue(&key);
            inner.set_final(&key);
        }
        if !settled.is_empty() {
            inner.apps_dirty = true;
        }
        settled
    }

    /// Marks a poll as done (whatever its outcome), releasing the task for the next sweep.
    pub fn finish_poll(&self, sdk_app_id: u64, task_id: &str, at: Instant) {
        let mut inner = self.lock();
        let key = (sdk_app_id, task_id.to_string());
        inner.unqueue(&key);
        if let Some(t) = inner.tasks.get_mut(&key) {
            t.polling = false;
            // A claim that came in while the poll was in flight still wants its own poll.
            t.needs_poll = t.claim.as_ref().is_some_and(|c| c.seq > t.poll_seq) && !t.final_read;
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
        inner.wake_parked(Instant::now());
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
        let seq = inner.seq;
        let key = (app, task_id);
        if let Some(t) = inner.tasks.get_mut(&key) {
            t.polling = true;
            t.poll_seq = seq;
        }
        Some(key)
    }

    /// Removes tasks whose confirmed end is older than `retention` and forgets old tombstones.
    pub fn expire(&self, retention: Duration) -> usize {
        let now = unix_now();
        let mut inner = self.lock();
        let cutoff = ((now - retention.as_secs_f64()).max(0.0) * 1000.0) as u64;
        // An app left out of the configuration keeps its tasks as they were until it returns.
        let due: Vec<Key> = inner
            .finished
            .iter()
            .take_while(|(ended, _)| *ended <= cutoff)
            .filter(|(_, key)| inner.shown(key.0))
            .map(|(_, key)| key.clone())
            .collect();
        for key in &due {
            inner.remove_task(key, Some(now));
        }
        let expired = due.len();
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
        expired
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

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(status: TaskStatus) -> Observation {
        Observation {
            status: Some(status),
            ..Default::default()
        }
    }

    fn stopped(reason: Option<FinishReason>) -> Observation {
        Observation {
            finish_reason: reason,
            push_start_time: Some(100),
            push_stop_time: Some(400),
            ..obs(TaskStatus::Stopped)
        }
    }

    fn answer(r: &TaskRegistry, id: &str, a: Answer) -> AnswerApplied {
        let picked = r
            .next_to_poll(&[1], None)
            .or_else(|| r.next_to_poll(&[1], Some(Instant::now())));
        assert!(picked.is_some(), "{id} is due");
        let out = r.apply_answer(1, id, &a, Duration::from_secs(60));
        r.finish_poll(1, id, Instant::now());
        out
    }

    #[test]
    fn walks_forward_and_counts_once() {
        let r = TaskRegistry::new();
        assert_eq!(r.track(1, "t", None, Source::Discovery), Track::Added);
        assert_eq!(r.track(1, "t", None, Source::Discovery), Track::Known);
        r.observe_poll(1, "t", &obs(TaskStatus::Prepared));
        let pushing = Observation {
            push_start_time: Some(100),
            exception_cnt: Some(1),
            ..obs(TaskStatus::Pushing)
        };
        r.observe_poll(1, "t", &pushing);
        r.observe_poll(1, "t", &pushing);
        let stop = Observation {
            exception_cnt: Some(3),
            ..stopped(Some(FinishReason::Exception))
        };
        assert_eq!(r.observe_poll(1, "t", &stop).ended, Some(FinishReason::Exception));
        assert_eq!(r.observe_poll(1, "t", &stop).ended, None);
        // A stale reply cannot move it back, lower the count or change the reason.
        let stale = Observation {
            exception_cnt: Some(0),
            finish_reason: Some(FinishReason::Auto),
            ..obs(TaskStatus::Pushing)
        };
        r.observe_poll(1, "t", &stale);
        let t = r.get(1, "t").unwrap();
        assert_eq!(t.status, TaskStatus::Stopped);
        assert_eq!(t.finish_reason, Some(FinishReason::Exception));
        assert_eq!(t.exception_cnt, 3);
        assert_eq!(t.duration(), Some(300.0));
        let s = r.stats(1).unwrap();
        assert_eq!(s.started_total, 1);
        assert_eq!(s.finished(FinishReason::Exception), 1);
        assert_eq!(s.finished_total.iter().sum::<u64>(), 1);
        assert_eq!(s.exceptions_total, 3);
        assert_eq!(s.duration(FinishReason::Exception).count, 1);
        assert_eq!(s.duration(FinishReason::Exception).sum, 300.0);
        assert!(!t.is_pollable());
    }

    /// SPEC §4: the duration series is for ended tasks only.
    #[test]
    fn a_running_task_has_no_duration() {
        let r = TaskRegistry::new();
        r.track(1, "t", None, Source::Discovery);
        r.observe_poll(
            1,
            "t",
            &Observation {
                push_start_time: Some(100),
                ..obs(TaskStatus::Pushing)
            },
        );
        assert_eq!(r.get(1, "t").unwrap().duration(), None);
    }

    #[test]
    fn failed_task_gets_reason_failed_and_never_started() {
        let r = TaskRegistry::new();
        r.track(1, "f", None, Source::Config);
        answer(&r, "f", Answer::Failed);
        let t = r.get(1, "f").unwrap();
        assert_eq!(
            (t.status, t.finish_reason),
            (TaskStatus::Failed, Some(FinishReason::Failed))
        );
        let s = r.stats(1).unwrap();
        assert_eq!((s.started_total, s.finished(FinishReason::Failed)), (0, 1));
        assert!(!t.is_pollable());
    }

    /// SPEC §2: a success reply with no Status, three in a row, is a failed task, counted once.
    #[test]
    fn three_replies_without_status_fail_the_task_once() {
        let r = TaskRegistry::new();
        r.track(1, "b", None, Source::Discovery);
        assert_eq!(
            answer(&r, "b", Answer::NoStatus("r1".into())).failed_without_status,
            None
        );
        // Another answer in between starts the count again.
        answer(&r, "b", Answer::State(obs(TaskStatus::Prepared)));
        answer(&r, "b", Answer::NoStatus("r2".into()));
        answer(&r, "b", Answer::NoStatus("r3".into()));
        assert_eq!(r.get(1, "b").unwrap().status, TaskStatus::Prepared);
        let out = answer(&r, "b", Answer::NoStatus("r4".into()));
        assert_eq!(
            out.failed_without_status,
            Some(vec!["r2".into(), "r3".into(), "r4".into()])
        );
        assert_eq!(out.ended, Some(FinishReason::Failed));
        let t = r.get(1, "b").unwrap();
        assert_eq!(
            (t.status, t.finish_reason),
            (TaskStatus::Failed, Some(FinishReason::Failed))
        );
        assert!(!t.is_pollable());
        assert_eq!(r.stats(1).unwrap().finished(FinishReason::Failed), 1);
        assert!(r.next_to_poll(&[1], Some(Instant::now())).is_none(), "no longer polled");
    }

    #[test]
    fn first_seen_with_exceptions_adds_them_all() {
        let r = TaskRegistry::new();
        r.track(1, "x", None, Source::Discovery);
        r.observe_poll(
            1,
            "x",
            &Observation {
                exception_cnt: Some(5),
                ..obs(TaskStatus::Pushing)
            },
        );
        assert_eq!(r.stats(1).unwrap().exceptions_total, 5);
    }

    /// SPEC §2: three TaskNotFound in a row drop a task learned from a callback or discovery; a
    /// configured one stays UNKNOWN and is parked; any other answer starts the count again.
    #[test]
    fn not_found_three_times_drops_or_parks() {
        let r = TaskRegistry::new();
        r.track(1, "d", None, Source::Discovery);
        assert!(!answer(&r, "d", Answer::NotFound).dropped);
        answer(&r, "d", Answer::State(obs(TaskStatus::Prepared)));
        assert!(!answer(&r, "d", Answer::NotFound).dropped);
        assert!(!answer(&r, "d", Answer::NotFound).dropped);
        let out = answer(&r, "d", Answer::NotFound);
        assert!(out.dropped);
        assert!(r.get(1, "d").is_none());
        assert!(r.take_batch().removed.contains(&(1, "d".to_string())));
        // No tombstone: a later callback may bring it back.
        assert_eq!(r.track(1, "d", None, Source::Callback), Track::Added);

        r.track(1, "c", None, Source::Config);
        for _ in 0..2 {
            answer(&r, "c", Answer::NotFound);
        }
        let out = answer(&r, "c", Answer::NotFound);
        assert!(out.parked && !out.dropped);
        assert_eq!(r.get(1, "c").unwrap().status, TaskStatus::Unknown);
        assert!(
            std::iter::from_fn(|| r.next_to_poll(&[1], Some(Instant::now() + Duration::from_secs(1))))
                .all(|(_, id)| id != "c"),
            "parked: not handed out before its time"
        );
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

    /// Callbacks are claims: shown at once, applied once per event in any order, counted only
    /// when the API confirms them.
    #[test]
    fn callbacks_are_claims_until_the_api_confirms_them() {
        let r = TaskRegistry::new();
        let started = Observation {
            push_start_time: Some(100),
            ..obs(TaskStatus::Pushing)
        };
        let stop = Observation {
            exception_cnt: Some(2),
            ..stopped(Some(FinishReason::Exception))
        };
        // Stopped first, then Started, then copies of both.
        assert_eq!(
            r.observe_callback(1, "c", PushEvent::Stopped, &stop),
            CallbackApplied::Accepted { ended: true }
        );
        assert_eq!(
            r.observe_callback(1, "c", PushEvent::Started, &started),
            CallbackApplied::Accepted { ended: false }
        );
        for _ in 0..5 {
            assert_eq!(
                r.observe_callback(1, "c", PushEvent::Stopped, &stop),
                CallbackApplied::Duplicate
            );
            assert_eq!(
                r.observe_callback(1, "c", PushEvent::Started, &started),
                CallbackApplied::Duplicate
            );
        }
        let t = r.get(1, "c").unwrap();
        assert_eq!(
            (t.status, t.finish_reason, t.source, t.exception_cnt),
            (TaskStatus::Stopped, Some(FinishReason::Exception), Source::Callback, 2)
        );
        assert_eq!(r.stats(1).unwrap(), AppStats::default(), "nothing counted on a claim");
        // The confirming poll is owed at once; it confirms, and the counters move once.
        let out = answer(
            &r,
            "c",
            Answer::State(Observation {
                exception_cnt: Some(2),
                ..stop.clone()
            }),
        );
        assert_eq!((out.ended, out.contradicted), (Some(FinishReason::Exception), None));
        let s = r.stats(1).unwrap();
        assert_eq!(
            (s.started_total, s.finished(FinishReason::Exception), s.exceptions_total),
            (1, 1, 2)
        );
        assert!(!r.get(1, "c").unwrap().is_pollable());
        assert!(r.get(1, "c").unwrap().claim.is_none());
    }

    /// A forged body under a reused Sign: STOPPED/EXCEPTION with 4294967295 exceptions. The API
    /// answers PUSHING with none: the task goes back to PUSHING, nothing is counted but the start.
    #[test]
    fn a_claim_the_api_contradicts_is_reverted() {
        let r = TaskRegistry::new();
        r.track(1, "h", None, Source::Discovery);
        let running = Observation {
            push_start_time: Some(100),
            exception_cnt: Some(0),
            ..obs(TaskStatus::Pushing)
        };
        answer(&r, "h", Answer::State(running.clone()));
        let forged = Observation {
            exception_cnt: Some(u32::MAX as u64),
            ..stopped(Some(FinishReason::Exception))
        };
        r.observe_callback(1, "h", PushEvent::Stopped, &forged);
        assert_eq!(
            r.get(1, "h").unwrap().status,
            TaskStatus::Stopped,
            "the claim shows at once"
        );
        let out = answer(&r, "h", Answer::State(running));
        assert_eq!(
            out.contradicted,
            Some((PushEvent::Stopped, TaskStatus::Stopped, Some(FinishReason::Exception)))
        );
        let t = r.get(1, "h").unwrap();
        assert_eq!(
            (t.status, t.finish_reason, t.exception_cnt),
            (TaskStatus::Pushing, None, 0)
        );
        assert!(t.is_pollable());
        let s = r.stats(1).unwrap();
        assert_eq!(
            (
                s.started_total,
                s.finished_total.iter().sum::<u64>(),
                s.exceptions_total
            ),
            (1, 0, 0)
        );
    }

    /// A reply to a poll sent before the claim arrived cannot judge it: the claim stays, and a
    /// fresh poll is owed.
    #[test]
    fn a_poll_sent_before_the_claim_does_not_contradict_it() {
        let r = TaskRegistry::new();
        r.track(1, "s", None, Source::Discovery);
        assert!(r.next_to_poll(&[1], None).is_some());
        r.observe_callback(1, "s", PushEvent::Stopped, &stopped(Some(FinishReason::Auto)));
        let out = r.apply_answer(1, "s", &Answer::State(obs(TaskStatus::Pushing)), Duration::ZERO);
        r.finish_poll(1, "s", Instant::now());
        assert_eq!(out.contradicted, None);
        assert_eq!(r.get(1, "s").unwrap().status, TaskStatus::Stopped);
        assert_eq!(
            r.next_to_poll(&[1], None).map(|k| k.1).as_deref(),
            Some("s"),
            "read again at once"
        );
        let out = r.apply_answer(
            1,
            "s",
            &Answer::State(stopped(Some(FinishReason::Auto))),
            Duration::ZERO,
        );
        assert_eq!((out.ended, out.contradicted), (Some(FinishReason::Auto), None));
    }

    /// SPEC §3: a Stopped without a documented reason shows OTHER; the confirming poll refines it,
    /// and only the refined reason is counted.
    #[test]
    fn other_is_refined_by_the_confirming_poll_and_counted_once() {
        let r = TaskRegistry::new();
        r.observe_callback(1, "o", PushEvent::Stopped, &stopped(Some(FinishReason::Other)));
        assert_eq!(r.get(1, "o").unwrap().finish_reason, Some(FinishReason::Other));
        let out = answer(&r, "o", Answer::State(stopped(Some(FinishReason::Exception))));
        assert_eq!((out.ended, out.contradicted), (Some(FinishReason::Exception), None));
        let s = r.stats(1).unwrap();
        assert_eq!(
            (s.finished(FinishReason::Exception), s.finished(FinishReason::Other)),
            (1, 0)
        );
        assert_eq!(r.get(1, "o").unwrap().finish_reason, Some(FinishReason::Exception));
        // A poll that itself says STOPPED without a reason ends the task with OTHER.
        r.track(1, "p", None, Source::Discovery);
        answer(&r, "p", Answer::State(stopped(None)));
        assert_eq!(r.stats(1).unwrap().finished(FinishReason::Other), 1);
        assert!(!r.get(1, "p").unwrap().is_pollable());
    }

    /// A claim the app's API could not confirm for `confirm_timeout` is counted on its own word.
    #[test]
    fn an_unconfirmable_claim_is_counted_after_the_timeout() {
        let r = TaskRegistry::new();
        r.observe_callback(1, "u", PushEvent::Stopped, &stopped(Some(FinishReason::Exception)));
        let start = unix_now() - 1000.0;
        assert!(
            r.settle_claims(1, Duration::from_secs(300), None, start).is_empty(),
            "too young"
        );
        assert!(
            r.settle_claims(1, Duration::ZERO, Some(unix_now() + 1.0), start)
                .is_empty(),
            "the API answered since"
        );
        assert_eq!(r.settle_claims(1, Duration::ZERO, None, start), ["u"]);
        assert!(r.settle_claims(1, Duration::ZERO, None, start).is_empty(), "once");
        assert_eq!(r.stats(1).unwrap().finished(FinishReason::Exception), 1);
        // Counted on its claim, the end is final: no more polls, and retention removes it.
        assert!(!r.get(1, "u").unwrap().is_pollable());
        assert!(r.next_to_poll(&[1], Some(Instant::now())).is_none());
        assert_eq!(r.expire(Duration::ZERO), 1);
        assert_eq!(r.stats(1).unwrap().finished_total.iter().sum::<u64>(), 1);
    }

    /// `retention.max_tasks`: ended tasks go first, oldest end first; then new tasks are refused.
    #[test]
    fn a_full_registry_evicts_ended_tasks_then_refuses() {
        let r = TaskRegistry::with_max_tasks(3);
        for id in ["a", "b", "c"] {
            assert_eq!(r.track(1, id, None, Source::Discovery), Track::Added);
        }
        r.observe_poll(1, "b", &stopped(Some(FinishReason::Auto)));
        std::thread::sleep(Duration::from_millis(5));
        r.observe_poll(1, "a", &stopped(Some(FinishReason::Auto)));
        assert_eq!(r.track(1, "d", None, Source::Discovery), Track::Added);
        assert!(
            r.get(1, "b").is_none() && r.get(1, "a").is_some(),
            "the oldest end went first"
        );
        assert_eq!(
            r.observe_callback(1, "e", PushEvent::Started, &obs(TaskStatus::Pushing)),
            CallbackApplied::Accepted { ended: false }
        );
        assert!(r.get(1, "a").is_none());
        assert_eq!(r.track(1, "f", None, Source::Discovery), Track::Full);
        assert_eq!(
            r.observe_callback(1, "g", PushEvent::Started, &obs(TaskStatus::Pushing)),
            CallbackApplied::Full
        );
        assert_eq!(r.len(), 3);
        assert_eq!(r.stats(1).unwrap().finished(FinishReason::Auto), 2, "counters stay");
    }

    /// The poll order index holds exactly the pollable tasks that are not in flight nor parked.
    #[test]
    fn poll_queue_stays_consistent() {
        let r = TaskRegistry::new();
        let check = |r: &TaskRegistry| {
            let inner = r.lock();
            let expected: BTreeSet<OrderKey> = inner
                .tasks
                .values()
                .filter(|t| Inner::queued(t))
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
                r.apply_answer(
                    *app,
                    id,
                    &Answer::State(stopped(Some(FinishReason::Auto))),
                    Duration::ZERO,
                );
            }
            r.finish_poll(*app, id, t0 + Duration::from_millis(i as u64));
        }
        check(&r);
        r.observe_callback(2, "t1", PushEvent::Stopped, &stopped(Some(FinishReason::Exception)));
        r.observe_callback(2, "fresh", PushEvent::Started, &obs(TaskStatus::Pushing));
        check(&r);
        r.apply_answer(2, "t1", &Answer::NotFound, Duration::ZERO);
        r.clear_polling();
        check(&r);
        r.expire(Duration::ZERO);
        r.set_configured([1]);
        check(&r);
    }

    #[test]
    fn expiry_removes_and_tombstones() {
        let r = TaskRegistry::new();
        r.track(1, "e", None, Source::Discovery);
        r.observe_poll(1, "e", &stopped(Some(FinishReason::Auto)));
        assert_eq!(r.expire(Duration::from_secs(3600)), 0);
        assert_eq!(r.expire(Duration::ZERO), 1);
        assert!(r.get(1, "e").is_none());
        assert_eq!(
            r.track(1, "e", None, Source::Discovery),
            Track::Known,
            "an expired task must not come back"
        );
        assert_eq!(r.stats(1).unwrap().finished(FinishReason::Auto), 1);
    }

    /// An app left out of the configuration is hidden, not deleted: not shown, not expired, and
    /// back unchanged with the app.
    #[test]
    fn an_app_left_out_is_hidden_and_comes_back_unchanged() {
        let r = TaskRegistry::new();
        r.set_configured([1, 2]);
        r.track(2, "t", None, Source::Discovery);
        r.observe_poll(2, "t", &stopped(Some(FinishReason::Exception)));
        let before = r.snapshot();
        r.set_configured([1]);
        assert_eq!(r.view().tasks().count(), 0);
        assert_eq!(r.view().apps().map(|(id, _)| *id).collect::<Vec<_>>(), [1]);
        assert_eq!(r.expire(Duration::ZERO), 0, "not expired while hidden");
        assert_eq!(r.hidden_apps(), [(2, 1)]);
        assert!(r.next_to_poll(&[1], Some(Instant::now())).is_none());
        r.set_configured([1, 2]);
        assert_eq!(r.snapshot(), before);
        assert_eq!(r.view().tasks().count(), 1);
    }

    /// Aggregates written before reason OTHER existed (four entries) still load.
    #[test]
    fn stats_from_before_other_load() {
        let mut v = serde_json::to_value(AppStats::default()).unwrap();
        v["finished_total"] = serde_json::json!([1, 2, 3, 4]);
        v["durations"].as_array_mut().unwrap().pop();
        let s: AppStats = serde_json::from_value(v).unwrap();
        assert_eq!(s.finished_total, [1, 2, 3, 4, 0]);
    }
}
