//! The registry as text: every task family written straight into the exposition format under
//! one short registry lock, 10,000 tasks several times faster than building protobuf families for
//! the `prometheus` crate's encoder (BENCHMARKS.md).

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};

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
    t.ended_at.filter(|_| t.shown().status().is_ended() && !t.history)
}

use crate::registry::push_escaped;

fn push_header(out: &mut Vec<u8>, spec: &FamilySpec) {
    let kind = match spec.kind {
        MetricType::COUNTER => "counter",
        MetricType::HISTOGRAM => "histogram",
        _ => "gauge",
    };
    // Writing into a Vec cannot fail.
    let _ = writeln!(out, "# HELP {} {}\n# TYPE {} {kind}", spec.name, spec.help, spec.name);
}

/// Appends `s`. A scrape is hundreds of thousands of copies of 1 to 130 bytes (names, label text,
/// values): copied here in 8-byte steps the compiler turns into plain moves, not a call to the
/// libc's `memcpy`, which in musl (the image's static binary) starts a `rep movsq` for every
/// copy and made its scrapes about twice as slow as glibc's (BENCHMARKS.md).
#[inline]
fn put(out: &mut Vec<u8>, s: &str) {
    let s = s.as_bytes();
    out.reserve(s.len());
    let mut words = s.chunks_exact(8);
    for word in words.by_ref() {
        if let Ok(word) = <[u8; 8]>::try_from(word) {
            out.extend_from_slice(&word);
        }
    }
    for &b in words.remainder() {
        out.push(b);
    }
}

// Each series line is written with as few copies as it can be: the name, the task's label text
// (built when the task changed), one constant tail such as `,status="PUSHING"} ` and the value.
// Short copies are what a scrape is made of, and musl's memcpy (the image's libc) is slow at them.

/// `,status="…"} ` for each status, in [`TaskStatus::ALL`]'s order.
static STATUS_TAILS: LazyLock<Vec<String>> = LazyLock::new(|| {
    TaskStatus::ALL
        .iter()
        .map(|s| format!(",status=\"{}\"}} ", s.as_str()))
        .collect()
});

/// `,reason="…"} ` for each finish reason, in [`FinishReason::ALL`]'s order.
static REASON_TAILS: LazyLock<Vec<String>> = LazyLock::new(|| {
    FinishReason::ALL
        .iter()
        .map(|r| format!(",reason=\"{}\"}} ", r.as_str()))
        .collect()
});

/// `name{labels` followed by `tail` (which closes the label set and ends in a space).
#[inline]
fn push_head(out: &mut Vec<u8>, name: &str, labels: &str, tail: &str) {
    put(out, name);
    out.push(b'{');
    put(out, labels);
    put(out, tail);
}

#[inline]
fn push_int_value(out: &mut Vec<u8>, v: i64) {
    put(out, itoa::Buffer::new().format(v));
    out.push(b'\n');
}

/// `v` as Rust's `Display` writes it (what the `prometheus` crate's encoder writes), then a newline:
/// whole numbers (durations, most timestamps) through `itoa`, the rest formatted on the stack and
/// copied once.
#[inline]
fn push_float_value(out: &mut Vec<u8>, v: f64) {
    // -0.0 is written "-0" by Display: left to it.
    if v.fract() == 0.0 && v.abs() < 1e15 && (v != 0.0 || v.is_sign_positive()) {
        push_int_value(out, v as i64);
        return;
    }
    let mut text = StackText::default();
    let _ = std::fmt::Write::write_fmt(&mut text, format_args!("{v}\n"));
    match std::str::from_utf8(&text.buf[..text.len]) {
        Ok(t) if !text.overflow => put(out, t),
        _ => {
            let _ = writeln!(out, "{v}");
        }
    }
}

/// A number's text, formatted without touching the heap or calling `memcpy` for each piece.
struct StackText {
    buf: [u8; 48],
    len: usize,
    overflow: bool,
}

impl Default for StackText {
    fn default() -> StackText {
        StackText {
            buf: [0; 48],
            len: 0,
            overflow: false,
        }
    }
}

impl std::fmt::Write for StackText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        for &b in s.as_bytes() {
            match self.buf.get_mut(self.len) {
                Some(slot) => {
                    *slot = b;
                    self.len += 1;
                }
                None => self.overflow = true,
            }
        }
        Ok(())
    }
}

/// `name{labels,extra="value"} v` for an integer value.
fn push_int(out: &mut Vec<u8>, name: &str, labels: &str, extra: Option<(&str, &str)>, v: i64) {
    push_series(out, name, labels, extra);
    push_int_value(out, v);
}

