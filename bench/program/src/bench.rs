//! `bench/run`: every benchmark workload, ending with one `name: value` line per figure.
//! Ratios are measured within one run on one machine, since absolute times on shared machines are
//! noisy. `--smoke` runs tiny sizes (CI runs it so the benchmarks never rot).

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use tiw_push_exporter::callback::compute_sign;
use tiw_push_exporter::config::Config;
use tiw_push_exporter::exporter::{Exporter, ServeOptions};
use tiw_push_exporter::metrics::ExporterMetrics;
use tiw_push_exporter::poller::PollOptions;
use tiw_push_exporter::registry::{Facts, FinishReason, Source, TaskRegistry, TaskStatus};
use tiw_push_exporter::simulator::{SimConfig, SimCredential};
use tiw_push_exporter::store::Store;
use tokio_util::sync::CancellationToken;

use crate::common;
use crate::process::*;

const SECRET_ID: &str = "AKIDbenchSecretId00000000000000000";
const SECRET_KEY: &str = "benchSecretKey000000000000000000";

struct Sizes {
    render: Vec<(usize, usize)>,
    poll_tasks: usize,
    poll_window: Duration,
    /// Short enough that polling is bound by the budget, not by the interval.
    poll_interval: &'static str,
    fresh_samples: usize,
    footprint_tasks: usize,
    idle_window: Duration,
    ingest_seconds: u64,
    stall_tasks: usize,
    stall_window: Duration,
    /// Fleet sizes of the `endings` workload, and how many tasks it ends over what window.
    endings: Vec<usize>,
    endings_count: usize,
    endings_window: Duration,
    /// Recordings of the `record_endings` workload.
    record_endings: usize,
}

fn out(name: &str, value: impl std::fmt::Display) {
    println!("{name}: {value}");
}

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s[((s.len() - 1) as f64 * p).round() as usize]
}

