//! The raw shape of the file (structure typed, leaves untyped) and its validation into a
//! [`Config`]: every leaf converted, every problem collected with its key path.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;
use serde_yaml::Value;
use url::Url;

use super::check::Check;
use super::forward::{forward, forward_url, RawForward};
use super::{
    parse_listen_address, ApiConfig, AppConfig, CallbackConfig, Config, Credentials, PollConfig, Problem,
    DEFAULT_CALLBACKS_IN_FLIGHT, DEFAULT_CENSUS_INTERVAL, DEFAULT_DISCOVERY_INTERVAL, DEFAULT_ENDPOINT,
    MAX_REQUESTS_PER_SECOND,
};

#[derive(Deserialize, Default)]
pub(super) struct RawFile {
    tencentcloud: Option<RawApi>,
    apps: Option<Vec<RawApp>>,
    poll: Option<RawPoll>,
    callback: Option<RawCallback>,
    state: Option<RawState>,
    retention: Option<RawRetention>,
    per_task_metrics: Option<Value>,
    ha: Option<RawHa>,
}

#[derive(Deserialize, Default)]
struct RawHa {
    replicas: Option<Value>,
}

#[derive(Deserialize, Default, Clone)]
struct RawApi {
    endpoint: Option<Value>,
    region: Option<Value>,
    secret_id: Option<Value>,
    secret_key: Option<Value>,
    session_token: Option<Value>,
    requests_per_second: Option<Value>,
    account: Option<Value>,
    timeout: Option<Value>,
}

#[derive(Deserialize)]
struct RawApp {
    sdk_app_id: Option<Value>,
    callback_key: Option<Value>,
    callback_key_previous: Option<Value>,
    record_callback_key: Option<Value>,
    allow_unsigned_callbacks: Option<Value>,
    callback_forward_url: Option<Value>,
    discover: Option<Value>,
    census: Option<Value>,
    record: Option<Value>,
    tasks: Option<Vec<Value>>,
    tencentcloud: Option<RawApi>,
}

#[derive(Deserialize, Default)]
struct RawPoll {
    interval: Option<Value>,
    discovery_interval: Option<Value>,
    census_interval: Option<Value>,
}

#[derive(Deserialize, Default)]
struct RawCallback {
    path: Option<Value>,
    listen_address: Option<Value>,
    max_body_bytes: Option<Value>,
    max_in_flight: Option<Value>,
    max_unconfirmed_tasks: Option<Value>,
    confirm_timeout: Option<Value>,
    forward: Option<RawForward>,
}

#[derive(Deserialize, Default)]
struct RawState {
    path: Option<Value>,
}

#[derive(Deserialize, Default)]
struct RawRetention {
    stopped_tasks: Option<Value>,
    max_tasks: Option<Value>,
}

// ---------------------------------------------------------------------------------------------
// Validation: every leaf converted, every problem collected.

/// Layers an app's `tencentcloud` override over the defaults, key by key.
fn merge(base: &RawApi, over: Option<&RawApi>) -> (RawApi, [bool; 8]) {
    let Some(o) = over else {
        return (base.clone(), [false; 8]);
    };
    let pick = |a: &Option<Value>, b: &Option<Value>| b.clone().or_else(|| a.clone());
    let from_app = [
        o.endpoint.is_some(),
        o.region.is_some(),
        o.secret_id.is_some(),
        o.secret_key.is_some(),
        o.session_token.is_some(),
        o.requests_per_second.is_some(),
        o.timeout.is_some(),
        o.account.is_some(),
    ];
    (
        RawApi {
            endpoint: pick(&base.endpoint, &o.endpoint),
            region: pick(&base.region, &o.region),
            secret_id: pick(&base.secret_id, &o.secret_id),
            secret_key: pick(&base.secret_key, &o.secret_key),
            session_token: pick(&base.session_token, &o.session_token),
            requests_per_second: pick(&base.requests_per_second, &o.requests_per_second),
            timeout: pick(&base.timeout, &o.timeout),
            account: pick(&base.account, &o.account),
        },
        from_app,
    )
}

