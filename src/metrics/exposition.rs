//! The registry as text: every task family written straight into the exposition format under
//! one short registry lock, 10,000 tasks several times faster than building protobuf families for
//! the `prometheus` crate's encoder (BENCHMARKS.md).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use prometheus::core::Desc;
use prometheus::proto::MetricType;

use crate::registry::{AppStats, FinishReason, RenderedLabels, Task, TaskRegistry, TaskStatus, DURATION_BUCKETS};

/// Content-Type of the text exposition format.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub(super) struct FamilySpec {
    pub(super) name: &'static str,
    pub(super) help: &'static str,
    pub(super) kind: MetricType,
    pub(super) labels: &'static [&'static str],
}

pub(super) const TASK_LABELS: &[&str] = &["sdk_app_id", "task_id", "room_id"];

pub(super) const INFO: FamilySpec = FamilySpec {
    name: "tiw_push_task_info",
    help: "Identity of a tracked whiteboard push task; always 1.",
    kind: MetricType::GAUGE,
    labels: &["sdk_app_id", "task_id", "room_id", "group_id", "push_user_id"],
};
pub(super) const STATUS: FamilySpec = FamilySpec {
    name: "tiw_push_task_status",
    help: "Status of a tracked push task as a state set: 1 for the current status, 0 for the others (background polling and callbacks).",
    kind: MetricType::GAUGE,
    labels: &["sdk_app_id", "task_id", "room_id", "status"],
};
pub(super) const FINISH_REASON: FamilySpec = FamilySpec {
    name: "tiw_push_task_finish_reason",
    help: "Why an ended push task ended (AUTO, USER_CALL, EXCEPTION; FAILED for a task that failed; OTHER for a stop whose reason is missing or undocumented); always 1.",
    kind: MetricType::GAUGE,
    labels: &["sdk_app_id", "task_id", "room_id", "reason"],
};
pub(super) const START: FamilySpec = FamilySpec {
    name: "tiw_push_task_start_timestamp_seconds",
    help: "PushStartTime of the task (unix seconds).",
    kind: MetricType::GAUGE,
    labels: TASK_LABELS,
};
pub(super) const STOP: FamilySpec = FamilySpec {
    name: "tiw_push_task_stop_timestamp_seconds",
    help: "PushStopTime of an ended task (unix seconds).",
    kind: MetricType::GAUGE,
    labels: TASK_LABELS,
};
pub(super) const DURATION: FamilySpec = FamilySpec {
    name: "tiw_push_task_duration_seconds",
    help: "Push duration of an ended task: stop - start (a running task's age is time() - tiw_push_task_start_timestamp_seconds).",
    kind: MetricType::GAUGE,
    labels: TASK_LABELS,
};
pub(super) const EXCEPTIONS: FamilySpec = FamilySpec {
    name: "tiw_push_task_exceptions",
    help: "ExceptionCnt of the task as last reported.",
    kind: MetricType::GAUGE,
    labels: TASK_LABELS,
};
pub(super) const IM_SYNC: FamilySpec = FamilySpec {
    name: "tiw_push_task_im_sync_timestamp_seconds",
    help: "IMSyncTime of the task: IM time of the first pushed frame, for replay sync (unix seconds).",
    kind: MetricType::GAUGE,
    labels: TASK_LABELS,
};
pub(super) const LAST_UPDATE: FamilySpec = FamilySpec {
    name: "tiw_push_task_last_update_timestamp_seconds",
    help: "When the exporter last learned anything about the task (unix seconds).",
    kind: MetricType::GAUGE,
    labels: TASK_LABELS,
};
pub(super) const ENDED: FamilySpec = FamilySpec {
    name: "tiw_push_task_ended_timestamp_seconds",
    help: "When the exporter saw the task end, FAILED included (unix seconds); absent for a task first seen already ended, whose end is history, not news.",
    kind: MetricType::GAUGE,
    labels: TASK_LABELS,
};
pub(super) const FAILURE: FamilySpec = FamilySpec {
    name: "tiw_push_task_failure_info",
    help: "Why a task ended with EXCEPTION or FAILED, as Tencent said it: code (FailedOperation.WhiteboardPush, FailedOperation.Record, FailedOperation, NoStatus, other; empty when Tencent gave none), and the push service's and TRTC's codes from its message; always 1.",
    kind: MetricType::GAUGE,
    labels: &["sdk_app_id", "task_id", "room_id", "reason", "code", "push_code", "trtc_code"],
};
pub(super) const TASKS: FamilySpec = FamilySpec {
    name: "tiw_push_tasks",
    help: "Tracked push tasks per status.",
    kind: MetricType::GAUGE,
    labels: &["sdk_app_id", "status"],
};
pub(super) const STARTED: FamilySpec = FamilySpec {
    name: "tiw_push_tasks_started_total",
    help: "Distinct push tasks seen started.",
    kind: MetricType::COUNTER,
    labels: &["sdk_app_id"],
};
pub(super) const FINISHED: FamilySpec = FamilySpec {
    name: "tiw_push_tasks_finished_total",
    help: "Distinct push tasks ended, once per task, by reason.",
    kind: MetricType::COUNTER,
    labels: &["sdk_app_id", "reason"],
};
pub(super) const EXCEPTIONS_TOTAL: FamilySpec = FamilySpec {
    name: "tiw_push_exceptions_total",
    help: "Sum of increases of ExceptionCnt over all tasks (a task first seen with ExceptionCnt = N adds N).",
    kind: MetricType::COUNTER,
    labels: &["sdk_app_id"],
};
pub(super) const PER_TASK_ON: FamilySpec = FamilySpec {
    name: "tiw_exporter_per_task_metrics_enabled",
    help: "1 if per-task series are on for the app (per_task_metrics), 0 if not: what the per-app fallback alerts key on, so that an exporter that is down cannot look like one with per-task series off.",
    kind: MetricType::GAUGE,
    labels: &["sdk_app_id"],
};
pub(super) const DURATIONS: FamilySpec = FamilySpec {
    name: "tiw_push_duration_seconds",
    help: "Push duration of ended tasks, by finish reason.",
    kind: MetricType::HISTOGRAM,
    labels: &["sdk_app_id", "reason"],
};

