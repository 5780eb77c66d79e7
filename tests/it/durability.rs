//! Durable state: restarts, kill -9, bad stores, a full disk, bounded growth.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tiw_push_exporter::simulator::callbacks::sign_event;

use crate::common::*;

const APP: u64 = 1400000001;
const KEY: &str = "durableKey-000001";
const DEBUG_BIN: &str = env!("CARGO_BIN_EXE_tiw-push-exporter");

fn event(kind: &str, task: &str) -> serde_json::Value {
    let data = if kind == "WhiteboardPushStarted" {
        json!({"TaskId": task, "RoomId": 7, "PushUserId": "u", "PushStartTime": now() - 60})
    } else {
        json!({"TaskId": task, "RoomId": 7, "GroupId": "7", "PushUserId": "u", "FinishReason": "EXCEPTION",
               "PushStartTime": now() - 60, "PushStopTime": now(), "IMSyncTime": now() - 60, "ExceptionCnt": 1})
    };
    sign_event(
        json!({"EventType": kind, "SdkAppId": APP, "Timestamp": now(), "EventData": data}),
        KEY,
        now() + 300,
    )
}

fn write_config(dir: &Path, endpoint: &str, state: &Path) -> PathBuf {
    write_config_with(dir, endpoint, state, "")
}

fn write_config_with(dir: &Path, endpoint: &str, state: &Path, extra: &str) -> PathBuf {
    let path = dir.join("config.yaml");
    let yaml = config_yaml(endpoint, &[], "1h", extra).replace(
        "apps:\n",
        &format!("apps:\n  - sdk_app_id: {APP}\n    callback_key: {KEY}\n    discover: false\n"),
    ) + &format!("state:\n  path: {}\n", state.display());
    std::fs::write(&path, yaml).unwrap();
    path
}

/// Starts `bin` on `config`, returns once it listens.
fn spawn(bin: &Path, config: &Path) -> Proc {
    spawn_exporter(bin, config, &[])
}

