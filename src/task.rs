//! Plain domain types shared by every layer: a task's status and finish reason, what one poll or
//! callback says about a task ([`Facts`]), the task-id rule, and the wall clock.
//!
//! Nothing here does I/O or knows about the wire: config, registry, the API layer and the callback
//! receiver all depend on this module, and it depends on none of them.

use serde::{Deserialize, Serialize};

/// Status of a task as the exporter knows it (design §4: the five values of the state set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
pub enum TaskStatus {
    Prepared,
    Pushing,
    Stopped,
    Failed,
    /// Not known yet, or Tencent does not know the id.
    #[default]
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

    /// Position in the lifecycle; what the API confirmed never moves to a lower rank.
    pub fn rank(self) -> u8 {
        match self {
            TaskStatus::Unknown => 0,
            TaskStatus::Prepared => 1,
            TaskStatus::Pushing => 2,
            TaskStatus::Stopped | TaskStatus::Failed => 3,
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// Why a task ended (design §4): Tencent's three documented reasons, `Failed` for a task that failed
/// outright, `Other` for a stop whose reason is missing or undocumented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum FinishReason {
    Auto,
    UserCall,
    Exception,
    Failed,
    Other,
}

impl FinishReason {
    pub const ALL: [FinishReason; 5] = [
        FinishReason::Auto,
        FinishReason::UserCall,
        FinishReason::Exception,
        FinishReason::Failed,
        FinishReason::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Auto => "AUTO",
            FinishReason::UserCall => "USER_CALL",
            FinishReason::Exception => "EXCEPTION",
            FinishReason::Failed => "FAILED",
            FinishReason::Other => "OTHER",
        }
    }

    /// Tencent's documented FinishReason values.
    pub fn from_tencent(s: &str) -> Option<FinishReason> {
        match s {
            "AUTO" => Some(FinishReason::Auto),
            "USER_CALL" => Some(FinishReason::UserCall),
            "EXCEPTION" => Some(FinishReason::Exception),
            _ => None,
        }
    }

    /// The reason of a stop: a documented value, else `Other` (missing, empty or undocumented:
    /// the stop still happened, design §3).
    pub fn of_stop(s: Option<&str>) -> FinishReason {
        s.and_then(FinishReason::from_tencent).unwrap_or(FinishReason::Other)
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// One answer of DescribeWhiteboardPush, in domain terms: what the API client makes of a reply
/// and what the registry applies (one type for both).
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// A success reply with a status.
    State(Facts),
    /// A success reply with no `Status` at all, with its RequestId: how Tencent's international
    /// API page answers for a failed task ("Querying failed whiteboard push tasks").
    NoStatus(String),
    /// `FailedOperation.WhiteboardPush`: the task failed; Tencent's message says why.
    Failed(String),
    /// `InvalidParameter.TaskNotFound`.
    NotFound,
}

/// What is known of a task: what one poll answer or one callback says, or what the registry has
/// gathered from many of them (the API's side, or the callbacks' claim). `Unknown` and `None` mean
/// "not said"; [`Facts::absorb`] folds one into another.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Facts {
    #[serde(default)]
    pub status: TaskStatus,
    pub finish_reason: Option<FinishReason>,
    pub room_id: Option<i64>,
    pub group_id: Option<String>,
    pub push_user_id: Option<String>,
    pub push_start_time: Option<i64>,
    pub push_stop_time: Option<i64>,
    pub exception_cnt: Option<u64>,
    pub im_sync_time: Option<i64>,
    /// Why it failed (`FailedOperation.WhiteboardPush` from the API) or what went wrong (a
    /// Stopped event's `Error`), as Tencent said it, as first said. Boxed: most tasks have none.
    #[serde(default)]
    pub failure: Option<Box<Failure>>,
    /// How many text fields of a report were cut to [`MAX_LABEL_BYTES`] on the way in (counted on
    /// `/metrics`); 0 in what the registry gathers.
    #[serde(skip)]
    pub truncated: u8,
}

/// Sets `slot` to `v` unless it already holds a value: how reports keep identities and times as
/// first known.
pub(crate) fn keep_first<T: Clone>(slot: &mut Option<T>, v: Option<&T>) {
    if slot.is_none() {
        *slot = v.cloned();
    }
}

impl Facts {
    /// Folds one report in: identities and times are kept as first known, the status only moves
    /// forward (taking the report's finish reason when it ends), ExceptionCnt never decreases.
    pub fn absorb(&mut self, report: &Facts) {
        keep_first(&mut self.room_id, report.room_id.filter(|r| *r != 0).as_ref());
        keep_first(&mut self.group_id, report.group_id.as_ref().filter(|g| !g.is_empty()));
        keep_first(
            &mut self.push_user_id,
            report.push_user_id.as_ref().filter(|u| !u.is_empty()),
        );
        keep_first(
            &mut self.push_start_time,
            report.push_start_time.filter(|s| *s > 0).as_ref(),
        );
        keep_first(
            &mut self.push_stop_time,
            report.push_stop_time.filter(|s| *s > 0).as_ref(),
        );
        keep_first(&mut self.im_sync_time, report.im_sync_time.filter(|s| *s > 0).as_ref());
        keep_first(&mut self.failure, report.failure.as_ref());
        if let Some(n) = report.exception_cnt {
            self.exception_cnt = Some(self.exception_cnt.map_or(n, |old| old.max(n)));
        }
        if report.status.rank() > self.status.rank() {
            self.status = report.status;
            if report.status.is_ended() {
                self.finish_reason = Some(match report.status {
                    TaskStatus::Failed => FinishReason::Failed,
                    _ => report
                        .finish_reason
                        .filter(|r| *r != FinishReason::Failed)
                        .unwrap_or(FinishReason::Other),
                });
            }
        }
    }
}

/// Tencent's error codes a failure is labelled with; any other is `other`. Sources: Tencent's
/// DescribeWhiteboardPush page (`FailedOperation.WhiteboardPush`: the task failed), the
/// WhiteboardPushStopped event's page ("Error.Code … 错误码为 FailedOperation.Record"), the Go
/// SDK's `errors.go` (`FailedOperation`), and the international page's "querying failed whiteboard
/// push tasks" reply without `Status` (`NoStatus`, the exporter's name for it).
pub const FAILURE_CODES: [&str; 4] = [
    "FailedOperation.WhiteboardPush",
    "FailedOperation.Record",
    "FailedOperation",
    "NoStatus",
];

/// The longest piece of Tencent's failure message kept and shown.
pub const FAILURE_MESSAGE_LIMIT: usize = 200;

/// Why a task failed or ended badly, as Tencent said it, bounded: the code from
/// [`FAILURE_CODES`] or `other`, the message cut to [`FAILURE_MESSAGE_LIMIT`], and the two codes
/// Tencent's documented message carries ("code: 40006, msg: …, TRTC onError, code: -70003, msg:
/// The UserSig in use is illegal.": the push service's, then TRTC's).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub code: String,
    pub message: String,
    pub push_code: Option<i64>,
    pub trtc_code: Option<i64>,
}

