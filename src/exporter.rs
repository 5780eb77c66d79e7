//! Wires config → clients → poller and callback receiver → registry → metrics → HTTP for `serve`
//! (and `demo`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::callback::{self, CallbackReceiver};
use crate::config::{limiter_key, Config};
use crate::http::{router, HttpState};
use crate::metrics::ExporterMetrics;
use crate::poller::{PollSettings, PolledApp, Poller};
use crate::registry::{unix_now, Source, TaskRegistry};
use crate::store::{spawn_writer, Store, StoreError};
use crate::tencentcloud::{Client, Limiters, RetryPolicy, TiwClient};

/// Options that come from flags rather than the config file.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub telemetry_path: String,
    /// Retry policy of API calls (tests shorten it).
    pub retry: RetryPolicy,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            telemetry_path: "/metrics".into(),
            retry: RetryPolicy::default(),
        }
    }
}

/// A built exporter: every component, ready to serve.
pub struct Exporter {
    pub config: Config,
    pub registry: Arc<TaskRegistry>,
    pub metrics: Arc<ExporterMetrics>,
    pub poller: Arc<Poller>,
    pub callbacks: Arc<CallbackReceiver>,
    pub clients: HashMap<u64, TiwClient>,
    pub store: Arc<Store>,
    options: ServeOptions,
    ready: Arc<AtomicBool>,
}

/// One HTTP client for every app: connection pooling across apps on the same endpoint.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(concat!("tiw-push-exporter/", env!("CARGO_PKG_VERSION")))
        .pool_idle_timeout(Duration::from_secs(50))
        .connect_timeout(Duration::from_secs(5))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// Builds one [`TiwClient`] per app, sharing rate limiters between apps on the same credentials.
pub fn build_clients(config: &Config, metrics: &Arc<ExporterMetrics>, retry: RetryPolicy) -> HashMap<u64, TiwClient> {
    let http = http_client();
    let limiters = Arc::new(Limiters::new(&config.apps));
    config
        .apps
        .iter()
        .map(|app| {
            let client =
                Client::new(http.clone(), app.api.clone(), limiters.clone(), metrics.clone()).with_retry(retry);
            (app.sdk_app_id, TiwClient::new(app.sdk_app_id, client))
        })
        .collect()
}

impl Exporter {
    /// Opens the store at `state.path`, restores the registry from it, and builds every component.
    /// A store that cannot be opened or read is an error: the exporter never starts empty by accident.
    pub fn new(config: Config, options: ServeOptions) -> Result<Exporter, StoreError> {
        let store = Arc::new(Store::open(&config.state_path)?);
        let restored = store.load()?;
        let registry = Arc::new(TaskRegistry::new());
        let (tasks, apps) = (restored.tasks.len(), restored.apps.len());
        registry.restore(restored);
        if tasks > 0 || apps > 0 {
            tracing::info!(path = %store.path().display(), tasks, apps, "restored state");
        }
        registry.ensure_apps(config.apps.iter().map(|a| a.sdk_app_id));
        let metrics = ExporterMetrics::new(registry.clone(), config.per_task_metrics);
        metrics.config_last_reload_successful.set(1.0);
        metrics.config_last_reload_success_timestamp.set(unix_now());
        let clients = build_clients(&config, &metrics, options.retry);
        let apps = config
            .apps
            .iter()
            .map(|app| {
                let client = clients[&app.sdk_app_id].clone();
                (
                    app.sdk_app_id,
                    PolledApp {
                        client,
                        discover: app.discover,
                        group: limiter_key(&app.api),
                    },
                )
            })
            .collect();
        let settings = PollSettings {
            interval: config.poll.interval,
            discovery_interval: config.poll.discovery_interval,
            retention: config.retention_stopped_tasks,
        };
        let poller = Poller::new(registry.clone(), metrics.clone(), apps, settings);
        let callbacks = Arc::new(CallbackReceiver::new(&config, registry.clone(), metrics.clone()));
        Ok(Exporter {
            config,
            registry,
            metrics,
            poller,
            callbacks,
            clients,
            store,
            options,
            ready: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The callback path must not shadow another endpoint of the listener it shares.
    fn check_routes(&self) -> std::io::Result<()> {
        let cb = self.config.callback.path.as_str();
        let taken = [self.options.telemetry_path.as_str(), "/", "/-/healthy", "/-/ready"];
        if self.config.callback.listen_address.is_none() && taken.contains(&cb) {
            return Err(std::io::Error::other(format!(
                "callback.path {cb} collides with another endpoint of the main listener"
            )));
        }
        Ok(())
    }

    /// The main router: metrics, health, landing page, and callbacks unless they have their own listener.
    pub fn router(&self) -> axum::Router {
        let main = router(HttpState {
            metrics: self.metrics.clone(),
            ready: self.ready.clone(),
            telemetry_path: self.options.telemetry_path.clone(),
        });
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
    /// `callback_listener` when given) until `token` is cancelled; then waits for every loop to stop.
    pub async fn serve_with(
        self,
        listener: TcpListener,
        callback_listener: Option<TcpListener>,
        token: CancellationToken,
    ) -> std::io::Result<()> {
        self.check_routes()?;
        for app in &self.config.apps {
            for task in &app.tasks {
                self.registry.track(app.sdk_app_id, task, None, Source::Config);
            }
        }
        let tracker = TaskTracker::new();
        // The writer outlives the HTTP servers, so callbacks still in flight at shutdown are made
        // durable and answered; it writes a last batch when it stops.
        let writer_token = CancellationToken::new();
        let store = spawn_writer(
            self.store.clone(),
            self.registry.clone(),
            self.metrics.clone(),
            &tracker,
            writer_token.clone(),
        );
        self.callbacks.set_store(store);
        self.poller.spawn(&tracker, &token);
        if let Some(cb_listener) = callback_listener {
            let (app, stop) = (self.callback_router(), token.clone());
            tracker.spawn(async move {
                let served =
                    axum::serve(cb_listener, app).with_graceful_shutdown(async move { stop.cancelled().await });
                if let Err(e) = served.await {
                    tracing::error!(error = %e, "callback listener failed");
                }
            });
        }
        tracker.close();
        self.ready.store(true, Ordering::Release);
        let stop = token.clone();
        let result = axum::serve(listener, self.router())
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        token.cancel();
        writer_token.cancel();
        tracker.wait().await;
        result
    }
}
