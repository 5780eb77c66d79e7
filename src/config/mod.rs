//! YAML → validated [`Config`]: the only file that parses YAML (design §5).
//!
//! The file is parsed to a YAML tree, `${VAR}` / `${VAR:-default}` are expanded in every string,
//! the tree is read into a raw serde shape whose leaves stay untyped, and [`validate`] then turns each
//! leaf into its real type. Keeping leaves untyped until validation lets `check-config` report
//! *every* problem at once, each with its key path, instead of stopping at serde's first error.
//! Unknown keys are collected with `serde_ignored` for the same reason.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_yaml::Value;
use url::Url;

/// Tencent's published ceiling: 20 requests per second per API action and account.
pub const MAX_REQUESTS_PER_SECOND: u32 = 20;
/// China site endpoint, the default.
pub const DEFAULT_ENDPOINT: &str = "https://tiw.tencentcloudapi.com";

/// The validated configuration. Built only by [`Config::from_yaml`] / [`Config::load`].
#[derive(Debug, Clone)]
pub struct Config {
    pub apps: Vec<AppConfig>,
    pub poll: PollConfig,
    pub callback: CallbackConfig,
    /// Directory of the embedded store.
    pub state_path: PathBuf,
    /// How long an ended task keeps its per-task series.
    pub retention_stopped_tasks: Duration,
    /// Tracked tasks at most (`retention.max_tasks`): the bound on memory and cardinality.
    pub max_tasks: usize,
    pub per_task_metrics: bool,
    /// `ha.replicas`: identical replicas polling the same account; each app's
    /// `requests_per_second` is already divided by it.
    pub ha_replicas: u32,
}

/// One SdkAppId and how to reach Tencent for it.
#[derive(Debug, Clone)]
pub struct AppConfig {
    pub sdk_app_id: u64,
    /// Key that signs this app's callbacks; `None`: push callbacks are refused as `unsigned`
    /// unless [`AppConfig::allow_unsigned_callbacks`].
    pub callback_key: Option<SecretString>,
    /// The key before a rotation, accepted too while events signed with it are still in flight.
    pub callback_key_previous: Option<SecretString>,
    /// Key that signs the real-time recording feature's events (SetOnlineRecordCallbackKey), its
    /// own. With it and [`AppConfig::record`], `OnlineRecord…` events at the callback path put
    /// the recording's read first; without, they are answered `ignored`.
    pub record_callback_key: Option<SecretString>,
    /// Accept unsigned push events for an app without a key (anyone who finds the URL can then
    /// claim tasks: design §3).
    pub allow_unsigned_callbacks: bool,
    /// Relay mode: every request TIW sends to the callback path for this app is also delivered,
    /// as TIW sent it, to this URL (the backend that owned TIW's callback URL before).
    pub callback_forward_url: Option<Url>,
    /// Find running tasks with DescribeRunningTasks.
    pub discover: bool,
    /// Count the running tasks of every type (`tiw_running_tasks`): the transcode and recording
    /// lists every `poll.census_interval`, the push list from discovery passes.
    pub census: bool,
    /// Track this app's real-time recording tasks one by one (`tiw_record_*`): found in the
    /// OnlineRecord running list every `poll.discovery_interval`, read with DescribeOnlineRecord
    /// within its own budget. Off unless set: an app that does not record costs nothing.
    pub record: bool,
    /// Task ids to follow in any case.
    pub tasks: Vec<String>,
    pub api: ApiConfig,
}

/// How to call Tencent Cloud API 3.0 for one app.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub endpoint: Url,
    pub region: String,
    pub credentials: Credentials,
    /// Per action and account; 1..=20.
    pub requests_per_second: u32,
    /// Names the account the credentials belong to: SecretIds of one account share one budget.
    pub account: Option<String>,
    pub timeout: Duration,
}