/// `name{labels,extra="value"} v` for a float value.
fn push_float(out: &mut Vec<u8>, name: &str, labels: &str, extra: Option<(&str, &str)>, v: f64) {
    push_series(out, name, labels, extra);
    push_float_value(out, v);
}

fn push_series(out: &mut Vec<u8>, name: &str, labels: &str, extra: Option<(&str, &str)>) {
    put(out, name);
    out.push(b'{');
    put(out, labels);
    if let Some((k, v)) = extra {
        out.push(b',');
        put(out, k);
        put(out, "=\"");
        let mut escaped = String::new();
        push_escaped(&mut escaped, v);
        put(out, &escaped);
        out.push(b'"');
    }
    put(out, "} ");
}

/// How one per-task family writes a task's series.
type WriteRow = fn(&mut Vec<u8>, &Row);

/// The per-task families in the order a scrape writes them, each with its writer.
const TASK_FAMILIES: [(&FamilySpec, WriteRow); 11] = [
    (&INFO, |out, t| {
        push_head(out, INFO.name, t.labels.shared(), t.labels.info());
        put(out, "} 1\n");
    }),
    (&STATUS, |out, t| {
        for (s, tail) in TaskStatus::ALL.iter().zip(STATUS_TAILS.iter()) {
            push_head(out, STATUS.name, t.labels.shared(), tail);
            out.extend_from_slice(if *s == t.status { b"1\n" } else { b"0\n" });
        }
    }),
    (&FINISH_REASON, |out, t| {
        if let Some(r) = t.finish_reason {
            push_head(out, FINISH_REASON.name, t.labels.shared(), &REASON_TAILS[r as usize]);
            out.extend_from_slice(b"1\n");
        }
    }),
    (&START, |out, t| {
        if let Some(v) = t.start {
            push_head(out, START.name, t.labels.shared(), "} ");
            push_int_value(out, v);
        }
    }),
    (&STOP, |out, t| {
        if let Some(v) = t.stop {
            push_head(out, STOP.name, t.labels.shared(), "} ");
            push_int_value(out, v);
        }
    }),
    (&DURATION, |out, t| {
        if let Some(v) = t.duration {
            push_head(out, DURATION.name, t.labels.shared(), "} ");
            push_float_value(out, v);
        }
    }),
    (&EXCEPTIONS, |out, t| {
        push_head(out, EXCEPTIONS.name, t.labels.shared(), "} ");
        push_int_value(out, t.exceptions as i64);
    }),
    (&IM_SYNC, |out, t| {
        if let Some(v) = t.im_sync {
            push_head(out, IM_SYNC.name, t.labels.shared(), "} ");
            push_int_value(out, v);
        }
    }),
    (&LAST_UPDATE, |out, t| {
        push_head(out, LAST_UPDATE.name, t.labels.shared(), "} ");
        push_float_value(out, t.last_update);
    }),
    (&ENDED, |out, t| {
        if let Some(v) = t.ended {
            push_head(out, ENDED.name, t.labels.shared(), "} ");
            push_float_value(out, v);
        }
    }),
    (&FAILURE, |out, t| {
        if let Some(failure) = t.labels.failure() {
            push_head(out, FAILURE.name, t.labels.shared(), failure);
            put(out, "} 1\n");
        }
    }),
];

/// A scrape's task families, copied out of the registry under its lock ([`TaskCollector::text`])
/// and written a chunk at a time after it is released ([`TaskText::write`]): a plain scrape is
/// streamed this way and a compressed one fed to the compressor, so neither holds the whole text.
pub struct TaskText {
    /// The tasks, sorted by app and task id (empty when per-task series are off).
    rows: Vec<Row>,
    counts: std::collections::BTreeMap<u64, [u64; 5]>,
    apps: Vec<(u64, AppStats)>,
    per_task: bool,
    /// Where writing resumes: a family of [`TASK_FAMILIES`] and a row in it; past the last family,
    /// the per-app families (written at once: a few lines per app).
    family: usize,
    row: usize,
    /// How long the registry's lock was held for the copy.
    pub held: std::time::Duration,
}

impl TaskText {
    /// About how many bytes of text this writes (to size buffers once).
    pub fn len_hint(&self) -> usize {
        self.rows.len() * 1700 + self.apps.len() * 9000
    }

    /// Writes on from where the last call stopped until `out` holds `limit` bytes or more, or
    /// everything is written; returns whether everything is.
    pub fn write(&mut self, out: &mut Vec<u8>, limit: usize) -> bool {
        if !self.per_task {
            self.family = self.family.max(TASK_FAMILIES.len());
        }
        while let Some((spec, write_row)) = TASK_FAMILIES.get(self.family) {
            if self.row == 0 {
                push_header(out, spec);
            }
            while let Some(t) = self.rows.get(self.row) {
                if out.len() >= limit {
                    return false;
                }
                write_row(out, t);
                self.row += 1;
            }
            self.family += 1;
            self.row = 0;
        }
        if self.family == TASK_FAMILIES.len() {
            if out.len() >= limit {
                return false;
            }
            self.write_apps(out);
            self.family += 1;
        }
        true
    }

