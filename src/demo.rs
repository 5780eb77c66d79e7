//! `demo`: the simulator and the exporter wired together on loopback, no Tencent account needed.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use secrecy::ExposeSecret;

use crate::config::Config;
use crate::exporter::{Exporter, ServeOptions};
use crate::simulator::{lifecycle::Generator, FaultRates, LifecyclePlan, Outcome, SimConfig, SimCredential, Simulator};

/// The demo's apps.
pub const DEMO_APPS: [u64; 2] = [1400000001, 1400000002];
/// The simulator's credentials, fixed and printed, so that an exporter of your own (or `describe`
/// and `callback show`) can be pointed at the demo's simulator. They open nothing at Tencent.
pub const DEMO_SECRET_ID: &str = "AKIDtiwPushExporterDemo000000000000";
pub const DEMO_SECRET_KEY: &str = "tiwPushExporterDemoSecretKey0000";
/// The key the simulator signs the demo apps' callbacks with.
pub const DEMO_CALLBACK_KEY: &str = "tiw-push-exporter-demo-callback-key";
/// The key the demo's recording feature signs its events with (its own, as at Tencent).
pub const DEMO_RECORD_KEY: &str = "tiw-push-exporter-demo-record-key";

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
    /// The user's own configuration (`demo --config.file`): its apps, credentials and callback
    /// keys are simulated instead of the demo's; its endpoints and state.path are replaced.
    pub config: Option<Config>,
    /// Where `config` was read from: reloads (SIGHUP, `POST /-/reload`) read it again, pointed at
    /// the simulator as at start.
    pub config_file: Option<std::path::PathBuf>,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            simulator_address: SocketAddr::from(([127, 0, 0, 1], 0)),
            tasks_per_app: 6,
            poll_interval: Duration::from_secs(2),
            fault_rates: FaultRates::default(),
            config: None,
            config_file: None,
        }
    }
}

