//! The task families as the `prometheus` crate's protobuf families: the same series as the text
//! [`super::exposition`] writes, built the crate's own way. Tests and the fuzz targets hold the two
//! equal; nothing on the scrape path uses it.

use std::sync::atomic::Ordering;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily};

use super::exposition::*;
use crate::registry::{FinishReason, TaskStatus, DURATION_BUCKETS};

fn labels(names: &[&str], values: &[&str]) -> Vec<LabelPair> {
    names
        .iter()
        .zip(values)
        .map(|(n, v)| {
            let mut l = LabelPair::default();
            l.set_name(n.to_string());
            l.set_value(v.to_string());
            l
        })
        .collect()
}

fn gauge(spec: &FamilySpec, values: &[&str], v: f64) -> Metric {
    let mut g = Gauge::default();
    g.set_value(v);
    let mut m = Metric::from_gauge(g);
    m.set_label(labels(spec.labels, values));
    m
}

fn counter(spec: &FamilySpec, values: &[&str], v: u64) -> Metric {
    let mut c = Counter::default();
    c.set_value(v as f64);
    let mut m = Metric::default();
    m.set_counter(c);
    m.set_label(labels(spec.labels, values));
    m
}

fn family(spec: &FamilySpec, metrics: Vec<Metric>) -> MetricFamily {
    let mut mf = MetricFamily::default();
    mf.set_name(spec.name.into());
    mf.set_help(spec.help.into());
    mf.set_field_type(spec.kind);
    mf.set_metric(metrics);
    mf
}

impl Collector for TaskCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let view = self.tasks.view();
        let mut out = Vec::with_capacity(14);

        if self.per_task.load(Ordering::Relaxed) {
            let n = view.len();
            let (
                mut info,
                mut status,
                mut reason,
                mut start,
                mut stop,
                mut duration,
                mut exceptions,
                mut im_sync,
                mut last,
                mut ended,
                mut failures,
            ) = (
                Vec::with_capacity(n),
                Vec::with_capacity(n * 5),
                Vec::new(),
                Vec::with_capacity(n),
                Vec::new(),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::new(),
                Vec::with_capacity(n),
                Vec::new(),
                Vec::new(),
            );
            for t in view.tasks() {
                let shown = t.shown();
                let app = t.sdk_app_id.to_string();
                let room = shown.room_id().map(|r| r.to_string()).unwrap_or_default();
                let id = [app.as_str(), t.task_id.as_str(), room.as_str()];
                info.push(gauge(
                    &INFO,
                    &[&app, &t.task_id, &room, shown.group_id(), shown.push_user_id()],
                    1.0,
                ));
                for s in TaskStatus::ALL {
                    let v = if s == shown.status() { 1.0 } else { 0.0 };
                    status.push(gauge(&STATUS, &[&app, &t.task_id, &room, s.as_str()], v));
                }
                if let (true, Some(r)) = (shown.status().is_ended(), shown.finish_reason()) {
                    reason.push(gauge(&FINISH_REASON, &[&app, &t.task_id, &room, r.as_str()], 1.0));
                }
                if let Some(s) = shown.push_start_time() {
                    start.push(gauge(&START, &id, s as f64));
                }
                if let (true, Some(s)) = (shown.status().is_ended(), shown.push_stop_time()) {
                    stop.push(gauge(&STOP, &id, s as f64));
                }
                if let Some(d) = shown.duration() {
                    duration.push(gauge(&DURATION, &id, d));
                }
                exceptions.push(gauge(&EXCEPTIONS, &id, shown.exception_cnt() as f64));
                if let Some(s) = shown.im_sync_time() {
                    im_sync.push(gauge(&IM_SYNC, &id, s as f64));
                }
                last.push(gauge(&LAST_UPDATE, &id, t.last_update));
                if let Some(at) = ended_news(t) {
                    ended.push(gauge(&ENDED, &id, at));
                }
                if let Some([reason, code, push_code, trtc_code]) = shown.failure_label_values() {
                    failures.push(gauge(
                        &FAILURE,
                        &[&app, &t.task_id, &room, &reason, &code, &push_code, &trtc_code],
                        1.0,
                    ));
                }
            }
            for (spec, metrics) in [
                (&INFO, info),
                (&STATUS, status),
                (&FINISH_REASON, reason),
                (&START, start),
                (&STOP, stop),
                (&DURATION, duration),
                (&EXCEPTIONS, exceptions),
                (&IM_SYNC, im_sync),
                (&LAST_UPDATE, last),
                (&ENDED, ended),
                (&FAILURE, failures),
            ] {
                out.push(family(spec, metrics));
            }
        }

        let mut tasks = Vec::new();
        for (app, counts) in view.status_counts() {
            let app = app.to_string();
            for s in TaskStatus::ALL {
                tasks.push(gauge(&TASKS, &[&app, s.as_str()], counts[s as usize] as f64));
            }
        }
        let (mut started, mut finished, mut exceptions, mut durations, mut per_task_on) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let on = if self.per_task.load(Ordering::Relaxed) {
            1.0
        } else {
            0.0
        };
        for (app, stats) in view.apps() {
            let app = app.to_string();
            started.push(counter(&STARTED, &[&app], stats.started_total));
            per_task_on.push(gauge(&PER_TASK_ON, &[&app], on));
            exceptions.push(counter(&EXCEPTIONS_TOTAL, &[&app], stats.exceptions_total));
            for r in FinishReason::ALL {
                finished.push(counter(&FINISHED, &[&app, r.as_str()], stats.finished(r)));
                let h = stats.duration(r);
                let mut hist = Histogram::default();
                hist.set_sample_count(h.count);
                hist.set_sample_sum(h.sum);
                let mut cumulative = 0;
                let buckets = DURATION_BUCKETS
                    .iter()
                    .zip(h.counts.iter())
                    .map(|(bound, c)| {
                        cumulative += c;
                        let mut b = Bucket::default();
                        b.set_upper_bound(*bound);
                        b.set_cumulative_count(cumulative);
                        b
                    })
                    .collect();
                hist.set_bucket(buckets);
                let mut m = Metric::default();
                m.set_histogram(hist);
                m.set_label(labels(DURATIONS.labels, &[&app, r.as_str()]));
                durations.push(m);
            }
        }
        drop(view);
        out.push(family(&TASKS, tasks));
        out.push(family(&STARTED, started));
        out.push(family(&FINISHED, finished));
        out.push(family(&EXCEPTIONS_TOTAL, exceptions));
        out.push(family(&DURATIONS, durations));
        out.push(family(&PER_TASK_ON, per_task_on));
        out
    }
}
