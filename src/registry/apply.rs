//! How the two kinds of report reach a task: an **answer** of DescribeWhiteboardPush is folded
//! into the confirmed facts and judges a pending claim; a callback's **claim** is recorded, shown
//! where the API already knows the task, and asks for its confirming poll; claims the API could
//! not confirm for `callback.confirm_timeout` are counted on their own word (design §3).

use std::time::{Duration, Instant};

use super::{
    unix_now, Answer, AnswerApplied, CallbackApplied, Claim, Facts, Failure, FinishReason, Inner, Key, PushEvent,
    Source, Task, TaskRegistry, TaskStatus, CLAIM_FUTURE, CLAIM_PAST, NOT_FOUND_LIMIT, NO_STATUS_LIMIT,
};

impl TaskRegistry {
    /// Applies an answer of DescribeWhiteboardPush and records the poll's end.
    ///
    /// The answer is the truth: it is folded into the confirmed facts and moves the counters. A
    /// pending claim is settled by an answer to a poll handed out after it: kept where the answer
    /// agrees, counted `contradicted` where the claim was ahead of the answer. An answer to a poll
    /// handed out before the latest claim cannot judge it, so another poll is owed.
    /// `park_for` is how long a configured task Tencent does not know waits for its next read.
    pub fn apply_answer(&self, sdk_app_id: u64, task_id: &str, answer: &Answer, park_for: Duration) -> AnswerApplied {
        let key = (sdk_app_id, task_id.to_string());
        Self::apply_answer_in(&mut self.lock(), key, answer, park_for)
    }

    /// [`TaskRegistry::apply_answer`] for the answer to a poll, and the poll marked done
    /// ([`TaskRegistry::finish_poll`]) under the same lock: one acquisition per answered poll.
    pub fn answer_poll(
        &self,
        (sdk_app_id, task_id): (u64, &str),
        answer: &Answer,
        park_for: Duration,
        at: Instant,
    ) -> AnswerApplied {
        let key = (sdk_app_id, task_id.to_string());
        let mut inner = self.lock();
        let out = Self::apply_answer_in(&mut inner, key.clone(), answer, park_for);
        inner.finish_poll(&key, at);
        out
    }