fn validate_api(
    c: &mut Check<'_>,
    raw: &RawApi,
    from_app: [bool; 8],
    app_path: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<ApiConfig> {
    let key = |i: usize, name: &str| {
        if from_app[i] {
            format!("{app_path}.tencentcloud.{name}")
        } else {
            format!("tencentcloud.{name}")
        }
    };
    let endpoint_text = c
        .string(&key(0, "endpoint"), raw.endpoint.as_ref())
        .unwrap_or_else(|| DEFAULT_ENDPOINT.into());
    let endpoint = match Url::parse(endpoint_text.trim()) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Some(u),
        _ => {
            c.fail(
                &key(0, "endpoint"),
                format!("expected an http(s) URL, got {endpoint_text:?}"),
            );
            None
        }
    };
    let default_region = match endpoint.as_ref().and_then(|u| u.host_str()) {
        Some(h) if h.contains(".intl.") => "ap-singapore",
        _ => "ap-guangzhou",
    };
    let region = c
        .string(&key(1, "region"), raw.region.as_ref())
        .unwrap_or_else(|| default_region.into());
    if region.is_empty() {
        c.fail(&key(1, "region"), "must not be empty");
    }
    // A key absent everywhere falls back to the usual Tencent Cloud environment variables.
    let secret_id = match raw.secret_id.as_ref() {
        Some(v) => c.secret(&key(2, "secret_id"), Some(v)),
        None => env("TENCENTCLOUD_SECRET_ID").filter(|s| !s.is_empty()),
    };
    let secret_key = match raw.secret_key.as_ref() {
        Some(v) => c.secret(&key(3, "secret_key"), Some(v)),
        None => env("TENCENTCLOUD_SECRET_KEY").filter(|s| !s.is_empty()),
    };
    let session_token = match raw.session_token.as_ref() {
        Some(v) => c.secret(&key(4, "session_token"), Some(v)),
        None => env("TENCENTCLOUD_SESSION_TOKEN").filter(|s| !s.is_empty()),
    };
    if secret_id.is_none() {
        c.fail(&key(2, "secret_id"), "missing: set it or TENCENTCLOUD_SECRET_ID");
    }
    if secret_key.is_none() {
        c.fail(&key(3, "secret_key"), "missing: set it or TENCENTCLOUD_SECRET_KEY");
    }
    let rps_path = key(5, "requests_per_second");
    let requests_per_second = match c.integer(&rps_path, raw.requests_per_second.as_ref()) {
        None => MAX_REQUESTS_PER_SECOND,
        Some(n) if (1..=MAX_REQUESTS_PER_SECOND as i64).contains(&n) => n as u32,
        Some(n) => {
            c.fail(
                &rps_path,
                format!("must be between 1 and {MAX_REQUESTS_PER_SECOND} (Tencent's limit per action), got {n}"),
            );
            MAX_REQUESTS_PER_SECOND
        }
    };
    let timeout = c.duration(&key(6, "timeout"), raw.timeout.as_ref(), Duration::from_secs(5));
    let account = c
        .string(&key(7, "account"), raw.account.as_ref())
        .map(|a| a.trim().to_string())
        .filter(|a| !a.is_empty());
    Some(ApiConfig {
        endpoint: endpoint?,
        region,
        credentials: Credentials {
            secret_id: secret_id?,
            secret_key: SecretString::from(secret_key?),
            session_token: session_token.map(SecretString::from),
        },
        requests_per_second,
        account,
        timeout,
    })
}

