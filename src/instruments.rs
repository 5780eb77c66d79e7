//! The exporter's own instruments, one group per subsystem, each counted through methods that name
//! what happened (`store.wrote(..)`, `poll.answered(..)`), never through raw label slices. Each
//! group registers its instruments in the registry it is given and is cheap to clone (the
//! `prometheus` crate's instruments are shared handles), so a subsystem holds only its own group.

use std::time::Duration;

use prometheus::{Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry};

use crate::census::{Census, ListedStatus, TaskType};
use crate::recent::RecentEvents;
use crate::task::unix_now;

/// Event types that get their own label value; anything else is `other` (design §4).
pub const CALLBACK_EVENT_TYPES: [&str; 3] = ["WhiteboardPushStarted", "WhiteboardPushStopped", "other"];
/// Outcomes of a received callback (design §4); `contradicted` is counted when the confirming poll
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

fn registered<C: prometheus::core::Collector + Clone + 'static>(registry: &Registry, c: C) -> prometheus::Result<C> {
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

/// What the API client counts: `tiw_exporter_api_requests_total{action,code}` and
/// `tiw_exporter_api_request_duration_seconds{action}`.
#[derive(Clone)]
pub struct ApiInstruments {
    requests: IntCounterVec,
    duration: HistogramVec,
}

impl ApiInstruments {
    pub fn new(registry: &Registry) -> prometheus::Result<ApiInstruments> {
        Ok(ApiInstruments {
            requests: registered(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "tiw_exporter_api_requests_total",
                        "Tencent Cloud API requests sent, by action and result code (OK, Tencent's error code, or transport).",
                    ),
                    &["action", "code"],
                )?,
            )?,
            duration: registered(
                registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "tiw_exporter_api_request_duration_seconds",
                        "Duration of Tencent Cloud API requests, by action.",
                    )
                    .buckets(vec![0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
                    &["action"],
                )?,
            )?,
        })
    }

    /// Instruments registered nowhere, for one-off commands (`describe`) that serve no `/metrics`.
    pub fn unexposed() -> ApiInstruments {
        // Names and label sets are constants of this file: failing here is a programming error.
        ApiInstruments::new(&Registry::new()).expect("metric definitions are valid")
    }

    /// One request answered (`code`: `OK`, Tencent's error code, or `transport`) after `took`.
    pub fn requested(&self, action: &str, code: &str, took: Duration) {
        self.duration.with_label_values(&[action]).observe(took.as_secs_f64());
        self.requests.with_label_values(&[action, code]).inc();
    }
}

/// What polling tells about each app: `tiw_up`, the last answered poll, the sweep duration, and
/// the last complete DescribeRunningTasks pass.
#[derive(Clone)]
pub struct PollInstruments {
    up: GaugeVec,
    last_success: GaugeVec,
    sweep_duration: Gauge,
    discovery_duration: GaugeVec,
    last_discovery: GaugeVec,
    permitted: GaugeVec,
    running: GaugeVec,
    oldest: GaugeVec,
}

