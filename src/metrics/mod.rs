//! `/metrics`: the exporter's own instruments ([`ExporterMetrics`], here, with a method per thing
//! counted) and the exposition of the registry ([`exposition`]), joined by [`ExporterMetrics::render`].
//!
//! Per-task and aggregate push series are not held in `GaugeVec`s (whose label sets would have to
//! be removed by hand when a task expires): the collector snapshots the [`TaskRegistry`] at scrape
//! time under a short lock, with no I/O and no `.await`. Polling happens in the background because
//! the API is rate limited; a scrape never calls Tencent.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

#[cfg(any(test, feature = "fuzzing"))]
use prometheus::proto::MetricFamily;
use prometheus::{Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder};

use crate::registry::TaskRegistry;

mod exposition;
#[cfg(any(test, feature = "fuzzing"))]
mod oracle;
#[cfg(test)]
mod tests;

pub use exposition::{TaskCollector, TEXT_CONTENT_TYPE};

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
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn task_families(&self) -> Vec<MetricFamily> {
        prometheus::core::Collector::collect(&self.task_collector)
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

    /// The narrow handle the API client counts its requests with.
    pub fn api(&self) -> crate::tencentcloud::client::ApiInstruments {
        crate::tencentcloud::client::ApiInstruments {
            requests: self.api_requests.clone(),
            duration: self.api_request_duration.clone(),
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
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn encode_task_families(&self, out: &mut String) {
        self.task_collector.encode_text(out);
    }
}
