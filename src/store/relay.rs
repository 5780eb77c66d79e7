//! The relay's tables: requests queued for a backend and dead letters, each keyed
//! `{sdk_app_id}/{seq:020}` (so an app's rows are in arrival order) and sealed like every record.
//! Bodies and header values are kept as base64 inside the JSON: bytes as TIW sent them.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::{seal, unseal, Store, StoreError};
use crate::relay::{DeadLetter, Forwarded, RelayOp, RelayRestored};

pub(super) const QUEUE: TableDefinition<&str, &[u8]> = TableDefinition::new("relay_queue");
pub(super) const DEAD: TableDefinition<&str, &[u8]> = TableDefinition::new("relay_dead");

fn key(app: u64, seq: u64) -> String {
    format!("{app}/{seq:020}")
}

#[derive(Serialize, Deserialize)]
struct StoredRequest {
    received_at: f64,
    /// Name and base64 value.
    headers: Vec<(String, String)>,
    body: String,
}

#[derive(Serialize, Deserialize)]
struct StoredDead {
    request: StoredRequest,
    at: f64,
    status: u16,
}

impl From<&Forwarded> for StoredRequest {
    fn from(f: &Forwarded) -> Self {
        StoredRequest {
            received_at: f.received_at,
            headers: f.headers.iter().map(|(k, v)| (k.clone(), STANDARD.encode(v))).collect(),
            body: STANDARD.encode(&f.body),
        }
    }
}

impl StoredRequest {
    fn into_forwarded(self, sdk_app_id: u64, seq: u64) -> Result<Forwarded, base64::DecodeError> {
        let headers = self
            .headers
            .into_iter()
            .map(|(k, v)| Ok((k, STANDARD.decode(v)?)))
            .collect::<Result<_, base64::DecodeError>>()?;
        Ok(Forwarded {
            sdk_app_id,
            seq,
            received_at: self.received_at,
            headers,
            body: STANDARD.decode(self.body)?,
        })
    }
}

fn parse_key(k: &str) -> Option<(u64, u64)> {
    let (app, seq) = k.split_once('/')?;
    Some((app.parse().ok()?, seq.parse().ok()?))
}

impl Store {
    /// Every queued request and dead letter the store holds. A record that fails its checksum or
    /// does not decode refuses the store, naming the record.
    pub fn load_relay(&self) -> Result<RelayRestored, StoreError> {
        self.with_db(|db| {
            super::catching(|| {
                let txn = db.begin_read().map_err(|e| self.damaged(e))?;
                self.relay_rows(&txn)
            })
            .map_err(|p| self.damaged(format!("redb: {p}")))?
        })
    }

    fn relay_rows(&self, txn: &redb::ReadTransaction) -> Result<RelayRestored, StoreError> {
        let mut restored = RelayRestored::default();
        for (table, name) in [(QUEUE, "relay_queue"), (DEAD, "relay_dead")] {
            let rows = txn.open_table(table).map_err(|e| self.damaged(e))?;
            for row in rows.iter().map_err(|e| self.damaged(e))? {
                let (k, v) = row.map_err(|e| self.damaged(e))?;
                let k = k.value();
                let bad = |why: String| self.damaged(format!("record {name}/{k}: {why}"));
                let json = unseal(name, k, v.value()).ok_or_else(|| bad("fails its checksum".into()))?;
                let (app, seq) = parse_key(k).ok_or_else(|| bad("bad key".into()))?;
                if name == "relay_queue" {
                    let r: StoredRequest = serde_json::from_slice(json).map_err(|e| bad(e.to_string()))?;
                    restored
                        .queued
                        .push(r.into_forwarded(app, seq).map_err(|e| bad(e.to_string()))?);
                } else {
                    let d: StoredDead = serde_json::from_slice(json).map_err(|e| bad(e.to_string()))?;
                    restored.dead.push(DeadLetter {
                        request: d.request.into_forwarded(app, seq).map_err(|e| bad(e.to_string()))?,
                        at: d.at,
                        status: d.status,
                    });
                }
            }
        }
        Ok(restored)
    }

    /// Applies the relay's changes, in order, inside the writer's transaction.
    pub(super) fn write_relay(&self, txn: &redb::WriteTransaction, ops: &[RelayOp]) -> Result<(), StoreError> {
        if ops.is_empty() {
            return Ok(());
        }
        let mut queue = txn.open_table(QUEUE).map_err(|e| self.write_err(e))?;
        let mut dead = txn.open_table(DEAD).map_err(|e| self.write_err(e))?;
        for op in ops {
            match op {
                RelayOp::Queued(f) => {
                    let k = key(f.sdk_app_id, f.seq);
                    let value =
                        seal("relay_queue", &k, &StoredRequest::from(f.as_ref())).map_err(|e| self.write_err(e))?;
                    queue
                        .insert(k.as_str(), value.as_slice())
                        .map_err(|e| self.write_err(e))?;
                }
                RelayOp::Delivered { sdk_app_id, seq } => {
                    queue
                        .remove(key(*sdk_app_id, *seq).as_str())
                        .map_err(|e| self.write_err(e))?;
                }
                RelayOp::DeadLettered(d) => {
                    let k = key(d.request.sdk_app_id, d.request.seq);
                    queue.remove(k.as_str()).map_err(|e| self.write_err(e))?;
                    let stored = StoredDead {
                        request: StoredRequest::from(&d.request),
                        at: d.at,
                        status: d.status,
                    };
                    let value = seal("relay_dead", &k, &stored).map_err(|e| self.write_err(e))?;
                    dead.insert(k.as_str(), value.as_slice())
                        .map_err(|e| self.write_err(e))?;
                }
                RelayOp::DeadPruned { sdk_app_id, seq } => {
                    dead.remove(key(*sdk_app_id, *seq).as_str())
                        .map_err(|e| self.write_err(e))?;
                }
            }
        }
        Ok(())
    }
}
