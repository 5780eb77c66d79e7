//! One tracked task as the registry keeps it: what the API confirmed ([`Facts`]), what callbacks
//! claim ([`Claim`]), and what it has counted, persisted whole by the store; what is shown
//! ([`Shown`]), computed from them; and the per-app aggregates.

use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Instant;

use super::schedule::PollState;
use super::DURATION_BUCKETS;
use crate::task::{Facts, Failure, FinishReason, TaskStatus};

/// A task's label text as the renderer writes it: derived from the task's identity once, kept
/// until the identity changes, and shared with each scrape by reference, so that a scrape copies
/// a pointer per task under the registry's lock instead of building strings there.
///
/// One allocation of exactly its length holds the four parts end to end (at 10,000 tasks, four
/// strings each grown by doubling cost ~2 MiB more; issue 27).
pub struct RenderedLabels {
    text: Box<str>,
    /// Where `shared`, `info` and `failure` begin in `text`.
    shared_at: usize,
    info_at: usize,
    failure_at: usize,
}

impl RenderedLabels {
    /// The task id as it is (the series are sorted by it).
    pub fn task_id(&self) -> &str {
        &self.text[..self.shared_at]
    }
    /// `sdk_app_id="…",task_id="…",room_id="…"`, escaped.
    pub fn shared(&self) -> &str {
        &self.text[self.shared_at..self.info_at]
    }
    /// `,group_id="…",push_user_id="…"`: what the identity series has beyond `shared`.
    pub fn info(&self) -> &str {
        &self.text[self.info_at..self.failure_at]
    }
    /// `,reason="…",code="…",push_code="…",trtc_code="…"` for a task that ended badly.
    pub fn failure(&self) -> Option<&str> {
        Some(&self.text[self.failure_at..]).filter(|f| !f.is_empty())
    }
}

impl std::fmt::Debug for RenderedLabels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RenderedLabels")
            .field("task_id", &self.task_id())
            .field("shared", &self.shared())
            .field("info", &self.info())
            .field("failure", &self.failure())
            .finish()
    }
}

/// Appends `s` as a label value of the text exposition format: backslash, double quote and
/// newline escaped.
pub fn push_escaped(out: &mut String, s: &str) {
    if !s.contains(['\\', '"', '\n']) {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// The cache slot of [`RenderedLabels`]: never persisted, and never part of a task's equality.
#[derive(Debug, Clone, Default)]
pub struct LabelCache(pub Option<Arc<RenderedLabels>>);

impl PartialEq for LabelCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// Where the exporter first heard of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Source {
    Config,
    Discovery,
    Callback,
}

/// What callbacks said about a task that the API has not confirmed yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    pub facts: Facts,
    /// Unix seconds of the latest callback in the claim.
    pub at: f64,
    /// Registry sequence number of the latest callback: a poll handed out at or after it answers it.
    #[serde(skip)]
    pub(super) seq: u64,
}

/// Which counters a task has moved already, so that each moves once per task.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct Counted {
    pub(super) started: bool,
    pub(super) finished: bool,
    /// ExceptionCnt already added to `exceptions_total`.
    pub(super) exceptions: u64,
}

