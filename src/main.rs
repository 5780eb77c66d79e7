//! Command line → logging → library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

use secrecy::ExposeSecret;
use tiw_push_exporter::config::{parse_listen_address, Config};
use tiw_push_exporter::exporter::{build_clients, Exporter, ReloadHandle, ServeOptions};
use tiw_push_exporter::server::Limits;
use tiw_push_exporter::tencentcloud::{ApiError, TiwClient};
use tiw_push_exporter::webconfig::WebConfig;
use tiw_push_exporter::{demo, metrics::ExporterMetrics, registry::TaskRegistry};

/// `println!` that does not panic when standard output is a pipe whose reader went away.
macro_rules! outln {
    ($($arg:tt)*) => {
        tiw_push_exporter::demo::print_quietly(&format!("{}\n", format_args!($($arg)*)))
    };
}

/// Prometheus exporter for Tencent Cloud Interactive Whiteboard (TIW) whiteboard-push tasks.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Path of the YAML configuration file.
    #[arg(long = "config.file", global = true, default_value = "config.yaml")]
    config_file: PathBuf,
    /// Address to listen on for metrics, health and callbacks.
    #[arg(long = "web.listen-address", global = true, default_value = ":9897")]
    listen_address: String,
    /// TLS and basic auth, in the Prometheus exporter-toolkit format (tls_server_config, basic_auth_users).
    #[arg(long = "web.config.file", global = true)]
    web_config_file: Option<PathBuf>,
    /// Path under which metrics are exposed.
    #[arg(long = "web.telemetry-path", global = true, default_value = "/metrics", value_parser = parse_telemetry_path)]
    telemetry_path: String,
    /// Open connections at most, per listener; further clients wait to be accepted.
    #[arg(long = "web.max-connections", global = true, default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// Time a client has to send a request's headers; also closes connections idle for as long.
    #[arg(long = "web.read-header-timeout", global = true, default_value = "10s", value_parser = parse_duration)]
    read_header_timeout: Duration,
    /// Time a client has to send a request's body (callbacks); 408 after it.
    #[arg(long = "web.read-timeout", global = true, default_value = "10s", value_parser = parse_duration)]
    read_timeout: Duration,
    /// Scrapes answered at once; more get 503 (0: no limit).
    #[arg(long = "web.max-requests", global = true, default_value_t = 40)]
    max_requests: u32,
    /// Only log messages with the given severity or above.
    #[arg(long = "log.level", global = true, value_enum, default_value = "info")]
    log_level: LogLevel,
    /// Output format of log messages.
    #[arg(long = "log.format", global = true, value_enum, default_value = "logfmt")]
    log_format: LogFormat,
}

#[derive(Subcommand)]
enum Command {
    /// Poll Tencent Cloud and serve /metrics (the default).
    Serve,
    /// Run against an embedded TIW simulator: no Tencent Cloud account needed.
    Demo {
        /// Address of the embedded simulator's API.
        #[arg(long = "simulator.listen-address", default_value = "127.0.0.1:0")]
        simulator_address: String,
        /// Share of the simulator's API requests that fail, spread over every kind of fault
        /// (5xx, reset, hang, truncated or non-JSON body, InternalError, RequestLimitExceeded,
        /// 3 s late, SignatureExpire). Change it live with PUT /sim/faults.
        #[arg(long = "simulator.fault-rate", default_value_t = 0.0, value_parser = parse_share)]
        fault_rate: f64,
    },
    /// Validate the configuration file and print every problem with its key path.
    CheckConfig,
    /// Exit 0 when the exporter at --web.listen-address answers /-/healthy (for container health checks).
    Healthcheck,
    /// Show or change the callback URL and key registered with TIW for an app.
    Callback {
        #[command(subcommand)]
        action: CallbackCommand,
    },
    /// Act on the store at state.path (stop the exporter first).
    State {
        #[command(subcommand)]
        action: StateCommand,
    },
    /// Call DescribeWhiteboardPush for one task and print the reply as JSON.
    Describe {
        /// The task's SdkAppId (must be in the configuration).
        #[arg(long)]
        app: u64,
        /// The task id.
        task_id: String,
    },
}

#[derive(Subcommand)]
enum StateCommand {
    /// Forget one app's tasks, tombstones and counters for good. A reload or restart that leaves
    /// an app out of the configuration keeps them; this is how they go.
    Forget {
        /// The SdkAppId whose recorded state goes.
        #[arg(long)]
        app: u64,
    },
}

