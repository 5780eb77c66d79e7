//! The operator's first hour: the warnings where an operator errs, the log lines that confirm
//! what works, and a `--help` per command that shows only that command's flags. Log lines are
//! matched as written; no key ever appears in them.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use tiw_push_exporter::simulator::callbacks::sign_event;

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_tiw-push-exporter");
const APP: u64 = 1400000001;
const CONFIG_KEY: &str = "firstHourConfigKey0001";
const OTHER_KEY: &str = "firstHourOtherKey0002";

/// Runs the binary; (success, stdout + stderr).
async fn run(args: Vec<String>, env: Vec<(&'static str, String)>) -> (bool, String) {
    tokio::task::spawn_blocking(move || {
        let out = Command::new(BIN)
            .args(&args)
            .envs(env)
            .env_remove("TIW_CONFIG_FILE")
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    })
    .await
    .unwrap()
}

fn keyed_config(dir: &Path, endpoint: &str, key: Option<&str>) -> String {
    let yaml = config_yaml(endpoint, &[APP], "1s", "");
    let yaml = match key {
        Some(key) => yaml.replace(
            &format!("  - sdk_app_id: {APP}\n"),
            &format!("  - sdk_app_id: {APP}\n    callback_key: {key}\n"),
        ),
        None => yaml,
    };
    write_config_file(dir, &yaml).display().to_string()
}

fn args(command: &[&str], config: &str) -> Vec<String> {
    command
        .iter()
        .map(|s| s.to_string())
        .chain(["--config.file".to_string(), config.to_string()])
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callback_commands_warn_where_the_operator_errs() {
    let sim = start_sim(sim_config(&[APP])).await;
    let dir = tempfile::tempdir().unwrap();
    let config = keyed_config(dir.path(), &sim.endpoint(), Some(CONFIG_KEY));
    let other = || vec![("OTHER_KEY", OTHER_KEY.to_string())];

    // A key other than the config's: taken, and the operator told callbacks will be refused.
    let (ok, said) = run(
        args(&["callback", "set-key", "--from-env", "OTHER_KEY"], &config),
        other(),
    )
    .await;
    assert!(ok, "{said}");
    assert!(
        said.contains("warning: the key TIW signs with for app 1400000001 differs from the config's callback_key"),
        "{said}"
    );
    let (ok, said) = run(args(&["callback", "show"], &config), vec![]).await;
    assert!(
        ok && said.contains("differs from the config's callback_key"),
        "show says it too:\n{said}"
    );
    // The config's own key: no warning either way.
    let (ok, said) = run(args(&["callback", "set-key", "--replace"], &config), vec![]).await;
    assert!(ok && !said.contains("warning"), "{said}");
    let (ok, said) = run(args(&["callback", "show"], &config), vec![]).await;
    assert!(ok && !said.contains("warning"), "{said}");
    // --delete while the config has a key: TIW then sends unsigned callbacks, which are refused.
    let (ok, said) = run(args(&["callback", "set-key", "--delete", "--replace"], &config), vec![]).await;
    assert!(ok && said.contains("refuse them as `unsigned`"), "{said}");

    // http:// and a path that is not callback.path.
    let (ok, said) = run(
        args(
            &["callback", "set-url", "http://exporter.example.com/callback"],
            &config,
        ),
        vec![],
    )
    .await;
    assert!(
        ok && said.contains("warning: http:// sends every callback, its Sign included, in clear text"),
        "{said}"
    );
    let (ok, said) = run(
        args(
            &["callback", "set-url", "--replace", "https://exporter.example.com/tiw"],
            &config,
        ),
        vec![],
    )
    .await;
    assert!(
        ok && said.contains("warning: the URL's path /tiw is not the config's callback.path /callback"),
        "{said}"
    );
    let (ok, said) = run(
        args(
            &[
                "callback",
                "set-url",
                "--replace",
                "https://exporter.example.com/callback",
            ],
            &config,
        ),
        vec![],
    )
    .await;
    assert!(ok && !said.contains("warning"), "{said}");

    // No callback_key in the config at all.
    let keyless = tempfile::tempdir().unwrap();
    let keyless = keyed_config(keyless.path(), &sim.endpoint(), None);
    let (ok, said) = run(
        args(&["callback", "set-key", "--from-env", "OTHER_KEY"], &keyless),
        other(),
    )
    .await;
    assert!(
        ok && said.contains("warning: the config has no callback_key for app 1400000001"),
        "{said}"
    );
    assert!(
        !said.contains(OTHER_KEY) && !said.contains(CONFIG_KEY),
        "a key in the output:\n{said}"
    );
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_suggests_and_warns() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = "https://tiw.tencentcloudapi.com";
    // A mistyped region: a warning naming the closest, not an error.
    let yaml =
        config_yaml(endpoint, &[APP], "1s", "").replace("tencentcloud:\n", "tencentcloud:\n  region: ap-guangzhuo\n");
    let config = write_config_file(dir.path(), &yaml).display().to_string();
    let (ok, said) = run(args(&["check-config"], &config), vec![]).await;
    assert!(ok, "a warning, not an error:\n{said}");
    assert!(
        said.contains("warning: region of app 1400000001: \"ap-guangzhuo\" is not a region Tencent lists for TIW (did you mean ap-guangzhou?)"),
        "{said}"
    );
    // A mistyped key: the closest known key beside it.
    let yaml = config_yaml(endpoint, &[APP], "1s", "").replace("poll:\n", "poll:\n  discovery_intervall: 5s\n");
    let config = write_config_file(dir.path(), &yaml).display().to_string();
    let (ok, said) = run(args(&["check-config"], &config), vec![]).await;
    assert!(!ok);
    assert!(
        said.contains("poll.discovery_intervall: unknown key (did you mean `discovery_interval`?)"),
        "{said}"
    );
    // No file: where to start one.
    let (ok, said) = run(args(&["check-config"], "/nonexistent/config.yaml"), vec![]).await;
    assert!(!ok);
    assert!(
        said.contains("cannot read config file /nonexistent/config.yaml")
            && said.contains("cp config.example.yaml /nonexistent/config.yaml"),
        "{said}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_endpoint_that_speaks_http_is_explained_in_words() {
    let sim = start_sim(sim_config(&[APP])).await;
    let dir = tempfile::tempdir().unwrap();
    // The simulator speaks plain HTTP; written as https://, as an operator might.
    let endpoint = sim.endpoint().replace("http://", "https://");
    let config = keyed_config(dir.path(), &endpoint, None);
    let (ok, said) = run(
        args(&["describe", "--app", "1400000001", "sometask0001"], &config),
        vec![],
    )
    .await;
    assert!(!ok);
    assert!(
        said.contains("the endpoint answered in plain HTTP, not TLS: is it an http:// endpoint (such as a simulator) written as https://?"),
        "{said}"
    );
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_confirms_what_works_and_says_what_does_not() {
    const WRONG: u64 = 1400000002;
    let sim = start_sim(sim_config(&[APP])).await;
    let dir = tempfile::tempdir().unwrap();
    // APP answers; WRONG is not the simulator's (as with credentials of another account).
    let yaml = config_yaml(&sim.endpoint(), &[APP, WRONG], "300ms", "").replace(
        &format!("  - sdk_app_id: {APP}\n"),
        &format!("  - sdk_app_id: {APP}\n    callback_key: {CONFIG_KEY}\n"),
    );
    let config = write_config_file(dir.path(), &yaml);
    let proc = spawn_exporter(Path::new(BIN), &config, &[]);
    let line_with = |needle: &'static str| {
        let log = proc.log.clone();
        async move {
            wait_for(Duration::from_secs(15), needle, || async {
                let log = log.lock().unwrap();
                log.iter().find(|l| l.contains(needle)).cloned()
            })
            .await
        }
    };
    let ok =
        line_with("msg=\"Tencent Cloud API answers for this app: credentials accepted, running tasks listed\"").await;
    assert!(
        ok.contains("level=info")
            && ok.contains("sdk_app_id=1400000001")
            && ok.contains("region=ap-guangzhou")
            && ok.contains("running_tasks=0"),
        "{ok}"
    );
    let down = line_with("msg=\"Tencent Cloud API unusable for this app; tiw_up=0\"").await;
    assert!(
        down.contains("sdk_app_id=1400000002") && down.contains("UnauthorizedOperation.SdkAppId"),
        "{down}"
    );

    // A push starts: the first accepted callback is said once.
    let task = sim.sim.create_task(APP, 2468);
    sim.sim.start_pushing(&task);
    let started = json!({"EventType": "WhiteboardPushStarted", "SdkAppId": APP, "Timestamp": now(),
                         "EventData": {"TaskId": task, "RoomId": 2468, "PushStartTime": now()}});
    let client = reqwest::Client::new();
    let url = format!("http://{}/callback", proc.addr);
    let status = client
        .post(&url)
        .body(sign_event(started.clone(), CONFIG_KEY, now() + 300).to_string())
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    let first =
        line_with("msg=\"first callback accepted for this app: TIW reaches the exporter and the key matches\"").await;
    assert!(
        first.contains(&format!("task_id={task}")) && first.contains("level=info"),
        "{first}"
    );

    // Forged callbacks: refused at info, once a minute per app and outcome, never with the key.
    for _ in 0..5 {
        let forged = sign_event(started.clone(), OTHER_KEY, now() + 300).to_string();
        assert_eq!(client.post(&url).body(forged).send().await.unwrap().status(), 401);
    }
    let refused = line_with("msg=\"callback refused\"").await;
    assert!(
        refused.contains("level=info")
            && refused.contains("outcome=bad_signature")
            && refused.contains("sdk_app_id=1400000001"),
        "{refused}"
    );

    // The push ends with EXCEPTION: one warn line (like a FAILED one) with room and duration.
    sim.sim.stop(&task, "EXCEPTION");
    let ended = line_with("msg=\"whiteboard push task ended with EXCEPTION").await;
    assert!(
        ended.contains("level=warn")
            && ended.contains("room_id=2468")
            && ended.contains("duration_seconds=")
            && ended.contains(&format!("task_id={task}")),
        "{ended}"
    );
    let text = proc.log_text();
    let count = |needle: &str| text.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(count("msg=\"callback refused\""), 1, "rate-limited:\n{text}");
    assert_eq!(count("msg=\"first callback accepted"), 1);
    for secret in [CONFIG_KEY, OTHER_KEY, SECRET_KEY] {
        assert!(!text.contains(secret), "a key in the log");
    }
    drop(proc);
    sim.stop().await;
}

/// The options a `--help` lists, each with whether it has a description.
fn options_of(help: &str) -> Vec<(String, bool)> {
    let lines: Vec<&str> = help.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim_start();
        let Some(flag) = t.split_whitespace().find(|w| w.starts_with("--")) else {
            continue;
        };
        if !(t.starts_with("--") || t.starts_with('-')) {
            continue;
        }
        let flag = flag.trim_end_matches(',').split(['=', '<']).next().unwrap().to_string();
        // The description follows on the same line (short help) or on the next, indented further.
        let after_flag = t[t.find(flag.as_str()).unwrap() + flag.len()..].trim_start();
        let after_value = match after_flag.strip_prefix('<') {
            Some(rest) => rest.split_once('>').map_or("", |(_, r)| r),
            None => after_flag,
        };
        let same_line = !after_value.trim().is_empty();
        let next_line = lines.get(i + 1).is_some_and(|next| {
            let next_t = next.trim_start();
            next.len() - next_t.len() > line.len() - t.len() && !next_t.is_empty()
        });
        let described = same_line || next_line;
        out.push((flag, described));
    }
    out
}

fn help(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).arg("--help").output().unwrap();
    assert!(out.status.success(), "{args:?} --help");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn each_command_shows_only_its_own_flags_each_with_help() {
    let commands: [&[&str]; 11] = [
        &[],
        &["serve"],
        &["demo"],
        &["check-config"],
        &["healthcheck"],
        &["describe"],
        &["callback", "show"],
        &["callback", "set-url"],
        &["callback", "set-key"],
        &["state", "forget"],
        &["callback"],
    ];
    for command in commands {
        let text = help(command);
        for (flag, described) in options_of(&text) {
            assert!(
                described || flag == "--help" || flag == "--version",
                "{command:?}: {flag} has no help:\n{text}"
            );
        }
        let flags: Vec<String> = options_of(&text).into_iter().map(|(f, _)| f).collect();
        let serving = matches!(command, [] | ["serve"] | ["demo"]);
        for flag in ["--web.max-connections", "--log.level", "--web.telemetry-path"] {
            assert_eq!(
                flags.contains(&flag.to_string()),
                serving,
                "{command:?} and {flag}:\n{text}"
            );
        }
    }
    assert!(options_of(&help(&["callback", "set-key"]))
        .iter()
        .any(|(f, d)| f == "--app" && *d));
    // Flags before a subcommand are serve's: refused there, not silently ignored.
    let out = Command::new(BIN)
        .args(["--config.file", "x.yaml", "check-config"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

/// The subcommand words at the start of a README command line (`[serve]` counts as `serve`).
fn command_path(rest: &str) -> Vec<&str> {
    rest.split_whitespace()
        .map(|w| w.trim_start_matches('[').trim_end_matches(']'))
        .take_while(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase() || c == '-') && !w.starts_with('-'))
        .collect()
}

/// README's "Command line" lists every command the binary has, with flags each command takes.
#[test]
fn readmes_command_list_matches_the_binary() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = &readme[readme.find("## Command line").unwrap()..];
    let block = &section[section.find("```\n").unwrap() + 4..];
    let block = &block[..block.find("```").unwrap()];
    let listed: Vec<Vec<&str>> = block
        .lines()
        .filter_map(|l| l.strip_prefix("tiw-push-exporter "))
        .map(command_path)
        .collect();
    let top = help(&[]);
    let commands_section = &top[top.find("Commands:").unwrap()..top.find("Options:").unwrap()];
    for line in commands_section.lines().skip(1) {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        if name == "help" {
            continue;
        }
        assert!(
            listed.iter().any(|path| path.first() == Some(&name)),
            "README's command list lacks `{name}`:\n{block}"
        );
    }
    for line in block.lines().filter(|l| l.starts_with("tiw-push-exporter ")) {
        let rest = &line["tiw-push-exporter ".len()..];
        let words: Vec<&str> = rest.split_whitespace().collect();
        let path = command_path(rest);
        let text = help(&path);
        let flags: Vec<String> = options_of(&text).into_iter().map(|(f, _)| f).collect();
        for word in words.iter().flat_map(|w| w.split(['[', ']', '(', ')', '|'])) {
            if word.starts_with("--") && !word.ends_with(".*") {
                assert!(
                    flags.contains(&word.to_string()),
                    "README: `{line}`: {word} is not in {path:?} --help:\n{text}"
                );
            }
        }
    }
}

/// Starts `demo` with `extra` flags; (the process, its banner's lines until "Ctrl-C").
fn start_demo(extra: &[&str]) -> (KillOnDrop, Vec<String>) {
    use std::io::BufRead;
    let mut child = KillOnDrop(
        Command::new(BIN)
            .args(["demo", "--web.listen-address", "127.0.0.1:0"])
            .args(extra)
            .env_remove("TIW_CONFIG_FILE")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut lines = std::io::BufReader::new(child.0.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok);
    let mut banner = Vec::new();
    for line in lines.by_ref() {
        let last = line.starts_with("Ctrl-C");
        banner.push(line);
        if last {
            break;
        }
    }
    std::thread::spawn(move || lines.for_each(drop));
    (child, banner)
}

/// The value after `label` on a banner line.
fn banner_value(banner: &[String], label: &str) -> String {
    banner
        .iter()
        .find_map(|l| {
            l.trim()
                .strip_prefix(label)
                .map(|v| v.split_whitespace().next().unwrap_or("").to_string())
        })
        .unwrap_or_else(|| panic!("{label} in the banner:\n{}", banner.join("\n")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_prints_credentials_that_work_and_runs_your_own_config() {
    use tiw_push_exporter::demo::{DEMO_CALLBACK_KEY, DEMO_SECRET_ID, DEMO_SECRET_KEY};
    let (demo, banner) = tokio::task::spawn_blocking(|| start_demo(&[])).await.unwrap();
    let text = banner.join("\n");
    for shown in [DEMO_SECRET_ID, DEMO_SECRET_KEY, DEMO_CALLBACK_KEY] {
        assert!(text.contains(shown), "{shown} not in the banner:\n{text}");
    }
    let endpoint = banner_value(&banner, "endpoint:");
    // Pointed at the simulator with the printed credentials, the callback commands work and agree.
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "tencentcloud:\n  endpoint: {endpoint}\n  secret_id: {DEMO_SECRET_ID}\n  secret_key: {DEMO_SECRET_KEY}\napps:\n  - sdk_app_id: {APP}\n    callback_key: {DEMO_CALLBACK_KEY}\nstate:\n  path: {}\n",
        dir.path().join("state").display()
    );
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, yaml).unwrap();
    let (ok, said) = run(args(&["callback", "show"], config.to_str().unwrap()), vec![]).await;
    assert!(ok, "{said}");
    assert!(said.contains("/callback") && !said.contains("warning"), "{said}");
    drop(demo);

    // Your own config against the simulator: your app, credentials and key; your store untouched.
    let own = tempfile::tempdir().unwrap();
    let store = own.path().join("real-store");
    let own_app = 1400000077u64;
    let yaml = format!(
        "tencentcloud:\n  endpoint: https://tiw.tencentcloudapi.com\n  secret_id: AKIDmyOwnSecretId000000000000000000\n  secret_key: myOwnSecretKey00000000000000000\napps:\n  - sdk_app_id: {own_app}\n    callback_key: myOwnCallbackKey0001\npoll:\n  interval: 1s\n  discovery_interval: 1s\nstate:\n  path: {}\n",
        store.display()
    );
    let own_config = own.path().join("config.yaml");
    std::fs::write(&own_config, yaml).unwrap();
    let flag = own_config.display().to_string();
    let (demo, banner) = tokio::task::spawn_blocking(move || start_demo(&["--config.file", &flag]))
        .await
        .unwrap();
    let text = banner.join("\n");
    assert!(text.contains("your configuration's apps 1400000077"), "{text}");
    assert!(
        !text.contains("myOwnSecretKey") && !text.contains("myOwnCallbackKey"),
        "{text}"
    );
    let metrics = banner_value(&banner, "metrics:");
    let app = own_app.to_string();
    wait_for(
        Duration::from_secs(20),
        "a callback of your app, signed with your key, accepted",
        || async {
            let text = reqwest::get(&metrics).await.ok()?.text().await.ok()?;
            let m = Metrics::parse(&text);
            let accepted = m.sum(
                "tiw_exporter_callbacks_total",
                &[("sdk_app_id", &app), ("outcome", "accepted")],
            );
            (accepted >= 1.0 && m.get("tiw_up", &[("sdk_app_id", &app)]) == Some(1.0)).then_some(())
        },
    )
    .await;
    assert!(!store.exists(), "the demo never touches your state.path");
    drop(demo);
}