/// One tracked task: the record the store persists (what the API confirmed, what callbacks claim,
/// what it has counted, when the exporter saw it end) and the schedule's poll state beside it.
///
/// What `/metrics` and the pages show is never stored: [`Task::shown`] computes it from the
/// confirmed facts and a pending claim.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub sdk_app_id: u64,
    pub task_id: String,
    /// First seen already ended (a configured id that ended before the exporter read it): its
    /// end is history, not news, so it is never counted and never pages.
    #[serde(default)]
    pub history: bool,
    /// DescribeRunningTasks listed it queued or running: whatever the API answers next, its end
    /// is one the exporter saw coming, not history.
    #[serde(default)]
    pub(super) listed_running: bool,
    /// Unix seconds when the exporter last learned anything about the task.
    pub last_update: f64,
    /// Unix seconds when the exporter saw the task end (drives retention).
    pub ended_at: Option<f64>,
    pub source: Source,
    /// What DescribeWhiteboardPush answered (`None` only in a store written before claims
    /// existed, until [`Task::from_stored`] migrates it).
    #[serde(default)]
    pub(super) confirmed: Option<Facts>,
    /// What callbacks claim and the API has not confirmed yet.
    /// Boxed: most tasks have none.
    #[serde(default)]
    pub claim: Option<Box<Claim>>,
    #[serde(default)]
    pub(super) counted: Counted,
    /// A WhiteboardPushStarted / WhiteboardPushStopped callback was applied: later copies are duplicates.
    pub(super) seen_started_event: bool,
    pub(super) seen_stopped_event: bool,
    /// The API confirmed the end: never poll again.
    pub(super) final_read: bool,
    /// A claimed end was counted on its own word, the app's API unreachable for
    /// `callback.confirm_timeout`: the task is still read, and the API's answer wins once it comes.
    #[serde(default)]
    pub(super) settled: bool,
    /// `InvalidParameter.TaskNotFound` answers in a row.
    #[serde(default)]
    pub(super) not_found: u8,
    /// RequestIds of success replies without `Status`, in a row.
    #[serde(default)]
    pub(super) no_status: Vec<String>,
    /// The schedule's state of the task (never persisted: after a restart every task is read again).
    #[serde(skip)]
    pub(super) poll: PollState,
    /// The renderer's label text for this task (see [`RenderedLabels`]).
    #[serde(skip)]
    pub label_cache: LabelCache,
}

/// What a task shows: the confirmed facts, overlaid by a pending claim where the claim is ahead
/// (its status), or where nothing confirmed says otherwise (its figures). A claim shows nothing
/// before the API has confirmed the task exists. Computed on each call; nothing of it is stored.
#[derive(Clone, Copy)]
pub struct Shown<'a> {
    confirmed: &'a Facts,
    /// The claim, once the API knows the task.
    claim: Option<&'a Facts>,
}

impl<'a> Shown<'a> {
    /// The claim if its status is ahead of the confirmed one.
    fn ahead(&self) -> Option<&'a Facts> {
        self.claim.filter(|f| f.status.rank() > self.confirmed.status.rank())
    }
    fn or_claim<T: Copy>(&self, pick: fn(&Facts) -> Option<T>) -> Option<T> {
        pick(self.confirmed).or_else(|| self.claim.and_then(pick))
    }
    pub fn status(&self) -> TaskStatus {
        self.ahead().unwrap_or(self.confirmed).status
    }
    pub fn finish_reason(&self) -> Option<FinishReason> {
        self.ahead().unwrap_or(self.confirmed).finish_reason
    }
    pub fn room_id(&self) -> Option<i64> {
        self.or_claim(|f| f.room_id)
    }
    pub fn group_id(&self) -> &'a str {
        let claim = self.claim.and_then(|f| f.group_id.as_deref());
        self.confirmed.group_id.as_deref().or(claim).unwrap_or_default()
    }
    pub fn push_user_id(&self) -> &'a str {
        let claim = self.claim.and_then(|f| f.push_user_id.as_deref());
        self.confirmed.push_user_id.as_deref().or(claim).unwrap_or_default()
    }
    pub fn push_start_time(&self) -> Option<i64> {
        self.or_claim(|f| f.push_start_time)
    }
    pub fn push_stop_time(&self) -> Option<i64> {
        self.or_claim(|f| f.push_stop_time)
    }
    pub fn im_sync_time(&self) -> Option<i64> {
        self.or_claim(|f| f.im_sync_time)
    }
    /// The larger of the confirmed and the claimed ExceptionCnt.
    pub fn exception_cnt(&self) -> u64 {
        let claimed = self.claim.and_then(|f| f.exception_cnt).unwrap_or(0);
        self.confirmed.exception_cnt.unwrap_or(0).max(claimed)
    }
    /// Why it failed or ended badly, as Tencent said it (the API's, or a shown claim's).
    pub fn failure(&self) -> Option<&'a Failure> {
        let claim = self.claim.and_then(|f| f.failure.as_deref());
        self.confirmed.failure.as_deref().or(claim)
    }

    /// Push duration, stop − start, of an ended task (design §4: a running task's age is
    /// `time() - tiw_push_task_start_timestamp_seconds`, not a series of its own).
    pub fn duration(&self) -> Option<f64> {
        if !self.status().is_ended() {
            return None;
        }
        let start = self.push_start_time().filter(|s| *s > 0)?;
        let stop = self.push_stop_time().filter(|s| *s > 0)?;
        Some((stop - start).max(0) as f64)
    }

    /// The `reason`, `code`, `push_code` and `trtc_code` of the task's failure series: for a task
    /// that ended with EXCEPTION or FAILED.
    pub fn failure_label_values(&self) -> Option<[String; 4]> {
        let reason = self
            .finish_reason()
            .filter(|r| self.status().is_ended() && matches!(r, FinishReason::Exception | FinishReason::Failed))?;
        let f = self.failure();
        let num = |n: Option<i64>| n.map(|n| n.to_string()).unwrap_or_default();
        Some([
            reason.as_str().to_string(),
            f.map(|f| f.code.clone()).unwrap_or_default(),
            num(f.and_then(|f| f.push_code)),
            num(f.and_then(|f| f.trtc_code)),
        ])
    }

    /// The shown facts as one [`Facts`], for counting a claim that could not be confirmed.
    pub(super) fn to_facts(self) -> Facts {
        Facts {
            status: self.status(),
            finish_reason: self.finish_reason(),
            room_id: self.room_id(),
            group_id: Some(self.group_id().to_string()),
            push_user_id: Some(self.push_user_id().to_string()),
            push_start_time: self.push_start_time(),
            push_stop_time: self.push_stop_time(),
            exception_cnt: Some(self.exception_cnt()),
            im_sync_time: self.im_sync_time(),
            failure: self.failure().cloned().map(Box::new),
            truncated: 0,
        }
    }
}

