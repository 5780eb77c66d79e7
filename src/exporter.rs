//! Wires config → clients → poller and callback receiver → registry → store and metrics → HTTP for
//! `serve` (and `demo`), and applies reloads.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::callback::{self, CallbackReceiver};
use crate::config::Config;
use crate::http::{router, HttpState};
use crate::metrics::ExporterMetrics;
use crate::poller::{PollSettings, PolledApp, Poller};
use crate::registry::{Source, TaskRegistry};
use crate::store::{spawn_writer, Store, StoreError};
use crate::task::unix_now;
use crate::tencentcloud::ratelimit::budget_key;
use crate::tencentcloud::{Client, Limiters, RetryPolicy, TiwClient};
use crate::webconfig::{require_auth, WebConfig};

/// How long a graceful shutdown waits for open connections before it stops them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(8);

/// Options that come from flags rather than the config file.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub telemetry_path: String,
    /// Retry policy of API calls (tests shorten it).
    pub retry: RetryPolicy,
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
            retry: RetryPolicy::default(),
            config_file: None,
            web: WebConfig::default(),
            limits: Default::default(),
        }
    }
}

type ReloadReply = oneshot::Sender<Result<String, String>>;

/// Asks a running exporter to reload its configuration file (SIGHUP, `POST /-/reload`).
#[derive(Clone)]
pub struct ReloadHandle {
    tx: mpsc::Sender<ReloadReply>,
}

impl ReloadHandle {
    /// Reloads; `Ok` says what changed, `Err` why the new config was refused (the old one stays).
    pub async fn reload(&self) -> Result<String, String> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(tx)
            .await
            .map_err(|_| "the exporter is shutting down".to_string())?;
        rx.await.map_err(|_| "the exporter is shutting down".to_string())?
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
    reload_tx: mpsc::Sender<ReloadReply>,
    reload_rx: mpsc::Receiver<ReloadReply>,
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

fn build_poller(
    config: &Config,
    registry: &Arc<TaskRegistry>,
    metrics: &Arc<ExporterMetrics>,
    retry: RetryPolicy,
) -> Arc<Poller> {
    let clients = build_clients(config, metrics, retry);
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
                    group: budget_key(&app.api),
                },
            )
        })
        .collect();
    let settings = PollSettings {
        interval: config.poll.interval,
        discovery_interval: config.poll.discovery_interval,
        retention: config.retention_stopped_tasks,
        confirm_timeout: config.callback.confirm_timeout,
    };
    Poller::new(registry.clone(), metrics.clone(), apps, settings)
}

/// Says which apps the store holds state for that the configuration leaves out.
fn log_hidden_apps(registry: &TaskRegistry) {
    for (sdk_app_id, tasks) in registry.hidden_apps() {
        tracing::info!(
            sdk_app_id,
            tasks,
            "the store keeps this app's tasks and counters, but the configuration leaves it out: not polled, not on /metrics; list it again to bring them back, or run `tiw-push-exporter state forget --app` on a stopped exporter"
        );
    }
}

/// Says which apps take unsigned push events, and which can take no callback at all.
fn log_callback_trust(config: &Config) {
    for app in &config.apps {
        match (&app.callback_key, app.allow_unsigned_callbacks) {
            (Some(_), _) => {}
            (None, true) => tracing::warn!(
                sdk_app_id = app.sdk_app_id,
                "this app accepts unsigned push callbacks (allow_unsigned_callbacks): anyone who finds the callback URL can claim tasks for it"
            ),
            (None, false) => tracing::info!(
                sdk_app_id = app.sdk_app_id,
                "this app has no callback_key: its push callbacks are refused as unsigned and it is watched by polling alone"
            ),
        }
    }
}

