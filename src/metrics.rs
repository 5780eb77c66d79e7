//! `/metrics`: the exporter's own instruments and the [`TaskCollector`] that renders the registry.
//!
//! Per-task and aggregate push series are not held in `GaugeVec`s (whose label sets would have to
//! be removed by hand when a task expires): the collector snapshots the [`TaskRegistry`] at scrape
//! time under a short lock, with no I/O and no `.await`. Polling happens in the background because
//! the API is rate limited; a scrape never calls Tencent.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder};

use std::fmt::Write as _;

use crate::registry::{AppStats, FinishReason, Task, TaskRegistry, TaskStatus, DURATION_BUCKETS};

/// Event types that get their own label value; anything else is `other` (SPEC §4).
pub const CALLBACK_EVENT_TYPES: [&str; 3] = ["WhiteboardPushStarted", "WhiteboardPushStopped", "other"];
/// Outcomes of a received callback (SPEC §4); `contradicted` is counted when the confirming poll
/// answers against an accepted callback.
pub const CALLBACK_OUTCOMES: [&str; 9] = [
    "accepted",
    "duplicate",
    "bad_signature",
    "expired",
    "unsigned",
    "unknown_app",
    "malformed",
    "ignored",
    "contradicted",
];
/// Why a task was let go before it ended (`tiw_exporter_tasks_dropped_total{reason}`).
pub const DROP_REASONS: [&str; 2] = ["not_found", "limit"];

/// Version and git revision baked in at build time.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const REVISION: &str = env!("TIW_BUILD_REVISION");

/// The exporter's own instruments, and the registry `/metrics` is gathered from.
pub struct ExporterMetrics {
    registry: Registry,
    pub up: GaugeVec,
    pub api_requests: IntCounterVec,
    pub api_request_duration: HistogramVec,
    pub callbacks: IntCounterVec,
    pub tasks_dropped: IntCounterVec,
    pub labels_truncated: IntCounterVec,
    pub callback_delay: HistogramVec,
    pub http_refused: IntCounterVec,
    pub last_poll_success: GaugeVec,
    pub poll_sweep_duration: prometheus::Gauge,
    pub config_last_reload_successful: prometheus::Gauge,
    pub config_last_reload_success_timestamp: prometheus::Gauge,
    pub store_write_duration: prometheus::Histogram,
    pub store_errors: IntCounterVec,
    pub store_last_write_successful: prometheus::Gauge,
    /// Whether per-task series are rendered (`per_task_metrics`).
    pub per_task_metrics: Arc<AtomicBool>,
    task_collector: TaskCollector,
}

impl ExporterMetrics {
    /// Builds every instrument and registers them, the task collector and the process collector.
    pub fn new(tasks: Arc<TaskRegistry>, per_task_metrics: bool) -> Arc<ExporterMetrics> {
        // Names and label sets are constants of this file: failing here is a programming error.
        Self::build(tasks, per_task_metrics).expect("metric definitions are valid")
    }