pub(super) fn validate(raw: RawFile, env: &dyn Fn(&str) -> Option<String>, problems: &mut Vec<Problem>) -> Config {
    let mut c = Check { problems };
    let defaults = raw.tencentcloud.unwrap_or_default();
    let mut apps = Vec::new();
    let mut seen = HashSet::new();
    let raw_apps = raw.apps.unwrap_or_default();
    if raw_apps.is_empty() {
        c.fail("apps", "at least one app is needed");
    }
    for (i, app) in raw_apps.iter().enumerate() {
        let path = format!("apps[{i}]");
        let id_path = format!("{path}.sdk_app_id");
        let sdk_app_id = match c.integer(&id_path, app.sdk_app_id.as_ref()) {
            Some(n) if n > 0 => Some(n as u64),
            Some(n) => {
                c.fail(&id_path, format!("must be a positive integer, got {n}"));
                None
            }
            None if app.sdk_app_id.is_none() => {
                c.fail(&id_path, "missing");
                None
            }
            None => None,
        };
        if let Some(id) = sdk_app_id {
            if !seen.insert(id) {
                c.fail(&id_path, format!("duplicate sdk_app_id {id}"));
            }
        }
        let callback_key = c.secret(&format!("{path}.callback_key"), app.callback_key.as_ref());
        if callback_key.as_ref().is_some_and(|k| k.chars().count() > 64) {
            c.fail(
                &format!("{path}.callback_key"),
                "longer than 64 characters (Tencent's limit)",
            );
        }
        let record_key_path = format!("{path}.record_callback_key");
        let record_callback_key = c.secret(&record_key_path, app.record_callback_key.as_ref());
        if record_callback_key.as_ref().is_some_and(|k| k.chars().count() > 64) {
            c.fail(&record_key_path, "longer than 64 characters (Tencent's limit)");
        }
        let previous_path = format!("{path}.callback_key_previous");
        let callback_key_previous = c.secret(&previous_path, app.callback_key_previous.as_ref());
        if callback_key_previous.as_ref().is_some_and(|k| k.chars().count() > 64) {
            c.fail(&previous_path, "longer than 64 characters (Tencent's limit)");
        }
        if callback_key_previous.is_some() && callback_key.is_none() {
            c.fail(
                &previous_path,
                "set without callback_key: during a rotation both are set",
            );
        }
        let allow_unsigned_callbacks = c.boolean(
            &format!("{path}.allow_unsigned_callbacks"),
            app.allow_unsigned_callbacks.as_ref(),
            false,
        );
        let callback_forward_url = forward_url(
            &mut c,
            &format!("{path}.callback_forward_url"),
            app.callback_forward_url.as_ref(),
        );
        let discover = c.boolean(&format!("{path}.discover"), app.discover.as_ref(), true);
        let census = c.boolean(&format!("{path}.census"), app.census.as_ref(), true);
        let record = c.boolean(&format!("{path}.record"), app.record.as_ref(), false);
        let mut tasks = Vec::new();
        for (j, t) in app.tasks.iter().flatten().enumerate() {
            let tpath = format!("{path}.tasks[{j}]");
            match c.string(&tpath, Some(t)) {
                Some(s) if s.trim().is_empty() => c.fail(&tpath, "empty task id"),
                Some(s) if !crate::task::is_task_id(&s) => c.fail(
                    &tpath,
                    format!(
                        "not a task id: expected 1 to {} printable characters without spaces",
                        crate::task::MAX_TASK_ID
                    ),
                ),
                Some(s) if tasks.contains(&s) => {}
                Some(s) => tasks.push(s),
                None => {}
            }
        }
        let (merged, from_app) = merge(&defaults, app.tencentcloud.as_ref());
        let api = validate_api(&mut c, &merged, from_app, &path, env);
        if let (Some(sdk_app_id), Some(api)) = (sdk_app_id, api) {
            apps.push(AppConfig {
                sdk_app_id,
                callback_key: callback_key.map(SecretString::from),
                callback_key_previous: callback_key_previous.map(SecretString::from),
                record_callback_key: record_callback_key.map(SecretString::from),
                allow_unsigned_callbacks,
                callback_forward_url,
                discover,
                census,
                record,
                tasks,
                api,
            });
        }
    }
    if raw_apps.is_empty() {
        // Still check the defaults, so a missing secret is reported together with the missing apps.
        validate_api(&mut c, &defaults, [false; 8], "", env);
    }

    let poll = raw.poll.unwrap_or_default();
    let poll = PollConfig {
        interval: c.duration("poll.interval", poll.interval.as_ref(), Duration::from_secs(15)),
        discovery_interval: c.duration(
            "poll.discovery_interval",
            poll.discovery_interval.as_ref(),
            DEFAULT_DISCOVERY_INTERVAL,
        ),
        census_interval: c.duration(
            "poll.census_interval",
            poll.census_interval.as_ref(),
            DEFAULT_CENSUS_INTERVAL,
        ),
    };

    let cb = raw.callback.unwrap_or_default();
    let cb_path = c
        .string("callback.path", cb.path.as_ref())
        .unwrap_or_else(|| "/callback".into());
    if !cb_path.starts_with('/') || cb_path.contains(char::is_whitespace) {
        c.fail(
            "callback.path",
            format!("must be a URL path starting with '/', got {cb_path:?}"),
        );
    }
    let listen_address = match c.string("callback.listen_address", cb.listen_address.as_ref()) {
        None => None,
        Some(s) if s.is_empty() => None,
        Some(s) => match parse_listen_address(&s) {
            Ok(a) => Some(a),
            Err(e) => {
                c.fail("callback.listen_address", e);
                None
            }
        },
    };
    let max_body_bytes = match c.integer("callback.max_body_bytes", cb.max_body_bytes.as_ref()) {
        None => 65536,
        Some(n) if n > 0 => n as usize,
        Some(n) => {
            c.fail("callback.max_body_bytes", format!("must be positive, got {n}"));
            65536
        }
    };

    let max_in_flight = match c.integer("callback.max_in_flight", cb.max_in_flight.as_ref()) {
        None => DEFAULT_CALLBACKS_IN_FLIGHT,
        Some(n) if n > 0 => n as usize,
        Some(n) => {
            c.fail("callback.max_in_flight", format!("must be positive, got {n}"));
            DEFAULT_CALLBACKS_IN_FLIGHT
        }
    };

    let max_unconfirmed_tasks = match c.integer("callback.max_unconfirmed_tasks", cb.max_unconfirmed_tasks.as_ref()) {
        None => crate::registry::MAX_UNCONFIRMED_PER_APP,
        Some(n) if n > 0 => n as usize,
        Some(n) => {
            c.fail("callback.max_unconfirmed_tasks", format!("must be positive, got {n}"));
            crate::registry::MAX_UNCONFIRMED_PER_APP
        }
    };

    let state_path = c
        .string("state.path", raw.state.unwrap_or_default().path.as_ref())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "./data".into());
    let retention = raw.retention.unwrap_or_default();
    let retention_stopped_tasks = c.duration(
        "retention.stopped_tasks",
        retention.stopped_tasks.as_ref(),
        Duration::from_secs(3600),
    );
    let max_tasks = match c.integer("retention.max_tasks", retention.max_tasks.as_ref()) {
        None => crate::task::DEFAULT_MAX_TASKS,
        Some(n) if n > 0 => n as usize,
        Some(n) => {
            c.fail("retention.max_tasks", format!("must be positive, got {n}"));
            crate::task::DEFAULT_MAX_TASKS
        }
    };
    let confirm_timeout = c.duration(
        "callback.confirm_timeout",
        cb.confirm_timeout.as_ref(),
        Duration::from_secs(300),
    );
    let per_task_metrics = c.boolean("per_task_metrics", raw.per_task_metrics.as_ref(), true);
    // Identical replicas poll the same account: each takes its share of every budget, so that
    // together they stay within Tencent's limit per action (README "High availability"; see
    // `replica_share`).
    let ha_replicas = match c.integer("ha.replicas", raw.ha.unwrap_or_default().replicas.as_ref()) {
        None => 1,
        Some(n) if (1..=MAX_REQUESTS_PER_SECOND as i64).contains(&n) => n as u32,
        Some(n) => {
            c.fail(
                "ha.replicas",
                format!("must be between 1 and {MAX_REQUESTS_PER_SECOND} (each replica needs at least 1 request/s), got {n}"),
            );
            1
        }
    };
    for app in &mut apps {
        let budget = app.api.requests_per_second;
        // Every replica needs one request a second, and the pair one more held back: a budget
        // smaller than that cannot be split without the replicas together exceeding it.
        if ha_replicas > 1 && budget <= ha_replicas {
            c.fail(
                "ha.replicas",
                format!(
                    "{ha_replicas} replicas need more than {ha_replicas} requests/s of SdkAppId {}'s budget (1 each, 1 held back), but its tencentcloud.requests_per_second is {budget}: together they would exceed it",
                    app.sdk_app_id
                ),
            );
        }
        app.api.requests_per_second = replica_share(budget, ha_replicas);
    }

    Config {
        apps,
        poll,
        callback: CallbackConfig {
            path: cb_path,
            listen_address,
            max_body_bytes,
            max_in_flight,
            max_unconfirmed_tasks,
            confirm_timeout,
            forward: forward(&mut c, cb.forward.as_ref(), max_body_bytes),
        },
        state_path: PathBuf::from(state_path),
        retention_stopped_tasks,
        max_tasks,
        per_task_metrics,
        ha_replicas,
    }
}

