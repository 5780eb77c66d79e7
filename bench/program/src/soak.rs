//! `bench/soak`: the release binary against the simulator for a long while, with everything going
//! on at once: tasks starting and ending, TIW calling back (some events dropped, duplicated,
//! reordered), API faults at a given rate, hostile callbacks, and a scrape every second.
//!
//! It prints a sample line every `--sample` (RSS, CPU, tracked tasks, scrapes, faults), then stops
//! the faults, lets the simulated world hold still, and checks that after two poll intervals
//! every task's series equal the simulator's truth. Ends with `name: value` lines; exits 1 if a
//! scrape failed or was slow, a hostile callback was taken, a task disagrees, or the log shows a
//! panic.
//!
//! Flags: --duration 10m  --fault-rate 0.3  --apps 2  --tasks-per-app 20  --sample 30s
//!        --junk-per-second 20  --poll-interval 5s  --retention 3m
//!
//! `--retention` is both the exporter's `retention.stopped_tasks` and how long the simulator
//! remembers an ended task, so after a few minutes the registry holds steady and RSS should too.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tiw_push_exporter::simulator::callbacks::sign_event;
use tiw_push_exporter::simulator::lifecycle::Generator;
use tiw_push_exporter::simulator::{CallbackKnobs, FaultRates, SimConfig, SimCredential, SimStatus};
use tokio_util::sync::CancellationToken;

use crate::process::*;

const SECRET_ID: &str = "AKIDsoakSecretId000000000000000000";
const SECRET_KEY: &str = "soakSecretKey0000000000000000000";
const CALLBACK_KEY: &str = "soakCallbackKey00001";

struct Options {
    duration: Duration,
    fault_rate: f64,
    apps: usize,
    tasks_per_app: usize,
    sample: Duration,
    junk_per_second: u64,
    poll_interval: Duration,
    retention: Duration,
}

fn options() -> Options {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let duration = |name: &str, default: &str| {
        let v = flag(name).unwrap_or_else(|| default.to_string());
        humantime::parse_duration(&v).unwrap_or_else(|e| panic!("{name} {v}: {e}"))
    };
    let number = |name: &str, default: &str| -> f64 {
        let v = flag(name).unwrap_or_else(|| default.to_string());
        v.parse().unwrap_or_else(|e| panic!("{name} {v}: {e}"))
    };
    Options {
        duration: duration("--duration", "10m"),
        fault_rate: number("--fault-rate", "0.3"),
        apps: number("--apps", "2") as usize,
        tasks_per_app: number("--tasks-per-app", "20") as usize,
        sample: duration("--sample", "30s"),
        junk_per_second: number("--junk-per-second", "20") as u64,
        poll_interval: duration("--poll-interval", "5s"),
        retention: duration("--retention", "3m"),
    }
}

