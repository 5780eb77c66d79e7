//! The command line: flags and subcommands (clap derive; the doc comments are `--help`).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// `--version`: what node_exporter and the Prometheus toolkit print (`-V` prints the version only).
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (branch: ",
    env!("TIW_BUILD_BRANCH"),
    ", revision: ",
    env!("TIW_BUILD_REVISION"),
    ")\n  build date:       ",
    env!("TIW_BUILD_DATE"),
    "\n  rust version:     ",
    env!("TIW_BUILD_RUSTC"),
    "\n  platform:         ",
    env!("TIW_BUILD_TARGET"),
);

/// Prometheus exporter for Tencent Cloud Interactive Whiteboard (TIW) whiteboard-push tasks.
///
/// Without a subcommand it serves: `tiw-push-exporter --config.file config.yaml` is
/// `tiw-push-exporter serve --config.file config.yaml`. Each subcommand takes only its own flags
/// (`tiw-push-exporter <command> --help`).
#[derive(Parser)]
#[command(version, long_version = LONG_VERSION, about, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// `serve`'s flags, when no subcommand is given.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// `--config.file`, for every command that reads the configuration.
#[derive(Args, Clone, Debug)]
pub struct ConfigArg {
    /// Path of the YAML configuration file (start from config.example.yaml).
    #[arg(long = "config.file", env = "TIW_CONFIG_FILE", default_value = "config.yaml")]
    pub config_file: PathBuf,
}

/// Where the exporter listens and with which TLS and auth: `serve`'s and `demo`'s, and what
/// `healthcheck` needs to reach them (the same flags and environment variables, so the image's
/// health check follows the address and TLS the exporter runs with).
#[derive(Args, Clone, Debug)]
pub struct ListenArgs {
    /// Address to listen on for metrics, health and callbacks; repeat the flag (or separate with
    /// commas) to listen on several (healthcheck checks the first).
    #[arg(
        long = "web.listen-address",
        env = "TIW_WEB_LISTEN_ADDRESS",
        default_value = ":9897",
        value_delimiter = ','
    )]
    pub listen_address: Vec<String>,
    /// TLS and basic auth, in the Prometheus exporter-toolkit format (tls_server_config,
    /// basic_auth_users); re-read when it or a certificate it names changes.
    #[arg(long = "web.config.file", env = "TIW_WEB_CONFIG_FILE")]
    pub web_config_file: Option<PathBuf>,
}

impl ListenArgs {
    /// The first listen address (the one `healthcheck` checks, and `demo`'s only one).
    pub fn first(&self) -> &str {
        self.listen_address.first().map(String::as_str).unwrap_or(":9897")
    }
}

/// The HTTP server's flags (`serve` and `demo`).
#[derive(Args, Clone, Debug)]
pub struct WebArgs {
    #[command(flatten)]
    pub listen: ListenArgs,
    /// Leave out the metrics about the exporter process and its HTTP server (process_*,
    /// tiw_exporter_http_*); what it observes of TIW and its own polling stays.
    #[arg(long = "web.disable-exporter-metrics")]
    pub disable_exporter_metrics: bool,
    /// Path under which metrics are exposed.
    #[arg(long = "web.telemetry-path", default_value = "/metrics", value_parser = parse_telemetry_path)]
    pub telemetry_path: String,
    /// Open connections at most, per listener; further clients wait to be accepted.
    #[arg(long = "web.max-connections", default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Open connections at most from one peer address, per listener; more from it are closed at
    /// once, so that one client cannot hold every connection (0: no such cap).
    #[arg(long = "web.max-connections-per-peer", default_value_t = 128)]
    pub max_connections_per_peer: u32,
    /// Time a client has to send a request's headers; also closes connections idle for as long.
    #[arg(long = "web.read-header-timeout", default_value = "10s", value_parser = parse_duration)]
    pub read_header_timeout: Duration,
    /// Time a client has to send a request's body (callbacks); 408 after it.
    #[arg(long = "web.read-timeout", default_value = "10s", value_parser = parse_duration)]
    pub read_timeout: Duration,
    /// Scrapes answered at once; more get 503 (0: no limit).
    #[arg(long = "web.max-requests", default_value_t = 40)]
    pub max_requests: u32,
    /// On SIGTERM, answer /-/ready with 503 for this long while still serving, so that a load
    /// balancer sends new callbacks to another replica before this one stops (0s: stop at once).
    #[arg(long = "web.shutdown-delay", default_value = "0s", value_parser = parse_duration_or_zero)]
    pub shutdown_delay: Duration,
}