    /// The per-app families.
    fn write_apps(&self, out: &mut Vec<u8>) {
        push_header(out, &TASKS);
        for (app, counts) in &self.counts {
            let l = format!("sdk_app_id=\"{app}\"");
            for (s, tail) in TaskStatus::ALL.iter().zip(STATUS_TAILS.iter()) {
                push_head(out, TASKS.name, &l, tail);
                push_int_value(out, counts[*s as usize] as i64);
            }
        }
        let apps: Vec<(String, &AppStats)> = self
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
            for (r, tail) in FinishReason::ALL.iter().zip(REASON_TAILS.iter()) {
                push_head(out, FINISHED.name, l, tail);
                push_int_value(out, s.finished(*r) as i64);
            }
        }
        push_header(out, &EXCEPTIONS_TOTAL);
        for (l, s) in &apps {
            push_int(out, EXCEPTIONS_TOTAL.name, l, None, s.exceptions_total as i64);
        }
        push_header(out, &PER_TASK_ON);
        for (l, _) in &apps {
            push_int(out, PER_TASK_ON.name, l, None, self.per_task as i64);
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
    }
}

impl TaskCollector {
    /// Writes every task family in the text exposition format, under one short registry lock.
    pub fn encode_text(&self, out: &mut String) {
        let mut text = Vec::new();
        self.text().write(&mut text, usize::MAX);
        out.push_str(&String::from_utf8_lossy(&text));
    }

    /// What a scrape writes of the tasks, copied under one short registry lock: a pointer to each
    /// task's label text and its few numbers. Sorting happens after the lock is released.
    pub fn text(&self) -> TaskText {
        let per_task = self.per_task.load(Ordering::Relaxed);
        let locked = std::time::Instant::now();
        let snap = self.tasks.render_snapshot(per_task, Row::of);
        let held = locked.elapsed();
        let mut rows = snap.rows;
        let mut counts = snap.counts;
        if per_task {
            // Every shown app has its aggregates, and so its line for each status.
            counts = snap.apps.iter().map(|(id, _)| (*id, [0; 5])).collect();
            for r in &rows {
                counts.entry(r.app).or_insert([0; 5])[r.status.index()] += 1;
            }
        }
        // Stable order (as the prometheus crate's gather gives): diffs and greps stay readable.
        rows.sort_unstable_by(|a, b| (a.app, a.labels.task_id()).cmp(&(b.app, b.labels.task_id())));
        TaskText {
            rows,
            counts,
            apps: snap.apps,
            per_task,
            family: 0,
            row: 0,
            held,
        }
    }
}

/// One task as a scrape writes it, copied out under the registry's lock.
pub struct Row {
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
        let shown = t.shown();
        let status = shown.status();
        let ended = status.is_ended();
        Row {
            app: t.sdk_app_id,
            labels,
            status,
            finish_reason: shown.finish_reason().filter(|_| ended),
            start: shown.push_start_time(),
            stop: shown.push_stop_time().filter(|_| ended),
            duration: shown.duration(),
            exceptions: shown.exception_cnt(),
            im_sync: shown.im_sync_time(),
            last_update: t.last_update,
            ended: ended_news(t),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_written_as_display_writes_them() {
        let floats = [
            0.0,
            -0.0,
            0.5,
            -5.0,
            123.0,
            1e15,
            1e15 - 1.0,
            1e16,
            1e20,
            1e-7,
            1764780000.123,
            1.0 / 3.0,
            f64::MAX,
            f64::MIN_POSITIVE,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            -1e300,
        ];
        for v in floats {
            let mut out = Vec::new();
            push_float_value(&mut out, v);
            assert_eq!(String::from_utf8(out).unwrap(), format!("{v}\n"), "{v:?}");
        }
        for v in [0, 1, -1, 9, 10, i64::MAX, i64::MIN, 1764780000] {
            let mut out = Vec::new();
            push_int_value(&mut out, v);
            assert_eq!(String::from_utf8(out).unwrap(), format!("{v}\n"));
        }
        for s in [
            "",
            "a",
            "12345678",
            "123456789",
            "sdk_app_id=\"1400000001\",task_id=\"é\"",
        ] {
            let mut out = b"x".to_vec();
            put(&mut out, s);
            assert_eq!(out, format!("x{s}").into_bytes());
        }
    }
}