impl PollInstruments {
    pub fn new(registry: &Registry) -> prometheus::Result<PollInstruments> {
        Ok(PollInstruments {
            up: registered(registry, GaugeVec::new(
                Opts::new("tiw_up", "1 if the app's last Tencent Cloud API call got an answer from Tencent, 0 after transport failures or app-level errors (AuthFailure, ResourceUnavailable, UnauthorizedOperation)."),
                &["sdk_app_id"],
            )?)?,
            last_success: registered(registry, GaugeVec::new(
                Opts::new(
                    "tiw_exporter_last_poll_success_timestamp_seconds",
                    "Unix time of the app's last DescribeWhiteboardPush that Tencent answered.",
                ),
                &["sdk_app_id"],
            )?)?,
            sweep_duration: registered(registry, Gauge::new(
                "tiw_exporter_poll_sweep_duration_seconds",
                "How long the last full polling sweep over all unfinished tasks took (the longest over credential groups); grows past poll.interval when the API budget is the limit.",
            )?)?,
            discovery_duration: registered(registry, GaugeVec::new(
                Opts::new(
                    "tiw_exporter_discovery_duration_seconds",
                    "How long the app's last complete DescribeRunningTasks pass took (every page).",
                ),
                &["sdk_app_id"],
            )?)?,
            last_discovery: registered(registry, GaugeVec::new(
                Opts::new(
                    "tiw_exporter_last_discovery_success_timestamp_seconds",
                    "Unix time the app's last complete DescribeRunningTasks pass ended: the running list it saw is a status hint for every known task.",
                ),
                &["sdk_app_id"],
            )?)?,
            permitted: registered(registry, GaugeVec::new(
                Opts::new(
                    "tiw_exporter_api_action_permitted",
                    "0 if Tencent Cloud's CAM refused the app's last call of this action (AuthFailure.UnauthorizedOperation, UnauthorizedOperation, ResourceUnavailable.InterfaceUnAuthorized: a permission missing for this action), 1 once one was answered.",
                ),
                &["sdk_app_id", "action"],
            )?)?,
            running: registered(registry, GaugeVec::new(
                Opts::new(
                    "tiw_running_tasks",
                    "Tasks DescribeRunningTasks listed for the app, by task type and listed status (QUEUED, PROCESSING, FINISHED; OTHER for anything else), from the type's last complete list pass. Transcode tasks are counted here only, not tracked one by one.",
                ),
                &["sdk_app_id", "task_type", "status"],
            )?)?,
            oldest: registered(registry, GaugeVec::new(
                Opts::new(
                    "tiw_running_tasks_oldest_created_timestamp_seconds",
                    "Unix time the oldest task of this type and listed status was created (CreateTime, read in the zone that is not in the future), from the type's last complete list pass; absent when none is listed.",
                ),
                &["sdk_app_id", "task_type", "status"],
            )?)?,
        })
    }

    /// A complete list pass of `task_type` for the app counted `census`.
    pub fn census(&self, sdk_app_id: u64, task_type: TaskType, census: &Census) {
        let app = sdk_app_id.to_string();
        for status in ListedStatus::ALL {
            let labels = [app.as_str(), task_type.as_str(), status.as_str()];
            let n = census.count(status);
            // The documented statuses always have a line (0 is news too); OTHER only when seen.
            if n > 0 || status != ListedStatus::Other {
                self.running.with_label_values(&labels).set(n as f64);
            } else {
                let _ = self.running.remove_label_values(&labels);
            }
            match census.oldest(status) {
                Some(at) => self.oldest.with_label_values(&labels).set(at),
                None => {
                    let _ = self.oldest.remove_label_values(&labels);
                }
            }
        }
    }

    /// Whether CAM lets the app's credentials call `action` (its last call's outcome).
    pub fn set_permitted(&self, sdk_app_id: u64, action: &str, permitted: bool) {
        self.permitted
            .with_label_values(&[&sdk_app_id.to_string(), action])
            .set(if permitted { 1.0 } else { 0.0 });
    }

    /// The app's last call got an answer from Tencent (`true`), or the app is down (`false`).
    pub fn set_up(&self, sdk_app_id: u64, up: bool) {
        self.up
            .with_label_values(&[&sdk_app_id.to_string()])
            .set(if up { 1.0 } else { 0.0 });
    }

    /// Tencent answered a `DescribeWhiteboardPush` for the app just now.
    pub fn answered(&self, sdk_app_id: u64) {
        self.last_success
            .with_label_values(&[&sdk_app_id.to_string()])
            .set(unix_now());
    }

