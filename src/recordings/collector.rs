//! The `tiw_record_*` families, built the `prometheus` crate's way when `/metrics` is gathered:
//! recordings are few beside push tasks (Tencent runs a few per class, and the registry keeps them
//! only until retention), so they need none of the push families' hand-written text path.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram as ProtoHistogram, LabelPair, Metric, MetricFamily, MetricType,
};

use super::{Histogram, RecordRegistry, RecordTask, DURATION_BUCKETS, UPLOAD_BUCKETS};
use crate::recording::{RecordFinishReason, RecordStatus};

const TASK: &[&str] = &["sdk_app_id", "task_id", "room_id"];
const APP: &[&str] = &["sdk_app_id"];

/// One family: name, help, type, label names.
struct Spec(&'static str, &'static str, MetricType, &'static [&'static str]);

const INFO: Spec = Spec(
    "tiw_record_task_info",
    "Identity of a tracked real-time recording task (GroupId, RecordUserId); always 1.",
    MetricType::GAUGE,
    &["sdk_app_id", "task_id", "room_id", "group_id", "record_user_id"],
);
const STATUS: Spec = Spec(
    "tiw_record_task_status",
    "Status of a tracked recording task as a state set: PREPARED, RECORDING, PAUSED, STOPPED (recording over, the video is processed and uploaded), FINISHED, FAILED (DescribeOnlineRecord answers FailedOperation.Record), UNKNOWN (not read yet).",
    MetricType::GAUGE,
    &["sdk_app_id", "task_id", "room_id", "status"],
);
const FINISH_REASON: Spec = Spec(
    "tiw_record_task_finish_reason",
    "Why an ended recording ended (AUTO, USER_CALL, EXCEPTION, FORCE_STOP: paused over 90 minutes or recording over 24 hours; FAILED; OTHER for a reason missing or undocumented); always 1.",
    MetricType::GAUGE,
    &["sdk_app_id", "task_id", "room_id", "reason"],
);
const FAILURE: Spec = Spec(
    "tiw_record_task_failure_info",
    "Why a recording failed, as Tencent said it: code (FailedOperation.Record, other); always 1.",
    MetricType::GAUGE,
    &["sdk_app_id", "task_id", "room_id", "code"],
);
const EXCEPTIONS: Spec = Spec(
    "tiw_record_task_exceptions",
    "ExceptionCnt of the recording as last read.",
    MetricType::GAUGE,
    TASK,
);
const INTERRUPTS: Spec = Spec(
    "tiw_record_task_stream_interrupts",
    "Stream interruptions of the recording's users, summed over Interrupts[].Count, as last read.",
    MetricType::GAUGE,
    TASK,
);
const PAUSED: Spec = Spec(
    "tiw_record_task_paused_seconds",
    "Time the recording was paused (OmittedDurations; Tencent fills it only with video concatenation on).",
    MetricType::GAUGE,
    TASK,
);
const START: Spec = Spec(
    "tiw_record_task_start_timestamp_seconds",
    "RecordStartTime of the recording (unix seconds).",
    MetricType::GAUGE,
    TASK,
);
const STOP: Spec = Spec(
    "tiw_record_task_stop_timestamp_seconds",
    "RecordStopTime of an ended recording (unix seconds); the upload runs from here until FINISHED.",
    MetricType::GAUGE,
    TASK,
);
const ENDED: Spec = Spec(
    "tiw_record_task_ended_timestamp_seconds",
    "When the exporter saw the recording end (unix seconds).",
    MetricType::GAUGE,
    TASK,
);
const VIDEO_BYTES: Spec = Spec(
    "tiw_record_task_video_bytes",
    "Bytes of the recording's result videos (VideoInfos[].VideoSize), once FINISHED.",
    MetricType::GAUGE,
    TASK,
);
const LAST_UPDATE: Spec = Spec(
    "tiw_record_task_last_update_timestamp_seconds",
    "When the exporter last learned anything about the recording (unix seconds).",
    MetricType::GAUGE,
    TASK,
);
const TASKS: Spec = Spec(
    "tiw_record_tasks",
    "Tracked recording tasks per status.",
    MetricType::GAUGE,
    &["sdk_app_id", "status"],
);
const FINISHED: Spec = Spec(
    "tiw_record_tasks_finished_total",
    "Distinct recordings ended, once per task, by reason.",
    MetricType::COUNTER,
    &["sdk_app_id", "reason"],
);
const EXCEPTIONS_TOTAL: Spec = Spec(
    "tiw_record_exceptions_total",
    "Sum of increases of ExceptionCnt over all recordings.",
    MetricType::COUNTER,
    APP,
);
const VIDEO_BYTES_TOTAL: Spec = Spec(
    "tiw_record_video_bytes_total",
    "Bytes of the result videos of finished recordings.",
    MetricType::COUNTER,
    APP,
);
const DURATION: Spec = Spec(
    "tiw_record_duration_seconds",
    "TotalTime of finished recordings: the length of the replay.",
    MetricType::HISTOGRAM,
    APP,
);
const UPLOAD: Spec = Spec(
    "tiw_record_upload_seconds",
    "From STOPPED to FINISHED as the exporter saw it: how long processing and uploading the video took.",
    MetricType::HISTOGRAM,
    APP,
);

