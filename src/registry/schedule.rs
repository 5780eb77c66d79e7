//! The poll schedule: which task is read next. Every pollable task that is neither in flight nor
//! parked sits in one ordered set (wanted now first, then never polled, then least recently
//! polled), so picking the next one is O(log n) and ended tasks cost nothing; parked tasks wait in
//! another by the time they may be read again, and PREPARED tasks in a third by the time they are
//! read again ahead of the round robin.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use super::{Filed, Inner, Key, Task, TaskRegistry, TaskStatus};

/// (rank, last polled, SdkAppId, TaskId): the poll order.
pub(super) type OrderKey = (u8, Option<Instant>, u64, String);

/// Ranks of the poll order: an urgent read, then a task's first read, then the round robin.
const URGENT: u8 = 0;
const WANTED: u8 = 1;
const ROUND_ROBIN: u8 = 2;

pub(super) fn order_key(t: &Task) -> OrderKey {
    let rank = match (t.needs_poll, t.urgent) {
        (true, true) => URGENT,
        (true, false) => WANTED,
        (false, _) => ROUND_ROBIN,
    };
    (rank, t.last_polled, t.sdk_app_id, t.task_id.clone())
}

/// Key of the `finished` index: when the task ended, in milliseconds.
pub(super) fn finished_key(t: &Task) -> Option<(u64, Key)> {
    let ended = t.ended_at?;
    Some(((ended.max(0.0) * 1000.0) as u64, (t.sdk_app_id, t.task_id.clone())))
}

impl Inner {
    /// Marks the poll of `key` as done (whatever its outcome), releasing the task for the next
    /// sweep: a claim that came in while the poll was in flight still wants its own poll.
    pub(super) fn finish_poll(&mut self, key: &Key, at: Instant) {
        if let Some(t) = self.tasks.get_mut(key) {
            t.polling = false;
            t.needs_poll = t.claim.as_ref().is_some_and(|c| c.seq > t.poll_seq) && !t.final_read;
            t.urgent = t.needs_poll;
            t.last_polled = Some(at);
        }
        if self.tasks.get(key).is_some_and(|t| t.in_claims_lane()) {
            self.lane_seq += 1;
            let seq = self.lane_seq;
            if let Some(t) = self.tasks.get_mut(key) {
                t.lane_seq = seq;
            }
        }
        if self
            .tasks
            .get(key)
            .is_some_and(|t| t.status == TaskStatus::Prepared && t.is_pollable())
        {
            let due = at + self.prepared_every;
            self.prepared_due.insert((due, key.clone()));
        }
        self.file(key);
    }

    /// Files the task where it belongs now: in its app's poll order under [`order_key`], in its
    /// app's lane of claims, or nowhere (in flight, parked, read for the last time, or gone). The
    /// task remembers where it was filed ([`Filed`]), so a caller changes the task first and
    /// files it after, once; nothing has to be taken out before a change. Part of
    /// [`Inner::sync`].
    pub(super) fn file(&mut self, key: &Key) {
        let to = self.tasks.get(key).and_then(|t| Inner::filing(t));
        self.refile(key, to);
    }

    /// Moves the task from where it was filed to `now` (`None`: out of the poll order).
    pub(super) fn refile(&mut self, key: &Key, now: Option<Filed>) {
        let Some(was) = self.tasks.get(key).map(|t| t.filed) else {
            return;
        };
        if was == now {
            return;
        }
        match was {
            Some(Filed::Queue(rank, last_polled)) => {
                if let Some(queue) = self.queues.get_mut(&key.0) {
                    queue.remove(&(rank, last_polled, key.0, key.1.clone()));
                    if queue.is_empty() {
                        self.queues.remove(&key.0);
                    }
                }
            }
            Some(Filed::Lane(seq)) => {
                if let Some(lane) = self.lanes.get_mut(&key.0) {
                    lane.remove(&(seq, key.1.clone()));
                    if lane.is_empty() {
                        self.lanes.remove(&key.0);
                    }
                }
            }
            None => {}
        }
        match now {
            Some(Filed::Queue(rank, last_polled)) => {
                self.queues
                    .entry(key.0)
                    .or_default()
                    .insert((rank, last_polled, key.0, key.1.clone()));
            }
            Some(Filed::Lane(seq)) => {
                self.lanes.entry(key.0).or_default().insert((seq, key.1.clone()));
            }
            None => {}
        }
        if let Some(t) = self.tasks.get_mut(key) {
            t.filed = now;
        }
    }

    /// Where a task belongs in the poll order, if anywhere.
    fn filing(t: &Task) -> Option<Filed> {
        if !Inner::queued(t) {
            None
        } else if t.in_claims_lane() {
            Some(Filed::Lane(t.lane_seq))
        } else {
            let (rank, last_polled, _, _) = order_key(t);
            Some(Filed::Queue(rank, last_polled))
        }
    }

