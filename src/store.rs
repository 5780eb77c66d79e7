//! Durable persistence of the registry in an embedded redb database at `state.path`.
//!
//! redb is pure Rust (no C build, no server), ACID, and crash-safe: a commit returns once it is
//! fsynced, and a database left by a crash opens in its last committed state. One writer task
//! does group commit: callbacks wait on [`StoreHandle::flush`], the writer drains every waiting
//! request, takes the registry's changes as one consistent cut ([`TaskRegistry::take_batch`]),
//! commits them in one transaction and answers every waiter at once. So a callback is answered
//! 200 only once its effect is on disk, without one fsync per request. Poll results are written
//! by the same writer at least every [`FLUSH_PERIOD`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::metrics::ExporterMetrics;
use crate::registry::{AppStats, Batch, Key, Restored, Task, TaskRegistry};

/// The layout this build reads and writes. A store with a higher number was written by a newer
/// exporter and is refused rather than misread.
pub const SCHEMA_VERSION: u64 = 1;
/// File name inside `state.path`.
pub const FILE_NAME: &str = "tiw-push-exporter.redb";
/// Poll results are written at least this often.
pub const FLUSH_PERIOD: Duration = Duration::from_secs(1);

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const TASKS: TableDefinition<&str, &[u8]> = TableDefinition::new("tasks");
const APPS: TableDefinition<u64, &[u8]> = TableDefinition::new("apps");
const TOMBSTONES: TableDefinition<&str, f64> = TableDefinition::new("tombstones");

/// Why the store could not be used. Every message names the store's path.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot use state.path {path}: {cause}")]
    Open { path: PathBuf, cause: String },
    #[error("the store at {path} has schema version {found}, newer than this exporter's {SCHEMA_VERSION}: run a newer tiw-push-exporter, or move the store away to start empty")]
    NewerSchema { path: PathBuf, found: u64 },
    #[error("the store at {path} cannot be read: {cause}")]
    Read { path: PathBuf, cause: String },
    #[error("cannot write the store at {path}: {cause}")]
    Write { path: PathBuf, cause: String },
}

/// The open database. After a failed write (a full disk, say) redb refuses further writes until
/// the database is reopened, so the next write reopens it first.
pub struct Store {
    db: std::sync::Mutex<Option<Database>>,
    path: PathBuf,
    needs_reopen: std::sync::atomic::AtomicBool,
}

fn task_key(app: u64, task_id: &str) -> String {
    format!("{app}/{task_id}")
}

fn parse_key(s: &str) -> Option<Key> {
    let (app, task) = s.split_once('/')?;
    Some((app.parse().ok()?, task.to_string()))
}