/// The field names serde's derive gives a struct, read by asking it to deserialize from a
/// deserializer that only records them (`deserialize_struct` receives the list).
fn fields_of<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    struct Fields<'a>(&'a mut &'static [&'static str]);
    impl<'de> serde::Deserializer<'de> for Fields<'_> {
        type Error = serde::de::value::Error;
        fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(serde::de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(serde::de::Error::custom("fields read"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
            unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Fields(&mut fields));
    fields
}

/// The keys the file may hold under `parent` (a key path with its list indices removed:
/// `apps[3].tencentcloud` → `apps.tencentcloud`).
fn known_keys(parent: &str) -> &'static [&'static str] {
    match parent {
        "" => fields_of::<RawFile>(),
        "tencentcloud" | "apps.tencentcloud" => fields_of::<RawApi>(),
        "apps" => fields_of::<RawApp>(),
        "poll" => fields_of::<RawPoll>(),
        "callback" => fields_of::<RawCallback>(),
        "callback.forward" => fields_of::<RawForward>(),
        "state" => fields_of::<RawState>(),
        "retention" => fields_of::<RawRetention>(),
        "ha" => fields_of::<RawHa>(),
        _ => &[],
    }
}

/// Edit distance between two short words (Levenshtein).
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substituted = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substituted.min(previous + 1).min(row[j] + 1);
        }
    }
    row[b.len()]
}

