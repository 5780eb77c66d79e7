//! The relay's tables: requests queued for a backend and dead letters, each keyed
//! `{sdk_app_id}/{seq:020}` (so an app's rows are in arrival order) and sealed like every record.
//! Requests are kept as bytes, as TIW sent them ([`encode`]).

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use super::{unseal, with_checksum, Store, StoreError};
use crate::relay::{DeadLetter, Forwarded, RelayOp, RelayRestored};

pub(super) const QUEUE: TableDefinition<&str, &[u8]> = TableDefinition::new("relay_queue");
pub(super) const DEAD: TableDefinition<&str, &[u8]> = TableDefinition::new("relay_dead");

fn key(app: u64, seq: u64) -> String {
    format!("{app}/{seq:020}")
}

/// A request as stored, in a layout of its own rather than JSON (bodies are bytes, and every event
/// TIW sends in relay mode is written once more before its 200): `received_at` (f64, little
/// endian), the header count (u16), each header as its name's length (u16), name, its value's
/// length (u32), value; then the body, to the end. The record's checksum follows, as for every record.
fn encode(f: &Forwarded, out: &mut Vec<u8>) {
    out.extend_from_slice(&f.received_at.to_le_bytes());
    let headers = f.headers.len().min(u16::MAX as usize);
    out.extend_from_slice(&(headers as u16).to_le_bytes());
    for (name, value) in &f.headers[..headers] {
        // Header names are short tokens and values at most the body limit; longer is cut, never
        // misread (hyper refuses such heads long before).
        let name = &name.as_bytes()[..name.len().min(u16::MAX as usize)];
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(name);
        let value = &value[..value.len().min(u32::MAX as usize)];
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        out.extend_from_slice(value);
    }
    out.extend_from_slice(&f.body);
}

/// Reads what [`encode`] wrote; `None` when it does not parse.
fn decode(bytes: &[u8], sdk_app_id: u64, seq: u64) -> Option<Forwarded> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = b.split_at_checked(n)?;
        *b = rest;
        Some(head)
    }
    let mut b = bytes;
    let received_at = f64::from_le_bytes(take(&mut b, 8)?.try_into().ok()?);
    let count = u16::from_le_bytes(take(&mut b, 2)?.try_into().ok()?);
    let mut headers = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let n = u16::from_le_bytes(take(&mut b, 2)?.try_into().ok()?) as usize;
        let name = String::from_utf8(take(&mut b, n)?.to_vec()).ok()?;
        let n = u32::from_le_bytes(take(&mut b, 4)?.try_into().ok()?) as usize;
        headers.push((name, take(&mut b, n)?.to_vec()));
    }
    Some(Forwarded {
        sdk_app_id,
        seq,
        received_at,
        headers,
        body: b.to_vec(),
    })
}

/// A dead letter as stored: when it was refused (f64), the backend's status (u16), the request.
fn encode_dead(d: &DeadLetter) -> Vec<u8> {
    let mut out = Vec::with_capacity(d.request.body.len() + 128);
    out.extend_from_slice(&d.at.to_le_bytes());
    out.extend_from_slice(&d.status.to_le_bytes());
    encode(&d.request, &mut out);
    out
}

fn decode_dead(bytes: &[u8], sdk_app_id: u64, seq: u64) -> Option<DeadLetter> {
    let at = f64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let status = u16::from_le_bytes(bytes.get(8..10)?.try_into().ok()?);
    Some(DeadLetter {
        request: decode(bytes.get(10..)?, sdk_app_id, seq)?,
        at,
        status,
    })
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
                let value = unseal(name, k, v.value()).ok_or_else(|| bad("fails its checksum".into()))?;
                let (app, seq) = parse_key(k).ok_or_else(|| bad("bad key".into()))?;
                if name == "relay_queue" {
                    restored
                        .queued
                        .push(decode(value, app, seq).ok_or_else(|| bad("does not parse".into()))?);
                } else {
                    restored
                        .dead
                        .push(decode_dead(value, app, seq).ok_or_else(|| bad("does not parse".into()))?);
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
                    let mut value = Vec::with_capacity(f.body.len() + 128);
                    encode(f, &mut value);
                    let value = with_checksum("relay_queue", &k, value);
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
                    let value = with_checksum("relay_dead", &k, encode_dead(d));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_byte_for_byte_and_a_cut_one_is_refused() {
        let f = Forwarded {
            sdk_app_id: 7,
            seq: 3,
            received_at: 1_764_800_000.25,
            headers: vec![
                ("content-type".into(), b"application/json".to_vec()),
                ("x-odd".into(), vec![0xff, 0x00, b'a']),
            ],
            body: b"{\"SdkAppId\":7}\n\x00\xff".to_vec(),
        };
        let mut bytes = Vec::new();
        encode(&f, &mut bytes);
        assert_eq!(decode(&bytes, 7, 3), Some(f.clone()));
        let empty = Forwarded {
            headers: vec![],
            body: vec![],
            ..f.clone()
        };
        let mut e = Vec::new();
        encode(&empty, &mut e);
        assert_eq!(decode(&e, 7, 3), Some(empty));
        for cut in [0, 5, 9, 12, 20] {
            assert_eq!(decode(&bytes[..cut], 7, 3), None, "cut at {cut}");
        }
        let d = DeadLetter {
            request: f,
            at: 1.5,
            status: 404,
        };
        assert_eq!(decode_dead(&encode_dead(&d), 7, 3), Some(d));
    }
}