    /// A complete DescribeRunningTasks pass of the app just ended, after `took`.
    pub fn discovered(&self, sdk_app_id: u64, took: Duration) {
        let label = sdk_app_id.to_string();
        self.discovery_duration
            .with_label_values(&[&label])
            .set(took.as_secs_f64());
        self.last_discovery.with_label_values(&[&label]).set(unix_now());
    }

    /// The longest sweep over credential groups took `took`.
    pub fn swept(&self, took: Duration) {
        self.sweep_duration.set(took.as_secs_f64());
    }

    /// The last sweep duration (the benchmarks read it).
    pub fn sweep_seconds(&self) -> f64 {
        self.sweep_duration.get()
    }

    /// Removes the series of an app left out of the configuration.
    pub fn forget_app(&self, sdk_app_id: u64) {
        let label = sdk_app_id.to_string();
        for family in [
            &self.up,
            &self.last_success,
            &self.discovery_duration,
            &self.last_discovery,
        ] {
            let _ = family.remove_label_values(&[&label]);
        }
        for action in ["DescribeWhiteboardPush", "DescribeRunningTasks"] {
            let _ = self.permitted.remove_label_values(&[&label, action]);
        }
        self.forget_census(sdk_app_id);
    }

    /// Removes the app's census series.
    pub fn forget_census(&self, sdk_app_id: u64) {
        let label = sdk_app_id.to_string();
        for task_type in TaskType::ALL {
            for status in ListedStatus::ALL {
                let labels = [label.as_str(), task_type.as_str(), status.as_str()];
                let _ = self.running.remove_label_values(&labels);
                let _ = self.oldest.remove_label_values(&labels);
            }
        }
    }
}

/// Tasks let go before they ended, and text fields cut before they became label values.
#[derive(Clone)]
pub struct TaskInstruments {
    dropped: IntCounterVec,
    truncated: IntCounterVec,
}

impl TaskInstruments {
    pub fn new(registry: &Registry) -> prometheus::Result<TaskInstruments> {
        let dropped = IntCounterVec::new(
            Opts::new(
                "tiw_exporter_tasks_dropped_total",
                "Tasks let go before they ended: not_found (Tencent answered TaskNotFound 3 times in a row), limit (retention.max_tasks reached; the task was refused).",
            ),
            &["sdk_app_id", "reason"],
        )?;
        let truncated = IntCounterVec::new(
            Opts::new(
                "tiw_exporter_label_values_truncated_total",
                "GroupId and PushUserId values cut to 256 bytes before they became label values, by where they came from (callback, api).",
            ),
            &["source"],
        )?;
        for source in ["callback", "api"] {
            truncated.with_label_values(&[source]);
        }
        Ok(TaskInstruments {
            dropped: registered(registry, dropped)?,
            truncated: registered(registry, truncated)?,
        })
    }

    /// One task let go before it ended (`reason`: one of [`DROP_REASONS`]).
    pub fn dropped(&self, sdk_app_id: u64, reason: &str) {
        self.dropped.with_label_values(&[&sdk_app_id.to_string(), reason]).inc();
    }

    /// Text fields cut to `MAX_LABEL_BYTES` (`source`: `callback` or `api`).
    pub fn truncated(&self, source: &str, fields: u8) {
        if fields > 0 {
            self.truncated.with_label_values(&[source]).inc_by(u64::from(fields));
        }
    }

    fn register_app(&self, app: &str) {
        for reason in DROP_REASONS {
            self.dropped.with_label_values(&[app, reason]);
        }
    }
}

/// Callbacks received, by app, event type and outcome, and how late they arrived.
#[derive(Clone)]
pub struct CallbackInstruments {
    received: IntCounterVec,
    delay: HistogramVec,
    configured: GaugeVec,
}

