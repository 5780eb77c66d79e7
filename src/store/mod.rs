//! Durable persistence of the registry in an embedded redb database at `state.path`.
//!
//! redb is pure Rust (no C build, no server), ACID, and crash-safe: a commit returns once it is
//! fsynced, and a database left by a crash opens in its last committed state. One writer task
//! does group commit: callbacks wait on [`StoreHandle::flush`], the writer drains every waiting
//! request, takes the registry's changes as one consistent cut ([`TaskRegistry::take_batch`]),
//! commits them in one transaction and answers every waiter at once. So a callback is answered
//! 200 only once its effect is on disk, without one fsync per request. Poll results are written
//! by the same writer at least every [`FLUSH_PERIOD`].
//!
//! The store proves what it loads: a marker in its `meta` table says it is this exporter's, and
//! every record carries a checksum of its table, key and value. An empty or foreign file, a record
//! that fails its checksum, or a page so damaged that redb panics, refuses the store with its path
//! and the record named; nothing damaged is ever loaded (a counter that went backwards, say).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::instruments::StoreInstruments;
use crate::recordings::{RecordBatch, RecordRegistry};
use crate::registry::{Batch, Key, Restored, Task, TaskRegistry};
use crate::relay::{Relay, RelayOp};

/// The store's page cache (see [`Store::builder`]): enough for the pages a commit of a few hundred
/// changed tasks touches; at 10,000 tasks the redb default held ~20 MiB of pages read once at start.
const CACHE_BYTES: usize = 4 * 1024 * 1024;

mod records;
mod relay;
#[cfg(test)]
mod tests;

/// The layout this build reads and writes: 2 adds the marker and a checksum per record; 3 stops
/// storing what a task shows (it is computed from the record: an exporter of version 2 would
/// refuse such a task as damaged, so it is told the store is newer instead). A store with a higher
/// number was written by a newer exporter and is refused rather than misread; one of version 2 is
/// read as it is, one of version 1 is rewritten with checksums when opened.
pub const SCHEMA_VERSION: u64 = 3;
/// File name inside `state.path`.
pub const FILE_NAME: &str = "tiw-push-exporter.redb";
/// Poll results are written at least this often.
pub const FLUSH_PERIOD: Duration = Duration::from_secs(1);
/// The `meta` key that marks a store as this exporter's.
const MARKER: &str = "tiw-push-exporter";
/// Bytes of SHA-256 kept as a record's checksum.
const CHECKSUM_BYTES: usize = 8;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const TASKS: TableDefinition<&str, &[u8]> = TableDefinition::new("tasks");
const APPS: TableDefinition<u64, &[u8]> = TableDefinition::new("apps");
/// Version 1's tombstones (unix seconds, no checksum); read only to migrate.
const TOMBSTONES_V1: TableDefinition<&str, f64> = TableDefinition::new("tombstones");
const TOMBSTONES: TableDefinition<&str, &[u8]> = TableDefinition::new("tombstones2");

/// Why the store could not be used. Every message names the store's path.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot use state.path {path}: {cause}")]
    Open { path: PathBuf, cause: String },
    #[error("the store at {path} has schema version {found}, newer than this exporter's {SCHEMA_VERSION}: run a newer tiw-push-exporter, or move the store away to start empty")]
    NewerSchema { path: PathBuf, found: u64 },
    #[error("the store at {path} cannot be read: {cause}")]
    Read { path: PathBuf, cause: String },
    #[error("cannot use state.path {path}: the store is damaged: {cause}; move the file away to start with an empty store (README, \"Durability\")")]
    Damaged { path: PathBuf, cause: String },
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

/// The checksum of one record: SHA-256 over table, key and value, cut to [`CHECKSUM_BYTES`].
fn checksum(table: &str, key: &str, value: &[u8]) -> [u8; CHECKSUM_BYTES] {
    let mut h = Sha256::new();
    h.update(table.as_bytes());
    h.update([0]);
    h.update(key.as_bytes());
    h.update([0]);
    h.update(value);
    let digest = h.finalize();
    let mut out = [0; CHECKSUM_BYTES];
    out.copy_from_slice(&digest[..CHECKSUM_BYTES]);
    out
}

