//! Unit tests of the receiver: the order of checks, keys and rotation, reasons.
use super::*;
use crate::metrics::ExporterMetrics;

fn receiver(registry: Arc<TaskRegistry>) -> CallbackReceiver {
    let yaml = "tencentcloud: {secret_id: a, secret_key: b}\napps: [{sdk_app_id: 7, callback_key: k}, {sdk_app_id: 8, allow_unsigned_callbacks: true}, {sdk_app_id: 9}]\n";
    let config = Config::from_yaml(yaml, &|_| None).unwrap();
    let metrics = ExporterMetrics::new(registry.clone(), true);
    CallbackReceiver::new(&config, registry, metrics.callback_sinks())
}

/// What DescribeWhiteboardPush answers for a running task.
fn running() -> Facts {
    Facts {
        status: TaskStatus::Pushing,
        ..Default::default()
    }
}

#[test]
fn stopped_with_an_error_keeps_its_reason() {
    let registry = Arc::new(TaskRegistry::new());
    let r = receiver(registry.clone());
    // A task the API confirmed: a claim about it shows at once.
    registry.track(8, "t1", None, crate::registry::Source::Discovery);
    registry.observe_poll(8, "t1", &running());
    let body = serde_json::json!({
        "EventType": STOPPED, "SdkAppId": 8, "Timestamp": 1_700_000_000u64,
        "EventData": {"TaskId": "t1", "FinishReason": "EXCEPTION", "PushStartTime": 1_699_999_000u64,
                      "PushStopTime": 1_700_000_000u64, "ExceptionCnt": 3,
                      "Error": {"Code": "InternalError", "Message": "render process crashed"}}
    });
    let p = r.process(body.to_string().as_bytes(), 1_700_000_002.0);
    assert_eq!((p.event_type, p.outcome), (STOPPED, CallbackOutcome::Accepted));
    assert_eq!(p.delay_seconds, Some(2.0));
    let t = registry.get(8, "t1").unwrap();
    assert_eq!(
        (t.shown().status(), t.shown().finish_reason(), t.shown().exception_cnt()),
        (TaskStatus::Stopped, Some(FinishReason::Exception), 3)
    );
}

/// During a key rotation both keys are taken; afterwards only the new one.
#[test]
fn a_rotation_accepts_the_previous_key_until_it_is_removed() {
    let registry = Arc::new(TaskRegistry::new());
    let rotating = "tencentcloud: {secret_id: a, secret_key: b}\napps: [{sdk_app_id: 7, callback_key: new, callback_key_previous: old}]\n";
    let config = Config::from_yaml(rotating, &|_| None).unwrap();
    let r = CallbackReceiver::new(
        &config,
        registry.clone(),
        ExporterMetrics::new(registry, true).callback_sinks(),
    );
    let event = |key: &str, task: &str| {
        format!(
            r#"{{"EventType":"WhiteboardPushStarted","SdkAppId":7,"Timestamp":1,"EventData":{{"TaskId":"{task}"}},"ExpireTime":9,"Sign":"{}"}}"#,
            compute_sign(key, 9)
        )
    };
    assert_eq!(
        r.process(event("old", "a").as_bytes(), 1.0).outcome,
        CallbackOutcome::Accepted
    );
    assert_eq!(
        r.process(event("new", "b").as_bytes(), 1.0).outcome,
        CallbackOutcome::Accepted
    );
    assert_eq!(
        r.process(event("other", "c").as_bytes(), 1.0).outcome,
        CallbackOutcome::BadSignature
    );
    let done = Config::from_yaml(&rotating.replace(", callback_key_previous: old", ""), &|_| None).unwrap();
    r.reconfigure(&done);
    assert_eq!(
        r.process(event("old", "d").as_bytes(), 1.0).outcome,
        CallbackOutcome::BadSignature
    );
    assert_eq!(
        r.process(event("new", "e").as_bytes(), 1.0).outcome,
        CallbackOutcome::Accepted
    );
    let orphan = Config::from_yaml(&rotating.replace("callback_key: new, ", ""), &|_| None).unwrap_err();
    assert!(
        orphan
            .to_string()
            .contains("apps[0].callback_key_previous: set without callback_key"),
        "{orphan}"
    );
}

