//! Hostile input over real HTTP, as tables: API replies from the simulator and config files
//! through `POST /-/reload` (callback bodies have their own table in `callbacks.rs`). Each gets
//! a clear error and leaves the registry as it was. Also replays the fuzz corpus on stable.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use tiw_push_exporter::exporter::ServeOptions;
use tiw_push_exporter::registry::TaskRegistry;
use tiw_push_exporter::simulator::{Fault, SimCredential};

use crate::common::*;

const APP: u64 = 1400000001;

/// What the store would keep of the registry, without `last_update` (which only says when the
/// exporter last heard anything, refusals included).
fn visible(registry: &TaskRegistry) -> Value {
    let (tasks, stats) = registry.snapshot();
    let mut tasks = serde_json::to_value(tasks).expect("tasks serialize");
    for t in tasks.as_array_mut().expect("an array") {
        t.as_object_mut().expect("an object").remove("last_update");
    }
    json!({ "tasks": tasks, "stats": serde_json::to_value(stats).expect("stats serialize") })
}

fn raw(status: u16, body: impl Into<Vec<u8>>) -> Fault {
    Fault::Raw {
        status,
        body: body.into(),
    }
}

fn error(code: Value, message: Value) -> Fault {
    raw(
        200,
        json!({"Response": {"Error": {"Code": code, "Message": message}, "RequestId": "r-1"}}).to_string(),
    )
}

fn reply(fields: Value) -> Fault {
    let mut response = fields;
    response["RequestId"] = json!("r-2");
    raw(200, json!({ "Response": response }).to_string())
}

