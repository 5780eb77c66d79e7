//! The one-shot commands: `callback show|set-url|set-key`, `describe`, `healthcheck` and
//! `state forget`. Each prints what happened and returns the process's exit code.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use secrecy::ExposeSecret;

use crate::cli::{CallbackCommand, FeatureArg};
use crate::config::{parse_listen_address, Config};
use crate::instruments::ApiInstruments;
use crate::tencentcloud::client::build_clients;
use crate::tencentcloud::tiw::Feature;
use crate::tencentcloud::{ApiError, TiwClient};

/// `println!` that does not panic when standard output is a pipe whose reader went away.
macro_rules! outln {
    ($($arg:tt)*) => {
        print_quietly(&format!("{}\n", format_args!($($arg)*)))
    };
}

/// Writes `text` to standard output; a reader that went away (a closed pipe) is not an error.
pub fn print_quietly(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// GET /-/healthy on this machine's listener; exit 0 when it answers 200. Over HTTPS when the
/// web config has TLS; without the web config, a listener that does not speak plain HTTP is
/// tried again over HTTPS, so a container health check works whichever way the exporter runs.
pub async fn healthcheck(listen_address: &str, tls: bool) -> anyhow::Result<ExitCode> {
    let addr = parse_listen_address(listen_address).map_err(|e| anyhow::anyhow!("--web.listen-address: {e}"))?;
    let host = if addr.ip().is_unspecified() {
        std::net::SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    };
    // Our own loopback listener: its certificate is for the outside name, not 127.0.0.1.
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .danger_accept_invalid_certs(true)
        .build()?;
    let get = |scheme: &str| {
        let url = format!("{scheme}://{host}/-/healthy");
        let request = client.get(&url).send();
        async move { (url, request.await) }
    };
    let (mut url, mut answer) = get(if tls { "https" } else { "http" }).await;
    if let (false, Err(e)) = (tls, &answer) {
        // Connected, but no HTTP answer: a TLS listener (its reply to plain HTTP is not HTTP).
        if !e.is_connect() && !e.is_timeout() {
            (url, answer) = get("https").await;
        }
    }
    match answer {
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

/// The config and the API client of one app (`None`: the only app).
fn app_client(path: &Path, app: Option<u64>) -> anyhow::Result<(Config, TiwClient)> {
    let config = Config::load(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let app = match (app, config.apps.as_slice()) {
        (Some(app), _) => app,
        (None, [only]) => only.sdk_app_id,
        (None, _) => anyhow::bail!("{} has several apps: choose one with --app", path.display()),
    };
    let mut clients = build_clients(&config, &ApiInstruments::unexposed(), Default::default());
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

/// `warning: …` on standard error, where an operator running a command reads it.
fn warn(text: &str) {
    eprintln!("warning: {text}");
}

/// What TIW's key (`tiw`, empty: none) means for callbacks to an exporter on `config`'s app.
fn key_mismatch(config: &Config, sdk_app_id: u64, tiw: &str) -> Option<String> {
    let app = config.app(sdk_app_id)?;
    let ours: Vec<&str> = app
        .callback_key
        .iter()
        .chain(&app.callback_key_previous)
        .map(|k| k.expose_secret())
        .collect();
    match (tiw.is_empty(), ours.is_empty()) {
        (true, true) => None,
        (true, false) if app.allow_unsigned_callbacks => None,
        (true, false) => Some(format!(
            "TIW has no callback key for app {sdk_app_id}, so it sends unsigned callbacks, and the config's callback_key makes the exporter refuse them as `unsigned`"
        )),
        (false, true) => Some(format!(
            "the config has no callback_key for app {sdk_app_id}: the exporter cannot verify TIW's signed callbacks and refuses them; set callback_key to the same key and reload"
        )),
        (false, false) if ours.contains(&tiw) => None,
        (false, false) => Some(format!(
            "the key TIW signs with for app {sdk_app_id} differs from the config's callback_key (and callback_key_previous): callbacks are refused as `bad_signature` until they agree and the exporter reloads"
        )),
    }
}

pub async fn callback(action: CallbackCommand) -> anyhow::Result<ExitCode> {
    let path = action.config_file().to_owned();
    let path = path.as_path();
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
    let feature = match action.feature() {
        FeatureArg::Push => Feature::Push,
        FeatureArg::Record => Feature::Record,
    };
    let [describe_action, set_url_action, set_key_action] = feature.actions();
    match action {
        CallbackCommand::Show { app, .. } => {
            let (config, client) = app_client(path, app.app)?;
            match client.describe_callback(feature).await {
                Ok(reply) => {
                    let key = reply.callback_key.as_deref().unwrap_or("");
                    // The config's callback_key is the push feature's.
                    let problem = (feature == Feature::Push)
                        .then(|| key_mismatch(&config, client.sdk_app_id, key))
                        .flatten();
                    if let Some(problem) = problem {
                        warn(&problem);
                    }
                    outln!("SdkAppId:    {}", client.sdk_app_id);
                    outln!("Feature:     {}", feature.as_str());
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
                    eprintln!("{describe_action} failed: {e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        CallbackCommand::SetUrl {
            app,
            url,
            delete,
            replace,
            ..
        } => {
            let (config, client) = app_client(path, app.app)?;
            let url = match (url, delete) {
                (_, true) => String::new(),
                (Some(url), false) => {
                    let parsed = url::Url::parse(&url).map_err(|e| anyhow::anyhow!("{url:?} is not a URL: {e}"))?;
                    anyhow::ensure!(
                        matches!(parsed.scheme(), "http" | "https"),
                        "the callback URL must be http or https"
                    );
                    if parsed.scheme() == "http" {
                        warn("http:// sends every callback, its Sign included, in clear text across the internet; register an https:// URL (TLS on callback.listen_address, or a TLS-terminating ingress)");
                    }
                    let records = config
                        .app(client.sdk_app_id)
                        .is_some_and(|a| a.record && a.record_callback_key.is_some());
                    if feature == Feature::Record && parsed.path() == config.callback.path && !records {
                        warn(&format!("app {} has no record: true and record_callback_key in the config: the exporter answers its recording events 200 `ignored`, so nothing receives them at this URL", client.sdk_app_id));
                    } else if feature == Feature::Push && parsed.path() != config.callback.path {
                        warn(&format!(
                            "the URL's path {} is not the config's callback.path {}: the exporter answers 404 there unless something in front rewrites it",
                            parsed.path(),
                            config.callback.path
                        ));
                    }
                    url
                }
                (None, false) => anyhow::bail!("give the callback URL, or --delete"),
            };
            let current = client
                .describe_callback(feature)
                .await
                .map(|r| r.callback.unwrap_or_default());
            let change = Change {
                what: match feature {
                    Feature::Push => "callback URL",
                    Feature::Record => "recording callback URL",
                },
                sdk_app_id: client.sdk_app_id,
                flag: if delete { "--delete --replace" } else { "--replace" },
                consequence: match feature {
                    Feature::Push => "the backend behind it stops receiving TIW's push events. The exporter needs no callback to work (poll-only), and can relay TIW's requests to that backend (apps[].callback_forward_url): README, \"Callbacks and your existing backend\"",
                    Feature::Record => "the backend behind it stops receiving TIW's recording events (OnlineRecord…), and with them the links to each class's recorded videos",
                },
            };
            match change.decide(current.as_deref().map_err(|e| e.to_string()), &url, replace, |u| {
                u.to_string()
            }) {
                Decision::Go => {}
                Decision::Nothing => return Ok(ExitCode::SUCCESS),
                Decision::Refuse => return Ok(ExitCode::FAILURE),
            }
            report(
                set_url_action,
                client.set_callback(feature, &url).await.map(|r| r.request_id),
            )
        }
        CallbackCommand::SetKey {
            app,
            from_env,
            stdin,
            delete,
            replace,
            ..
        } => {
            let (config, client) = app_client(path, app.app)?;
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
                anyhow::ensure!(
                    feature == Feature::Push,
                    "give the recording callback key with --from-env or --stdin (the config's callback_key is the push feature's)"
                );
                let app = config.app(client.sdk_app_id).and_then(|a| a.callback_key.as_ref());
                app.map(|k| k.expose_secret().to_string())
                    .context("this app has no callback_key in the config: set it there, or use --from-env or --stdin")?
            };
            anyhow::ensure!(
                key.chars().count() <= 64,
                "the key is longer than 64 characters (Tencent's limit)"
            );
            let current = client
                .describe_callback(feature)
                .await
                .map(|r| r.callback_key.unwrap_or_default());
            let change = Change {
                what: match feature {
                    Feature::Push => "callback key",
                    Feature::Record => "recording callback key",
                },
                sdk_app_id: client.sdk_app_id,
                flag: if delete { "--delete --replace" } else { "--replace" },
                consequence: "whatever checks TIW's Sign with the current key (the backend that owns the callback URL) refuses every event from then on",
            };
            match change.decide(current.as_deref().map_err(|e| e.to_string()), &key, replace, mask) {
                Decision::Go => {}
                Decision::Nothing => return Ok(ExitCode::SUCCESS),
                Decision::Refuse => return Ok(ExitCode::FAILURE),
            }
            let sent = client.set_callback_key(feature, &key).await.map(|r| r.request_id);
            let taken = sent.is_ok();
            let result = report(set_key_action, sent);
            if taken && feature == Feature::Push {
                if let Some(problem) = key_mismatch(&config, client.sdk_app_id, &key) {
                    warn(&problem);
                }
            }
            result
        }
    }
}

/// A change `set-url` or `set-key` is asked to make to one of TIW's callback settings.
struct Change {
    /// `callback URL`, `callback key`.
    what: &'static str,
    sdk_app_id: u64,
    /// The flags that make the change anyway.
    flag: &'static str,
    /// What replacing the current value does to whoever relies on it.
    consequence: &'static str,
}

/// Whether a [`Change`] goes ahead.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    /// Nothing is set, or `--replace` was given.
    Go,
    /// The wanted value is already set: no call is made.
    Nothing,
    /// Another value is set (or it could not be read) and `--replace` was not given.
    Refuse,
}

impl Change {
    /// Decides from the value set now (`""`: none; `Err`: it could not be read) and the wanted
    /// one (`""`: delete), printing what is set and what would change; `show` prints a value
    /// (masks a key).
    fn decide(
        &self,
        current: Result<&str, String>,
        wanted: &str,
        replace: bool,
        show: impl Fn(&str) -> String,
    ) -> Decision {
        let Change {
            what,
            sdk_app_id: app,
            flag,
            consequence,
        } = self;
        let shown = |v: &str| if v.is_empty() { "(none)".to_string() } else { show(v) };
        let current = match current {
            Ok(current) => current,
            Err(e) if replace => {
                warn(&format!(
                    "cannot read app {app}'s current {what} (DescribeWhiteboardPushCallback: {e}); replacing it unread, as --replace asks"
                ));
                return Decision::Go;
            }
            Err(e) => {
                eprintln!(
                    "cannot read app {app}'s current {what} (DescribeWhiteboardPushCallback: {e}), so nothing was changed: whatever is set may belong to another backend. Grant the CAM action tiw:DescribeWhiteboardPushCallback, or rerun with {flag} to write it unread."
                );
                return Decision::Refuse;
            }
        };
        if current == wanted {
            outln!("app {app}'s {what} is already {}: nothing to change", shown(current));
            return Decision::Nothing;
        }
        if current.is_empty() {
            return Decision::Go;
        }
        let verb = if wanted.is_empty() { "delete" } else { "replace" };
        if replace {
            outln!(
                "app {app}'s {what}: {} -> {} (as {flag} asks)",
                shown(current),
                shown(wanted)
            );
            return Decision::Go;
        }
        eprintln!("app {app} already has a {what}, so nothing was changed:");
        eprintln!("  set now:      {}", shown(current));
        eprintln!("  would become: {}", shown(wanted));
        eprintln!("To {verb} it anyway, rerun with {flag}: {consequence}.");
        Decision::Refuse
    }
}

/// `check-config`: every problem with its key path (exit 1), or the warnings and OK.
pub fn check_config(path: &Path) -> ExitCode {
    match Config::load(path) {
        Ok(config) => {
            for warning in config.warnings() {
                eprintln!("{}: warning: {warning}", path.display());
            }
            outln!("{}: OK ({} apps)", path.display(), config.apps.len());
            ExitCode::SUCCESS
        }
        Err(e) => {
            for problem in e.problems() {
                eprintln!("{}: {problem}", path.display());
            }
            for warning in e.warnings() {
                eprintln!("{}: warning: {warning}", path.display());
            }
            ExitCode::FAILURE
        }
    }
}

/// `describe`: one DescribeWhiteboardPush, printed as JSON.
pub async fn describe(path: &Path, app: u64, task_id: &str) -> anyhow::Result<ExitCode> {
    let (_, client) = app_client(path, Some(app))?;
    match client.describe_whiteboard_push(task_id).await {
        Ok(reply) => {
            outln!("{}", serde_json::to_string_pretty(&reply)?);
            Ok(ExitCode::SUCCESS)
        }
        // A failed task is an answer, not a failure of `describe`: printed as JSON with Tencent's
        // error, as the task's state.
        Err(crate::tencentcloud::ApiError::Tencent {
            code,
            message,
            request_id,
        }) if code == "FailedOperation.WhiteboardPush" => {
            let failure = crate::task::Failure::new(&code, &message);
            let task = serde_json::json!({
                "TaskId": task_id,
                "Status": "FAILED",
                "Error": {
                    "Code": code,
                    "Message": message,
                    "PushCode": failure.push_code,
                    "TrtcCode": failure.trtc_code,
                },
                "RequestId": request_id,
            });
            outln!("{}", serde_json::to_string_pretty(&task)?);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("DescribeWhiteboardPush failed: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `state forget --app`: drops an app's tasks, tombstones and counters from a stopped exporter's store.
pub fn forget_app(path: &Path, app: u64) -> anyhow::Result<ExitCode> {
    let config = Config::load(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let store = crate::store::Store::open(&config.state_path)
        .map_err(|e| anyhow::anyhow!("{e} (is the exporter still running on this store? stop it first)"))?;
    let (tasks, tombstones) = store.forget_app(app)?;
    outln!(
        "{}: forgot app {app}: {tasks} tasks, {tombstones} tombstones and its counters",
        store.path().display()
    );
    if config.app(app).is_some() {
        eprintln!(
            "warning: app {app} is still in {}: it starts again from zero",
            path.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
