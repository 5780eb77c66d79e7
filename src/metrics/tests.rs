//! Unit tests of the exposition: the labels of design §4, and the text path equal to the crate's encoder.
use super::*;
use crate::registry::{Facts, FinishReason, Source, TaskStatus};
use prometheus::{Encoder, TextEncoder};

#[test]
fn renders_every_family_with_spec_labels() {
    let tasks = Arc::new(TaskRegistry::new());
    tasks.ensure_apps([7]);
    tasks.track(7, "t1", Some(42), Source::Discovery);
    tasks.observe_poll(
        7,
        "t1",
        &Facts {
            status: TaskStatus::Stopped,
            finish_reason: Some(FinishReason::Exception),
            push_start_time: Some(100),
            push_stop_time: Some(160),
            exception_cnt: Some(2),
            im_sync_time: Some(101),
            group_id: Some("g".into()),
            push_user_id: Some("u".into()),
            failure: Some(Box::new(crate::task::Failure::new(
                "FailedOperation.Record",
                "render crashed",
            ))),
            ..Default::default()
        },
    );
    let m = ExporterMetrics::new(tasks, true);
    let text = m.render();
    assert!(
        text.contains(r#"tiw_push_task_ended_timestamp_seconds{sdk_app_id="7",task_id="t1",room_id="42"} "#),
        "{text}"
    );
    for line in [
        r#"tiw_push_task_info{sdk_app_id="7",task_id="t1",room_id="42",group_id="g",push_user_id="u"} 1"#,
        r#"tiw_push_task_status{sdk_app_id="7",task_id="t1",room_id="42",status="STOPPED"} 1"#,
        r#"tiw_push_task_status{sdk_app_id="7",task_id="t1",room_id="42",status="PUSHING"} 0"#,
        r#"tiw_push_task_finish_reason{sdk_app_id="7",task_id="t1",room_id="42",reason="EXCEPTION"} 1"#,
        r#"tiw_push_task_duration_seconds{sdk_app_id="7",task_id="t1",room_id="42"} 60"#,
        r#"tiw_push_task_exceptions{sdk_app_id="7",task_id="t1",room_id="42"} 2"#,
        r#"tiw_push_task_im_sync_timestamp_seconds{sdk_app_id="7",task_id="t1",room_id="42"} 101"#,
        r#"tiw_push_task_failure_info{sdk_app_id="7",task_id="t1",room_id="42",reason="EXCEPTION",code="FailedOperation.Record",push_code="",trtc_code=""} 1"#,
        r#"tiw_exporter_per_task_metrics_enabled{sdk_app_id="7"} 1"#,
        r#"tiw_push_tasks{sdk_app_id="7",status="STOPPED"} 1"#,
        r#"tiw_push_tasks{sdk_app_id="7",status="UNKNOWN"} 0"#,
        r#"tiw_push_tasks_finished_total{sdk_app_id="7",reason="EXCEPTION"} 1"#,
        r#"tiw_push_tasks_finished_total{sdk_app_id="7",reason="FAILED"} 0"#,
        r#"tiw_push_exceptions_total{sdk_app_id="7"} 2"#,
        r#"tiw_push_duration_seconds_bucket{sdk_app_id="7",reason="EXCEPTION",le="60"} 1"#,
        r#"tiw_push_duration_seconds_count{sdk_app_id="7",reason="EXCEPTION"} 1"#,
        "# TYPE tiw_push_tasks_started_total counter",
        "tiw_exporter_build_info{",
    ] {
        assert!(text.contains(line), "missing {line}\n{text}");
    }
}

/// The text the fast path writes is the exposition the `prometheus` crate's encoder gives.
#[test]
fn direct_text_equals_the_protobuf_path() {
    let tasks = Arc::new(TaskRegistry::new());
    tasks.ensure_apps([7, 8]);
    let reasons = [FinishReason::Auto, FinishReason::UserCall, FinishReason::Exception];
    for i in 0..200i64 {
        let id = if i == 3 {
            "we\"ird\\id\nx".to_string()
        } else {
            format!("task{i}")
        };
        tasks.track(
            7 + (i % 2) as u64,
            &id,
            (i % 5 != 0).then_some(i * 10),
            Source::Discovery,
        );
        let obs = match i % 4 {
            0 => Facts {
                status: TaskStatus::Prepared,
                ..Default::default()
            },
            1 => Facts {
                status: TaskStatus::Stopped,
                finish_reason: Some(reasons[(i % 3) as usize]),
                push_start_time: Some(1000 + i),
                push_stop_time: Some(5000 + 37 * i),
                exception_cnt: Some(i as u64 % 4),
                im_sync_time: Some(1001 + i),
                group_id: Some(format!("g{i}")),
                push_user_id: Some("u\"1".into()),
                ..Default::default()
            },
            2 => Facts {
                status: TaskStatus::Failed,
                finish_reason: Some(FinishReason::Failed),
                ..Default::default()
            },
            _ => Facts::default(),
        };
        tasks.observe_poll(7 + (i % 2) as u64, &id, &obs);
    }
    let m = ExporterMetrics::new(tasks, true);
    let mut fast = String::new();
    m.task_collector.encode_text(&mut fast);
    let mut slow = Vec::new();
    TextEncoder::new().encode(&m.task_families(), &mut slow).unwrap();
    let samples = |t: &str| {
        let mut v: Vec<String> = t.lines().filter(|l| !l.starts_with('#')).map(String::from).collect();
        v.sort();
        v
    };
    let (fast, slow) = (samples(&fast), samples(&String::from_utf8(slow).unwrap()));
    assert!(fast.len() > 500);
    assert_eq!(fast, slow);

    // The gzip scrape, written in chunks, unzips to the same text as the plain one (the process
    // collector's values and the lock-hold timings move between two renders: compared without them).
    let mut unzipped = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&m.render_gzip()[..]), &mut unzipped).unwrap();
    let plain = m.render();
    assert!(plain.len() > 2 * super::CHUNK, "several chunks: {}", plain.len());
    let steady = |t: &str| {
        t.lines()
            .filter(|l| !l.contains("process_") && !l.contains("tiw_exporter_scrape_lock_hold_seconds"))
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert_eq!(steady(&unzipped), steady(&plain));

    // The plain scrape, streamed a chunk at a time, is the same text again, in several chunks.
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let (streamed, chunks) = runtime.block_on(async {
        use http_body_util::BodyExt;
        let mut body = m.stream(());
        let (mut text, mut chunks) = (Vec::new(), 0);
        while let Some(frame) = body.frame().await {
            text.extend_from_slice(frame.unwrap().data_ref().unwrap());
            chunks += 1;
        }
        (String::from_utf8(text).unwrap(), chunks)
    });
    assert!(chunks > plain.len() / super::CHUNK, "{chunks} chunks");
    assert_eq!(steady(&streamed), steady(&plain));
}

#[test]
fn per_task_metrics_off_keeps_only_aggregates() {
    let tasks = Arc::new(TaskRegistry::new());
    tasks.track(7, "t1", Some(42), Source::Config);
    let text = ExporterMetrics::new(tasks, false).render();
    assert!(!text.contains("tiw_push_task_"), "{text}");
    assert!(text.contains(r#"tiw_push_tasks{sdk_app_id="7",status="UNKNOWN"} 1"#));
}
