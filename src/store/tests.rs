//! Unit tests of the store: round trips, refusals, checksums, the version 1 layout, forgetting.
use super::*;
use crate::registry::{Facts, FinishReason, Source, TaskStatus};

#[test]
fn round_trips_tasks_counters_and_tombstones() {
    let dir = tempfile::tempdir().unwrap();
    let registry = TaskRegistry::new();
    registry.ensure_apps([1]);
    registry.track(1, "a", Some(5), Source::Discovery);
    registry.track(1, "gone", None, Source::Discovery);
    let stop = Facts {
        status: TaskStatus::Stopped,
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

fn stored_registry(dir: &Path) {
    let registry = TaskRegistry::new();
    registry.ensure_apps([1, 2]);
    for (app, id) in [(1, "keep"), (2, "forget"), (2, "forget2")] {
        registry.track(app, id, Some(5), Source::Discovery);
        registry.observe_poll(
            app,
            id,
            &Facts {
                status: TaskStatus::Pushing,
                push_start_time: Some(10),
                exception_cnt: Some(4),
                ..Default::default()
            },
        );
    }
    Store::open(dir).unwrap().write(&registry.take_batch()).unwrap();
}

#[test]
fn an_empty_or_foreign_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(FILE_NAME), b"").unwrap();
    let err = Store::open(dir.path()).err().unwrap().to_string();
    assert!(err.contains("empty (0 bytes)") && err.contains(FILE_NAME), "{err}");
    // A redb database that some other program wrote.
    std::fs::remove_file(dir.path().join(FILE_NAME)).unwrap();
    {
        let db = Database::create(dir.path().join(FILE_NAME)).unwrap();
        let txn = db.begin_write().unwrap();
        let t: TableDefinition<&str, u64> = TableDefinition::new("other");
        txn.open_table(t).unwrap().insert("x", 1).unwrap();
        txn.commit().unwrap();
    }
    let err = Store::open(dir.path()).err().unwrap().to_string();
    assert!(
        err.contains("not a tiw-push-exporter store") && err.contains(FILE_NAME),
        "{err}"
    );
}

/// A record changed behind the exporter's back refuses the store and names the record.
#[test]
fn a_record_that_fails_its_checksum_is_named() {
    let dir = tempfile::tempdir().unwrap();
    stored_registry(dir.path());
    let store = Store::open(dir.path()).unwrap();
    store
        .with_db(|db| {
            let txn = db.begin_write().unwrap();
            {
                let mut apps = txn.open_table(APPS).unwrap();
                let mut value = apps.get(1).unwrap().unwrap().value().to_vec();
                let text = String::from_utf8_lossy(&value).to_string();
                let at = text.find("\"started_total\":1").unwrap() + "\"started_total\":".len();
                value[at] = b'0';
                apps.insert(1, value.as_slice()).unwrap();
            }
            txn.commit().unwrap();
            Ok(())
        })
        .unwrap();
    let err = store.load().err().unwrap().to_string();
    assert!(
        err.contains("record apps/1 fails its checksum") && err.contains(FILE_NAME),
        "{err}"
    );
}

/// A store written before checksums is rewritten with them when opened, and loads as it was.
#[test]
fn a_version_1_store_is_sealed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = Database::create(dir.path().join(FILE_NAME)).unwrap();
        let txn = db.begin_write().unwrap();
        {
            txn.open_table(META).unwrap().insert("schema_version", 1).unwrap();
            let task = r#"{"sdk_app_id":1,"task_id":"old","room_id":3,"group_id":"","push_user_id":"","status":"Stopped","finish_reason":"Auto","push_start_time":10,"push_stop_time":70,"exception_cnt":2,"im_sync_time":null,"last_update":1.0,"ended_at":1.0,"source":"Discovery","seen_started_event":false,"seen_stopped_event":false,"started_counted":true,"finished_counted":true,"final_read":true}"#;
            txn.open_table(TASKS).unwrap().insert("1/old", task.as_bytes()).unwrap();
            let stats = r#"{"started_total":1,"finished_total":[1,0,0,0],"exceptions_total":2,"durations":[{"counts":[0,0,1,0,0,0,0,0,0,0,0,0,0,0],"count":1,"sum":60.0},{"counts":[0,0,0,0,0,0,0,0,0,0,0,0,0,0],"count":0,"sum":0.0},{"counts":[0,0,0,0,0,0,0,0,0,0,0,0,0,0],"count":0,"sum":0.0},{"counts":[0,0,0,0,0,0,0,0,0,0,0,0,0,0],"count":0,"sum":0.0}]}"#;
            txn.open_table(APPS).unwrap().insert(1, stats.as_bytes()).unwrap();
            txn.open_table(TOMBSTONES_V1).unwrap().insert("1/gone", 5.0).unwrap();
        }
        txn.commit().unwrap();
    }
    let restored = Store::open(dir.path()).unwrap().load().unwrap();
    assert_eq!(restored.tasks.len(), 1);
    assert_eq!(restored.apps[0].1.finished(FinishReason::Auto), 1);
    assert_eq!(restored.tombstones, vec![((1, "gone".to_string()), 5.0)]);
    // And again, now as version 2.
    let restored = Store::open(dir.path()).unwrap().load().unwrap();
    assert_eq!(restored.tasks[0].task_id, "old");
    let fresh = TaskRegistry::new();
    fresh.restore(restored);
    let t = fresh.get(1, "old").unwrap();
    assert_eq!(
        (t.shown().status(), t.shown().finish_reason(), t.is_pollable()),
        (TaskStatus::Stopped, Some(FinishReason::Auto), false)
    );
}