/// API credentials. `Debug` shows the SecretId only; the key and token are redacted by `secrecy`.
#[derive(Clone)]
pub struct Credentials {
    pub secret_id: String,
    pub secret_key: SecretString,
    /// Present for temporary credentials; sent as `X-TC-Token`.
    pub session_token: Option<SecretString>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("secret_id", &self.secret_id)
            .field("secret_key", &"[REDACTED]")
            .field("session_token", &self.session_token.as_ref().map(|_| "[REDACTED]"))
            .finish()
    }
}

impl PartialEq for Credentials {
    fn eq(&self, other: &Self) -> bool {
        self.secret_id == other.secret_id
            && self.secret_key.expose_secret() == other.secret_key.expose_secret()
            && self.session_token.as_ref().map(|t| t.expose_secret().to_owned())
                == other.session_token.as_ref().map(|t| t.expose_secret().to_owned())
    }
}

/// `poll.discovery_interval` unless set. A pass of DescribeRunningTasks costs one request per 500
/// running tasks of an app (in practice one per app: Tencent runs at most 100 push tasks per app),
/// from that action's own 20/s, and it is also how an end is noticed without callbacks. Every 5 s
/// keeps that under a few seconds; the budget is met by the rate limiter, not by this number: an
/// account with more than ~100 discovering apps gets passes as often as 20/s allows.
pub const DEFAULT_DISCOVERY_INTERVAL: Duration = Duration::from_secs(5);

/// `poll.census_interval` unless set: how often the census lists the task types discovery does
/// not (TranscodeH5, TranscodeJPG, OnlineRecord), one request each per app and pass from
/// DescribeRunningTasks' 20/s. Every minute costs an app 0.05 requests/s; a transcode backlog
/// worth an alert is minutes old.
pub const DEFAULT_CENSUS_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct PollConfig {
    pub interval: Duration,
    pub discovery_interval: Duration,
    pub census_interval: Duration,
}

/// `callback.max_in_flight` unless set: far above what group commit needs to keep up with TIW.
pub const DEFAULT_CALLBACKS_IN_FLIGHT: usize = 256;

#[derive(Debug, Clone)]
pub struct CallbackConfig {
    pub path: String,
    /// `None`: served on the main listener.
    pub listen_address: Option<SocketAddr>,
    pub max_body_bytes: usize,
    /// Callbacks handled at once; more are answered 503 so that TIW retries them.
    pub max_in_flight: usize,
    /// Tasks only callbacks named, not yet confirmed by the API, tracked at most per app.
    pub max_unconfirmed_tasks: usize,
    /// Aggregates follow a callback's unconfirmed claim only once the app's API could not be
    /// reached for this long (design §3).
    pub confirm_timeout: Duration,
    /// How relayed requests are delivered (`callback.forward`).
    pub forward: ForwardConfig,
}

/// `callback.forward`: how requests relayed to `apps[].callback_forward_url` are delivered.
#[derive(Debug, Clone, PartialEq)]
pub struct ForwardConfig {
    /// One delivery attempt at most this long.
    pub timeout: Duration,
    /// The wait after a first failed attempt; doubled after each further failure up to `retry_max`.
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// Requests queued per app at most; more are answered 503, so that TIW retries them.
    pub max_queue: usize,
    /// Bytes of queued bodies per app at most.
    pub max_queue_bytes: usize,
}

/// One problem found in a config file, with the key path it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Why a config could not be loaded: the file, or every problem in it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}{}", missing_hint(.path, .source))]
    Read { path: PathBuf, source: std::io::Error },
    /// Every problem, and the warnings of what could be read (`check-config` prints both).
    #[error("{}", format_problems(.0))]
    Invalid(Vec<Problem>, Vec<String>),
}

/// For a config file that does not exist: where to start one.
fn missing_hint(path: &std::path::Path, e: &std::io::Error) -> String {
    if e.kind() != std::io::ErrorKind::NotFound {
        return String::new();
    }
    format!(
        " (start from the example, which documents every key: cp config.example.yaml {}, then tiw-push-exporter check-config --config.file {}; config.example.yaml is in the release tarball and the repository)",
        path.display(),
        path.display()
    )
}

