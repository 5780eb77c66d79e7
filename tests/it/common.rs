//! Shared helpers: a simulator and an exporter on port 0, scraping, waiting with a deadline.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tiw_push_exporter::config::Config;
use tiw_push_exporter::exporter::{Exporter, ServeOptions};
pub use tiw_push_exporter::poller::PollOptions;
use tiw_push_exporter::registry::TaskRegistry;
use tiw_push_exporter::simulator::{SimConfig, SimCredential, SimServer, Simulator};
use tiw_push_exporter::tencentcloud::RetryPolicy;
use tokio_util::sync::CancellationToken;

pub const SECRET_ID: &str = "AKIDtestSecretId000000000000000000";
pub const SECRET_KEY: &str = "testSecretKey00000000000000000000";

/// A simulator with the test credentials for `apps`.
pub fn sim_config(apps: &[u64]) -> SimConfig {
    SimConfig {
        credentials: vec![SimCredential {
            secret_id: SECRET_ID.into(),
            secret_key: SECRET_KEY.into(),
            session_token: None,
            ..Default::default()
        }],
        apps: apps.to_vec(),
        ..Default::default()
    }
}

pub async fn start_sim(config: SimConfig) -> SimServer {
    Simulator::new(config)
        .spawn(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("simulator binds")
}

/// An endpoint where nothing listens: an API that cannot be reached, so callback claims stand
/// unconfirmed.
///
/// The port stays bound (never listening) for the rest of the test process: connections to it
/// are refused, and no other test's server can be given it. A port merely released could be handed
/// to a simulator of a test running beside this one, which would then answer as "the API".
pub fn closed_endpoint() -> String {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind");
    let port = socket.local_addr().expect("addr").port();
    std::mem::forget(socket);
    format!("http://127.0.0.1:{port}")
}

/// Config text for `apps` against `endpoint`; `extra` is appended (YAML).
pub fn config_yaml(endpoint: &str, apps: &[u64], poll_interval: &str, extra: &str) -> String {
    let mut s = format!(
        "tencentcloud:\n  endpoint: {endpoint}\n  secret_id: {SECRET_ID}\n  secret_key: {SECRET_KEY}\n  timeout: 1s\napps:\n"
    );
    for app in apps {
        s.push_str(&format!("  - sdk_app_id: {app}\n"));
    }
    s.push_str(&format!(
        "poll:\n  interval: {poll_interval}\n  discovery_interval: {poll_interval}\n{extra}"
    ));
    s
}

/// Unix seconds now, as callbacks carry them.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A running exporter.
pub struct Running {
    /// The store's directory, removed with the exporter.
    pub state: tempfile::TempDir,
    pub addr: SocketAddr,
    pub token: CancellationToken,
    pub registry: std::sync::Arc<TaskRegistry>,
    pub store: std::sync::Arc<tiw_push_exporter::store::Store>,
    pub handle: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn scrape(&self) -> Metrics {
        let body = reqwest::get(self.url("/metrics"))
            .await
            .expect("scrape")
            .text()
            .await
            .expect("body");
        Metrics::parse(&body)
    }

    pub async fn stop(self) {
        self.stop_keeping_state().await;
    }

    /// Stops gracefully and hands back the store's directory, to start again on it.
    pub async fn stop_keeping_state(self) -> tempfile::TempDir {
        self.token.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.handle).await;
        drop(self.store);
        self.state
    }
}

pub fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(100),
    }
}

pub async fn start_exporter(yaml: &str) -> Running {
    start_exporter_with_state(yaml, tempfile::tempdir().expect("temp dir")).await
}

/// Starts an exporter whose store lives in `state` (to restart on the same store).
pub async fn start_exporter_with_state(yaml: &str, state: tempfile::TempDir) -> Running {
    start_exporter_with(yaml, state, ServeOptions::default()).await
}