    fn apply_answer_in(inner: &mut Inner, key: Key, answer: &Answer, park_for: Duration) -> AnswerApplied {
        let now = unix_now();
        let sdk_app_id = key.0;
        let mut out = AnswerApplied::default();
        let Inner { tasks, apps, .. } = &mut *inner;
        let Some(task) = tasks.get_mut(&key) else {
            return out;
        };
        let stats = apps.entry(sdk_app_id).or_default();
        let was_ended = task.confirmed().status.is_ended();
        // A configured id whose very first answer is an end, with no callback about it: it ended
        // before the exporter could see it, so its end is history, not news (never counted, never
        // paged; it leaves with retention counted from its PushStopTime).
        let first_word = task.confirmed().status == TaskStatus::Unknown
            && !task.listed_running
            && task.claim.is_none()
            && !task.seen_started_event
            && !task.seen_stopped_event;
        let answers_claim = task.claim.as_ref().is_some_and(|c| task.poll.poll_seq >= c.seq);
        task.last_update = now;
        match answer {
            Answer::State(obs) => {
                task.not_found = 0;
                task.no_status.clear();
                task.confirmed_mut().absorb(obs);
            }
            Answer::Failed(message) => {
                task.not_found = 0;
                task.no_status.clear();
                task.confirmed_mut().absorb(&Facts {
                    status: TaskStatus::Failed,
                    failure: Some(Box::new(Failure::new("FailedOperation.WhiteboardPush", message))),
                    ..Default::default()
                });
            }
            Answer::NoStatus(request_id) => {
                task.not_found = 0;
                task.no_status.push(request_id.clone());
                if task.no_status.len() >= NO_STATUS_LIMIT {
                    let request_ids = std::mem::take(&mut task.no_status);
                    let message = format!(
                        "DescribeWhiteboardPush answered without Status {NO_STATUS_LIMIT} times in a row (RequestIds {})",
                        request_ids.join(", ")
                    );
                    out.failed_without_status = Some(request_ids);
                    task.confirmed_mut().absorb(&Facts {
                        status: TaskStatus::Failed,
                        failure: Some(Box::new(Failure::new("NoStatus", &message))),
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
                let event = PushEvent::claiming(claim.facts.status);
                out.contradicted = Some((event, claim.facts.status, claim.facts.finish_reason));
                // What was reverted was never confirmed: TIW's genuine event, when it comes, is
                // applied (and counted once), not taken for a copy of the forged one.
                match event {
                    PushEvent::Started => task.seen_started_event = false,
                    PushEvent::Stopped => task.seen_stopped_event = false,
                }
                task.claim = None;
                task.settled = false;
            } else if !behind {
                task.claim = None;
            } else {
                task.expedite();
            }
        }
        let confirmed = task.confirmed().clone();
        if first_word && confirmed.status.is_ended() {
            task.history = true;
            if let Some(stop) = confirmed.push_stop_time.filter(|s| (*s as f64) < now) {
                task.ended_at = Some(stop as f64);
            }
        }
        if !task.history {
            task.count(&confirmed, stats);
        }
        task.refresh(now);
        let shown = task.shown();
        (out.room_id, out.duration, out.exceptions) = (shown.room_id(), shown.duration(), shown.exception_cnt());
        if confirmed.status.is_ended() && !was_ended && !task.history {
            out.ended = confirmed.finish_reason;
        }
        if task.not_found >= NOT_FOUND_LIMIT && !confirmed.status.is_ended() {
            if task.source == Source::Config {
                let until = Instant::now() + park_for;
                task.poll.parked_until = Some(until);
                task.not_found = 0;
                inner.schedule.parked.insert((until, key.clone()));
                out.parked = true;
            } else {
                inner.remove_task(&key, None);
                inner.refute(key, now);
                out.dropped = true;
                return out;
            }
        }
        if confirmed.status.is_ended() {
            inner.set_final(&key);
        }
        inner.touch(&key);
        inner.sync(&key);
        out
    }

    /// Applies a DescribeWhiteboardPush reply with a status, as if answering a fresh poll.
    pub fn observe_poll(&self, sdk_app_id: u64, task_id: &str, obs: &Facts) -> AnswerApplied {
        self.mark_poll_sent(sdk_app_id, task_id);
        self.apply_answer(sdk_app_id, task_id, &Answer::State(obs.clone()), Duration::ZERO)
    }

    /// Applies a verified push callback as a claim: tracks its task if new, applies each event once,
    /// shows the claim at once when the API has confirmed the task exists (a task only a callback
    /// named shows nothing of it until its first read answers) and asks for the confirming
    /// DescribeWhiteboardPush.
    pub fn observe_callback(&self, sdk_app_id: u64, task_id: &str, event: PushEvent, obs: &Facts) -> CallbackApplied {
        let now = unix_now();
        let key = (sdk_app_id, task_id.to_string());
        let obs = near_now(obs, now);
        let result = {
            let mut inner = self.lock();
            if inner.tombstones.contains_key(&key) {
                return CallbackApplied::Duplicate;
            }
            if !inner.tasks.contains_key(&key) {
                if inner.is_refuted(&key, now) {
                    return CallbackApplied::Refuted;
                }
                if inner.unconfirmed_of(sdk_app_id) >= inner.max_unconfirmed {
                    return CallbackApplied::Full;
                }
                inner.schedule.lane_seq += 1;
                let mut task = Task::new(sdk_app_id, task_id.to_string(), Source::Callback, now);
                task.poll.lane_seq = inner.schedule.lane_seq;
                inner.tasks.insert(key.clone(), Box::new(task));
                inner.apps.entry(sdk_app_id).or_default();
            }
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
                inner.sync(&key);
                return CallbackApplied::Duplicate;
            }
            *seen = true;
            let was_ended = task.shown().status().is_ended();
            task.last_update = now;
            if !task.final_read {
                let claim = task.claim.get_or_insert_with(|| {
                    Box::new(Claim {
                        facts: Facts::default(),
                        at: now,
                        seq,
                    })
                });
                claim.facts.absorb(&obs);
                claim.at = now;
                claim.seq = seq;
                task.expedite();
                task.refresh(now);
            }
            let ended = task.shown().status().is_ended() && !was_ended;
            inner.touch(&key);
            inner.sync(&key);
            CallbackApplied::Accepted { ended }
        };
        self.want_poll();
        result
    }

    /// Counts the claims the API could not confirm: those of `sdk_app_id` pending for at least
    /// `timeout` with no answer from the app's API since they arrived (`last_answer`, unix
    /// seconds) and the poller running for at least `timeout` (`since`). Each counter still moves
    /// once per task, and only for tasks the API confirmed exist (a made-up id never counts), with
    /// the claim's figures as bounded on arrival; a claim's ExceptionCnt is never added to
    /// `exceptions_total`. The task is still read: once the API answers, its answer wins what is
    /// shown (counters never go back). A claimed end counted this way leaves with retention, so
    /// an API that never comes back cannot keep it forever. Returns the ids whose counters moved,
    /// to be logged as unconfirmed.
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
        let Inner {
            tasks,
            apps,
            journal,
            claimed,
            ..
        } = &mut *inner;
        let stats = apps.entry(sdk_app_id).or_default();
        let mut settled = Vec::new();
        let mut ended = Vec::new();
        // Only the app's tasks with a pending claim: a pass costs what it touches.
        for id in claimed.get(&sdk_app_id).into_iter().flatten() {
            let key = (sdk_app_id, id.clone());
            let Some(task) = tasks.get_mut(&key) else { continue };
            let Some(claim) = &task.claim else { continue };
            let unconfirmable = now - claim.at >= timeout && last_answer.is_none_or(|a| a < claim.at);
            if unconfirmable && task.api_known() && !task.settled {
                let shown = Facts {
                    exception_cnt: task.confirmed().exception_cnt,
                    ..task.shown().to_facts()
                };
                if task.count(&shown, stats) {
                    journal.task_only(&key);
                    settled.push(task.task_id.clone());
                }
                if shown.status.is_ended() {
                    task.settled = true;
                    journal.task_only(&key);
                    ended.push(key.clone());
                }
            }
        }
        for key in ended {
            inner.set_settled(&key);
        }
        if !settled.is_empty() {
            inner.journal.apps();
        }
        settled
    }
}

/// `obs` with the times a claim may carry: PushStartTime and PushStopTime within
/// [`CLAIM_PAST`] before and [`CLAIM_FUTURE`] after `now`, the rest dropped.
fn near_now(obs: &Facts, now: f64) -> Facts {
    let near = |t: Option<i64>| t.filter(|t| (now - CLAIM_PAST..=now + CLAIM_FUTURE).contains(&(*t as f64)));
    Facts {
        push_start_time: near(obs.push_start_time),
        push_stop_time: near(obs.push_stop_time),
        ..obs.clone()
    }
}