async fn wait_ready(addr: &str) {
    wait_for(Duration::from_secs(15), "/-/ready", || async {
        let r = reqwest::get(format!("http://{addr}/-/ready")).await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await
}

#[derive(Default, Debug, Clone, Copy)]
struct Acked {
    started: bool,
    stopped: bool,
}

/// Kill -9 mid-stream, five times: every callback answered 200 is there after the restart. The
/// API cannot be reached, so every acknowledged claim stands, waiting for it: the task page shows
/// each one, and none is counted on its own word (the API never confirmed these tasks).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_no_acknowledged_callback() {
    let bin = release_bin();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config_with(
        dir.path(),
        &closed_endpoint(),
        &dir.path().join("state"),
        "callback:\n  confirm_timeout: 1s\n  max_unconfirmed_tasks: 1000000\n",
    );
    let acked: Arc<Mutex<HashMap<String, Acked>>> = Default::default();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    for cycle in 0..=5 {
        let proc = spawn(&bin, &config);
        wait_ready(&proc.addr).await;
        let m = scrape(&proc.addr).await;
        let snapshot = acked.lock().unwrap().clone();
        let events = snapshot
            .values()
            .map(|a| a.started as usize + a.stopped as usize)
            .sum::<usize>();
        let statuses = m.statuses();
        let mut found = 0;
        for (task, a) in &snapshot {
            // Tracked (UNKNOWN on /metrics until the API confirms it), with its claim on the task page.
            assert!(statuses.contains_key(task), "{task}: acknowledged callback lost");
            let page = client
                .get(format!("http://{}/-/task?sdk_app_id={APP}&task_id={task}", proc.addr))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let claimed = page
                .split("Claimed by a callback, not yet confirmed</th><td>")
                .nth(1)
                .unwrap_or_default();
            if a.stopped {
                assert!(
                    claimed.starts_with("STOPPED, EXCEPTION"),
                    "{task}: acknowledged Stopped lost"
                );
                found += 1 + a.started as usize;
            } else if a.started {
                assert!(
                    claimed.starts_with("PUSHING") || claimed.starts_with("STOPPED"),
                    "{task}: acknowledged Started lost"
                );
                found += 1;
            }
        }
        let app = ("sdk_app_id", "1400000001");
        // Past confirm_timeout: a claim about a task the API never confirmed is never counted.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let m = scrape(&proc.addr).await;
        assert_eq!(m.sum("tiw_push_tasks_finished_total", &[app]), 0.0);
        println!("restart {cycle}: acknowledged {events} callbacks before the kills, found {found}");
        assert_eq!(found, events);
        if cycle == 5 {
            break;
        }
        // Four senders, each a stream of Started then Stopped for fresh tasks, until the kill.
        let mut senders = tokio::task::JoinSet::new();
        for sender in 0..4 {
            let (client, acked, url) = (client.clone(), acked.clone(), format!("http://{}/callback", proc.addr));
            senders.spawn(async move {
                for i in 0.. {
                    let task = format!("crash{cycle}s{sender}n{i:05}");
                    for kind in ["WhiteboardPushStarted", "WhiteboardPushStopped"] {
                        let body = event(kind, &task).to_string();
                        match client.post(&url).body(body).send().await {
                            Ok(r) if r.status() == 200 => {
                                let mut acked = acked.lock().unwrap();
                                let a = acked.entry(task.clone()).or_default();
                                if kind == "WhiteboardPushStarted" {
                                    a.started = true
                                } else {
                                    a.stopped = true
                                }
                            }
                            _ => return,
                        }
                    }
                }
            });
        }
        tokio::time::sleep(Duration::from_millis(400 + 150 * cycle)).await;
        drop(proc); // SIGKILL, then reap
        senders.join_all().await;
    }
}

/// The same /metrics before and after a graceful restart (SIGTERM): counters continue, series stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_counters_and_task_series() {
    let sim = start_sim(sim_config(&[APP])).await;
    let polled = sim.sim.create_task(APP, 1);
    sim.sim.start_pushing(&polled);
    // The callbacks below tell the truth: the simulator holds their tasks.
    for task in ["restarta", "restartb"] {
        sim.sim.create_task_named(APP, 7, task, None);
        sim.sim.start_pushing(task);
    }
    sim.sim.stop("restarta", "EXCEPTION");
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &sim.endpoint(), &dir.path().join("state"));
    let proc = spawn(Path::new(DEBUG_BIN), &config);
    wait_ready(&proc.addr).await;
    let client = reqwest::Client::new();
    for (kind, task) in [
        ("WhiteboardPushStarted", "restarta"),
        ("WhiteboardPushStopped", "restarta"),
        ("WhiteboardPushStarted", "restartb"),
        ("WhiteboardPushStarted", polled.as_str()),
    ] {
        let r = client
            .post(format!("http://{}/callback", proc.addr))
            .body(event(kind, task).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    wait_for(
        Duration::from_secs(10),
        "the polled task and the confirmed end",
        || async {
            let m = scrape(&proc.addr).await;
            let polled_read =
                m.get("tiw_push_task_info", &[("task_id", polled.as_str()), ("group_id", "1")]) == Some(1.0);
            let confirmed = m.get("tiw_push_tasks_finished_total", &[("reason", "EXCEPTION")]) == Some(1.0);
            let b_read = m.get("tiw_push_task_info", &[("task_id", "restartb"), ("group_id", "7")]) == Some(1.0);
            (polled_read && confirmed && b_read).then_some(())
        },
    )
    .await;
    // Freeze the truth: with the simulator gone nothing can change any more.
    sim.stop().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stable = |m: &Metrics| -> Vec<String> {
        m.text
            .lines()
            .filter(|l| l.starts_with("tiw_push_") && !l.starts_with("tiw_push_task_duration_seconds"))
            .map(str::to_string)
            .collect()
    };
    let before = stable(&scrape(&proc.addr).await);
    let pid = proc.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let mut proc = proc;
    let (status, _exited) = tokio::task::spawn_blocking(move || (proc.child.wait().unwrap(), proc))
        .await
        .unwrap();
    assert!(status.success(), "SIGTERM exits 0: {status:?}");
    let proc = spawn(Path::new(DEBUG_BIN), &config);
    wait_ready(&proc.addr).await;
    let after = stable(&scrape(&proc.addr).await);
    assert!(
        before
            .iter()
            .any(|l| l.starts_with("tiw_push_tasks_finished_total") && l.ends_with(" 1")),
        "{before:?}"
    );
    assert_eq!(after, before);
}

fn run_serve(config: &Path) -> std::process::Output {
    Command::new(DEBUG_BIN)
        .arg("--config.file")
        .arg(config)
        .args(["--web.listen-address", "127.0.0.1:0"])
        .output()
        .unwrap()
}

#[test]
fn a_store_that_cannot_be_used_stops_the_exporter_with_the_path_and_cause() {
    let dir = tempfile::tempdir().unwrap();
    // Under a regular file: no directory can be made there, not even by root.
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let under_file = file.join("state");
    let config = write_config(dir.path(), "http://127.0.0.1:1", &under_file);
    let out = run_serve(&config);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&under_file.display().to_string()) && err.contains("cannot create the directory"),
        "{err}"
    );

    // A corrupt file.
    let corrupt = dir.path().join("corrupt");
    std::fs::create_dir_all(&corrupt).unwrap();
    std::fs::write(corrupt.join(tiw_push_exporter::store::FILE_NAME), vec![0x42; 64 * 1024]).unwrap();
    let config = write_config(dir.path(), "http://127.0.0.1:1", &corrupt);
    let out = run_serve(&config);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&corrupt.join(tiw_push_exporter::store::FILE_NAME).display().to_string()),
        "{err}"
    );

    // A store written by a newer exporter.
    let newer = dir.path().join("newer");
    std::fs::create_dir_all(&newer).unwrap();
    {
        let db = redb::Database::create(newer.join(tiw_push_exporter::store::FILE_NAME)).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(redb::TableDefinition::<&str, u64>::new("meta"))
            .unwrap()
            .insert("schema_version", 99)
            .unwrap();
        txn.commit().unwrap();
    }
    let config = write_config(dir.path(), "http://127.0.0.1:1", &newer);
    let out = run_serve(&config);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("schema version 99") && err.contains(&newer.display().to_string()),
        "{err}"
    );
}

