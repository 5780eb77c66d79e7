//! Integrity against the release binary: a reload never deletes history, damaged stores are
//! refused with their path, basic auth cannot be starved, and the small hardening items.

use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use tiw_push_exporter::registry::{Facts, FinishReason, Source, TaskRegistry, TaskStatus};
use tiw_push_exporter::simulator::callbacks::sign_event;
use tiw_push_exporter::store::{Store, FILE_NAME};

use crate::common::*;

const A: u64 = 1400000001;
const B: u64 = 1400000002;

fn write_config(dir: &Path, endpoint: &str, apps: &[u64]) -> PathBuf {
    write_config_file(dir, &config_yaml(endpoint, apps, "200ms", ""))
}

fn signal(proc: &Proc, sig: &str) {
    let pid = proc.child.id().to_string();
    assert!(Command::new("kill").args([sig, &pid]).status().unwrap().success());
}

/// SIGTERM and wait for a clean exit.
fn stop(mut proc: Proc) {
    signal(&proc, "-TERM");
    let status = proc.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

/// What /metrics says about app B's history.
fn history(m: &Metrics) -> Vec<String> {
    let b = format!("sdk_app_id=\"{B}\"");
    m.text
        .lines()
        .filter(|l| {
            (l.starts_with("tiw_push_tasks_finished_total")
                || l.starts_with("tiw_push_exceptions_total")
                || l.starts_with("tiw_push_tasks_started_total")
                || l.starts_with("tiw_push_duration_seconds_count"))
                && l.contains(&b)
        })
        .map(str::to_string)
        .collect()
}

/// A reload that leaves an app out, then a restart, then the app back: its counters and tasks
/// come back unchanged, after a reload and after another restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_leaves_an_app_out_keeps_its_history() {
    let sim = start_sim(sim_config(&[A, B])).await;
    let mut ended = Vec::new();
    for i in 0..5 {
        let t = sim.sim.create_task(B, 100 + i);
        sim.sim.start_pushing(&t);
        ended.push(t);
    }
    let running = sim.sim.create_task(B, 200);
    sim.sim.start_pushing(&running);
    let dir = tempfile::tempdir().unwrap();
    let both = write_config(dir.path(), &sim.endpoint(), &[A, B]);
    let bin = release_bin();
    // The tasks are also configured by id, so that the reload below leaves ids out of the file too.
    let yaml = std::fs::read_to_string(&both).unwrap();
    let b_line = format!("  - sdk_app_id: {B}\n");
    let b_with_tasks = format!("  - sdk_app_id: {B}\n    tasks: [{}]\n", ended.join(", "));
    let with_tasks = yaml.replace(&b_line, &b_with_tasks);
    std::fs::write(&both, &with_tasks).unwrap();
    let proc = spawn_exporter(&bin, &both, &[]);
    // They end with EXCEPTION once the exporter has seen them run (an end seen before it first
    // looked would be history, never counted).
    for t in &ended {
        wait_for(Duration::from_secs(15), "the task running", || async {
            (scrape(&proc.addr).await.status_of(t).as_deref() == Some("PUSHING")).then_some(())
        })
        .await;
        sim.sim.update_task(t, |t| {
            t.exception_cnt = 2;
            tiw_push_exporter::simulator::lifecycle::stop(t, "EXCEPTION");
        });
    }
    let before = wait_for(Duration::from_secs(15), "B's history", || async {
        let m = scrape(&proc.addr).await;
        let done = m.get(
            "tiw_push_tasks_finished_total",
            &[("sdk_app_id", "1400000002"), ("reason", "EXCEPTION")],
        ) == Some(5.0)
            && m.status_of(&running).as_deref() == Some("PUSHING");
        done.then(|| history(&m))
    })
    .await;
    assert!(!before.is_empty());

    // One bad edit: B left out, and a reload.
    let only_a = with_tasks.replace(&b_with_tasks, "");
    assert!(!only_a.contains(&B.to_string()));
    std::fs::write(&both, &only_a).unwrap();
    signal(&proc, "-HUP");
    wait_for(Duration::from_secs(10), "B to leave /metrics", || async {
        let m = scrape(&proc.addr).await;
        (history(&m).is_empty() && m.status_of(&running).is_none()).then_some(())
    })
    .await;
    // A restart on the same config: B stays out, and stays in the store.
    stop(proc);
    let proc = spawn_exporter(&bin, &both, &[]);
    assert!(history(&scrape(&proc.addr).await).is_empty());
    assert!(
        proc.log_text().contains("the store keeps this app"),
        "{}",
        proc.log_text()
    );
    // The fix: B back, by reload...
    std::fs::write(&both, &with_tasks).unwrap();
    signal(&proc, "-HUP");
    let back = wait_for(Duration::from_secs(10), "B back", || async {
        let m = scrape(&proc.addr).await;
        let h = history(&m);
        (!h.is_empty() && m.status_of(&running).is_some()).then_some(h)
    })
    .await;
    assert_eq!(back, before, "counters unchanged after the reload");
    // ...and across another restart.
    stop(proc);
    let proc = spawn_exporter(&bin, &both, &[]);
    assert_eq!(
        history(&scrape(&proc.addr).await),
        before,
        "counters unchanged after a restart"
    );
    for t in &ended {
        assert_eq!(
            scrape(&proc.addr).await.finish_reasons().get(t).map(String::as_str),
            Some("EXCEPTION")
        );
    }
    stop(proc);

    // Forgetting is deliberate: `state forget` on the stopped exporter.
    let out = Command::new(&bin)
        .args(["state", "forget", "--app", &B.to_string(), "--config.file"])
        .arg(&both)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("forgot app 1400000002: 6 tasks"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    sim.stop().await;
}

/// A store with 200 ended tasks, written by the library as the exporter would.
fn make_store(dir: &Path) -> PathBuf {
    let r = TaskRegistry::new();
    r.set_configured([A]);
    for i in 0..200 {
        let id = format!("damagetask{i:010}");
        r.track(A, &id, Some(5), Source::Discovery);
        r.observe_poll(
            A,
            &id,
            &Facts {
                status: TaskStatus::Stopped,
                finish_reason: Some(FinishReason::Exception),
                push_start_time: Some(10),
                push_stop_time: Some(70),
                exception_cnt: Some(3),
                ..Default::default()
            },
        );
    }
    let store = Store::open(dir).unwrap();
    store.write(&r.take_batch()).unwrap();
    store.path().to_owned()
}

/// A config for app A with no API to reach and its store at `dir/state`.
fn offline_config(dir: &Path) -> PathBuf {
    write_config_file(
        dir,
        &format!("tencentcloud: {{secret_id: a, secret_key: b, endpoint: 'http://127.0.0.1:9'}}\napps: [{{sdk_app_id: {A}}}]\n"),
    )
}

fn find(data: &[u8], needle: &[u8]) -> usize {
    data.windows(needle.len())
        .position(|w| w == needle)
        .expect("the needle is in the file")
}

/// A 0-byte file, a zeroed 4 KiB page, and one changed digit in a record: each refused at start
/// with the path named and the cause, exit 1, no panic and no backtrace.
#[test]
fn damaged_stores_are_refused_with_the_path() {
    let bin = release_bin();
    type Damage = fn(&mut Vec<u8>);
    let cases: [(&str, Damage, &str); 3] = [
        ("empty file", |d| d.clear(), "the file is empty (0 bytes)"),
        (
            "zeroed page",
            |d| {
                let at = find(d, b"damagetask0000000100") / 4096 * 4096;
                d[at..at + 4096].fill(0);
            },
            "the store is damaged",
        ),
        (
            "one digit changed",
            |d| {
                let at = find(d, b"\"started_total\":") + "\"started_total\":".len();
                d[at] = if d[at] == b'1' { b'2' } else { b'1' };
            },
            "record apps/1400000001 fails its checksum",
        ),
    ];
    for (name, damage, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let file = make_store(&state);
        let mut data = std::fs::read(&file).unwrap();
        damage(&mut data);
        std::fs::write(&file, &data).unwrap();
        let config = offline_config(dir.path());
        let out = Command::new(&bin)
            .args(["--web.listen-address", "127.0.0.1:0", "--config.file"])
            .arg(&config)
            .env("RUST_BACKTRACE", "1")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        println!("{name}: exit {:?}: {}", out.status.code(), err.trim());
        assert_eq!(out.status.code(), Some(1), "{name}: {err}");
        assert!(
            err.contains(&state.join(FILE_NAME).display().to_string()),
            "{name}: the path: {err}"
        );
        assert!(err.contains(expected), "{name}: {err}");
        assert!(!err.contains("panicked") && !err.contains("backtrace"), "{name}: {err}");
    }
}

fn threads(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Threads:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn p99(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[(v.len() * 99 / 100).min(v.len() - 1)]
}

/// 400 connections of distinct wrong passwords: bcrypt work stays bounded, authenticated scrapes
/// and callbacks keep answering, and the thread count stays flat. The exporter runs on one core.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bcrypt_flood_cannot_starve_the_exporter() {
    if !needs(&["taskset"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let hash = bcrypt::hash("right-password", 10).unwrap();
    let web = dir.path().join("web.yml");
    std::fs::write(&web, format!("basic_auth_users:\n  prometheus: {hash}\n")).unwrap();
    let yaml = config_yaml(&closed_endpoint(), &[], "1h", "").replace(
        "apps:\n",
        &format!("apps:\n  - sdk_app_id: {A}\n    callback_key: floodKey-0001\n    discover: false\n"),
    );
    let config = write_config_file(dir.path(), &yaml);
    // On one core, as a small container would give it.
    let bin = release_bin();
    let mut child = Command::new("taskset")
        .args(["-c", "0"])
        .arg(&bin)
        .args(["--web.listen-address", "127.0.0.1:0", "--config.file"])
        .arg(&config)
        .arg("--web.config.file")
        .arg(&web)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("taskset starts the exporter");
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufReader::new(stderr).lines().map_while(Result::ok);
    let addr = lines
        .find_map(|l| logged_address(&l))
        .expect("the exporter logs its address");
    std::thread::spawn(move || for _ in lines {});
    let child = KillOnDrop(child);
    let pid = child.id();
    let url = format!("http://{addr}");
    // Prometheus and TIW from one address, the attackers from another (each address may hold at
    // most --web.max-connections-per-peer connections).
    let good = reqwest::Client::builder()
        .local_address("127.0.0.3".parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();
    let scrape_ok = |c: reqwest::Client, url: String| async move {
        let r = c
            .get(format!("{url}/metrics"))
            .basic_auth("prometheus", Some("right-password"))
            .send()
            .await
            .unwrap();
        r.status().as_u16()
    };
    // The real scraper has been seen before the flood.
    assert_eq!(scrape_ok(good.clone(), url.clone()).await, 200);
    let threads_before = threads(pid);

    let stop = Instant::now() + Duration::from_secs(10);
    let mut attackers = tokio::task::JoinSet::new();
    for i in 0..400u32 {
        let url = url.clone();
        attackers.spawn(async move {
            // Spread over 200 addresses, as a botnet is: the per-peer cap holds none of them back.
            let from: std::net::IpAddr = format!("127.0.1.{}", 1 + i % 200).parse().unwrap();
            let c = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .local_address(from)
                .build()
                .unwrap();
            let mut n = 0u32;
            let mut refused = 0u32;
            while Instant::now() < stop {
                let r = c
                    .get(format!("{url}/metrics"))
                    .basic_auth("prometheus", Some(format!("wrong-{i}-{n}")))
                    .send()
                    .await;
                n += 1;
                if let Ok(r) = r {
                    assert!(matches!(r.status().as_u16(), 401 | 503), "{}", r.status());
                    refused += (r.status() == 503) as u32;
                }
            }
            (n, refused)
        });
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut scrapes = Vec::new();
    let mut callbacks = Vec::new();
    let mut peak_threads = 0;
    let mut n = 0u64;
    while Instant::now() + Duration::from_millis(500) < stop {
        let t = Instant::now();
        assert_eq!(scrape_ok(good.clone(), url.clone()).await, 200);
        scrapes.push(t.elapsed());
        let event = sign_event(
            json!({"EventType": "WhiteboardPushStarted", "SdkAppId": A, "Timestamp": now(), "EventData": {"TaskId": format!("floodtask{n:011}")}}),
            "floodKey-0001",
            now() + 300,
        );
        n += 1;
        let t = Instant::now();
        let r = good
            .post(format!("{url}/callback"))
            .body(event.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        callbacks.push(t.elapsed());
        peak_threads = peak_threads.max(threads(pid));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut attempts = 0;
    let mut busy = 0;
    for (a, b) in attackers.join_all().await {
        attempts += a;
        busy += b;
    }
    let m = Metrics::parse(
        &good
            .get(format!("{url}/metrics"))
            .basic_auth("prometheus", Some("right-password"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    let (sp99, cp99) = (p99(scrapes.clone()), p99(callbacks.clone()));
    println!(
        "bcrypt flood on one core: {attempts} wrong-password requests from 400 connections in 10 s ({busy} refused 503 auth_busy, \
         counted {}); authenticated scrapes p99 {sp99:?} (max {:?}, n={}), callbacks p99 {cp99:?} (n={}); threads {threads_before} before, peak {peak_threads}",
        m.get("tiw_exporter_http_requests_refused_total", &[("handler", "auth"), ("reason", "auth_busy")]).unwrap_or(0.0),
        scrapes.iter().max().unwrap(),
        scrapes.len(),
        callbacks.len()
    );
    assert!(sp99 < Duration::from_secs(1), "scrape p99 {sp99:?}");
    assert!(cp99 < Duration::from_secs(1), "callback p99 {cp99:?}");
    assert!(
        peak_threads <= threads_before + 4,
        "threads grew from {threads_before} to {peak_threads}"
    );
    drop(child);
}

/// A broken chunked body is a malformed request (400), not one that is too large (413).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_chunked_body_is_malformed() {
    let yaml = config_yaml(&closed_endpoint(), &[], "1h", "").replace(
        "apps:\n",
        &format!("apps:\n  - sdk_app_id: {A}\n    allow_unsigned_callbacks: true\n    discover: false\n"),
    );
    let exporter = start_exporter(&yaml).await;
    let mut conn = std::net::TcpStream::connect(exporter.addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    conn.write_all(
        b"POST /callback HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n5\r\n{\"Eve\r\nzz\r\n",
    )
    .unwrap();
    let mut reply = String::new();
    let _ = conn.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    let m = exporter.scrape().await;
    assert_eq!(m.sum("tiw_exporter_callbacks_total", &[("outcome", "malformed")]), 1.0);
    exporter.stop().await;
}

/// SIGHUP while the exporter is still starting does not kill it.
#[test]
fn an_early_sighup_is_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    make_store(&state);
    let config = offline_config(dir.path());
    let mut child = KillOnDrop(
        Command::new(release_bin())
            .args(["--web.listen-address", "127.0.0.1:0", "--config.file"])
            .arg(&config)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(20));
    assert!(Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let stderr = child.stderr.take().unwrap();
    let listening = std::io::BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .any(|l| l.contains("address="));
    assert!(listening, "the exporter went on to listen");
    assert!(child.try_wait().unwrap().is_none(), "still running");
}

/// `demo | head -3`: the reader goes away; the demo neither panics nor stops serving.
#[test]
fn a_closed_stdout_pipe_is_not_a_panic() {
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_tiw-push-exporter"))
            .args(["demo", "--web.listen-address", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert!(first.contains("demo"), "{first}");
    drop(out);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(child.try_wait().unwrap().is_none(), "the demo still runs");
    let _ = child.kill();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(!err.contains("panicked"), "{err}");
}

/// Text from the network never lands under the log line's own keys: a callback's Error.Message
/// is `error_message`, and the JSON line's `message` stays the exporter's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_text_never_takes_the_logs_own_keys() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = config_yaml(&closed_endpoint(), &[], "1h", "").replace(
        "apps:\n",
        &format!("apps:\n  - sdk_app_id: {A}\n    allow_unsigned_callbacks: true\n    discover: false\n"),
    );
    let config = write_config_file(dir.path(), &yaml);
    let proc = spawn_exporter(
        Path::new(env!("CARGO_BIN_EXE_tiw-push-exporter")),
        &config,
        &["--log.format", "json"],
    );
    let body = json!({"EventType": "WhiteboardPushStopped", "SdkAppId": A, "Timestamp": now(),
        "EventData": {"TaskId": "logkeys0000000000001", "FinishReason": "EXCEPTION",
                      "Error": {"Code": "level", "Message": "all is well, ignore the alert"}}});
    let r = reqwest::Client::new()
        .post(format!("http://{}/callback", proc.addr))
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let line = wait_for(Duration::from_secs(5), "the log line", || async {
        proc.log_text()
            .lines()
            .find(|l| l.contains("reports an error"))
            .map(str::to_string)
    })
    .await;
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        v["fields"]["message"], "WhiteboardPushStopped reports an error",
        "{line}"
    );
    assert_eq!(v["fields"]["error_message"], "all is well, ignore the alert", "{line}");
    assert_ne!(v["level"], "level");
}

/// GroupId and PushUserId become label values of every scrape: a 30 KB one is cut to 256 bytes,
/// and the cut is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_values_from_the_network_are_bounded() {
    let yaml = config_yaml(&closed_endpoint(), &[], "1h", "").replace(
        "apps:\n",
        &format!("apps:\n  - sdk_app_id: {A}\n    allow_unsigned_callbacks: true\n    discover: false\n"),
    );
    let exporter = start_exporter(&yaml).await;
    let body = json!({"EventType": "WhiteboardPushStopped", "SdkAppId": A, "Timestamp": now(),
        "EventData": {"TaskId": "longlabels0000000001", "GroupId": "g".repeat(30_000), "PushUserId": "u".repeat(300), "FinishReason": "AUTO"}});
    let r = reqwest::Client::new()
        .post(exporter.url("/callback"))
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let m = exporter.scrape().await;
    let info = m
        .text
        .lines()
        .find(|l| l.starts_with("tiw_push_task_info{") && l.contains("longlabels0000000001"))
        .unwrap();
    // The API never confirmed this task, so nothing of the claim shows yet; what would show once
    // it does is cut already.
    assert!(info.len() < 700, "{} bytes", info.len());
    assert!(!m.text.contains(&"g".repeat(257)) && !m.text.contains(&"u".repeat(257)));
    let t = exporter.registry.get(A, "longlabels0000000001").unwrap();
    let claim = t.claim.unwrap().facts;
    assert_eq!(claim.group_id.as_deref(), Some("g".repeat(256).as_str()));
    assert_eq!(claim.push_user_id.as_deref(), Some("u".repeat(256).as_str()));
    assert_eq!(
        m.get("tiw_exporter_label_values_truncated_total", &[("source", "callback")]),
        Some(2.0)
    );
    exporter.stop().await;
}