pub(super) const PER_TASK: [&FamilySpec; 11] = [
    &INFO,
    &STATUS,
    &FINISH_REASON,
    &START,
    &STOP,
    &DURATION,
    &EXCEPTIONS,
    &IM_SYNC,
    &LAST_UPDATE,
    &ENDED,
    &FAILURE,
];
pub(super) const AGGREGATE: [&FamilySpec; 6] =
    [&TASKS, &STARTED, &FINISHED, &EXCEPTIONS_TOTAL, &DURATIONS, &PER_TASK_ON];

/// Renders the registry as metric families at scrape time.
pub struct TaskCollector {
    pub(super) tasks: Arc<TaskRegistry>,
    /// `per_task_metrics`, switchable by a reload.
    pub(super) per_task: Arc<AtomicBool>,
    /// Built at start, which checks every family's name and labels; the oracle describes itself
    /// with them.
    #[cfg_attr(not(any(test, feature = "fuzzing")), allow(dead_code))]
    pub(super) descs: Vec<Desc>,
}

impl TaskCollector {
    pub fn new(tasks: Arc<TaskRegistry>, per_task: Arc<AtomicBool>) -> prometheus::Result<TaskCollector> {
        let specs = PER_TASK.iter().chain(AGGREGATE.iter());
        let descs = specs
            .map(|s| {
                Desc::new(
                    s.name.into(),
                    s.help.into(),
                    s.labels.iter().map(|l| l.to_string()).collect(),
                    Default::default(),
                )
            })
            .collect::<prometheus::Result<Vec<_>>>()?;
        Ok(TaskCollector { tasks, per_task, descs })
    }
}

/// When the exporter saw `t` end, if it is an end it observed (not history).
pub(super) fn ended_news(t: &Task) -> Option<f64> {
    t.ended_at.filter(|_| t.status.is_ended() && !t.history)
}

use crate::registry::push_escaped;

fn push_header(out: &mut String, spec: &FamilySpec) {
    let kind = match spec.kind {
        MetricType::COUNTER => "counter",
        MetricType::HISTOGRAM => "histogram",
        _ => "gauge",
    };
    let _ = writeln!(out, "# HELP {} {}\n# TYPE {} {kind}", spec.name, spec.help, spec.name);
}

/// `name{labels,extra="value"} v` for an integer value.
fn push_int(out: &mut String, name: &str, labels: &str, extra: Option<(&str, &str)>, v: i64) {
    push_series(out, name, labels, extra);
    let _ = writeln!(out, " {v}");
}

