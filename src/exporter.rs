//! The composition root: builds the store, registry, metrics, callback receiver, routers and the
//! reload supervisor from a configuration, and serves them (`serve` and `demo`). Nothing imports it
//! but `main` and `demo`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::callback::{self, CallbackReceiver};
use crate::config::Config;
use crate::http::{router, HttpState};
use crate::metrics::ExporterMetrics;
use crate::poller::PollOptions;
use crate::recordings::collector::RecordCollector;
use crate::recordings::RecordRegistry;
use crate::registry::TaskRegistry;
use crate::relay::{Relay, RelayGauges};
pub use crate::reload::ConfigRewrite;
use crate::reload::{ReloadHandle, ReloadReply, Supervisor};
use crate::store::{spawn_writer, writer_channel, Store, StoreError, WriterInbox};
use crate::webconfig::{LiveWebConfig, WebConfig, WEB_CONFIG_CHECK_INTERVAL};

/// Options that come from flags rather than the config file.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub telemetry_path: String,
    /// How polling runs beside the configuration (retries; tests shorten them).
    pub poll: PollOptions,
    /// Where a reload reads the configuration from; `None`: reloads are refused.
    pub config_file: Option<PathBuf>,
    /// What a reload does to the configuration it read before taking it (`demo --config.file`
    /// points the user's apps at its simulator and its store at scratch space).
    pub config_rewrite: Option<ConfigRewrite>,
    /// Run by `demo`, on the simulator: warnings about how the listeners are exposed, which the
    /// demo's user cannot change, are left out.
    pub demo: bool,
    /// TLS and basic auth (`--web.config.file`) as read at start.
    pub web: WebConfig,
    /// Where `web` was read from: re-read while serving when it (or a certificate it names)
    /// changes. `None`: `web` stays as given.
    pub web_config_file: Option<PathBuf>,
    /// The metrics about the process and its HTTP server (`process_*`, `tiw_exporter_http_*`);
    /// `false`: `--web.disable-exporter-metrics`.
    pub exporter_metrics: bool,
    /// Connection, timeout and concurrency limits (`--web.*`).
    pub limits: crate::server::Limits,
    /// On shutdown, how long `/-/ready` answers 503 while requests (callbacks) are still served,
    /// so that a load balancer moves new ones to another replica first (`--web.shutdown-delay`).
    pub shutdown_delay: std::time::Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            telemetry_path: "/metrics".into(),
            poll: PollOptions::default(),
            config_file: None,
            config_rewrite: None,
            demo: false,
            web: WebConfig::default(),
            web_config_file: None,
            exporter_metrics: true,
            limits: Default::default(),
            shutdown_delay: std::time::Duration::ZERO,
        }
    }
}

/// A built exporter: every component, ready to serve.
pub struct Exporter {
    pub config: Config,
    pub registry: Arc<TaskRegistry>,
    /// The recording tasks of the apps with `apps[].record`.
    pub records: Arc<RecordRegistry>,
    pub metrics: Arc<ExporterMetrics>,
    pub callbacks: Arc<CallbackReceiver>,
    pub store: Arc<Store>,
    /// Relay mode's queues (empty unless an app has `callback_forward_url`).
    pub relay: Arc<Relay>,
    options: ServeOptions,
    /// The web config in force (re-read on change).
    web: Arc<LiveWebConfig>,
    ready: Arc<AtomicBool>,
    reload: ReloadHandle,
    reload_rx: mpsc::Receiver<ReloadReply>,
    /// Flush requests of the callback receiver, served by the writer once the exporter serves.
    writer_inbox: WriterInbox,
}