fn format_problems(problems: &[Problem]) -> String {
    let lines: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    lines.join("\n")
}

impl ConfigError {
    /// The problems, one a line, for `check-config`.
    pub fn problems(&self) -> Vec<String> {
        match self {
            ConfigError::Read { .. } => vec![self.to_string()],
            ConfigError::Invalid(p, _) => p.iter().map(|p| p.to_string()).collect(),
        }
    }

    /// Warnings about the parts of the file that could be read, with their key paths.
    pub fn warnings(&self) -> &[String] {
        match self {
            ConfigError::Invalid(_, warnings) => warnings,
            ConfigError::Read { .. } => &[],
        }
    }
}

impl Config {
    /// Reads and validates a config file, expanding `${VAR}` from the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_yaml(&text, &|name| std::env::var(name).ok())
    }

    /// Parses and validates config text; `env` resolves `${VAR}` and the `TENCENTCLOUD_*` fallbacks.
    ///
    /// No message shows a value that came from the environment: it may be a secret that landed
    /// under the wrong key, so the variable's name stands in for it (`got "${VAR}"`).
    pub fn from_yaml(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let given = std::cell::RefCell::new(Vec::new());
        let recording = |name: &str| {
            let value = env(name);
            if let Some(v) = &value {
                given.borrow_mut().push((name.to_string(), v.clone()));
            }
            value
        };
        let parsed = Config::parse(text, &recording);
        parsed.map_err(|(mut problems, warnings)| {
            let mut given = given.take();
            // Longest first, so that a value inside another is not half replaced.
            given.sort_by_key(|(_, v)| std::cmp::Reverse(v.len()));
            for p in &mut problems {
                for (name, value) in &given {
                    if value.chars().count() >= MIN_REDACTED_CHARS {
                        p.message = p.message.replace(value.as_str(), &format!("${{{name}}}"));
                    }
                }
            }
            ConfigError::Invalid(problems, warnings)
        })
    }

    fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, (Vec<Problem>, Vec<String>)> {
        let mut problems = Vec::new();
        let mut tree: Value = match serde_yaml::from_str(text) {
            Ok(Value::Null) => Value::Mapping(Default::default()),
            Ok(v) => v,
            Err(e) => {
                return Err((
                    vec![Problem {
                        path: String::new(),
                        message: format!("not valid YAML: {}", scrub(&e.to_string())),
                    }],
                    Vec::new(),
                ))
            }
        };
        expand_tree(&mut tree, &mut String::new(), env, &mut problems);
        let mut unknown = Vec::new();
        let raw: RawFile = {
            let mut on_unknown = |path: serde_ignored::Path<'_>| unknown.push(key_path(&path));
            let de = serde_ignored::Deserializer::new(tree, &mut on_unknown);
            match serde_path_to_error::deserialize(de) {
                Ok(raw) => raw,
                Err(e) => {
                    let path = e.path().to_string();
                    problems.push(Problem {
                        path: if path == "." { String::new() } else { path },
                        message: scrub(&e.inner().to_string()),
                    });
                    return Err((problems, Vec::new()));
                }
            }
        };
        for path in unknown {
            let message = validate::unknown_key_message(&path);
            problems.push(Problem { path, message });
        }
        let config = validate(raw, env, &mut problems);
        // Defaults shared by several apps are checked once per app; report each problem once.
        let mut seen = HashSet::new();
        problems.retain(|p| seen.insert(p.to_string()));
        if problems.is_empty() {
            Ok(config)
        } else {
            Err((problems, config.warnings()))
        }
    }

    /// What is valid but probably not meant, one line each with its key path (`check-config`).
    pub fn warnings(&self) -> Vec<String> {
        let mut out = self.region_warnings();
        for (i, app) in self.apps.iter().enumerate() {
            match (&app.callback_key, app.allow_unsigned_callbacks) {
                // Poll-only is a mode of its own (README, "Callbacks and your existing backend"):
                // no key, no warning, unless requests are relayed that the exporter cannot read.
                (None, false) if app.callback_forward_url.is_some() => out.push(format!(
                    "apps[{i}].callback_key: not set, so app {} relays TIW's callbacks to its backend but refuses them itself as unsigned (polling alone watches it); set the key TIW signs with (the backend's: callback show)",
                    app.sdk_app_id
                )),
                (None, false) => {}
                (None, true) => out.push(format!(
                    "apps[{i}].allow_unsigned_callbacks: app {} accepts unsigned push callbacks: anyone who finds the callback URL can claim tasks for it; set a callback_key",
                    app.sdk_app_id
                )),
                (Some(_), true) => out.push(format!(
                    "apps[{i}].allow_unsigned_callbacks: has no effect while callback_key is set (signed events are required)"
                )),
                (Some(_), false) => {}
            }
            if app.record_callback_key.is_some() && !app.record {
                out.push(format!(
                    "apps[{i}].record_callback_key: has no effect while record is off (app {}'s recordings are not tracked, so their events are answered ignored)",
                    app.sdk_app_id
                ));
            }
        }
        out
    }

    /// A warning per region outside Tencent's list for TIW, naming the apps that use it.
    pub fn region_warnings(&self) -> Vec<String> {
        let mut regions: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
        for app in &self.apps {
            regions
                .entry(app.api.region.as_str())
                .or_default()
                .push(app.sdk_app_id.to_string());
        }
        regions
            .into_iter()
            .filter_map(|(region, apps)| {
                validate::region_warning(&format!("region of app {}", apps.join(", ")), region)
            })
            .collect()
    }

    /// The configuration of one app.
    pub fn app(&self, sdk_app_id: u64) -> Option<&AppConfig> {
        self.apps.iter().find(|a| a.sdk_app_id == sdk_app_id)
    }
}