#[derive(Subcommand)]
enum CallbackCommand {
    /// DescribeWhiteboardPushCallback: the registered URL and key (masked).
    Show {
        /// SdkAppId (may be left out when the configuration has one app).
        #[arg(long)]
        app: Option<u64>,
    },
    /// SetWhiteboardPushCallback: register URL (http or https) as the app's callback, or delete it.
    SetUrl {
        #[arg(long)]
        app: Option<u64>,
        /// The exporter's callback URL as TIW reaches it, e.g. https://exporter.example.com/callback.
        #[arg(required_unless_present = "delete")]
        url: Option<String>,
        /// Delete the callback URL (sends the empty URL, which Tencent documents as delete): TIW
        /// then sends no push callbacks.
        #[arg(long, conflicts_with = "url")]
        delete: bool,
    },
    /// SetWhiteboardPushCallbackKey: the key from the config's callback_key, --from-env or --stdin
    /// (never an argument, where ps would show it).
    SetKey {
        #[arg(long)]
        app: Option<u64>,
        /// Read the key from this environment variable.
        #[arg(long = "from-env", value_name = "VAR", conflicts_with = "stdin")]
        from_env: Option<String>,
        /// Read the key from the first line of standard input.
        #[arg(long)]
        stdin: bool,
        /// Delete the key: TIW then sends unsigned callbacks.
        #[arg(long, conflicts_with_all = ["from_env", "stdin"])]
        delete: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Logfmt,
    Json,
}

fn init_logging(level: LogLevel, format: LogFormat) {
    use tracing_subscriber::prelude::*;
    let level = match level {
        LogLevel::Trace => "trace",
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Warn => "warn",
        LogLevel::Error => "error",
    };
    // Our own crate at the chosen level; dependencies one step quieter unless asked for.
    let filter = tracing_subscriber::EnvFilter::new(format!("warn,tiw_push_exporter={level}"));
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Logfmt => registry
            .with(tracing_logfmt::builder().layer().with_writer(std::io::stderr))
            .init(),
        LogFormat::Json => registry
            .with(tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr))
            .init(),
    }
}

/// Cancels `token` on SIGTERM or Ctrl-C. The handlers are registered before this returns, so a
/// signal during a slow start (loading a large store) is handled, not fatal.
fn cancel_on_signal(token: CancellationToken) {
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        match term {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                let _ = ctrl_c.await;
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutting down");
        token.cancel();
    });
}

/// SIGHUP, registered at once: its default action would end the process, so it must be caught
/// before anything slow runs. Reloads start once [`reload_on_sighup`] has the exporter.
#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = ();

fn catch_sighup() -> Hangup {
    #[cfg(unix)]
    return tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
}

