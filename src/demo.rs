//! `demo`: the simulator and the exporter wired together on loopback, no Tencent account needed.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::exporter::{Exporter, ServeOptions};
use crate::simulator::{
    lifecycle::Generator, random_task_id, FaultRates, LifecyclePlan, Outcome, SimConfig, SimCredential, Simulator,
};

/// The demo's apps.
pub const DEMO_APPS: [u64; 2] = [1400000001, 1400000002];

/// Settings of `demo`.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Where the simulator listens (port 0: any free port).
    pub simulator_address: SocketAddr,
    /// Running tasks the simulator keeps per app.
    pub tasks_per_app: usize,
    pub poll_interval: Duration,
    /// Random API faults from the start (`--simulator.faults`).
    pub fault_rates: FaultRates,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            simulator_address: SocketAddr::from(([127, 0, 0, 1], 0)),
            tasks_per_app: 6,
            poll_interval: Duration::from_secs(2),
            fault_rates: FaultRates::default(),
        }
    }
}

/// Runs the demo until `token` is cancelled. Prints where to look on stdout.
pub async fn run(
    listener: TcpListener,
    options: DemoOptions,
    serve: ServeOptions,
    token: CancellationToken,
) -> anyhow::Result<()> {
    let secret_id = format!("AKIDdemo{}", random_task_id());
    let secret_key = random_task_id();
    let sim = Simulator::new(SimConfig {
        credentials: vec![SimCredential {
            secret_id: secret_id.clone(),
            secret_key: secret_key.clone(),
            session_token: None,
            ..Default::default()
        }],
        apps: DEMO_APPS.to_vec(),
        requests_per_second: 20,
        latency: Duration::from_millis(30),
        latency_jitter: Duration::from_millis(20),
        clock_offset_secs: 0,
        fault_rates: options.fault_rates.clone(),
    });
    // A few short tasks at once, so every status shows within seconds.
    for (i, app) in DEMO_APPS.iter().enumerate() {
        let room = 100 + i as i64 * 10;
        let seconds = Duration::from_secs;
        for (k, (prepare, push, outcome, exceptions)) in [
            (seconds(1), seconds(3), Outcome::Exception, 2),
            (seconds(1), seconds(5), Outcome::Auto, 0),
            (seconds(2), seconds(0), Outcome::Failed, 0),
            (seconds(1), seconds(60), Outcome::UserCall, 1),
        ]
        .into_iter()
        .enumerate()
        {
            sim.create_task_with(
                *app,
                room + k as i64,
                Some(LifecyclePlan {
                    prepare_for: prepare,
                    push_for: push,
                    outcome,
                    exceptions,
                }),
            );
        }
    }
    let server = sim.clone().spawn(options.simulator_address).await?;
    let lifecycle = sim.spawn_lifecycle(
        Generator {
            apps: DEMO_APPS.to_vec(),
            target_per_app: options.tasks_per_app,
            create_every: Duration::from_secs(3),
            ..Default::default()
        },
        token.clone(),
    );
    // TIW calls the exporter back, signed, as an operator would register with `callback set-url`.
    let callback_key = random_task_id();
    let addr = listener.local_addr()?;
    let shown = if addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    };
    for app in DEMO_APPS {
        sim.set_callback(app, &format!("http://{shown}/callback"), &callback_key);
    }
    let state = std::env::temp_dir().join(format!("tiw-push-exporter-demo-{}", std::process::id()));
    let interval = humantime::format_duration(options.poll_interval);
    let yaml = format!(
        "tencentcloud:\n  endpoint: {}\n  secret_id: {secret_id}\n  secret_key: {secret_key}\n  session_token: ''\n\
         apps:\n  - sdk_app_id: {}\n    callback_key: {callback_key}\n  - sdk_app_id: {}\n    callback_key: {callback_key}\n\
         poll:\n  interval: {interval}\n  discovery_interval: {interval}\n\
         state:\n  path: {}\nretention:\n  stopped_tasks: 10m\n",
        server.endpoint(),
        DEMO_APPS[0],
        DEMO_APPS[1],
        state.display()
    );
    let config = Config::from_yaml(&yaml, &|_| None).map_err(|e| anyhow::anyhow!("demo config: {e}"))?;
    // One write, whose failure (`demo | head -3`: the reader is gone) is no reason to stop.
    let banner = format!(
        "tiw-push-exporter demo: a simulated TIW with apps {} and {}\n\
         \x20 metrics:       http://{shown}{telemetry}\n\
         \x20 landing page:  http://{shown}/\n\
         \x20 simulator API: {endpoint} (Tencent Cloud API 3.0, TC3-signed, 20 requests/s per action)\n\
         Tasks start, push, and stop with AUTO, USER_CALL, EXCEPTION or fail; try:\n\
         \x20 curl -s http://{shown}{telemetry} | grep -E '^tiw_push_(tasks|task_status)'\n\
         Break the API on purpose (a share of requests gets 5xx, resets, hangs, errors...):\n\
         \x20 curl -X PUT {endpoint}/sim/faults -d '{{\"http_5xx\":0.1,\"connection_reset\":0.05,\"slow\":0.05}}'\n\
         Ctrl-C stops the demo.\n",
        DEMO_APPS[0],
        DEMO_APPS[1],
        telemetry = serve.telemetry_path,
        endpoint = server.endpoint(),
    );
    crate::admin::print_quietly(&banner);
    let result = match Exporter::new(config, serve) {
        Ok(exporter) => exporter
            .serve(listener, token.clone())
            .await
            .map_err(anyhow::Error::from),
        Err(e) => Err(e.into()),
    };
    token.cancel();
    server.stop().await;
    let _ = lifecycle.await;
    // The demo's store is scratch space.
    let _ = std::fs::remove_dir_all(&state);
    result
}