    fn build(tasks: Arc<TaskRegistry>, per_task_metrics: bool) -> prometheus::Result<Arc<ExporterMetrics>> {
        let registry = Registry::new();
        let up = GaugeVec::new(
            Opts::new("tiw_up", "1 if the app's last Tencent Cloud API call got an answer from Tencent, 0 after transport failures or app-level errors (AuthFailure, ResourceUnavailable, UnauthorizedOperation)."),
            &["sdk_app_id"],
        )?;
        let api_requests = IntCounterVec::new(
            Opts::new(
                "tiw_exporter_api_requests_total",
                "Tencent Cloud API requests sent, by action and result code (OK, Tencent's error code, or transport).",
            ),
            &["action", "code"],
        )?;
        let api_request_duration = HistogramVec::new(
            HistogramOpts::new(
                "tiw_exporter_api_request_duration_seconds",
                "Duration of Tencent Cloud API requests, by action.",
            )
            .buckets(vec![0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            &["action"],
        )?;
        let callbacks = IntCounterVec::new(
            Opts::new(
                "tiw_exporter_callbacks_total",
                "TIW callbacks received, by app (a configured SdkAppId, or \"\" when the body names none), event type and outcome; contradicted: the API's answer overruled an accepted callback.",
            ),
            &["sdk_app_id", "event_type", "outcome"],
        )?;
        let tasks_dropped = IntCounterVec::new(
            Opts::new(
                "tiw_exporter_tasks_dropped_total",
                "Tasks let go before they ended: not_found (Tencent answered TaskNotFound 3 times in a row), limit (retention.max_tasks reached; the task was refused).",
            ),
            &["sdk_app_id", "reason"],
        )?;
        let labels_truncated = IntCounterVec::new(
            Opts::new(
                "tiw_exporter_label_values_truncated_total",
                "GroupId and PushUserId values cut to 256 bytes before they became label values, by where they came from (callback, api).",
            ),
            &["source"],
        )?;
        for source in ["callback", "api"] {
            labels_truncated.with_label_values(&[source]);
        }
        let callback_delay = HistogramVec::new(
            HistogramOpts::new(
                "tiw_exporter_callback_delay_seconds",
                "Time from a callback's Timestamp to its receipt.",
            )
            .buckets(vec![0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0]),
            &["event_type"],
        )?;
        let http_refused = IntCounterVec::new(
            Opts::new(
                "tiw_exporter_http_requests_refused_total",
                "Requests refused by the HTTP server's limits, by handler and reason (overloaded, body_timeout; auth_busy: every bcrypt slot was checking another password).",
            ),
            &["handler", "reason"],
        )?;
        let last_poll_success = GaugeVec::new(
            Opts::new(
                "tiw_exporter_last_poll_success_timestamp_seconds",
                "Unix time of the app's last DescribeWhiteboardPush that Tencent answered.",
            ),
            &["sdk_app_id"],
        )?;
        let poll_sweep_duration = prometheus::Gauge::new(
            "tiw_exporter_poll_sweep_duration_seconds",
            "How long the last full polling sweep over all unfinished tasks took (the longest over credential groups); grows past poll.interval when the API budget is the limit.",
        )?;
        let build_info = GaugeVec::new(
            Opts::new(
                "tiw_exporter_build_info",
                "Version and git revision of the running exporter; always 1.",
            ),
            &["version", "revision"],
        )?;
        build_info.with_label_values(&[VERSION, REVISION]).set(1.0);
        let config_last_reload_successful = prometheus::Gauge::new(
            "tiw_exporter_config_last_reload_successful",
            "1 if the last configuration load succeeded.",
        )?;
        let config_last_reload_success_timestamp = prometheus::Gauge::new(
            "tiw_exporter_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful configuration load.",
        )?;
        let store_write_duration = prometheus::Histogram::with_opts(
            HistogramOpts::new(
                "tiw_exporter_store_write_duration_seconds",
                "Duration of one store transaction (group commit, fsync included).",
            )
            .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0]),
        )?;
        let store_errors = IntCounterVec::new(
            Opts::new(
                "tiw_exporter_store_errors_total",
                "Store operations that failed, by operation.",
            ),
            &["op"],
        )?;
        store_errors.with_label_values(&["write"]);
        let store_last_write_successful = prometheus::Gauge::new(
            "tiw_exporter_store_last_write_successful",
            "1 if the last store write succeeded; 0 while writes fail (callbacks are then answered 503).",
        )?;
        store_last_write_successful.set(1.0);
        // Present from the start, so that rate() and alerts see the first refusal.
        for (handler, reason) in [
            ("metrics", "overloaded"),
            ("callback", "overloaded"),
            ("callback", "body_timeout"),
            ("auth", "auth_busy"),
        ] {
            http_refused.with_label_values(&[handler, reason]);
        }
        for event_type in &CALLBACK_EVENT_TYPES[..2] {
            callback_delay.with_label_values(&[event_type]);
        }
        registry.register(Box::new(up.clone()))?;
        registry.register(Box::new(api_requests.clone()))?;
        registry.register(Box::new(api_request_duration.clone()))?;
        registry.register(Box::new(callbacks.clone()))?;
        registry.register(Box::new(tasks_dropped.clone()))?;
        registry.register(Box::new(labels_truncated.clone()))?;
        registry.register(Box::new(callback_delay.clone()))?;
        registry.register(Box::new(http_refused.clone()))?;
        registry.register(Box::new(last_poll_success.clone()))?;
        registry.register(Box::new(poll_sweep_duration.clone()))?;
        registry.register(Box::new(build_info))?;
        registry.register(Box::new(config_last_reload_successful.clone()))?;
        registry.register(Box::new(config_last_reload_success_timestamp.clone()))?;
        registry.register(Box::new(store_write_duration.clone()))?;
        registry.register(Box::new(store_errors.clone()))?;
        registry.register(Box::new(store_last_write_successful.clone()))?;
        let per_task_metrics = Arc::new(AtomicBool::new(per_task_metrics));
        // Not registered: `render` writes its families straight into the text format (see there).
        let task_collector = TaskCollector::new(tasks, per_task_metrics.clone())?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))?;
        Ok(Arc::new(ExporterMetrics {
            registry,
            up,
            api_requests,
            api_request_duration,
            callbacks,
            tasks_dropped,
            labels_truncated,
            callback_delay,
            http_refused,
            last_poll_success,
            poll_sweep_duration,
            config_last_reload_successful,
            config_last_reload_success_timestamp,
            store_write_duration,
            store_errors,
            store_last_write_successful,
            per_task_metrics,
            task_collector,
        }))
    }

    /// The exposition in the Prometheus text format (0.0.4).
    ///
    /// The exporter's own instruments go through the `prometheus` crate's encoder; the task
    /// families, tens of thousands of series on a large fleet, are written straight into the text
    /// format by [`TaskCollector::encode_text`], which renders 10,000 tasks several times faster than
    /// building protobuf families for the encoder (BENCHMARKS.md).
    pub fn render(&self) -> String {
        let families = self.registry.gather();
        let mut out = Vec::with_capacity(64 * 1024);
        // Encoding into a Vec cannot fail on I/O; an invalid family would be our own bug.
        if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        let mut text = String::from_utf8(out).unwrap_or_default();
        self.task_collector.encode_text(&mut text);
        text
    }

    /// The task families as protobuf families, the `prometheus` crate's way (tests compare it with
    /// the text [`ExporterMetrics::render`] writes).
    pub fn task_families(&self) -> Vec<MetricFamily> {
        self.task_collector.collect()
    }

    /// Creates the per-app series of the exporter's own counters, so that `rate()` and alerts see
    /// the first increase of a configured app (and of `sdk_app_id=""`).
    pub fn register_apps(&self, apps: impl IntoIterator<Item = u64>) {
        let ids: Vec<String> = apps.into_iter().map(|a| a.to_string()).collect();
        for app in ids.iter().map(String::as_str).chain([""]) {
            for event_type in CALLBACK_EVENT_TYPES {
                for outcome in CALLBACK_OUTCOMES {
                    self.callbacks.with_label_values(&[app, event_type, outcome]);
                }
            }
        }
        for app in &ids {
            for reason in DROP_REASONS {
                self.tasks_dropped.with_label_values(&[app, reason]);
            }
        }
    }

    /// Counts one callback: `sdk_app_id` 0 stands for a body that names no configured app.
    pub fn count_callback(&self, sdk_app_id: u64, event_type: &str, outcome: &str) {
        let app = if sdk_app_id == 0 {
            String::new()
        } else {
            sdk_app_id.to_string()
        };
        self.callbacks.with_label_values(&[&app, event_type, outcome]).inc();
    }

    /// Counts text fields cut to `MAX_LABEL_BYTES` (`source`: `callback` or `api`).
    pub fn count_truncated(&self, source: &str, fields: u8) {
        self.labels_truncated
            .with_label_values(&[source])
            .inc_by(u64::from(fields));
    }

    /// Counts one task let go before it ended (`reason`: one of [`DROP_REASONS`]).
    pub fn count_dropped(&self, sdk_app_id: u64, reason: &str) {
        self.tasks_dropped
            .with_label_values(&[&sdk_app_id.to_string(), reason])
            .inc();
    }

    /// Counts one request refused by the server's limits (`handler`: `metrics` or `callback`).
    pub fn count_refused(&self, handler: &str, reason: &str) {
        self.http_refused.with_label_values(&[handler, reason]).inc();
    }

    /// The task families alone, as [`ExporterMetrics::render`] writes them.
    pub fn encode_task_families(&self, out: &mut String) {
        self.task_collector.encode_text(out);
    }
}

