//! SecretKey, session token and callback key never reach stdout, stderr, /metrics or an error,
//! at trace log level, through auth failures, bad signatures and config errors.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;
use tiw_push_exporter::simulator::callbacks::sign_event;

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_tiw-push-exporter");
const KEY: &str = "SECRETKEY-recognisable-7f3a9c";
const TOKEN: &str = "SESSIONTOKEN-recognisable-51d2e8";
const CB_KEY: &str = "CALLBACKKEY-recognisable-c04b17";
const SECRETS: [&str; 3] = [KEY, TOKEN, CB_KEY];

fn assert_clean(what: &str, text: &str) {
    for s in SECRETS {
        assert!(!text.contains(s), "{what} contains a secret ({s}):\n{text}");
    }
}

fn config(endpoint: &str, state: &Path) -> String {
    format!(
        "tencentcloud:\n  endpoint: {endpoint}\n  secret_id: {SECRET_ID}\n  secret_key: {KEY}\n  session_token: {TOKEN}\n  timeout: 1s\n\
         apps:\n  - sdk_app_id: 1400000001\n    callback_key: {CB_KEY}\n    tasks: [sometask0000000000001]\n\
         poll:\n  interval: 200ms\n  discovery_interval: 200ms\nstate:\n  path: {}\n",
        state.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_leave_the_process() {
    // The simulator knows the SecretId but a different key: every call is an AuthFailure.
    let mut sim_cfg = sim_config(&[1400000001]);
    sim_cfg.credentials[0].secret_key = "the-server-side-key".into();
    let sim = start_sim(sim_cfg).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, config(&sim.endpoint(), &dir.path().join("state"))).unwrap();
    let mut child = Command::new(BIN)
        .arg("--config.file")
        .arg(&path)
        .args(["--web.listen-address", "127.0.0.1:0", "--log.level", "trace"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let (tx, rx) = std::sync::mpsc::channel();
    let err_reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut all = String::new();
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(a) = line.split_whitespace().find_map(|w| w.strip_prefix("address=")) {
                let _ = tx.send(a.to_string());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let addr = rx.recv_timeout(Duration::from_secs(30)).expect("the exporter listens");
    // Auth failures on every poll and discovery.
    wait_for(Duration::from_secs(10), "tiw_up=0 from AuthFailure", || async {
        let m = scrape(&addr).await;
        (m.get("tiw_up", &[("sdk_app_id", "1400000001")]) == Some(0.0)).then_some(())
    })
    .await;
    // Callbacks: a bad signature, an unsigned one, an expired one.
    let event = json!({"EventType": "WhiteboardPushStopped", "SdkAppId": 1400000001, "Timestamp": 1,
                       "EventData": {"TaskId": "x", "FinishReason": "AUTO"}});
    let client = reqwest::Client::new();
    for body in [
        sign_event(event.clone(), "wrong-key", 4_000_000_000),
        event.clone(),
        sign_event(event, CB_KEY, 1),
    ] {
        let r = client
            .post(format!("http://{addr}/callback"))
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        assert_clean("a callback reply", &r.text().await.unwrap());
    }
    let metrics = scrape(&addr).await.text;
    assert!(metrics.contains("tiw_exporter_callbacks_total"));
    assert_clean("/metrics", &metrics);
    let landing = client
        .get(format!("http://{addr}/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_clean("the landing page", &landing);
    // A reload with a broken config, then stop.
    std::fs::write(
        &path,
        config(&sim.endpoint(), &dir.path().join("state")).replace("interval: 200ms", "interval: 200 furlongs"),
    )
    .unwrap();
    let r = client.post(format!("http://{addr}/-/reload")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_clean("the reload reply", &r.text().await.unwrap());
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let _ = child.wait();
    let (out, err) = (out_reader.join().unwrap(), err_reader.join().unwrap());
    assert!(
        err.contains("AuthFailure.SignatureFailure"),
        "the auth failure is logged:\n{err}"
    );
    assert!(
        err.contains("msg=\"callback refused\"") && err.contains("outcome=bad_signature"),
        "refusals are logged with their reason:\n{err}"
    );
    assert_clean("stdout", &out);
    assert_clean("stderr at trace level", &err);

    // The command line: config errors, describe's auth failure, callback show.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        config(&sim.endpoint(), dir.path()).replace(
            "timeout: 1s",
            "timeout: 1s\n  requests_per_second: 99\n  region: ${UNSET_VARIABLE_X}",
        ),
    )
    .unwrap();
    for args in [
        vec!["check-config", "--config.file", bad.to_str().unwrap()],
        vec![
            "--log.level",
            "trace",
            "describe",
            "--app",
            "1400000001",
            "sometask",
            "--config.file",
            path.to_str().unwrap(),
        ],
        vec![
            "--log.level",
            "trace",
            "callback",
            "show",
            "--config.file",
            path.to_str().unwrap(),
        ],
        vec![
            "--log.level",
            "trace",
            "callback",
            "set-key",
            "--config.file",
            path.to_str().unwrap(),
        ],
    ] {
        let o = tokio::task::spawn_blocking({
            let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            move || Command::new(BIN).args(&args).output().unwrap()
        })
        .await
        .unwrap();
        assert!(!o.status.success(), "{args:?} should fail here");
        assert_clean(&format!("{args:?} stdout"), &String::from_utf8_lossy(&o.stdout));
        assert_clean(&format!("{args:?} stderr"), &String::from_utf8_lossy(&o.stderr));
    }
    sim.stop().await;
}