impl CallbackInstruments {
    pub fn new(registry: &Registry) -> prometheus::Result<CallbackInstruments> {
        let received = IntCounterVec::new(
            Opts::new(
                "tiw_exporter_callbacks_total",
                "TIW callbacks received, by app (a configured SdkAppId, or \"\" when the body names none), event type and outcome; contradicted: the API's answer overruled an accepted callback.",
            ),
            &["sdk_app_id", "event_type", "outcome"],
        )?;
        let delay = HistogramVec::new(
            HistogramOpts::new(
                "tiw_exporter_callback_delay_seconds",
                "Time from a callback's Timestamp to its receipt.",
            )
            .buckets(vec![0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0]),
            &["event_type"],
        )?;
        for event_type in &CALLBACK_EVENT_TYPES[..2] {
            delay.with_label_values(&[event_type]);
        }
        let configured = GaugeVec::new(
            Opts::new(
                "tiw_exporter_callbacks_configured",
                "1 if the app takes TIW's push callbacks (it has a callback_key, or allow_unsigned_callbacks), 0 if it is watched by polling alone: TiwCallbacksMissing only concerns the former.",
            ),
            &["sdk_app_id"],
        )?;
        Ok(CallbackInstruments {
            received: registered(registry, received)?,
            delay: registered(registry, delay)?,
            configured: registered(registry, configured)?,
        })
    }

    /// Which apps take callbacks, as configured now (apps left out lose their series).
    pub fn configured(&self, apps: impl IntoIterator<Item = (u64, bool)>) {
        self.configured.reset();
        for (app, takes) in apps {
            self.configured
                .with_label_values(&[&app.to_string()])
                .set(if takes { 1.0 } else { 0.0 });
        }
    }

    /// One callback: `sdk_app_id` 0 stands for a body that names no configured app.
    pub fn received(&self, sdk_app_id: u64, event_type: &str, outcome: &str) {
        let app = if sdk_app_id == 0 {
            String::new()
        } else {
            sdk_app_id.to_string()
        };
        self.received.with_label_values(&[&app, event_type, outcome]).inc();
    }

    /// A callback arrived `seconds` after its own Timestamp.
    pub fn delayed(&self, event_type: &str, seconds: f64) {
        self.delay.with_label_values(&[event_type]).observe(seconds);
    }

    fn register_app(&self, app: &str) {
        for event_type in CALLBACK_EVENT_TYPES {
            for outcome in CALLBACK_OUTCOMES {
                self.received.with_label_values(&[app, event_type, outcome]);
            }
        }
    }
}

/// What becomes of relayed callbacks (`tiw_exporter_callback_forward_total{outcome}`): queued,
/// delivered (the backend answered 2xx), retried (an attempt failed: 5xx, timeout, no connection),
/// dead_letter (the backend answered 4xx), refused_full (the queue was full: TIW answered 503).
pub const FORWARD_OUTCOMES: [&str; 5] = ["queued", "delivered", "retried", "dead_letter", "refused_full"];

/// Relay mode's counters and its delivery latency; the queue gauges are read from the relay at
/// scrape time (`relay::RelayGauges`).
#[derive(Clone)]
pub struct RelayInstruments {
    forwarded: IntCounterVec,
    latency: HistogramVec,
}

