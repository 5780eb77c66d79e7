//! README's quick start, run as written: every command of its `sh` blocks, in order, in a fresh
//! folder, against the simulator standing in for Tencent. What the test changes, and why, is what
//! a reader would: the SdkAppId (step 1 asks for yours), the secrets (step 2's placeholders), the
//! endpoint (no Tencent host is reachable here, so the simulator's). A command README adds is run
//! too; one that fails or prints no success fails the test, so README cannot rot. The quick start is
//! poll-only: it must leave TIW's callback settings (the product backend's) as they were.

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_tiw-push-exporter");
/// "your SdkAppId": not the example's 1400000001, so the edit of step 1 is proven.
const APP: u64 = 1400012345;
/// The product backend's callback URL and key, which the quick start must not touch.
const BACKEND: (&str, &str) = ("https://backend.example.com/tiw", "backendKey000042");

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The commands of README's "Quick start" section: each line of its `sh` blocks.
fn quick_start_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(repo("README.md")).unwrap();
    let start = readme
        .find("\n## Quick start")
        .expect("README has a Quick start section");
    let section = &readme[start + 1..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    let mut commands = Vec::new();
    let mut in_sh = false;
    for line in section.lines() {
        let line = line.trim();
        if line.starts_with("```") {
            in_sh = !in_sh && line == "```sh";
            continue;
        }
        if in_sh && !line.is_empty() && !line.starts_with('#') {
            commands.push(line.to_string());
        }
    }
    commands
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readmes_quick_start_runs_from_config_to_a_page_without_touching_tiws_callbacks() {
    if !needs(&["promtool", "amtool"]) {
        return;
    }
    let commands = quick_start_commands();
    assert!(commands.len() >= 7, "the quick start lost its commands: {commands:?}");
    let sim = start_sim(sim_config(&[APP])).await;
    sim.sim.set_callback(APP, BACKEND.0, BACKEND.1);
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(repo("config.example.yaml"), dir.path().join("config.example.yaml")).unwrap();
    for shared in ["prometheus", "deploy"] {
        std::os::unix::fs::symlink(repo(shared), dir.path().join(shared)).unwrap();
    }
    let port = free_port();
    let exporter = format!("http://127.0.0.1:{port}");
    let bin_dir = Path::new(BIN).parent().unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let shell = |command: &str| {
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg(command)
            .current_dir(dir.path())
            .env("PATH", &path)
            .env("TENCENTCLOUD_SECRET_ID", SECRET_ID)
            .env("TENCENTCLOUD_SECRET_KEY", SECRET_KEY)
            .env_remove("TIW_PUSH_CALLBACK_KEY")
            .env("TIW_WEB_LISTEN_ADDRESS", format!("127.0.0.1:{port}"))
            .env_remove("TIW_CONFIG_FILE")
            .env_remove("TIW_WEB_CONFIG_FILE");
        cmd
    };

    let mut serving: Option<KillOnDrop> = None;
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut ran = Vec::new();
    for command in &commands {
        if let Some(exports) = command.strip_prefix("export ") {
            // Step 2's placeholders: the simulator's credentials and our key are set above.
            for name in exports
                .split_whitespace()
                .filter_map(|w| w.split_once('=').map(|(k, _)| k))
            {
                assert!(
                    ["TENCENTCLOUD_SECRET_ID", "TENCENTCLOUD_SECRET_KEY"].contains(&name),
                    "README exports {name}, which this test does not provide"
                );
            }
            ran.push(command.clone());
            continue;
        }
        if let Some(background) = command.strip_suffix('&') {
            let mut child = shell(&format!("exec {}", background.trim()))
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
            let keep = log.clone();
            std::thread::spawn(move || {
                for line in lines.map_while(Result::ok) {
                    keep.lock().unwrap().push(line);
                }
            });
            serving = Some(KillOnDrop(child));
            // Step 4's promise: the credentials are confirmed in the log.
            wait_for(Duration::from_secs(20), "the credentials line", || async {
                let text = log.lock().unwrap().join("\n");
                text.lines()
                    .find(|l| l.contains("msg=\"Tencent Cloud API answers for this app: credentials accepted"))
                    .map(str::to_string)
            })
            .await;
            ran.push(command.clone());
            continue;
        }
        let line = command.replace("https://exporter.example.com", &exporter);
        let out = tokio::task::spawn_blocking({
            let mut cmd = shell(&line);
            move || cmd.output().unwrap()
        })
        .await
        .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "README's `{command}` failed:\n{said}");
        ran.push(command.clone());
        // Step 1's edit, made as a reader would: their SdkAppId, and the simulator for Tencent.
        if command == "cp config.example.yaml config.yaml" {
            let config = dir.path().join("config.yaml");
            let text = std::fs::read_to_string(&config).unwrap();
            assert!(
                text.contains("sdk_app_id: 1400000001") && text.contains("endpoint: https://tiw.tencentcloudapi.com")
            );
            let text = text
                .replacen("sdk_app_id: 1400000001", &format!("sdk_app_id: {APP}"), 1)
                .replacen(
                    "endpoint: https://tiw.tencentcloudapi.com",
                    &format!("endpoint: {}", sim.endpoint()),
                    1,
                );
            std::fs::write(&config, text).unwrap();
        }
        // What README says success looks like.
        let words = command.split_whitespace().collect::<Vec<_>>();
        match words.as_slice() {
            ["tiw-push-exporter", "check-config", ..] => {
                assert!(said.contains("config.yaml: OK (1 apps)"), "{said}");
                assert!(!said.contains("warning"), "the example, filled in, warns:\n{said}");
            }
            ["tiw-push-exporter", "callback", "set-url" | "set-key", ..] => {
                panic!("the quick start changes TIW's callback settings: {command}")
            }
            ["tiw-push-exporter", "callback", "show", ..] => {
                assert!(said.contains(&format!("Callback:    {}", BACKEND.0)), "{said}");
                assert!(!said.contains(BACKEND.1), "the key is masked:\n{said}");
            }
            _ => {}
        }
    }
    assert!(serving.is_some(), "the quick start starts the exporter");
    assert_eq!(
        sim.sim.callback(APP),
        (BACKEND.0.to_string(), BACKEND.1.to_string()),
        "the backend's URL and key are as they were"
    );

    // Poll-only: a push that starts shows, and its end shows within seconds.
    let task = sim.sim.create_task(APP, 4242);
    sim.sim.start_pushing(&task);
    let addr = format!("127.0.0.1:{port}");
    let status = |want: &'static str| {
        let (addr, task) = (addr.clone(), task.clone());
        async move {
            wait_for(Duration::from_secs(20), want, || async {
                (scrape(&addr).await.status_of(&task).as_deref() == Some(want)).then_some(())
            })
            .await
        }
    };
    status("PUSHING").await;
    let ended = std::time::Instant::now();
    sim.sim.stop(&task, "EXCEPTION");
    status("STOPPED").await;
    println!("poll-only: the end showed {:?} after it happened", ended.elapsed());
    let page = reqwest::get(format!("{exporter}/"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains(&task), "the landing page shows the task");
    let metrics = scrape(&addr).await;
    assert_eq!(metrics.get("tiw_up", &[("sdk_app_id", &APP.to_string())]), Some(1.0));
    assert_eq!(
        metrics.get("tiw_exporter_callbacks_configured", &[("sdk_app_id", &APP.to_string())]),
        Some(0.0),
        "poll-only"
    );
    let text = log.lock().unwrap().join("\n");
    for secret in [SECRET_KEY, BACKEND.1] {
        assert!(!text.contains(secret), "a secret in the log");
    }
    println!("README quick start: ran {} commands: {ran:#?}", ran.len());
    drop(serving);
    sim.stop().await;
}
