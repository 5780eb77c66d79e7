//! The fuzz targets' bodies (`fuzz/`), kept in the library so that the regression corpus also
//! runs on stable in CI (`tests/it/hostile.rs` replays `fuzz/seeds` and `fuzz/regressions`).
//! Each function panics when an invariant breaks; that is how the fuzzer sees a bug.

use std::sync::Arc;

use prometheus::{Encoder, TextEncoder};

use crate::callback::{CallbackOutcome, CallbackReceiver};
use crate::config::Config;
use crate::metrics::ExporterMetrics;
use crate::registry::{Source, TaskRegistry};
use crate::tencentcloud::client::decode_reply;
use crate::tencentcloud::tiw::{RunningTasks, WhiteboardPush};

/// App 1400000001 signs with a key; 1400000002 allows unsigned callbacks, so the fuzzer reaches
/// the parser and the registry without having to forge an MD5; 1400000003 has no key and refuses them.
const CALLBACK_CONFIG: &str = "
tencentcloud: {secret_id: AKIDfuzz, secret_key: fuzz-secret-key}
apps:
  - {sdk_app_id: 1400000001, callback_key: fuzz-callback-key}
  - {sdk_app_id: 1400000002, allow_unsigned_callbacks: true}
  - {sdk_app_id: 1400000003}
";

/// Raw callback bytes → verify → parse → apply to a registry → `/metrics`.
///
/// Whatever arrives is classified without a panic; a refused body leaves the registry as it
/// was; the same body again is a duplicate and counts nothing; the rendered text stays
/// well-formed.
pub fn callback(data: &[u8]) {
    let config = Config::from_yaml(CALLBACK_CONFIG, &|_| None).expect("the fixed config is valid");
    let registry = Arc::new(TaskRegistry::new());
    let metrics = ExporterMetrics::new(registry.clone(), true);
    let receiver = CallbackReceiver::new(&config, registry.clone(), metrics.callback_sinks());
    let before = registry.snapshot();
    let now = 1_700_000_000.0;
    let first = receiver.process(data, now);
    let taken = matches!(first.outcome, CallbackOutcome::Accepted);
    if !taken {
        assert_eq!(registry.snapshot(), before, "a refused body changed state");
    }
    let after_first = registry.snapshot();
    let second = receiver.process(data, now);
    if taken {
        assert!(
            matches!(second.outcome, CallbackOutcome::Duplicate),
            "{:?}",
            second.outcome
        );
        assert_eq!(registry.snapshot().1, after_first.1, "a retry counted twice");
    }
    check_rendering(&metrics);
}

const STATUSES: [u16; 4] = [200, 400, 500, 502];
const APP: u64 = 1_400_000_001;
const ENDPOINT: &str = "https://tiw.tencentcloudapi.com";

/// Bytes as Tencent's API might answer them → the reply decoder → the registry → `/metrics`.
///
/// The first byte picks the HTTP status (low bits) and the action (high bit); the rest is the
/// body. Decoding never panics, every error displays, and whatever decodes applies to the
/// registry and renders well-formed text.
pub fn api_reply(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let status = STATUSES[usize::from(selector) % STATUSES.len()];
    let registry = Arc::new(TaskRegistry::new());
    let metrics = ExporterMetrics::new(registry.clone(), true);
    if selector & 0x80 == 0 {
        registry.track(APP, "task-1", None, Source::Config);
        match decode_reply::<WhiteboardPush>(ENDPOINT, status, body) {
            Ok(reply) => {
                let answer = reply.answer();
                let before = registry.stats(APP).unwrap_or_default();
                registry.apply_answer(APP, "task-1", &answer, std::time::Duration::ZERO);
                let again = registry.stats(APP).unwrap_or_default();
                registry.apply_answer(APP, "task-1", &answer, std::time::Duration::ZERO);
                let after = registry.stats(APP).unwrap_or_default();
                assert!(
                    after.started_total == again.started_total
                        && after.finished_total == again.finished_total
                        && again.started_total >= before.started_total,
                    "the same answer twice moved a counter twice"
                );
            }
            Err(e) => {
                let _ = (
                    e.to_string(),
                    e.metric_label(),
                    e.is_retryable(),
                    e.is_app_down(),
                    e.kind(),
                );
            }
        }
    } else {
        match decode_reply::<RunningTasks>(ENDPOINT, status, body) {
            Ok(page) => {
                for t in page.tasks.unwrap_or_default() {
                    if let Some((id, room_id)) = crate::poller::discovered(APP, t) {
                        registry.track(APP, &id, room_id, Source::Discovery);
                    }
                }
            }
            Err(e) => {
                let _ = (e.to_string(), e.metric_label());
            }
        }
    }
    check_rendering(&metrics);
}

