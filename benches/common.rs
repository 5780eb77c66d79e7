//! Shared by `cargo bench` and `bench/run`: a synthetic fleet, and the idiomatic baseline that the
//! exporter's rendering is measured against (the same series held in `prometheus` GaugeVecs and
//! encoded with `TextEncoder`).
#![allow(dead_code)]

use std::sync::Arc;

use prometheus::{Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder};
use tiw_push_exporter::registry::{Facts, FinishReason, Source, TaskRegistry, TaskStatus, DURATION_BUCKETS};

/// `n` tasks, 100 per app (TIW's ceiling of concurrent pushes per app), in a realistic mix:
/// half pushing, 30 % stopped with every reason, 10 % preparing, 5 % failed, 5 % unknown.
pub fn fleet(n: usize) -> Arc<TaskRegistry> {
    let r = Arc::new(TaskRegistry::new());
    let now = tiw_push_exporter::registry::unix_now() as i64;
    for i in 0..n {
        let app = 1_400_000_000 + (i / 100) as u64;
        let id = format!("{:020}", 7_919 * i as u64 + 104_729);
        r.track(app, &id, Some(100_000 + i as i64), Source::Discovery);
        let base = Facts {
            group_id: Some(format!("{}", 100_000 + i)),
            push_user_id: Some(format!("tic_push_user_{}_{}", 100_000 + i, i % 7)),
            push_start_time: Some(now - 3_000 + (i % 600) as i64),
            im_sync_time: Some(now - 2_999 + (i % 600) as i64),
            exception_cnt: Some((i % 4) as u64),
            ..Default::default()
        };
        let obs = match i % 20 {
            0..=9 => Facts {
                status: TaskStatus::Pushing,
                ..base
            },
            10..=15 => Facts {
                status: TaskStatus::Stopped,
                finish_reason: Some([FinishReason::Auto, FinishReason::UserCall, FinishReason::Exception][i % 3]),
                push_stop_time: Some(now - 60),
                ..base
            },
            16 | 17 => Facts {
                status: TaskStatus::Prepared,
                push_start_time: None,
                im_sync_time: None,
                ..base
            },
            18 => Facts {
                status: TaskStatus::Failed,
                finish_reason: Some(FinishReason::Failed),
                push_start_time: None,
                ..base
            },
            _ => Facts::default(),
        };
        r.observe_poll(app, &id, &obs);
    }
    r
}

/// The same series in GaugeVecs, the way an exporter is usually written.
pub struct Baseline {
    registry: Registry,
}

impl Baseline {
    pub fn new(fleet: &TaskRegistry) -> Baseline {
        let registry = Registry::new();
        let task = ["sdk_app_id", "task_id", "room_id"];
        let g = |name: &str, extra: &[&str]| {
            let labels: Vec<&str> = task.iter().chain(extra).copied().collect();
            let v = GaugeVec::new(Opts::new(name, "help"), &labels).unwrap();
            registry.register(Box::new(v.clone())).unwrap();
            v
        };
        let info = {
            let v = GaugeVec::new(
                Opts::new("tiw_push_task_info", "help"),
                &["sdk_app_id", "task_id", "room_id", "group_id", "push_user_id"],
            )
            .unwrap();
            registry.register(Box::new(v.clone())).unwrap();
            v
        };
        let (status, reason, start, stop, duration, exceptions, im_sync, last) = (
            g("tiw_push_task_status", &["status"]),
            g("tiw_push_task_finish_reason", &["reason"]),
            g("tiw_push_task_start_timestamp_seconds", &[]),
            g("tiw_push_task_stop_timestamp_seconds", &[]),
            g("tiw_push_task_duration_seconds", &[]),
            g("tiw_push_task_exceptions", &[]),
            g("tiw_push_task_im_sync_timestamp_seconds", &[]),
            g("tiw_push_task_last_update_timestamp_seconds", &[]),
        );
        let tasks = GaugeVec::new(Opts::new("tiw_push_tasks", "help"), &["sdk_app_id", "status"]).unwrap();
        let started = IntCounterVec::new(Opts::new("tiw_push_tasks_started_total", "help"), &["sdk_app_id"]).unwrap();
        let finished = IntCounterVec::new(
            Opts::new("tiw_push_tasks_finished_total", "help"),
            &["sdk_app_id", "reason"],
        )
        .unwrap();
        let exc = IntCounterVec::new(Opts::new("tiw_push_exceptions_total", "help"), &["sdk_app_id"]).unwrap();
        let hist = HistogramVec::new(
            HistogramOpts::new("tiw_push_duration_seconds", "help").buckets(DURATION_BUCKETS.to_vec()),
            &["sdk_app_id", "reason"],
        )
        .unwrap();
        for c in [
            Box::new(tasks.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(started.clone()),
            Box::new(finished.clone()),
            Box::new(exc.clone()),
            Box::new(hist.clone()),
        ] {
            registry.register(c).unwrap();
        }
        let view = fleet.view();
        for t in view.tasks() {
            let shown = t.shown();
            let (app, room) = (
                t.sdk_app_id.to_string(),
                shown.room_id().map(|r| r.to_string()).unwrap_or_default(),
            );
            let l = [app.as_str(), t.task_id.as_str(), room.as_str()];
            info.with_label_values(&[&app, &t.task_id, &room, shown.group_id(), shown.push_user_id()])
                .set(1.0);
            for s in TaskStatus::ALL {
                status
                    .with_label_values(&[l[0], l[1], l[2], s.as_str()])
                    .set((s == shown.status()) as i64 as f64);
            }
            if let (true, Some(r)) = (shown.status().is_ended(), shown.finish_reason()) {
                reason.with_label_values(&[l[0], l[1], l[2], r.as_str()]).set(1.0);
            }
            if let Some(s) = shown.push_start_time() {
                start.with_label_values(&l).set(s as f64);
            }
            if let (true, Some(s)) = (shown.status().is_ended(), shown.push_stop_time()) {
                stop.with_label_values(&l).set(s as f64);
            }
            if let Some(d) = shown.duration() {
                duration.with_label_values(&l).set(d);
            }
            exceptions.with_label_values(&l).set(shown.exception_cnt() as f64);
            if let Some(s) = shown.im_sync_time() {
                im_sync.with_label_values(&l).set(s as f64);
            }
            last.with_label_values(&l).set(t.last_update);
        }
        for (app, counts) in view.status_counts() {
            for s in TaskStatus::ALL {
                tasks
                    .with_label_values(&[&app.to_string(), s.as_str()])
                    .set(counts[s as usize] as f64);
            }
        }
        for (app, s) in view.apps() {
            let app = app.to_string();
            started.with_label_values(&[&app]).inc_by(s.started_total);
            exc.with_label_values(&[&app]).inc_by(s.exceptions_total);
            for r in FinishReason::ALL {
                finished.with_label_values(&[&app, r.as_str()]).inc_by(s.finished(r));
                hist.with_label_values(&[&app, r.as_str()]);
            }
        }
        Baseline { registry }
    }

    /// One scrape: gather and encode.
    pub fn render(&self) -> String {
        let mut out = Vec::with_capacity(1 << 20);
        TextEncoder::new().encode(&self.registry.gather(), &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }
}