/// Runs the demo until `token` is cancelled. Prints where to look on stdout.
///
/// `on_exporter` gets the exporter's reload handle once it is built (`main` reloads on SIGHUP
/// with it, as `serve` does).
pub async fn run(
    listener: TcpListener,
    options: DemoOptions,
    serve: ServeOptions,
    token: CancellationToken,
    on_exporter: impl FnOnce(crate::reload::ReloadHandle) + Send,
) -> anyhow::Result<()> {
    // Whose apps and credentials the simulator takes: the user's config, or the demo's own.
    let (apps, credentials): (Vec<u64>, Vec<SimCredential>) = match &options.config {
        Some(config) => {
            let mut credentials: Vec<SimCredential> = Vec::new();
            for app in &config.apps {
                let c = &app.api.credentials;
                if !credentials.iter().any(|k| k.secret_id == c.secret_id) {
                    credentials.push(SimCredential {
                        secret_id: c.secret_id.clone(),
                        secret_key: c.secret_key.expose_secret().to_string(),
                        session_token: c.session_token.as_ref().map(|t| t.expose_secret().to_string()),
                        account: app.api.account.clone(),
                        denied_actions: Vec::new(),
                    });
                }
            }
            (config.apps.iter().map(|a| a.sdk_app_id).collect(), credentials)
        }
        None => (
            DEMO_APPS.to_vec(),
            vec![SimCredential {
                secret_id: DEMO_SECRET_ID.into(),
                secret_key: DEMO_SECRET_KEY.into(),
                session_token: None,
                ..Default::default()
            }],
        ),
    };
    let sim = Simulator::new(SimConfig {
        credentials,
        apps: apps.clone(),
        requests_per_second: 20,
        latency: Duration::from_millis(30),
        latency_jitter: Duration::from_millis(20),
        clock_offset_secs: 0,
        fault_rates: options.fault_rates.clone(),
        // As Tencent documents the list: ended tasks too, as FINISHED.
        list_finished: true,
        ..Default::default()
    });
    // A few short tasks at once, so every status shows within seconds.
    for (i, app) in apps.iter().enumerate() {
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
    // A document transcode stuck in Tencent's queue for 25 minutes: what the census's backlog
    // alert is for (TIWTranscodeBacklog), beside the transcodes that come and go.
    if let Some(first) = apps.first() {
        sim.add_listed(*first, "TranscodeH5", Duration::from_secs(25 * 60), None);
    }
    let server = sim.clone().spawn(options.simulator_address).await?;
    let config_is_users = options.config.is_some();
    let lifecycle = sim.spawn_lifecycle(
        Generator {
            apps: apps.clone(),
            target_per_app: options.tasks_per_app,
            create_every: Duration::from_secs(3),
            transcode_every: Some(Duration::from_secs(4)),
            records_per_app: 3,
            ..Default::default()
        },
        token.clone(),
    );
    // TIW calls the exporter back, signed, as an operator would register with `callback set-url`.
    let addr = listener.local_addr()?;
    let loopback = |a: SocketAddr| {
        if a.ip().is_unspecified() {
            SocketAddr::from(([127, 0, 0, 1], a.port()))
        } else {
            a
        }
    };
    let shown = loopback(addr);
    let state = std::env::temp_dir().join(format!("tiw-push-exporter-demo-{}", std::process::id()));
    let endpoint = server.endpoint();
    let config = match options.config {
        Some(mut config) => {
            let sim_endpoint = url::Url::parse(&endpoint).map_err(|e| anyhow::anyhow!("simulator endpoint: {e}"))?;
            for app in &mut config.apps {
                app.api.endpoint = sim_endpoint.clone();
            }
            config.state_path = state.clone();
            let callbacks_at = loopback(config.callback.listen_address.unwrap_or(addr));
            for app in &config.apps {
                let key = app
                    .callback_key
                    .as_ref()
                    .map(|k| k.expose_secret().to_string())
                    .unwrap_or_default();
                sim.set_callback(
                    app.sdk_app_id,
                    &format!("http://{callbacks_at}{}", config.callback.path),
                    &key,
                );
            }
            config
        }
        None => {
            for app in DEMO_APPS {
                sim.set_callback(app, &format!("http://{shown}/callback"), DEMO_CALLBACK_KEY);
                sim.set_record_callback(app, &format!("http://{shown}/callback"), DEMO_RECORD_KEY);
            }
            // The second app shows relay mode: its callbacks go on to a stand-in for the product
            // backend that owned TIW's URL before (README, "Callbacks and your existing backend").
            let backend = product_backend(token.clone()).await?;
            let interval = humantime::format_duration(options.poll_interval);
            let yaml = format!(
                "tencentcloud:\n  endpoint: {endpoint}\n  secret_id: {DEMO_SECRET_ID}\n  secret_key: {DEMO_SECRET_KEY}\n  session_token: ''\n\
                 apps:\n  - sdk_app_id: {}\n    callback_key: {DEMO_CALLBACK_KEY}\n    record: true\n    record_callback_key: {DEMO_RECORD_KEY}\n  - sdk_app_id: {}\n    callback_key: {DEMO_CALLBACK_KEY}\n    callback_forward_url: {backend}\n    record: true\n    record_callback_key: {DEMO_RECORD_KEY}\n\
                 poll:\n  interval: {interval}\n  discovery_interval: {interval}\n  census_interval: 5s\n\
                 state:\n  path: {}\nretention:\n  stopped_tasks: 10m\n",
                DEMO_APPS[0],
                DEMO_APPS[1],
                state.display()
            );
            Config::from_yaml(&yaml, &|_| None).map_err(|e| anyhow::anyhow!("demo config: {e}"))?
        }
    };
    let app_list: Vec<String> = apps.iter().map(u64::to_string).collect();
    let whose = if config_is_users {
        format!(
            "your configuration's apps {} (their credentials and callback keys)",
            app_list.join(", ")
        )
    } else {
        format!("apps {}", app_list.join(" and "))
    };
    // One write, whose failure (`demo | head -3`: the reader is gone) is no reason to stop.
    let mut banner = format!(
        "tiw-push-exporter demo: a simulated TIW with {whose}\n\
         \x20 metrics:       http://{shown}{telemetry}\n\
         \x20 landing page:  http://{shown}/\n\
         \x20 simulator API: {endpoint} (Tencent Cloud API 3.0, TC3-signed, 20 requests/s per action)\n",
        telemetry = serve.telemetry_path,
    );
    if !config_is_users {
        banner.push_str(&format!(
            "The simulator's credentials, to point your own config at it (they open nothing at Tencent):\n\
             \x20 tencentcloud:\n\
             \x20   endpoint: {endpoint}\n\
             \x20   secret_id: {DEMO_SECRET_ID}\n\
             \x20   secret_key: {DEMO_SECRET_KEY}\n\
             \x20 apps: [{{sdk_app_id: {}, callback_key: {DEMO_CALLBACK_KEY}}}, {{sdk_app_id: {}, callback_key: {DEMO_CALLBACK_KEY}}}]\n\
             App {} runs in relay mode: every callback TIW sends for it also goes on to a stand-in for your\n\
             \x20product's backend (the landing page's \"Relayed callbacks\"; README, \"Callbacks and your existing backend\").\n\
             (or run your own config against the simulator: tiw-push-exporter demo --config.file config.yaml;\n\
             \x20--simulator.listen-address 127.0.0.1:18080 keeps the endpoint the same from run to run)\n",
            DEMO_APPS[0], DEMO_APPS[1], DEMO_APPS[1],
        ));
    }
    banner.push_str(&format!(
        "Tasks start, push, and stop with AUTO, USER_CALL, EXCEPTION or fail; try:\n\
         \x20 curl -s http://{shown}{telemetry} | grep -E '^tiw_push_(tasks|task_status)'\n\
         Break the API on purpose (a share of requests gets 5xx, resets, hangs, errors...):\n\
         \x20 curl -X PUT {endpoint}/sim/faults -d '{{\"http_5xx\":0.1,\"connection_reset\":0.05,\"slow\":0.05}}'\n\
         Ctrl-C stops the demo.\n",
        telemetry = serve.telemetry_path,
    ));
    crate::admin::print_quietly(&banner);
    // A reload of the user's file is pointed at the simulator and the scratch store, as at start.
    let serve = match (&options.config_file, config_is_users) {
        (Some(path), true) => {
            let (endpoint, state) = (url::Url::parse(&endpoint).ok(), state.clone());
            ServeOptions {
                config_file: Some(path.clone()),
                config_rewrite: Some(crate::exporter::ConfigRewrite(std::sync::Arc::new(
                    move |mut config: Config| {
                        if let Some(endpoint) = &endpoint {
                            for app in &mut config.apps {
                                app.api.endpoint = endpoint.clone();
                            }
                        }
                        config.state_path = state.clone();
                        config
                    },
                ))),
                ..serve
            }
        }
        _ => serve,
    };
    let serve = ServeOptions { demo: true, ..serve };
    let result = match Exporter::new(config, serve) {
        Ok(exporter) => {
            on_exporter(exporter.reload_handle());
            exporter
                .serve(listener, token.clone())
                .await
                .map_err(anyhow::Error::from)
        }
        Err(e) => Err(e.into()),
    };
    token.cancel();
    server.stop().await;
    let _ = lifecycle.await;
    // The demo's store is scratch space.
    let _ = std::fs::remove_dir_all(&state);
    result
}

/// A stand-in for the product backend that owned TIW's callback URL before the exporter: it takes
/// every relayed request (200), as a backend of the user's would. Returns its URL.
async fn product_backend(token: CancellationToken) -> anyhow::Result<String> {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let url = format!("http://{}/tiw/callback", listener.local_addr()?);
    let router = axum::Router::new().fallback(|| async { r#"{"error_code":0}"# });
    tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(async move { token.cancelled().await })
            .await;
    });
    Ok(url)
}