impl Exporter {
    /// Opens the store at `state.path`, restores the registry from it, and builds every component.
    /// A store that cannot be opened or read is an error: the exporter never starts empty by accident.
    pub fn new(config: Config, options: ServeOptions) -> Result<Exporter, StoreError> {
        let store = Arc::new(Store::open(&config.state_path)?);
        let restored = store.load()?;
        let registry = Arc::new(TaskRegistry::with_max_tasks(config.max_tasks));
        registry.set_max_unconfirmed(config.callback.max_unconfirmed_tasks);
        let (tasks, apps) = (restored.tasks.len(), restored.apps.len());
        registry.restore(restored);
        if tasks > 0 || apps > 0 {
            tracing::info!(path = %store.path().display(), tasks, apps, "restored state");
        }
        // Apps left out of the configuration keep their state, hidden, until they return.
        registry.set_configured(config.apps.iter().map(|a| a.sdk_app_id));
        crate::reload::log_hidden_apps(&registry);
        let metrics =
            ExporterMetrics::with_exporter_metrics(registry.clone(), config.per_task_metrics, options.exporter_metrics);
        metrics.register_apps(config.apps.iter().map(|a| a.sdk_app_id));
        callback::log_trust(&config);
        metrics.config.loaded(true);
        let records = Arc::new(RecordRegistry::with_max_tasks(config.max_tasks));
        let recorded = store.load_records()?;
        if !recorded.tasks.is_empty() {
            tracing::info!(recordings = recorded.tasks.len(), "restored recording tasks");
        }
        records.restore(recorded);
        records.set_configured(config.apps.iter().filter(|a| a.record).map(|a| a.sdk_app_id));
        // Names and label sets are constants of the collector: failing here is a programming error.
        metrics
            .register(Box::new(
                RecordCollector::new(&records, metrics.per_task_metrics.clone()).expect("metric definitions are valid"),
            ))
            .expect("the recording families are registered once");
        let relay = Relay::new(&config, store.load_relay()?, metrics.relay.clone());
        log_relay_backlog(&relay);
        // Names and label sets are constants of RelayGauges: failing here is a programming error.
        metrics
            .register(Box::new(
                RelayGauges::new(&relay).expect("metric definitions are valid"),
            ))
            .expect("the relay's gauges are registered once");
        let (durable, writer_inbox) = writer_channel();
        let callbacks = Arc::new(
            CallbackReceiver::durable(
                &config,
                registry.clone(),
                metrics.callback_sinks(),
                (durable, relay.clone()),
                options.limits.read_timeout,
            )
            .with_records(records.clone()),
        );
        let (reload, reload_rx) = ReloadHandle::channel();
        let web = LiveWebConfig::new(options.web.clone(), options.web_config_file.clone());
        Ok(Exporter {
            web,
            config,
            registry,
            records,
            metrics,
            callbacks,
            store,
            relay,
            options,
            ready: Arc::new(AtomicBool::new(false)),
            reload,
            reload_rx,
            writer_inbox,
        })
    }

    /// A handle that reloads this exporter once it serves.
    pub fn reload_handle(&self) -> ReloadHandle {
        self.reload.clone()
    }

    /// POST /-/reload answers whoever reaches the main listener when no basic auth guards it; with
    /// callbacks on that listener too, that is whoever TIW's callbacks come through. Said at start.
    fn warn_if_reload_is_open(&self, callbacks_apart: bool) {
        let guarded = self.options.web.basic_auth_users.is_some();
        if !guarded && !callbacks_apart && !self.options.demo {
            tracing::warn!(
                callback_path = %self.config.callback.path,
                "callbacks share the main listener and no basic_auth_users guard it: whoever can send \
                 callbacks can also scrape and POST /-/reload; set callback.listen_address (which serves \
                 the callback path alone) or basic_auth_users in --web.config.file"
            );
        }
    }

    /// The callback path must not shadow another endpoint of the listener it shares.
    fn check_routes(&self) -> std::io::Result<()> {
        let cb = self.config.callback.path.as_str();
        let taken = cb == self.options.telemetry_path || crate::http::FIXED_ROUTES.contains(&cb);
        if self.config.callback.listen_address.is_none() && taken {
            return Err(std::io::Error::other(format!(
                "callback.path {cb} collides with another endpoint of the main listener"
            )));
        }
        Ok(())
    }