const PER_TASK: [&Spec; 12] = [
    &INFO,
    &STATUS,
    &FINISH_REASON,
    &FAILURE,
    &EXCEPTIONS,
    &INTERRUPTS,
    &PAUSED,
    &START,
    &STOP,
    &ENDED,
    &VIDEO_BYTES,
    &LAST_UPDATE,
];
const PER_APP: [&Spec; 6] = [
    &TASKS,
    &FINISHED,
    &EXCEPTIONS_TOTAL,
    &VIDEO_BYTES_TOTAL,
    &DURATION,
    &UPLOAD,
];

fn metric(names: &[&str], values: &[&str]) -> Metric {
    let mut m = Metric::default();
    m.set_label(
        names
            .iter()
            .zip(values)
            .map(|(n, v)| {
                let mut l = LabelPair::default();
                l.set_name(n.to_string());
                l.set_value(v.to_string());
                l
            })
            .collect(),
    );
    m
}

/// Families by name, filled as the registry is read.
struct Families(Vec<(&'static Spec, Vec<Metric>)>);

impl Families {
    fn push(&mut self, spec: &'static Spec, m: Metric) {
        if let Some((_, ms)) = self.0.iter_mut().find(|(s, _)| s.0 == spec.0) {
            ms.push(m);
        }
    }
    fn gauge(&mut self, spec: &'static Spec, values: &[&str], v: f64) {
        let mut m = metric(spec.3, values);
        let mut g = Gauge::default();
        g.set_value(v);
        m.set_gauge(g);
        self.push(spec, m);
    }
    fn counter(&mut self, spec: &'static Spec, values: &[&str], v: u64) {
        let mut m = metric(spec.3, values);
        let mut c = Counter::default();
        c.set_value(v as f64);
        m.set_counter(c);
        self.push(spec, m);
    }
    fn histogram(&mut self, spec: &'static Spec, values: &[&str], h: &Histogram, bounds: &[f64]) {
        let mut m = metric(spec.3, values);
        let mut p = ProtoHistogram::default();
        p.set_sample_count(h.count);
        p.set_sample_sum(h.sum);
        p.set_bucket(
            h.cumulative(bounds)
                .map(|(bound, count)| {
                    let mut b = Bucket::default();
                    b.set_upper_bound(bound);
                    b.set_cumulative_count(count);
                    b
                })
                .collect(),
        );
        m.set_histogram(p);
        self.push(spec, m);
    }

    fn task(&mut self, t: &RecordTask) {
        let f = &t.facts;
        let (app, room) = (
            t.sdk_app_id.to_string(),
            f.room_id.map(|r| r.to_string()).unwrap_or_default(),
        );
        let id = [app.as_str(), t.task_id.as_str(), room.as_str()];
        self.gauge(
            &INFO,
            &[
                id[0],
                id[1],
                id[2],
                f.group_id.as_deref().unwrap_or(""),
                f.record_user_id.as_deref().unwrap_or(""),
            ],
            1.0,
        );
        for s in RecordStatus::ALL {
            self.gauge(
                &STATUS,
                &[id[0], id[1], id[2], s.as_str()],
                f64::from(u8::from(f.status == s)),
            );
        }
        if let (true, Some(reason)) = (f.status.is_ended(), f.finish_reason) {
            self.gauge(&FINISH_REASON, &[id[0], id[1], id[2], reason.as_str()], 1.0);
        }
        if let Some(failure) = &f.failure {
            self.gauge(&FAILURE, &[id[0], id[1], id[2], failure.code.as_str()], 1.0);
        }
        self.gauge(&EXCEPTIONS, &id, f.exception_cnt.unwrap_or(0) as f64);
        let optional = [
            (&INTERRUPTS, f.stream_interrupts.map(|n| n as f64)),
            (&PAUSED, f.paused_ms.map(|ms| ms as f64 / 1000.0)),
            (&START, f.record_start_time.map(|s| s as f64)),
            (&STOP, f.record_stop_time.map(|s| s as f64)),
            (&ENDED, t.ended_at),
            (
                &VIDEO_BYTES,
                f.video_bytes
                    .filter(|_| f.status == RecordStatus::Finished)
                    .map(|b| b as f64),
            ),
            (&LAST_UPDATE, Some(t.last_update)),
        ];
        for (spec, v) in optional {
            if let Some(v) = v {
                self.gauge(spec, &id, v);
            }
        }
    }
}

/// A collector over a [`RecordRegistry`] (held weakly, as the relay's gauges hold the relay).
pub struct RecordCollector {
    records: Weak<RecordRegistry>,
    per_task: Arc<AtomicBool>,
    descs: Vec<Desc>,
}

impl RecordCollector {
    /// Per-task families only while `per_task` is on (`per_task_metrics`), as for push.
    pub fn new(records: &Arc<RecordRegistry>, per_task: Arc<AtomicBool>) -> prometheus::Result<RecordCollector> {
        let descs = PER_TASK
            .iter()
            .chain(PER_APP.iter())
            .map(|s| {
                Desc::new(
                    s.0.into(),
                    s.1.into(),
                    s.3.iter().map(|l| l.to_string()).collect(),
                    Default::default(),
                )
            })
            .collect::<prometheus::Result<_>>()?;
        Ok(RecordCollector {
            records: Arc::downgrade(records),
            per_task,
            descs,
        })
    }
}

impl Collector for RecordCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Some(records) = self.records.upgrade() else {
            return Vec::new();
        };
        let (tasks, apps) = records.snapshot();
        if apps.is_empty() {
            return Vec::new();
        }
        let per_task = self.per_task.load(Ordering::Relaxed);
        let mut out = Families(
            PER_TASK
                .iter()
                .chain(PER_APP.iter())
                .map(|s| (*s, Vec::new()))
                .collect(),
        );
        let mut counts: std::collections::BTreeMap<u64, [u64; 7]> = apps.iter().map(|(id, _)| (*id, [0; 7])).collect();
        for t in &tasks {
            counts.entry(t.sdk_app_id).or_default()[t.facts.status.index()] += 1;
            if per_task {
                out.task(t);
            }
        }
        for (id, stats) in &apps {
            let app = id.to_string();
            for s in RecordStatus::ALL {
                let n = counts.get(id).map_or(0, |c| c[s.index()]);
                out.gauge(&TASKS, &[&app, s.as_str()], n as f64);
            }
            for r in RecordFinishReason::ALL {
                out.counter(&FINISHED, &[&app, r.as_str()], stats.finished_total[r.index()]);
            }
            out.counter(&EXCEPTIONS_TOTAL, &[&app], stats.exceptions_total);
            out.counter(&VIDEO_BYTES_TOTAL, &[&app], stats.video_bytes_total);
            out.histogram(&DURATION, &[&app], &stats.duration, &DURATION_BUCKETS);
            out.histogram(&UPLOAD, &[&app], &stats.upload, &UPLOAD_BUCKETS);
        }
        out.0
            .into_iter()
            .filter(|(_, ms)| !ms.is_empty())
            .map(|(spec, ms)| {
                let mut mf = MetricFamily::default();
                mf.set_name(spec.0.into());
                mf.set_help(spec.1.into());
                mf.set_field_type(spec.2);
                mf.set_metric(ms);
                mf
            })
            .collect()
    }
}
