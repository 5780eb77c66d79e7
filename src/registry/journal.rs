//! The persistence journal: what changed since the store last wrote, taken as one consistent cut
//! under the registry lock ([`TaskRegistry::take_batch`]) and handed back when a write fails.

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

impl TaskRegistry {
    /// Takes every change since the last batch, for the store.
    pub fn take_batch(&self) -> Batch {
        let mut inner = self.lock();
        let dirty = std::mem::take(&mut inner.dirty);
        let tasks = dirty
            .iter()
            .filter_map(|k| inner.tasks.get(k).map(|t| (**t).clone()))
            .collect();
        let apps = if std::mem::take(&mut inner.apps_dirty) {
            inner.apps.iter().map(|(k, v)| (*k, v.clone())).collect()
        } else {
            Vec::new()
        };
        Batch {
            tasks,
            removed: std::mem::take(&mut inner.removed).into_iter().collect(),
            tombstones_added: std::mem::take(&mut inner.tombstones_added),
            tombstones_pruned: std::mem::take(&mut inner.tombstones_pruned),
            apps,
            apps_removed: std::mem::take(&mut inner.apps_removed),
        }
    }

    /// A batch the store could not write: mark its changes dirty again, so the next write has them.
    pub fn return_batch(&self, batch: Batch) {
        let mut inner = self.lock();
        for t in batch.tasks {
            let key = (t.sdk_app_id, t.task_id);
            if inner.tasks.contains_key(&key) {
                inner.dirty.insert(key);
            }
        }
        inner.apps_dirty |= !batch.apps.is_empty();
        for id in batch.apps_removed {
            if !inner.apps.contains_key(&id) && !inner.apps_removed.contains(&id) {
                inner.apps_removed.push(id);
            }
        }
        for key in batch.removed {
            if !inner.tasks.contains_key(&key) {
                inner.removed.insert(key);
            }
        }
        // Newer entries win: what was taken is older than what is there now.
        let mut added = batch.tombstones_added;
        added.append(&mut inner.tombstones_added);
        inner.tombstones_added = added;
        let mut pruned = batch.tombstones_pruned;
        pruned.append(&mut inner.tombstones_pruned);
        inner.tombstones_pruned = pruned;
    }
}