impl Failure {
    /// From Tencent's code and message.
    pub fn new(code: &str, message: &str) -> Failure {
        let code = FAILURE_CODES
            .iter()
            .find(|c| **c == code)
            .map_or("other", |c| c)
            .to_string();
        Failure {
            code,
            message: truncate(message, FAILURE_MESSAGE_LIMIT).to_string(),
            push_code: message.strip_prefix("code: ").and_then(leading_code),
            trtc_code: message
                .split_once("TRTC onError, code: ")
                .and_then(|(_, rest)| leading_code(rest)),
        }
    }
}

/// The integer at the start of `s` (up to a comma, space or the end), if it is a plausible code.
fn leading_code(s: &str) -> Option<i64> {
    let end = s.find([',', ' ']).unwrap_or(s.len());
    s[..end].parse::<i64>().ok().filter(|n| n.abs() < 100_000_000)
}

impl Facts {
    /// Cuts `GroupId` and `PushUserId` to [`MAX_LABEL_BYTES`]: they become label values of every
    /// scrape, and a sender must not be able to make each task's series tens of kilobytes long.
    pub fn bounded(mut self) -> Facts {
        for field in [&mut self.group_id, &mut self.push_user_id].into_iter().flatten() {
            if field.len() > MAX_LABEL_BYTES {
                let mut end = MAX_LABEL_BYTES;
                while !field.is_char_boundary(end) {
                    end -= 1;
                }
                field.truncate(end);
                self.truncated += 1;
            }
        }
        self
    }
}