    /// The main router: metrics, health, reload, landing page, and callbacks unless they have their
    /// own listener.
    pub fn router(&self) -> axum::Router {
        let main = router(HttpState {
            metrics: self.metrics.clone(),
            registry: self.registry.clone(),
            ready: self.ready.clone(),
            telemetry_path: self.options.telemetry_path.clone(),
            reload: Some(self.reload_handle()),
            scrapes: match self.options.limits.max_requests {
                0 => None,
                n => Some(Arc::new(tokio::sync::Semaphore::new(n))),
            },
            relay: Some(self.relay.clone()),
        });
        // Basic auth guards metrics, reload and the landing page; probes stay open, and callbacks
        // (merged below, outside the guard) carry their own signature. With a web config file the
        // guard is always there: a later version of the file may list users.
        let main = if self.options.web_config_file.is_some() || self.options.web.basic_auth_users.is_some() {
            crate::http::auth::guard(main, self.web.clone(), self.metrics.http.clone())
        } else {
            main
        };
        match self.config.callback.listen_address {
            None => main.merge(self.callback_router()),
            Some(_) => main,
        }
    }

    /// The callback route alone.
    pub fn callback_router(&self) -> axum::Router {
        callback::router(self.callbacks.clone(), &self.config.callback.path)
    }

    /// Like [`Exporter::serve_with`], binding `callback.listen_address` when it is set.
    pub async fn serve(self, listener: TcpListener, token: CancellationToken) -> std::io::Result<()> {
        self.serve_on(vec![listener], token).await
    }

