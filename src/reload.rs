//! Reloading the configuration: the handle that SIGHUP and `POST /-/reload` use, and the
//! supervisor that owns what a reload replaces (the configuration and the poller).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::callback::CallbackReceiver;
use crate::config::Config;
use crate::metrics::ExporterMetrics;
use crate::poller::{track_configured_tasks, PollOptions, Poller};
use crate::recordings::RecordRegistry;
use crate::registry::TaskRegistry;

pub(crate) type ReloadReply = oneshot::Sender<Result<String, String>>;

/// A change made to every configuration a reload reads (`demo --config.file` points the user's
/// apps at its simulator and its store at scratch space).
#[derive(Clone)]
pub struct ConfigRewrite(pub Arc<dyn Fn(Config) -> Config + Send + Sync>);

impl std::fmt::Debug for ConfigRewrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConfigRewrite")
    }
}

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

impl ReloadHandle {
    /// A handle and the receiving end its requests arrive at.
    pub(crate) fn channel() -> (ReloadHandle, mpsc::Receiver<ReloadReply>) {
        let (tx, rx) = mpsc::channel(4);
        (ReloadHandle { tx }, rx)
    }
}

/// Says which apps the store holds state for that the configuration leaves out.
pub fn log_hidden_apps(registry: &TaskRegistry) {
    for (sdk_app_id, tasks) in registry.hidden_apps() {
        tracing::info!(
            sdk_app_id,
            tasks,
            "the store keeps this app's tasks and counters, but the configuration leaves it out: not polled, not on /metrics; list it again to bring them back, or run `tiw-push-exporter state forget --app` on a stopped exporter"
        );
    }
}

/// Owns what a reload replaces: the configuration and the poller.
pub(crate) struct Supervisor {
    config: Config,
    registry: Arc<TaskRegistry>,
    /// The recording tasks (`apps[].record`).
    records: Arc<RecordRegistry>,
    metrics: Arc<ExporterMetrics>,
    callbacks: Arc<CallbackReceiver>,
    /// Where a reload reads the configuration; `None`: reloads are refused.
    config_file: Option<PathBuf>,
    config_rewrite: Option<ConfigRewrite>,
    poll: PollOptions,
    poller: Option<(CancellationToken, TaskTracker)>,
}

impl Supervisor {
    /// Takes over the running configuration and starts polling under `parent`.
    pub(crate) fn start(
        config: Config,
        (registry, records): (Arc<TaskRegistry>, Arc<RecordRegistry>),
        metrics: Arc<ExporterMetrics>,
        callbacks: Arc<CallbackReceiver>,
        (config_file, config_rewrite, poll): (Option<PathBuf>, Option<ConfigRewrite>, PollOptions),
        parent: &CancellationToken,
    ) -> Supervisor {
        let mut supervisor = Supervisor {
            config,
            registry,
            records,
            metrics,
            callbacks,
            config_file,
            config_rewrite,
            poll,
            poller: None,
        };
        supervisor.start_poller(parent);
        supervisor
    }

    /// Serves reload requests until `stop` is cancelled or every handle is gone, then stops polling.
    pub(crate) async fn run(mut self, mut requests: mpsc::Receiver<ReloadReply>, stop: CancellationToken) {
        loop {
            tokio::select! {
                req = requests.recv() => match req {
                    Some(reply) => {
                        let result = self.reload(&stop).await;
                        let _ = reply.send(result);
                    }
                    None => break,
                },
                _ = stop.cancelled() => break,
            }
        }
        self.stop_poller().await;
    }

    fn start_poller(&mut self, parent: &CancellationToken) {
        let poller = Poller::from_config(
            &self.config,
            (&self.registry, &self.records),
            &self.metrics.poll_sinks(),
            self.poll,
        );
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
        if self.config_file.is_none() {
            // Nothing was refused: there is no file to read (the demo without --config.file). Said
            // as it is, and not counted as a failed reload (that would fire TiwConfigReloadFailed).
            let why = "started without a configuration file (the demo's own): nothing to reload".to_string();
            tracing::info!("{why}");
            return Err(why);
        }
        let result = self.try_reload(parent).await;
        match &result {
            Ok(summary) => {
                self.metrics.config.loaded(true);
                tracing::info!(changes = %summary, "configuration reloaded");
            }
            Err(e) => {
                self.metrics.config.loaded(false);
                tracing::error!(error = %e, "configuration reload refused; the previous configuration stays in force");
            }
        }
        result
    }

    async fn try_reload(&mut self, parent: &CancellationToken) -> Result<String, String> {
        let path = self
            .config_file
            .clone()
            .ok_or("started without a configuration file: nothing to reload")?;
        let new = Config::load(&path).map_err(|e| format!("{}:\n{e}", path.display()))?;
        let new = match &self.config_rewrite {
            Some(rewrite) => (rewrite.0)(new),
            None => new,
        };
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
            self.metrics.poll.forget_app(*id);
        }
        // An app whose census was turned off keeps no counts that nothing updates any more.
        for app in new.apps.iter().filter(|a| !a.census) {
            self.metrics.poll.forget_census(app.sdk_app_id);
            self.metrics.recent.forget_census(app.sdk_app_id);
        }
        self.registry.set_configured(new_ids.iter().copied());
        log_hidden_apps(&self.registry);
        self.registry.set_max_tasks(new.max_tasks);
        self.registry.set_max_unconfirmed(new.callback.max_unconfirmed_tasks);
        self.metrics.register_apps(new_ids.iter().copied());
        crate::callback::log_trust(&new);
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
