//! Shared by the programs behind `bench/run` and `bench/soak`: the simulator on loopback, the
//! release binary as a child process, and what /proc says about it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tiw_push_exporter::simulator::{SimConfig, SimServer, Simulator};

pub async fn start_sim(config: SimConfig) -> SimServer {
    Simulator::new(config)
        .spawn(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("simulator binds")
}

/// The body of a GET; a failure ends the run.
pub async fn get_text(client: &reqwest::Client, url: &str) -> String {
    let res = client
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    res.text().await.unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// The size on the wire of a GET that asks for gzip (as Prometheus does); the body must be gzip.
pub async fn get_gzip_len(client: &reqwest::Client, url: &str) -> usize {
    let res = client
        .get(url)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert_eq!(
        res.headers().get("content-encoding").and_then(|v| v.to_str().ok()),
        Some("gzip"),
        "GET {url} with Accept-Encoding: gzip"
    );
    res.bytes().await.unwrap_or_else(|e| panic!("GET {url}: {e}")).len()
}

/// A child process killed when dropped.
pub struct Proc(pub Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn binary() -> PathBuf {
    std::env::var_os("TIW_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/release/tiw-push-exporter"))
}

/// Starts the release binary on `config` at `--log.level warn`; returns it, its address, and
/// when it was started.
pub fn spawn(config: &Path) -> (Proc, String, Instant) {
    spawn_with(config, &[])
}

/// [`spawn`] with `extra` flags.
pub fn spawn_with(config: &Path, extra: &[&str]) -> (Proc, String, Instant) {
    spawn_binary(&binary(), config, extra)
}

/// [`spawn_with`] for another build of the exporter (`bin`), e.g. the image's static binary.
pub fn spawn_binary(bin: &Path, config: &Path, extra: &[&str]) -> (Proc, String, Instant) {
    let (proc, addr, started, _) = spawn_logged_with(bin, config, "warn", extra);
    (proc, addr, started)
}

/// Starts the release binary on `config` at `log_level`; also returns every line it logs.
pub fn spawn_logged(config: &Path, log_level: &str) -> (Proc, String, Instant, Arc<Mutex<Vec<String>>>) {
    spawn_logged_with(&binary(), config, log_level, &[])
}

fn spawn_logged_with(
    bin: &Path,
    config: &Path,
    log_level: &str,
    extra: &[&str],
) -> (Proc, String, Instant, Arc<Mutex<Vec<String>>>) {
    let started = Instant::now();
    let mut child = Command::new(bin)
        .args(["--config.file"])
        .arg(config)
        .args(["--web.listen-address", "127.0.0.1:0", "--log.level", log_level])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the release binary (bench/run builds it)");
    // The "listening" line may be filtered out by the level: find the port from /proc instead.
    let stderr = child.stderr.take().expect("stderr is piped");
    let log = Arc::new(Mutex::new(Vec::new()));
    let keep = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(mut log) = keep.lock() {
                log.push(line);
            }
        }
    });
    let pid = child.id();
    let addr = loop {
        if let Some(a) = listening_address(pid) {
            break a;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the exporter did not start"
        );
        std::thread::sleep(Duration::from_millis(2));
    };
    (Proc(child), addr, started, log)
}

/// The loopback address a process listens on, from /proc/net/tcp and its file descriptors.
pub fn listening_address(pid: u32) -> Option<String> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            l.to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')
                .map(str::to_string)
        })
        .collect();
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // state 0A = LISTEN; local address 0100007F:PORT = 127.0.0.1
        (f.get(3) == Some(&"0A") && f[1].starts_with("0100007F:") && inodes.iter().any(|i| i == f[9]))
            .then(|| format!("127.0.0.1:{}", u16::from_str_radix(&f[1][9..], 16).unwrap_or(0)))
    })
}

pub fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, s)| s).unwrap_or("");
    let f: Vec<f64> = after.split_whitespace().map(|x| x.parse().unwrap_or(0.0)).collect();
    let ticks = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0);
    (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / ticks
}

pub async fn wait_ready(client: &reqwest::Client, addr: &str) {
    loop {
        if client
            .get(format!("http://{addr}/-/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

pub fn metric_sum(text: &str, name: &str, contains: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{') && l.contains(contains))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum::<f64>()
        + 0.0 // an empty sum is -0.0
}

/// A scratch directory under the system's temp dir, removed when dropped. (Not the `tempfile`
/// crate: it would change the feature set of `rustix`, which the exporter reaches through
/// `prometheus`'s process collector, and so rebuild the exporter instead of reusing its release
/// artefacts.)
pub struct ScratchDir(std::path::PathBuf);

impl ScratchDir {
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh [`ScratchDir`].
pub fn scratch_dir() -> ScratchDir {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("tiw-push-exporter-bench-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&path);
    std::fs::create_dir_all(&path).expect("a scratch directory");
    ScratchDir(path)
}