/// The logging flags (`serve` and `demo`; the one-shot commands print what they do).
#[derive(Args, Clone, Copy, Debug)]
pub struct LogArgs {
    /// Only log messages with the given severity or above.
    #[arg(long = "log.level", value_enum, default_value = "info")]
    pub level: LogLevel,
    /// Output format of log messages.
    #[arg(long = "log.format", value_enum, default_value = "logfmt")]
    pub format: LogFormat,
}

/// `serve`'s flags.
#[derive(Args, Clone, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    #[command(flatten)]
    pub web: WebArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

/// `--app`, where the configuration may have one app or several.
#[derive(Args, Clone, Copy, Debug)]
pub struct AppChoice {
    /// The SdkAppId to act on (may be left out when the configuration has one app).
    #[arg(long)]
    pub app: Option<u64>,
}

#[derive(Subcommand)]
pub enum Command {
    /// Poll Tencent Cloud and serve /metrics (the default).
    Serve(ServeArgs),
    /// Run against an embedded TIW simulator: no Tencent Cloud account needed.
    Demo(DemoArgs),
    /// Validate the configuration file and print every problem with its key path.
    CheckConfig(ConfigArg),
    /// Exit 0 when the exporter at --web.listen-address answers /-/healthy (for container health checks).
    Healthcheck(ListenArgs),
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
        #[command(flatten)]
        config: ConfigArg,
        /// The task's SdkAppId (must be in the configuration).
        #[arg(long)]
        app: u64,
        /// The task id.
        task_id: String,
    },
}

/// `demo`'s flags.
#[derive(Args, Clone, Debug)]
pub struct DemoArgs {
    /// Run this configuration against the simulator instead of the demo's own: its apps,
    /// credentials and callback keys are simulated; its endpoint and state.path are replaced
    /// (Tencent is never called and the real store is never touched).
    #[arg(long = "config.file")]
    pub config_file: Option<PathBuf>,
    /// Address of the embedded simulator's API.
    #[arg(long = "simulator.listen-address", default_value = "127.0.0.1:0")]
    pub simulator_address: String,
    /// Share of the simulator's API requests that fail, spread over every kind of fault
    /// (5xx, reset, hang, truncated or non-JSON body, InternalError, RequestLimitExceeded,
    /// 3 s late, SignatureExpire). Change it live with PUT /sim/faults.
    #[arg(long = "simulator.fault-rate", default_value_t = 0.0, value_parser = parse_share)]
    pub fault_rate: f64,
    #[command(flatten)]
    pub web: WebArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Subcommand)]
pub enum StateCommand {
    /// Forget one app's tasks, tombstones and counters for good. A reload or restart that leaves
    /// an app out of the configuration keeps them; this is how they go.
    Forget {
        #[command(flatten)]
        config: ConfigArg,
        /// The SdkAppId whose recorded state goes.
        #[arg(long)]
        app: u64,
    },
}

/// `--feature`: whose callback settings a `callback` command reads or changes. TIW keeps a URL and
/// a key per feature.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum FeatureArg {
    /// Whiteboard push (Describe/SetWhiteboardPushCallback, SetWhiteboardPushCallbackKey).
    #[default]
    Push,
    /// Real-time recording (Describe/SetOnlineRecordCallback, SetOnlineRecordCallbackKey).
    Record,
}