/// `name{labels,extra="value"} v` for a float value.
fn push_float(out: &mut String, name: &str, labels: &str, extra: Option<(&str, &str)>, v: f64) {
    push_series(out, name, labels, extra);
    let _ = writeln!(out, " {v}");
}

fn push_series(out: &mut String, name: &str, labels: &str, extra: Option<(&str, &str)>) {
    out.push_str(name);
    out.push('{');
    out.push_str(labels);
    if let Some((k, v)) = extra {
        out.push(',');
        out.push_str(k);
        out.push_str("=\"");
        push_escaped(out, v);
        out.push('"');
    }
    out.push('}');
}

/// Hands `out` to `flush` once it holds `limit` bytes or more (see [`TaskCollector::encode_text_chunked`]).
#[inline]
fn spill(out: &mut String, limit: usize, flush: &mut dyn FnMut(&mut String)) {
    if out.len() >= limit {
        flush(out);
    }
}

impl TaskCollector {
    /// Writes every task family in the text exposition format, under one short registry lock.
    pub fn encode_text(&self, out: &mut String) {
        self.encode_text_chunked(out, usize::MAX, &mut |_| {});
    }

    /// Like [`TaskCollector::encode_text`], but hands `out` to `flush` whenever it holds `limit`
    /// bytes or more (`flush` empties it), so that a compressed scrape of a large fleet never
    /// holds the whole text at once. What is left at the end stays in `out`.
    pub fn encode_text_chunked(&self, out: &mut String, limit: usize, flush: &mut dyn FnMut(&mut String)) {
        self.encode_text_timed(out, limit, flush);
    }

