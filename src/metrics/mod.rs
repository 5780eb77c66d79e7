//! `/metrics`: the exporter's own instruments (the groups of [`crate::instruments`], one per
//! subsystem) and the exposition of the registry ([`exposition`]), joined by
//! [`ExporterMetrics::render`].
//!
//! Per-task and aggregate push series are not held in `GaugeVec`s (whose label sets would have to
//! be removed by hand when a task expires): the collector snapshots the [`TaskRegistry`] at scrape
//! time under a short lock, with no I/O and no `.await`. Polling happens in the background because
//! the API is rate limited; a scrape never calls Tencent.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

#[cfg(any(test, feature = "fuzzing"))]
use prometheus::proto::MetricFamily;
use prometheus::{Encoder, GaugeVec, Opts, Registry, TextEncoder};

use crate::registry::TaskRegistry;

mod exposition;
#[cfg(any(test, feature = "fuzzing"))]
mod oracle;
mod share;
#[cfg(test)]
mod tests;

use crate::instruments::{
    ApiInstruments, CallbackInstruments, CallbackSinks, ConfigInstruments, HttpInstruments, PollInstruments, PollSinks,
    RelayInstruments, StoreInstruments, TaskInstruments,
};
use crate::recent::RecentEvents;
pub use exposition::{TaskCollector, TEXT_CONTENT_TYPE};

/// Version and git revision baked in at build time.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const REVISION: &str = env!("TIW_BUILD_REVISION");

/// The gzip level of `/metrics`. At 10,000 tasks level 1 takes 1/7 of level 6's time for a body
/// 1.2× as large (~1 MB; `bench/run --only render`, BENCHMARKS.md): the text is long runs of
/// repeated metric and label names, which the fastest level already finds.
pub const GZIP_LEVEL: u32 = 1;

/// How much text a scrape writes at a time: the chunk a plain scrape streams, and what
/// [`ExporterMetrics::render_gzip`] hands the compressor at a time.
pub(crate) const CHUNK: usize = 64 * 1024;

/// `data` as a gzip member at `level` (0-9).
pub fn gzip(data: &[u8], level: u32) -> Vec<u8> {
    use std::io::Write;
    // Writing into a Vec cannot fail: the only errors are the writer's.
    let mut encoder =
        flate2::write::GzEncoder::new(Vec::with_capacity(data.len() / 8 + 64), flate2::Compression::new(level));
    let _ = encoder.write_all(data);
    encoder.finish().unwrap_or_default()
}

/// Every instrument group, and the registry `/metrics` is gathered from. Subsystems are handed the
/// group they count with (`metrics.store.clone()`), not the whole.
pub struct ExporterMetrics {
    registry: Registry,
    pub api: ApiInstruments,
    pub poll: PollInstruments,
    pub tasks: TaskInstruments,
    pub callbacks: CallbackInstruments,
    pub http: HttpInstruments,
    pub store: StoreInstruments,
    pub config: ConfigInstruments,
    pub relay: RelayInstruments,
    /// The last callbacks and API errors, for the landing page (not on `/metrics`).
    pub recent: Arc<RecentEvents>,
    /// Whether per-task series are rendered (`per_task_metrics`).
    pub per_task_metrics: Arc<AtomicBool>,
    task_collector: TaskCollector,
    /// How long each scrape held the registry's lock (copying what it renders).
    lock_hold: prometheus::Histogram,
    /// The renders scrapes can join ([`ExporterMetrics::scrape`]).
    renders: share::SharedRenders,
}

impl ExporterMetrics {
    /// Builds every instrument and registers them, the task collector and the process collector.
    pub fn new(tasks: Arc<TaskRegistry>, per_task_metrics: bool) -> Arc<ExporterMetrics> {
        Self::with_exporter_metrics(tasks, per_task_metrics, true)
    }

    /// Like [`ExporterMetrics::new`]; `exporter_metrics: false` (`--web.disable-exporter-metrics`,
    /// as node_exporter has) leaves out the metrics about the process and its HTTP server
    /// (`process_*`, `tiw_exporter_http_*`), the counterpart of node_exporter's `process_*`,
    /// `go_*` and `promhttp_*`. What the exporter observes of TIW and its own polling, callbacks,
    /// store and config stays: alerts need it.
    pub fn with_exporter_metrics(
        tasks: Arc<TaskRegistry>,
        per_task_metrics: bool,
        exporter_metrics: bool,
    ) -> Arc<ExporterMetrics> {
        // Names and label sets are constants of the instrument groups: failing here is a programming error.
        Self::build(tasks, per_task_metrics, exporter_metrics).expect("metric definitions are valid")
    }