/// The candidate closest to `word`, if it is close enough to be a typo (at most a third of the
/// word's letters differ, and at least one).
pub(super) fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (distance(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// What to say of an unknown key: the closest known key beside it, when there is one.
pub(super) fn unknown_key_message(path: &str) -> String {
    let plain: String = {
        // Drop list indices: apps[0].colour → apps.colour.
        let mut out = String::with_capacity(path.len());
        let mut in_index = false;
        for c in path.chars() {
            match c {
                '[' => in_index = true,
                ']' => in_index = false,
                c if !in_index => out.push(c),
                _ => {}
            }
        }
        out
    };
    let (parent, leaf) = plain.rsplit_once('.').unwrap_or(("", plain.as_str()));
    match closest(leaf, known_keys(parent).iter().copied()) {
        Some(known) => format!("unknown key (did you mean `{known}`?)"),
        None => match known_keys(parent) {
            [] => "unknown key".into(),
            keys => format!("unknown key (known here: {})", keys.join(", ")),
        },
    }
}

/// The regions Tencent lists for TIW's API 3.0 ("Request Structure" of the Interactive Whiteboard
/// API, tencentcloud.com/document/product/1176/55145, and the API 3.0 region list it refers to).
/// A region outside it is a warning, not an error: the list may grow.
pub const TIW_REGIONS: [&str; 16] = [
    "ap-guangzhou",
    "ap-shanghai",
    "ap-beijing",
    "ap-chengdu",
    "ap-chongqing",
    "ap-nanjing",
    "ap-hongkong",
    "ap-singapore",
    "ap-bangkok",
    "ap-jakarta",
    "ap-mumbai",
    "ap-seoul",
    "ap-tokyo",
    "na-siliconvalley",
    "na-ashburn",
    "eu-frankfurt",
];

/// A warning for a region Tencent does not list for TIW, naming the closest listed one.
pub(super) fn region_warning(key: &str, region: &str) -> Option<String> {
    if TIW_REGIONS.contains(&region) {
        return None;
    }
    let hint = match closest(region, TIW_REGIONS) {
        Some(near) => format!("did you mean {near}?"),
        None => format!("TIW's regions: {}", TIW_REGIONS.join(", ")),
    };
    Some(format!(
        "{key}: {region:?} is not a region Tencent lists for TIW ({hint}); requests may fail with InvalidParameterValue"
    ))
}

/// One of `replicas` identical replicas' share of a budget of `requests_per_second`: an equal part
/// of the budget less one request. Each replica's limiter keeps its own requests within its share
/// as Tencent sees them, allowing for its own latency jitter; it cannot see the other replica's,
/// so a request of one that arrives late cannot be made up by the other. The one request a second
/// held back absorbs that: with 10 + 10 of 20, 4 of 20 runs of the HA test
/// (`ha::two_replicas_killed_in_turn_…`) had the simulator refuse one request; with 9 + 9, none of
/// 16. One replica keeps the whole budget; every replica keeps at least 1.
fn replica_share(requests_per_second: u32, replicas: u32) -> u32 {
    if replicas <= 1 {
        return requests_per_second;
    }
    (requests_per_second.saturating_sub(1) / replicas).max(1)
}

#[cfg(test)]
mod suggestion_tests {
    use super::*;

    #[test]
    fn unknown_keys_name_the_closest_known_one() {
        assert_eq!(
            unknown_key_message("poll.discovery_intervall"),
            "unknown key (did you mean `discovery_interval`?)"
        );
        assert_eq!(
            unknown_key_message("apps[2].callbak_key"),
            "unknown key (did you mean `callback_key`?)"
        );
        assert_eq!(
            unknown_key_message("apps[0].tencentcloud.secretkey"),
            "unknown key (did you mean `secret_key`?)"
        );
        assert_eq!(
            unknown_key_message("tencentclod"),
            "unknown key (did you mean `tencentcloud`?)"
        );
        let far = unknown_key_message("state.colour");
        assert_eq!(far, "unknown key (known here: path)");
    }

    #[test]
    fn a_mistyped_region_is_a_warning_with_the_closest_region() {
        let w = region_warning("tencentcloud.region", "ap-guangzhuo").unwrap();
        assert!(w.contains("did you mean ap-guangzhou?"), "{w}");
        assert!(region_warning("tencentcloud.region", "ap-singapore").is_none());
        let far = region_warning("tencentcloud.region", "mars-1").unwrap();
        assert!(far.contains("TIW's regions: ap-guangzhou"), "{far}");
    }
}
