//! Task lifecycles: PREPARED → PUSHING → STOPPED (AUTO, USER_CALL, EXCEPTION) or FAILED, with
//! ExceptionCnt growing while pushing, at a configurable pace.

use std::time::{Duration, Instant};

use rand::Rng;

use super::{unix_now, SimStatus, SimTask, Simulator};

/// How a planned task ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Auto,
    UserCall,
    Exception,
    /// Never pushes: DescribeWhiteboardPush answers `FailedOperation.WhiteboardPush`.
    Failed,
}

/// The course of one task, relative to its creation.
#[derive(Debug, Clone, Copy)]
pub struct LifecyclePlan {
    pub prepare_for: Duration,
    pub push_for: Duration,
    pub outcome: Outcome,
    /// Exceptions counted while pushing (an EXCEPTION outcome has at least one).
    pub exceptions: u32,
}

/// What the lifecycle loop creates on its own.
#[derive(Debug, Clone)]
pub struct Generator {
    /// Apps to create tasks for.
    pub apps: Vec<u64>,
    /// Running tasks kept per app (TIW allows at most 100 concurrent pushes per app).
    pub target_per_app: usize,
    /// Pause between two new tasks of one app.
    pub create_every: Duration,
    pub prepare_for: (Duration, Duration),
    pub push_for: (Duration, Duration),
    /// Weights of AUTO, USER_CALL, EXCEPTION, FAILED.
    pub weights: [u32; 4],
    /// Ended tasks are forgotten this long after they end (TaskNotFound afterwards).
    pub keep_ended: Duration,
    /// Step of the loop.
    pub tick: Duration,
    /// A new transcode task per app this often (`None`: none), alternating TranscodeH5 and
    /// TranscodeJPG, queued then processing for a while each: what the census counts.
    pub transcode_every: Option<Duration>,
    /// Real-time recordings kept going per app (each recorded for `push_for`, a third of them
    /// paused for a while, ending with every reason or failing, then uploading for a few seconds).
    pub records_per_app: usize,
}

impl Default for Generator {
    fn default() -> Self {
        Generator {
            apps: vec![],
            target_per_app: 0,
            create_every: Duration::from_secs(3),
            prepare_for: (Duration::from_secs(1), Duration::from_secs(3)),
            push_for: (Duration::from_secs(5), Duration::from_secs(40)),
            weights: [60, 20, 15, 5],
            keep_ended: Duration::from_secs(3600),
            tick: Duration::from_millis(100),
            transcode_every: None,
            records_per_app: 0,
        }
    }
}

impl Generator {
    /// A random recording plan: lengths from `prepare_for` and `push_for`, reasons weighted as
    /// `weights` (FORCE_STOP in place of a fifth of AUTO's share), a third of them paused.
    pub fn record_plan(&self) -> super::recording::RecordPlan {
        let plan = self.plan();
        let mut rng = rand::rng();
        let reason = match plan.outcome {
            Outcome::Failed => None,
            Outcome::Auto if rng.random_bool(0.2) => Some("FORCE_STOP"),
            Outcome::Auto => Some("AUTO"),
            Outcome::UserCall => Some("USER_CALL"),
            Outcome::Exception => Some("EXCEPTION"),
        };
        super::recording::RecordPlan {
            prepare_for: plan.prepare_for,
            record_for: plan.push_for,
            pause_for: rng.random_bool(0.33).then(|| plan.push_for / 3),
            reason,
            upload_for: Duration::from_secs(rng.random_range(2..=8)),
            exceptions: i64::from(plan.exceptions),
            interrupts: rng.random_range(0..=3),
        }
    }

    /// A random plan from this generator's ranges and weights.
    pub fn plan(&self) -> LifecyclePlan {
        let mut rng = rand::rng();
        let pick = |(lo, hi): (Duration, Duration), rng: &mut rand::rngs::ThreadRng| {
            if hi <= lo {
                lo
            } else {
                Duration::from_millis(rng.random_range(lo.as_millis() as u64..=hi.as_millis() as u64))
            }
        };
        let total: u32 = self.weights.iter().sum::<u32>().max(1);
        let mut roll = rng.random_range(0..total);
        let mut outcome = Outcome::Failed;
        for (w, o) in self
            .weights
            .iter()
            .zip([Outcome::Auto, Outcome::UserCall, Outcome::Exception, Outcome::Failed])
        {
            if roll < *w {
                outcome = o;
                break;
            }
            roll -= w;
        }
        let exceptions = match outcome {
            Outcome::Exception => rng.random_range(1..=5),
            Outcome::Failed => 0,
            _ => rng.random_range(0..=1),
        };
        LifecyclePlan {
            prepare_for: pick(self.prepare_for, &mut rng),
            push_for: pick(self.push_for, &mut rng),
            outcome,
            exceptions,
        }
    }
}

/// PREPARED → PUSHING.
pub fn start(t: &mut SimTask) {
    if t.status == SimStatus::Prepared {
        t.status = SimStatus::Pushing;
        t.push_start_time = unix_now();
        t.im_sync_time = t.push_start_time;
    }
}