/// Starts an exporter with `options` (retries shortened) and its store in `state`.
pub async fn start_exporter_with(yaml: &str, state: tempfile::TempDir, options: ServeOptions) -> Running {
    let yaml = format!("{yaml}state:\n  path: {}\n", state.path().display());
    let config = Config::from_yaml(&yaml, &|_| None).expect("test config is valid");
    let options = ServeOptions {
        poll: PollOptions {
            retry: fast_retry(),
            ..options.poll
        },
        ..options
    };
    let exporter = Exporter::new(config, options).expect("store opens");
    let (registry, store) = (exporter.registry.clone(), exporter.store.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let token = CancellationToken::new();
    let handle = tokio::spawn(exporter.serve(listener, token.clone()));
    Running {
        state,
        addr,
        token,
        registry,
        store,
        handle,
    }
}

/// A parsed exposition: every sample by its full series text.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub text: String,
    samples: Vec<(String, HashMap<String, String>, f64)>,
}

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let mut samples = Vec::new();
        for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
            let (series, value) = line.rsplit_once(' ').expect("sample has a value");
            let value: f64 = value.parse().expect("numeric value");
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n.to_string(), parse_labels(rest.trim_end_matches('}'))),
                None => (series.to_string(), HashMap::new()),
            };
            samples.push((name, labels, value));
        }
        Metrics {
            text: text.to_string(),
            samples,
        }
    }

    /// Values of `name` whose labels include every pair of `labels`.
    pub fn values(&self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        self.samples
            .iter()
            .filter(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
            .map(|(_, _, v)| *v)
            .collect()
    }

    /// The single value of `name` with `labels`, if exactly one matches.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        match self.values(name, labels).as_slice() {
            [v] => Some(*v),
            _ => None,
        }
    }

    /// Sum over every matching series.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.values(name, labels).iter().sum()
    }

    /// Task id → status (the state-set series that is 1), for checks over many tasks.
    pub fn statuses(&self) -> HashMap<String, String> {
        self.samples
            .iter()
            .filter(|(n, _, v)| n == "tiw_push_task_status" && *v == 1.0)
            .filter_map(|(_, l, _)| Some((l.get("task_id")?.clone(), l.get("status")?.clone())))
            .collect()
    }

    /// Task id → finish reason.
    pub fn finish_reasons(&self) -> HashMap<String, String> {
        self.samples
            .iter()
            .filter(|(n, _, _)| n == "tiw_push_task_finish_reason")
            .filter_map(|(_, l, _)| Some((l.get("task_id")?.clone(), l.get("reason")?.clone())))
            .collect()
    }

    /// The status whose state-set series is 1 for `task_id`.
    pub fn status_of(&self, task_id: &str) -> Option<String> {
        self.samples
            .iter()
            .find(|(n, l, v)| {
                n == "tiw_push_task_status" && l.get("task_id").map(String::as_str) == Some(task_id) && *v == 1.0
            })
            .and_then(|(_, l, _)| l.get("status").cloned())
    }
}

fn parse_labels(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = s;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(if n == 'n' { '\n' } else { n });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.insert(key.trim_start_matches(',').to_string(), value);
        rest = after[end..].trim_start_matches(',');
    }
    out
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the exporter shows `task_id` in `status`; returns that scrape.
pub async fn wait_status(exporter: &Running, task_id: &str, status: &str) -> Metrics {
    wait_for(
        Duration::from_secs(15),
        &format!("{task_id} to be {status}"),
        || async {
            let m = exporter.scrape().await;
            (m.status_of(task_id).as_deref() == Some(status)).then_some(m)
        },
    )
    .await
}

/// A child process killed and reaped when dropped, so a failing test leaves nothing running.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for KillOnDrop {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

/// A running exporter process and the address it listens on; killed and reaped when dropped.
pub struct Proc {
    pub child: KillOnDrop,
    pub addr: String,
    /// Every line the exporter has logged so far.
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Proc {
    /// The log so far, one string.
    pub fn log_text(&self) -> String {
        self.log.lock().map(|l| l.join("\n")).unwrap_or_default()
    }
}

/// The address in the exporter's "listening" line, logfmt (`address=...`) or JSON.
pub fn logged_address(line: &str) -> Option<String> {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
        return v["fields"]["address"].as_str().map(str::to_string);
    }
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("address=").map(str::to_string))
}

/// Starts the binary `bin` on `config` (with `extra` flags) listening on a free loopback port;
/// returns once it logs the address it listens on.
pub fn spawn_exporter(bin: &std::path::Path, config: &std::path::Path, extra: &[&str]) -> Proc {
    use std::io::BufRead;
    let mut child = std::process::Command::new(bin)
        .arg("--config.file")
        .arg(config)
        .args(["--web.listen-address", "127.0.0.1:0"])
        .args(extra)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the exporter binary starts");
    let mut lines = std::io::BufReader::new(child.stderr.take().expect("stderr is piped"))
        .lines()
        .map_while(Result::ok);
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = |l: &String| {
        if let Ok(mut log) = log.lock() {
            log.push(l.clone());
        }
    };
    let addr = lines
        .find_map(|l| {
            keep(&l);
            logged_address(&l)
        })
        .expect("the exporter logs its address");
    // Keep reading, so the exporter never writes into a full pipe.
    let shared = log.clone();
    std::thread::spawn(move || {
        for l in lines {
            if let Ok(mut log) = shared.lock() {
                log.push(l);
            }
        }
    });
    Proc {
        child: KillOnDrop(child),
        addr,
        log,
    }
}

