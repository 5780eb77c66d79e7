//! The running-task census: how many tasks of each type DescribeRunningTasks lists per status, and
//! when the oldest of them was created, from complete list passes (design §2, "The running-task
//! census"). Transcode tasks are not tracked one by one; the census is how their backlog shows.

/// The task types DescribeRunningTasks lists. Source: the Go SDK's `DescribeRunningTasksRequest`
/// (`TaskType`: "TranscodeH5 … TranscodeJPG … WhiteboardPush … OnlineRecord").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TaskType {
    WhiteboardPush,
    OnlineRecord,
    TranscodeH5,
    TranscodeJPG,
}

impl TaskType {
    pub const ALL: [TaskType; 4] = [
        TaskType::WhiteboardPush,
        TaskType::OnlineRecord,
        TaskType::TranscodeH5,
        TaskType::TranscodeJPG,
    ];

    /// Tencent's spelling, also the `task_type` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskType::WhiteboardPush => "WhiteboardPush",
            TaskType::OnlineRecord => "OnlineRecord",
            TaskType::TranscodeH5 => "TranscodeH5",
            TaskType::TranscodeJPG => "TranscodeJPG",
        }
    }

    pub fn from_tencent(s: &str) -> Option<TaskType> {
        TaskType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// A listed task's `Status`. Source: the Go SDK's `RunningTaskItem` ("QUEUED: 任务正在排队等待执行中,
/// PROCESSING: 任务正在执行中, FINISHED: 任务已完成"); anything else is `OTHER`, so the label stays
/// bounded whatever Tencent sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListedStatus {
    Queued,
    Processing,
    Finished,
    Other,
}

impl ListedStatus {
    pub const ALL: [ListedStatus; 4] = [
        ListedStatus::Queued,
        ListedStatus::Processing,
        ListedStatus::Finished,
        ListedStatus::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ListedStatus::Queued => "QUEUED",
            ListedStatus::Processing => "PROCESSING",
            ListedStatus::Finished => "FINISHED",
            ListedStatus::Other => "OTHER",
        }
    }

    pub fn of(s: Option<&str>) -> ListedStatus {
        match s {
            Some("QUEUED") => ListedStatus::Queued,
            Some("PROCESSING") => ListedStatus::Processing,
            Some("FINISHED") => ListedStatus::Finished,
            _ => ListedStatus::Other,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What one complete pass over one type's running list counted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Census {
    /// Listed tasks per [`ListedStatus`].
    pub counts: [u64; 4],
    /// Per [`ListedStatus`], the earliest creation time (unix seconds) among its listed tasks
    /// whose `CreateTime` could be read.
    pub oldest: [Option<f64>; 4],
}

impl Census {
    /// Counts one listed task, read at `now` (unix seconds).
    pub fn add(&mut self, status: Option<&str>, create_time: Option<&str>, now: f64) {
        let s = ListedStatus::of(status).index();
        self.counts[s] += 1;
        if let Some(created) = create_time.and_then(|c| created_at(c, now)) {
            self.oldest[s] = Some(self.oldest[s].map_or(created, |o| o.min(created)));
        }
    }

    pub fn count(&self, status: ListedStatus) -> u64 {
        self.counts[status.index()]
    }

    pub fn oldest(&self, status: ListedStatus) -> Option<f64> {
        self.oldest[status.index()]
    }
}

/// Beijing time, UTC+8, in seconds.
const BEIJING: i64 = 8 * 3600;
/// How far ahead of the exporter's clock a creation time may be and still be taken as read.
const CLOCK_SKEW: f64 = 300.0;

/// When a task listed at `now` was created, from `CreateTime` ("2023-03-14 15:00:00", no zone).
///
/// Tencent's sources do not say the zone: its examples and console use Beijing time, but the
/// field's doc says only "任务创建时间". Both readings are considered and the later one that is not
/// in the future is taken: a task listed now was created by now, so when the UTC reading is in
/// the future the zone must be Beijing; when both are in the past the age is never overstated, and a
/// backlog alert never fires from a zone misread (it can fire up to 8 h late only for a task created
/// more than 8 h before it was listed, in Beijing time).
pub fn created_at(create_time: &str, now: f64) -> Option<f64> {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    let as_utc = time::PrimitiveDateTime::parse(create_time.trim(), &format)
        .ok()?
        .assume_utc()
        .unix_timestamp();
    let as_beijing = as_utc - BEIJING;
    [as_utc, as_beijing]
        .into_iter()
        .map(|t| t as f64)
        .find(|t| *t <= now + CLOCK_SKEW)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2023-03-14 15:00:00 in Beijing is 07:00:00 UTC: 1678777200.
    const BEIJING_15H: f64 = 1_678_777_200.0;

    #[test]
    fn create_time_is_read_in_the_zone_that_is_not_in_the_future() {
        // Listed ten minutes after it was created, written in Beijing time: the UTC reading
        // would be 8 h ahead, so Beijing it is.
        let now = BEIJING_15H + 600.0;
        assert_eq!(created_at("2023-03-14 15:00:00", now), Some(BEIJING_15H));
        // Written in UTC: the UTC reading is in the past, and taken (the later one).
        assert_eq!(
            created_at("2023-03-14 07:00:00", now),
            Some(BEIJING_15H),
            "a UTC CreateTime is read as UTC"
        );
        // Both in the past (created long ago): the later, never an overstated age.
        let later = BEIJING_15H + 86_400.0;
        assert_eq!(
            created_at("2023-03-14 15:00:00", later),
            Some(BEIJING_15H + 8.0 * 3600.0)
        );
        // Neither reading possible yet: not a time at all.
        assert_eq!(created_at("2023-03-15 15:00:00", BEIJING_15H), None);
        for bad in [
            "",
            "2023-03-14",
            "2023-03-14T15:00:00Z",
            "2023-13-14 15:00:00",
            "yesterday",
        ] {
            assert_eq!(created_at(bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn a_census_counts_every_status_and_keeps_the_oldest() {
        let now = BEIJING_15H + 3600.0;
        let mut c = Census::default();
        c.add(Some("QUEUED"), Some("2023-03-14 15:30:00"), now);
        c.add(Some("QUEUED"), Some("2023-03-14 15:00:00"), now);
        c.add(Some("PROCESSING"), None, now);
        c.add(Some("FINISHED"), Some("garbage"), now);
        c.add(Some("PAUSED"), None, now);
        c.add(None, None, now);
        assert_eq!(c.counts, [2, 1, 1, 2]);
        assert_eq!(c.oldest(ListedStatus::Queued), Some(BEIJING_15H));
        assert_eq!(c.oldest(ListedStatus::Processing), None);
        assert_eq!(c.oldest(ListedStatus::Finished), None);
    }
}