    /// The API confirmed the end: no more polls, and first in line when the registry is full.
    pub(super) fn set_final(&mut self, key: &Key) {
        if let Some(t) = self.tasks.get_mut(key) {
            t.final_read = true;
            t.needs_poll = false;
            t.urgent = false;
            if let Some(k) = finished_key(t) {
                self.finished.insert(k);
            }
        }
    }

    /// A claimed end counted on its own word: it leaves with retention like a confirmed one, but
    /// the task is still read (see [`TaskRegistry::settle_claims`]).
    pub(super) fn set_settled(&mut self, key: &Key) {
        if let Some(k) = self.tasks.get(key).and_then(|t| finished_key(t)) {
            self.finished.insert(k);
        }
    }

    /// The task of `apps` to poll next, if one is due (see [`TaskRegistry::next_to_poll`]); with
    /// `take`, it is taken out of the order and the lanes' turn moves on.
    ///
    /// Urgent reads and first reads of known tasks go first. The lanes of callback-only claims
    /// share what is left with the round robin, every other read while both want one, and among
    /// themselves one app at a time: a burst of claims at one app cannot starve any app's polls.
    fn pick(&mut self, apps: &[u64], since: Option<Instant>, take: bool) -> Option<Key> {
        let now = Instant::now();
        self.wake_parked(now);
        self.wake_prepared(now);
        // Each app's queue is in poll order, so the least of their heads is the best candidate;
        // if it is not due, nothing after it is.
        let main = apps
            .iter()
            .filter_map(|app| self.queues.get(app).and_then(BTreeSet::first))
            .min()
            .filter(|(rank, last_polled, _, _)| match since {
                Some(since) => *rank < ROUND_ROBIN || last_polled.is_none_or(|p| p < since),
                None => *rank < ROUND_ROBIN,
            })
            .cloned();
        let lane_app = self.next_lane(apps, since);
        let from_lane = match (&main, lane_app) {
            (None, None) => return None,
            (Some(_), None) => false,
            (None, Some(_)) => true,
            (Some(m), Some(_)) => m.0 == ROUND_ROBIN && self.lane_turn,
        };
        if !take {
            return Some(match (from_lane, main, lane_app) {
                (false, Some(m), _) => (m.2, m.3),
                (_, _, app) => (app.unwrap_or_default(), String::new()),
            });
        }
        if main.is_some() && lane_app.is_some() && main.as_ref().is_some_and(|m| m.0 == ROUND_ROBIN) {
            self.lane_turn = !self.lane_turn;
        }
        if from_lane {
            let app = lane_app?;
            self.lane_cursor = app;
            let lane = self.lanes.get_mut(&app)?;
            let (_, task_id) = lane.pop_first()?;
            if lane.is_empty() {
                self.lanes.remove(&app);
            }
            let key = (app, task_id);
            if let Some(t) = self.tasks.get_mut(&key) {
                t.filed = None;
            }
            Some(key)
        } else {
            let m = main?;
            if let Some(queue) = self.queues.get_mut(&m.2) {
                queue.remove(&m);
                if queue.is_empty() {
                    self.queues.remove(&m.2);
                }
            }
            let key = (m.2, m.3);
            if let Some(t) = self.tasks.get_mut(&key) {
                t.filed = None;
            }
            Some(key)
        }
    }

    /// The app of `apps` whose lane of claims is served next: the first after the last served
    /// whose head is due. A lane is in read order (a task read goes to its back), so its head is
    /// its least recently read task: due when never read, and in a sweep when not read since it
    /// began. Each sweep reads each such task at most once, so a full lane cannot hold a sweep open
    /// and keep the round robin from starting again.
    fn next_lane(&self, apps: &[u64], since: Option<Instant>) -> Option<u64> {
        use std::ops::Bound::{Excluded, Unbounded};
        let after = self.lanes.range((Excluded(self.lane_cursor), Unbounded));
        let before = self.lanes.range(..=self.lane_cursor);
        after
            .chain(before)
            .filter(|(app, _)| apps.contains(app))
            .find(|(app, lane)| {
                lane.first()
                    .and_then(|(_, id)| self.tasks.get(&(**app, id.clone())))
                    .is_some_and(|t| t.last_polled.is_none_or(|p| since.is_some_and(|since| p < since)))
            })
            .map(|(app, _)| *app)
    }

    /// PREPARED tasks not read for `prepared_every` want a read now, ahead of the round robin.
    pub(super) fn wake_prepared(&mut self, now: Instant) {
        while let Some((due, key)) = self.prepared_due.first().cloned() {
            if due > now {
                break;
            }
            self.prepared_due.pop_first();
            let every = self.prepared_every;
            let wanted = self.tasks.get(&key).is_some_and(|t| {
                t.status == TaskStatus::Prepared
                    && Inner::queued(t)
                    && !t.urgent
                    && t.last_polled.is_none_or(|p| p + every <= now)
            });
            if wanted {
                if let Some(t) = self.tasks.get_mut(&key) {
                    t.expedite();
                }
                self.file(&key);
            }
        }
    }