impl Store {
    /// Opens (or creates) the store in directory `dir`, refusing one of a newer schema.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let open_err = |cause: String| StoreError::Open {
            path: dir.to_owned(),
            cause,
        };
        std::fs::create_dir_all(dir).map_err(|e| open_err(format!("cannot create the directory: {e}")))?;
        let path = dir.join(FILE_NAME);
        let db = Database::create(&path).map_err(|e| StoreError::Open {
            path: path.clone(),
            cause: e.to_string(),
        })?;
        let store = Store {
            db: std::sync::Mutex::new(Some(db)),
            path,
            needs_reopen: Default::default(),
        };
        store.init_schema()?;
        Ok(store)
    }

    /// Runs `f` on the database, reopening it first if a write failed since the last success.
    fn with_db<T>(&self, f: impl FnOnce(&Database) -> Result<T, StoreError>) -> Result<T, StoreError> {
        use std::sync::atomic::Ordering;
        let mut guard = self.db.lock().unwrap_or_else(|e| e.into_inner());
        if self.needs_reopen.load(Ordering::Acquire) {
            // redb holds a file lock: the old handle must be gone before the file is opened again.
            drop(guard.take());
            let db = Database::create(&self.path).map_err(|e| self.write_err(format!("reopening: {e}")))?;
            *guard = Some(db);
            self.needs_reopen.store(false, Ordering::Release);
        }
        let db = guard.as_ref().ok_or_else(|| self.write_err("the database is closed"))?;
        let result = f(db);
        if result.is_err() {
            self.needs_reopen.store(true, Ordering::Release);
        }
        result
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write_err(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Write {
            path: self.path.clone(),
            cause: e.to_string(),
        }
    }

    fn read_err(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Read {
            path: self.path.clone(),
            cause: e.to_string(),
        }
    }

    fn init_schema(&self) -> Result<(), StoreError> {
        self.with_db(|db| self.init_schema_in(db))
    }

    fn init_schema_in(&self, db: &Database) -> Result<(), StoreError> {
        let txn = db.begin_write().map_err(|e| self.write_err(e))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| self.read_err(e))?;
            let found = meta
                .get("schema_version")
                .map_err(|e| self.read_err(e))?
                .map(|v| v.value());
            match found {
                Some(v) if v > SCHEMA_VERSION => {
                    return Err(StoreError::NewerSchema {
                        path: self.path.clone(),
                        found: v,
                    });
                }
                Some(_) => {}
                None => {
                    meta.insert("schema_version", SCHEMA_VERSION)
                        .map_err(|e| self.write_err(e))?;
                }
            }
            txn.open_table(TASKS).map_err(|e| self.write_err(e))?;
            txn.open_table(APPS).map_err(|e| self.write_err(e))?;
            txn.open_table(TOMBSTONES).map_err(|e| self.write_err(e))?;
        }
        txn.commit().map_err(|e| self.write_err(e))
    }

    /// Everything the store holds. A record that does not decode is an error, not skipped.
    pub fn load(&self) -> Result<Restored, StoreError> {
        self.with_db(|db| self.load_from(db))
    }

    fn load_from(&self, db: &Database) -> Result<Restored, StoreError> {
        let txn = db.begin_read().map_err(|e| self.read_err(e))?;
        let mut restored = Restored::default();
        let tasks = txn.open_table(TASKS).map_err(|e| self.read_err(e))?;
        for row in tasks.iter().map_err(|e| self.read_err(e))? {
            let (k, v) = row.map_err(|e| self.read_err(e))?;
            let task: Task =
                serde_json::from_slice(v.value()).map_err(|e| self.read_err(format!("task {}: {e}", k.value())))?;
            restored.tasks.push(task);
        }
        let apps = txn.open_table(APPS).map_err(|e| self.read_err(e))?;
        for row in apps.iter().map_err(|e| self.read_err(e))? {
            let (k, v) = row.map_err(|e| self.read_err(e))?;
            let stats: AppStats =
                serde_json::from_slice(v.value()).map_err(|e| self.read_err(format!("app {}: {e}", k.value())))?;
            restored.apps.push((k.value(), stats));
        }
        let tombstones = txn.open_table(TOMBSTONES).map_err(|e| self.read_err(e))?;
        for row in tombstones.iter().map_err(|e| self.read_err(e))? {
            let (k, v) = row.map_err(|e| self.read_err(e))?;
            let key =
                parse_key(k.value()).ok_or_else(|| self.read_err(format!("bad tombstone key {:?}", k.value())))?;
            restored.tombstones.push((key, v.value()));
        }
        Ok(restored)
    }

    /// Writes one batch in one transaction; returns once it is durable.
    pub fn write(&self, batch: &Batch) -> Result<(), StoreError> {
        self.with_db(|db| self.write_to(db, batch))
    }

    fn write_to(&self, db: &Database, batch: &Batch) -> Result<(), StoreError> {
        let txn = db.begin_write().map_err(|e| self.write_err(e))?;
        {
            let mut tasks = txn.open_table(TASKS).map_err(|e| self.write_err(e))?;
            for t in &batch.tasks {
                let value = serde_json::to_vec(t).map_err(|e| self.write_err(e))?;
                tasks
                    .insert(task_key(t.sdk_app_id, &t.task_id).as_str(), value.as_slice())
                    .map_err(|e| self.write_err(e))?;
            }
            for (app, task) in &batch.removed {
                tasks
                    .remove(task_key(*app, task).as_str())
                    .map_err(|e| self.write_err(e))?;
            }
            let mut apps = txn.open_table(APPS).map_err(|e| self.write_err(e))?;
            for id in &batch.apps_removed {
                apps.remove(*id).map_err(|e| self.write_err(e))?;
            }
            for (id, stats) in &batch.apps {
                let value = serde_json::to_vec(stats).map_err(|e| self.write_err(e))?;
                apps.insert(*id, value.as_slice()).map_err(|e| self.write_err(e))?;
            }
            let mut tombstones = txn.open_table(TOMBSTONES).map_err(|e| self.write_err(e))?;
            for ((app, task), at) in &batch.tombstones_added {
                tombstones
                    .insert(task_key(*app, task).as_str(), *at)
                    .map_err(|e| self.write_err(e))?;
            }
            for (app, task) in &batch.tombstones_pruned {
                tombstones
                    .remove(task_key(*app, task).as_str())
                    .map_err(|e| self.write_err(e))?;
            }
        }
        txn.commit().map_err(|e| self.write_err(e))
    }

    /// Number of tasks stored (for tests and the growth check).
    pub fn task_count(&self) -> Result<u64, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_read().map_err(|e| self.read_err(e))?;
            let tasks = txn.open_table(TASKS).map_err(|e| self.read_err(e))?;
            tasks.len().map_err(|e| self.read_err(e))
        })
    }

    /// Size of the database file in bytes.
    pub fn file_size(&self) -> u64 {
        std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
    }
}

/// The store could not make a change durable; the caller should answer 503 so TIW retries.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the store could not write; the change is kept in memory and retried")]
pub struct NotDurable;

/// Asks the writer for durability.
#[derive(Clone)]
pub struct StoreHandle {
    requests: mpsc::UnboundedSender<oneshot::Sender<bool>>,
}

impl StoreHandle {
    /// Returns once every change made before the call is on disk.
    pub async fn flush(&self) -> Result<(), NotDurable> {
        let (tx, rx) = oneshot::channel();
        self.requests.send(tx).map_err(|_| NotDurable)?;
        match rx.await {
            Ok(true) => Ok(()),
            _ => Err(NotDurable),
        }
    }
}