/// What a store written before claims existed kept beside a task's shown facts (which were
/// confirmed, and counted as these say).
#[derive(Deserialize)]
struct LegacyCounted {
    #[serde(default)]
    started_counted: bool,
    #[serde(default)]
    finished_counted: bool,
}

impl Task {
    pub(super) fn new(sdk_app_id: u64, task_id: String, source: Source, now: f64) -> Task {
        Task {
            sdk_app_id,
            task_id,
            history: false,
            listed_running: false,
            last_update: now,
            ended_at: None,
            source,
            confirmed: Some(Facts::default()),
            claim: None,
            counted: Counted::default(),
            seen_started_event: false,
            seen_stopped_event: false,
            final_read: false,
            settled: false,
            not_found: 0,
            no_status: Vec::new(),
            poll: PollState {
                needs_poll: true,
                tracked_at: Some(Instant::now()),
                ..PollState::default()
            },
            label_cache: LabelCache::default(),
        }
    }

    /// A task from its stored JSON. A task from a store written before claims existed kept only
    /// what it showed: that was confirmed and counted, so it becomes the confirmed facts.
    pub fn from_stored(json: &[u8]) -> serde_json::Result<Task> {
        let mut task: Task = serde_json::from_slice(json)?;
        if task.confirmed.is_none() {
            let shown: Facts = serde_json::from_slice(json)?;
            let counted: LegacyCounted = serde_json::from_slice(json)?;
            task.counted = Counted {
                started: counted.started_counted,
                finished: counted.finished_counted,
                exceptions: shown.exception_cnt.unwrap_or(0),
            };
            if shown.status.is_ended() && shown.finish_reason.is_none() {
                task.final_read = false;
            }
            task.confirmed = Some(Facts {
                group_id: shown.group_id.filter(|g| !g.is_empty()),
                push_user_id: shown.push_user_id.filter(|u| !u.is_empty()),
                ..shown
            });
        }
        Ok(task)
    }