    /// Parked tasks whose time has come go back into the poll order.
    pub(super) fn wake_parked(&mut self, now: Instant) {
        while let Some((until, key)) = self.parked.first().cloned() {
            if until > now {
                break;
            }
            self.parked.pop_first();
            if let Some(t) = self.tasks.get_mut(&key) {
                t.parked_until = None;
            }
            self.file(&key);
        }
    }
}

impl TaskRegistry {
    /// Subscribes to "a task wants an early poll".
    pub fn subscribe_poll_wanted(&self) -> tokio::sync::watch::Receiver<u64> {
        self.poll_wanted.subscribe()
    }

    pub(super) fn want_poll(&self) {
        self.poll_wanted.send_modify(|n| *n = n.wrapping_add(1));
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
            inner.file(&key);
        }
    }

    /// Records that a poll of this task is sent now (what [`TaskRegistry::next_to_poll`] does).
    pub(super) fn mark_poll_sent(&self, sdk_app_id: u64, task_id: &str) {
        let mut inner = self.lock();
        let seq = inner.seq;
        if let Some(t) = inner.tasks.get_mut(&(sdk_app_id, task_id.to_string())) {
            t.poll_seq = seq;
        }
    }

    /// Marks a poll as done (whatever its outcome), releasing the task for the next sweep.
    pub fn finish_poll(&self, sdk_app_id: u64, task_id: &str, at: Instant) {
        self.lock().finish_poll(&(sdk_app_id, task_id.to_string()), at);
    }

    /// Diffs one complete DescribeRunningTasks pass of `sdk_app_id` (task id → listed `FINISHED`),
    /// begun at `pass_started`, against the registry. An unfinished task the list shows
    /// `FINISHED`, or no longer shows, goes to the front of the poll order for its confirming
    /// DescribeWhiteboardPush: the list is a hint, and only that reply ends a task. A task that
    /// stays off the list while running (older than the list's 3-day window) is hinted once, not
    /// on every pass; one tracked after the pass began is left alone, and one whose poll is in
    /// flight is left to the next pass (that poll may have been sent before the end). The hinted
    /// read is urgent: it goes ahead even of tasks never read, as after a restart. Returns how
    /// many were hinted.
    pub fn hint_running_list(&self, sdk_app_id: u64, listed: &HashMap<String, bool>, pass_started: Instant) -> usize {
        let mut inner = self.lock();
        // The app's own tasks (an index), not the whole fleet.
        let keys: Vec<Key> = inner
            .by_app
            .get(&sdk_app_id)
            .into_iter()
            .flatten()
            .map(|id| (sdk_app_id, id.clone()))
            .filter(|k| {
                inner
                    .tasks
                    .get(k)
                    .is_some_and(|t| t.is_pollable() && !t.status.is_ended())
            })
            .collect();
        let mut hinted = 0;
        for key in keys {
            let Some(t) = inner.tasks.get_mut(&key) else {
                continue;
            };
            let hint = match listed.get(&key.1) {
                Some(false) => {
                    t.off_list = false;
                    false
                }
                _ if t.polling => false,
                Some(true) => true,
                None if t.off_list || t.tracked_at.is_some_and(|at| at >= pass_started) => false,
                None => {
                    t.off_list = true;
                    true
                }
            };
            if hint && !t.urgent {
                t.expedite();
                inner.file(&key);
                hinted += 1;
            }
        }
        drop(inner);
        if hinted > 0 {
            self.want_poll();
        }
        hinted
    }

    /// Whether [`TaskRegistry::next_to_poll`] would hand out a task now.
    pub fn has_due(&self, apps: &[u64], since: Option<Instant>) -> bool {
        self.lock().pick(apps, since, false).is_some()
    }

    /// Picks the next task of `apps` to poll and marks it in flight.
    ///
    /// With `since = Some(t)`: any pollable task not polled since `t` (a sweep). With `None`: only
    /// tasks that want an early poll. Never-polled tasks come first, then the least recently polled,
    /// so a sweep that the budget cannot finish in time degrades to a fair round robin. Tasks only
    /// a callback named are read from their apps' lanes (see [`Inner::pick`]).
    pub fn next_to_poll(&self, apps: &[u64], since: Option<Instant>) -> Option<(u64, String)> {
        let mut inner = self.lock();
        let key = inner.pick(apps, since, true)?;
        let seq = inner.seq;
        if let Some(t) = inner.tasks.get_mut(&key) {
            t.polling = true;
            t.poll_seq = seq;
        }
        Some(key)
    }
}
