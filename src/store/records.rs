//! The recording tasks' tables: `records` keyed `{sdk_app_id}/{task_id}` as push tasks are, and
//! `record_apps` keyed by app, each record sealed like every other. A store without them (written
//! before recordings were tracked) opens with them empty; an exporter from before ignores them.

use redb::{ReadableDatabase, TableDefinition};

use super::{parse_key, Store, StoreError};
use crate::recordings::{RecordBatch, RecordRestored, RecordTask};

pub(super) const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("records");
pub(super) const RECORD_APPS: TableDefinition<u64, &[u8]> = TableDefinition::new("record_apps");

impl Store {
    /// Every recording and every app's recording counters the store holds. A record that fails its
    /// checksum or does not decode refuses the store, naming the record.
    pub fn load_records(&self) -> Result<RecordRestored, StoreError> {
        self.with_db(|db| {
            super::catching(|| {
                let txn = db.begin_read().map_err(|e| self.damaged(e))?;
                let json = |v: &[u8]| serde_json::from_slice::<RecordTask>(v).map_err(|e| e.to_string());
                let mut restored = RecordRestored {
                    tasks: Vec::new(),
                    apps: self.app_rows(&txn, RECORD_APPS, "record_apps")?,
                };
                for (key, task) in self.keyed_rows(&txn, RECORDS, "records", json)? {
                    if parse_key(&key) != Some((task.sdk_app_id, task.task_id.clone())) {
                        return Err(self.damaged(format!("record records/{key} names another recording")));
                    }
                    restored.tasks.push(task);
                }
                Ok(restored)
            })
            .map_err(|p| self.damaged(format!("redb: {p}")))?
        })
    }

    /// Writes the recordings' changes inside the writer's transaction.
    pub(super) fn write_records(&self, txn: &redb::WriteTransaction, batch: &RecordBatch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let tasks = batch.tasks.iter().map(|t| (t.sdk_app_id, t.task_id.as_str(), t));
        self.put_keyed(txn, (RECORDS, "records"), tasks, &batch.removed)?;
        self.put_apps(txn, (RECORD_APPS, "record_apps"), &batch.apps, &[])
    }
}