impl RelayInstruments {
    pub fn new(registry: &Registry) -> prometheus::Result<RelayInstruments> {
        Ok(RelayInstruments {
            forwarded: registered(registry, IntCounterVec::new(
                Opts::new(
                    "tiw_exporter_callback_forward_total",
                    "Callbacks relayed to the app's callback_forward_url, by outcome: queued, delivered (2xx), retried (an attempt failed: 5xx, timeout, no connection), dead_letter (4xx: kept, not retried), refused_full (queue full: TIW answered 503 and retries).",
                ),
                &["sdk_app_id", "outcome"],
            )?)?,
            latency: registered(registry, HistogramVec::new(
                HistogramOpts::new(
                    "tiw_exporter_callback_forward_delivery_seconds",
                    "Time from a relayed callback's receipt to the backend's 2xx, retries included.",
                )
                .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0]),
                &["sdk_app_id"],
            )?)?,
        })
    }

    /// Instruments registered nowhere (unit tests).
    pub fn unexposed() -> RelayInstruments {
        RelayInstruments::new(&Registry::new()).expect("metric definitions are valid")
    }

    /// Creates an app's series, so that rate() and alerts see its first increase.
    pub fn register_app(&self, app: u64) {
        let app = app.to_string();
        for outcome in FORWARD_OUTCOMES {
            self.forwarded.with_label_values(&[&app, outcome]);
        }
        self.latency.with_label_values(&[&app]);
    }

    pub fn counted(&self, app: u64, outcome: &str) {
        self.forwarded.with_label_values(&[&app.to_string(), outcome]).inc();
    }

    /// The backend took a request `waited` seconds after its receipt.
    pub fn delivered(&self, app: u64, waited: f64) {
        let app = app.to_string();
        self.forwarded.with_label_values(&[&app, "delivered"]).inc();
        self.latency.with_label_values(&[&app]).observe(waited);
    }

    /// How many of `app`'s requests came to `outcome` (tests read it).
    pub fn count(&self, app: u64, outcome: &str) -> u64 {
        self.forwarded.with_label_values(&[&app.to_string(), outcome]).get()
    }
}

/// Requests the HTTP servers refused before handling them.
#[derive(Clone)]
pub struct HttpInstruments {
    refused: IntCounterVec,
}

impl HttpInstruments {
    pub fn new(registry: &Registry) -> prometheus::Result<HttpInstruments> {
        let refused = IntCounterVec::new(
            Opts::new(
                "tiw_exporter_http_requests_refused_total",
                "Requests refused by the HTTP server's limits, by handler and reason (overloaded, body_timeout; auth_busy: every bcrypt slot was checking another password).",
            ),
            &["handler", "reason"],
        )?;
        // Present from the start, so that rate() and alerts see the first refusal.
        for (handler, reason) in [
            ("metrics", "overloaded"),
            ("callback", "overloaded"),
            ("callback", "body_timeout"),
            ("auth", "auth_busy"),
        ] {
            refused.with_label_values(&[handler, reason]);
        }
        Ok(HttpInstruments {
            refused: registered(registry, refused)?,
        })
    }

    /// One request refused (`handler`: `metrics`, `callback` or `auth`).
    pub fn refused(&self, handler: &str, reason: &str) {
        self.refused.with_label_values(&[handler, reason]).inc();
    }

    /// How many requests were refused so (tests read it).
    pub fn refused_count(&self, handler: &str, reason: &str) -> u64 {
        self.refused.with_label_values(&[handler, reason]).get()
    }
}

/// The store's writes: how long each took, failures, and whether the last one succeeded.
#[derive(Clone)]
pub struct StoreInstruments {
    write_duration: Histogram,
    errors: IntCounterVec,
    last_write_successful: Gauge,
}

impl StoreInstruments {
    pub fn new(registry: &Registry) -> prometheus::Result<StoreInstruments> {
        let write_duration = Histogram::with_opts(
            HistogramOpts::new(
                "tiw_exporter_store_write_duration_seconds",
                "Duration of one store transaction (group commit, fsync included).",
            )
            .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0]),
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "tiw_exporter_store_errors_total",
                "Store operations that failed, by operation.",
            ),
            &["op"],
        )?;
        errors.with_label_values(&["write"]);
        let last_write_successful = Gauge::new(
            "tiw_exporter_store_last_write_successful",
            "1 if the last store write succeeded; 0 while writes fail (callbacks are then answered 503).",
        )?;
        last_write_successful.set(1.0);
        Ok(StoreInstruments {
            write_duration: registered(registry, write_duration)?,
            errors: registered(registry, errors)?,
            last_write_successful: registered(registry, last_write_successful)?,
        })
    }

    /// One store transaction took `took` and succeeded (`ok`) or failed.
    pub fn wrote(&self, took: Duration, ok: bool) {
        self.write_duration.observe(took.as_secs_f64());
        if ok {
            self.last_write_successful.set(1.0);
        } else {
            self.errors.with_label_values(&["write"]).inc();
            self.last_write_successful.set(0.0);
        }
    }
}

