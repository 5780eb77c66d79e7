//! Unit tests of the configuration: expansion, every problem with its key path, secrets.
use super::*;

fn env(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
    move |name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
}

fn problems(text: &str, vars: &'static [(&'static str, &'static str)]) -> Vec<String> {
    match Config::from_yaml(text, &env(vars)) {
        Ok(_) => vec![],
        Err(e) => e.problems(),
    }
}

const EXAMPLE: &str = include_str!("../../config.example.yaml");

#[test]
fn example_config_is_valid() {
    let c = Config::from_yaml(
        EXAMPLE,
        &env(&[("TENCENTCLOUD_SECRET_ID", "AKIDx"), ("TENCENTCLOUD_SECRET_KEY", "sk")]),
    )
    .unwrap();
    assert_eq!(c.apps[0].sdk_app_id, 1400000001);
    assert_eq!(c.apps[0].api.requests_per_second, 20);
    assert_eq!(c.poll.interval, Duration::from_secs(15));
    assert_eq!(c.callback.path, "/callback");
    assert!(c.apps[0].callback_key.is_none());
    assert!(c.apps[0].api.credentials.session_token.is_none());
}

#[test]
fn expansion() {
    let e = env(&[("A", "x"), ("EMPTY", "")]);
    assert_eq!(expand("${A}", &e).unwrap(), "x");
    assert_eq!(expand("p${A}q", &e).unwrap(), "pxq");
    assert_eq!(expand("${B:-dflt}", &e).unwrap(), "dflt");
    assert_eq!(expand("${EMPTY:-d}", &e).unwrap(), "d");
    assert_eq!(expand("${B:-}", &e).unwrap(), "");
    assert_eq!(expand("$$5", &e).unwrap(), "$5");
    assert_eq!(expand("a$b", &e).unwrap(), "a$b");
    assert!(expand("${B}", &e).unwrap_err().contains("B is not set"));
    assert!(expand("${A", &e).is_err());
}

#[test]
fn every_problem_is_reported_with_its_key_path() {
    let text = r#"
tencentcloud:
  secret_id: ${NOPE}
  requests_per_second: 50
  timeout: soon
apps:
  - sdk_app_id: 1400000001
    colour: blue
  - sdk_app_id: 1400000001
poll:
  interval: 15 parsecs
"#;
    let p = problems(text, &[]);
    let has = |needle: &str| p.iter().any(|l| l.contains(needle));
    assert!(
        has("tencentcloud.secret_id: environment variable NOPE is not set"),
        "{p:?}"
    );
    assert!(has("tencentcloud.secret_key: missing"), "{p:?}");
    assert!(
        has("tencentcloud.requests_per_second: must be between 1 and 20"),
        "{p:?}"
    );
    assert!(has("tencentcloud.timeout: expected a duration"), "{p:?}");
    assert!(has("apps[0].colour: unknown key"), "{p:?}");
    assert!(has("apps[1].sdk_app_id: duplicate sdk_app_id 1400000001"), "{p:?}");
    assert!(has("poll.interval: expected a duration"), "{p:?}");
}

#[test]
fn per_app_override_and_numbers_from_env() {
    let text = r#"
tencentcloud: {secret_id: a, secret_key: b}
apps:
  - sdk_app_id: ${APP}
    tencentcloud: {secret_id: c, secret_key: d, requests_per_second: 5, endpoint: "https://tiw.intl.tencentcloudapi.com"}
  - sdk_app_id: 2
"#;
    let c = Config::from_yaml(text, &env(&[("APP", "1400000009")])).unwrap();
    assert_eq!(c.apps[0].sdk_app_id, 1400000009);
    assert_eq!(c.apps[0].api.credentials.secret_id, "c");
    assert_eq!(c.apps[0].api.requests_per_second, 5);
    assert_eq!(c.apps[0].api.region, "ap-singapore");
    assert_eq!(c.apps[1].api.credentials.secret_id, "a");
    assert_eq!(c.apps[1].api.region, "ap-guangzhou");
    assert_ne!(
        crate::tencentcloud::ratelimit::budget_key(&c.apps[0].api),
        crate::tencentcloud::ratelimit::budget_key(&c.apps[1].api)
    );
}