/// → STOPPED with `reason`.
pub fn stop(t: &mut SimTask, reason: &'static str) {
    if matches!(t.status, SimStatus::Prepared | SimStatus::Pushing) {
        t.status = SimStatus::Stopped;
        t.finish_reason = Some(reason);
        t.push_stop_time = unix_now();
    }
}

/// → FAILED (DescribeWhiteboardPush answers FailedOperation.WhiteboardPush with `message`).
pub fn fail(t: &mut SimTask, message: &str) {
    if matches!(t.status, SimStatus::Prepared | SimStatus::Pushing) {
        t.status = SimStatus::Failed;
        t.failed_message = message.to_string();
    }
}

fn advance(t: &mut SimTask, now: Instant) {
    let Some(plan) = t.plan else { return };
    let age = now.duration_since(t.created);
    if t.status == SimStatus::Prepared && age >= plan.prepare_for {
        if plan.outcome == Outcome::Failed {
            fail(
                t,
                "code: 40006, msg: TRTC onError, code: -70003, msg: The UserSig in use is illegal.",
            );
            return;
        }
        start(t);
    }
    if t.status == SimStatus::Pushing {
        // Spread the planned exceptions over the push.
        let pushed = age.saturating_sub(plan.prepare_for).as_secs_f64();
        let share = (pushed / plan.push_for.as_secs_f64().max(0.001)).min(1.0);
        let due = (plan.exceptions as f64 * share).floor() as i64;
        t.exception_cnt = t.exception_cnt.max(due);
        if age >= plan.prepare_for + plan.push_for {
            t.exception_cnt = t.exception_cnt.max(plan.exceptions as i64);
            let reason = match plan.outcome {
                Outcome::Auto => "AUTO",
                Outcome::UserCall => "USER_CALL",
                _ => "EXCEPTION",
            };
            stop(t, reason);
        }
    }
}

/// Steps every planned task and keeps `target_per_app` running tasks per app.
pub async fn run(sim: Simulator, gen: Generator) {
    let mut last_created = vec![None::<Instant>; gen.apps.len()];
    let mut last_transcode = vec![None::<Instant>; gen.apps.len()];
    let mut transcodes = 0u64;
    let mut room = 1000;
    loop {
        let now = Instant::now();
        let wall = unix_now();
        {
            let mut world = sim.shared.world();
            for t in world.tasks.values_mut() {
                let before = t.status;
                advance(t, now);
                sim.shared.emit(before, t);
            }
            for t in world.records.values_mut() {
                super::recording::move_record(&sim.shared, t, |t| super::recording::advance(t, now));
            }
            world.records.retain(|_, t| {
                let ended = if t.record_stop_time > 0 {
                    t.record_stop_time
                } else {
                    t.create_time
                };
                !(t.plan.is_some() && t.status.is_over() && wall - ended > gen.keep_ended.as_secs() as i64)
            });
            for t in world.listed.values_mut() {
                if let Some((queued, processing)) = t.plan {
                    let age = now.duration_since(t.created);
                    t.status = if age < queued {
                        "QUEUED"
                    } else if age < queued + processing {
                        "PROCESSING"
                    } else {
                        "FINISHED"
                    };
                }
            }
            world.listed.retain(|_, t| {
                t.status != "FINISHED"
                    || t.plan
                        .is_none_or(|(q, p)| now.duration_since(t.created) < q + p + gen.keep_ended)
            });
            world.tasks.retain(|_, t| {
                let ended_at = if t.status == SimStatus::Failed {
                    t.create_time
                } else {
                    t.push_stop_time
                };
                !(matches!(t.status, SimStatus::Stopped | SimStatus::Failed)
                    && wall - ended_at > gen.keep_ended.as_secs() as i64)
            });
        }
        for (i, app) in gen.apps.iter().enumerate() {
            let running = sim
                .shared
                .world()
                .tasks
                .values()
                .filter(|t| t.sdk_app_id == *app && matches!(t.status, SimStatus::Prepared | SimStatus::Pushing))
                .count();
            let due = last_created[i].is_none_or(|t: Instant| now.duration_since(t) >= gen.create_every);
            if running < gen.target_per_app && due {
                room += 1;
                sim.create_task_with(*app, room, Some(gen.plan()));
                last_created[i] = Some(now);
            }
            let recording = sim
                .shared
                .world()
                .records
                .values()
                .filter(|t| t.sdk_app_id == *app && t.status.is_active())
                .count();
            if recording < gen.records_per_app && due {
                room += 1;
                sim.create_record_with(*app, room, Some(gen.record_plan()));
            }
            if let Some(every) = gen.transcode_every {
                if last_transcode[i].is_none_or(|t: Instant| now.duration_since(t) >= every) {
                    transcodes += 1;
                    let (task_type, queued, processing) = if transcodes % 2 == 0 {
                        ("TranscodeH5", 2 + transcodes % 5, 5 + transcodes % 11)
                    } else {
                        ("TranscodeJPG", 1 + transcodes % 3, 3 + transcodes % 7)
                    };
                    let plan = (Duration::from_secs(queued), Duration::from_secs(processing));
                    sim.add_listed(*app, task_type, Duration::ZERO, Some(plan));
                    last_transcode[i] = Some(now);
                }
            }
        }
        tokio::time::sleep(gen.tick).await;
    }
}