/// A value as stored: the JSON, then its checksum.
fn seal(table: &str, key: &str, value: &impl serde::Serialize) -> Result<Vec<u8>, serde_json::Error> {
    Ok(with_checksum(table, key, serde_json::to_vec(value)?))
}

/// `json` followed by its checksum.
fn with_checksum(table: &str, key: &str, mut json: Vec<u8>) -> Vec<u8> {
    let sum = checksum(table, key, &json);
    json.extend_from_slice(&sum);
    json
}

/// The JSON of a stored value whose checksum holds; `None` when it does not.
fn unseal<'a>(table: &str, key: &str, stored: &'a [u8]) -> Option<&'a [u8]> {
    let split = stored.len().checked_sub(CHECKSUM_BYTES)?;
    let (json, sum) = stored.split_at(split);
    (checksum(table, key, json) == sum).then_some(json)
}

thread_local! {
    /// Set while this thread runs [`catching`]: its panics are handled there, not printed.
    static CATCHING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f`, turning a panic into an error (redb panics on some damaged pages). The panic hook is
/// wrapped once per process, never swapped while other threads run: the wrapper stays silent for
/// a panic on a thread inside `catching` and passes every other panic to the hook it found.
fn catching<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    static WRAPPED: std::sync::Once = std::sync::Once::new();
    WRAPPED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !CATCHING.with(std::cell::Cell::get) {
                previous(info);
            }
        }));
    });
    let outer = CATCHING.with(|c| c.replace(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    CATCHING.with(|c| c.set(outer));
    result.map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "redb failed on a damaged page".into())
    })
}

impl Store {
    /// Opens (or creates) the store in directory `dir`. Refuses, with the path and the cause, a
    /// file that is empty, not this exporter's, of a newer schema, or damaged.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let open_err = |cause: String| StoreError::Open {
            path: dir.to_owned(),
            cause,
        };
        std::fs::create_dir_all(dir).map_err(|e| open_err(format!("cannot create the directory: {e}")))?;
        let path = dir.join(FILE_NAME);
        let existed = match std::fs::metadata(&path) {
            Ok(m) if m.len() == 0 => {
                return Err(StoreError::Open {
                    path,
                    cause: "the file is empty (0 bytes), so it is not a store this exporter wrote; move it away to start with an empty store".into(),
                })
            }
            Ok(_) => true,
            Err(_) => false,
        };
        let damaged = |cause: String| StoreError::Damaged {
            path: path.clone(),
            cause,
        };
        let db = catching(|| Store::builder().create(&path))
            .map_err(|p| damaged(format!("redb: {p}")))?
            .map_err(|e| StoreError::Open {
                path: path.clone(),
                cause: e.to_string(),
            })?;
        let store = Store {
            db: std::sync::Mutex::new(Some(db)),
            path: path.clone(),
            needs_reopen: Default::default(),
        };
        catching(|| store.init_schema(existed)).map_err(|p| damaged(format!("redb: {p}")))??;
        Ok(store)
    }

    /// How the database is opened: with [`CACHE_BYTES`] of page cache instead of redb's default
    /// (up to 1 GiB, grown as pages are read). The exporter reads the whole store once, at start,
    /// and after that only writes: a cache the size of the store would stay resident for nothing.
    fn builder() -> redb::Builder {
        let mut builder = redb::Builder::new();
        builder.set_cache_size(CACHE_BYTES);
        builder
    }

    /// Closes the database (redb writes on close, and can panic doing so on a damaged file).
    fn close(db: Database) {
        let _ = catching(move || drop(db));
    }

    /// Runs `f` on the database, reopening it first if a write failed since the last success.
    fn with_db<T>(&self, f: impl FnOnce(&Database) -> Result<T, StoreError>) -> Result<T, StoreError> {
        use std::sync::atomic::Ordering;
        let mut guard = self.db.lock().unwrap_or_else(|e| e.into_inner());
        if self.needs_reopen.load(Ordering::Acquire) {
            // redb holds a file lock: the old handle must be gone before the file is opened again.
            if let Some(old) = guard.take() {
                Store::close(old);
            }
            let db = Store::builder()
                .create(&self.path)
                .map_err(|e| self.write_err(format!("reopening: {e}")))?;
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

    fn damaged(&self, cause: impl std::fmt::Display) -> StoreError {
        StoreError::Damaged {
            path: self.path.clone(),
            cause: cause.to_string(),
        }
    }

    /// Marks a new store as this exporter's, checks an existing one is, and rewrites a version 1
    /// store with checksums.
    fn init_schema(&self, existed: bool) -> Result<(), StoreError> {
        self.with_db(|db| {
            let txn = db.begin_write().map_err(|e| self.write_err(e))?;
            {
                let mut meta = txn.open_table(META).map_err(|e| self.read_err(e))?;
                let version = meta
                    .get("schema_version")
                    .map_err(|e| self.read_err(e))?
                    .map(|v| v.value());
                let marked = meta.get(MARKER).map_err(|e| self.read_err(e))?.is_some();
                match version {
                    Some(v) if v > SCHEMA_VERSION => {
                        return Err(StoreError::NewerSchema {
                            path: self.path.clone(),
                            found: v,
                        })
                    }
                    Some(2 | SCHEMA_VERSION) if !marked => {
                        return Err(self.damaged("its meta table has no tiw-push-exporter marker"))
                    }
                    // Version 2's records carry the shown facts too; they are read as they are.
                    Some(2 | SCHEMA_VERSION) => {}
                    Some(1) => {
                        drop(meta);
                        self.migrate_v1(&txn)?;
                        meta = txn.open_table(META).map_err(|e| self.read_err(e))?;
                    }
                    Some(v) => return Err(self.damaged(format!("unknown schema version {v}"))),
                    None if existed => {
                        return Err(StoreError::Open {
                            path: self.path.clone(),
                            cause: "the file is a redb database, but not a tiw-push-exporter store (no schema marker); move it away or choose another state.path".into(),
                        })
                    }
                    None => {}
                }
                meta.insert("schema_version", SCHEMA_VERSION)
                    .map_err(|e| self.write_err(e))?;
                meta.insert(MARKER, 1).map_err(|e| self.write_err(e))?;
            }
            txn.open_table(TASKS).map_err(|e| self.write_err(e))?;
            txn.open_table(APPS).map_err(|e| self.write_err(e))?;
            txn.open_table(TOMBSTONES).map_err(|e| self.write_err(e))?;
            txn.open_table(relay::QUEUE).map_err(|e| self.write_err(e))?;
            txn.open_table(relay::DEAD).map_err(|e| self.write_err(e))?;
            txn.open_table(records::RECORDS).map_err(|e| self.write_err(e))?;
            txn.open_table(records::RECORD_APPS).map_err(|e| self.write_err(e))?;
            txn.commit().map_err(|e| self.write_err(e))
        })
    }

    /// Version 1 kept records without checksums: seal each as it is, in the opening transaction.
    fn migrate_v1(&self, txn: &redb::WriteTransaction) -> Result<(), StoreError> {
        let mut tasks = txn.open_table(TASKS).map_err(|e| self.read_err(e))?;
        for (key, json) in self.all_rows(&tasks, |k, v| (k.to_string(), v.to_vec()))? {
            let sealed = with_checksum("tasks", &key, json);
            tasks
                .insert(key.as_str(), sealed.as_slice())
                .map_err(|e| self.write_err(e))?;
        }
        let mut apps = txn.open_table(APPS).map_err(|e| self.read_err(e))?;
        for (id, json) in self.all_rows(&apps, |k, v| (k, v.to_vec()))? {
            let sealed = with_checksum("apps", &id.to_string(), json);
            apps.insert(id, sealed.as_slice()).map_err(|e| self.write_err(e))?;
        }
        let old = txn.open_table(TOMBSTONES_V1).map_err(|e| self.read_err(e))?;
        let rows = self.all_rows(&old, |k, v| (k.to_string(), v))?;
        drop(old);
        let mut tombstones = txn.open_table(TOMBSTONES).map_err(|e| self.read_err(e))?;
        for (key, at) in rows {
            let sealed = seal("tombstones", &key, &at).map_err(|e| self.write_err(e))?;
            tombstones
                .insert(key.as_str(), sealed.as_slice())
                .map_err(|e| self.write_err(e))?;
        }
        txn.delete_table(TOMBSTONES_V1).map_err(|e| self.write_err(e))?;
        Ok(())
    }

    /// Every row of `table`, each made owned by `own`.
    fn all_rows<K: redb::Key + 'static, V: redb::Value + 'static, T>(
        &self,
        table: &impl ReadableTable<K, V>,
        own: impl for<'a> Fn(K::SelfType<'a>, V::SelfType<'a>) -> T,
    ) -> Result<Vec<T>, StoreError> {
        table
            .iter()
            .map_err(|e| self.read_err(e))?
            .map(|row| row.map(|(k, v)| own(k.value(), v.value())))
            .collect::<Result<_, _>>()
            .map_err(|e| self.read_err(e))
    }

    /// Everything the store holds. A record that fails its checksum or does not decode refuses
    /// the store, naming the record; none is skipped.
    pub fn load(&self) -> Result<Restored, StoreError> {
        self.with_db(|db| catching(|| self.load_from(db)).map_err(|p| self.damaged(format!("redb: {p}")))?)
    }

    fn load_from(&self, db: &Database) -> Result<Restored, StoreError> {
        let txn = db.begin_read().map_err(|e| self.damaged(e))?;
        let json = |v: &[u8]| serde_json::from_slice(v).map_err(|e| e.to_string());
        let mut restored = Restored {
            tasks: (self.keyed_rows(&txn, TASKS, "tasks", |v| {
                Task::from_stored(v).map_err(|e| e.to_string())
            })?)
            .into_iter()
            .map(|(_, task)| task)
            .collect(),
            apps: self.app_rows(&txn, APPS, "apps")?,
            tombstones: Vec::new(),
        };
        for (key, at) in self.keyed_rows::<f64>(&txn, TOMBSTONES, "tombstones", json)? {
            let parsed = parse_key(&key).ok_or_else(|| self.damaged(format!("bad tombstone key {key:?}")))?;
            restored.tombstones.push((parsed, at));
        }
        Ok(restored)
    }

    /// Every value of a sealed table keyed by text (`{app}/{task}`), unsealed as `name` and decoded
    /// by `decode`, with its key. A record that fails its checksum or does not decode refuses the
    /// store, naming it.
    fn keyed_rows<T>(
        &self,
        txn: &redb::ReadTransaction,
        table: TableDefinition<&str, &[u8]>,
        name: &str,
        decode: impl Fn(&[u8]) -> Result<T, String>,
    ) -> Result<Vec<(String, T)>, StoreError> {
        let rows = txn.open_table(table).map_err(|e| self.damaged(e))?;
        let mut out = Vec::new();
        for row in rows.iter().map_err(|e| self.damaged(e))? {
            let (k, v) = row.map_err(|e| self.damaged(e))?;
            let key = k.value();
            let json = unseal(name, key, v.value())
                .ok_or_else(|| self.damaged(format!("record {name}/{key} fails its checksum")))?;
            let value = decode(json).map_err(|e| self.damaged(format!("record {name}/{key}: {e}")))?;
            out.push((key.to_string(), value));
        }
        Ok(out)
    }

    /// Every app's sealed aggregates in `table` (unsealed as `name`), as [`Store::keyed_rows`] reads.
    fn app_rows<T: serde::de::DeserializeOwned>(
        &self,
        txn: &redb::ReadTransaction,
        table: TableDefinition<u64, &[u8]>,
        name: &str,
    ) -> Result<Vec<(u64, T)>, StoreError> {
        let rows = txn.open_table(table).map_err(|e| self.damaged(e))?;
        let mut out = Vec::new();
        for row in rows.iter().map_err(|e| self.damaged(e))? {
            let (k, v) = row.map_err(|e| self.damaged(e))?;
            let id = k.value();
            let json = unseal(name, &id.to_string(), v.value())
                .ok_or_else(|| self.damaged(format!("record {name}/{id} fails its checksum")))?;
            let stats = serde_json::from_slice(json).map_err(|e| self.damaged(format!("record {name}/{id}: {e}")))?;
            out.push((id, stats));
        }
        Ok(out)
    }

    /// Writes `rows` into a table keyed `{app}/{task}`, each sealed as `name`, and deletes `removed`.
    fn put_keyed<'a, T: serde::Serialize + 'a>(
        &self,
        txn: &redb::WriteTransaction,
        (table, name): (TableDefinition<&str, &[u8]>, &str),
        rows: impl IntoIterator<Item = (u64, &'a str, &'a T)>,
        removed: &[Key],
    ) -> Result<(), StoreError> {
        let mut t = txn.open_table(table).map_err(|e| self.write_err(e))?;
        for (app, task, value) in rows {
            let key = task_key(app, task);
            let value = seal(name, &key, value).map_err(|e| self.write_err(e))?;
            t.insert(key.as_str(), value.as_slice())
                .map_err(|e| self.write_err(e))?;
        }
        for (app, task) in removed {
            t.remove(task_key(*app, task).as_str()).map_err(|e| self.write_err(e))?;
        }
        Ok(())
    }

    /// Writes each app's aggregates into `table`, sealed as `name`, and deletes the apps `removed`.
    fn put_apps<T: serde::Serialize>(
        &self,
        txn: &redb::WriteTransaction,
        (table, name): (TableDefinition<u64, &[u8]>, &str),
        rows: &[(u64, T)],
        removed: &[u64],
    ) -> Result<(), StoreError> {
        let mut t = txn.open_table(table).map_err(|e| self.write_err(e))?;
        for id in removed {
            t.remove(*id).map_err(|e| self.write_err(e))?;
        }
        for (id, stats) in rows {
            let value = seal(name, &id.to_string(), stats).map_err(|e| self.write_err(e))?;
            t.insert(*id, value.as_slice()).map_err(|e| self.write_err(e))?;
        }
        Ok(())
    }

    /// Writes one batch in one transaction; returns once it is durable.
    pub fn write(&self, batch: &Batch) -> Result<(), StoreError> {
        self.commit(batch, &[])
    }

    /// Writes one batch and the relay's changes in one transaction; returns once it is durable.
    pub fn commit(&self, batch: &Batch, relay: &[RelayOp]) -> Result<(), StoreError> {
        self.commit_all(batch, relay, &RecordBatch::default())
    }

    /// Writes the push tasks', the relay's and the recordings' changes in one transaction;
    /// returns once it is durable.
    pub fn commit_all(&self, batch: &Batch, relay: &[RelayOp], records: &RecordBatch) -> Result<(), StoreError> {
        self.with_db(|db| self.write_to(db, batch, relay, records))
    }

    fn write_to(
        &self,
        db: &Database,
        batch: &Batch,
        relay: &[RelayOp],
        records: &RecordBatch,
    ) -> Result<(), StoreError> {
        let txn = db.begin_write().map_err(|e| self.write_err(e))?;
        {
            let tasks = batch.tasks.iter().map(|t| (t.sdk_app_id, t.task_id.as_str(), t));
            self.put_keyed(&txn, (TASKS, "tasks"), tasks, &batch.removed)?;
            self.put_apps(&txn, (APPS, "apps"), &batch.apps, &batch.apps_removed)?;
            let mut tombstones = txn.open_table(TOMBSTONES).map_err(|e| self.write_err(e))?;
            for ((app, task), at) in &batch.tombstones_added {
                let key = task_key(*app, task);
                let value = seal("tombstones", &key, at).map_err(|e| self.write_err(e))?;
                tombstones
                    .insert(key.as_str(), value.as_slice())
                    .map_err(|e| self.write_err(e))?;
            }
            for (app, task) in &batch.tombstones_pruned {
                tombstones
                    .remove(task_key(*app, task).as_str())
                    .map_err(|e| self.write_err(e))?;
            }
        }
        self.write_relay(&txn, relay)?;
        self.write_records(&txn, records)?;
        txn.commit().map_err(|e| self.write_err(e))
    }

    /// Forgets one app's tasks, tombstones and counters for good (`state forget --app`, on a
    /// stopped exporter). Returns how many tasks and tombstones went.
    pub fn forget_app(&self, sdk_app_id: u64) -> Result<(usize, usize), StoreError> {
        self.with_db(|db| {
            let txn = db.begin_write().map_err(|e| self.write_err(e))?;
            let prefix = format!("{sdk_app_id}/");
            let mut counts = (0, 0);
            {
                let mut tasks = txn.open_table(TASKS).map_err(|e| self.write_err(e))?;
                let gone = tasks
                    .extract_if(|k, _| k.starts_with(&prefix))
                    .map_err(|e| self.write_err(e))?
                    .count();
                counts.0 = gone;
                let mut tombstones = txn.open_table(TOMBSTONES).map_err(|e| self.write_err(e))?;
                counts.1 = tombstones
                    .extract_if(|k, _| k.starts_with(&prefix))
                    .map_err(|e| self.write_err(e))?
                    .count();
                let mut apps = txn.open_table(APPS).map_err(|e| self.write_err(e))?;
                apps.remove(sdk_app_id).map_err(|e| self.write_err(e))?;
                let mut recordings = txn.open_table(records::RECORDS).map_err(|e| self.write_err(e))?;
                counts.0 += recordings
                    .extract_if(|k, _| k.starts_with(&prefix))
                    .map_err(|e| self.write_err(e))?
                    .count();
                let mut record_apps = txn.open_table(records::RECORD_APPS).map_err(|e| self.write_err(e))?;
                record_apps.remove(sdk_app_id).map_err(|e| self.write_err(e))?;
            }
            txn.commit().map_err(|e| self.write_err(e))?;
            Ok(counts)
        })
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

impl Drop for Store {
    /// Closing is caught like opening: a store refused as damaged must not panic on its way out.
    fn drop(&mut self) {
        let db = self
            .db
            .get_mut()
            .map(Option::take)
            .unwrap_or_else(|e| e.into_inner().take());
        if let Some(db) = db {
            Store::close(db);
        }
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

/// Starts the writer on `inbox`; it writes a last batch and stops when `token` is cancelled.
pub fn spawn_writer(
    store: Arc<Store>,
    (registry, relay, records): (Arc<TaskRegistry>, Arc<Relay>, Arc<RecordRegistry>),
    metrics: StoreInstruments,
    inbox: WriterInbox,
    tracker: &tokio_util::task::TaskTracker,
    token: CancellationToken,
) {
    let WriterInbox(mut rx) = inbox;
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
            let ok = write_once(&store, (&registry, &relay, &records), &metrics, &mut failing).await;
            for w in waiters {
                let _ = w.send(ok);
            }
            if stopping {
                rx.close();
                while let Ok(w) = rx.try_recv() {
                    let _ = w.send(write_once(&store, (&registry, &relay, &records), &metrics, &mut failing).await);
                }
                return;
            }
        }
    });
}

/// Where flush requests wait for the writer ([`spawn_writer`]).
pub struct WriterInbox(mpsc::UnboundedReceiver<oneshot::Sender<bool>>);

/// A handle to ask for durability, and the inbox the writer will serve it from: made before the
/// writer runs, so whoever needs the handle gets it when built.
pub fn writer_channel() -> (StoreHandle, WriterInbox) {
    let (tx, rx) = mpsc::unbounded_channel();
    (StoreHandle { requests: tx }, WriterInbox(rx))
}

async fn write_once(
    store: &Arc<Store>,
    (registry, relay, records): (&Arc<TaskRegistry>, &Arc<Relay>, &Arc<RecordRegistry>),
    metrics: &StoreInstruments,
    failing: &mut bool,
) -> bool {
    let batch = registry.take_batch();
    let ops = relay.take_ops();
    let recorded = records.take_batch();
    if batch.is_empty() && ops.is_empty() && recorded.is_empty() {
        // Nothing pending means everything taken so far was written.
        return true;
    }
    let started = Instant::now();
    let (s, b) = (store.clone(), batch);
    let (result, (batch, ops, recorded)) = match tokio::task::spawn_blocking(move || {
        let r = s.commit_all(&b, &ops, &recorded);
        (r, (b, ops, recorded))
    })
    .await
    {
        Ok(pair) => pair,
        Err(e) => {
            tracing::error!(error = %e, "store writer task failed");
            return false;
        }
    };
    metrics.wrote(started.elapsed(), result.is_ok());
    match result {
        Ok(()) => {
            if std::mem::take(failing) {
                tracing::info!(path = %store.path().display(), "store writes again");
            }
            true
        }
        Err(e) => {
            registry.return_batch(batch);
            relay.return_ops(ops);
            records.return_batch(recorded);
            if !std::mem::replace(failing, true) {
                tracing::error!(error = %e, "store write failed; callbacks are answered 503 until it writes again");
            }
            false
        }
    }
}