#[test]
fn secrets_never_reach_errors_or_debug() {
    let text = "tencentcloud: {secret_id: a, secret_key: SUPERSECRETKEY}\napps: SUPERSECRETKEY\n";
    let p = problems(text, &[]);
    assert!(!p.is_empty());
    assert!(p.iter().all(|l| !l.contains("SUPERSECRETKEY")), "{p:?}");
    let ok = Config::from_yaml(
            "tencentcloud: {secret_id: a, secret_key: SUPERSECRETKEY, session_token: TOKENVALUE}\napps: [{sdk_app_id: 1, callback_key: CBKEYVALUE}]\n",
            &env(&[]),
        )
        .unwrap();
    let dbg = format!("{ok:?}");
    for s in ["SUPERSECRETKEY", "TOKENVALUE", "CBKEYVALUE"] {
        assert!(!dbg.contains(s), "{dbg}");
    }
}

/// Found by `cargo fuzz` (fuzz/regressions/config): a value from the environment under a key
/// whose check echoes what it got. The variable's name is shown instead.
#[test]
fn values_from_the_environment_are_never_echoed() {
    let p = problems(
            "tencentcloud: {endpoint: \"https://x ${SK}\", region: \"${SK}\", secret_id: a, secret_key: b}\napps: [{sdk_app_id: 1}]\n",
            &[("SK", "SUPERSECRETKEY")],
        );
    assert!(!p.is_empty());
    assert!(p.iter().all(|l| !l.contains("SUPERSECRETKEY")), "{p:?}");
    assert!(
        p.iter()
            .any(|l| l.contains("tencentcloud.endpoint") && l.contains("${SK}")),
        "{p:?}"
    );
}

/// Found by `cargo fuzz` (fuzz/regressions/config): a whole file that is one YAML string with
/// quotes in it, the secret expanded inside. serde quotes it with `\"` escapes; the scrub
/// used to stop at the first one and echo the rest, secret included.
#[test]
fn a_quoted_string_with_escapes_is_scrubbed_whole() {
    let p = problems(r#"abc",${SK}"def"#, &[("SK", "SUPERSECRETKEY")]);
    assert!(!p.is_empty());
    assert!(p.iter().all(|l| !l.contains("SUPERSECRETKEY")), "{p:?}");
    assert_eq!(
        scrub(r#"invalid type: string "a\"b\\\"c" here, string "x", expected y"#),
        "invalid type: a string here, a string, expected y"
    );
}

#[test]
fn listen_addresses() {
    assert_eq!(parse_listen_address(":9897").unwrap(), "0.0.0.0:9897".parse().unwrap());
    assert_eq!(
        parse_listen_address("127.0.0.1:1").unwrap(),
        "127.0.0.1:1".parse().unwrap()
    );
    assert_eq!(parse_listen_address("[::1]:80").unwrap(), "[::1]:80".parse().unwrap());
    assert!(parse_listen_address("nope").is_err());
}

#[test]
fn ha_replicas_split_every_budget() {
    let yaml = |ha: &str| {
        format!(
            "tencentcloud: {{secret_id: a, secret_key: b, requests_per_second: 20}}\napps:\n  - sdk_app_id: 1\n  - sdk_app_id: 2\n    tencentcloud: {{secret_id: c, secret_key: d, requests_per_second: 5}}\n{ha}"
        )
    };
    let one = Config::from_yaml(&yaml(""), &|_| None).unwrap();
    assert_eq!(one.ha_replicas, 1);
    assert_eq!(one.apps[0].api.requests_per_second, 20);
    let two = Config::from_yaml(&yaml("ha: {replicas: 2}\n"), &|_| None).unwrap();
    assert_eq!(
        (two.apps[0].api.requests_per_second, two.apps[1].api.requests_per_second),
        (9, 2),
        "an equal part, less one request a second held back for the replicas' unseen jitter"
    );
    let four = Config::from_yaml(&yaml("ha: {replicas: 4}\n"), &|_| None).unwrap();
    assert_eq!(four.apps[1].api.requests_per_second, 1, "4 x 1 of 5, one held back");
    // Replicas that together would exceed an app's budget are refused, naming the app.
    for replicas in [5, 20] {
        let e = Config::from_yaml(&yaml(&format!("ha: {{replicas: {replicas}}}\n")), &|_| None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("ha.replicas:") && e.contains("SdkAppId 2's budget") && e.contains("requests_per_second is 5"),
            "{e}"
        );
    }
    let e = Config::from_yaml(&yaml("ha: {replicas: 0}\n"), &|_| None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("ha.replicas: must be between 1 and 20"), "{e}");
}