#[derive(Subcommand)]
pub enum CallbackCommand {
    /// DescribeWhiteboardPushCallback (or DescribeOnlineRecordCallback): the registered URL and
    /// key (masked).
    Show {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        app: AppChoice,
        /// The feature whose callback settings to read.
        #[arg(long, value_enum, default_value_t)]
        feature: FeatureArg,
    },
    /// SetWhiteboardPushCallback (or SetOnlineRecordCallback): register URL (https; http is taken
    /// with a warning) as the app's callback of the feature, or delete it.
    SetUrl {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        app: AppChoice,
        /// The feature whose callback URL to set.
        #[arg(long, value_enum, default_value_t)]
        feature: FeatureArg,
        /// The exporter's callback URL as TIW reaches it, e.g. https://exporter.example.com/callback.
        #[arg(required_unless_present = "delete")]
        url: Option<String>,
        /// Delete the callback URL (sends the empty URL, which Tencent documents as delete): TIW
        /// then sends no push callbacks.
        #[arg(long, conflicts_with = "url")]
        delete: bool,
        /// Replace (or delete) a URL that is already registered. Without it the command reads the
        /// current URL first and changes nothing when another one is set: that URL is most likely
        /// the backend through which the product learns of its pushes.
        #[arg(long)]
        replace: bool,
    },
    /// SetWhiteboardPushCallbackKey (or SetOnlineRecordCallbackKey): the key from the config's
    /// callback_key (push only), --from-env or --stdin (never an argument, where ps would show it).
    SetKey {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        app: AppChoice,
        /// The feature whose callback key to set.
        #[arg(long, value_enum, default_value_t)]
        feature: FeatureArg,
        /// Read the key from this environment variable.
        #[arg(long = "from-env", value_name = "VAR", conflicts_with = "stdin")]
        from_env: Option<String>,
        /// Read the key from the first line of standard input.
        #[arg(long)]
        stdin: bool,
        /// Delete the key: TIW then sends unsigned callbacks.
        #[arg(long, conflicts_with_all = ["from_env", "stdin"])]
        delete: bool,
        /// Replace (or delete) a key that is already set. Without it the command reads the current
        /// key first and changes nothing when another one is set: the backend that checks TIW's
        /// Sign with it would refuse every event.
        #[arg(long)]
        replace: bool,
    },
}

impl CallbackCommand {
    /// The configuration file the command reads.
    pub fn config_file(&self) -> &std::path::Path {
        match self {
            CallbackCommand::Show { config, .. }
            | CallbackCommand::SetUrl { config, .. }
            | CallbackCommand::SetKey { config, .. } => &config.config_file,
        }
    }

    /// The feature the command acts on.
    pub fn feature(&self) -> FeatureArg {
        match self {
            CallbackCommand::Show { feature, .. }
            | CallbackCommand::SetUrl { feature, .. }
            | CallbackCommand::SetKey { feature, .. } => *feature,
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Logfmt,
    Json,
}

/// A path for `/metrics` that the router can serve and that no other endpoint uses.
fn parse_telemetry_path(s: &str) -> Result<String, String> {
    let reserved = crate::http::FIXED_ROUTES;
    if !s.starts_with('/') || s.contains(|c: char| c.is_whitespace() || c.is_control()) {
        Err(format!("{s:?} must be a URL path starting with '/'"))
    } else if reserved.contains(&s) || s.starts_with("/-/") {
        Err(format!("{s:?} is taken by another endpoint ({})", reserved.join(", ")))
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

/// A duration such as `0s`, `500ms` or `10s`.
fn parse_duration_or_zero(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 0s, 500ms, 10s)"))
}

/// A positive duration such as `500ms`, `10s` or `1m`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d.is_zero() => Err("must be longer than zero".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(format!("{e} (examples: 500ms, 10s, 1m)")),
    }
}
