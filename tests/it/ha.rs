//! High availability: two identical replicas behind a round-robin load balancer with fail-over
//! (the stand-in for the Kubernetes Service), each killed with SIGKILL in turn while the simulator
//! starts and ends tasks and sends its callbacks through the balancer.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tiw_push_exporter::exporter::ServeOptions;
use tiw_push_exporter::simulator::callbacks::sign_event;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::*;

const APP: u64 = 1400000001;
const KEY: &str = "haCallbackKey-0001";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_replica_turns_not_ready_and_still_answers_for_the_shutdown_delay() {
    let sim = start_sim(sim_config(&[APP])).await;
    let yaml = config_yaml(&sim.endpoint(), &[APP], "1s", "").replace(
        &format!("  - sdk_app_id: {APP}\n"),
        &format!("  - sdk_app_id: {APP}\n    callback_key: {KEY}\n"),
    );
    let options = ServeOptions {
        shutdown_delay: Duration::from_secs(2),
        ..Default::default()
    };
    let exporter = start_exporter_with(&yaml, tempfile::tempdir().unwrap(), options).await;
    wait_ready(&exporter.url("/-/ready")).await;
    let task = sim.sim.create_task(APP, 77);
    sim.sim.start_pushing(&task);
    exporter.token.cancel();
    let client = reqwest::Client::new();
    // Not ready at once: the load balancer takes it out...
    wait_for(Duration::from_secs(1), "/-/ready to answer 503", || async {
        let r = client.get(exporter.url("/-/ready")).send().await.ok()?;
        (r.status() == 503).then_some(())
    })
    .await;
    // ...while it still answers what is already on its way, durably.
    let body = json!({"EventType": "WhiteboardPushStarted", "SdkAppId": APP, "Timestamp": now(),
                      "EventData": {"TaskId": task, "RoomId": 77, "PushStartTime": now()}});
    let r = client
        .post(exporter.url("/callback"))
        .body(sign_event(body, KEY, now() + 300).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "callbacks are still answered while not ready");
    assert_eq!(client.get(exporter.url("/metrics")).send().await.unwrap().status(), 200);
    // Then it stops.
    wait_for(Duration::from_secs(10), "the listener to close", || async {
        client
            .get(exporter.url("/-/healthy"))
            .send()
            .await
            .is_err()
            .then_some(())
    })
    .await;
    let state = exporter.stop_keeping_state().await;
    let store = tiw_push_exporter::store::Store::open(state.path()).unwrap();
    let restored = store.load().unwrap();
    assert!(
        restored.tasks.iter().any(|t| t.task_id == task),
        "the callback taken while draining is on disk"
    );
    sim.stop().await;
}

/// What went through the balancer: (replica, task id, HTTP status) of each callback.
pub(crate) type Routed = Arc<Mutex<Vec<(usize, String, u16)>>>;