fn out(name: &str, value: impl std::fmt::Display) {
    println!("{name}: {value}");
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Counters shared by the load loops.
#[derive(Default)]
struct Load {
    scrapes: AtomicU64,
    scrape_errors: AtomicU64,
    slow_scrapes: AtomicU64,
    slowest_scrape_us: AtomicU64,
    junk: AtomicU64,
    junk_taken: AtomicU64,
    last_scrape: std::sync::Mutex<String>,
}

/// One hostile callback of a rotating kind; it must never be answered 200.
fn junk(i: u64, app: u64) -> String {
    let event = json!({"EventType": "WhiteboardPushStopped", "SdkAppId": app, "Timestamp": now(),
        "EventData": {"TaskId": format!("junk{i:016}"), "RoomId": 1, "GroupId": "1", "PushUserId": "u",
                      "FinishReason": "EXCEPTION", "PushStartTime": now() - 60, "PushStopTime": now(),
                      "IMSyncTime": now() - 60, "ExceptionCnt": 3}});
    match i % 5 {
        0 => sign_event(event, "not-the-key", now() + 300).to_string(),
        1 => event.to_string(),
        2 => sign_event(event, CALLBACK_KEY, now() - 5).to_string(),
        3 => sign_event(event, CALLBACK_KEY, now() + 300).to_string()[..40].to_string(),
        _ => sign_event(
            json!({"EventType": "WhiteboardPushStarted", "SdkAppId": 1, "Timestamp": now(), "EventData": {}}),
            CALLBACK_KEY,
            now() + 300,
        )
        .to_string(),
    }
}

/// `bench/soak`: runs for `--duration`, then checks the final state; exits 1 on any failure.
pub async fn main() {
    let o = options();
    let apps: Vec<u64> = (0..o.apps as u64).map(|i| 1_400_000_001 + i).collect();
    let sim = start_sim(SimConfig {
        credentials: vec![SimCredential {
            secret_id: SECRET_ID.into(),
            secret_key: SECRET_KEY.into(),
            session_token: None,
            ..Default::default()
        }],
        apps: apps.clone(),
        latency: Duration::from_millis(30),
        latency_jitter: Duration::from_millis(40),
        fault_rates: FaultRates::uniform(o.fault_rate),
        ..Default::default()
    })
    .await;
    sim.sim.set_callback_knobs(CallbackKnobs {
        drop: 0.1,
        duplicate: 0.3,
        delay: Duration::from_millis(20),
        reorder: 0.2,
        retry_every: Duration::from_secs(1),
        retries: 3,
    });
    let dir = scratch_dir();
    let interval = humantime::format_duration(o.poll_interval);
    let mut yaml = format!(
        "tencentcloud:\n  endpoint: {}\n  secret_id: {SECRET_ID}\n  secret_key: {SECRET_KEY}\n  timeout: 2s\napps:\n",
        sim.endpoint()
    );
    for app in &apps {
        yaml += &format!("  - sdk_app_id: {app}\n    callback_key: {CALLBACK_KEY}\n");
    }
    yaml += &format!(
        "poll:\n  interval: {interval}\n  discovery_interval: {interval}\nstate:\n  path: {}\nretention:\n  stopped_tasks: {}\n",
        dir.path().join("state").display(),
        humantime::format_duration(o.retention)
    );
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, yaml).expect("write config");
    let (exporter, addr, _, log) = spawn_logged(&config, "info");
    let pid = exporter.0.id();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    wait_ready(&client, &addr).await;
    for app in &apps {
        sim.sim
            .set_callback(*app, &format!("http://{addr}/callback"), CALLBACK_KEY);
    }
    let world = CancellationToken::new();
    let lifecycle = sim.sim.spawn_lifecycle(
        Generator {
            apps: apps.clone(),
            target_per_app: o.tasks_per_app,
            create_every: Duration::from_secs(1),
            prepare_for: (Duration::from_secs(1), Duration::from_secs(4)),
            push_for: (Duration::from_secs(5), Duration::from_secs(90)),
            keep_ended: o.retention,
            ..Default::default()
        },
        world.clone(),
    );

    let load = Arc::new(Load::default());
    let stop = Arc::new(AtomicBool::new(false));
    let scraper = {
        let (load, stop, client, url) = (
            load.clone(),
            stop.clone(),
            client.clone(),
            format!("http://{addr}/metrics"),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                match client.get(&url).send().await {
                    Ok(res) if res.status() == 200 => match res.text().await {
                        Ok(text) => *load.last_scrape.lock().unwrap_or_else(|e| e.into_inner()) = text,
                        Err(_) => {
                            load.scrape_errors.fetch_add(1, Ordering::Relaxed);
                        }
                    },
                    _ => {
                        load.scrape_errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                let took = t.elapsed();
                load.scrapes.fetch_add(1, Ordering::Relaxed);
                load.slowest_scrape_us
                    .fetch_max(took.as_micros() as u64, Ordering::Relaxed);
                if took > Duration::from_secs(1) {
                    load.slow_scrapes.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_secs(1).saturating_sub(took)).await;
            }
        })
    };
    let junker = {
        let (load, stop, client, url, app) = (
            load.clone(),
            stop.clone(),
            client.clone(),
            format!("http://{addr}/callback"),
            apps[0],
        );
        let rate = o.junk_per_second;
        let every = Duration::from_micros(1_000_000 / rate.max(1));
        tokio::spawn(async move {
            let mut i = 0u64;
            while rate > 0 && !stop.load(Ordering::Relaxed) {
                let body = junk(i, app);
                if let Ok(res) = client.post(&url).body(body).send().await {
                    if res.status() == 200 {
                        load.junk_taken.fetch_add(1, Ordering::Relaxed);
                    }
                }
                load.junk.fetch_add(1, Ordering::Relaxed);
                i += 1;
                tokio::time::sleep(every).await;
            }
        })
    };

    let started = Instant::now();
    let mut rss = Vec::new();
    println!("# t_s rss_mib cpu_s tasks scrapes scrape_errors faults_injected callbacks_accepted junk");
    loop {
        let elapsed = started.elapsed();
        let text = load.last_scrape.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let r = rss_mib(pid);
        rss.push(r);
        let faults: u64 = sim.sim.stats().faults_injected.values().sum();
        println!(
            "# {:>5} {r:>7.1} {:>6.1} {:>6} {:>7} {:>3} {:>6} {:>6} {:>6}",
            elapsed.as_secs(),
            cpu_seconds(pid),
            metric_sum(&text, "tiw_push_tasks", ""),
            load.scrapes.load(Ordering::Relaxed),
            load.scrape_errors.load(Ordering::Relaxed),
            faults,
            metric_sum(&text, "tiw_exporter_callbacks_total", "outcome=\"accepted\""),
            load.junk.load(Ordering::Relaxed),
        );
        if elapsed >= o.duration {
            break;
        }
        tokio::time::sleep(o.sample.min(o.duration - elapsed)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let _ = scraper.await;
    let _ = junker.await;

    // Faults off, world still: two poll intervals to agree with the truth.
    sim.sim
        .set_fault_rates(FaultRates::default())
        .expect("zero rates are valid");
    world.cancel();
    let _ = lifecycle.await;
    let stopped = Instant::now();
    let truth = sim.sim.tasks();
    let (mut wrong, mut unreachable, mut compared) = (Vec::new(), 0, 0);
    while stopped.elapsed() < 2 * o.poll_interval {
        let text = get_text(&client, &format!("http://{addr}/metrics")).await;
        (wrong, unreachable, compared) = compare(&truth, &text, o.retention);
        if wrong.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let log = log.lock().map(|l| l.clone()).unwrap_or_default();
    let panics = log.iter().filter(|l| l.contains("panicked")).count();
    let errors = log.iter().filter(|l| l.contains("level=error")).count();
    let stats = sim.sim.stats();
    let mut faults: Vec<_> = stats.faults_injected.iter().collect();
    faults.sort();

    out("soak_seconds", started.elapsed().as_secs());
    out("fault_rate", o.fault_rate);
    out("rss_start_mib", format!("{:.1}", rss.first().copied().unwrap_or(0.0)));
    out("rss_end_mib", format!("{:.1}", rss.last().copied().unwrap_or(0.0)));
    out("rss_max_mib", format!("{:.1}", rss.iter().copied().fold(0.0, f64::max)));
    out("cpu_seconds", format!("{:.1}", cpu_seconds(pid)));
    out("scrapes", load.scrapes.load(Ordering::Relaxed));
    out("scrape_errors", load.scrape_errors.load(Ordering::Relaxed));
    out("scrapes_over_1s", load.slow_scrapes.load(Ordering::Relaxed));
    out(
        "scrape_max_ms",
        format!("{:.1}", load.slowest_scrape_us.load(Ordering::Relaxed) as f64 / 1000.0),
    );
    out("api_requests", stats.requests.values().sum::<u64>());
    out("api_faults_injected", format!("{faults:?}"));
    let cb = sim.sim.callback_stats();
    out("tiw_callbacks_delivered", cb.delivered);
    out("tiw_callbacks_dropped", cb.dropped);
    out("hostile_callbacks", load.junk.load(Ordering::Relaxed));
    out("hostile_callbacks_taken", load.junk_taken.load(Ordering::Relaxed));
    out("tasks_total", truth.len());
    out("tasks_compared", compared);
    out("tasks_unreachable", unreachable);
    out("tasks_wrong", wrong.len());
    out("caught_up_ms", stopped.elapsed().as_millis());
    out("log_panics", panics);
    out("log_errors", errors);
    for line in log.iter().filter(|l| l.contains("level=error")).take(5) {
        println!("# log: {line}");
    }
    for w in wrong.iter().take(20) {
        println!("# wrong: {w}");
    }
    let failed = load.scrape_errors.load(Ordering::Relaxed) > 0
        || load.slow_scrapes.load(Ordering::Relaxed) > 0
        || load.junk_taken.load(Ordering::Relaxed) > 0
        || !wrong.is_empty()
        || panics > 0;
    out("verdict", if failed { "FAIL" } else { "PASS" });
    drop(exporter);
    sim.stop().await;
    std::process::exit(i32::from(failed));
}

/// The value of label `name` in one exposition line.
fn label<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let start = line.find(&format!("{name}=\""))? + name.len() + 2;
    line[start..].split('"').next()
}

/// Tasks whose series differ from the simulator's truth, and how many failed tasks nothing ever
/// named (failed before pushing while every discovery of their life was faulted: no callback
/// exists for them and no API lists them afterwards).
///
/// A task that ended about `retention` ago may already be gone from the exporter (its clock of
/// the end is its own): those within 30 s of it are not compared.
fn compare(
    truth: &[tiw_push_exporter::simulator::SimTask],
    text: &str,
    retention: Duration,
) -> (Vec<String>, usize, usize) {
    let wall = now() as i64;
    let mut status: HashMap<&str, &str> = HashMap::new();
    let mut reason: HashMap<&str, &str> = HashMap::new();
    let mut exceptions: HashMap<&str, f64> = HashMap::new();
    for line in text.lines() {
        if line.starts_with("tiw_push_task_status{") && line.ends_with(" 1") {
            if let (Some(t), Some(s)) = (label(line, "task_id"), label(line, "status")) {
                status.insert(t, s);
            }
        } else if line.starts_with("tiw_push_task_finish_reason{") {
            if let (Some(t), Some(r)) = (label(line, "task_id"), label(line, "reason")) {
                reason.insert(t, r);
            }
        } else if line.starts_with("tiw_push_task_exceptions{") {
            if let (Some(t), Some(v)) = (label(line, "task_id"), line.rsplit_once(' ')) {
                exceptions.insert(t, v.1.parse().unwrap_or(-1.0));
            }
        }
    }
    let mut wrong = Vec::new();
    let (mut unreachable, mut compared) = (0, 0);
    for t in truth {
        let id = t.task_id.as_str();
        let ended_at = match t.status {
            SimStatus::Stopped => Some(t.push_stop_time),
            SimStatus::Failed => Some(t.create_time),
            _ => None,
        };
        if ended_at.is_some_and(|e| wall - e + 30 >= retention.as_secs() as i64) {
            continue;
        }
        compared += 1;
        let (want_status, want_reason) = match t.status {
            SimStatus::Prepared => ("PREPARED", None),
            SimStatus::Pushing => ("PUSHING", None),
            SimStatus::Stopped => ("STOPPED", t.finish_reason),
            SimStatus::Failed => ("FAILED", Some("FAILED")),
        };
        if t.status == SimStatus::Failed && !status.contains_key(id) {
            unreachable += 1;
            continue;
        }
        let got = (
            status.get(id).copied(),
            reason.get(id).copied(),
            exceptions.get(id).copied(),
        );
        let exceptions_ok = t.status == SimStatus::Failed || got.2 == Some(t.exception_cnt as f64);
        if got.0 != Some(want_status) || got.1 != want_reason || !exceptions_ok {
            wrong.push(format!(
                "{id}: simulator {want_status}/{want_reason:?}/{}, exporter {got:?}",
                t.exception_cnt
            ));
        }
    }
    (wrong, unreachable, compared)
}
