//! The registry of real-time recording tasks (`StartOnlineRecord`): the exporter's second task
//! kind, keyed by app and task id like push tasks, beside the push registry rather than inside it.
//! It has its own lock, its own store tables and its own DescribeOnlineRecord budget, so tracking
//! recordings costs push tasks nothing, and an app that does not turn `apps[].record` on has no
//! entry here at all.
//!
//! Every fact comes from Tencent's API: a recording is found in the OnlineRecord running list
//! (DescribeRunningTasks) and read with DescribeOnlineRecord; a complete list pass that no longer
//! lists a recording, or lists it FINISHED, puts its read first (as for push, design §2). What one
//! read says is folded in by [`RecordFacts::absorb`]; the per-app counters move once per task.
//!
//! Counting (the `tiw_record_*` families):
//! - a recording's end is counted once, with its reason, when it is first seen ended (STOPPED,
//!   FINISHED or FAILED) with a documented reason, or at its final state (OTHER then);
//! - its result (video bytes, the replay's length, how long the upload took) once, when it is
//!   FINISHED; the upload's length only when its STOPPED was seen first;
//! - ExceptionCnt's increases as they are read.
//!
//! Only recordings seen running are tracked: one listed FINISHED that was never seen is history,
//! and is not read at all.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::recording::{RecordAnswer, RecordFacts, RecordFinishReason, RecordStatus};
use crate::task::{Failure, DEFAULT_MAX_TASKS};

pub mod collector;
pub mod poll;
mod record;
#[cfg(test)]
mod tests;

pub use record::*;

/// A recording's identity: SdkAppId and TaskId.
pub type Key = (u64, String);

/// Recordings only a callback named, at most per app (as `callback.max_unconfirmed_tasks` bounds
/// push tasks): past it a new id is answered 503, and TIW's own retries keep a real event.
pub const MAX_UNCONFIRMED_PER_APP: usize = crate::registry::MAX_UNCONFIRMED_PER_APP;

/// What a recording callback did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordClaim {
    /// The recording's read goes first (a new id is tracked until the API answers for it).
    Taken,
    /// Tencent answered TaskNotFound for this id 3 times: a made-up id, sent again.
    Refuted,
    /// Too many recordings only callbacks named, or `retention.max_tasks`: answered 503.
    Full,
}

#[derive(Default)]
struct Inner {
    tasks: HashMap<Key, RecordTask>,
    apps: HashMap<u64, RecordAppStats>,
    /// When each pollable recording is next due (unix ms), per app, and the reverse.
    due: HashMap<u64, BTreeSet<(u64, String)>>,
    due_at: HashMap<Key, u64>,
    /// Reads under way, and those of them a hint came for meanwhile (their answer may predate
    /// what the hint announces: they are read again at once).
    polling: HashSet<Key>,
    rehint: HashSet<Key>,
    /// Changes not yet taken by the store.
    dirty: HashSet<Key>,
    removed: HashSet<Key>,
    apps_dirty: HashSet<u64>,
    /// The apps with `record: true` in the configuration in force: only they are shown and read.
    configured: BTreeSet<u64>,
    max_tasks: usize,
    /// Recordings only a callback named, per app.
    unconfirmed: HashMap<u64, usize>,
    /// Ids dropped after TaskNotFound, with when, oldest first (as the push registry keeps them).
    refuted: crate::task::Refuted,
}

impl Inner {
    fn unschedule(&mut self, key: &Key) {
        if let Some(at) = self.due_at.remove(key) {
            if let Some(q) = self.due.get_mut(&key.0) {
                q.remove(&(at, key.1.clone()));
                if q.is_empty() {
                    self.due.remove(&key.0);
                }
            }
        }
    }

    /// Puts a pollable recording in its app's queue at `at_ms` (earlier wins), a final one out.
    fn schedule(&mut self, key: &Key, at_ms: u64) {
        let pollable = self.tasks.get(key).is_some_and(|t| !t.is_final());
        if pollable && at_ms == 0 && self.polling.contains(key) {
            self.rehint.insert(key.clone());
        }
        if !pollable || self.polling.contains(key) {
            self.unschedule(key);
            return;
        }
        if self.due_at.get(key).is_some_and(|old| *old <= at_ms) {
            return;
        }
        self.unschedule(key);
        self.due_at.insert(key.clone(), at_ms);
        self.due.entry(key.0).or_default().insert((at_ms, key.1.clone()));
    }

