//! The poll schedule: which task is read next. Every pollable task that is neither in flight nor
//! parked sits in one ordered set (wanted now first, then never polled, then least recently
//! polled), so picking the next one is O(log n) and ended tasks cost nothing; parked tasks wait in
//! another by the time they may be read again, and PREPARED tasks in a third by the time they are
//! read again ahead of the round robin.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use super::{Inner, Key, Task, TaskRegistry, TaskStatus};

/// (rank, last polled, SdkAppId, TaskId): the poll order.
pub(super) type OrderKey = (u8, Option<Instant>, u64, String);

/// Which task is read next, over the whole registry: every pollable task that is neither in
/// flight nor parked sits in its app's queue in poll order (wanted now first, then never polled,
/// then least recently polled), or, if only a callback named it, in its app's lane of claims;
/// parked and PREPARED tasks wait by time. Picking the next task of a credential group costs a
/// look at the head of each of its apps' queues, whatever the rest of the fleet, and ended tasks
/// cost nothing. Invariant, kept by [`Inner::sync`] (or [`Inner::file`] where only a task's poll
/// state changed): a task is filed (in its app's queue under
/// [`order_key`], or its lane) iff [`Inner::queued`], and its [`PollState::filed`] says where.
pub(super) struct Schedule {
    pub(super) queues: HashMap<u64, BTreeSet<OrderKey>>,
    /// Queued tasks only a callback named, per app, in claim order (see [`Task::in_claims_lane`]).
    pub(super) lanes: BTreeMap<u64, BTreeSet<(u64, String)>>,
    /// Parked tasks by the time they may be read again.
    pub(super) parked: BTreeSet<(Instant, Key)>,
    /// PREPARED tasks by the time they are read again, ahead of the round robin: a task stuck
    /// PREPARED is an alert, so it may not wait a whole sweep of a large fleet.
    pub(super) prepared_due: BTreeSet<(Instant, Key)>,
    /// How often a PREPARED task is read (`poll.interval`).
    pub(super) prepared_every: Duration,
    /// Last place handed out in a lane, the app whose lane was served last, and whether the lanes
    /// have the next turn against the round robin.
    pub(super) lane_seq: u64,
    pub(super) lane_cursor: u64,
    pub(super) lane_turn: bool,
}

impl Schedule {
    pub(super) fn new(prepared_every: Duration) -> Schedule {
        Schedule {
            queues: HashMap::new(),
            lanes: BTreeMap::new(),
            parked: BTreeSet::new(),
            prepared_due: BTreeSet::new(),
            prepared_every,
            lane_seq: 0,
            lane_cursor: 0,
            lane_turn: false,
        }
    }
}

/// One task's state in the schedule, kept with the task (a separate map would cost another entry
/// per task) and never persisted: after a restart every task is read again.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PollState {
    /// A poll is owed soon: the task is new, or a claim waits for its confirming poll.
    pub(super) needs_poll: bool,
    /// The poll owed is urgent, ahead even of tasks never read: it confirms a callback's claim or
    /// the running list's hint, or the task is PREPARED and due. After a restart every task is
    /// owed a first read; an end the list reveals may not wait behind all of them.
    pub(super) urgent: bool,
    pub(super) polling: bool,
    pub(super) last_polled: Option<Instant>,
    /// Registry sequence number when the poll in flight was handed out.
    pub(super) poll_seq: u64,
    /// A configured task Tencent does not know: not read again before this.
    pub(super) parked_until: Option<Instant>,
    /// When this process began tracking the task (`None`: restored from the store).
    pub(super) tracked_at: Option<Instant>,
    /// Missing from DescribeRunningTasks while unfinished, and already hinted for it: a task older
    /// than the list's 3-day window stays off the list while it runs, and is not hinted again.
    pub(super) off_list: bool,
    /// Place in its app's lane of callback-only claims (see [`Task::in_claims_lane`]).
    pub(super) lane_seq: u64,
    /// Where the schedule filed it, if anywhere (kept by the registry's `sync`).
    pub(super) filed: Option<Filed>,
}