/// `program` as a shell would run it: without what cargo gives test processes (CARGO_PKG_* and
/// friends, OUT_DIR, and our build script's `TIW_BUILD_*`, which cargo also sets for tests). The
/// build script watches those, so a nested cargo build would otherwise find an up-to-date release
/// build stale, rebuild it with a new build date, and the next build outside the tests again.
pub fn shell_command(program: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
    let mut cmd = std::process::Command::new(program);
    for (key, _) in std::env::vars() {
        let from_cargo = key.starts_with("CARGO_") && !matches!(key.as_str(), "CARGO_HOME" | "CARGO_TARGET_DIR");
        if from_cargo || key == "OUT_DIR" || key.starts_with("TIW_BUILD_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// One scrape of the exporter listening at `addr` (host:port).
pub async fn scrape(addr: &str) -> Metrics {
    let res = reqwest::get(format!("http://{addr}/metrics")).await.expect("scrape");
    Metrics::parse(&res.text().await.expect("body"))
}

/// A loopback port nothing listens on (bound, read, and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether the acceptance profile runs (`cargo nextest run --profile acceptance`, as `.ci/run`
/// does): then every test runs, and one that lacks a program fails. The default profile is a
/// contributor's loop: it needs only the Rust toolchain, and skips what needs more ([`needs`]).
pub fn acceptance() -> bool {
    std::env::var("NEXTEST_PROFILE").is_ok_and(|p| p == "acceptance")
        || std::env::var("TIW_ACCEPTANCE").is_ok_and(|v| v == "1")
}

/// Whether `program` is on PATH.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Whether a test that needs `what` (programs on PATH, or `"root"`) can run here. Under the
/// acceptance profile a missing one fails the test; otherwise the test is skipped, with one line
/// saying why: `if !needs(&["promtool"]) { return; }`.
pub fn needs(what: &[&str]) -> bool {
    let missing: Vec<&str> = what
        .iter()
        .copied()
        .filter(|w| match *w {
            "root" => !is_root(),
            program => !on_path(program),
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        !acceptance(),
        "the acceptance profile runs every test, and this one needs {} (.ci/run installs them)",
        missing.join(", ")
    );
    println!(
        "skipped: needs {} (the acceptance profile runs it: cargo nextest run --profile acceptance)",
        missing.join(", ")
    );
    false
}

/// The release binary, which `.ci/run` builds before the tests (`cargo build --release --workspace --locked`):
/// `TIW_RELEASE_BIN`, else `release/` beside the target directory of this test binary (so a
/// `CARGO_TARGET_DIR` is followed). Outside the acceptance profile, when it was not built, the
/// test build's own binary stands in for it (slower, the same behaviour).
pub fn release_bin() -> std::path::PathBuf {
    // CARGO_BIN_EXE_* is <target>/<profile>/tiw-push-exporter.
    let debug = std::path::Path::new(env!("CARGO_BIN_EXE_tiw-push-exporter"));
    let path = std::env::var_os("TIW_RELEASE_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            let target = debug
                .parent()
                .and_then(std::path::Path::parent)
                .expect("a target directory");
            target.join("release").join("tiw-push-exporter")
        });
    if !path.exists() && !acceptance() {
        println!("note: {} is not built: using the test build's binary", path.display());
        return debug.to_path_buf();
    }
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --release --workspace --locked` first",
        path.display()
    );
    path
}

/// Writes `yaml` with `state.path` under `dir` as `dir/config.yaml`, for a spawned exporter.
pub fn write_config_file(dir: &std::path::Path, yaml: &str) -> std::path::PathBuf {
    let path = dir.join("config.yaml");
    let text = format!("{yaml}state:\n  path: {}\n", dir.join("state").display());
    std::fs::write(&path, text).expect("config file written");
    path
}

/// POSTs every body to `url`, at most `at_once` in flight; the HTTP status of each (0: no answer).
pub async fn post_all(url: &str, bodies: impl IntoIterator<Item = String>, at_once: usize) -> Vec<u16> {
    let client = reqwest::Client::new();
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(at_once));
    let mut sends = tokio::task::JoinSet::new();
    for body in bodies {
        let (client, url, slots) = (client.clone(), url.to_string(), slots.clone());
        sends.spawn(async move {
            let _slot = slots.acquire().await;
            post_status(&client, &url, body).await
        });
    }
    sends.join_all().await
}

/// POSTs `body` to `url`: the status, or 0 when no answer came.
pub async fn post_status(client: &reqwest::Client, url: &str, body: String) -> u16 {
    client
        .post(url)
        .body(body)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// Runs `cmd` (`what` names it and what installs it) and asserts it succeeded; its stdout.
pub fn run_ok(cmd: &mut std::process::Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits until `url` answers 200 (a server's readiness endpoint).
pub async fn wait_ready(url: &str) {
    wait_for(Duration::from_secs(30), url, || async {
        reqwest::get(url).await.ok().filter(|r| r.status() == 200).map(|_| ())
    })
    .await;
}