    /// What the task shows (see [`Shown`]).
    pub fn shown(&self) -> Shown<'_> {
        let confirmed = self.confirmed();
        Shown {
            confirmed,
            // Nothing of a claim shows before the API has confirmed the task exists.
            claim: self
                .claim
                .as_ref()
                .map(|c| &c.facts)
                .filter(|_| confirmed.status != TaskStatus::Unknown),
        }
    }

    /// Whether the API has ever answered for this task with its state (or its failure). Until it
    /// has, a callback's claim about it is not shown: anyone holding one captured Sign can name
    /// made-up task ids, and a made-up id must never show as a finish, let alone page.
    pub fn api_known(&self) -> bool {
        self.confirmed().status != TaskStatus::Unknown
    }

    /// A task only a callback named, that the API has not confirmed yet: its reads wait in its
    /// app's lane of claims, behind the confirming reads of known tasks and the first reads of
    /// discovered ones, and it counts against the app's cap on such tasks, not `retention.max_tasks`.
    pub fn in_claims_lane(&self) -> bool {
        self.source == Source::Callback && !self.api_known()
    }

    /// Owes the task a poll ahead of every task that is merely new.
    pub(super) fn expedite(&mut self) {
        self.poll.needs_poll = true;
        self.poll.urgent = true;
    }

    /// Whether the poller should still read this task.
    pub fn is_pollable(&self) -> bool {
        !self.final_read
    }

    /// What the API confirmed.
    pub fn confirmed(&self) -> &Facts {
        static NOTHING: Facts = Facts {
            status: TaskStatus::Unknown,
            finish_reason: None,
            room_id: None,
            group_id: None,
            push_user_id: None,
            push_start_time: None,
            push_stop_time: None,
            exception_cnt: None,
            im_sync_time: None,
            failure: None,
            truncated: 0,
        };
        self.confirmed.as_ref().unwrap_or(&NOTHING)
    }

    pub(super) fn confirmed_mut(&mut self) -> &mut Facts {
        self.confirmed.get_or_insert_with(Facts::default)
    }

    /// Keeps what follows from the record current after a change: when the exporter saw the task
    /// end, and the label text (rebuilt here, at the change, only if it differs, so that a scrape
    /// only copies a pointer).
    pub(super) fn refresh(&mut self, now: f64) {
        if self.shown().status().is_ended() {
            self.ended_at.get_or_insert(now);
        } else {
            self.ended_at = None;
        }
        let labels = self.rendered_labels();
        if self.label_cache.0.as_deref().is_none_or(|l| l.text != labels.text) {
            self.label_cache = LabelCache(Some(Arc::new(labels)));
        }
    }

    /// The task's label text (built now if it never was, as for a task restored from the store).
    pub fn labels(&mut self) -> Arc<RenderedLabels> {
        if let Some(l) = &self.label_cache.0 {
            return l.clone();
        }
        let l = Arc::new(self.rendered_labels());
        self.label_cache = LabelCache(Some(l.clone()));
        l
    }

    /// The labels every per-task series shares, and the identity series', escaped as the text
    /// exposition format wants them.
    fn rendered_labels(&self) -> RenderedLabels {
        use std::fmt::Write as _;
        let shown = self.shown();
        let mut text = String::with_capacity(256);
        text.push_str(&self.task_id);
        let shared_at = text.len();
        let _ = write!(text, "sdk_app_id=\"{}\",task_id=\"", self.sdk_app_id);
        push_escaped(&mut text, &self.task_id);
        text.push_str("\",room_id=\"");
        if let Some(r) = shown.room_id() {
            let _ = write!(text, "{r}");
        }
        text.push('"');
        let info_at = text.len();
        text.push_str(",group_id=\"");
        push_escaped(&mut text, shown.group_id());
        text.push_str("\",push_user_id=\"");
        push_escaped(&mut text, shown.push_user_id());
        text.push('"');
        let failure_at = text.len();
        if let Some(values) = shown.failure_label_values() {
            for (k, v) in ["reason", "code", "push_code", "trtc_code"].iter().zip(&values) {
                text.push(',');
                text.push_str(k);
                text.push_str("=\"");
                push_escaped(&mut text, v);
                text.push('"');
            }
        }
        RenderedLabels {
            text: text.into_boxed_str(),
            shared_at,
            info_at,
            failure_at,
        }
    }

    /// Moves the app's counters by what `facts` add to what this task counted; each counter moves
    /// once per task, ExceptionCnt by its increase. Returns whether anything moved.
    pub(super) fn count(&mut self, facts: &Facts, stats: &mut AppStats) -> bool {
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
    pub(super) fn observe(&mut self, v: f64) {
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
