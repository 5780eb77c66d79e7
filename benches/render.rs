//! `cargo bench`: the in-process costs: one /metrics render against the GaugeVec baseline, TC3
//! signing, and one callback through verify → parse → apply.

#[path = "common.rs"]
mod common;

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use tiw_push_exporter::metrics::ExporterMetrics;

fn render(c: &mut Criterion) {
    let mut group = c.benchmark_group("render");
    group.sample_size(20);
    for n in [100, 1_000, 10_000] {
        let fleet = common::fleet(n);
        let ours = ExporterMetrics::new(fleet.clone(), true);
        let baseline = common::Baseline::new(&fleet);
        group.bench_with_input(BenchmarkId::new("exporter", n), &n, |b, _| {
            b.iter(|| black_box(ours.render()))
        });
        group.bench_with_input(BenchmarkId::new("gaugevec_baseline", n), &n, |b, _| {
            b.iter(|| black_box(baseline.render()))
        });
    }
    group.finish();
}

fn sign(c: &mut Criterion) {
    use tiw_push_exporter::tencentcloud::sign::{sign, SignInput};
    let body = br#"{"SdkAppId":1400000001,"TaskId":"ghucnligqtgtvk2624mb"}"#;
    c.bench_function("tc3_sign", |b| {
        b.iter(|| {
            black_box(sign(&SignInput {
                secret_id: "AKIDx",
                secret_key: "key",
                service: "tiw",
                host: "tiw.tencentcloudapi.com",
                content_type: "application/json",
                timestamp: 1_700_000_000,
                body,
            }))
        })
    });
}

fn callback(c: &mut Criterion) {
    use tiw_push_exporter::callback::{compute_sign, CallbackReceiver};
    let yaml = "tencentcloud: {secret_id: a, secret_key: b}\napps: [{sdk_app_id: 7, callback_key: k}]\n";
    let config = tiw_push_exporter::config::Config::from_yaml(yaml, &|_| None).unwrap();
    let registry = Arc::new(tiw_push_exporter::registry::TaskRegistry::new());
    let receiver = CallbackReceiver::new(
        &config,
        registry.clone(),
        ExporterMetrics::new(registry, true).callback_sinks(),
    );
    let expire = 4_000_000_000u64;
    let mut i = 0u64;
    c.bench_function("callback_verify_parse_apply", |b| {
        b.iter(|| {
            i += 1;
            let body = format!(
                r#"{{"EventType":"WhiteboardPushStopped","SdkAppId":7,"Timestamp":1700000000,"ExpireTime":{expire},"Sign":"{}","EventData":{{"TaskId":"t{i}","RoomId":1,"FinishReason":"AUTO","PushStartTime":1,"PushStopTime":2,"ExceptionCnt":0}}}}"#,
                compute_sign("k", expire)
            );
            black_box(receiver.process(body.as_bytes(), 1_700_000_001.0))
        })
    });
}

criterion_group!(benches, render, sign, callback);
criterion_main!(benches);