    /// A read of `key` is over: due again at `at_ms`, or at once if a hint came meanwhile.
    fn read_done(&mut self, key: &Key, at_ms: u64) {
        self.polling.remove(key);
        let at = if self.rehint.remove(key) { 0 } else { at_ms };
        self.unschedule(key);
        self.schedule(key, at);
    }

    fn touch(&mut self, key: &Key) {
        self.dirty.insert(key.clone());
        self.removed.remove(key);
        self.apps_dirty.insert(key.0);
    }

    /// The API (an answer, or the running list) vouches for a recording a callback named.
    fn confirm(&mut self, key: &Key) {
        if let Some(t) = self.tasks.get_mut(key).filter(|t| t.unconfirmed) {
            t.unconfirmed = false;
            self.unconfirmed.entry(key.0).and_modify(|n| *n = n.saturating_sub(1));
            self.touch(key);
        }
    }

    fn refute(&mut self, key: Key, now: f64) {
        use crate::registry::{MAX_REFUTED, REFUTED_TTL};
        self.refuted.insert(key, now, (MAX_REFUTED, REFUTED_TTL.as_secs_f64()));
    }

    fn remove(&mut self, key: &Key) {
        self.unschedule(key);
        if let Some(t) = self.tasks.get(key).filter(|t| t.unconfirmed) {
            self.unconfirmed
                .entry(t.sdk_app_id)
                .and_modify(|n| *n = n.saturating_sub(1));
        }
        if self.tasks.remove(key).is_some() {
            self.dirty.remove(key);
            self.removed.insert(key.clone());
        }
    }

    /// Room for one more recording: the one whose result came first goes when full.
    fn make_room(&mut self) -> bool {
        if self.tasks.len() < self.max_tasks {
            return true;
        }
        let oldest = self
            .tasks
            .values()
            .filter(|t| t.is_final())
            .min_by(|a, b| a.final_at.unwrap_or(0.0).total_cmp(&b.final_at.unwrap_or(0.0)))
            .map(RecordTask::key);
        match oldest {
            Some(key) => {
                self.remove(&key);
                true
            }
            None => false,
        }
    }
}

fn ms(unix: f64) -> u64 {
    (unix.max(0.0) * 1000.0) as u64
}

/// The recording registry. Cheap to share behind an `Arc`; every method takes a short std lock.
pub struct RecordRegistry {
    inner: Mutex<Inner>,
    /// Bumped whenever a read became due early (a new recording, the list's hint).
    wanted: tokio::sync::watch::Sender<u64>,
}

impl Default for RecordRegistry {
    fn default() -> Self {
        RecordRegistry::with_max_tasks(DEFAULT_MAX_TASKS)
    }
}

