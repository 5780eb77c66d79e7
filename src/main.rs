//! Command line → logging → library: parses the flags, sets up logging and signals, and calls
//! the exporter (`serve`, `demo`) or one of the one-shot commands in [`tiw_push_exporter::admin`].

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;

use tiw_push_exporter::admin;
use tiw_push_exporter::cli::{Cli, Command, DemoArgs, LogArgs, LogFormat, LogLevel, ServeArgs, StateCommand, WebArgs};
use tiw_push_exporter::config::{parse_listen_address, Config};
use tiw_push_exporter::exporter::{Exporter, ServeOptions};
use tiw_push_exporter::reload::ReloadHandle;
use tiw_push_exporter::server::Limits;
use tiw_push_exporter::webconfig::WebConfig;

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
            .with(
                tracing_subscriber::fmt::layer()
                    .event_format(tiw_push_exporter::logfmt::Logfmt)
                    .with_writer(std::io::stderr),
            )
            .init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(tiw_push_exporter::logfmt::json_stderr()),
            )
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

/// Every `--web.listen-address`; the same address twice is an error, as binding it twice would be.
async fn bind_all(addresses: &[String]) -> anyhow::Result<Vec<tokio::net::TcpListener>> {
    let mut listeners = Vec::with_capacity(addresses.len());
    for address in addresses {
        listeners.push(bind(address).await?);
    }
    Ok(listeners)
}

/// What `serve` and `demo` take from the `--web.*` flags.
fn serve_options(web: &WebArgs) -> anyhow::Result<ServeOptions> {
    let web_config = match &web.listen.web_config_file {
        Some(path) => WebConfig::load(path)?,
        None => WebConfig::default(),
    };
    Ok(ServeOptions {
        telemetry_path: web.telemetry_path.clone(),
        limits: Limits {
            max_connections: web.max_connections as usize,
            max_connections_per_peer: web.max_connections_per_peer as usize,
            read_header_timeout: web.read_header_timeout,
            read_timeout: web.read_timeout,
            max_requests: web.max_requests as usize,
        },
        web: web_config,
        web_config_file: web.listen.web_config_file.clone(),
        exporter_metrics: !web.disable_exporter_metrics,
        shutdown_delay: web.shutdown_delay,
        ..Default::default()
    })
}

async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let hup = catch_sighup();
    let token = CancellationToken::new();
    cancel_on_signal(token.clone());
    tracing::info!(
        version = tiw_push_exporter::metrics::VERSION,
        revision = tiw_push_exporter::metrics::REVISION,
        branch = env!("TIW_BUILD_BRANCH"),
        build_date = env!("TIW_BUILD_DATE"),
        rust = env!("TIW_BUILD_RUSTC"),
        platform = env!("TIW_BUILD_TARGET"),
        "starting tiw-push-exporter"
    );
    let config_file = args.config.config_file.as_path();
    let options = serve_options(&args.web)?;
    let config = Config::load(config_file).map_err(|e| anyhow::anyhow!("{}: {e}", config_file.display()))?;
    // The callback keys' warnings are logged by the exporter itself (and again on reload).
    for warning in config.region_warnings() {
        tracing::warn!(file = %config_file.display(), "{warning}");
    }
    let apps = config.apps.len();
    let options = ServeOptions {
        config_file: Some(config_file.to_owned()),
        ..options
    };
    let exporter = Exporter::new(config, options)?;
    let listeners = bind_all(&args.web.listen.listen_address).await?;
    for listener in &listeners {
        tracing::info!(address = %listener.local_addr()?, apps, version = env!("CARGO_PKG_VERSION"), "listening");
    }
    reload_on_sighup(hup, exporter.reload_handle());
    exporter.serve_on(listeners, token).await?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

async fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let hup = catch_sighup();
    let simulator_address = parse_listen_address(&args.simulator_address)
        .map_err(|e| anyhow::anyhow!("--simulator.listen-address: {e}"))?;
    if args.web.listen.listen_address.len() > 1 {
        anyhow::bail!(
            "--web.listen-address: demo listens on one address, got {}",
            args.web.listen.listen_address.len()
        );
    }
    let own_config = match &args.config_file {
        Some(path) => Some(Config::load(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?),
        None => None,
    };
    let options = serve_options(&args.web)?;
    let listener = bind(args.web.listen.first()).await?;
    let token = CancellationToken::new();
    cancel_on_signal(token.clone());
    let demo_options = tiw_push_exporter::demo::DemoOptions {
        simulator_address,
        fault_rates: tiw_push_exporter::simulator::FaultRates::uniform(args.fault_rate),
        config: own_config,
        config_file: args.config_file.clone(),
        ..Default::default()
    };
    tiw_push_exporter::demo::run(listener, demo_options, options, token, |handle| {
        reload_on_sighup(hup, handle)
    })
    .await?;
    Ok(ExitCode::SUCCESS)
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(args) => serve(args).await,
        Command::Demo(args) => demo(args).await,
        Command::Healthcheck(args) => {
            let tls = match &args.web_config_file {
                Some(path) => WebConfig::load(path)?.tls.is_some(),
                None => false,
            };
            admin::healthcheck(args.first(), tls).await
        }
        Command::CheckConfig(args) => Ok(admin::check_config(&args.config_file)),
        Command::Callback { action } => admin::callback(action).await,
        Command::State {
            action: StateCommand::Forget { config, app },
        } => admin::forget_app(&config.config_file, app),
        Command::Describe { config, app, task_id } => admin::describe(&config.config_file, app, &task_id).await,
    }
}

/// glibc's allocator, tuned for a process whose big allocations are a scrape's buffers:
/// - one malloc arena: glibc gives every thread that allocates under contention its own (up to 8
///   per core), and a scrape's buffers, freed on one worker and reallocated on another, then stay
///   resident in each (RSS after plain scrapes at 10,000 tasks: 51 → 44 MiB);
/// - a fixed mmap threshold (128 KiB, glibc's default start): glibc raises it to the size of any
///   mapped block freed, up to 32 MiB, so after the first scrape its multi-MiB buffers came from the
///   heap and stayed resident between scrapes (34.5 → 30.7 MiB; BENCHMARKS.md, issue 27).
///
/// Set before any thread starts; `MALLOC_ARENA_MAX` and `MALLOC_MMAP_THRESHOLD_` in the environment
/// still win. musl has a single heap and no such threshold.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_allocator() {
    // SAFETY: mallopt only sets a parameter of glibc's allocator, and no other thread exists yet.
    unsafe {
        if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
        if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}

fn main() -> ExitCode {
    tune_allocator();
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime.block_on(run_main()),
        Err(e) => {
            eprintln!("tiw-push-exporter: cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run_main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve(cli.serve));
    // serve and demo log as their flags say; the one-shot commands at info, in logfmt.
    let log = match &command {
        Command::Serve(args) => args.log,
        Command::Demo(args) => args.log,
        _ => LogArgs {
            level: LogLevel::Info,
            format: LogFormat::Logfmt,
        },
    };
    init_logging(log.level, log.format);
    match run(command).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tiw-push-exporter: {e:#}");
            ExitCode::FAILURE
        }
    }
}