/// A round-robin TCP balancer over `backends` that fails over to the next backend when one
/// refuses the connection (as a Service's endpoints do once a pod is gone), and records, for each
/// callback it carries, which replica answered what.
pub(crate) async fn balancer(backends: Vec<std::net::SocketAddr>, routed: Routed) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let (backends, next, routed) = (backends.clone(), next.clone(), routed.clone());
            tokio::spawn(async move {
                let first = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                for i in 0..backends.len() {
                    let which = (first + i) % backends.len();
                    if let Ok(server) = TcpStream::connect(backends[which]).await {
                        relay(client, server, which, routed).await;
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Copies one HTTP/1.1 exchange each way (the simulator sends one request per connection) and
/// notes the task id of the request and the status of the reply.
async fn relay(mut client: TcpStream, mut server: TcpStream, which: usize, routed: Routed) {
    let mut request = Vec::new();
    let mut buf = [0u8; 8192];
    // The request: head, then Content-Length bytes of body.
    loop {
        let Ok(n) = client.read(&mut buf).await else { return };
        if n == 0 {
            return;
        }
        request.extend_from_slice(&buf[..n]);
        if complete_message(&request) {
            break;
        }
    }
    if server.write_all(&request).await.is_err() {
        return;
    }
    let mut reply = Vec::new();
    loop {
        match server.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                reply.extend_from_slice(&buf[..n]);
                if client.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
        if complete_message(&reply) {
            break;
        }
    }
    let text = String::from_utf8_lossy(&request);
    let task = text
        .split("\"TaskId\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or("")
        .to_string();
    let status = String::from_utf8_lossy(&reply)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if let Ok(mut routed) = routed.lock() {
        routed.push((which, task, status));
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Whether `message` holds a whole HTTP request or response (head, then Content-Length bytes of body).
fn complete_message(message: &[u8]) -> bool {
    let Some(head_end) = find(message, b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&message[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    message.len() >= head_end + 4 + length
}

pub(crate) fn free_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// One replica: the binary on `config`, listening on `addr`, killed with SIGKILL when dropped.
pub(crate) fn replica(config: &Path, addr: std::net::SocketAddr) -> KillOnDrop {
    KillOnDrop(
        std::process::Command::new(env!("CARGO_BIN_EXE_tiw-push-exporter"))
            .args(["serve", "--config.file"])
            .arg(config)
            .args(["--web.listen-address", &addr.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// Waits until the replica at `addr` shows `task` with `status`.
pub(crate) async fn wait_replica_status(addr: std::net::SocketAddr, task: &str, status: &str) {
    wait_for(
        Duration::from_secs(20),
        &format!("{task} {status} on {addr}"),
        || async {
            let m = Metrics::parse(
                &reqwest::get(format!("http://{addr}/metrics"))
                    .await
                    .ok()?
                    .text()
                    .await
                    .ok()?,
            );
            (m.status_of(task).as_deref() == Some(status)).then_some(())
        },
    )
    .await;
}

/// Per task, the status and finish reason a replica's /metrics show.
async fn tasks_of(addr: std::net::SocketAddr) -> HashMap<String, (String, Option<String>)> {
    let m = scrape(&addr.to_string()).await;
    let reasons = m.finish_reasons();
    m.statuses()
        .into_iter()
        .map(|(task, status)| {
            let reason = reasons.get(&task).cloned();
            (task, (status, reason))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_killed_in_turn_lose_no_task_and_stay_within_the_budget() {
    let sim = start_sim(sim_config(&[APP])).await;
    let addrs = [free_addr(), free_addr()];
    let routed: Routed = Arc::default();
    let lb = balancer(addrs.to_vec(), routed.clone()).await;
    sim.sim.set_callback(APP, &format!("http://{lb}/callback"), KEY);
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let configs: Vec<PathBuf> = dirs
        .iter()
        .map(|d| {
            let yaml = config_yaml(&sim.endpoint(), &[APP], "1s", "").replace(
                &format!("  - sdk_app_id: {APP}\n"),
                &format!("  - sdk_app_id: {APP}\n    callback_key: {KEY}\n"),
            ) + "ha:\n  replicas: 2\nretention:\n  stopped_tasks: 1h\n";
            write_config_file(d.path(), &yaml)
        })
        .collect();
    let mut replicas = [
        Some(replica(&configs[0], addrs[0])),
        Some(replica(&configs[1], addrs[1])),
    ];
    for addr in addrs {
        wait_ready(&format!("http://{addr}/-/ready")).await;
    }
    let mut expected: HashMap<String, (&str, Option<&str>)> = HashMap::new();
    let start = |room: i64| {
        let task = sim.sim.create_task(APP, room);
        sim.sim.start_pushing(&task);
        task
    };
    let settle = || tokio::time::sleep(Duration::from_millis(1500));
    // Enough running tasks that each replica alone would poll faster than 20/s (1 s interval): the
    // budget split (ha.replicas: 2) is what keeps the pair within Tencent's limit.
    for room in 100..160 {
        let task = start(room);
        expected.insert(task, ("PUSHING", None));
    }

    // Both up: tasks start; one ends with EXCEPTION.
    let long = [start(1), start(2), start(3)];
    settle().await;
    sim.sim.stop(&long[0], "EXCEPTION");
    expected.insert(long[0].clone(), ("STOPPED", Some("EXCEPTION")));
    settle().await;

    // Replica 0 down: tasks start and end entirely inside its outage.
    drop(replicas[0].take());
    let inside = [start(10), start(11)];
    settle().await;
    sim.sim.stop(&inside[0], "EXCEPTION");
    sim.sim.stop(&inside[1], "AUTO");
    expected.insert(inside[0].clone(), ("STOPPED", Some("EXCEPTION")));
    expected.insert(inside[1].clone(), ("STOPPED", Some("AUTO")));
    settle().await;
    replicas[0] = Some(replica(&configs[0], addrs[0]));
    wait_ready(&format!("http://{}/-/ready", addrs[0])).await;
    settle().await;

    // Replica 1 down: the same the other way round, and a long task ends.
    drop(replicas[1].take());
    let inside_other = start(20);
    settle().await;
    sim.sim.stop(&inside_other, "EXCEPTION");
    sim.sim.stop(&long[1], "USER_CALL");
    expected.insert(inside_other.clone(), ("STOPPED", Some("EXCEPTION")));
    expected.insert(long[1].clone(), ("STOPPED", Some("USER_CALL")));
    settle().await;
    replicas[1] = Some(replica(&configs[1], addrs[1]));
    wait_ready(&format!("http://{}/-/ready", addrs[1])).await;
    expected.insert(long[2].clone(), ("PUSHING", None));

    // The pair's merged view (what `max without (instance)` computes) converges on the simulator's.
    let merged = wait_for(
        Duration::from_secs(30),
        "the merged view to hold every task",
        || async {
            let views = [tasks_of(addrs[0]).await, tasks_of(addrs[1]).await];
            let mut merged: HashMap<String, (String, Option<String>)> = HashMap::new();
            for view in &views {
                for (task, state) in view {
                    // Ended wins over running: the replica that saw the end is the one that knows.
                    let keep = merged
                        .get(task)
                        .is_none_or(|(s, _)| s == "PUSHING" || s == "PREPARED" || s == "UNKNOWN");
                    if keep {
                        merged.insert(task.clone(), state.clone());
                    }
                }
            }
            let all = expected.iter().all(|(task, (status, reason))| {
                merged
                    .get(task)
                    .is_some_and(|(s, r)| s == status && r.as_deref() == *reason)
            });
            all.then_some(merged)
        },
    )
    .await;
    println!("merged view of the pair: {} tasks", merged.len());

    // Every callback a replica answered 200 is in that replica's view.
    let views = [tasks_of(addrs[0]).await, tasks_of(addrs[1]).await];
    let routed = routed.lock().unwrap().clone();
    let acked: HashSet<(usize, String)> = routed
        .iter()
        .filter(|(_, task, status)| *status == 200 && !task.is_empty())
        .map(|(which, task, _)| (*which, task.clone()))
        .collect();
    assert!(!acked.is_empty(), "callbacks went through the balancer: {routed:?}");
    for (which, task) in &acked {
        assert!(
            views[*which].contains_key(task),
            "replica {which} answered 200 for {task} and lost it"
        );
    }
    let by_replica: Vec<usize> = (0..2).map(|r| acked.iter().filter(|(w, _)| *w == r).count()).collect();
    println!(
        "callbacks answered 200 per replica: {by_replica:?}; all {} kept",
        acked.len()
    );
    // Together, never over Tencent's limit per action.
    let stats = sim.sim.stats();
    for action in ["DescribeWhiteboardPush", "DescribeRunningTasks"] {
        let peak = stats.max_per_second(action);
        assert!(peak <= 20, "{action}: {peak} in one second");
        println!("{action}: at most {peak} in any second, both replicas together");
    }
    assert!(stats.over_limit.values().all(|n| *n == 0), "{:?}", stats.over_limit);
    drop(replicas);
    sim.stop().await;
}