/// GET /-/healthy on this machine's listener; exit 0 when it answers 200.
async fn healthcheck(listen_address: &str, tls: bool) -> anyhow::Result<ExitCode> {
    let addr = parse_listen_address(listen_address).map_err(|e| anyhow::anyhow!("--web.listen-address: {e}"))?;
    let host = if addr.ip().is_unspecified() {
        std::net::SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    };
    let url = format!("{}://{host}/-/healthy", if tls { "https" } else { "http" });
    // Our own loopback listener: its certificate is for the outside name, not 127.0.0.1.
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .danger_accept_invalid_certs(true)
        .build()?;
    match client.get(&url).send().await {
        Ok(r) if r.status().is_success() => Ok(ExitCode::SUCCESS),
        Ok(r) => {
            eprintln!("{url}: HTTP {}", r.status());
            Ok(ExitCode::FAILURE)
        }
        Err(e) => {
            eprintln!("{url}: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Reloads the configuration on every SIGHUP (the outcome is logged by the exporter).
fn reload_on_sighup(hup: Hangup, handle: ReloadHandle) {
    #[cfg(unix)]
    tokio::spawn(async move {
        let Some(mut hup) = hup else {
            tracing::error!("cannot listen for SIGHUP; reload with POST /-/reload");
            return;
        };
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the configuration");
            let _ = handle.reload().await;
        }
    });
    #[cfg(not(unix))]
    let _ = (hup, handle);
}

async fn bind(address: &str) -> anyhow::Result<tokio::net::TcpListener> {
    let addr = parse_listen_address(address).map_err(|e| anyhow::anyhow!("--web.listen-address: {e}"))?;
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
}

/// A path for `/metrics` that the router can serve and that no other endpoint uses.
fn parse_telemetry_path(s: &str) -> Result<String, String> {
    let reserved = ["/", "/-/healthy", "/-/ready", "/-/reload"];
    if !s.starts_with('/') || s.contains(|c: char| c.is_whitespace() || c.is_control()) {
        Err(format!("{s:?} must be a URL path starting with '/'"))
    } else if reserved.contains(&s) || s.starts_with("/-/") {
        Err(format!(
            "{s:?} is taken by another endpoint (/, /-/healthy, /-/ready, /-/reload)"
        ))
    } else if s
        .split('/')
        .any(|seg| seg.starts_with([':', '*']) || seg.contains(['{', '}']))
    {
        Err(format!(
            "{s:?}: a path segment may not start with ':' or '*' or hold '{{' or '}}'"
        ))
    } else if s.contains("//") || s.contains(['?', '#']) {
        Err(format!(
            "{s:?} must be a plain path (no empty segment, query or fragment)"
        ))
    } else {
        Ok(s.to_string())
    }
}

/// A share between 0 and 1.
fn parse_share(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if (0.0..=1.0).contains(&x) => Ok(x),
        _ => Err(format!("{s:?} is not a number between 0 and 1")),
    }
}

/// A positive duration such as `500ms`, `10s` or `1m`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d.is_zero() => Err("must be longer than zero".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(format!("{e} (examples: 500ms, 10s, 1m)")),
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let options = ServeOptions {
        telemetry_path: cli.telemetry_path.clone(),
        limits: Limits {
            max_connections: cli.max_connections as usize,
            read_header_timeout: cli.read_header_timeout,
            read_timeout: cli.read_timeout,
            max_requests: cli.max_requests as usize,
        },
        ..Default::default()
    };
    let web = match &cli.web_config_file {
        Some(path) => WebConfig::load(path)?,
        None => WebConfig::default(),
    };
    let options = ServeOptions { web, ..options };
    match cli.command.unwrap_or(Command::Serve) {
        Command::Healthcheck => healthcheck(&cli.listen_address, options.web.tls.is_some()).await,
        Command::Serve => {
            let hup = catch_sighup();
            let token = CancellationToken::new();
            cancel_on_signal(token.clone());
            let config =
                Config::load(&cli.config_file).map_err(|e| anyhow::anyhow!("{}: {e}", cli.config_file.display()))?;
            let apps = config.apps.len();
            let options = ServeOptions {
                config_file: Some(cli.config_file.clone()),
                ..options
            };
            let exporter = Exporter::new(config, options)?;
            let listener = bind(&cli.listen_address).await?;
            tracing::info!(address = %listener.local_addr()?, apps, version = env!("CARGO_PKG_VERSION"), "listening");
            reload_on_sighup(hup, exporter.reload_handle());
            exporter.serve(listener, token).await?;
            tracing::info!("stopped");
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo {
            simulator_address,
            fault_rate,
        } => {
            let simulator_address = parse_listen_address(&simulator_address)
                .map_err(|e| anyhow::anyhow!("--simulator.listen-address: {e}"))?;
            let listener = bind(&cli.listen_address).await?;
            let token = CancellationToken::new();
            cancel_on_signal(token.clone());
            let demo_options = demo::DemoOptions {
                simulator_address,
                fault_rates: tiw_push_exporter::simulator::FaultRates::uniform(fault_rate),
                ..Default::default()
            };
            demo::run(listener, demo_options, options, token).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig => match Config::load(&cli.config_file) {
            Ok(config) => {
                for warning in config.warnings() {
                    eprintln!("{}: warning: {warning}", cli.config_file.display());
                }
                outln!("{}: OK ({} apps)", cli.config_file.display(), config.apps.len());
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                for problem in e.problems() {
                    eprintln!("{}: {problem}", cli.config_file.display());
                }
                Ok(ExitCode::FAILURE)
            }
        },
        Command::Callback { action } => callback_command(&cli.config_file, action).await,
        Command::State {
            action: StateCommand::Forget { app },
        } => {
            let config =
                Config::load(&cli.config_file).map_err(|e| anyhow::anyhow!("{}: {e}", cli.config_file.display()))?;
            let store = tiw_push_exporter::store::Store::open(&config.state_path)
                .map_err(|e| anyhow::anyhow!("{e} (is the exporter still running on this store? stop it first)"))?;
            let (tasks, tombstones) = store.forget_app(app)?;
            outln!(
                "{}: forgot app {app}: {tasks} tasks, {tombstones} tombstones and its counters",
                store.path().display()
            );
            if config.app(app).is_some() {
                eprintln!(
                    "warning: app {app} is still in {}: it starts again from zero",
                    cli.config_file.display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Describe { app, task_id } => {
            let (_, client) = app_client(&cli.config_file, Some(app))?;
            match client.describe_whiteboard_push(&task_id).await {
                Ok(reply) => {
                    outln!("{}", serde_json::to_string_pretty(&reply)?);
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("DescribeWhiteboardPush failed: {e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}

/// The config and the API client of one app (`None`: the only app).
fn app_client(path: &std::path::Path, app: Option<u64>) -> anyhow::Result<(Config, TiwClient)> {
    let config = Config::load(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let app = match (app, config.apps.as_slice()) {
        (Some(app), _) => app,
        (None, [only]) => only.sdk_app_id,
        (None, _) => anyhow::bail!("{} has several apps: choose one with --app", path.display()),
    };
    let metrics = ExporterMetrics::new(std::sync::Arc::new(TaskRegistry::new()), false);
    let mut clients = build_clients(&config, &metrics, Default::default());
    let client = clients
        .remove(&app)
        .with_context(|| format!("app {app} is not in {}", path.display()))?;
    Ok((config, client))
}

/// `6v****Fd`: enough to tell keys apart, not enough to use one.
fn mask(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    match chars.len() {
        0 => "(none)".into(),
        n if n < 8 => "****".into(),
        n => format!("{}{}****{}{}", chars[0], chars[1], chars[n - 2], chars[n - 1]),
    }
}

async fn callback_command(path: &std::path::Path, action: CallbackCommand) -> anyhow::Result<ExitCode> {
    let report = |what: &str, result: Result<Option<String>, ApiError>| match result {
        Ok(request_id) => {
            outln!("{what}: OK (RequestId {})", request_id.unwrap_or_default());
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{what} failed: {e}");
            Ok(ExitCode::FAILURE)
        }
    };
    match action {
        CallbackCommand::Show { app } => {
            let (_, client) = app_client(path, app)?;
            match client.describe_callback().await {
                Ok(reply) => {
                    outln!("SdkAppId:    {}", client.sdk_app_id);
                    outln!(
                        "Callback:    {}",
                        reply
                            .callback
                            .filter(|u| !u.is_empty())
                            .unwrap_or_else(|| "(none)".into())
                    );
                    outln!("CallbackKey: {}", mask(reply.callback_key.as_deref().unwrap_or("")));
                    outln!("RequestId:   {}", reply.request_id.unwrap_or_default());
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("DescribeWhiteboardPushCallback failed: {e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        CallbackCommand::SetUrl { app, url, delete } => {
            let url = match (url, delete) {
                (_, true) => String::new(),
                (Some(url), false) => {
                    let parsed = url::Url::parse(&url).map_err(|e| anyhow::anyhow!("{url:?} is not a URL: {e}"))?;
                    anyhow::ensure!(
                        matches!(parsed.scheme(), "http" | "https"),
                        "the callback URL must be http or https"
                    );
                    url
                }
                (None, false) => anyhow::bail!("give the callback URL, or --delete"),
            };
            let (_, client) = app_client(path, app)?;
            report(
                "SetWhiteboardPushCallback",
                client.set_callback(&url).await.map(|r| r.request_id),
            )
        }
        CallbackCommand::SetKey {
            app,
            from_env,
            stdin,
            delete,
        } => {
            let (config, client) = app_client(path, app)?;
            let key = if delete {
                String::new()
            } else if let Some(var) = from_env {
                std::env::var(&var)
                    .ok()
                    .filter(|k| !k.is_empty())
                    .with_context(|| format!("environment variable {var} is not set"))?
            } else if stdin {
                let mut line = String::new();
                std::io::stdin()
                    .read_line(&mut line)
                    .context("cannot read the key from standard input")?;
                let key = line.trim_end_matches(['\r', '\n']).to_string();
                anyhow::ensure!(
                    !key.is_empty(),
                    "standard input held no key (use --delete to remove the key)"
                );
                key
            } else {
                let app = config.app(client.sdk_app_id).and_then(|a| a.callback_key.as_ref());
                app.map(|k| k.expose_secret().to_string())
                    .context("this app has no callback_key in the config: set it there, or use --from-env or --stdin")?
            };
            anyhow::ensure!(
                key.chars().count() <= 64,
                "the key is longer than 64 characters (Tencent's limit)"
            );
            report(
                "SetWhiteboardPushCallbackKey",
                client.set_callback_key(&key).await.map(|r| r.request_id),
            )
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_level, cli.log_format);
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tiw-push-exporter: {e:#}");
            ExitCode::FAILURE
        }
    }
}