fn time_ms(f: &mut dyn FnMut() -> usize, reps: usize) -> (Vec<f64>, usize) {
    let mut times = Vec::with_capacity(reps);
    let mut bytes = 0;
    for _ in 0..reps {
        let t = Instant::now();
        bytes = f();
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    (times, bytes)
}

/// render: /metrics at several fleet sizes, against the GaugeVec + TextEncoder baseline.
fn render(sizes: &[(usize, usize)]) {
    for &(n, reps) in sizes {
        let fleet = common::fleet(n);
        let ours = ExporterMetrics::new(fleet.clone(), true);
        let baseline = common::Baseline::new(&fleet);
        let (mine, bytes) = time_ms(&mut || ours.render().len(), reps);
        let (base, base_bytes) = time_ms(&mut || baseline.render().len(), reps);
        out(
            &format!("render_{n}_median_ms"),
            format!("{:.3}", percentile(&mine, 0.5)),
        );
        out(&format!("render_{n}_p99_ms"), format!("{:.3}", percentile(&mine, 0.99)));
        out(&format!("render_{n}_bytes"), bytes);
        out(
            &format!("render_{n}_baseline_median_ms"),
            format!("{:.3}", percentile(&base, 0.5)),
        );
        out(
            &format!("render_{n}_baseline_p99_ms"),
            format!("{:.3}", percentile(&base, 0.99)),
        );
        out(&format!("render_{n}_baseline_bytes"), base_bytes);
        out(
            &format!("render_{n}_ratio"),
            format!("{:.3}", percentile(&mine, 0.5) / percentile(&base, 0.5)),
        );
        // How long a scrape holds the registry's lock (callbacks and polls wait that long at most):
        // only the copy of what it renders, a pointer per task.
        let holds: Vec<f64> = (0..reps.max(20))
            .map(|_| ours.render_lock_hold().as_secs_f64() * 1000.0)
            .collect();
        out(
            &format!("render_{n}_lock_hold_median_ms"),
            format!("{:.3}", percentile(&holds, 0.5)),
        );
        out(
            &format!("render_{n}_lock_hold_max_ms"),
            format!("{:.3}", holds.iter().cloned().fold(0.0, f64::max)),
        );
        // What a Prometheus scrape costs: render and gzip (the exporter's level and backend).
        let (zipped, zipped_bytes) = time_ms(&mut || ours.render_gzip().len(), reps);
        out(
            &format!("render_{n}_gzip_median_ms"),
            format!("{:.3}", percentile(&zipped, 0.5)),
        );
        out(&format!("render_{n}_gzip_bytes"), zipped_bytes);
        out(
            &format!("render_{n}_gzip_ratio"),
            format!("{:.3}", percentile(&zipped, 0.5) / percentile(&base, 0.5)),
        );
        // The choice of level: the same text at levels 1 and 6 (BENCHMARKS.md has the choice of backend).
        let text = ours.render();
        for level in [1, 6] {
            let (t, b) = time_ms(
                &mut || tiw_push_exporter::metrics::gzip(text.as_bytes(), level).len(),
                reps.div_ceil(2),
            );
            out(
                &format!("gzip_{n}_level{level}_median_ms"),
                format!("{:.3}", percentile(&t, 0.5)),
            );
            out(&format!("gzip_{n}_level{level}_bytes"), b);
        }
    }
}

fn sim_config(apps: Vec<u64>, latency: Duration) -> SimConfig {
    SimConfig {
        credentials: vec![SimCredential {
            secret_id: SECRET_ID.into(),
            secret_key: SECRET_KEY.into(),
            session_token: None,
            ..Default::default()
        }],
        apps,
        requests_per_second: 20,
        latency,
        latency_jitter: Duration::ZERO,
        ..Default::default()
    }
}

fn yaml(endpoint: &str, apps: &[u64], key: Option<&str>, poll: &str, state: &Path, discover: bool) -> String {
    let mut s =
        format!("tencentcloud:\n  endpoint: {endpoint}\n  secret_id: {SECRET_ID}\n  secret_key: {SECRET_KEY}\napps:\n");
    for app in apps {
        s.push_str(&format!("  - sdk_app_id: {app}\n    discover: {discover}\n"));
        if let Some(k) = key {
            s.push_str(&format!("    callback_key: {k}\n"));
        }
    }
    s + &format!(
        "poll:\n  interval: {poll}\n  discovery_interval: 60s\nstate:\n  path: {}\n",
        state.display()
    )
}

/// poll: N active tasks, 20/s, 200 ms replies: the achieved rate against the budget.
async fn poll(n: usize, window: Duration, interval: &str) {
    let app = 1400000001;
    let sim = start_sim(sim_config(vec![app], Duration::from_millis(200))).await;
    for i in 0..n {
        let t = sim.sim.create_task(app, i as i64);
        sim.sim.start_pushing(&t);
    }
    let dir = scratch_dir();
    let config = Config::from_yaml(
        &yaml(&sim.endpoint(), &[app], None, interval, dir.path(), true),
        &|_| None,
    )
    .unwrap();
    let exporter = Exporter::new(config, ServeOptions::default()).unwrap();
    let metrics = exporter.metrics.clone();
    let interval = humantime::parse_duration(interval).unwrap();
    let token = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let served = tokio::spawn(exporter.serve(listener, token.clone()));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let from = Instant::now();
    tokio::time::sleep(window).await;
    let to = Instant::now();
    let stats = sim.sim.stats();
    let rate = stats.admitted_between("DescribeWhiteboardPush", from, to) as f64 / (to - from).as_secs_f64();
    let expected = n as f64 / 20.0;
    // The first sweep starts before discovery has found anything; wait for one that covered the tasks.
    let deadline = Instant::now() + interval + Duration::from_secs_f64(expected * 2.0 + 10.0);
    while metrics.poll.sweep_seconds() < expected / 2.0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    out("poll_tasks", n);
    out("poll_rate_per_second", format!("{rate:.2}"));
    out("poll_rate_ratio", format!("{:.3}", rate / 20.0));
    out("poll_rate_limited", sim.sim.stats().rate_limited);
    out("poll_max_in_any_second", stats.max_per_second("DescribeWhiteboardPush"));
    out("poll_sweep_seconds", format!("{:.1}", metrics.poll.sweep_seconds()));
    out("poll_sweep_expected_seconds", format!("{expected:.1}"));
    token.cancel();
    let _ = served.await;
    sim.stop().await;
}

/// freshness: the simulator ends a task with EXCEPTION (and calls back); how long until /metrics says so.
async fn freshness(samples: usize) {
    let app = 1400000001;
    let sim = start_sim(sim_config(vec![app], Duration::from_millis(50))).await;
    let dir = scratch_dir();
    let config = Config::from_yaml(
        &yaml(&sim.endpoint(), &[app], Some("freshKey"), "15s", dir.path(), true),
        &|_| None,
    )
    .unwrap();
    let exporter = Exporter::new(config, ServeOptions::default()).unwrap();
    let token = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = tokio::spawn(exporter.serve(listener, token.clone()));
    sim.sim
        .set_callback(app, &format!("http://{addr}/callback"), "freshKey");
    let client = reqwest::Client::new();
    let mut delays = Vec::new();
    for i in 0..samples {
        let task = sim.sim.create_task(app, 1000 + i as i64);
        sim.sim.start_pushing(&task);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let t0 = Instant::now();
        sim.sim.stop(&task, "EXCEPTION");
        let needle = format!("task_id=\"{task}\"");
        loop {
            let text = get_text(&client, &format!("http://{addr}/metrics")).await;
            if text.lines().any(|l| {
                l.starts_with("tiw_push_task_finish_reason{")
                    && l.contains(&needle)
                    && l.contains("reason=\"EXCEPTION\"")
            }) {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(60), "{task} never showed");
        }
        delays.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    out("freshness_samples", samples);
    out("freshness_p50_ms", format!("{:.1}", percentile(&delays, 0.5)));
    out("freshness_p99_ms", format!("{:.1}", percentile(&delays, 0.99)));
    token.cancel();
    let _ = served.await;
    sim.stop().await;
}

/// Tencent's ceiling of concurrent push tasks per app: a fleet of N is N/100 apps.
const TASKS_PER_APP: usize = 100;

/// endings: N running tasks (100 per app, on one account), callbacks off; `ends` random tasks end
/// with EXCEPTION at the simulator, at random instants over `window`. How long from each
/// end until `/metrics` shows that task STOPPED with reason EXCEPTION: with the per-task round
/// robin alone (`follow_list` false: before the running list was read as a status signal) and
/// with it, at the default discovery interval.
async fn endings(n: usize, ends: usize, window: Duration, follow_list: bool) {
    use rand::seq::IndexedRandom;
    let label = format!("endings_{n}_{}", if follow_list { "list" } else { "round_robin" });
    let apps: Vec<u64> = (0..n.div_ceil(TASKS_PER_APP) as u64).map(|i| 1400000001 + i).collect();
    let sim = start_sim(sim_config(apps.clone(), Duration::from_millis(100))).await;
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let t = sim.sim.create_task(apps[i / TASKS_PER_APP], i as i64);
        sim.sim.start_pushing(&t);
        tasks.push(t);
    }
    let dir = scratch_dir();
    // The default discovery interval: no `discovery_interval` key.
    let yaml = yaml(&sim.endpoint(), &apps, None, "15s", dir.path(), true).replace("  discovery_interval: 60s\n", "");
    let config = Config::from_yaml(&yaml, &|_| None).unwrap();
    let options = ServeOptions {
        poll: PollOptions {
            follow_running_list: follow_list,
            ..Default::default()
        },
        ..Default::default()
    };
    let exporter = Exporter::new(config, options).unwrap();
    let registry = exporter.registry.clone();
    let token = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = tokio::spawn(exporter.serve(listener, token.clone()));
    // Every task discovered, and a moment of steady polling.
    while registry.len() < n {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut rng = rand::rng();
    let mut schedule: Vec<(Duration, String)> = tasks
        .choose_multiple(&mut rng, ends)
        .map(|t| (window.mul_f64(rand::Rng::random::<f64>(&mut rng)), t.clone()))
        .collect();
    schedule.sort();
    let cpu_before = cpu_seconds(std::process::id());
    let t0 = Instant::now();
    let ender = {
        let (sim, schedule) = (sim.sim.clone(), schedule.clone());
        tokio::spawn(async move {
            for (at, t) in schedule {
                tokio::time::sleep_until((t0 + at).into()).await;
                sim.stop(&t, "EXCEPTION");
            }
        })
    };
    let client = reqwest::Client::new();
    let mut delays: HashMap<&str, f64> = HashMap::new();
    while delays.len() < schedule.len() {
        let text = get_text(&client, &format!("http://{addr}/metrics")).await;
        let now = t0.elapsed();
        // Off the runtime the exporter and the simulator share: reading 14 MB would hold up their
        // requests, and the simulator would count a late arrival against the limit.
        let shown = tokio::task::spawn_blocking(move || ended_with_exception(&text))
            .await
            .unwrap();
        for (at, t) in &schedule {
            if *at <= now && !delays.contains_key(t.as_str()) && shown.contains(t.as_str()) {
                delays.insert(t, (now - *at).as_secs_f64());
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(1800),
            "{label}: not every end showed in 30 minutes"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let _ = ender.await;
    let t1 = Instant::now();
    let took = (t1 - t0).as_secs_f64();
    let delays: Vec<f64> = delays.values().copied().collect();
    let stats = sim.sim.stats();
    out(&format!("{label}_ends"), delays.len());
    out(&format!("{label}_p50_s"), format!("{:.1}", percentile(&delays, 0.5)));
    out(&format!("{label}_max_s"), format!("{:.1}", percentile(&delays, 1.0)));
    for (action, short) in [("DescribeWhiteboardPush", "push"), ("DescribeRunningTasks", "list")] {
        out(
            &format!("{label}_{short}_rate_limited"),
            stats.over_limit.get(action).copied().unwrap_or(0),
        );
        let rate = stats.admitted_between(action, t0, t1) as f64 / took;
        out(&format!("{label}_{short}_requests_per_second"), format!("{rate:.2}"));
        out(
            &format!("{label}_{short}_max_in_any_second"),
            stats.max_per_second(action),
        );
    }
    // The whole bench process (simulator, exporter, scraper) while waiting: what the list costs.
    out(
        &format!("{label}_cpu_percent"),
        format!("{:.0}", (cpu_seconds(std::process::id()) - cpu_before) / took * 100.0),
    );
    token.cancel();
    let _ = served.await;
    sim.stop().await;
}

/// record_endings: N real-time recordings (100 per app, one account, `record: true`), all
/// RECORDING, callbacks off; `ends` random ones end with EXCEPTION at random instants over
/// `window`, their upload done at once, so they leave the OnlineRecord running list. How long from
/// each end until `/metrics` shows that recording's finish reason EXCEPTION. DescribeOnlineRecord's
/// 20/s reads 1,000 recordings once in 50 s: only the list's hint can show an end within seconds.
async fn record_endings(n: usize, ends: usize, window: Duration) {
    use rand::seq::IndexedRandom;
    use tiw_push_exporter::simulator::recording::lifecycle;
    let label = format!("record_endings_{n}");
    let apps: Vec<u64> = (0..n.div_ceil(TASKS_PER_APP) as u64).map(|i| 1400000001 + i).collect();
    let sim = start_sim(sim_config(apps.clone(), Duration::from_millis(100))).await;
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let t = sim.sim.create_record(apps[i / TASKS_PER_APP], i as i64);
        sim.sim.update_record(&t, lifecycle::start);
        tasks.push(t);
    }
    let dir = scratch_dir();
    let yaml = yaml(&sim.endpoint(), &apps, None, "15s", dir.path(), true)
        .replace("  discovery_interval: 60s\n", "")
        .replace("    discover: true\n", "    discover: true\n    record: true\n");
    let config = Config::from_yaml(&yaml, &|_| None).unwrap();
    let exporter = Exporter::new(config, ServeOptions::default()).unwrap();
    let records = exporter.records.clone();
    let token = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = tokio::spawn(exporter.serve(listener, token.clone()));
    while records.len() < n {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut rng = rand::rng();
    let mut schedule: Vec<(Duration, String)> = tasks
        .choose_multiple(&mut rng, ends)
        .map(|t| (window.mul_f64(rand::Rng::random::<f64>(&mut rng)), t.clone()))
        .collect();
    schedule.sort();
    let t0 = Instant::now();
    let ender = {
        let (sim, schedule) = (sim.sim.clone(), schedule.clone());
        tokio::spawn(async move {
            for (at, t) in schedule {
                tokio::time::sleep_until((t0 + at).into()).await;
                sim.update_record(&t, |r| {
                    lifecycle::stop(r, "EXCEPTION");
                    lifecycle::finish(r);
                });
            }
        })
    };
    let client = reqwest::Client::new();
    let mut delays: HashMap<&str, f64> = HashMap::new();
    while delays.len() < schedule.len() {
        let text = get_text(&client, &format!("http://{addr}/metrics")).await;
        let now = t0.elapsed();
        let shown: std::collections::HashSet<String> = text
            .lines()
            .filter(|l| l.starts_with("tiw_record_task_finish_reason{") && l.contains("reason=\"EXCEPTION\"} 1"))
            .filter_map(|l| l.split("task_id=\"").nth(1)?.split('"').next().map(String::from))
            .collect();
        for (at, t) in &schedule {
            if *at <= now && !delays.contains_key(t.as_str()) && shown.contains(t.as_str()) {
                delays.insert(t, (now - *at).as_secs_f64());
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "{label}: not every end showed in 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let _ = ender.await;
    let t1 = Instant::now();
    let took = (t1 - t0).as_secs_f64();
    let delays: Vec<f64> = delays.values().copied().collect();
    let stats = sim.sim.stats();
    out(&format!("{label}_ends"), delays.len());
    out(&format!("{label}_p50_s"), format!("{:.1}", percentile(&delays, 0.5)));
    out(&format!("{label}_max_s"), format!("{:.1}", percentile(&delays, 1.0)));
    for (action, short) in [("DescribeOnlineRecord", "read"), ("DescribeRunningTasks", "list")] {
        out(
            &format!("{label}_{short}_rate_limited"),
            stats.over_limit.get(action).copied().unwrap_or(0),
        );
        let rate = stats.admitted_between(action, t0, t1) as f64 / took;
        out(&format!("{label}_{short}_requests_per_second"), format!("{rate:.2}"));
    }
    token.cancel();
    let _ = served.await;
    sim.stop().await;
}

/// Tasks an exposition shows STOPPED with reason EXCEPTION, in one pass over it.
fn ended_with_exception(text: &str) -> std::collections::HashSet<String> {
    use std::collections::HashSet;
    let mut stopped = HashSet::new();
    let mut exception = HashSet::new();
    for line in text.lines() {
        let set = if line.starts_with("tiw_push_task_status{") && line.contains("status=\"STOPPED\"} 1") {
            &mut stopped
        } else if line.starts_with("tiw_push_task_finish_reason{") && line.contains("reason=\"EXCEPTION\"} 1") {
            &mut exception
        } else {
            continue;
        };
        if let Some(id) = line.split("task_id=\"").nth(1).and_then(|s| s.split('"').next()) {
            set.insert(id);
        }
    }
    stopped.intersection(&exception).map(|id| id.to_string()).collect()
}

/// paths: what one event costs the registry as the fleet grows, in process. For each shape
/// (apps × tasks per app, apps per credential group) it times, per operation: an accepted
/// callback; a poll picked from one credential group's apps and answered; one app's
/// DescribeRunningTasks pass diffed against the registry; one app's claims settled. Tasks are
/// running, so every one of them is in the poll order. `paths_<op>_ratio` is the 10,000-task
/// shapes' cost over the 100-task one's: near 1 when the cost is what the event touches, ~100
/// if it were the fleet's.
fn paths() {
    use tiw_push_exporter::registry::{Answer, PushEvent};
    let shapes: [(&str, usize, usize); 3] = [("1x100", 1, 1), ("100x100", 100, 100), ("100x100_10groups", 100, 10)];
    let mut first: HashMap<&str, f64> = HashMap::new();
    for (name, n_apps, group_size) in shapes {
        let registry = TaskRegistry::new();
        let apps: Vec<u64> = (0..n_apps as u64).map(|i| 1_400_000_000 + i).collect();
        registry.ensure_apps(apps.iter().copied());
        let running = Facts {
            status: TaskStatus::Pushing,
            push_start_time: Some(1_700_000_000),
            ..Default::default()
        };
        for app in &apps {
            for t in 0..100 {
                let id = format!("task-{app}-{t:03}");
                registry.track(*app, &id, Some(t), Source::Discovery);
                registry.observe_poll(*app, &id, &running);
            }
        }
        let app = apps[0];
        let group: Vec<u64> = apps[..group_size].to_vec();
        let mut figures: Vec<(&str, f64)> = Vec::new();
        // Callbacks: a Started claim for each of one app's tasks (then they are duplicates).
        let t0 = Instant::now();
        for t in 0..100 {
            registry.observe_callback(app, &format!("task-{app}-{t:03}"), PushEvent::Started, &running);
        }
        figures.push(("callback", t0.elapsed().as_secs_f64() / 100.0));
        // Polls: picked from the group's apps (round robin) and answered, 2,000 of them.
        let answer = Answer::State(running.clone());
        // A sweep that has read every task begins again, as the poller's next sweep does.
        let polls = 2_000;
        let mut sweep = Instant::now();
        let t0 = Instant::now();
        let mut done = 0;
        while done < polls {
            let Some((a, id)) = registry.next_to_poll(&group, Some(sweep)) else {
                sweep = Instant::now();
                continue;
            };
            registry.answer_poll((a, &id), &answer, Duration::from_secs(60), Instant::now());
            done += 1;
        }
        figures.push(("poll", t0.elapsed().as_secs_f64() / polls as f64));
        // One app's running list pass (all 100 listed running) and one claims settling.
        let listed: HashMap<String, bool> = (0..100).map(|t| (format!("task-{app}-{t:03}"), false)).collect();
        let passes = 200;
        let t0 = Instant::now();
        for _ in 0..passes {
            registry.hint_running_list(app, &listed, Instant::now());
        }
        figures.push(("list_pass", t0.elapsed().as_secs_f64() / passes as f64));
        let now = tiw_push_exporter::registry::unix_now();
        let t0 = Instant::now();
        for _ in 0..passes {
            registry.settle_claims(app, Duration::from_secs(3600), Some(now), now);
        }
        figures.push(("settle", t0.elapsed().as_secs_f64() / passes as f64));
        for (op, secs) in figures {
            out(&format!("paths_{name}_{op}_us"), format!("{:.2}", secs * 1e6));
            match first.get(op) {
                None => {
                    first.insert(op, secs);
                }
                Some(base) => out(
                    &format!("paths_{name}_{op}_ratio"),
                    format!("{:.2}", secs / base.max(1e-12)),
                ),
            }
        }
    }
}

/// footprint: start with N ended tasks in the store: time to ready, RSS, idle CPU; for each build
/// of [`stall_binaries`] in one run (the first's figures are `footprint_*`, another's
/// `footprint_<label>_*`, e.g. the image's musl binary), each on a store of its own.
async fn footprint(n: usize, idle: Duration, smoke: bool) {
    let mut first = None;
    for (i, (label, bin)) in stall_binaries(smoke).into_iter().enumerate() {
        let prefix = if i == 0 {
            "footprint".to_string()
        } else {
            format!("footprint_{label}")
        };
        let median = footprint_of(&bin, &prefix, n, (i == 0).then_some(idle)).await;
        match first {
            None => first = Some(median),
            Some(first) => out(
                &format!("{prefix}_gzip_scrape_ratio"),
                format!("{:.2}", median / f64::max(first, 1e-9)),
            ),
        }
    }
}

/// One build's footprint figures, named `prefix_*`; the idle CPU only when `idle` is given.
/// Returns the median gzip scrape in milliseconds.
async fn footprint_of(bin: &Path, prefix: &str, n: usize, idle: Option<Duration>) -> f64 {
    let apps: Vec<u64> = (0..n.div_ceil(100) as u64).map(|i| 1_400_000_000 + i).collect();
    let sim = start_sim(sim_config(apps.clone(), Duration::ZERO)).await;
    let dir = scratch_dir();
    {
        let registry = TaskRegistry::new();
        registry.ensure_apps(apps.iter().copied());
        let fleet = common::fleet(n);
        let now = tiw_push_exporter::registry::unix_now() as i64;
        for t in fleet.snapshot().0 {
            registry.track(t.sdk_app_id, &t.task_id, t.shown().room_id(), Source::Discovery);
            let ended = Facts {
                status: TaskStatus::Stopped,
                finish_reason: Some(FinishReason::Auto),
                push_start_time: Some(now - 3600),
                push_stop_time: Some(now - 60),
                group_id: Some(t.shown().group_id().to_string()),
                push_user_id: Some(t.shown().push_user_id().to_string()),
                ..Default::default()
            };
            registry.observe_poll(t.sdk_app_id, &t.task_id, &ended);
        }
        Store::open(dir.path()).unwrap().write(&registry.take_batch()).unwrap();
    }
    let config = dir.path().join("config.yaml");
    // Retention longer than the run, so the ended tasks stay tracked.
    std::fs::write(
        &config,
        yaml(&sim.endpoint(), &apps, None, "15s", dir.path(), false) + "retention:\n  stopped_tasks: 24h\n",
    )
    .unwrap();
    let (proc, addr, started) = spawn_binary(bin, &config, &[]);
    let client = reqwest::Client::new();
    wait_ready(&client, &addr).await;
    let ready = started.elapsed();
    let pid = proc.0.id();
    let rss_ready = rss_mib(pid);
    // Scraped as Prometheus does (gzip) first, so that this RSS is what a gzip-only scraper costs;
    // then plain scrapes on top.
    let mut gzip_bytes = 0;
    for _ in 0..5 {
        gzip_bytes = get_gzip_len(&client, &format!("http://{addr}/metrics")).await;
    }
    let rss_gzip = rss_mib(pid);
    let mut bytes = 0;
    for _ in 0..5 {
        bytes = get_text(&client, &format!("http://{addr}/metrics")).await.len();
    }
    let rss = rss_mib(pid);
    // A Prometheus pair scrapes each target at about the same moment: the exporter's CPU for a
    // pair of concurrent gzip scrapes, as a multiple of one scrape's (2 if each renders its own
    // body, 1 if the second joins the first's render).
    let url = format!("http://{addr}/metrics");
    let rounds = 20;
    let c0 = cpu_seconds(pid);
    let mut took = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        get_gzip_len(&client, &url).await;
        took.push(t.elapsed());
    }
    let single = cpu_seconds(pid) - c0;
    took.sort();
    let c0 = cpu_seconds(pid);
    for _ in 0..rounds {
        tokio::join!(get_gzip_len(&client, &url), get_gzip_len(&client, &url));
    }
    let pair = cpu_seconds(pid) - c0;
    out(&format!("{prefix}_tasks"), n);
    out(
        &format!("{prefix}_ready_seconds"),
        format!("{:.3}", ready.as_secs_f64()),
    );
    out(&format!("{prefix}_rss_ready_mib"), format!("{rss_ready:.1}"));
    out(&format!("{prefix}_rss_mib"), format!("{rss:.1}"));
    out(&format!("{prefix}_scrape_bytes"), bytes);
    out(&format!("{prefix}_gzip_scrape_bytes"), gzip_bytes);
    out(&format!("{prefix}_rss_gzip_scrapes_mib"), format!("{rss_gzip:.1}"));
    // The whole gzip scrape over loopback as the binary serves it (TIW_BIN: compare builds, e.g.
    // the image's musl binary with the glibc one).
    out(
        &format!("{prefix}_gzip_scrape_median_ms"),
        format!("{:.1}", took[rounds / 2].as_secs_f64() * 1000.0),
    );
    out(
        &format!("{prefix}_pair_scrape_cpu_ratio"),
        format!("{:.2}", pair / single.max(1e-9)),
    );
    if let Some(idle) = idle {
        let cpu0 = cpu_seconds(pid);
        let t0 = Instant::now();
        tokio::time::sleep(idle).await;
        let cpu_per_minute = (cpu_seconds(pid) - cpu0) / t0.elapsed().as_secs_f64() * 60.0;
        out(
            &format!("{prefix}_idle_cpu_seconds_per_minute"),
            format!("{cpu_per_minute:.3}"),
        );
    }
    drop(proc);
    sim.stop().await;
    took[rounds / 2].as_secs_f64() * 1000.0
}

fn wrk(args: &[String]) -> String {
    let o = Command::new("wrk")
        .args(args)
        .output()
        .expect("wrk is installed (apt-get install wrk)");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn wrk_field(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(prefix))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// wrk's latency, e.g. `3.21ms`, in milliseconds.
fn wrk_latency_ms(text: &str, percentile: &str) -> f64 {
    let v = text
        .lines()
        .find_map(|l| l.trim().strip_prefix(percentile))
        .map(str::trim)
        .unwrap_or("0us");
    let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len()));
    let n: f64 = num.parse().unwrap_or(0.0);
    match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => n,
    }
}

/// ingest: signed callbacks with distinct task ids from wrk, the durable store on; against the same
/// server's /-/healthy.
async fn ingest(seconds: u64) {
    let off = ingest_run(seconds, None).await;
    // Relay mode against a local backend that answers at once: TIW's 200 waits for the queue entry
    // to be committed with the event, not for the backend.
    let backend = Backend::start().await;
    let on = ingest_run(seconds, Some(&backend)).await;
    // The same with the backend unreachable: the queue's cost alone, no delivery sharing the CPU.
    let down = Backend::unreachable();
    let queued = ingest_run(seconds, Some(&down)).await;
    out("ingest_seconds", seconds);
    out("ingest_events_per_second", format!("{:.0}", off.events_rps));
    out("ingest_p99_ms", format!("{:.2}", off.p99_ms));
    out("ingest_healthy_requests_per_second", format!("{:.0}", off.health_rps));
    out(
        "ingest_ratio",
        format!("{:.3}", off.events_rps / off.health_rps.max(1.0)),
    );
    out("ingest_events_completed", off.completed);
    out("ingest_non200", off.non200);
    out("ingest_socket_errors", off.socket_errors as u8);
    out("ingest_events_accepted", off.accepted);
    // Every event is its own task: each accepted one must be tracked, and wrk saw no more 200s than that.
    out("ingest_all_reflected", off.all_reflected as u8);
    out("ingest_forward_events_per_second", format!("{:.0}", on.events_rps));
    out("ingest_forward_p99_ms", format!("{:.2}", on.p99_ms));
    out(
        "ingest_forward_ratio",
        format!("{:.3}", on.events_rps / off.events_rps.max(1.0)),
    );
    out("ingest_forward_non200", on.non200);
    out("ingest_forward_events_completed", on.completed);
    out("ingest_forward_delivered", on.delivered);
    out("ingest_forward_all_reflected", on.all_reflected as u8);
    out(
        "ingest_forward_delivered_per_second",
        format!("{:.0}", on.delivered_rps),
    );
    out("ingest_forward_all_delivered", on.all_delivered as u8);
    out(
        "ingest_forward_down_events_per_second",
        format!("{:.0}", queued.events_rps),
    );
    out("ingest_forward_down_p99_ms", format!("{:.2}", queued.p99_ms));
    out(
        "ingest_forward_down_ratio",
        format!("{:.3}", queued.events_rps / off.events_rps.max(1.0)),
    );
    out("ingest_forward_down_non200", queued.non200);
}

/// What one ingest run measured.
#[derive(Default)]
struct Ingested {
    events_rps: f64,
    p99_ms: f64,
    health_rps: f64,
    completed: f64,
    non200: f64,
    socket_errors: bool,
    accepted: f64,
    all_reflected: bool,
    /// Relay mode: the backend's intake while the queue drains, and whether every request TIW got
    /// a 200 for reached it.
    delivered_rps: f64,
    /// Requests the backend got (a redelivery counts again).
    delivered: u64,
    all_delivered: bool,
}

/// A backend that answers 200 at once and counts what it got (relay mode's far end).
struct Backend {
    url: String,
    got: std::sync::Arc<std::sync::atomic::AtomicU64>,
    reachable: bool,
}

impl Backend {
    async fn start() -> Backend {
        use std::sync::atomic::{AtomicU64, Ordering};
        let got = std::sync::Arc::new(AtomicU64::new(0));
        let counter = got.clone();
        let router = axum::Router::new().fallback(move || {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::Relaxed);
                r#"{"error_code":0}"#
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/tiw", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Backend {
            url,
            got,
            reachable: true,
        }
    }

    /// A backend nothing answers for (a closed loopback port): every delivery fails at once and
    /// waits its backoff, so ingest pays for the queue alone.
    fn unreachable() -> Backend {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(1);
        Backend {
            url: format!("http://127.0.0.1:{port}/tiw"),
            got: Default::default(),
            reachable: false,
        }
    }

    fn count(&self) -> u64 {
        self.got.load(std::sync::atomic::Ordering::Relaxed)
    }
}

async fn ingest_run(seconds: u64, forward: Option<&Backend>) -> Ingested {
    let app = 1400000001u64;
    let sim = start_sim(sim_config(vec![app], Duration::ZERO)).await;
    let dir = scratch_dir();
    let config = dir.path().join("config.yaml");
    // Every event is a task of its own (about 700,000 in 20 s), none of which the simulator
    // knows: no bound on how many are tracked, nor on how many wait for the API to confirm them
    // (callback.max_unconfirmed_tasks), so that this measures the receiver, not the cap. Relay
    // mode: a queue large enough for the whole run.
    let mut text = yaml(
        &sim.endpoint(),
        &[app],
        Some("ingestKey"),
        "15s",
        &dir.path().join("state"),
        false,
    ) + "retention:\n  max_tasks: 10000000\ncallback:\n  max_unconfirmed_tasks: 10000000\n";
    if let Some(backend) = forward {
        text = text.replace(
            "    callback_key: ingestKey\n",
            &format!(
                "    callback_key: ingestKey\n    callback_forward_url: {}\n",
                backend.url
            ),
        ) + "  forward:\n    max_queue: 100000000\n    max_queue_bytes: 100000000000\n";
    }
    std::fs::write(&config, text).unwrap();
    // wrk's 128 senders stand for TIW's many servers, which here all share one address: no cap per
    // peer address (--web.max-connections-per-peer) for this measurement.
    let (proc, addr, _) = spawn_with(&config, &["--web.max-connections-per-peer", "0"]);
    let client = reqwest::Client::new();
    wait_ready(&client, &addr).await;
    let expire = tiw_push_exporter::registry::unix_now() as u64 + 3600;
    let sign = compute_sign("ingestKey", expire);
    let duration = format!("{seconds}s");
    // bench/ingest.lua, beside this program's package (bench/program).
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ingest.lua");
    let base = |extra: &[&str]| -> Vec<String> {
        // 128 concurrent senders for both: TIW delivers every event on its own request, and group
        // commit makes one fsync serve every event waiting for it (BENCHMARKS.md shows the scaling).
        ["-t2", "-c128", "-d", &duration, "--latency"]
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect()
    };
    let url = format!("http://{addr}");
    let delivered_before = forward.map_or(0, Backend::count);
    let events = wrk(&[
        base(&["-s", script.to_str().unwrap(), &url, "--"]),
        vec![app.to_string(), expire.to_string(), sign],
    ]
    .concat());
    let health = if forward.is_none() {
        wrk(&base(&[&format!("{url}/-/healthy")]))
    } else {
        String::new()
    };
    let completed: f64 = events
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .and_then(|(n, _)| n.trim().parse().ok())
        .unwrap_or(0.0);
    let non200 = wrk_field(&events, "ingest_script_non200:") + wrk_field(&events, "Non-2xx or 3xx responses:");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let text = get_text(&client, &format!("{url}/metrics")).await;
    let accepted = metric_sum(&text, "tiw_exporter_callbacks_total", "outcome=\"accepted\"");
    let tracked = metric_sum(&text, "tiw_push_tasks", "sdk_app_id=");
    let mut figures = Ingested {
        events_rps: wrk_field(&events, "Requests/sec:"),
        p99_ms: wrk_latency_ms(&events, "99%"),
        health_rps: wrk_field(&health, "Requests/sec:"),
        completed,
        non200,
        socket_errors: events.lines().any(|l| l.trim().starts_with("Socket errors:")),
        accepted,
        all_reflected: tracked == accepted && accepted >= completed - non200,
        ..Default::default()
    };
    if let Some(backend) = forward.filter(|b| b.reachable) {
        // The queue drains at the backend's pace, one request after the other (TIW's order).
        let acknowledged = (completed - non200).max(0.0) as u64;
        let started = Instant::now();
        let at_start = backend.count();
        let deadline = Duration::from_secs(seconds * 30 + 30);
        while backend.count() - delivered_before < acknowledged && started.elapsed() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let drained = backend.count() - at_start;
        figures.delivered_rps = drained as f64 / started.elapsed().as_secs_f64().max(0.001);
        figures.delivered = backend.count() - delivered_before;
        figures.all_delivered = figures.delivered >= acknowledged;
    }
    drop(proc);
    sim.stop().await;
    figures
}

/// The builds the `stall` workload runs, as `label=path` pairs: `TIW_STALL_BINS` (comma-separated,
/// e.g. to add an earlier revision's builds), else `TIW_BIN` as `glibc` and, when scripts/release
/// has built it (and not under `--smoke`, where CI may be building it at the same time), the
/// image's static binary as `musl`.
fn stall_binaries(smoke: bool) -> Vec<(String, std::path::PathBuf)> {
    if let Ok(list) = std::env::var("TIW_STALL_BINS") {
        return list
            .split(',')
            .filter_map(|pair| pair.split_once('='))
            .map(|(label, path)| (label.to_string(), path.into()))
            .collect();
    }
    let mut bins = vec![("glibc".to_string(), binary())];
    let musl = Path::new(".build/linux-amd64/tiw-push-exporter");
    if !smoke && musl.is_file() {
        bins.push(("musl".to_string(), musl.to_path_buf()));
    }
    bins
}

/// What one phase of the `stall` workload saw.
struct StallPhase {
    callback_ms: Vec<f64>,
    healthy_ms: Vec<f64>,
    push_per_second: f64,
    scrapes: usize,
}

/// One phase of `stall`: 4 senders post signed WhiteboardPushStarted events for running tasks
/// (`tasks[*next..]`, each once) at 50/s each, `/-/healthy` is probed every 10 ms, and `scrapers`
/// clients fetch `/metrics` with gzip back to back, for `window`.
async fn stall_phase(
    url: &str,
    sim: &tiw_push_exporter::simulator::Simulator,
    tasks: &std::sync::Arc<Vec<(u64, String)>>,
    next: &std::sync::Arc<std::sync::atomic::AtomicUsize>,
    scrapers: usize,
    window: Duration,
) -> StallPhase {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    let stop = Arc::new(AtomicBool::new(false));
    let scraped = Arc::new(AtomicUsize::new(0));
    let client = reqwest::Client::new();
    let expire = tiw_push_exporter::registry::unix_now() as u64 + 3600;
    let sign = compute_sign("stallKey", expire);
    let mut scraping = Vec::new();
    for _ in 0..scrapers {
        let (client, url, stop, scraped) = (client.clone(), format!("{url}/metrics"), stop.clone(), scraped.clone());
        scraping.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                get_gzip_len(&client, &url).await;
                scraped.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let paced = |every: Duration| {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick
    };
    let from = Instant::now();
    let mut senders = Vec::new();
    for _ in 0..4 {
        let (client, url, stop, tasks, next, sign) = (
            client.clone(),
            format!("{url}/callback"),
            stop.clone(),
            tasks.clone(),
            next.clone(),
            sign.clone(),
        );
        let mut tick = paced(Duration::from_millis(20));
        senders.push(tokio::spawn(async move {
            let mut took = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let Some((app, task)) = tasks.get(next.fetch_add(1, Ordering::Relaxed)) else {
                    break;
                };
                let now = tiw_push_exporter::registry::unix_now() as i64;
                let body = format!(
                    r#"{{"EventType":"WhiteboardPushStarted","SdkAppId":{app},"Timestamp":{now},"ExpireTime":{expire},"Sign":"{sign}","EventData":{{"TaskId":"{task}","PushUserId":"tic_push_user","PushStartTime":{}}}}}"#,
                    now - 60
                );
                let t = Instant::now();
                let res = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("POST {url}: {e}"));
                assert_eq!(res.status(), 200, "a signed callback for a running task");
                took.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            took
        }));
    }
    let probe = {
        let (client, url, stop) = (client.clone(), format!("{url}/-/healthy"), stop.clone());
        let mut tick = paced(Duration::from_millis(10));
        tokio::spawn(async move {
            let mut took = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let t = Instant::now();
                get_text(&client, &url).await;
                took.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            took
        })
    };
    tokio::time::sleep(window).await;
    stop.store(true, Ordering::Relaxed);
    let to = Instant::now();
    let mut callback_ms = Vec::new();
    for s in senders {
        callback_ms.extend(s.await.unwrap());
    }
    let healthy_ms = probe.await.unwrap();
    for s in scraping {
        s.await.unwrap();
    }
    let admitted = sim.stats().admitted_between("DescribeWhiteboardPush", from, to);
    StallPhase {
        callback_ms,
        healthy_ms,
        push_per_second: admitted as f64 / (to - from).as_secs_f64(),
        scrapes: scraped.load(Ordering::Relaxed),
    }
}

/// stall: N running tasks (100 per app, one account, polled within the 20/s budget), signed
/// callbacks from 4 senders and `/-/healthy` probes, first alone, then with two clients scraping
/// `/metrics` with gzip back to back: what scrapes cost callbacks, health checks and polling, for
/// each build `stall_binaries` names.
async fn stall(n: usize, window: Duration, smoke: bool) {
    let apps: Vec<u64> = (0..n.div_ceil(TASKS_PER_APP) as u64).map(|i| 1400000001 + i).collect();
    for (label, bin) in stall_binaries(smoke) {
        let sim = start_sim(sim_config(apps.clone(), Duration::from_millis(50))).await;
        let mut tasks = Vec::with_capacity(n);
        for i in 0..n {
            let app = apps[i / TASKS_PER_APP];
            let t = sim.sim.create_task(app, i as i64);
            sim.sim.start_pushing(&t);
            tasks.push((app, t));
        }
        let tasks = std::sync::Arc::new(tasks);
        let dir = scratch_dir();
        let config = dir.path().join("config.yaml");
        std::fs::write(
            &config,
            yaml(
                &sim.endpoint(),
                &apps,
                Some("stallKey"),
                "15s",
                &dir.path().join("state"),
                true,
            ),
        )
        .unwrap();
        // The senders stand for TIW's servers, here all on one address.
        let (proc, addr, _) = spawn_binary(&bin, &config, &["--web.max-connections-per-peer", "0"]);
        let client = reqwest::Client::new();
        wait_ready(&client, &addr).await;
        let url = format!("http://{addr}");
        // Every task discovered, read once, and a moment of steady polling.
        loop {
            let text = get_text(&client, &format!("{url}/metrics")).await;
            if metric_sum(&text, "tiw_push_tasks", "status=\"PUSHING\"") >= n as f64 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let quiet = stall_phase(&url, &sim.sim, &tasks, &next, 0, window).await;
        let busy = stall_phase(&url, &sim.sim, &tasks, &next, 2, window).await;
        let pid = proc.0.id();
        let rss = rss_mib(pid);
        for (phase, p) in [("alone", &quiet), ("scraped", &busy)] {
            let name = |what: &str| format!("stall_{label}_{phase}_{what}");
            out(&name("callbacks"), p.callback_ms.len());
            out(
                &name("callback_p99_ms"),
                format!("{:.2}", percentile(&p.callback_ms, 0.99)),
            );
            out(
                &name("healthy_p99_ms"),
                format!("{:.2}", percentile(&p.healthy_ms, 0.99)),
            );
            out(&name("push_per_second"), format!("{:.2}", p.push_per_second));
            out(&name("scrapes"), p.scrapes);
        }
        out(
            &format!("stall_{label}_callback_p99_ratio"),
            format!(
                "{:.2}",
                percentile(&busy.callback_ms, 0.99) / percentile(&quiet.callback_ms, 0.99)
            ),
        );
        out(&format!("stall_{label}_rss_mib"), format!("{rss:.1}"));
        drop(proc);
        sim.stop().await;
    }
}

/// `bench/run`: the workloads `--only` names (all by default), `--smoke` at tiny sizes.
pub async fn main() {
    let smoke = std::env::args().any(|a| a == "--smoke");
    let s = if smoke {
        Sizes {
            render: vec![(100, 21), (1_000, 11)],
            poll_tasks: 100,
            poll_window: Duration::from_secs(5),
            poll_interval: "2s",
            fresh_samples: 5,
            footprint_tasks: 1_000,
            idle_window: Duration::from_secs(3),
            ingest_seconds: 2,
            stall_tasks: 1_000,
            stall_window: Duration::from_secs(2),
            endings: vec![100],
            endings_count: 5,
            endings_window: Duration::from_secs(5),
            record_endings: 100,
        }
    } else {
        Sizes {
            render: vec![(100, 201), (1_000, 101), (10_000, 31)],
            poll_tasks: 1_000,
            poll_window: Duration::from_secs(30),
            poll_interval: "15s",
            fresh_samples: 50,
            footprint_tasks: 10_000,
            idle_window: Duration::from_secs(60),
            ingest_seconds: 20,
            stall_tasks: 10_000,
            stall_window: Duration::from_secs(20),
            endings: vec![1_000, 10_000],
            endings_count: 20,
            endings_window: Duration::from_secs(20),
            record_endings: 1_000,
        }
    };
    // --only NAME[,NAME]: run just those workloads (render, ingest, freshness, footprint, poll, endings,
    // record_endings, stall).
    let args: Vec<String> = std::env::args().collect();
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let run = |name: &str| only.as_deref().is_none_or(|o| o.split(',').any(|x| x == name));
    out("mode", if smoke { "smoke" } else { "full" });
    out(
        "cores",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
    );
    if run("render") {
        render(&s.render);
    }
    if run("paths") {
        paths();
    }
    if run("ingest") {
        ingest(s.ingest_seconds).await;
    }
    if run("freshness") {
        freshness(s.fresh_samples).await;
    }
    if run("footprint") {
        footprint(s.footprint_tasks, s.idle_window, smoke).await;
    }
    if run("stall") {
        stall(s.stall_tasks, s.stall_window, smoke).await;
    }
    if run("poll") {
        poll(s.poll_tasks, s.poll_window, s.poll_interval).await;
    }
    // --endings N[,N]: the fleet sizes of the endings workload.
    let endings_sizes: Vec<usize> = args
        .iter()
        .position(|a| a == "--endings")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.split(',').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or(s.endings.clone());
    if run("endings") {
        for &n in &endings_sizes {
            endings(n, s.endings_count, s.endings_window, true).await;
            endings(n, s.endings_count, s.endings_window, false).await;
        }
    }
    if run("record_endings") {
        record_endings(s.record_endings, s.endings_count, s.endings_window).await;
    }
}