/// Content-Type of the text exposition format.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

struct FamilySpec {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    labels: &'static [&'static str],
}

const TASK_LABELS: &[&str] = &["sdk_app_id", "task_id", "room_id"];

const INFO: FamilySpec = FamilySpec {
    name: "tiw_push_task_info",
    help: "Identity of a tracked whiteboard push task; always 1.",
    kind: MetricType::GAUGE,
    labels: &["sdk_app_id", "task_id", "room_id", "group_id", "push_user_id"],
};
const STATUS: FamilySpec = FamilySpec {
    name: "tiw_push_task_status",
    help: "Status of a tracked push task as a state set: 1 for the current status, 0 for the others (background polling and callbacks).",
    kind: MetricType::GAUGE,
    labels: &["sdk_app_id", "task_id", "room_id", "status"],
};
const FINISH_REASON: FamilySpec = FamilySpec {
    name: "tiw_push_task_finish_reason",
    help: "Why an ended push task ended (AUTO, USER_CALL, EXCEPTION; FAILED for a task that failed; OTHER for a stop whose reason is missing or undocumented); always 1.",
    kind: MetricType::GAUGE,
    labels: &["sdk_app_id", "task_id", "room_id", "reason"],
};
const START: FamilySpec = FamilySpec {
    name: "tiw_push_task_start_timestamp_seconds",
    help: "PushStartTime of the task (unix seconds).",
    kind: MetricType::GAUGE,
    labels: TASK_LABELS,
};
const STOP: FamilySpec = FamilySpec {
    name: "tiw_push_task_stop_timestamp_seconds",
    help: "PushStopTime of an ended task (unix seconds).",
    kind: MetricType::GAUGE,
    labels: TASK_LABELS,
};
const DURATION: FamilySpec = FamilySpec {
    name: "tiw_push_task_duration_seconds",
    help: "Push duration of an ended task: stop - start (a running task's age is time() - tiw_push_task_start_timestamp_seconds).",
    kind: MetricType::GAUGE,
    labels: TASK_LABELS,
};
const EXCEPTIONS: FamilySpec = FamilySpec {
    name: "tiw_push_task_exceptions",
    help: "ExceptionCnt of the task as last reported.",
    kind: MetricType::GAUGE,
    labels: TASK_LABELS,
};
const IM_SYNC: FamilySpec = FamilySpec {
    name: "tiw_push_task_im_sync_timestamp_seconds",
    help: "IMSyncTime of the task: IM time of the first pushed frame, for replay sync (unix seconds).",
    kind: MetricType::GAUGE,
    labels: TASK_LABELS,
};
const LAST_UPDATE: FamilySpec = FamilySpec {
    name: "tiw_push_task_last_update_timestamp_seconds",
    help: "When the exporter last learned anything about the task (unix seconds).",
    kind: MetricType::GAUGE,
    labels: TASK_LABELS,
};
const TASKS: FamilySpec = FamilySpec {
    name: "tiw_push_tasks",
    help: "Tracked push tasks per status.",
    kind: MetricType::GAUGE,
    labels: &["sdk_app_id", "status"],
};
const STARTED: FamilySpec = FamilySpec {
    name: "tiw_push_tasks_started_total",
    help: "Distinct push tasks seen started.",
    kind: MetricType::COUNTER,
    labels: &["sdk_app_id"],
};
const FINISHED: FamilySpec = FamilySpec {
    name: "tiw_push_tasks_finished_total",
    help: "Distinct push tasks ended, once per task, by reason.",
    kind: MetricType::COUNTER,
    labels: &["sdk_app_id", "reason"],
};
const EXCEPTIONS_TOTAL: FamilySpec = FamilySpec {
    name: "tiw_push_exceptions_total",
    help: "Sum of increases of ExceptionCnt over all tasks (a task first seen with ExceptionCnt = N adds N).",
    kind: MetricType::COUNTER,
    labels: &["sdk_app_id"],
};
const DURATIONS: FamilySpec = FamilySpec {
    name: "tiw_push_duration_seconds",
    help: "Push duration of ended tasks, by finish reason.",
    kind: MetricType::HISTOGRAM,
    labels: &["sdk_app_id", "reason"],
};

