//! What the registry keeps of a recording and of an app's recordings, and what it hands the poller
//! and the store: plain data, no lock.

use serde::{Deserialize, Serialize};

use super::Key;
use crate::recording::{RecordFacts, RecordFinishReason};

/// `InvalidParameter.TaskNotFound` answers in a row after which a recording is dropped (as for push).
pub const NOT_FOUND_LIMIT: u8 = 3;

/// Upper bounds (seconds) of `tiw_record_duration_seconds`: from a recording that never got going
/// to a day (Tencent force-stops a recording after 24 hours).
pub const DURATION_BUCKETS: [f64; 14] = [
    10.0, 60.0, 300.0, 600.0, 1200.0, 1800.0, 2700.0, 3600.0, 5400.0, 7200.0, 10800.0, 21600.0, 43200.0, 86400.0,
];
/// Upper bounds (seconds) of `tiw_record_upload_seconds`: STOPPED to FINISHED as seen, so no finer
/// than a read's interval.
pub const UPLOAD_BUCKETS: [f64; 11] = [
    5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0,
];

/// A histogram of fixed bounds (given where it is observed and written): count per bucket, not
/// cumulative.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    pub counts: Vec<u64>,
    pub count: u64,
    pub sum: f64,
}

impl Histogram {
    pub(super) fn observe(&mut self, bounds: &[f64], v: f64) {
        self.counts.resize(bounds.len(), 0);
        if let Some(i) = bounds.iter().position(|b| v <= *b) {
            self.counts[i] += 1;
        }
        self.count += 1;
        self.sum += v;
    }

    /// `(upper bound, cumulative count)` per bucket.
    pub fn cumulative<'a>(&'a self, bounds: &'a [f64]) -> impl Iterator<Item = (f64, u64)> + 'a {
        let mut total = 0;
        bounds.iter().enumerate().map(move |(i, b)| {
            total += self.counts.get(i).copied().unwrap_or(0);
            (*b, total)
        })
    }
}

/// One app's recording counters. They never go down and never disappear.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RecordAppStats {
    /// Distinct recordings ended, by reason (indexed by [`RecordFinishReason`]).
    pub finished_total: [u64; 6],
    /// Sum of ExceptionCnt's increases over every recording.
    pub exceptions_total: u64,
    /// Bytes of the result videos of finished recordings.
    pub video_bytes_total: u64,
    /// `TotalTime` of finished recordings, seconds.
    pub duration: Histogram,
    /// STOPPED → FINISHED as the exporter saw it, seconds.
    pub upload: Histogram,
}

/// One tracked recording.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordTask {
    pub sdk_app_id: u64,
    pub task_id: String,
    /// What DescribeOnlineRecord confirmed, folded.
    pub facts: RecordFacts,
    /// Unix seconds: first tracked, last learned anything.
    pub first_seen: f64,
    pub last_update: f64,
    /// When the exporter saw the recording end (STOPPED, FINISHED or FAILED).
    pub ended_at: Option<f64>,
    /// When it was first read STOPPED (its upload began), and when it was first read final.
    pub stopped_at: Option<f64>,
    pub final_at: Option<f64>,
    /// Its end and its result are counted (each once).
    pub counted_end: bool,
    pub counted_result: bool,
    /// TaskNotFound answers in a row.
    pub not_found: u8,
    /// Only a recording callback named it: not shown, and bounded per app, until the API answers
    /// for it or the running list lists it.
    #[serde(default)]
    pub unconfirmed: bool,
}

impl RecordTask {
    pub(super) fn new(sdk_app_id: u64, task_id: String, room_id: Option<i64>, now: f64) -> RecordTask {
        RecordTask {
            sdk_app_id,
            task_id,
            facts: RecordFacts {
                room_id,
                ..RecordFacts::default()
            },
            first_seen: now,
            last_update: now,
            ended_at: None,
            stopped_at: None,
            final_at: None,
            counted_end: false,
            counted_result: false,
            not_found: 0,
            unconfirmed: false,
        }
    }

    pub(super) fn key(&self) -> Key {
        (self.sdk_app_id, self.task_id.clone())
    }

    /// Nothing more will change: not read again.
    pub fn is_final(&self) -> bool {
        self.facts.status.is_final()
    }
}

/// What one answer did, for the poller's log line.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecordApplied {
    /// The answer ended the recording, with this reason.
    pub ended: Option<RecordFinishReason>,
    /// The answer finished the upload: the result is there.
    pub finished: bool,
    /// Dropped after [`NOT_FOUND_LIMIT`] TaskNotFound answers.
    pub dropped: bool,
    pub room_id: Option<i64>,
    pub exceptions: u64,
}

/// What changed since the store last took a batch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecordBatch {
    pub tasks: Vec<RecordTask>,
    pub removed: Vec<Key>,
    pub apps: Vec<(u64, RecordAppStats)>,
}

impl RecordBatch {
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty() && self.removed.is_empty() && self.apps.is_empty()
    }
}

/// What the store holds of recordings, handed back at start.
#[derive(Debug, Clone, Default)]
pub struct RecordRestored {
    pub tasks: Vec<RecordTask>,
    pub apps: Vec<(u64, RecordAppStats)>,
}
