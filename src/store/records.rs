//! The recording tasks' tables: `records` keyed `{sdk_app_id}/{task_id}` as push tasks are, and
//! `record_apps` keyed by app, each record sealed like every other. A store without them (written
//! before recordings were tracked) opens with them empty; an exporter from before ignores them.

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use super::{parse_key, seal, task_key, unseal, Store, StoreError};
use crate::recordings::{RecordAppStats, RecordBatch, RecordRestored, RecordTask};

pub(super) const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("records");
pub(super) const RECORD_APPS: TableDefinition<u64, &[u8]> = TableDefinition::new("record_apps");

impl Store {
    /// Every recording and every app's recording counters the store holds. A record that fails its
    /// checksum or does not decode refuses the store, naming the record.
    pub fn load_records(&self) -> Result<RecordRestored, StoreError> {
        self.with_db(|db| {
            super::catching(|| {
                let txn = db.begin_read().map_err(|e| self.damaged(e))?;
                let mut restored = RecordRestored::default();
                let tasks = txn.open_table(RECORDS).map_err(|e| self.damaged(e))?;
                for row in tasks.iter().map_err(|e| self.damaged(e))? {
                    let (k, v) = row.map_err(|e| self.damaged(e))?;
                    let key = k.value();
                    let json = unseal("records", key, v.value())
                        .ok_or_else(|| self.damaged(format!("record records/{key} fails its checksum")))?;
                    let task: RecordTask =
                        serde_json::from_slice(json).map_err(|e| self.damaged(format!("record records/{key}: {e}")))?;
                    if parse_key(key) != Some((task.sdk_app_id, task.task_id.clone())) {
                        return Err(self.damaged(format!("record records/{key} names another recording")));
                    }
                    restored.tasks.push(task);
                }
                let apps = txn.open_table(RECORD_APPS).map_err(|e| self.damaged(e))?;
                for row in apps.iter().map_err(|e| self.damaged(e))? {
                    let (k, v) = row.map_err(|e| self.damaged(e))?;
                    let id = k.value();
                    let json = unseal("record_apps", &id.to_string(), v.value())
                        .ok_or_else(|| self.damaged(format!("record record_apps/{id} fails its checksum")))?;
                    let stats: RecordAppStats = serde_json::from_slice(json)
                        .map_err(|e| self.damaged(format!("record record_apps/{id}: {e}")))?;
                    restored.apps.push((id, stats));
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
        let mut tasks = txn.open_table(RECORDS).map_err(|e| self.write_err(e))?;
        for t in &batch.tasks {
            let key = task_key(t.sdk_app_id, &t.task_id);
            let value = seal("records", &key, t).map_err(|e| self.write_err(e))?;
            tasks
                .insert(key.as_str(), value.as_slice())
                .map_err(|e| self.write_err(e))?;
        }
        for (app, task) in &batch.removed {
            tasks
                .remove(task_key(*app, task).as_str())
                .map_err(|e| self.write_err(e))?;
        }
        let mut apps = txn.open_table(RECORD_APPS).map_err(|e| self.write_err(e))?;
        for (id, stats) in &batch.apps {
            let value = seal("record_apps", &id.to_string(), stats).map_err(|e| self.write_err(e))?;
            apps.insert(*id, value.as_slice()).map_err(|e| self.write_err(e))?;
        }
        Ok(())
    }
}
