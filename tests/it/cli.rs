//! The binary: check-config, describe and demo, as a user runs them.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_tiw-push-exporter");

fn write_config(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
    f
}

#[test]
fn check_config_lists_every_problem_with_its_key_path() {
    let f = write_config(
        "tencentcloud:\n  secret_id: ${TIW_TEST_UNSET_VAR}\n  requests_per_second: 25\napps:\n  - sdk_app_id: 1\n    colour: red\n  - sdk_app_id: 1\npoll:\n  interval: 10 fortnights\n",
    );
    let out = Command::new(BIN)
        .args(["check-config", "--config.file"])
        .arg(f.path())
        .env_remove("TENCENTCLOUD_SECRET_KEY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "tencentcloud.secret_id: environment variable TIW_TEST_UNSET_VAR is not set",
        "tencentcloud.secret_key: missing",
        "tencentcloud.requests_per_second: must be between 1 and 20",
        "apps[0].colour: unknown key",
        "apps[1].sdk_app_id: duplicate sdk_app_id 1",
        "poll.interval: expected a duration",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    let ok = Command::new(BIN)
        .args([
            "check-config",
            "--config.file",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.yaml"),
        ])
        .env("TENCENTCLOUD_SECRET_ID", "AKIDx")
        .env("TENCENTCLOUD_SECRET_KEY", "k")
        .output()
        .unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let missing = Command::new(BIN)
        .args(["check-config", "--config.file", "/nonexistent/tiw.yaml"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read config file /nonexistent/tiw.yaml"));
}

/// `describe --app 1400000001 TASK` against the config at `path`, off the async workers.
async fn describe(path: &std::path::Path, task: &str) -> std::process::Output {
    let (path, task) = (path.to_owned(), task.to_string());
    tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(["describe", "--app", "1400000001", &task, "--config.file"])
            .arg(&path)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_prints_one_task_as_json() {
    let app = 1400000001;
    let sim = start_sim(sim_config(&[app])).await;
    let task = sim.sim.create_task(app, 880528);
    sim.sim.start_pushing(&task);
    let f = write_config(&config_yaml(&sim.endpoint(), &[app], "1s", ""));
    let out = describe(f.path(), &task).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["TaskId"], task.as_str());
    assert_eq!(json["Status"], "PUSHING");
    assert_eq!(json["RoomId"], 880528);
    let out = describe(f.path(), "nosuchtask").await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("InvalidParameter.TaskNotFound"));
    // A FAILED task is a task, not an error of describe: JSON with Tencent's error, exit 0.
    let failed = sim.sim.create_task(app, 880529);
    sim.sim.fail(
        &failed,
        "code: 40006, msg: 2021-01-13 22:34:42, TRTC onError, code: -70003, msg: The UserSig in use is illegal.",
    );
    let out = describe(f.path(), &failed).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["TaskId"], failed.as_str());
    assert_eq!(json["Status"], "FAILED");
    assert_eq!(json["Error"]["Code"], "FailedOperation.WhiteboardPush");
    assert_eq!(json["Error"]["TrtcCode"], -70003);
    assert!(json["Error"]["Message"]
        .as_str()
        .unwrap()
        .contains("UserSig in use is illegal"));
    sim.stop().await;
}

/// Warnings are printed even when the file has errors, with their key paths.
#[test]
fn check_config_prints_warnings_beside_errors() {
    let f = write_config(
        "tencentcloud:
  secret_id: a
  secret_key: b
  region: ap-guangzhuo
apps:
  - sdk_app_id: 1
    allow_unsigned_callbacks: true
poll:
  interval: soon
",
    );
    let out = Command::new(BIN)
        .args(["check-config", "--config.file"])
        .arg(f.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "poll.interval: expected a duration",
        "warning: apps[0].allow_unsigned_callbacks",
        "warning: region of app 1: \"ap-guangzhuo\"",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
}

/// The demo handles SIGHUP like serve (it does not die of it), and a reload it cannot do (it was
/// started without a file) is refused as such, never counted as a failed reload; with
/// `--config.file` it reloads the user's file against its simulator.
#[test]
fn the_demo_reloads_on_sighup_and_post() {
    let start = |extra: &[&str]| {
        let mut child = KillOnDrop(
            Command::new(BIN)
                .args(["demo", "--web.listen-address", "127.0.0.1:0"])
                .args(extra)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let mut lines = BufReader::new(child.0.stdout.take().unwrap())
            .lines()
            .map_while(Result::ok);
        let url = lines
            .find_map(|l| l.trim().strip_prefix("metrics:").map(|u| u.trim().to_string()))
            .expect("demo prints its metrics URL");
        std::thread::spawn(move || lines.for_each(drop));
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (stderr, kept) = (child.0.stderr.take().unwrap(), log.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                kept.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        (child, url, log)
    };
    let client = reqwest::blocking::Client::new();
    let reload_gauge = |url: &str| {
        let text = client.get(url).send().and_then(|r| r.text()).unwrap_or_default();
        Metrics::parse(&text).get("tiw_exporter_config_last_reload_successful", &[])
    };
    // The demo's own config: SIGHUP and POST /-/reload say there is nothing to reload.
    let (mut demo, url, log) = start(&[]);
    let pid = demo.0.id().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !log.lock().unwrap().contains("nothing to reload") {
        assert!(
            Instant::now() < deadline,
            "no log line for SIGHUP:\n{}",
            log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(demo.0.try_wait().unwrap().is_none(), "the demo died of SIGHUP");
    let reload = client.post(url.replace("/metrics", "/-/reload")).send().unwrap();
    assert_eq!(reload.status(), 400);
    assert!(reload.text().unwrap().contains("nothing to reload"));
    assert_eq!(reload_gauge(&url), Some(1.0), "not counted as a failed reload");
    drop(demo);

    // The user's config: reloaded against the simulator (its endpoint is not the file's).
    let f = write_config(
        "tencentcloud:
  endpoint: https://tiw.tencentcloudapi.com
  secret_id: AKIDmine
  secret_key: mine
apps:
  - sdk_app_id: 1400000009
    callback_key: k
",
    );
    let path = f.path().to_str().unwrap().to_string();
    let (mut demo, url, _log) = start(&["--config.file", &path]);
    let reload = client.post(url.replace("/metrics", "/-/reload")).send().unwrap();
    let status = reload.status();
    assert_eq!(status, 200, "{}", reload.text().unwrap_or_default());
    assert_eq!(reload_gauge(&url), Some(1.0));
    assert!(Command::new("kill")
        .args(["-HUP", &demo.0.id().to_string()])
        .status()
        .unwrap()
        .success());
    std::thread::sleep(Duration::from_millis(500));
    assert!(demo.0.try_wait().unwrap().is_none(), "the demo died of SIGHUP");
    // The reloaded config still polls the simulator (the file's endpoint is Tencent's, which this
    // machine cannot reach): its app stays up.
    std::thread::sleep(Duration::from_secs(2));
    let text = client.get(&url).send().and_then(|r| r.text()).unwrap_or_default();
    assert_eq!(
        Metrics::parse(&text).get("tiw_up", &[("sdk_app_id", "1400000009")]),
        Some(1.0),
        "{text}"
    );
}

#[test]
fn demo_shows_pushing_and_stopped_tasks_within_ten_seconds() {
    let started = Instant::now();
    let mut child = KillOnDrop(
        Command::new(BIN)
            .args(["demo", "--web.listen-address", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(child.0.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok);
    let url = lines
        .find_map(|l| l.trim().strip_prefix("metrics:").map(|u| u.trim().to_string()))
        .expect("demo prints its metrics URL");
    // Keep reading, so the demo never writes into a closed pipe.
    std::thread::spawn(move || lines.for_each(drop));
    let client = reqwest::blocking::Client::new();
    loop {
        let text = client.get(&url).send().and_then(|r| r.text()).unwrap_or_default();
        let m = Metrics::parse(&text);
        let pushing = m.sum("tiw_push_tasks", &[("status", "PUSHING")]);
        let stopped = m.sum("tiw_push_tasks", &[("status", "STOPPED")]);
        // The census: recordings at work, and the transcode stuck in the demo's queue.
        let recordings = m.sum("tiw_running_tasks", &[("task_type", "OnlineRecord")]);
        let queued = m.sum(
            "tiw_running_tasks",
            &[("task_type", "TranscodeH5"), ("status", "QUEUED")],
        );
        // Recording tasks one by one, beside push tasks, in several states.
        let record_states = ["PREPARED", "RECORDING", "PAUSED", "STOPPED", "FINISHED", "FAILED"]
            .iter()
            .filter(|s| m.sum("tiw_record_tasks", &[("status", s)]) >= 1.0)
            .count();
        if pushing >= 1.0 && stopped >= 1.0 && recordings >= 1.0 && queued >= 1.0 && record_states >= 3 {
            assert!(m.sum("tiw_push_task_finish_reason", &[("reason", "EXCEPTION")]) >= 1.0 || stopped >= 1.0);
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "demo showed no PUSHING and STOPPED tasks, recordings in 3 states and a queued transcode within 15 s:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs the binary with `args` and `stdin`, off the async workers.
async fn run_bin(args: Vec<String>, stdin: &str) -> std::process::Output {
    let stdin = stdin.to_string();
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(BIN)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), stdin.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

/// What a command printed, standard output then standard error.
fn said(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A config file for `app` with `key` as its callback_key, and the arguments of a command run on it.
fn keyed_command(endpoint: &str, app: u64, key: &str) -> (tempfile::NamedTempFile, impl Fn(&[&str]) -> Vec<String>) {
    let f = write_config(&config_yaml(endpoint, &[app], "1s", "").replace(
        &format!("  - sdk_app_id: {app}\n"),
        &format!("  - sdk_app_id: {app}\n    callback_key: {key}\n"),
    ));
    let cfg = f.path().to_string_lossy().to_string();
    let args = move |a: &[&str]| {
        a.iter()
            .map(|s| s.to_string())
            .chain(["--config.file".to_string(), cfg.clone()])
            .collect::<Vec<_>>()
    };
    (f, args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callback_commands_register_url_and_key_without_showing_the_key() {
    let app = 1400000001;
    let sim = start_sim(sim_config(&[app])).await;
    let (_f, args) = keyed_command(&sim.endpoint(), app, "keyFromConfig0001");

    let out = run_bin(
        args(&["callback", "set-url", "https://exporter.example.com/callback"]),
        "",
    )
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("RequestId"));
    assert_eq!(sim.sim.callback(app).0, "https://exporter.example.com/callback");

    let out = run_bin(args(&["callback", "set-key"]), "").await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(sim.sim.callback(app).1, "keyFromConfig0001", "from the config");

    let out = run_bin(
        args(&["callback", "set-key", "--stdin", "--replace"]),
        "keyFromStdin0002\n",
    )
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(sim.sim.callback(app).1, "keyFromStdin0002", "from stdin");

    let out = run_bin(args(&["callback", "show"]), "").await;
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        shown.contains("https://exporter.example.com/callback") && shown.contains("ke****02"),
        "{shown}"
    );
    assert!(!shown.contains("keyFromStdin0002"), "the key is masked: {shown}");

    // The key is never an argument.
    let out = run_bin(args(&["callback", "set-key", "keyOnTheCommandLine"]), "").await;
    assert!(!out.status.success());
    assert_eq!(sim.sim.callback(app).1, "keyFromStdin0002");

    let out = run_bin(args(&["callback", "set-url", "ftp://nope"]), "").await;
    assert!(!out.status.success());

    // --delete sends the empty URL, which Tencent documents as delete.
    let out = run_bin(args(&["callback", "set-url", "--delete", "--replace"]), "").await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(sim.sim.callback(app).0, "", "the URL is deleted");
    let out = run_bin(args(&["callback", "set-url"]), "").await;
    assert!(!out.status.success(), "neither a URL nor --delete");
    let out = run_bin(
        args(&[
            "callback",
            "set-url",
            "--delete",
            "https://exporter.example.com/callback",
        ]),
        "",
    )
    .await;
    assert!(!out.status.success(), "a URL and --delete");
    assert_eq!(sim.sim.callback(app).0, "");
    sim.stop().await;
}

/// TIW keeps one callback URL and one key per app, most likely the product backend's: `set-url`,
/// `set-key` and their `--delete` read what is set and change nothing else without `--replace`,
/// saying what is set (the key masked) and what would change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_url_and_set_key_refuse_to_replace_existing_values_without_replace() {
    let app = 1400000001;
    let sim = start_sim(sim_config(&[app])).await;
    let backend = ("https://backend.example.com/tiw/push", "backendKey000042");
    sim.sim.set_callback(app, backend.0, backend.1);
    let (_f, args) = keyed_command(&sim.endpoint(), app, "exporterKey00077");
    let untouched = |sim: &tiw_push_exporter::simulator::Simulator| {
        assert_eq!(sim.callback(app), (backend.0.to_string(), backend.1.to_string()));
    };

    let out = run_bin(
        args(&["callback", "set-url", "https://exporter.example.com/callback"]),
        "",
    )
    .await;
    let text = said(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("already has a callback URL")
            && text.contains("set now:      https://backend.example.com/tiw/push")
            && text.contains("would become: https://exporter.example.com/callback")
            && text.contains("--replace"),
        "{text}"
    );
    untouched(&sim.sim);

    let out = run_bin(args(&["callback", "set-url", "--delete"]), "").await;
    let text = said(&out);
    assert!(!out.status.success() && text.contains("would become: (none)"), "{text}");
    assert!(text.contains("--delete --replace"), "{text}");
    untouched(&sim.sim);

    for key_args in [&["callback", "set-key"][..], &["callback", "set-key", "--delete"]] {
        let out = run_bin(args(key_args), "").await;
        let text = said(&out);
        assert!(!out.status.success(), "{key_args:?}: {text}");
        assert!(
            text.contains("already has a callback key") && text.contains("set now:      ba****42"),
            "{text}"
        );
        assert!(
            !text.contains(backend.1) && !text.contains("exporterKey00077"),
            "a key in the output: {text}"
        );
        untouched(&sim.sim);
    }
    let out = run_bin(args(&["callback", "set-key", "--stdin"]), "anotherKey000099\n").await;
    assert!(!out.status.success() && said(&out).contains("would become: an****99"));
    untouched(&sim.sim);

    // The same value again is no change, and no call.
    let out = run_bin(args(&["callback", "set-url", backend.0]), "").await;
    assert!(
        out.status.success() && said(&out).contains("nothing to change"),
        "{}",
        said(&out)
    );
    untouched(&sim.sim);

    // --replace does it, and says what it replaced.
    let out = run_bin(
        args(&[
            "callback",
            "set-url",
            "--replace",
            "https://exporter.example.com/callback",
        ]),
        "",
    )
    .await;
    let text = said(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("https://backend.example.com/tiw/push -> https://exporter.example.com/callback"),
        "{text}"
    );
    assert_eq!(sim.sim.callback(app).0, "https://exporter.example.com/callback");
    let out = run_bin(args(&["callback", "set-key", "--replace"]), "").await;
    let text = said(&out);
    assert!(out.status.success() && text.contains("ba****42 -> ex****77"), "{text}");
    assert_eq!(sim.sim.callback(app).1, "exporterKey00077");

    // Nothing set: no --replace needed.
    sim.sim.set_callback(app, "", "");
    let out = run_bin(args(&["callback", "set-key"]), "").await;
    assert!(out.status.success(), "{}", said(&out));
    assert_eq!(sim.sim.callback(app).1, "exporterKey00077");
    sim.stop().await;
}

/// `--feature record` reads and changes the real-time recording feature's own URL and key, under
/// the same never-overwrite rule, and leaves the push feature's alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_record_feature_has_its_own_url_and_key() {
    let app = 1400000001;
    let sim = start_sim(sim_config(&[app])).await;
    let push = ("https://backend.example.com/tiw/push", "pushKey00000042");
    let record = ("https://backend.example.com/tiw/record", "recordKey000042");
    sim.sim.set_callback(app, push.0, push.1);
    sim.sim.set_record_callback(app, record.0, record.1);
    let (_f, args) = keyed_command(&sim.endpoint(), app, "exporterKey00077");
    let push_untouched = |sim: &tiw_push_exporter::simulator::Simulator| {
        assert_eq!(sim.callback(app), (push.0.to_string(), push.1.to_string()));
    };

    let out = run_bin(args(&["callback", "show", "--feature", "record"]), "").await;
    let text = said(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(record.0) && text.contains("re****42") && text.contains("Feature:     record"),
        "{text}"
    );
    assert!(!text.contains(record.1) && !text.contains(push.0), "{text}");

    // Another URL is set: refused without --replace, named as the recording one.
    let new_url = "https://exporter.example.com/record";
    let out = run_bin(args(&["callback", "set-url", "--feature", "record", new_url]), "").await;
    let text = said(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("already has a recording callback URL") && text.contains("--replace"),
        "{text}"
    );
    assert_eq!(sim.sim.record_callback(app).0, record.0);
    let out = run_bin(
        args(&["callback", "set-url", "--feature", "record", "--replace", new_url]),
        "",
    )
    .await;
    assert!(out.status.success(), "{}", said(&out));
    assert!(said(&out).contains("SetOnlineRecordCallback: OK"), "{}", said(&out));
    assert_eq!(sim.sim.record_callback(app).0, new_url);
    push_untouched(&sim.sim);

    // The config's callback_key is the push feature's: a recording key comes from elsewhere.
    let out = run_bin(args(&["callback", "set-key", "--feature", "record", "--replace"]), "").await;
    assert!(
        !out.status.success() && said(&out).contains("--from-env or --stdin"),
        "{}",
        said(&out)
    );
    let out = run_bin(
        args(&["callback", "set-key", "--feature", "record", "--stdin", "--replace"]),
        "newRecordKey0007\n",
    )
    .await;
    assert!(out.status.success(), "{}", said(&out));
    assert_eq!(sim.sim.record_callback(app).1, "newRecordKey0007");
    push_untouched(&sim.sim);
    // And the push feature is still the default.
    let out = run_bin(args(&["callback", "show"]), "").await;
    assert!(
        said(&out).contains(push.0) && said(&out).contains("Feature:     push"),
        "{}",
        said(&out)
    );
    sim.stop().await;
}

/// check-config warns about an app that relays callbacks it cannot verify, and one that takes unsigned events; poll-only is no mistake.
#[test]
fn check_config_warns_about_callback_trust() {
    let f = write_config(
        "tencentcloud: {secret_id: a, secret_key: b}\napps:\n  - sdk_app_id: 1\n    callback_forward_url: http://backend.internal/tiw\n  - sdk_app_id: 2\n    allow_unsigned_callbacks: true\n  - sdk_app_id: 3\n    callback_key: k3\n  - sdk_app_id: 4\n",
    );
    let out = Command::new(BIN)
        .args(["check-config", "--config.file"])
        .arg(f.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "warnings do not fail the check");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning: apps[0].callback_key: not set, so app 1 relays TIW's callbacks to its backend but refuses them itself"),
        "{err}"
    );
    assert!(
        err.contains("warning: apps[1].allow_unsigned_callbacks: app 2 accepts unsigned push callbacks"),
        "{err}"
    );
    assert!(!err.contains("apps[2]"), "{err}");
    assert!(
        !err.contains("apps[3]"),
        "poll-only (no key, no relay) is a mode, not a mistake: {err}"
    );
}

/// Bad values for the server-limit flags and the demo's fault rate stop the binary with exit 2
/// and a message naming the flag, before anything starts.
#[test]
fn bad_limit_flags_name_the_flag() {
    for (args, flag) in [
        (
            vec!["serve", "--web.read-header-timeout", "0s"],
            "--web.read-header-timeout",
        ),
        (vec!["--web.read-timeout", "soon"], "--web.read-timeout"),
        (vec!["--web.max-connections", "0"], "--web.max-connections"),
        (vec!["serve", "--web.max-requests", "lots"], "--web.max-requests"),
        (vec!["demo", "--simulator.fault-rate", "1.5"], "--simulator.fault-rate"),
        // Paths axum's router would panic on, or that another endpoint uses.
        (vec!["demo", "--web.telemetry-path", "/"], "--web.telemetry-path"),
        (
            vec!["demo", "--web.telemetry-path", "/-/healthy"],
            "--web.telemetry-path",
        ),
        (
            vec!["demo", "--web.telemetry-path", "/-/reload"],
            "--web.telemetry-path",
        ),
        (vec!["demo", "--web.telemetry-path", "/:id"], "--web.telemetry-path"),
        (vec!["demo", "--web.telemetry-path", "/m/*rest"], "--web.telemetry-path"),
        (vec!["demo", "--web.telemetry-path", "/{x}"], "--web.telemetry-path"),
        (vec!["demo", "--web.telemetry-path", "metrics"], "--web.telemetry-path"),
    ] {
        let out = Command::new(BIN).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(flag), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}