/// Where a task is filed in the poll order: its app's queue under this rank and last read (with
/// its key, the task's [`OrderKey`]), or its app's lane of claims at this place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Filed {
    Queue(u8, Option<Instant>),
    Lane(u64),
}

/// Ranks of the poll order: an urgent read, then a task's first read, then the round robin.
const URGENT: u8 = 0;
const WANTED: u8 = 1;
const ROUND_ROBIN: u8 = 2;

pub(super) fn order_key(t: &Task) -> OrderKey {
    let rank = match (t.poll.needs_poll, t.poll.urgent) {
        (true, true) => URGENT,
        (true, false) => WANTED,
        (false, _) => ROUND_ROBIN,
    };
    (rank, t.poll.last_polled, t.sdk_app_id, t.task_id.clone())
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
            t.poll.polling = false;
            t.poll.needs_poll = t.claim.as_ref().is_some_and(|c| c.seq > t.poll.poll_seq) && !t.final_read;
            t.poll.urgent = t.poll.needs_poll;
            t.poll.last_polled = Some(at);
        }
        if self.tasks.get(key).is_some_and(|t| t.in_claims_lane()) {
            self.schedule.lane_seq += 1;
            let seq = self.schedule.lane_seq;
            if let Some(t) = self.tasks.get_mut(key) {
                t.poll.lane_seq = seq;
            }
        }
        if self
            .tasks
            .get(key)
            .is_some_and(|t| t.shown().status() == TaskStatus::Prepared && t.is_pollable())
        {
            let due = at + self.schedule.prepared_every;
            self.schedule.prepared_due.insert((due, key.clone()));
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
        let Some(was) = self.tasks.get(key).map(|t| t.poll.filed) else {
            return;
        };
        if was == now {
            return;
        }
        match was {
            Some(Filed::Queue(rank, last_polled)) => {
                if let Some(queue) = self.schedule.queues.get_mut(&key.0) {
                    queue.remove(&(rank, last_polled, key.0, key.1.clone()));
                    if queue.is_empty() {
                        self.schedule.queues.remove(&key.0);
                    }
                }
            }
            Some(Filed::Lane(seq)) => {
                if let Some(lane) = self.schedule.lanes.get_mut(&key.0) {
                    lane.remove(&(seq, key.1.clone()));
                    if lane.is_empty() {
                        self.schedule.lanes.remove(&key.0);
                    }
                }
            }
            None => {}
        }
        match now {
            Some(Filed::Queue(rank, last_polled)) => {
                self.schedule
                    .queues
                    .entry(key.0)
                    .or_default()
                    .insert((rank, last_polled, key.0, key.1.clone()));
            }
            Some(Filed::Lane(seq)) => {
                self.schedule
                    .lanes
                    .entry(key.0)
                    .or_default()
                    .insert((seq, key.1.clone()));
            }
            None => {}
        }
        if let Some(t) = self.tasks.get_mut(key) {
            t.poll.filed = now;
        }
    }

    /// Where a task belongs in the poll order, if anywhere.
    fn filing(t: &Task) -> Option<Filed> {
        if !Inner::queued(t) {
            None
        } else if t.in_claims_lane() {
            Some(Filed::Lane(t.poll.lane_seq))
        } else {
            let (rank, last_polled, _, _) = order_key(t);
            Some(Filed::Queue(rank, last_polled))
        }
    }

    /// The API confirmed the end: no more polls, and first in line when the registry is full.
    pub(super) fn set_final(&mut self, key: &Key) {
        if let Some(t) = self.tasks.get_mut(key) {
            t.final_read = true;
            t.poll.needs_poll = false;
            t.poll.urgent = false;
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
            .filter_map(|app| self.schedule.queues.get(app).and_then(BTreeSet::first))
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
            (Some(m), Some(_)) => m.0 == ROUND_ROBIN && self.schedule.lane_turn,
        };
        if !take {
            return Some(match (from_lane, main, lane_app) {
                (false, Some(m), _) => (m.2, m.3),
                (_, _, app) => (app.unwrap_or_default(), String::new()),
            });
        }
        if main.is_some() && lane_app.is_some() && main.as_ref().is_some_and(|m| m.0 == ROUND_ROBIN) {
            self.schedule.lane_turn = !self.schedule.lane_turn;
        }
        if from_lane {
            let app = lane_app?;
            self.schedule.lane_cursor = app;
            let (_, task_id) = self.schedule.lanes.get(&app)?.first()?;
            let key = (app, task_id.clone());
            self.refile(&key, None);
            Some(key)
        } else {
            let (_, _, app, task_id) = main?;
            let key = (app, task_id);
            self.refile(&key, None);
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
        let after = self
            .schedule
            .lanes
            .range((Excluded(self.schedule.lane_cursor), Unbounded));
        let before = self.schedule.lanes.range(..=self.schedule.lane_cursor);
        after
            .chain(before)
            .filter(|(app, _)| apps.contains(app))
            .find(|(app, lane)| {
                lane.first()
                    .and_then(|(_, id)| self.tasks.get(&(**app, id.clone())))
                    .is_some_and(|t| t.poll.last_polled.is_none_or(|p| since.is_some_and(|since| p < since)))
            })
            .map(|(app, _)| *app)
    }

    /// PREPARED tasks not read for `prepared_every` want a read now, ahead of the round robin.
    pub(super) fn wake_prepared(&mut self, now: Instant) {
        while let Some((due, key)) = self.schedule.prepared_due.first().cloned() {
            if due > now {
                break;
            }
            self.schedule.prepared_due.pop_first();
            let every = self.schedule.prepared_every;
            let wanted = self.tasks.get(&key).is_some_and(|t| {
                t.shown().status() == TaskStatus::Prepared
                    && Inner::queued(t)
                    && !t.poll.urgent
                    && t.poll.last_polled.is_none_or(|p| p + every <= now)
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
        while let Some((until, key)) = self.schedule.parked.first().cloned() {
            if until > now {
                break;
            }
            self.schedule.parked.pop_first();
            if let Some(t) = self.tasks.get_mut(&key) {
                t.poll.parked_until = None;
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
            .filter(|(_, t)| t.poll.polling)
            .map(|(k, _)| k.clone())
            .collect();
        for key in in_flight {
            if let Some(t) = inner.tasks.get_mut(&key) {
                t.poll.polling = false;
            }
            inner.file(&key);
        }
    }

    /// Records that a poll of this task is sent now (what [`TaskRegistry::next_to_poll`] does).
    pub(super) fn mark_poll_sent(&self, sdk_app_id: u64, task_id: &str) {
        let mut inner = self.lock();
        let seq = inner.seq;
        if let Some(t) = inner.tasks.get_mut(&(sdk_app_id, task_id.to_string())) {
            t.poll.poll_seq = seq;
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
                    .is_some_and(|t| t.is_pollable() && !t.shown().status().is_ended())
            })
            .collect();
        let mut hinted = 0;
        for key in keys {
            let Some(t) = inner.tasks.get_mut(&key) else {
                continue;
            };
            let hint = match listed.get(&key.1) {
                Some(false) => {
                    t.poll.off_list = false;
                    false
                }
                _ if t.poll.polling => false,
                Some(true) => true,
                None if t.poll.off_list || t.poll.tracked_at.is_some_and(|at| at >= pass_started) => false,
                None => {
                    t.poll.off_list = true;
                    true
                }
            };
            if hint && !t.poll.urgent {
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
            t.poll.polling = true;
            t.poll.poll_seq = seq;
        }
        Some(key)
    }
}