const PER_TASK: [&FamilySpec; 9] = [
    &INFO,
    &STATUS,
    &FINISH_REASON,
    &START,
    &STOP,
    &DURATION,
    &EXCEPTIONS,
    &IM_SYNC,
    &LAST_UPDATE,
];
const AGGREGATE: [&FamilySpec; 5] = [&TASKS, &STARTED, &FINISHED, &EXCEPTIONS_TOTAL, &DURATIONS];

/// Renders the registry as metric families at scrape time.
pub struct TaskCollector {
    tasks: Arc<TaskRegistry>,
    /// `per_task_metrics`, switchable by a reload.
    per_task: Arc<AtomicBool>,
    descs: Vec<Desc>,
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

/// Appends `s` as a label value: backslash, double quote and newline escaped.
fn push_escaped(out: &mut String, s: &str) {
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

impl TaskCollector {
    /// Writes every task family in the text exposition format, under one short registry lock.
    pub fn encode_text(&self, out: &mut String) {
        let view = self.tasks.view();
        if self.per_task.load(Ordering::Relaxed) {
            // Each task's shared labels, escaped once: `sdk_app_id="..",task_id="..",room_id=".."`.
            let mut tasks: Vec<(&Task, String)> = view
                .tasks()
                .map(|t| {
                    let mut l = String::with_capacity(64);
                    let _ = write!(l, "sdk_app_id=\"{}\",task_id=\"", t.sdk_app_id);
                    push_escaped(&mut l, &t.task_id);
                    l.push_str("\",room_id=\"");
                    if let Some(r) = t.room_id {
                        let _ = write!(l, "{r}");
                    }
                    l.push('"');
                    (t, l)
                })
                .collect();
            // Stable order (as the prometheus crate's gather gives): diffs and greps stay readable.
            tasks.sort_unstable_by(|(a, _), (b, _)| (a.sdk_app_id, &a.task_id).cmp(&(b.sdk_app_id, &b.task_id)));
            out.reserve(tasks.len() * 1200);
            push_header(out, &INFO);
            for (t, l) in &tasks {
                out.push_str(INFO.name);
                out.push('{');
                out.push_str(l);
                out.push_str(",group_id=\"");
                push_escaped(out, &t.group_id);
                out.push_str("\",push_user_id=\"");
                push_escaped(out, &t.push_user_id);
                out.push_str("\"} 1\n");
            }
            push_header(out, &STATUS);
            for (t, l) in &tasks {
                for s in TaskStatus::ALL {
                    push_int(
                        out,
                        STATUS.name,
                        l,
                        Some(("status", s.as_str())),
                        (s == t.status) as i64,
                    );
                }
            }
            push_header(out, &FINISH_REASON);
            for (t, l) in &tasks {
                if let (true, Some(r)) = (t.status.is_ended(), t.finish_reason) {
                    push_int(out, FINISH_REASON.name, l, Some(("reason", r.as_str())), 1);
                }
            }
            push_header(out, &START);
            for (t, l) in &tasks {
                if let Some(s) = t.push_start_time {
                    push_int(out, START.name, l, None, s);
                }
            }
            push_header(out, &STOP);
            for (t, l) in &tasks {
                if let (true, Some(s)) = (t.status.is_ended(), t.push_stop_time) {
                    push_int(out, STOP.name, l, None, s);
                }
            }
            push_header(out, &DURATION);
            for (t, l) in &tasks {
                if let Some(d) = t.duration() {
                    push_float(out, DURATION.name, l, None, d);
                }
            }
            push_header(out, &EXCEPTIONS);
            for (t, l) in &tasks {
                push_int(out, EXCEPTIONS.name, l, None, t.exception_cnt as i64);
            }
            push_header(out, &IM_SYNC);
            for (t, l) in &tasks {
                if let Some(s) = t.im_sync_time {
                    push_int(out, IM_SYNC.name, l, None, s);
                }
            }
            push_header(out, &LAST_UPDATE);
            for (t, l) in &tasks {
                push_float(out, LAST_UPDATE.name, l, None, t.last_update);
            }
        }
        push_header(out, &TASKS);
        for (app, counts) in view.status_counts() {
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
        let apps: Vec<(String, &AppStats)> = view.apps().map(|(id, s)| (format!("sdk_app_id=\"{id}\""), s)).collect();
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

fn labels(names: &[&str], values: &[&str]) -> Vec<LabelPair> {
    names
        .iter()
        .zip(values)
        .map(|(n, v)| {
            let mut l = LabelPair::default();
            l.set_name(n.to_string());
            l.set_value(v.to_string());
            l
        })
        .collect()
}

fn gauge(spec: &FamilySpec, values: &[&str], v: f64) -> Metric {
    let mut g = Gauge::default();
    g.set_value(v);
    let mut m = Metric::from_gauge(g);
    m.set_label(labels(spec.labels, values));
    m
}

fn counter(spec: &FamilySpec, values: &[&str], v: u64) -> Metric {
    let mut c = Counter::default();
    c.set_value(v as f64);
    let mut m = Metric::default();
    m.set_counter(c);
    m.set_label(labels(spec.labels, values));
    m
}

fn family(spec: &FamilySpec, metrics: Vec<Metric>) -> MetricFamily {
    let mut mf = MetricFamily::default();
    mf.set_name(spec.name.into());
    mf.set_help(spec.help.into());
    mf.set_field_type(spec.kind);
    mf.set_metric(metrics);
    mf
}

impl Collector for TaskCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let view = self.tasks.view();
        let mut out = Vec::with_capacity(14);

        if self.per_task.load(Ordering::Relaxed) {
            let n = view.len();
            let (
                mut info,
                mut status,
                mut reason,
                mut start,
                mut stop,
                mut duration,
                mut exceptions,
                mut im_sync,
                mut last,
            ) = (
                Vec::with_capacity(n),
                Vec::with_capacity(n * 5),
                Vec::new(),
                Vec::with_capacity(n),
                Vec::new(),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::new(),
                Vec::with_capacity(n),
            );
            for t in view.tasks() {
                let app = t.sdk_app_id.to_string();
                let room = t.room_id.map(|r| r.to_string()).unwrap_or_default();
                let id = [app.as_str(), t.task_id.as_str(), room.as_str()];
                info.push(gauge(
                    &INFO,
                    &[&app, &t.task_id, &room, &t.group_id, &t.push_user_id],
                    1.0,
                ));
                for s in TaskStatus::ALL {
                    let v = if s == t.status { 1.0 } else { 0.0 };
                    status.push(gauge(&STATUS, &[&app, &t.task_id, &room, s.as_str()], v));
                }
                if let (true, Some(r)) = (t.status.is_ended(), t.finish_reason) {
                    reason.push(gauge(&FINISH_REASON, &[&app, &t.task_id, &room, r.as_str()], 1.0));
                }
                if let Some(s) = t.push_start_time {
                    start.push(gauge(&START, &id, s as f64));
                }
                if let (true, Some(s)) = (t.status.is_ended(), t.push_stop_time) {
                    stop.push(gauge(&STOP, &id, s as f64));
                }
                if let Some(d) = t.duration() {
                    duration.push(gauge(&DURATION, &id, d));
                }
                exceptions.push(gauge(&EXCEPTIONS, &id, t.exception_cnt as f64));
                if let Some(s) = t.im_sync_time {
                    im_sync.push(gauge(&IM_SYNC, &id, s as f64));
                }
                last.push(gauge(&LAST_UPDATE, &id, t.last_update));
            }
            for (spec, metrics) in [
                (&INFO, info),
                (&STATUS, status),
                (&FINISH_REASON, reason),
                (&START, start),
                (&STOP, stop),
                (&DURATION, duration),
                (&EXCEPTIONS, exceptions),
                (&IM_SYNC, im_sync),
                (&LAST_UPDATE, last),
            ] {
                out.push(family(spec, metrics));
            }
        }

        let mut tasks = Vec::new();
        for (app, counts) in view.status_counts() {
            let app = app.to_string();
            for s in TaskStatus::ALL {
                tasks.push(gauge(&TASKS, &[&app, s.as_str()], counts[s as usize] as f64));
            }
        }
        let (mut started, mut finished, mut exceptions, mut durations) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (app, stats) in view.apps() {
            let app = app.to_string();
            started.push(counter(&STARTED, &[&app], stats.started_total));
            exceptions.push(counter(&EXCEPTIONS_TOTAL, &[&app], stats.exceptions_total));
            for r in FinishReason::ALL {
                finished.push(counter(&FINISHED, &[&app, r.as_str()], stats.finished(r)));
                let h = stats.duration(r);
                let mut hist = Histogram::default();
                hist.set_sample_count(h.count);
                hist.set_sample_sum(h.sum);
                let mut cumulative = 0;
                let buckets = DURATION_BUCKETS
                    .iter()
                    .zip(h.counts.iter())
                    .map(|(bound, c)| {
                        cumulative += c;
                        let mut b = Bucket::default();
                        b.set_upper_bound(*bound);
                        b.set_cumulative_count(cumulative);
                        b
                    })
                    .collect();
                hist.set_bucket(buckets);
                let mut m = Metric::default();
                m.set_histogram(hist);
                m.set_label(labels(DURATIONS.labels, &[&app, r.as_str()]));
                durations.push(m);
            }
        }
        drop(view);
        out.push(family(&TASKS, tasks));
        out.push(family(&STARTED, started));
        out.push(family(&FINISHED, finished));
        out.push(family(&EXCEPTIONS_TOTAL, exceptions));
        out.push(family(&DURATIONS, durations));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Observation, Source};

    #[test]
    fn renders_every_family_with_spec_labels() {
        let tasks = Arc::new(TaskRegistry::new());
        tasks.ensure_apps([7]);
        tasks.track(7, "t1", Some(42), Source::Config);
        tasks.observe_poll(
            7,
            "t1",
            &Observation {
                status: Some(TaskStatus::Stopped),
                finish_reason: Some(FinishReason::Exception),
                push_start_time: Some(100),
                push_stop_time: Some(160),
                exception_cnt: Some(2),
                im_sync_time: Some(101),
                group_id: Some("g".into()),
                push_user_id: Some("u".into()),
                ..Default::default()
            },
        );
        let m = ExporterMetrics::new(tasks, true);
        let text = m.render();
        for line in [
            r#"tiw_push_task_info{sdk_app_id="7",task_id="t1",room_id="42",group_id="g",push_user_id="u"} 1"#,
            r#"tiw_push_task_status{sdk_app_id="7",task_id="t1",room_id="42",status="STOPPED"} 1"#,
            r#"tiw_push_task_status{sdk_app_id="7",task_id="t1",room_id="42",status="PUSHING"} 0"#,
            r#"tiw_push_task_finish_reason{sdk_app_id="7",task_id="t1",room_id="42",reason="EXCEPTION"} 1"#,
            r#"tiw_push_task_duration_seconds{sdk_app_id="7",task_id="t1",room_id="42"} 60"#,
            r#"tiw_push_task_exceptions{sdk_app_id="7",task_id="t1",room_id="42"} 2"#,
            r#"tiw_push_task_im_sync_timestamp_seconds{sdk_app_id="7",task_id="t1",room_id="42"} 101"#,
            r#"tiw_push_tasks{sdk_app_id="7",status="STOPPED"} 1"#,
            r#"tiw_push_tasks{sdk_app_id="7",status="UNKNOWN"} 0"#,
            r#"tiw_push_tasks_finished_total{sdk_app_id="7",reason="EXCEPTION"} 1"#,
            r#"tiw_push_tasks_finished_total{sdk_app_id="7",reason="FAILED"} 0"#,
            r#"tiw_push_exceptions_total{sdk_app_id="7"} 2"#,
            r#"tiw_push_duration_seconds_bucket{sdk_app_id="7",reason="EXCEPTION",le="60"} 1"#,
            r#"tiw_push_duration_seconds_count{sdk_app_id="7",reason="EXCEPTION"} 1"#,
            "# TYPE tiw_push_tasks_started_total counter",
            "tiw_exporter_build_info{",
        ] {
            assert!(text.contains(line), "missing {line}\n{text}");
        }
    }

    /// The text the fast path writes is the exposition the `prometheus` crate's encoder gives.
    #[test]
    fn direct_text_equals_the_protobuf_path() {
        let tasks = Arc::new(TaskRegistry::new());
        tasks.ensure_apps([7, 8]);
        let reasons = [FinishReason::Auto, FinishReason::UserCall, FinishReason::Exception];
        for i in 0..60i64 {
            let id = if i == 3 {
                "we\"ird\\id\nx".to_string()
            } else {
                format!("task{i}")
            };
            tasks.track(
                7 + (i % 2) as u64,
                &id,
                (i % 5 != 0).then_some(i * 10),
                Source::Discovery,
            );
            let obs = match i % 4 {
                0 => Observation {
                    status: Some(TaskStatus::Prepared),
                    ..Default::default()
                },
                1 => Observation {
                    status: Some(TaskStatus::Stopped),
                    finish_reason: Some(reasons[(i % 3) as usize]),
                    push_start_time: Some(1000 + i),
                    push_stop_time: Some(5000 + 37 * i),
                    exception_cnt: Some(i as u64 % 4),
                    im_sync_time: Some(1001 + i),
                    group_id: Some(format!("g{i}")),
                    push_user_id: Some("u\"1".into()),
                    ..Default::default()
                },
                2 => Observation {
                    status: Some(TaskStatus::Failed),
                    finish_reason: Some(FinishReason::Failed),
                    ..Default::default()
                },
                _ => Observation::default(),
            };
            tasks.observe_poll(7 + (i % 2) as u64, &id, &obs);
        }
        let m = ExporterMetrics::new(tasks, true);
        let mut fast = String::new();
        m.task_collector.encode_text(&mut fast);
        let mut slow = Vec::new();
        TextEncoder::new().encode(&m.task_families(), &mut slow).unwrap();
        let samples = |t: &str| {
            let mut v: Vec<String> = t.lines().filter(|l| !l.starts_with('#')).map(String::from).collect();
            v.sort();
            v
        };
        let (fast, slow) = (samples(&fast), samples(&String::from_utf8(slow).unwrap()));
        assert!(fast.len() > 500);
        assert_eq!(fast, slow);
    }

    #[test]
    fn per_task_metrics_off_keeps_only_aggregates() {
        let tasks = Arc::new(TaskRegistry::new());
        tasks.track(7, "t1", Some(42), Source::Config);
        let text = ExporterMetrics::new(tasks, false).render();
        assert!(!text.contains("tiw_push_task_"), "{text}");
        assert!(text.contains(r#"tiw_push_tasks{sdk_app_id="7",status="UNKNOWN"} 1"#));
    }
}