/// A version 2 store (its tasks also stored what they showed) is read as it is and marked 3: what
/// a task shows comes from its confirmed facts and its claim, not from the stored copy.
#[test]
fn a_version_2_store_reads_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = Database::create(dir.path().join(FILE_NAME)).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut meta = txn.open_table(META).unwrap();
            meta.insert("schema_version", 2).unwrap();
            meta.insert(MARKER, 1).unwrap();
            // Written by the exporter at fec8b1a: a stale shown status (PREPARED) beside what the
            // API confirmed (PUSHING) and a claimed stop that the API does not know yet.
            let task = r#"{"sdk_app_id":1,"task_id":"v2","room_id":3,"group_id":"g","push_user_id":"u","status":"Prepared","finish_reason":null,"push_start_time":10,"push_stop_time":null,"exception_cnt":0,"im_sync_time":null,"failure":null,"history":false,"listed_running":true,"last_update":1.0,"ended_at":null,"source":"Discovery","confirmed":{"status":"Pushing","finish_reason":null,"room_id":3,"group_id":"g","push_user_id":"u","push_start_time":10,"push_stop_time":null,"exception_cnt":1,"im_sync_time":null,"failure":null},"claim":{"facts":{"status":"Stopped","finish_reason":"Exception","room_id":null,"group_id":null,"push_user_id":null,"push_start_time":null,"push_stop_time":70,"exception_cnt":4,"im_sync_time":null,"failure":null},"at":2.0},"counted":{"started":true,"finished":false,"exceptions":1},"seen_started_event":false,"seen_stopped_event":true,"final_read":false,"settled":false,"not_found":0,"no_status":[]}"#;
            let sealed = with_checksum("tasks", "1/v2", task.as_bytes().to_vec());
            txn.open_table(TASKS)
                .unwrap()
                .insert("1/v2", sealed.as_slice())
                .unwrap();
        }
        txn.commit().unwrap();
    }
    let restored = Store::open(dir.path()).unwrap().load().unwrap();
    let fresh = TaskRegistry::new();
    fresh.restore(restored);
    let t = fresh.get(1, "v2").unwrap();
    let shown = t.shown();
    assert_eq!(
        (
            shown.status(),
            shown.finish_reason(),
            shown.push_stop_time(),
            shown.exception_cnt()
        ),
        (TaskStatus::Stopped, Some(FinishReason::Exception), Some(70), 4)
    );
    assert_eq!((shown.group_id(), shown.push_user_id()), ("g", "u"));
    let db = Database::open(dir.path().join(FILE_NAME)).unwrap();
    let txn = db.begin_read().unwrap();
    let version = txn
        .open_table(META)
        .unwrap()
        .get("schema_version")
        .unwrap()
        .unwrap()
        .value();
    assert_eq!(version, SCHEMA_VERSION);
}

#[test]
fn forgetting_an_app_removes_only_that_app() {
    let dir = tempfile::tempdir().unwrap();
    stored_registry(dir.path());
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.forget_app(2).unwrap(), (2, 0));
    let restored = store.load().unwrap();
    assert_eq!(
        restored.tasks.iter().map(|t| t.task_id.as_str()).collect::<Vec<_>>(),
        ["keep"]
    );
    assert_eq!(restored.apps.iter().map(|a| a.0).collect::<Vec<_>>(), [1]);
}

/// `catching` silences the panics it handles and no other: a panic on another thread, at the same
/// time, still reaches the hook that was installed (nextest runs each test in its own process).
#[test]
fn catching_keeps_other_threads_panics_visible() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static SEEN: AtomicUsize = AtomicUsize::new(0);
    std::panic::set_hook(Box::new(|_| {
        SEEN.fetch_add(1, Ordering::SeqCst);
    }));
    let caught = catching(|| -> u8 { panic!("a damaged page") });
    assert_eq!(caught, Err("a damaged page".to_string()));
    assert_eq!(SEEN.load(Ordering::SeqCst), 0, "a handled panic is not printed");
    let inside = std::thread::spawn(|| catching(|| -> u8 { panic!("again") }));
    let outside = std::thread::spawn(|| panic!("somebody else's bug"));
    assert!(inside.join().unwrap().is_err());
    assert!(outside.join().is_err());
    assert_eq!(
        SEEN.load(Ordering::SeqCst),
        1,
        "the other thread's panic reached the hook"
    );
    assert_eq!(catching(|| 5), Ok(5));
}