    /// [`Exporter::serve`] on several listeners (`--web.listen-address` given more than once),
    /// each serving the same routes.
    pub async fn serve_on(self, listeners: Vec<TcpListener>, token: CancellationToken) -> std::io::Result<()> {
        let callback_listener = match self.config.callback.listen_address {
            Some(addr) => Some(TcpListener::bind(addr).await.map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("cannot listen on callback.listen_address {addr}: {e}"),
                )
            })?),
            None => None,
        };
        self.serve_with(listeners, callback_listener, token).await
    }

    /// Tracks the configured tasks, starts polling, and serves HTTP on `listeners` (and callbacks on
    /// `callback_listener` when given) until `token` is cancelled; then lets open requests finish
    /// (at most [`crate::server::SHUTDOWN_GRACE`]), writes the store a last time and waits for every loop to stop.
    pub async fn serve_with(
        self,
        listeners: Vec<TcpListener>,
        callback_listener: Option<TcpListener>,
        token: CancellationToken,
    ) -> std::io::Result<()> {
        self.check_routes()?;
        crate::poller::track_configured_tasks(&self.config, &self.registry);
        let tracker = TaskTracker::new();
        // The writer outlives the HTTP servers, so callbacks still in flight at shutdown are made
        // durable and answered; it writes a last batch when it stops.
        let writer_token = CancellationToken::new();
        let main_router = self.router();
        let callback_router = self.callback_router();
        // Whether the listeners speak TLS is fixed at start; the certificate follows the file.
        let tls = self.options.web.tls.is_some().then(|| self.web.clone());
        let limits = self.options.limits.clone();
        self.warn_if_reload_is_open(callback_listener.is_some());
        let Exporter {
            config,
            registry,
            metrics,
            callbacks,
            options,
            ready,
            reload_rx,
            store,
            writer_inbox,
            web,
            relay,
            records,
            ..
        } = self;
        crate::relay::deliver::spawn(relay.clone(), &tracker, token.clone());
        spawn_writer(
            store,
            (registry.clone(), relay, records.clone()),
            metrics.store.clone(),
            writer_inbox,
            &tracker,
            writer_token.clone(),
        );

        let metrics_for_web = metrics.clone();
        let supervisor = Supervisor::start(
            config,
            (registry, records),
            metrics,
            callbacks,
            (options.config_file, options.config_rewrite, options.poll),
            &token,
        );
        tracker.spawn(supervisor.run(reload_rx, token.clone()));

        // The HTTP servers stop `shutdown_delay` after the rest: first /-/ready says 503, so that
        // the load balancer sends new callbacks to another replica, while this one still answers.
        let serving = CancellationToken::new();
        {
            let (token, serving, ready, delay) =
                (token.clone(), serving.clone(), ready.clone(), options.shutdown_delay);
            tracker.spawn(async move {
                tokio::select! {
                    _ = token.cancelled() => {}
                    _ = serving.cancelled() => return,
                }
                ready.store(false, Ordering::Release);
                if !delay.is_zero() {
                    tracing::info!(delay = ?delay, "not ready: answering until the load balancer has moved new requests away");
                    tokio::time::sleep(delay).await;
                }
                serving.cancel();
            });
        }
        if let Some(cb_listener) = callback_listener {
            let (stop, tls, limits) = (serving.clone(), tls.clone(), limits.clone());
            tracker.spawn(async move {
                if let Err(e) = crate::server::serve(cb_listener, tls, callback_router, &limits, stop).await {
                    tracing::error!(error = %e, "callback listener failed");
                }
            });
        }
        {
            let (metrics, stop) = (metrics_for_web, token.clone());
            tracker.spawn(watch_web_config(web, metrics, stop));
        }
        let mut main_servers = tokio::task::JoinSet::new();
        for listener in listeners {
            let (tls, router, limits, stop) = (tls.clone(), main_router.clone(), limits.clone(), serving.clone());
            main_servers.spawn(async move { crate::server::serve(listener, tls, router, &limits, stop).await });
        }
        tracker.close();
        ready.store(true, Ordering::Release);
        // The first listener to fail stops them all (and the exporter); otherwise they end together.
        let mut result = Ok(());
        while let Some(ended) = main_servers.join_next().await {
            match ended {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    token.cancel();
                    serving.cancel();
                    result = result.and(Err(e));
                }
                Err(e) => {
                    token.cancel();
                    serving.cancel();
                    result = result.and(Err(std::io::Error::other(format!("listener task failed: {e}"))));
                }
            }
        }
        token.cancel();
        serving.cancel();
        writer_token.cancel();
        tracker.wait().await;
        result
    }
}

/// Says what the relay still has to deliver from before the start.
fn log_relay_backlog(relay: &Relay) {
    for d in relay.depths() {
        if d.requests > 0 || d.dead_letters > 0 {
            tracing::info!(
                sdk_app_id = d.sdk_app_id,
                queued = d.requests,
                dead_letters = d.dead_letters,
                backend = relay
                    .url(d.sdk_app_id)
                    .map(|u| u.origin().ascii_serialization())
                    .unwrap_or_else(|| "(none configured)".into()),
                "restored callbacks still to relay to the backend"
            );
        }
    }
}

/// Re-reads the web config every [`WEB_CONFIG_CHECK_INTERVAL`] until `token` is cancelled, logging
/// and counting what changed.
async fn watch_web_config(web: Arc<LiveWebConfig>, metrics: Arc<ExporterMetrics>, token: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(WEB_CONFIG_CHECK_INTERVAL) => {}
            _ = token.cancelled() => return,
        }
        // File reads and a certificate parse: off the async workers.
        let checking = web.clone();
        let Ok(checked) = tokio::task::spawn_blocking(move || checking.check()).await else {
            continue;
        };
        match checked {
            None => {}
            Some(Ok(())) => {
                metrics.config.web_loaded(true);
                tracing::info!("web config file changed: new connections use it");
            }
            Some(Err(e)) => {
                metrics.config.web_loaded(false);
                tracing::error!(error = %e, "web config file changed but cannot be used; the previous one stays in force");
            }
        }
    }
}
