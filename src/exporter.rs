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
use crate::registry::TaskRegistry;
use crate::reload::{ReloadHandle, ReloadReply, Supervisor};
use crate::store::{spawn_writer, writer_channel, Store, StoreError, WriterInbox};
use crate::webconfig::WebConfig;

/// Options that come from flags rather than the config file.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub telemetry_path: String,
    /// How polling runs beside the configuration (retries; tests shorten them).
    pub poll: PollOptions,
    /// Where a reload reads the configuration from; `None`: reloads are refused.
    pub config_file: Option<PathBuf>,
    /// TLS and basic auth (`--web.config.file`).
    pub web: WebConfig,
    /// Connection, timeout and concurrency limits (`--web.*`).
    pub limits: crate::server::Limits,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            telemetry_path: "/metrics".into(),
            poll: PollOptions::default(),
            config_file: None,
            web: WebConfig::default(),
            limits: Default::default(),
        }
    }
}

/// A built exporter: every component, ready to serve.
pub struct Exporter {
    pub config: Config,
    pub registry: Arc<TaskRegistry>,
    pub metrics: Arc<ExporterMetrics>,
    pub callbacks: Arc<CallbackReceiver>,
    pub store: Arc<Store>,
    options: ServeOptions,
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
        let (tasks, apps) = (restored.tasks.len(), restored.apps.len());
        registry.restore(restored);
        if tasks > 0 || apps > 0 {
            tracing::info!(path = %store.path().display(), tasks, apps, "restored state");
        }
        // Apps left out of the configuration keep their state, hidden, until they return.
        registry.set_configured(config.apps.iter().map(|a| a.sdk_app_id));
        crate::reload::log_hidden_apps(&registry);
        let metrics = ExporterMetrics::new(registry.clone(), config.per_task_metrics);
        metrics.register_apps(config.apps.iter().map(|a| a.sdk_app_id));
        callback::log_trust(&config);
        metrics.config.loaded(true);
        let (durable, writer_inbox) = writer_channel();
        let callbacks = Arc::new(CallbackReceiver::durable(
            &config,
            registry.clone(),
            metrics.clone(),
            durable,
            options.limits.read_timeout,
        ));
        let (reload, reload_rx) = ReloadHandle::channel();
        Ok(Exporter {
            config,
            registry,
            metrics,
            callbacks,
            store,
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
            ready: self.ready.clone(),
            telemetry_path: self.options.telemetry_path.clone(),
            reload: Some(self.reload_handle()),
            scrapes: match self.options.limits.max_requests {
                0 => None,
                n => Some(Arc::new(tokio::sync::Semaphore::new(n))),
            },
        });
        // Basic auth guards metrics, reload and the landing page; probes stay open, and callbacks
        // (merged below, outside the guard) carry their own signature.
        let main = match &self.options.web.basic_auth_users {
            Some(users) => crate::http::auth::guard(main, users, self.metrics.http.clone()),
            None => main,
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
        let callback_listener = match self.config.callback.listen_address {
            Some(addr) => Some(TcpListener::bind(addr).await.map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("cannot listen on callback.listen_address {addr}: {e}"),
                )
            })?),
            None => None,
        };
        self.serve_with(listener, callback_listener, token).await
    }

    /// Tracks the configured tasks, starts polling, and serves HTTP on `listener` (and callbacks on
    /// `callback_listener` when given) until `token` is cancelled; then lets open requests finish
    /// (at most [`crate::server::SHUTDOWN_GRACE`]), writes the store a last time and waits for every loop to stop.
    pub async fn serve_with(
        self,
        listener: TcpListener,
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
        let tls = self.options.web.tls.clone();
        let limits = self.options.limits.clone();
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
            ..
        } = self;
        spawn_writer(
            store,
            registry.clone(),
            metrics.store.clone(),
            writer_inbox,
            &tracker,
            writer_token.clone(),
        );

        let supervisor = Supervisor::start(
            config,
            registry,
            metrics,
            callbacks,
            (options.config_file, options.poll),
            &token,
        );
        tracker.spawn(supervisor.run(reload_rx, token.clone()));

        if let Some(cb_listener) = callback_listener {
            let (stop, tls, limits) = (token.clone(), tls.clone(), limits.clone());
            tracker.spawn(async move {
                if let Err(e) = crate::server::serve(cb_listener, tls, callback_router, &limits, stop).await {
                    tracing::error!(error = %e, "callback listener failed");
                }
            });
        }
        tracker.close();
        ready.store(true, Ordering::Release);
        let result = crate::server::serve(listener, tls, main_router, &limits, token.clone()).await;
        token.cancel();
        writer_token.cancel();
        tracker.wait().await;
        result
    }
}