/// A secret as the environment gives it; the fuzz input never holds this text itself.
const SECRET: &str = "Zx9SECRETq7";

/// Config text with `${VAR}` expansion → validation.
///
/// Loading never panics, and no message or `Debug` output carries a secret that came in
/// through the environment.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.contains(SECRET) {
        return;
    }
    let env = |name: &str| match name {
        "SK" | "KEY" | "TOKEN" => Some(format!("pre-{SECRET}-post")),
        "EMPTY" => Some(String::new()),
        "NUM" => Some("1400000001".to_string()),
        "DUR" => Some("15s".to_string()),
        _ => None,
    };
    match Config::from_yaml(text, &env) {
        Ok(config) => {
            assert!(
                !format!("{config:?}").contains(SECRET),
                "Debug of a config shows a secret"
            );
        }
        Err(e) => {
            let message = e.to_string();
            assert!(!message.contains(SECRET), "a config error shows a secret: {message}");
        }
    }
}

/// Bytes as a store file → [`crate::store::Store::open`] and `load` → the registry → `/metrics`.
///
/// No panic escapes (redb's are turned into errors), every refusal names the file, and what loads
/// restores into a registry that renders well-formed text.
pub fn store(data: &[u8]) {
    let dir = std::env::temp_dir().join(format!("tiw-push-exporter-fuzz-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    let file = dir.join(crate::store::FILE_NAME);
    if std::fs::write(&file, data).is_err() {
        return;
    }
    let loaded = crate::store::Store::open(&dir).and_then(|s| s.load());
    match loaded {
        Ok(restored) => {
            let registry = Arc::new(TaskRegistry::new());
            registry.restore(restored);
            check_rendering(&ExporterMetrics::new(registry, true));
        }
        Err(e) => {
            let message = e.to_string();
            assert!(
                message.contains(crate::store::FILE_NAME),
                "a refusal without the path: {message}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `/metrics` is well-formed line by line, and the hand-written task families equal the
/// `prometheus` crate's encoding of the same families.
fn check_rendering(metrics: &ExporterMetrics) {
    let text = metrics.render();
    for line in text.lines() {
        assert!(
            line.starts_with('#') || line.starts_with("tiw_") || line.starts_with("process_"),
            "a label value broke out of its line: {line:?}"
        );
    }
    let mut fast = String::new();
    metrics.encode_task_families(&mut fast);
    let mut slow = Vec::new();
    // As `Registry::gather` does, families with no series are left out before encoding.
    let families: Vec<_> = metrics
        .task_families()
        .into_iter()
        .filter(|f| !f.get_metric().is_empty())
        .collect();
    TextEncoder::new()
        .encode(&families, &mut slow)
        .expect("families encode");
    let samples = |t: &str| {
        let mut v: Vec<String> = t.lines().filter(|l| !l.starts_with('#')).map(String::from).collect();
        v.sort();
        v
    };
    let (fast, slow) = (samples(&fast), samples(&String::from_utf8(slow).expect("utf-8")));
    if fast != slow {
        let only =
            |a: &[String], b: &[String]| -> Vec<String> { a.iter().filter(|l| !b.contains(l)).cloned().collect() };
        panic!(
            "the text renderer and the prometheus crate disagree:\nonly in the text: {:?}\nonly in prometheus': {:?}",
            only(&fast, &slow),
            only(&slow, &fast)
        );
    }
}