impl RecordRegistry {
    /// A registry that tracks at most `max_tasks` recordings (`retention.max_tasks`).
    pub fn with_max_tasks(max_tasks: usize) -> RecordRegistry {
        RecordRegistry {
            inner: Mutex::new(Inner {
                max_tasks: max_tasks.max(1),
                ..Inner::default()
            }),
            wanted: tokio::sync::watch::channel(0).0,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update is computed before it is stored: a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_max_tasks(&self, max_tasks: usize) {
        self.lock().max_tasks = max_tasks.max(1);
    }

    /// Wakes the read loops when a read became due early.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.wanted.subscribe()
    }

    fn want(&self) {
        self.wanted.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Loads what the store held; every recording not final is read again at once.
    pub fn restore(&self, restored: RecordRestored) {
        let mut inner = self.lock();
        inner.apps.extend(restored.apps);
        for t in restored.tasks {
            let key = t.key();
            if t.unconfirmed {
                *inner.unconfirmed.entry(t.sdk_app_id).or_default() += 1;
            }
            inner.tasks.insert(key.clone(), t);
            // Due at once, behind any hint of the list (due at 0).
            inner.schedule(&key, 1);
        }
    }

    /// The apps whose recordings are tracked (`apps[].record`): only they are shown and read. An
    /// app left out keeps its recordings and counters, hidden, until it returns.
    pub fn set_configured(&self, apps: impl IntoIterator<Item = u64>) {
        let mut inner = self.lock();
        inner.configured = apps.into_iter().collect();
        let ids: Vec<u64> = inner.configured.iter().copied().collect();
        for id in ids {
            if let std::collections::hash_map::Entry::Vacant(e) = inner.apps.entry(id) {
                e.insert(RecordAppStats::default());
                inner.apps_dirty.insert(id);
            }
        }
    }

    /// One complete or partial pass of the app's OnlineRecord running list: `listed` maps each
    /// task id to its room and whether it was listed running (QUEUED or PROCESSING). New running
    /// recordings are tracked and read at once. After a `complete` pass, a tracked recording that
    /// is not final and is no longer listed, or is listed FINISHED, is read first: its end is near.
    /// Returns how many recordings were added, and how many `retention.max_tasks` refused.
    pub fn listed(
        &self,
        sdk_app_id: u64,
        listed: &HashMap<String, (Option<i64>, bool)>,
        complete: bool,
    ) -> (usize, usize) {
        let now = crate::task::unix_now();
        let (mut added, mut refused, mut hinted) = (0, 0, 0);
        {
            let mut inner = self.lock();
            for (id, (room_id, running)) in listed {
                let key = (sdk_app_id, id.clone());
                // The API's own list names it: not made up after all.
                inner.refuted.remove(&key);
                if inner.tasks.contains_key(&key) {
                    inner.confirm(&key);
                    if !*running {
                        inner.schedule(&key, 0);
                        hinted += 1;
                    }
                    continue;
                }
                // Listed FINISHED and never seen: history, not news.
                if !*running {
                    continue;
                }
                if !inner.make_room() {
                    refused += 1;
                    continue;
                }
                inner
                    .tasks
                    .insert(key.clone(), RecordTask::new(sdk_app_id, id.clone(), *room_id, now));
                inner.apps.entry(sdk_app_id).or_default();
                inner.touch(&key);
                // Due now, in the order found: behind the list's hints (due at 0), which are the
                // reads that show an end.
                inner.schedule(&key, ms(now));
                added += 1;
            }
            if complete {
                let gone: Vec<Key> = inner
                    .due
                    .get(&sdk_app_id)
                    .into_iter()
                    .flatten()
                    .filter(|(at, id)| *at > 0 && !listed.contains_key(id))
                    .map(|(_, id)| (sdk_app_id, id.clone()))
                    .collect();
                hinted += gone.len();
                for key in gone {
                    inner.schedule(&key, 0);
                }
            }
        }
        if added + hinted > 0 {
            self.want();
        }
        (added, refused)
    }

    /// A verified recording callback about `task_id`: its read goes first, so the API confirms
    /// what the event says before anything is shown or counted. An id the registry does not know
    /// is tracked, unshown, until the API answers for it; such recordings are bounded per app.
    pub fn claimed(&self, sdk_app_id: u64, task_id: &str) -> RecordClaim {
        let key = (sdk_app_id, task_id.to_string());
        let now = crate::task::unix_now();
        {
            let mut inner = self.lock();
            if inner.tasks.contains_key(&key) {
                inner.schedule(&key, 0);
            } else if inner
                .refuted
                .contains(&key, now, crate::registry::REFUTED_TTL.as_secs_f64())
            {
                return RecordClaim::Refuted;
            } else {
                let full = inner.unconfirmed.get(&sdk_app_id).copied().unwrap_or(0) >= MAX_UNCONFIRMED_PER_APP;
                if full || !inner.make_room() {
                    return RecordClaim::Full;
                }
                let mut t = RecordTask::new(sdk_app_id, task_id.to_string(), None, now);
                t.unconfirmed = true;
                inner.tasks.insert(key.clone(), t);
                *inner.unconfirmed.entry(sdk_app_id).or_default() += 1;
                inner.apps.entry(sdk_app_id).or_default();
                inner.touch(&key);
                inner.schedule(&key, 0);
            }
        }
        self.want();
        RecordClaim::Taken
    }

    /// When the next read of `apps` is due (unix ms), if any recording is pollable.
    pub fn next_due(&self, apps: &[u64]) -> Option<u64> {
        let inner = self.lock();
        apps.iter()
            .filter(|a| inner.configured.contains(a))
            .filter_map(|a| inner.due.get(a)?.first().map(|(at, _)| *at))
            .min()
    }

    /// The recording of `apps` whose read is most overdue at `now_ms`, taken out of the queue
    /// until its answer (or [`RecordRegistry::finish_poll`]).
    pub fn next_to_poll(&self, apps: &[u64], now_ms: u64) -> Option<Key> {
        let mut inner = self.lock();
        let (at, app) = apps
            .iter()
            .filter(|a| inner.configured.contains(a))
            .filter_map(|a| inner.due.get(a)?.first().map(|(at, _)| (*at, *a)))
            .min()?;
        if at > now_ms {
            return None;
        }
        let id = inner.due.get(&app)?.first()?.1.clone();
        let key = (app, id);
        inner.unschedule(&key);
        inner.polling.insert(key.clone());
        Some(key)
    }

    /// A read that got no answer about the task: it is due again after `retry`.
    pub fn finish_poll(&self, key: &Key, retry: Duration) {
        let at = ms(crate::task::unix_now() + retry.as_secs_f64());
        self.lock().read_done(key, at);
    }

    /// Folds one DescribeOnlineRecord answer in; the recording is due again after `every` unless
    /// it is final.
    pub fn answer(&self, key: &Key, answer: &RecordAnswer, every: Duration) -> RecordApplied {
        let now = crate::task::unix_now();
        let next = ms(now + every.as_secs_f64());
        let mut guard = self.lock();
        let inner = &mut *guard;
        let mut applied = RecordApplied::default();
        let Some(t) = inner.tasks.get_mut(key) else {
            inner.polling.remove(key);
            inner.rehint.remove(key);
            return applied;
        };
        let report = match answer {
            RecordAnswer::State(facts) => facts.clone(),
            RecordAnswer::Failed(message) => RecordFacts {
                status: RecordStatus::Failed,
                failure: Some(Box::new(Failure::new("FailedOperation.Record", message))),
                ..RecordFacts::default()
            },
            RecordAnswer::NotFound => {
                t.not_found += 1;
                if t.not_found >= NOT_FOUND_LIMIT {
                    if t.unconfirmed {
                        inner.refute(key.clone(), now);
                    }
                    inner.polling.remove(key);
                    inner.rehint.remove(key);
                    inner.remove(key);
                    applied.dropped = true;
                } else if t.unconfirmed {
                    // Only a callback named it: settled within seconds either way.
                    let again = ms(now + f64::from(t.not_found)).min(next);
                    inner.read_done(key, again);
                } else {
                    inner.read_done(key, next);
                }
                return applied;
            }
        };
        t.not_found = 0;
        let before = t.facts.clone();
        t.facts.absorb(&report);
        let after = &t.facts;
        let changed = *after != before;
        if changed {
            t.last_update = now;
        }
        let new_exceptions = after
            .exception_cnt
            .unwrap_or(0)
            .saturating_sub(before.exception_cnt.unwrap_or(0));
        if after.status.is_ended() && t.ended_at.is_none() {
            t.ended_at = Some(now);
        }
        if after.status == RecordStatus::Stopped && t.stopped_at.is_none() {
            t.stopped_at = Some(now);
        }
        if after.status.is_final() && t.final_at.is_none() {
            t.final_at = Some(now);
        }
        let reason = after.finish_reason.unwrap_or(RecordFinishReason::Other);
        if after.status.is_ended() && !t.counted_end && (reason != RecordFinishReason::Other || after.status.is_final())
        {
            t.counted_end = true;
            applied.ended = Some(reason);
        }
        let mut result = None;
        if after.status == RecordStatus::Finished && !t.counted_result {
            t.counted_result = true;
            applied.finished = true;
            result = Some((
                after.video_bytes.unwrap_or(0),
                after.total_time_ms.map(|ms| ms as f64 / 1000.0),
                t.stopped_at.map(|at| (now - at).max(0.0)),
            ));
        }
        applied.room_id = after.room_id;
        applied.exceptions = after.exception_cnt.unwrap_or(0);
        let app = inner.apps.entry(key.0).or_default();
        app.exceptions_total += new_exceptions;
        if let Some(reason) = applied.ended {
            app.finished_total[reason.index()] += 1;
        }
        if let Some((bytes, duration, upload)) = result {
            app.video_bytes_total += bytes;
            if let Some(d) = duration {
                app.duration.observe(&DURATION_BUCKETS, d);
            }
            if let Some(u) = upload {
                app.upload.observe(&UPLOAD_BUCKETS, u);
            }
        }
        if changed || applied.ended.is_some() || applied.finished {
            inner.touch(key);
        }
        inner.confirm(key);
        inner.read_done(key, next);
        applied
    }

    /// Removes final recordings whose result is older than `retention`. Returns how many went.
    pub fn expire(&self, retention: Duration) -> usize {
        let cutoff = crate::task::unix_now() - retention.as_secs_f64();
        let mut inner = self.lock();
        let due: Vec<Key> = inner
            .tasks
            .values()
            .filter(|t| inner.configured.contains(&t.sdk_app_id))
            .filter(|t| t.final_at.is_some_and(|at| at <= cutoff))
            .map(RecordTask::key)
            .collect();
        for key in &due {
            inner.remove(key);
        }
        due.len()
    }

    /// A copy of the shown recordings (sorted by app and id) and the shown apps' counters.
    pub fn snapshot(&self) -> (Vec<RecordTask>, Vec<(u64, RecordAppStats)>) {
        let inner = self.lock();
        let mut tasks: Vec<RecordTask> = inner
            .tasks
            .values()
            .filter(|t| inner.configured.contains(&t.sdk_app_id) && !t.unconfirmed)
            .cloned()
            .collect();
        let mut apps: Vec<(u64, RecordAppStats)> = inner
            .configured
            .iter()
            .map(|id| (*id, inner.apps.get(id).cloned().unwrap_or_default()))
            .collect();
        drop(inner);
        tasks.sort_by(|a, b| (a.sdk_app_id, &a.task_id).cmp(&(b.sdk_app_id, &b.task_id)));
        apps.sort_by_key(|(id, _)| *id);
        (tasks, apps)
    }

    /// A copy of one recording.
    pub fn get(&self, sdk_app_id: u64, task_id: &str) -> Option<RecordTask> {
        self.lock().tasks.get(&(sdk_app_id, task_id.to_string())).cloned()
    }

    pub fn len(&self) -> usize {
        self.lock().tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The changes since the last batch, as one consistent cut.
    pub fn take_batch(&self) -> RecordBatch {
        let mut inner = self.lock();
        let dirty = std::mem::take(&mut inner.dirty);
        let removed = std::mem::take(&mut inner.removed);
        let apps_dirty = std::mem::take(&mut inner.apps_dirty);
        RecordBatch {
            tasks: dirty.iter().filter_map(|k| inner.tasks.get(k).cloned()).collect(),
            removed: removed.into_iter().collect(),
            apps: apps_dirty
                .into_iter()
                .map(|id| (id, inner.apps.get(&id).cloned().unwrap_or_default()))
                .collect(),
        }
    }

    /// A batch the store could not write: taken again with the next one (newer state wins).
    pub fn return_batch(&self, batch: RecordBatch) {
        let mut inner = self.lock();
        for t in batch.tasks {
            let key = t.key();
            if inner.tasks.contains_key(&key) {
                inner.dirty.insert(key);
            }
        }
        for key in batch.removed {
            if !inner.tasks.contains_key(&key) {
                inner.removed.insert(key);
            }
        }
        inner.apps_dirty.extend(batch.apps.into_iter().map(|(id, _)| id));
    }
}
