//! The persistence journal: what changed since the store last wrote, taken as one consistent cut
//! under the registry lock ([`TaskRegistry::take_batch`]) and handed back when a write fails.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::{AppStats, Key, Task, TaskRegistry};

/// Changes not yet written to the store, taken as one consistent cut under the registry lock.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    /// Tasks to write (their state at the cut).
    pub tasks: Vec<Task>,
    /// Tasks removed by retention or dropped.
    pub removed: Vec<Key>,
    /// Tombstones to add (unix seconds of expiry) and to forget.
    pub tombstones_added: Vec<(Key, f64)>,
    pub tombstones_pruned: Vec<Key>,
    /// Every app's aggregates at the cut.
    pub apps: Vec<(u64, AppStats)>,
    /// Apps taken out of the configuration: their aggregates go too.
    pub apps_removed: Vec<u64>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
            && self.removed.is_empty()
            && self.tombstones_added.is_empty()
            && self.tombstones_pruned.is_empty()
            && self.apps.is_empty()
            && self.apps_removed.is_empty()
    }
}

/// What the store holds, handed back at start.
#[derive(Debug, Clone, Default)]
pub struct Restored {
    pub tasks: Vec<Task>,
    pub apps: Vec<(u64, AppStats)>,
    pub tombstones: Vec<(Key, f64)>,
}

/// The registry's changes since the store last took a batch: which tasks to write, which to
/// delete, the tombstones to add and forget, and whether the aggregates changed. The registry
/// records each change here as it makes it; the store's writer takes them all at once.
#[derive(Debug, Default)]
pub(super) struct Journal {
    dirty: HashSet<Key>,
    apps_dirty: bool,
    removed: HashSet<Key>,
    apps_removed: Vec<u64>,
    tombstones_added: Vec<(Key, f64)>,
    tombstones_pruned: Vec<Key>,
}

impl Journal {
    /// The task changed (and with it, maybe, its app's aggregates).
    pub(super) fn task(&mut self, key: &Key) {
        self.dirty.insert(key.clone());
        self.apps_dirty = true;
    }

    /// The task changed; the aggregates did not.
    pub(super) fn task_only(&mut self, key: &Key) {
        self.dirty.insert(key.clone());
    }

    /// Some app's aggregates changed.
    pub(super) fn apps(&mut self) {
        self.apps_dirty = true;
    }

    /// The task was removed, and is remembered as a tombstone from `tombstone` if given.
    pub(super) fn removed(&mut self, key: &Key, tombstone: Option<f64>) {
        self.dirty.remove(key);
        self.removed.insert(key.clone());
        if let Some(at) = tombstone {
            self.tombstones_added.push((key.clone(), at));
        }
    }

    /// A tombstone was forgotten.
    pub(super) fn pruned(&mut self, key: Key) {
        self.tombstones_pruned.push(key);
    }

    /// Takes every change, with the changed tasks' and the aggregates' state now.
    fn take(&mut self, tasks: &HashMap<Key, Box<Task>>, apps: &BTreeMap<u64, AppStats>) -> Batch {
        let dirty = std::mem::take(&mut self.dirty);
        Batch {
            tasks: dirty
                .iter()
                .filter_map(|k| tasks.get(k).map(|t| (**t).clone()))
                .collect(),
            removed: std::mem::take(&mut self.removed).into_iter().collect(),
            tombstones_added: std::mem::take(&mut self.tombstones_added),
            tombstones_pruned: std::mem::take(&mut self.tombstones_pruned),
            apps: if std::mem::take(&mut self.apps_dirty) {
                apps.iter().map(|(k, v)| (*k, v.clone())).collect()
            } else {
                Vec::new()
            },
            apps_removed: std::mem::take(&mut self.apps_removed),
        }
    }

    /// Takes back a batch that was not written, under what changed since: a task still tracked
    /// is written again at its state then, one removed is deleted, and newer tombstone entries win.
    fn give_back(&mut self, batch: Batch, tasks: &HashMap<Key, Box<Task>>, apps: &BTreeMap<u64, AppStats>) {
        for t in batch.tasks {
            let key = (t.sdk_app_id, t.task_id);
            if tasks.contains_key(&key) {
                self.dirty.insert(key);
            }
        }
        self.apps_dirty |= !batch.apps.is_empty();
        for id in batch.apps_removed {
            if !apps.contains_key(&id) && !self.apps_removed.contains(&id) {
                self.apps_removed.push(id);
            }
        }
        for key in batch.removed {
            if !tasks.contains_key(&key) {
                self.removed.insert(key);
            }
        }
        let mut added = batch.tombstones_added;
        added.append(&mut self.tombstones_added);
        self.tombstones_added = added;
        let mut pruned = batch.tombstones_pruned;
        pruned.append(&mut self.tombstones_pruned);
        self.tombstones_pruned = pruned;
    }
}

impl TaskRegistry {
    /// Takes every change since the last batch, for the store.
    pub fn take_batch(&self) -> Batch {
        let mut inner = self.lock();
        let super::Inner {
            journal, tasks, apps, ..
        } = &mut *inner;
        journal.take(tasks, apps)
    }

    /// A batch the store could not write: mark its changes dirty again, so the next write has them.
    pub fn return_batch(&self, batch: Batch) {
        let mut inner = self.lock();
        let super::Inner {
            journal, tasks, apps, ..
        } = &mut *inner;
        journal.give_back(batch, tasks, apps);
    }
}