/// `retention.max_tasks` unless set (design §5): tracked tasks at most.
pub const DEFAULT_MAX_TASKS: usize = 100_000;

/// The longest label value taken from the network (`GroupId`, `PushUserId`), in bytes.
pub const MAX_LABEL_BYTES: usize = 256;

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

/// Unix seconds now: the one wall clock of the crate.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// `s` cut to at most `max` characters, with `…` when something was cut. The one truncation
/// helper for text from the network that goes into logs.
pub fn truncate(s: &str, max: usize) -> String {
    let mut chars = s.chars();
    let mut out: String = chars.by_ref().take(max).collect();
    if chars.next().is_some() {
        out.push('…');
    }
    out
}

/// The two push events TIW calls back with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PushEvent {
    Started,
    Stopped,
}

impl PushEvent {
    /// The `EventType` TIW sends, which is also the `event_type` label.
    pub fn event_type(self) -> &'static str {
        match self {
            PushEvent::Started => "WhiteboardPushStarted",
            PushEvent::Stopped => "WhiteboardPushStopped",
        }
    }

    /// The event that claims a status: a claimed end is a Stopped event, anything else a Started.
    pub fn claiming(status: TaskStatus) -> PushEvent {
        if status.is_ended() {
            PushEvent::Stopped
        } else {
            PushEvent::Started
        }
    }
}

/// Task ids Tencent answered TaskNotFound for and that were dropped, each remembered for `ttl`
/// seconds and at most `max` of them (the oldest forgotten first), so that a made-up id sent again
/// costs no API call. Keyed by app and task id; the push and the recording registry keep one each.
#[derive(Debug, Default)]
pub struct Refuted {
    at: std::collections::HashMap<(u64, String), f64>,
    order: std::collections::VecDeque<(f64, (u64, String))>,
}

impl Refuted {
    /// Remembers `key` as refuted at `now`, forgetting the oldest past `max` and those past `ttl`.
    pub fn insert(&mut self, key: (u64, String), now: f64, (max, ttl): (usize, f64)) {
        if self.at.insert(key.clone(), now).is_none() {
            self.order.push_back((now, key));
        }
        while self.order.len() > max || self.order.front().is_some_and(|(at, _)| *at + ttl < now) {
            if let Some((at, key)) = self.order.pop_front() {
                if self.at.get(&key) == Some(&at) {
                    self.at.remove(&key);
                }
            }
        }
    }

    /// Whether `key` was refuted within `ttl` seconds of `now`.
    pub fn contains(&self, key: &(u64, String), now: f64, ttl: f64) -> bool {
        self.at.get(key).is_some_and(|at| *at + ttl >= now)
    }

    /// Forgets `key` (the API's own list names it: not made up after all).
    pub fn remove(&mut self, key: &(u64, String)) {
        self.at.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_label_values_are_cut_on_a_character_boundary() {
        let obs = Facts {
            group_id: Some("g".repeat(30_000)),
            push_user_id: Some(format!("{}é", "u".repeat(255))),
            ..Default::default()
        }
        .bounded();
        assert_eq!(obs.group_id.as_deref().map(str::len), Some(MAX_LABEL_BYTES));
        assert_eq!(obs.push_user_id.as_deref(), Some("u".repeat(255).as_str()));
        assert_eq!(obs.truncated, 2);
        let short = Facts {
            group_id: Some("880528".into()),
            ..Default::default()
        }
        .bounded();
        assert_eq!((short.group_id.as_deref(), short.truncated), (Some("880528"), 0));
    }
}
