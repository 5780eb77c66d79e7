//! `bench/run --smoke` in CI, so the benchmarks never rot. It checks that every figure is there
//! and what must hold whatever the machine's speed (no refused request, nothing lost); speed
//! targets are read from the full run's ratios in BENCHMARKS.md, never asserted here.

use crate::common::needs;
use std::collections::HashMap;
use std::path::Path;

#[test]
fn bench_run_smoke_reports_every_figure() {
    if !needs(&["wrk"]) {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut cmd = crate::common::shell_command(root.join("bench/run"));
    let out = cmd.arg("--smoke").current_dir(root).output().expect("bench/run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench/run --smoke failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let figures: HashMap<&str, f64> = text
        .lines()
        .filter_map(|l| l.split_once(": "))
        .filter_map(|(k, v)| Some((k, v.trim().parse().ok()?)))
        .collect();
    for name in [
        "render_100_median_ms",
        "render_100_p99_ms",
        "render_100_bytes",
        "render_100_ratio",
        "render_1000_ratio",
        "render_1000_gzip_median_ms",
        "render_1000_gzip_ratio",
        "gzip_1000_level6_bytes",
        "ingest_events_per_second",
        "ingest_p99_ms",
        "ingest_healthy_requests_per_second",
        "ingest_ratio",
        "ingest_forward_events_per_second",
        "ingest_forward_p99_ms",
        "ingest_forward_ratio",
        "ingest_forward_delivered_per_second",
        "paths_100x100_callback_ratio",
        "paths_100x100_poll_ratio",
        "paths_100x100_list_pass_ratio",
        "paths_100x100_settle_ratio",
        "paths_100x100_10groups_poll_ratio",
        "freshness_p50_ms",
        "freshness_p99_ms",
        "footprint_ready_seconds",
        "footprint_rss_ready_mib",
        "footprint_rss_mib",
        "footprint_rss_gzip_scrapes_mib",
        "footprint_pair_scrape_cpu_ratio",
        "footprint_gzip_scrape_median_ms",
        "footprint_idle_cpu_seconds_per_minute",
        "poll_rate_ratio",
        "poll_sweep_seconds",
        "endings_100_list_p50_s",
        "endings_100_list_max_s",
        "endings_100_round_robin_p50_s",
        "endings_100_round_robin_max_s",
        "stall_glibc_alone_callback_p99_ms",
        "stall_glibc_alone_healthy_p99_ms",
        "stall_glibc_scraped_callback_p99_ms",
        "stall_glibc_scraped_healthy_p99_ms",
        "stall_glibc_scraped_push_per_second",
        "stall_glibc_callback_p99_ratio",
        "stall_glibc_rss_mib",
    ] {
        assert!(
            figures.get(name).is_some_and(|v| v.is_finite() && *v >= 0.0),
            "{name} missing or not a number:\n{text}"
        );
    }
    assert_eq!(figures["ingest_non200"], 0.0, "{text}");
    assert_eq!(figures["ingest_socket_errors"], 0.0, "{text}");
    assert_eq!(figures["ingest_all_reflected"], 1.0, "{text}");
    // Relay mode: TIW answered 200 for everything, and every one of those reached the backend.
    assert_eq!(figures["ingest_forward_non200"], 0.0, "{text}");
    assert_eq!(figures["ingest_forward_all_reflected"], 1.0, "{text}");
    assert_eq!(figures["ingest_forward_all_delivered"], 1.0, "{text}");
    assert_eq!(figures["poll_rate_limited"], 0.0, "{text}");
    // gzip is on the wire, and it compresses: a small share of the plain text.
    assert!(figures["footprint_gzip_scrape_bytes"] > 0.0, "{text}");
    assert!(
        figures["render_1000_gzip_bytes"] * 4.0 < figures["render_1000_bytes"],
        "{text}"
    );
    assert!(figures["poll_max_in_any_second"] <= 20.0, "{text}");
    // The stall workload measured something in both phases: callbacks answered, and scrapes made
    // while they were.
    for phase in ["alone", "scraped"] {
        assert!(figures[&*format!("stall_glibc_{phase}_callbacks")] > 0.0, "{text}");
    }
    assert_eq!(figures["stall_glibc_alone_scrapes"], 0.0, "{text}");
    assert!(figures["stall_glibc_scraped_scrapes"] > 0.0, "{text}");
    for mode in ["list", "round_robin"] {
        assert_eq!(figures[&*format!("endings_100_{mode}_ends")], 5.0, "{text}");
        for action in ["push", "list"] {
            assert!(
                figures[&*format!("endings_100_{mode}_{action}_max_in_any_second")] <= 20.0,
                "{text}"
            );
        }
    }
    println!("{text}");
}

/// `bench/soak` for 20 s: faults, callbacks, hostile callbacks and scrapes together, and the final
/// registry against the simulator's truth. The full run (10 minutes and more) is in BENCHMARKS.md.
#[test]
fn bench_soak_smoke_passes() {
    if !needs(&["wrk"]) {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut cmd = crate::common::shell_command(root.join("bench/soak"));
    let out = cmd
        .args([
            "--duration",
            "20s",
            "--sample",
            "5s",
            "--poll-interval",
            "2s",
            "--tasks-per-app",
            "5",
        ])
        .current_dir(root)
        .output()
        .expect("bench/soak");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench/soak failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in [
        "rss_start_mib",
        "rss_end_mib",
        "scrapes",
        "api_faults_injected",
        "tasks_total",
        "tasks_wrong",
        "log_panics",
    ] {
        assert!(text.contains(&format!("\n{name}: ")), "{name} missing:\n{text}");
    }
    assert!(text.contains("\nverdict: PASS"), "{text}");
    println!("{text}");
}