/// Mounts a tmpfs of `size` on `dir` (needs root, as CI has); unmounts when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status();
        assert!(
            ok.is_ok_and(|s| s.success()),
            "mounting a tmpfs needs root (CI runs as root)"
        );
        Tmpfs(dir.to_owned())
    }
    fn resize(&self, size: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A full disk: callbacks get 503 (so TIW retries), the metric says so, /metrics keeps serving,
/// and once there is room again every event answered 200 is on disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_503_and_loses_nothing() {
    if !needs(&["root", "mount"]) {
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let fs = Tmpfs::mount(state.path(), "2m");
    // The API cannot be reached: every acknowledged claim stands, and waits for it (no cap on how
    // many: the disk is the limit here).
    let yaml = config_yaml(
        &closed_endpoint(),
        &[],
        "1h",
        "callback:\n  max_unconfirmed_tasks: 1000000\n",
    )
    .replace(
        "apps:\n",
        &format!("apps:\n  - sdk_app_id: {APP}\n    callback_key: {KEY}\n    discover: false\n"),
    );
    let exporter = start_exporter_with_state(&yaml, state).await;
    let client = reqwest::Client::new();
    let mut acked = Vec::new();
    let mut refused = Vec::new();
    for i in 0..20_000 {
        let task = format!("fulldisk{i:06}{}", "x".repeat(100));
        let r = client
            .post(exporter.url("/callback"))
            .body(event("WhiteboardPushStopped", &task).to_string())
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            200 => acked.push(task),
            503 => {
                refused.push(task);
                if refused.len() >= 5 {
                    break;
                }
            }
            s => panic!("unexpected {s}"),
        }
    }
    assert!(
        !refused.is_empty(),
        "the disk never filled ({} events taken)",
        acked.len()
    );
    let m = exporter.scrape().await;
    assert_eq!(m.get("tiw_exporter_store_last_write_successful", &[]), Some(0.0));
    assert!(m.get("tiw_exporter_store_errors_total", &[("op", "write")]).unwrap() >= 1.0);
    println!("disk full after {} acknowledged events", acked.len());
    // Room again: the writer catches up by itself; TIW's retries are then answered 200.
    fs.resize("64m");
    wait_for(Duration::from_secs(10), "writes to succeed again", || async {
        (exporter
            .scrape()
            .await
            .get("tiw_exporter_store_last_write_successful", &[])
            == Some(1.0))
        .then_some(())
    })
    .await;
    for task in &refused {
        let r = client
            .post(exporter.url("/callback"))
            .body(event("WhiteboardPushStopped", task).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        acked.push(task.clone());
    }
    let state = exporter.stop_keeping_state().await;
    let again = start_exporter_with_state(&yaml, state).await;
    for task in &acked {
        assert!(
            again
                .registry
                .get(APP, task)
                .and_then(|t| t.claim)
                .is_some_and(|c| c.facts.finish_reason.is_some()),
            "{task} lost"
        );
    }
    again.stop().await;
    drop(fs);
}

/// Thousands of tasks cycling through retention: the store holds only what is tracked, and its
/// file stops growing. Each round's tasks are tracked and answered ended as the poller does it
/// (the API would take 50 s a round at 20 reads/s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_the_store_bounded() {
    use tiw_push_exporter::registry::{Facts, Source, TaskStatus};
    use tiw_push_exporter::task::FinishReason;
    let yaml = config_yaml(&closed_endpoint(), &[], "1h", "retention:\n  stopped_tasks: 1s\n").replace(
        "apps:\n",
        &format!("apps:\n  - sdk_app_id: {APP}\n    discover: false\n"),
    );
    let exporter = start_exporter(&yaml).await;
    let mut sizes = Vec::new();
    for round in 0..4 {
        for i in 0..1000 {
            let task = format!("cycle{round}n{i:05}");
            exporter.registry.track(APP, &task, Some(7), Source::Discovery);
            exporter.registry.observe_poll(
                APP,
                &task,
                &Facts {
                    status: TaskStatus::Stopped,
                    finish_reason: Some(FinishReason::Exception),
                    push_start_time: Some(now() as i64 - 60),
                    push_stop_time: Some(now() as i64),
                    ..Default::default()
                },
            );
        }
        wait_for(
            Duration::from_secs(20),
            "the round to expire from the store",
            || async { (exporter.registry.is_empty() && exporter.store.task_count().unwrap() == 0).then_some(()) },
        )
        .await;
        sizes.push(exporter.store.file_size());
    }
    println!("store file size after each round of 1000 tasks: {sizes:?}");
    let m = exporter.scrape().await;
    assert_eq!(
        m.get(
            "tiw_push_tasks_finished_total",
            &[("sdk_app_id", "1400000001"), ("reason", "EXCEPTION")]
        ),
        Some(4000.0)
    );
    // redb grows its file by regions and reuses freed pages, so the size steps up and down with
    // the timing of commits; what must not happen is growth with the number of tasks ever seen
    // (4000 by now: four times the first round's file).
    let early = sizes[0].max(sizes[1]);
    assert!(sizes[3] <= early * 2, "the store keeps growing: {sizes:?}");
    exporter.stop().await;
}