/// Each hostile DescribeWhiteboardPush reply, served by the simulator over HTTP, is a clear error
/// from the client, is counted under its code on `/metrics` while the exporter polls through it,
/// and changes nothing the exporter knows about the task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_api_replies_are_clear_errors_and_change_nothing() {
    // The test's own client has its own credentials, so its calls and the exporter's polls do not
    // share one 20/s budget.
    let mut config = sim_config(&[APP]);
    config.credentials.push(SimCredential {
        secret_id: "AKIDhostileTestClient000000000000".into(),
        secret_key: "hostileTestClientKey0000000000000".into(),
        session_token: None,
        ..Default::default()
    });
    let sim = start_sim(config).await;
    let task = sim.sim.create_task(APP, 7);
    sim.sim.start_pushing(&task);
    let exporter = start_exporter(&config_yaml(&sim.endpoint(), &[APP], "200ms", "")).await;
    wait_status(&exporter, &task, "PUSHING").await;
    let client = crate::faults::client_for(
        &sim.endpoint(),
        &[APP],
        APP,
        &[
            (SECRET_ID, "AKIDhostileTestClient000000000000"),
            (SECRET_KEY, "hostileTestClientKey0000000000000"),
        ],
    );
    let nested = "[".repeat(10_000) + &"]".repeat(10_000);
    let cases: Vec<(&str, Fault, &str, &str)> = vec![
        ("empty body", raw(200, ""), "body is not JSON", "transport"),
        ("a lone brace", raw(200, "{"), "body is not JSON", "transport"),
        (
            "half an envelope",
            raw(200, r#"{"Response":{"Status":"STOPP"#),
            "body is not JSON",
            "transport",
        ),
        (
            "bytes that are not UTF-8",
            raw(200, vec![0xff, 0xfe, 0x00, 0x7b]),
            "body is not JSON",
            "transport",
        ),
        (
            "10,000 nested arrays",
            raw(200, nested),
            "body is not JSON",
            "transport",
        ),
        (
            "a JSON array",
            raw(200, "[]"),
            "JSON without a Response object",
            "transport",
        ),
        (
            "an empty object",
            raw(200, "{}"),
            "JSON without a Response object",
            "transport",
        ),
        (
            "Response null",
            raw(200, r#"{"Response":null}"#),
            "JSON without a Response object",
            "transport",
        ),
        (
            "Response a string",
            raw(200, r#"{"Response":"STOPPED"}"#),
            "JSON without a Response object",
            "transport",
        ),
        (
            "Response an array",
            raw(200, r#"{"Response":[{"Status":"STOPPED"}]}"#),
            "JSON without a Response object",
            "transport",
        ),
        (
            "HTTP 502 with HTML",
            raw(502, "<html>bad gateway</html>"),
            "HTTP 502",
            "transport",
        ),
        ("HTTP 404, no body", raw(404, ""), "HTTP 404", "transport"),
        (
            "a 5 MB reply",
            raw(200, vec![b' '; 5 * 1024 * 1024]),
            "reply larger than 4194304 bytes",
            "transport",
        ),
        (
            "Status a number",
            reply(json!({"Status": 3})),
            "does not match the documented fields",
            "transport",
        ),
        (
            "ExceptionCnt a word",
            reply(json!({"Status": "STOPPED", "FinishReason": "EXCEPTION", "ExceptionCnt": "many"})),
            "does not match the documented fields",
            "transport",
        ),
        (
            "PushStopTime fractional",
            reply(json!({"Status": "STOPPED", "FinishReason": "AUTO", "PushStopTime": 1.5})),
            "does not match the documented fields",
            "transport",
        ),
        (
            "RoomId beyond i64",
            raw(
                200,
                r#"{"Response":{"Status":"STOPPED","RoomId":99999999999999999999999,"RequestId":"r"}}"#,
            ),
            "does not match the documented fields",
            "transport",
        ),
        (
            "InternalError",
            error(json!("InternalError"), json!("backend busy")),
            "InternalError: backend busy",
            "InternalError",
        ),
        // Bare app-level codes (design §2): errors that take the app down, not task answers.
        (
            "bare ResourceUnavailable",
            error(json!("ResourceUnavailable"), json!("Resource is unavailable.")),
            "ResourceUnavailable: Resource is unavailable.",
            "ResourceUnavailable",
        ),
        (
            "IpNotInWhitelist",
            error(json!("IpNotInWhitelist"), json!("Your IP is not in uin IP whitelist.")),
            "IpNotInWhitelist",
            "IpNotInWhitelist",
        ),
        (
            "an error without a code",
            error(Value::Null, json!("?")),
            "UnknownError",
            "UnknownError",
        ),
        (
            "an error code that is a number",
            error(json!(500), json!("x")),
            "UnknownError",
            "UnknownError",
        ),
        (
            "an error code with a newline",
            error(json!("Bad\nCode"), json!("x")),
            "Bad",
            "other",
        ),
        (
            "a 10 KB error code",
            error(json!("X".repeat(10_000)), json!("x")),
            "XXXX",
            "other",
        ),
        (
            "an error message of 1 MB",
            error(json!("InternalError"), json!("m".repeat(1 << 20))),
            "InternalError",
            "InternalError",
        ),
    ];
    assert!(cases.len() >= 20);
    let before = visible(&exporter.registry);
    let mut last = exporter.scrape().await;
    for (name, fault, message, code) in cases {
        sim.sim.set_task_fault(&task, Some(fault));
        let text = client
            .describe_whiteboard_push(&task)
            .await
            .map(|r| format!("accepted: {r:?}"))
            .unwrap_or_else(|e| e.to_string());
        assert!(text.contains(message), "{name}: {}", &text[..text.len().min(300)]);
        assert!(text.len() < 2_000, "{name}: an error of {} bytes", text.len());
        // The exporter meets the same reply while polling, and counts it under its code.
        let count = |m: &Metrics| {
            m.get(
                "tiw_exporter_api_requests_total",
                &[("action", "DescribeWhiteboardPush"), ("code", code)],
            )
            .unwrap_or(0.0)
        };
        let seen = count(&last);
        last = wait_for(Duration::from_secs(10), name, || async {
            let m = exporter.scrape().await;
            (count(&m) >= seen + 3.0).then_some(m)
        })
        .await;
        assert_eq!(visible(&exporter.registry), before, "{name} changed the registry");
    }
    sim.sim.set_task_fault(&task, None);
    exporter.stop().await;
    sim.stop().await;
}

/// Each hostile DescribeRunningTasks page adds no task: ids that could not be Tencent's are
/// skipped, broken pages are errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_discovery_pages_add_nothing() {
    let sim = start_sim(sim_config(&[APP])).await;
    let exporter = start_exporter(&config_yaml(&sim.endpoint(), &[APP], "200ms", "")).await;
    let page = |tasks: Value| reply(json!({"Total": 1, "Tasks": tasks}));
    let cases: Vec<(&str, Fault)> = vec![
        (
            "a task id with a newline",
            page(json!([{"TaskID": "abc\ndef", "TaskType": "WhiteboardPush"}])),
        ),
        (
            "a task id with a quote",
            page(json!([{"TaskID": "abc\"} 1\nx", "TaskType": "WhiteboardPush"}])),
        ),
        (
            "a 1,000-character task id",
            page(json!([{"TaskID": "a".repeat(1000), "TaskType": "WhiteboardPush"}])),
        ),
        (
            "a task id with spaces",
            page(json!([{"TaskID": "a b", "TaskType": "WhiteboardPush"}])),
        ),
        (
            "an empty task id",
            page(json!([{"TaskID": "", "TaskType": "WhiteboardPush"}])),
        ),
        (
            "another task type",
            page(json!([{"TaskID": "transcode0000000001", "TaskType": "TranscodeH5"}])),
        ),
        ("Tasks an object", reply(json!({"Total": 1, "Tasks": {"TaskID": "x"}}))),
        ("Total a word", reply(json!({"Total": "lots", "Tasks": []}))),
        ("a page that is not JSON", raw(200, "<xml/>")),
    ];
    let discoveries = || {
        sim.sim
            .stats()
            .requests
            .get("DescribeRunningTasks")
            .copied()
            .unwrap_or(0)
    };
    for (name, fault) in cases {
        sim.sim.set_app_fault(APP, Some(fault));
        let n0 = discoveries();
        wait_for(Duration::from_secs(10), name, || async {
            (discoveries() >= n0 + 2).then_some(())
        })
        .await;
        assert_eq!(exporter.registry.len(), 0, "{name} added a task");
    }
    let m = exporter.scrape().await;
    assert!(!m.text.contains("abc\n"), "a hostile id reached /metrics");
    exporter.stop().await;
    sim.stop().await;
}

/// Each hostile config file, offered through `POST /-/reload` over HTTP, is refused with a
/// message that names its key; the running configuration and the registry stay as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_config_files_are_refused_by_reload() {
    let sim = start_sim(sim_config(&[APP])).await;
    let task = sim.sim.create_task(APP, 7);
    sim.sim.start_pushing(&task);
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let good =
        config_yaml(&sim.endpoint(), &[APP], "1h", "") + &format!("state:\n  path: {}\n", state.path().display());
    let file = dir.path().join("config.yaml");
    std::fs::write(&file, &good).unwrap();
    let options = ServeOptions {
        config_file: Some(file.clone()),
        ..Default::default()
    };
    let exporter = start_exporter_with(
        &good.replace(&format!("state:\n  path: {}\n", state.path().display()), ""),
        state,
        options,
    )
    .await;
    wait_status(&exporter, &task, "PUSHING").await;
    let before = visible(&exporter.registry);
    let base = |extra: &str| config_yaml(&sim.endpoint(), &[APP], "1h", extra);
    // The good file with one piece replaced.
    let with = |from: &str, to: &str| base("").replace(from, to).into_bytes();
    // The good file with `extra` appended.
    let plus = |extra: &str| base(extra).into_bytes();
    let app_line = format!("sdk_app_id: {APP}");
    let apps_block = format!("apps:\n  - {app_line}\n");
    let laughs = {
        let mut s = String::from("a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
        for (x, y) in ["b", "c", "d", "e", "f", "g", "h", "i"]
            .iter()
            .zip(["a", "b", "c", "d", "e", "f", "g", "h"])
        {
            s += &format!("{x}: &{x} [*{y},*{y},*{y},*{y},*{y},*{y},*{y},*{y},*{y}]\n");
        }
        s
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("an empty file", b"".to_vec(), "apps"),
        ("not YAML", b"apps: [unclosed\n".to_vec(), "not valid YAML"),
        (
            "binary garbage",
            vec![0x00, 0xff, 0xfe, 0x01, b'\n'],
            "did not contain valid UTF-8",
        ),
        ("a YAML list at the top", b"- a\n- b\n".to_vec(), "expected"),
        ("a billion laughs", laughs.into_bytes(), "not valid YAML"),
        (
            "10,000 nested lists",
            ("x: ".to_string() + &"[".repeat(10_000) + &"]".repeat(10_000) + "\n").into_bytes(),
            "not valid YAML",
        ),
        ("apps a number", with(&apps_block, "apps: 5\n"), "apps"),
        ("no apps", with(&apps_block, "apps: []\n"), "apps"),
        (
            "sdk_app_id negative",
            with(&app_line, "sdk_app_id: -1"),
            "apps[0].sdk_app_id",
        ),
        (
            "sdk_app_id a word",
            with(&app_line, "sdk_app_id: twelve"),
            "apps[0].sdk_app_id",
        ),
        (
            "sdk_app_id 1e30",
            with(&app_line, "sdk_app_id: 1e30"),
            "apps[0].sdk_app_id",
        ),
        ("a duplicate app", with("apps:\n", &apps_block), "duplicate sdk_app_id"),
        (
            "an unset variable",
            with(SECRET_KEY, "${TIW_HOSTILE_UNSET}"),
            "TIW_HOSTILE_UNSET is not set",
        ),
        (
            "an unclosed ${",
            with(SECRET_KEY, "${TIW_HOSTILE"),
            "tencentcloud.secret_key",
        ),
        (
            "requests_per_second 21",
            with("  timeout: 1s\n", "  timeout: 1s\n  requests_per_second: 21\n"),
            "tencentcloud.requests_per_second",
        ),
        (
            "requests_per_second 0",
            with("  timeout: 1s\n", "  timeout: 1s\n  requests_per_second: 0\n"),
            "tencentcloud.requests_per_second",
        ),
        (
            "timeout forever",
            with("timeout: 1s", "timeout: forever"),
            "tencentcloud.timeout",
        ),
        (
            "endpoint ftp",
            with(&sim.endpoint(), "ftp://example.com"),
            "tencentcloud.endpoint",
        ),
        (
            "endpoint not a URL",
            with(&sim.endpoint(), "not a url"),
            "tencentcloud.endpoint",
        ),
        (
            "poll.interval zero",
            with("interval: 1h\n", "interval: 0s\n"),
            "poll.interval",
        ),
        (
            "callback.path without a slash",
            plus("callback:\n  path: callback\n"),
            "callback.path",
        ),
        (
            "callback.max_body_bytes negative",
            plus("callback:\n  max_body_bytes: -1\n"),
            "callback.max_body_bytes",
        ),
        (
            "callback.max_in_flight zero",
            plus("callback:\n  max_in_flight: 0\n"),
            "callback.max_in_flight",
        ),
        (
            "a task id with a space",
            with(
                &format!("{app_line}\n"),
                &format!("sdk_app_id: {APP}\n    tasks: [\"a b\"]\n"),
            ),
            "apps[0].tasks[0]",
        ),
        (
            "a 200-character task id",
            with(
                &format!("{app_line}\n"),
                &format!("sdk_app_id: {APP}\n    tasks: [{}]\n", "t".repeat(200)),
            ),
            "apps[0].tasks[0]",
        ),
        ("an unknown key", plus("colour: red\n"), "colour: unknown key"),
        (
            "per_task_metrics maybe",
            plus("per_task_metrics: maybe\n"),
            "per_task_metrics",
        ),
        (
            "retention a fortnight",
            plus("retention:\n  stopped_tasks: 1 fortnight\n"),
            "retention.stopped_tasks",
        ),
        (
            "state.path moved",
            plus("state:\n  path: /elsewhere\n"),
            "state.path changed: that takes a restart",
        ),
    ];
    assert!(cases.len() >= 25);
    let client = reqwest::Client::new();
    for (name, text, key) in cases {
        std::fs::write(&file, &text).unwrap();
        let res = client.post(exporter.url("/-/reload")).send().await.unwrap();
        let status = res.status().as_u16();
        let body = res.text().await.unwrap();
        assert_eq!(status, 400, "{name}: {body}");
        assert!(body.contains(key), "{name}: {key:?} not in {body}");
        assert!(body.len() < 4_000, "{name}: a reply of {} bytes", body.len());
        assert!(!body.contains(SECRET_KEY), "{name}: {body}");
        let m = exporter.scrape().await;
        assert_eq!(
            m.get("tiw_exporter_config_last_reload_successful", &[]),
            Some(0.0),
            "{name}"
        );
        assert_eq!(visible(&exporter.registry), before, "{name} changed the registry");
    }
    // The previous configuration is still in force: the good file reloads.
    std::fs::write(&file, &good).unwrap();
    let res = client.post(exporter.url("/-/reload")).send().await.unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    exporter.stop().await;
    sim.stop().await;
}

fn corpus_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    files.retain(|p| p.extension().is_none_or(|e| e != "py"));
    files.sort();
    files
}

/// Every seed and every crash the fuzzers found (`fuzz/seeds`, `fuzz/regressions`) still holds
/// the targets' invariants, run through the same code on stable.
#[test]
fn fuzz_corpus_holds_every_invariant() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    type Check = fn(&[u8]);
    let targets: [(&str, Check); 4] = [
        ("callback", tiw_push_exporter::fuzzing::callback),
        ("api_reply", tiw_push_exporter::fuzzing::api_reply),
        ("config", tiw_push_exporter::fuzzing::config),
        ("store", tiw_push_exporter::fuzzing::store),
    ];
    let mut ran = 0;
    for (target, check) in targets {
        let mut files = corpus_files(&root.join("seeds").join(target));
        assert!(!files.is_empty(), "no seeds for {target}");
        files.extend(corpus_files(&root.join("regressions").join(target)));
        for file in files {
            let data = std::fs::read(&file).unwrap();
            if let Err(e) = std::panic::catch_unwind(|| check(&data)) {
                let why = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                panic!("{target} on {}: {why}", file.display());
            }
            ran += 1;
        }
    }
    assert!(ran >= 20, "only {ran} inputs");
}