/// Whether the configuration last loaded, and when it last did; the same for `--web.config.file`.
#[derive(Clone)]
pub struct ConfigInstruments {
    last_reload_successful: Gauge,
    last_reload_success_timestamp: Gauge,
    web_last_reload_successful: Gauge,
    web_reload_failures: IntCounter,
}

impl ConfigInstruments {
    pub fn new(registry: &Registry) -> prometheus::Result<ConfigInstruments> {
        Ok(ConfigInstruments {
            last_reload_successful: registered(
                registry,
                Gauge::new(
                    "tiw_exporter_config_last_reload_successful",
                    "1 if the last configuration load succeeded.",
                )?,
            )?,
            last_reload_success_timestamp: registered(
                registry,
                Gauge::new(
                    "tiw_exporter_config_last_reload_success_timestamp_seconds",
                    "Unix time of the last successful configuration load.",
                )?,
            )?,
            web_last_reload_successful: registered(
                registry,
                Gauge::new(
                    "tiw_exporter_web_config_last_reload_successful",
                    "1 if the --web.config.file in force is the file as it is now (1 without one); 0 while a change to it is refused.",
                )?,
            )?,
            web_reload_failures: registered(
                registry,
                IntCounter::new(
                    "tiw_exporter_web_config_reload_failures_total",
                    "Changes to --web.config.file (or the certificates it names) refused; the previous web config stayed in force.",
                )?,
            )?,
        })
        .inspect(|c| c.web_last_reload_successful.set(1.0))
    }

    /// A changed web config file was taken (`ok`) or refused.
    pub fn web_loaded(&self, ok: bool) {
        self.web_last_reload_successful.set(if ok { 1.0 } else { 0.0 });
        if !ok {
            self.web_reload_failures.inc();
        }
    }

    /// A configuration load succeeded (`ok`) just now, or was refused.
    pub fn loaded(&self, ok: bool) {
        if ok {
            self.last_reload_successful.set(1.0);
            self.last_reload_success_timestamp.set(unix_now());
        } else {
            self.last_reload_successful.set(0.0);
        }
    }
}

/// Creates the per-app series of the callback and drop counters, so that `rate()` and alerts see
/// the first increase of a configured app (and of `sdk_app_id=""`).
pub(crate) fn register_apps(
    callbacks: &CallbackInstruments,
    tasks: &TaskInstruments,
    apps: impl IntoIterator<Item = u64>,
) {
    let ids: Vec<String> = apps.into_iter().map(|a| a.to_string()).collect();
    for app in ids.iter().map(String::as_str).chain([""]) {
        callbacks.register_app(app);
    }
    for app in &ids {
        tasks.register_app(app);
    }
}

/// What the callback receiver counts with: its own group, the tasks' (drops), the HTTP refusals it
/// makes, and the landing page's lists. Built by the composition root ([`crate::metrics::ExporterMetrics::callback_sinks`]).
#[derive(Clone)]
pub struct CallbackSinks {
    pub callbacks: CallbackInstruments,
    pub tasks: TaskInstruments,
    pub http: HttpInstruments,
    pub recent: std::sync::Arc<RecentEvents>,
}

/// What the poller counts with: the API client's group, its own, the tasks', the callbacks' (a
/// read that contradicts one counts it), and the landing page's lists
/// ([`crate::metrics::ExporterMetrics::poll_sinks`]).
#[derive(Clone)]
pub struct PollSinks {
    pub api: ApiInstruments,
    pub poll: PollInstruments,
    pub tasks: TaskInstruments,
    pub callbacks: CallbackInstruments,
    pub recent: std::sync::Arc<RecentEvents>,
}