fn track_configured_tasks(config: &Config, registry: &TaskRegistry) {
    for app in &config.apps {
        for task in &app.tasks {
            registry.track(app.sdk_app_id, task, None, Source::Config);
        }
    }
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
        log_hidden_apps(&registry);
        let metrics = ExporterMetrics::new(registry.clone(), config.per_task_metrics);
        metrics.register_apps(config.apps.iter().map(|a| a.sdk_app_id));
        log_callback_trust(&config);
        metrics.config_last_reload_successful.set(1.0);
        metrics.config_last_reload_success_timestamp.set(unix_now());
        let callbacks = Arc::new(CallbackReceiver::new(&config, registry.clone(), metrics.clone()));
        callbacks.set_read_timeout(options.limits.read_timeout);
        let (reload_tx, reload_rx) = mpsc::channel(4);
        Ok(Exporter {
            config,
            registry,
            metrics,
            callbacks,
            store,
            options,
            ready: Arc::new(AtomicBool::new(false)),
            reload_tx,
            reload_rx,
        })
    }

    /// A handle that reloads this exporter once it serves.
    pub fn reload_handle(&self) -> ReloadHandle {
        ReloadHandle {
            tx: self.reload_tx.clone(),
        }
    }

    /// The callback path must not shadow another endpoint of the listener it shares.
    fn check_routes(&self) -> std::io::Result<()> {
        let cb = self.config.callback.path.as_str();
        let taken = [
            self.options.telemetry_path.as_str(),
            "/",
            "/-/healthy",
            "/-/ready",
            "/-/reload",
        ];
        if self.config.callback.listen_address.is_none() && taken.contains(&cb) {
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
        let main = match &self.options.web.auth {
            // Basic auth guards metrics, reload and the landing page; probes stay open, and
            // callbacks carry their own signature.
            Some(auth) => {
                let open = vec!["/-/healthy".to_string(), "/-/ready".to_string()];
                main.layer(axum::middleware::from_fn_with_state(
                    (auth.clone(), Arc::new(open), self.metrics.clone()),
                    require_auth,
                ))
            }
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
    /// (at most [`SHUTDOWN_GRACE`]), writes the store a last time and waits for every loop to stop.
    pub async fn serve_with(
        self,
        listener: TcpListener,
        callback_listener: Option<TcpListener>,
        token: CancellationToken,
    ) -> std::io::Result<()> {
        self.check_routes()?;
        track_configured_tasks(&self.config, &self.registry);
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
            mut reload_rx,
            ..
        } = self;

        let mut supervisor = Supervisor {
            config,
            registry,
            metrics,
            callbacks,
            options,
            poller: None,
        };
        supervisor.start_poller(&token);
        let stop = token.clone();
        tracker.spawn(async move {
            loop {
                tokio::select! {
                    req = reload_rx.recv() => match req {
                        Some(reply) => {
                            let result = supervisor.reload(&stop).await;
                            let _ = reply.send(result);
                        }
                        None => break,
                    },
                    _ = stop.cancelled() => break,
                }
            }
            supervisor.stop_poller().await;
        });

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

/// Owns what a reload replaces: the configuration and the poller.
struct Supervisor {
    config: Config,
    registry: Arc<TaskRegistry>,
    metrics: Arc<ExporterMetrics>,
    callbacks: Arc<CallbackReceiver>,
    options: ServeOptions,
    poller: Option<(CancellationToken, TaskTracker)>,
}

impl Supervisor {
    fn start_poller(&mut self, parent: &CancellationToken) {
        let poller = build_poller(&self.config, &self.registry, &self.metrics, self.options.retry);
        let (token, tracker) = (parent.child_token(), TaskTracker::new());
        poller.spawn(&tracker, &token);
        tracker.close();
        self.poller = Some((token, tracker));
    }

    async fn stop_poller(&mut self) {
        if let Some((token, tracker)) = self.poller.take() {
            token.cancel();
            tracker.wait().await;
            // Polls cut off mid-flight will not report back.
            self.registry.clear_polling();
        }
    }

    /// Loads the config file again and swaps it in; on any problem the old one stays.
    async fn reload(&mut self, parent: &CancellationToken) -> Result<String, String> {
        let result = self.try_reload(parent).await;
        match &result {
            Ok(summary) => {
                self.metrics.config_last_reload_successful.set(1.0);
                self.metrics.config_last_reload_success_timestamp.set(unix_now());
                tracing::info!(changes = %summary, "configuration reloaded");
            }
            Err(e) => {
                self.metrics.config_last_reload_successful.set(0.0);
                tracing::error!(error = %e, "configuration reload refused; the previous configuration stays in force");
            }
        }
        result
    }

    async fn try_reload(&mut self, parent: &CancellationToken) -> Result<String, String> {
        let path = self
            .options
            .config_file
            .clone()
            .ok_or("started without a configuration file: nothing to reload")?;
        let new = Config::load(&path).map_err(|e| format!("{}:\n{e}", path.display()))?;
        let restart_only = [
            ("state.path", self.config.state_path != new.state_path),
            ("callback.path", self.config.callback.path != new.callback.path),
            (
                "callback.listen_address",
                self.config.callback.listen_address != new.callback.listen_address,
            ),
        ];
        let needs_restart: Vec<&str> = restart_only
            .iter()
            .filter(|(_, changed)| *changed)
            .map(|(k, _)| *k)
            .collect();
        if !needs_restart.is_empty() {
            return Err(format!(
                "{} changed: that takes a restart, not a reload",
                needs_restart.join(", ")
            ));
        }
        let old: BTreeSet<u64> = self.config.apps.iter().map(|a| a.sdk_app_id).collect();
        let new_ids: BTreeSet<u64> = new.apps.iter().map(|a| a.sdk_app_id).collect();
        self.stop_poller().await;
        for id in old.difference(&new_ids) {
            let label = id.to_string();
            let _ = self.metrics.up.remove_label_values(&[&label]);
            let _ = self.metrics.last_poll_success.remove_label_values(&[&label]);
        }
        self.registry.set_configured(new_ids.iter().copied());
        log_hidden_apps(&self.registry);
        self.registry.set_max_tasks(new.max_tasks);
        self.metrics.register_apps(new_ids.iter().copied());
        log_callback_trust(&new);
        track_configured_tasks(&new, &self.registry);
        self.callbacks.reconfigure(&new);
        self.metrics
            .per_task_metrics
            .store(new.per_task_metrics, Ordering::Relaxed);
        let summary = format!(
            "{} apps (added {:?}, left out {:?}: their tasks and counters are kept)",
            new_ids.len(),
            new_ids.difference(&old).collect::<Vec<_>>(),
            old.difference(&new_ids).collect::<Vec<_>>()
        );
        self.config = new;
        self.start_poller(parent);
        Ok(summary)
    }
}