    fn build(
        tasks: Arc<TaskRegistry>,
        per_task_metrics: bool,
        exporter_metrics: bool,
    ) -> prometheus::Result<Arc<ExporterMetrics>> {
        let registry = Registry::new();
        // Left-out instruments still count (into a registry nobody gathers), so no code path changes.
        let unexposed = Registry::new();
        let process_and_http = if exporter_metrics { &registry } else { &unexposed };
        let build_info = GaugeVec::new(
            Opts::new(
                "tiw_exporter_build_info",
                "Version and git revision of the running exporter; always 1.",
            ),
            &["version", "revision"],
        )?;
        build_info.with_label_values(&[VERSION, REVISION]).set(1.0);
        registry.register(Box::new(build_info))?;
        let per_task_metrics = Arc::new(AtomicBool::new(per_task_metrics));
        // Not registered: `render` writes its families straight into the text format (see there).
        let task_collector = TaskCollector::new(tasks, per_task_metrics.clone())?;
        #[cfg(target_os = "linux")]
        process_and_http.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))?;
        let lock_hold = prometheus::Histogram::with_opts(
            prometheus::HistogramOpts::new(
                "tiw_exporter_scrape_lock_hold_seconds",
                "How long a scrape held the task registry's lock: what it renders is copied out under it (a pointer per task); sorting, rendering and compressing happen after, so callbacks and polls never wait on a scrape for longer than this.",
            )
            .buckets(vec![0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.1]),
        )?;
        process_and_http.register(Box::new(lock_hold.clone()))?;
        Ok(Arc::new(ExporterMetrics {
            api: ApiInstruments::new(&registry)?,
            poll: PollInstruments::new(&registry)?,
            tasks: TaskInstruments::new(&registry)?,
            callbacks: CallbackInstruments::new(&registry)?,
            http: HttpInstruments::new(process_and_http)?,
            store: StoreInstruments::new(&registry)?,
            config: ConfigInstruments::new(&registry)?,
            relay: RelayInstruments::new(&registry)?,
            recent: Arc::default(),
            registry,
            per_task_metrics,
            task_collector,
            lock_hold,
            renders: Default::default(),
        }))
    }

    /// The exposition in the Prometheus text format (0.0.4).
    ///
    /// The exporter's own instruments go through the `prometheus` crate's encoder; the task
    /// families, tens of thousands of series on a large fleet, are written straight into the text
    /// format by [`TaskCollector::encode_text`], which renders 10,000 tasks several times faster than
    /// building protobuf families for the encoder (BENCHMARKS.md).
    pub fn render(&self) -> String {
        let mut text = self.encode_own();
        let mut tasks = self.task_text();
        text.reserve(tasks.len_hint());
        tasks.write(&mut text, usize::MAX);
        // Every piece is a str: the whole is UTF-8.
        String::from_utf8(text).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }

    /// The body of a scrape. Compressed ([`ExporterMetrics::render_gzip`], on a blocking thread:
    /// it is CPU work, long on a large registry), a scrape that arrives while another compressed
    /// render is under way gets that render's body (see [`share`]): a Prometheus pair scraping at
    /// once costs one render, not two. Plain, the text is streamed as it is written, a chunk of
    /// [`CHUNK`] bytes at a time, yielding to the runtime between chunks ([`ExporterMetrics::stream`]).
    /// `guard` (a scrape permit) is held until the body is written.
    pub async fn scrape<G: Send + 'static>(
        self: &Arc<Self>,
        gzip: bool,
        guard: G,
    ) -> Result<axum::body::Body, tokio::task::JoinError> {
        if !gzip {
            return Ok(self.stream(guard));
        }
        let me = self.clone();
        self.renders
            .body(1, || {
                tokio::task::spawn_blocking(move || axum::body::Bytes::from(me.render_gzip()))
            })
            .await
            .map(|body| {
                drop(guard);
                axum::body::Body::from(body)
            })
    }

    /// The plain exposition as a body that writes a chunk each time it is polled: a scrape of
    /// 10,000 tasks (~16 MB of text) never holds more than a chunk of it, and a slow reader holds
    /// only the copy of the registry taken at the start, no thread. `guard` (a scrape permit) is
    /// held until the body is done or dropped.
    pub fn stream<G: Send + 'static>(&self, guard: G) -> axum::body::Body {
        let own = axum::body::Bytes::from(self.encode_own());
        let tasks = self.task_text();
        let rest = futures_util::stream::unfold(Some((tasks, guard)), |state| async move {
            let (mut tasks, guard) = state?;
            // Each chunk is ~0.1 ms of CPU: callbacks and polls on this worker run between them.
            tokio::task::yield_now().await;
            let mut chunk = Vec::with_capacity(CHUNK + 4096);
            let done = tasks.write(&mut chunk, CHUNK);
            let next = (!done).then_some((tasks, guard));
            Some((Ok::<_, std::convert::Infallible>(axum::body::Bytes::from(chunk)), next))
        });
        let first = futures_util::stream::once(std::future::ready(Ok(own)));
        axum::body::Body::from_stream(futures_util::StreamExt::chain(first, rest))
    }

    /// The exporter's own instruments in the text format, through the `prometheus` crate's encoder.
    fn encode_own(&self) -> Vec<u8> {
        let families = self.registry.gather();
        let mut out = Vec::with_capacity(64 * 1024);
        // Encoding into a Vec cannot fail on I/O; an invalid family would be our own bug.
        if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }

    /// [`ExporterMetrics::render`], gzip-compressed at [`GZIP_LEVEL`] (for scrapers that send
    /// `Accept-Encoding: gzip`, as Prometheus always does). The text goes through the compressor
    /// in chunks of [`CHUNK`] bytes and is never whole in memory: at 10,000 tasks the scrape
    /// holds ~1 MB of compressed body instead of ~14 MB of text.
    pub fn render_gzip(&self) -> Vec<u8> {
        use std::io::Write;
        let own = self.encode_own();
        let mut tasks = self.task_text();
        // About 1/14 of the text, the ratio at level 1 on a large fleet: one allocation, not a
        // doubling series of them.
        let mut encoder = flate2::write::GzEncoder::new(
            Vec::with_capacity(tasks.len_hint() / 14 + 16 * 1024),
            flate2::Compression::new(GZIP_LEVEL),
        );
        // Writing into a Vec cannot fail: the only errors are the writer's.
        let _ = encoder.write_all(&own);
        drop(own);
        let mut chunk = Vec::with_capacity(CHUNK + 4096);
        loop {
            let done = tasks.write(&mut chunk, CHUNK);
            let _ = encoder.write_all(&chunk);
            chunk.clear();
            if done {
                break;
            }
        }
        encoder.finish().unwrap_or_default()
    }

    /// Takes a scrape's snapshot of the tasks once and returns how long the registry's lock was
    /// held for it (the benchmarks measure it; writing the text takes no lock).
    pub fn render_lock_hold(&self) -> std::time::Duration {
        self.task_collector.text().held
    }

    /// The tasks' snapshot for a scrape, its lock hold observed in
    /// `tiw_exporter_scrape_lock_hold_seconds`.
    fn task_text(&self) -> exposition::TaskText {
        let tasks = self.task_collector.text();
        self.lock_hold.observe(tasks.held.as_secs_f64());
        tasks
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
        crate::instruments::register_apps(&self.callbacks, &self.tasks, apps);
    }

    /// The groups the callback receiver counts with.
    pub fn callback_sinks(&self) -> CallbackSinks {
        CallbackSinks {
            callbacks: self.callbacks.clone(),
            tasks: self.tasks.clone(),
            http: self.http.clone(),
            recent: self.recent.clone(),
        }
    }

    /// The groups the poller counts with.
    pub fn poll_sinks(&self) -> PollSinks {
        PollSinks {
            api: self.api.clone(),
            poll: self.poll.clone(),
            tasks: self.tasks.clone(),
            callbacks: self.callbacks.clone(),
            recent: self.recent.clone(),
        }
    }

    /// Adds a collector read at every scrape (the relay's queue gauges).
    pub fn register(&self, collector: Box<dyn prometheus::core::Collector>) -> prometheus::Result<()> {
        self.registry.register(collector)
    }

    /// The task families alone, as [`ExporterMetrics::render`] writes them.
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn encode_task_families(&self, out: &mut String) {
        self.task_collector.encode_text(out);
    }
}