/// `apps[0].colour` rather than serde_ignored's `apps.?.0.colour`.
fn key_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", key_path(parent)),
        Path::Map { parent, key } => {
            let parent = key_path(parent);
            if parent.is_empty() {
                key.clone()
            } else {
                format!("{parent}.{key}")
            }
        }
        Path::Some { parent } | Path::NewtypeStruct { parent } | Path::NewtypeVariant { parent } => key_path(parent),
    }
}

/// Values from the environment at least this long are kept out of messages; shorter ones cannot
/// be secrets, and replacing them would garble messages (`1` in `apps[1]`).
const MIN_REDACTED_CHARS: usize = 4;

/// Removes quoted string values from serde's messages: an expanded secret in the wrong place must
/// not be echoed back in an error.
fn scrub(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(i) = rest.find("string \"") {
        out.push_str(&rest[..i]);
        out.push_str("a string");
        // serde quotes the value as Rust's Debug does: `\"` and `\\` inside do not end it.
        let mut chars = rest[i + "string \"".len()..].char_indices();
        let after = &rest[i + "string \"".len()..];
        rest = "";
        while let Some((j, c)) = chars.next() {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => {
                    rest = &after[j + 1..];
                    break;
                }
                _ => {}
            }
        }
    }
    out.push_str(rest);
    out
}

mod check;
mod expand;
mod forward;
#[cfg(test)]
mod tests;
mod validate;

pub use expand::expand;
use expand::expand_tree;
use validate::{validate, RawFile};

/// Parses a listen address the way Prometheus exporters write it: `:9897` means every interface.
pub fn parse_listen_address(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    let full = if s.starts_with(':') {
        format!("0.0.0.0{s}")
    } else {
        s.to_string()
    };
    if let Ok(a) = full.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Some(port) = full.strip_prefix("localhost:") {
        if let Ok(port) = port.parse::<u16>() {
            return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
        }
    }
    Err(format!("expected host:port such as :9897 or 127.0.0.1:9897, got {s:?}"))
}