    /// [`TaskCollector::encode_text_chunked`], returning how long the registry's lock was held.
    pub fn encode_text_timed(
        &self,
        out: &mut String,
        limit: usize,
        flush: &mut dyn FnMut(&mut String),
    ) -> std::time::Duration {
        let per_task = self.per_task.load(Ordering::Relaxed);
        let locked = std::time::Instant::now();
        let snap = self.tasks.render_snapshot(per_task, Row::of);
        let held = locked.elapsed();
        if per_task {
            let mut tasks = snap.rows;
            // Stable order (as the prometheus crate's gather gives): diffs and greps stay readable.
            tasks.sort_unstable_by(|a, b| (a.app, &a.labels.task_id).cmp(&(b.app, &b.labels.task_id)));
            if limit == usize::MAX {
                out.reserve(tasks.len() * 1200);
            }
            push_header(out, &INFO);
            for t in &tasks {
                spill(out, limit, flush);
                out.push_str(INFO.name);
                out.push('{');
                out.push_str(&t.labels.info);
                out.push_str("} 1\n");
            }
            push_header(out, &STATUS);
            for t in &tasks {
                spill(out, limit, flush);
                for s in TaskStatus::ALL {
                    push_int(
                        out,
                        STATUS.name,
                        &t.labels.shared,
                        Some(("status", s.as_str())),
                        (s == t.status) as i64,
                    );
                }
            }
            push_header(out, &FINISH_REASON);
            for t in &tasks {
                spill(out, limit, flush);
                if let Some(r) = t.finish_reason {
                    push_int(
                        out,
                        FINISH_REASON.name,
                        &t.labels.shared,
                        Some(("reason", r.as_str())),
                        1,
                    );
                }
            }
            push_header(out, &START);
            for t in &tasks {
                spill(out, limit, flush);
                if let Some(s) = t.start {
                    push_int(out, START.name, &t.labels.shared, None, s);
                }
            }
            push_header(out, &STOP);
            for t in &tasks {
                spill(out, limit, flush);
                if let Some(s) = t.stop {
                    push_int(out, STOP.name, &t.labels.shared, None, s);
                }
            }
            push_header(out, &DURATION);
            for t in &tasks {
                spill(out, limit, flush);
                if let Some(d) = t.duration {
                    push_float(out, DURATION.name, &t.labels.shared, None, d);
                }
            }
            push_header(out, &EXCEPTIONS);
            for t in &tasks {
                spill(out, limit, flush);
                push_int(out, EXCEPTIONS.name, &t.labels.shared, None, t.exceptions as i64);
            }
            push_header(out, &IM_SYNC);
            for t in &tasks {
                spill(out, limit, flush);
                if let Some(s) = t.im_sync {
                    push_int(out, IM_SYNC.name, &t.labels.shared, None, s);
                }
            }
            push_header(out, &LAST_UPDATE);
            for t in &tasks {
                spill(out, limit, flush);
                push_float(out, LAST_UPDATE.name, &t.labels.shared, None, t.last_update);
            }
            push_header(out, &ENDED);
            for t in &tasks {
                spill(out, limit, flush);
                if let Some(at) = t.ended {
                    push_float(out, ENDED.name, &t.labels.shared, None, at);
                }
            }
            push_header(out, &FAILURE);
            for t in &tasks {
                spill(out, limit, flush);
                if let Some(failure) = &t.labels.failure {
                    out.push_str(FAILURE.name);
                    out.push('{');
                    out.push_str(&t.labels.shared);
                    out.push_str(failure);
                    out.push_str("} 1\n");
                }
            }
        }
        push_header(out, &TASKS);
        for (app, counts) in &snap.counts {
            let l = format!("sdk_app_id=\"{app}\"");
            for s in TaskStatus::ALL {
                push_int(
                    out,
                    TASKS.name,
                    &l,
                    Some(("status", s.as_str())),
                    counts[s as usize] as i64,
                );
            }
        }
        let apps: Vec<(String, &AppStats)> = snap
            .apps
            .iter()
            .map(|(id, s)| (format!("sdk_app_id=\"{id}\""), s))
            .collect();
        push_header(out, &STARTED);
        for (l, s) in &apps {
            push_int(out, STARTED.name, l, None, s.started_total as i64);
        }
        push_header(out, &FINISHED);
        for (l, s) in &apps {
            for r in FinishReason::ALL {
                push_int(
                    out,
                    FINISHED.name,
                    l,
                    Some(("reason", r.as_str())),
                    s.finished(r) as i64,
                );
            }
        }
        push_header(out, &EXCEPTIONS_TOTAL);
        for (l, s) in &apps {
            push_int(out, EXCEPTIONS_TOTAL.name, l, None, s.exceptions_total as i64);
        }
        push_header(out, &PER_TASK_ON);
        let on = self.per_task.load(Ordering::Relaxed) as i64;
        for (l, _) in &apps {
            push_int(out, PER_TASK_ON.name, l, None, on);
        }
        push_header(out, &DURATIONS);
        for (l, s) in &apps {
            for r in FinishReason::ALL {
                let h = s.duration(r);
                let with_reason = format!("{l},reason=\"{}\"", r.as_str());
                let mut cumulative = 0;
                for (bound, c) in DURATION_BUCKETS.iter().zip(h.counts.iter()) {
                    cumulative += c;
                    push_int(
                        out,
                        "tiw_push_duration_seconds_bucket",
                        &with_reason,
                        Some(("le", &bound.to_string())),
                        cumulative as i64,
                    );
                }
                push_int(
                    out,
                    "tiw_push_duration_seconds_bucket",
                    &with_reason,
                    Some(("le", "+Inf")),
                    h.count as i64,
                );
                push_float(out, "tiw_push_duration_seconds_sum", &with_reason, None, h.sum);
                push_int(
                    out,
                    "tiw_push_duration_seconds_count",
                    &with_reason,
                    None,
                    h.count as i64,
                );
            }
        }
        held
    }
}

/// One task as a scrape writes it, copied out under the registry's lock.
pub(super) struct Row {
    app: u64,
    labels: Arc<RenderedLabels>,
    status: TaskStatus,
    /// Ended tasks only.
    finish_reason: Option<FinishReason>,
    start: Option<i64>,
    /// Ended tasks only.
    stop: Option<i64>,
    duration: Option<f64>,
    exceptions: u64,
    im_sync: Option<i64>,
    last_update: f64,
    ended: Option<f64>,
}

impl Row {
    /// The row of `t` (its label text is kept in the task until its identity changes).
    fn of(t: &mut Task) -> Row {
        let labels = t.labels();
        let ended = t.status.is_ended();
        Row {
            app: t.sdk_app_id,
            labels,
            status: t.status,
            finish_reason: t.finish_reason.filter(|_| ended),
            start: t.push_start_time,
            stop: t.push_stop_time.filter(|_| ended),
            duration: t.duration(),
            exceptions: t.exception_cnt,
            im_sync: t.im_sync_time,
            last_update: t.last_update,
            ended: ended_news(t),
        }
    }
}