/// Starts the writer; it writes a last batch and stops when `token` is cancelled.
pub fn spawn_writer(
    store: Arc<Store>,
    registry: Arc<TaskRegistry>,
    metrics: Arc<ExporterMetrics>,
    tracker: &tokio_util::task::TaskTracker,
    token: CancellationToken,
) -> StoreHandle {
    let (tx, mut rx) = mpsc::unbounded_channel::<oneshot::Sender<bool>>();
    tracker.spawn(async move {
        let mut failing = false;
        loop {
            let mut waiters = Vec::new();
            let stopping = tokio::select! {
                req = rx.recv() => {
                    waiters.extend(req);
                    false
                }
                _ = tokio::time::sleep(FLUSH_PERIOD) => false,
                _ = token.cancelled() => true,
            };
            // Group commit: everyone who asked by now is served by this one transaction.
            while let Ok(req) = rx.try_recv() {
                waiters.push(req);
            }
            let ok = write_once(&store, &registry, &metrics, &mut failing).await;
            for w in waiters {
                let _ = w.send(ok);
            }
            if stopping {
                rx.close();
                while let Ok(w) = rx.try_recv() {
                    let _ = w.send(write_once(&store, &registry, &metrics, &mut failing).await);
                }
                return;
            }
        }
    });
    StoreHandle { requests: tx }
}

async fn write_once(
    store: &Arc<Store>,
    registry: &Arc<TaskRegistry>,
    metrics: &ExporterMetrics,
    failing: &mut bool,
) -> bool {
    let batch = registry.take_batch();
    if batch.is_empty() {
        // Nothing pending means everything taken so far was written.
        return true;
    }
    let started = Instant::now();
    let (s, b) = (store.clone(), batch);
    let (result, batch) = match tokio::task::spawn_blocking(move || {
        let r = s.write(&b);
        (r, b)
    })
    .await
    {
        Ok(pair) => pair,
        Err(e) => {
            tracing::error!(error = %e, "store writer task failed");
            return false;
        }
    };
    metrics.store_write_duration.observe(started.elapsed().as_secs_f64());
    match result {
        Ok(()) => {
            metrics.store_last_write_successful.set(1.0);
            if std::mem::take(failing) {
                tracing::info!(path = %store.path().display(), "store writes again");
            }
            true
        }
        Err(e) => {
            registry.return_batch(batch);
            metrics.store_errors.with_label_values(&["write"]).inc();
            metrics.store_last_write_successful.set(0.0);
            if !std::mem::replace(failing, true) {
                tracing::error!(error = %e, "store write failed; callbacks are answered 503 until it writes again");
            }
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{FinishReason, Observation, Source, TaskStatus};

    #[test]
    fn round_trips_tasks_counters_and_tombstones() {
        let dir = tempfile::tempdir().unwrap();
        let registry = TaskRegistry::new();
        registry.ensure_apps([1]);
        registry.track(1, "a", Some(5), Source::Discovery);
        registry.track(1, "gone", None, Source::Discovery);
        let stop = Observation {
            status: Some(TaskStatus::Stopped),
            finish_reason: Some(FinishReason::Exception),
            push_start_time: Some(10),
            push_stop_time: Some(70),
            exception_cnt: Some(4),
            ..Default::default()
        };
        registry.observe_poll(1, "a", &stop);
        registry.observe_poll(1, "gone", &stop);
        let store = Store::open(dir.path()).unwrap();
        store.write(&registry.take_batch()).unwrap();
        assert!(registry.take_batch().is_empty());
        // Expire one: removed from the store, remembered as a tombstone.
        registry.expire(Duration::ZERO);
        store.write(&registry.take_batch()).unwrap();
        assert_eq!(store.task_count().unwrap(), 0);
        drop(store);

        let store = Store::open(dir.path()).unwrap();
        let fresh = TaskRegistry::new();
        fresh.restore(store.load().unwrap());
        let (tasks, apps) = fresh.snapshot();
        assert!(tasks.is_empty());
        assert_eq!(apps, registry.snapshot().1, "counters survive");
        assert_eq!(
            fresh.track(1, "gone", None, Source::Discovery),
            crate::registry::Track::Known,
            "tombstones survive"
        );
    }

    #[test]
    fn refuses_a_newer_schema_and_a_corrupt_file() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store
                .with_db(|db| {
                    let txn = db.begin_write().unwrap();
                    txn.open_table(META)
                        .unwrap()
                        .insert("schema_version", SCHEMA_VERSION + 1)
                        .unwrap();
                    txn.commit().unwrap();
                    Ok(())
                })
                .unwrap();
        }
        let err = Store::open(dir.path()).err().unwrap().to_string();
        assert!(
            err.contains("newer") && err.contains(dir.path().to_str().unwrap()),
            "{err}"
        );
        std::fs::write(dir.path().join(FILE_NAME), vec![0x5a; 8192]).unwrap();
        let err = Store::open(dir.path()).err().unwrap().to_string();
        assert!(err.contains(FILE_NAME), "{err}");
    }
}