#[test]
fn checks_run_in_the_documented_order() {
    let r = receiver(Arc::new(TaskRegistry::new()));
    let outcome = |body: &str, now: f64| r.process(body.as_bytes(), now).outcome;
    assert_eq!(outcome("{not json", 0.0), CallbackOutcome::Malformed);
    // The envelope comes first, then the app: an unknown app's push fields are never read.
    let bad_app_and_shape = r#"{"EventType":"WhiteboardPushStarted","SdkAppId":99,"Timestamp":1,"EventData":{}}"#;
    assert_eq!(outcome(bad_app_and_shape, 0.0), CallbackOutcome::UnknownApp);
    // Another feature's event is ignored before any signature check, signed or not.
    let other =
        r#"{"EventType":"TranscodeFinished","SdkAppId":7,"Timestamp":1,"EventData":{},"ExpireTime":5,"Sign":"00"}"#;
    assert_eq!(outcome(other, 0.0), CallbackOutcome::Ignored);
    let unsigned = r#"{"EventType":"WhiteboardPushStarted","SdkAppId":7,"Timestamp":1,"EventData":{}}"#;
    assert_eq!(outcome(unsigned, 0.0), CallbackOutcome::Unsigned);
    // An app without a key refuses unsigned push events unless it allows them.
    let no_key = r#"{"EventType":"WhiteboardPushStarted","SdkAppId":9,"Timestamp":1,"EventData":{"TaskId":"a"}}"#;
    assert_eq!(outcome(no_key, 0.0), CallbackOutcome::Unsigned);
    let allowed = no_key.replace("\"SdkAppId\":9", "\"SdkAppId\":8");
    assert_eq!(outcome(&allowed, 0.0), CallbackOutcome::Accepted);
    // A wrong signature on an expired event is a bad signature, not merely expired.
    let wrong =
        r#"{"EventType":"WhiteboardPushStarted","SdkAppId":7,"Timestamp":1,"EventData":{},"ExpireTime":5,"Sign":"00"}"#;
    assert_eq!(outcome(wrong, 10.0), CallbackOutcome::BadSignature);
    let signed = |data: &str| {
        format!(
            r#"{{"EventType":"WhiteboardPushStopped","SdkAppId":7,"Timestamp":1,"EventData":{data},"ExpireTime":5,"Sign":"{}"}}"#,
            compute_sign("k", 5)
        )
    };
    assert_eq!(outcome(&signed("{}"), 10.0), CallbackOutcome::Expired);
    // Push fields are read only once the signature holds.
    assert_eq!(outcome(&signed("{}"), 5.0), CallbackOutcome::Malformed);
    assert_eq!(outcome(&signed(r#"{"TaskId":"t"}"#), 5.0), CallbackOutcome::Accepted);
    assert_eq!(outcome(&signed(r#"{"TaskId":"t"}"#), 5.0), CallbackOutcome::Duplicate);
}

/// design §3: only TaskId is required; a Stopped without FinishReason, or with one Tencent does
/// not document, ends the task with reason OTHER.
#[test]
fn a_stop_without_a_documented_reason_is_other() {
    let registry = Arc::new(TaskRegistry::new());
    let r = receiver(registry.clone());
    for (id, data) in [
        ("n1", r#"{"TaskId":"n1"}"#),
        ("n2", r#"{"TaskId":"n2","FinishReason":"RENDER_CRASHED"}"#),
        ("n3", r#"{"TaskId":"n3","FinishReason":""}"#),
    ] {
        registry.track(8, id, None, crate::registry::Source::Discovery);
        registry.observe_poll(8, id, &running());
        let body = format!(r#"{{"EventType":"WhiteboardPushStopped","SdkAppId":8,"Timestamp":1,"EventData":{data}}}"#);
        assert_eq!(
            r.process(body.as_bytes(), 1.0).outcome,
            CallbackOutcome::Accepted,
            "{data}"
        );
        let t = registry.get(8, id).unwrap();
        assert_eq!(
            (t.shown().status(), t.shown().finish_reason()),
            (TaskStatus::Stopped, Some(FinishReason::Other))
        );
    }
}

#[test]
fn tencent_documented_sign_vector() {
    assert_eq!(
        compute_sign("Xz4ZgayTr7rMgWQrH", 1588040109),
        "a2dabb362a9b811c0e26953a6276a41c"
    );
    assert!(verify_sign(
        "Xz4ZgayTr7rMgWQrH",
        1588040109,
        "a2dabb362a9b811c0e26953a6276a41c"
    ));
    assert!(!verify_sign(
        "Xz4ZgayTr7rMgWQrH",
        1588040110,
        "a2dabb362a9b811c0e26953a6276a41c"
    ));
    assert!(!verify_sign(
        "Xz4ZgayTr7rMgWQrH",
        1588040109,
        "A2DABB362A9B811C0E26953A6276A41C"
    ));
    assert!(!verify_sign("Xz4ZgayTr7rMgWQrH", 1588040109, ""));
}
