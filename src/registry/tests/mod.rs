//! Unit tests of the registry: merge, claims, counters, bounds (the schedule's in `schedule.rs`).
use super::*;

fn obs(status: TaskStatus) -> Facts {
    Facts {
        status,
        ..Default::default()
    }
}

fn stopped(reason: Option<FinishReason>) -> Facts {
    Facts {
        finish_reason: reason,
        push_start_time: Some(100),
        push_stop_time: Some(400),
        ..obs(TaskStatus::Stopped)
    }
}

fn answer(r: &TaskRegistry, id: &str, a: Answer) -> AnswerApplied {
    answer_in(r, 1, id, a)
}

/// Polls `id` of `app` (early or in a sweep) and applies `a` as its answer.
fn answer_in(r: &TaskRegistry, app: u64, id: &str, a: Answer) -> AnswerApplied {
    let picked = r
        .next_to_poll(&[app], None)
        .or_else(|| r.next_to_poll(&[app], Some(Instant::now())));
    assert!(picked.is_some(), "{id} is due");
    let out = r.apply_answer(app, id, &a, Duration::from_secs(60));
    r.finish_poll(app, id, Instant::now());
    out
}

#[test]
fn walks_forward_and_counts_once() {
    let r = TaskRegistry::new();
    assert_eq!(r.track(1, "t", None, Source::Discovery), Track::Added);
    assert_eq!(r.track(1, "t", None, Source::Discovery), Track::Known);
    r.observe_poll(1, "t", &obs(TaskStatus::Prepared));
    let pushing = Facts {
        push_start_time: Some(100),
        exception_cnt: Some(1),
        ..obs(TaskStatus::Pushing)
    };
    r.observe_poll(1, "t", &pushing);
    r.observe_poll(1, "t", &pushing);
    let stop = Facts {
        exception_cnt: Some(3),
        ..stopped(Some(FinishReason::Exception))
    };
    assert_eq!(r.observe_poll(1, "t", &stop).ended, Some(FinishReason::Exception));
    assert_eq!(r.observe_poll(1, "t", &stop).ended, None);
    // A stale reply cannot move it back, lower the count or change the reason.
    let stale = Facts {
        exception_cnt: Some(0),
        finish_reason: Some(FinishReason::Auto),
        ..obs(TaskStatus::Pushing)
    };
    r.observe_poll(1, "t", &stale);
    let t = r.get(1, "t").unwrap();
    assert_eq!(t.shown().status(), TaskStatus::Stopped);
    assert_eq!(t.shown().finish_reason(), Some(FinishReason::Exception));
    assert_eq!(t.shown().exception_cnt(), 3);
    assert_eq!(t.shown().duration(), Some(300.0));
    let s = r.stats(1).unwrap();
    assert_eq!(s.started_total, 1);
    assert_eq!(s.finished(FinishReason::Exception), 1);
    assert_eq!(s.finished_total.iter().sum::<u64>(), 1);
    assert_eq!(s.exceptions_total, 3);
    assert_eq!(s.duration(FinishReason::Exception).count, 1);
    assert_eq!(s.duration(FinishReason::Exception).sum, 300.0);
    assert!(!t.is_pollable());
}

/// design §4: the duration series is for ended tasks only.
#[test]
fn a_running_task_has_no_duration() {
    let r = TaskRegistry::new();
    r.track(1, "t", None, Source::Discovery);
    r.observe_poll(
        1,
        "t",
        &Facts {
            push_start_time: Some(100),
            ..obs(TaskStatus::Pushing)
        },
    );
    assert_eq!(r.get(1, "t").unwrap().shown().duration(), None);
}

#[test]
fn failed_task_gets_reason_failed_and_never_started() {
    let r = TaskRegistry::new();
    r.track(1, "f", None, Source::Discovery);
    answer(
        &r,
        "f",
        Answer::Failed(
            "code: 40006, msg: 2021-01-13 22:34:42, TRTC onError, code: -70003, msg: The UserSig in use is illegal."
                .into(),
        ),
    );
    let t = r.get(1, "f").unwrap();
    assert_eq!(
        (t.shown().status(), t.shown().finish_reason()),
        (TaskStatus::Failed, Some(FinishReason::Failed))
    );
    let s = r.stats(1).unwrap();
    assert_eq!((s.started_total, s.finished(FinishReason::Failed)), (0, 1));
    assert!(!t.is_pollable());
    // Tencent's reason, bounded: its code and the two codes its documented message carries.
    let f = t.shown().failure().unwrap();
    assert_eq!(
        (f.code.as_str(), f.push_code, f.trtc_code),
        ("FailedOperation.WhiteboardPush", Some(40006), Some(-70003))
    );
    assert!(f.message.ends_with("The UserSig in use is illegal."));
    assert!(
        t.ended_at.is_some(),
        "a FAILED task has the time it was first seen failed"
    );
}

/// A configured id whose first answer is an end ended before the exporter saw it: history, never
/// counted; an end seen live (a discovered task) is news.
#[test]
fn an_end_first_seen_as_such_is_history() {
    let r = TaskRegistry::new();
    let two_days_ago = unix_now() as i64 - 2 * 24 * 3600;
    r.track(1, "old", None, Source::Config);
    answer(
        &r,
        "old",
        Answer::State(Facts {
            push_start_time: Some(two_days_ago - 600),
            push_stop_time: Some(two_days_ago),
            ..stopped(Some(FinishReason::Exception))
        }),
    );
    let t = r.get(1, "old").unwrap();
    assert!(t.history);
    assert_eq!(t.ended_at, Some(two_days_ago as f64), "retention counts from its end");
    assert_eq!(r.stats(1).unwrap(), AppStats::default(), "history is not counted");
    assert_eq!(
        r.expire(Duration::from_secs(3600)),
        1,
        "ended longer than retention ago: gone"
    );
    r.track(1, "failed-before", None, Source::Config);
    answer(&r, "failed-before", Answer::Failed("failed".into()));
    assert!(r.get(1, "failed-before").unwrap().history);
    assert_eq!(r.stats(1).unwrap().finished(FinishReason::Failed), 0);
    // Seen running first: its end is news.
    r.track(1, "live", None, Source::Config);
    answer(&r, "live", Answer::State(obs(TaskStatus::Pushing)));
    answer(&r, "live", Answer::State(stopped(Some(FinishReason::Exception))));
    assert!(!r.get(1, "live").unwrap().history);
    assert_eq!(r.stats(1).unwrap().finished(FinishReason::Exception), 1);
}

/// design §2: a success reply with no Status, three in a row, is a failed task, counted once.
#[test]
fn three_replies_without_status_fail_the_task_once() {
    let r = TaskRegistry::new();
    r.track(1, "b", None, Source::Discovery);
    assert_eq!(
        answer(&r, "b", Answer::NoStatus("r1".into())).failed_without_status,
        None
    );
    // Another answer in between starts the count again.
    answer(&r, "b", Answer::State(obs(TaskStatus::Prepared)));
    answer(&r, "b", Answer::NoStatus("r2".into()));
    answer(&r, "b", Answer::NoStatus("r3".into()));
    assert_eq!(r.get(1, "b").unwrap().shown().status(), TaskStatus::Prepared);
    let out = answer(&r, "b", Answer::NoStatus("r4".into()));
    assert_eq!(
        out.failed_without_status,
        Some(vec!["r2".into(), "r3".into(), "r4".into()])
    );
    assert_eq!(out.ended, Some(FinishReason::Failed));
    let t = r.get(1, "b").unwrap();
    assert_eq!(
        (t.shown().status(), t.shown().finish_reason()),
        (TaskStatus::Failed, Some(FinishReason::Failed))
    );
    assert!(!t.is_pollable());
    assert_eq!(r.stats(1).unwrap().finished(FinishReason::Failed), 1);
    assert!(r.next_to_poll(&[1], Some(Instant::now())).is_none(), "no longer polled");
}

#[test]
fn first_seen_with_exceptions_adds_them_all() {
    let r = TaskRegistry::new();
    r.track(1, "x", None, Source::Discovery);
    r.observe_poll(
        1,
        "x",
        &Facts {
            exception_cnt: Some(5),
            ..obs(TaskStatus::Pushing)
        },
    );
    assert_eq!(r.stats(1).unwrap().exceptions_total, 5);
}

/// design §2: three TaskNotFound in a row drop a task learned from a callback or discovery; a
/// configured one stays UNKNOWN and is parked; any other answer starts the count again.
#[test]
fn not_found_three_times_drops_or_parks() {
    let r = TaskRegistry::new();
    r.track(1, "d", None, Source::Discovery);
    assert!(!answer(&r, "d", Answer::NotFound).dropped);
    answer(&r, "d", Answer::State(obs(TaskStatus::Prepared)));
    assert!(!answer(&r, "d", Answer::NotFound).dropped);
    assert!(!answer(&r, "d", Answer::NotFound).dropped);
    let out = answer(&r, "d", Answer::NotFound);
    assert!(out.dropped);
    assert!(r.get(1, "d").is_none());
    assert!(r.take_batch().removed.contains(&(1, "d".to_string())));
    // No tombstone: a later callback may bring it back.
    assert_eq!(r.track(1, "d", None, Source::Callback), Track::Added);

    r.track(1, "c", None, Source::Config);
    for _ in 0..2 {
        answer(&r, "c", Answer::NotFound);
    }
    let out = answer(&r, "c", Answer::NotFound);
    assert!(out.parked && !out.dropped);
    assert_eq!(r.get(1, "c").unwrap().shown().status(), TaskStatus::Unknown);
    assert!(
        std::iter::from_fn(|| r.next_to_poll(&[1], Some(Instant::now() + Duration::from_secs(1))))
            .all(|(_, id)| id != "c"),
        "parked: not handed out before its time"
    );
}

/// Callbacks are claims: applied once per event in any order, shown only once the API has
/// confirmed the task exists, counted only when the API confirms them.
#[test]
fn callbacks_are_claims_until_the_api_confirms_them() {
    let r = TaskRegistry::new();
    let started = Facts {
        push_start_time: Some(100),
        ..obs(TaskStatus::Pushing)
    };
    let stop = Facts {
        exception_cnt: Some(2),
        ..stopped(Some(FinishReason::Exception))
    };
    // Stopped first, then Started, then copies of both.
    assert_eq!(
        r.observe_callback(1, "c", PushEvent::Stopped, &stop),
        CallbackApplied::Accepted { ended: false },
        "a task only a callback named shows no finish before the API confirms it"
    );
    assert_eq!(
        r.observe_callback(1, "c", PushEvent::Started, &started),
        CallbackApplied::Accepted { ended: false }
    );
    for _ in 0..5 {
        assert_eq!(
            r.observe_callback(1, "c", PushEvent::Stopped, &stop),
            CallbackApplied::Duplicate
        );
        assert_eq!(
            r.observe_callback(1, "c", PushEvent::Started, &started),
            CallbackApplied::Duplicate
        );
    }
    let t = r.get(1, "c").unwrap();
    assert_eq!(
        (
            t.shown().status(),
            t.shown().finish_reason(),
            t.source,
            t.shown().exception_cnt(),
            t.shown().room_id()
        ),
        (TaskStatus::Unknown, None, Source::Callback, 0, None),
        "nothing of the claim shows"
    );
    assert_eq!(r.stats(1).unwrap(), AppStats::default(), "nothing counted on a claim");
    // The confirming poll is owed at once; it confirms, and the counters move once.
    let out = answer(
        &r,
        "c",
        Answer::State(Facts {
            exception_cnt: Some(2),
            ..stop.clone()
        }),
    );
    assert_eq!((out.ended, out.contradicted), (Some(FinishReason::Exception), None));
    let s = r.stats(1).unwrap();
    assert_eq!(
        (s.started_total, s.finished(FinishReason::Exception), s.exceptions_total),
        (1, 1, 2)
    );
    assert!(!r.get(1, "c").unwrap().is_pollable());
    assert!(r.get(1, "c").unwrap().claim.is_none());
}

/// A forged body under a reused Sign: STOPPED/EXCEPTION with 4294967295 exceptions. The API
/// answers PUSHING with none: the task goes back to PUSHING, nothing is counted but the start.
#[test]
fn a_claim_the_api_contradicts_is_reverted() {
    let r = TaskRegistry::new();
    r.track(1, "h", None, Source::Discovery);
    let running = Facts {
        push_start_time: Some(100),
        exception_cnt: Some(0),
        ..obs(TaskStatus::Pushing)
    };
    answer(&r, "h", Answer::State(running.clone()));
    let forged = Facts {
        exception_cnt: Some(u32::MAX as u64),
        ..stopped(Some(FinishReason::Exception))
    };
    r.observe_callback(1, "h", PushEvent::Stopped, &forged);
    assert_eq!(
        r.get(1, "h").unwrap().shown().status(),
        TaskStatus::Stopped,
        "the claim shows at once"
    );
    let out = answer(&r, "h", Answer::State(running));
    assert_eq!(
        out.contradicted,
        Some((PushEvent::Stopped, TaskStatus::Stopped, Some(FinishReason::Exception)))
    );
    let t = r.get(1, "h").unwrap();
    assert_eq!(
        (t.shown().status(), t.shown().finish_reason(), t.shown().exception_cnt()),
        (TaskStatus::Pushing, None, 0)
    );
    assert!(t.is_pollable());
    let s = r.stats(1).unwrap();
    assert_eq!(
        (
            s.started_total,
            s.finished_total.iter().sum::<u64>(),
            s.exceptions_total
        ),
        (1, 0, 0)
    );
}

/// A reply to a poll sent before the claim arrived cannot judge it: the claim stays, and a
/// fresh poll is owed.
#[test]
fn a_poll_sent_before_the_claim_does_not_contradict_it() {
    let r = TaskRegistry::new();
    r.track(1, "s", None, Source::Discovery);
    assert!(r.next_to_poll(&[1], None).is_some());
    r.observe_callback(1, "s", PushEvent::Stopped, &stopped(Some(FinishReason::Auto)));
    let out = r.apply_answer(1, "s", &Answer::State(obs(TaskStatus::Pushing)), Duration::ZERO);
    r.finish_poll(1, "s", Instant::now());
    assert_eq!(out.contradicted, None);
    assert_eq!(r.get(1, "s").unwrap().shown().status(), TaskStatus::Stopped);
    assert_eq!(
        r.next_to_poll(&[1], None).map(|k| k.1).as_deref(),
        Some("s"),
        "read again at once"
    );
    let out = r.apply_answer(
        1,
        "s",
        &Answer::State(stopped(Some(FinishReason::Auto))),
        Duration::ZERO,
    );
    assert_eq!((out.ended, out.contradicted), (Some(FinishReason::Auto), None));
}

/// design §3: a Stopped without a documented reason shows OTHER; the confirming poll refines it,
/// and only the refined reason is counted.
#[test]
fn other_is_refined_by_the_confirming_poll_and_counted_once() {
    let r = TaskRegistry::new();
    r.track(1, "o", None, Source::Discovery);
    r.observe_poll(1, "o", &obs(TaskStatus::Pushing));
    r.observe_callback(1, "o", PushEvent::Stopped, &stopped(Some(FinishReason::Other)));
    assert_eq!(
        r.get(1, "o").unwrap().shown().finish_reason(),
        Some(FinishReason::Other)
    );
    let out = answer(&r, "o", Answer::State(stopped(Some(FinishReason::Exception))));
    assert_eq!((out.ended, out.contradicted), (Some(FinishReason::Exception), None));
    let s = r.stats(1).unwrap();
    assert_eq!(
        (s.finished(FinishReason::Exception), s.finished(FinishReason::Other)),
        (1, 0)
    );
    assert_eq!(
        r.get(1, "o").unwrap().shown().finish_reason(),
        Some(FinishReason::Exception)
    );
    // A poll that itself says STOPPED without a reason ends the task with OTHER.
    r.track(1, "p", None, Source::Discovery);
    answer(&r, "p", Answer::State(stopped(None)));
    assert_eq!(r.stats(1).unwrap().finished(FinishReason::Other), 1);
    assert!(!r.get(1, "p").unwrap().is_pollable());
}

/// A claim the app's API could not confirm for `confirm_timeout` is counted on its own word.
#[test]
fn an_unconfirmable_claim_is_counted_after_the_timeout() {
    let r = TaskRegistry::new();
    let now = unix_now() as i64;
    // A made-up id is never counted, however long the API stays away.
    r.observe_callback(
        1,
        "made-up",
        PushEvent::Stopped,
        &stopped(Some(FinishReason::Exception)),
    );
    r.track(1, "u", None, Source::Discovery);
    answer(
        &r,
        "u",
        Answer::State(Facts {
            push_start_time: Some(now - 60),
            exception_cnt: Some(1),
            ..obs(TaskStatus::Pushing)
        }),
    );
    r.observe_callback(
        1,
        "u",
        PushEvent::Stopped,
        &Facts {
            push_start_time: Some(now - 60),
            push_stop_time: Some(now),
            exception_cnt: Some(u32::MAX as u64),
            ..stopped(Some(FinishReason::Exception))
        },
    );
    let start = unix_now() - 1000.0;
    assert!(
        r.settle_claims(1, Duration::from_secs(300), None, start).is_empty(),
        "too young"
    );
    assert!(
        r.settle_claims(1, Duration::ZERO, Some(unix_now() + 1.0), start)
            .is_empty(),
        "the API answered since"
    );
    assert_eq!(r.settle_claims(1, Duration::ZERO, None, start), ["u"]);
    assert!(r.settle_claims(1, Duration::ZERO, None, start).is_empty(), "once");
    let s = r.stats(1).unwrap();
    assert_eq!(s.finished(FinishReason::Exception), 1);
    assert_eq!(s.exceptions_total, 1, "a claim's ExceptionCnt is never counted");
    assert_eq!(s.duration(FinishReason::Exception).sum, 60.0, "times near now are");
    // Counted on its claim, the task is still read, and retention removes it if the API never
    // comes back.
    assert!(r.get(1, "u").unwrap().is_pollable());
    assert_eq!(r.expire(Duration::ZERO), 1);
    assert_eq!(r.stats(1).unwrap().finished_total.iter().sum::<u64>(), 1);
}

/// Once the API answers again, its answer wins over a claim counted on its own word.
#[test]
fn the_api_wins_over_a_settled_claim_once_it_answers() {
    let r = TaskRegistry::new();
    r.track(1, "u", None, Source::Discovery);
    answer(&r, "u", Answer::State(obs(TaskStatus::Pushing)));
    r.observe_callback(1, "u", PushEvent::Stopped, &stopped(Some(FinishReason::Exception)));
    assert_eq!(r.settle_claims(1, Duration::ZERO, None, 0.0), ["u"]);
    assert_eq!(r.get(1, "u").unwrap().shown().status(), TaskStatus::Stopped);
    let out = answer(&r, "u", Answer::State(obs(TaskStatus::Pushing)));
    assert!(out.contradicted.is_some());
    let t = r.get(1, "u").unwrap();
    assert_eq!(
        (t.shown().status(), t.shown().finish_reason()),
        (TaskStatus::Pushing, None)
    );
    assert_eq!(r.expire(Duration::ZERO), 0, "a running task does not expire");
    assert!(r.get(1, "u").is_some());
}

/// `retention.max_tasks`: ended tasks go first, oldest end first; then new tasks are refused.
#[test]
fn a_full_registry_evicts_ended_tasks_then_refuses() {
    let r = TaskRegistry::with_max_tasks(3);
    for id in ["a", "b", "c"] {
        assert_eq!(r.track(1, id, None, Source::Discovery), Track::Added);
    }
    r.observe_poll(1, "b", &stopped(Some(FinishReason::Auto)));
    std::thread::sleep(Duration::from_millis(5));
    r.observe_poll(1, "a", &stopped(Some(FinishReason::Auto)));
    assert_eq!(r.track(1, "d", None, Source::Discovery), Track::Added);
    assert!(
        r.get(1, "b").is_none() && r.get(1, "a").is_some(),
        "the oldest end went first"
    );
    assert_eq!(r.track(1, "e", None, Source::Config), Track::Added);
    assert!(r.get(1, "a").is_none());
    assert_eq!(r.track(1, "f", None, Source::Discovery), Track::Full);
    assert_eq!(r.len(), 3);
    // A task only a callback named neither counts here nor evicts anything.
    assert_eq!(
        r.observe_callback(1, "g", PushEvent::Started, &obs(TaskStatus::Pushing)),
        CallbackApplied::Accepted { ended: false }
    );
    assert_eq!(r.len(), 4);
    assert_eq!(r.stats(1).unwrap().finished(FinishReason::Auto), 2, "counters stay");
}

/// Tasks only callbacks named are capped per app; a flood at one app refuses nothing of
/// another's, and evicts no ended task.
#[test]
fn claims_about_unknown_ids_are_capped_per_app() {
    let r = TaskRegistry::with_max_tasks(10);
    r.track(2, "ended", None, Source::Discovery);
    r.observe_poll(2, "ended", &stopped(Some(FinishReason::Exception)));
    for i in 0..MAX_UNCONFIRMED_PER_APP {
        let id = format!("fake{i}");
        assert!(matches!(
            r.observe_callback(1, &id, PushEvent::Stopped, &stopped(Some(FinishReason::Exception))),
            CallbackApplied::Accepted { ended: false }
        ));
    }
    assert_eq!(
        r.observe_callback(1, "one-more", PushEvent::Stopped, &stopped(None)),
        CallbackApplied::Full
    );
    assert!(r
        .view()
        .tasks()
        .all(|t| t.sdk_app_id != 1 || t.shown().status() == TaskStatus::Unknown));
    assert_eq!(
        r.observe_callback(2, "real", PushEvent::Started, &obs(TaskStatus::Pushing)),
        CallbackApplied::Accepted { ended: false },
        "another app is not refused"
    );
    assert_eq!(r.track(2, "listed", None, Source::Discovery), Track::Added);
    assert!(r.get(2, "ended").is_some(), "no ended task evicted for claims");
}

/// An id dropped after TaskNotFound costs nothing when it is named again; the running list
/// brings it back.
#[test]
fn a_dropped_made_up_id_is_refuted_when_named_again() {
    let r = TaskRegistry::new();
    r.observe_callback(1, "x", PushEvent::Stopped, &stopped(None));
    for _ in 0..NOT_FOUND_LIMIT {
        answer(&r, "x", Answer::NotFound);
    }
    assert!(r.get(1, "x").is_none());
    assert_eq!(
        r.observe_callback(1, "x", PushEvent::Stopped, &stopped(None)),
        CallbackApplied::Refuted
    );
    assert!(r.next_to_poll(&[1], None).is_none(), "no read for it");
    assert_eq!(r.track(1, "x", None, Source::Discovery), Track::Added);
}

/// A contradicted claim does not make TIW's genuine event a duplicate.
#[test]
fn a_genuine_stop_after_a_reverted_forgery_is_applied() {
    let r = TaskRegistry::new();
    r.track(1, "g", None, Source::Discovery);
    answer(&r, "g", Answer::State(obs(TaskStatus::Pushing)));
    r.observe_callback(1, "g", PushEvent::Stopped, &stopped(Some(FinishReason::Exception)));
    assert!(answer(&r, "g", Answer::State(obs(TaskStatus::Pushing)))
        .contradicted
        .is_some());
    assert_eq!(
        r.observe_callback(1, "g", PushEvent::Stopped, &stopped(Some(FinishReason::Auto))),
        CallbackApplied::Accepted { ended: true }
    );
    let out = answer(&r, "g", Answer::State(stopped(Some(FinishReason::Auto))));
    assert_eq!(out.ended, Some(FinishReason::Auto));
    assert_eq!(r.stats(1).unwrap().finished(FinishReason::Auto), 1);
}

#[test]
fn expiry_removes_and_tombstones() {
    let r = TaskRegistry::new();
    r.track(1, "e", None, Source::Discovery);
    r.observe_poll(1, "e", &stopped(Some(FinishReason::Auto)));
    assert_eq!(r.expire(Duration::from_secs(3600)), 0);
    assert_eq!(r.expire(Duration::ZERO), 1);
    assert!(r.get(1, "e").is_none());
    assert_eq!(
        r.track(1, "e", None, Source::Discovery),
        Track::Known,
        "an expired task must not come back"
    );
    assert_eq!(r.stats(1).unwrap().finished(FinishReason::Auto), 1);
}

/// An app left out of the configuration is hidden, not deleted: not shown, not expired, and
/// back unchanged with the app.
#[test]
fn an_app_left_out_is_hidden_and_comes_back_unchanged() {
    let r = TaskRegistry::new();
    r.set_configured([1, 2]);
    r.track(2, "t", None, Source::Discovery);
    r.observe_poll(2, "t", &stopped(Some(FinishReason::Exception)));
    let before = r.snapshot();
    r.set_configured([1]);
    assert_eq!(r.view().tasks().count(), 0);
    assert_eq!(r.view().apps().map(|(id, _)| *id).collect::<Vec<_>>(), [1]);
    assert_eq!(r.expire(Duration::ZERO), 0, "not expired while hidden");
    assert_eq!(r.hidden_apps(), [(2, 1)]);
    assert!(r.next_to_poll(&[1], Some(Instant::now())).is_none());
    r.set_configured([1, 2]);
    assert_eq!(r.snapshot(), before);
    assert_eq!(r.view().tasks().count(), 1);
}

/// Aggregates written before reason OTHER existed (four entries) still load.
#[test]
fn stats_from_before_other_load() {
    let mut v = serde_json::to_value(AppStats::default()).unwrap();
    v["finished_total"] = serde_json::json!([1, 2, 3, 4]);
    v["durations"].as_array_mut().unwrap().pop();
    let s: AppStats = serde_json::from_value(v).unwrap();
    assert_eq!(s.finished_total, [1, 2, 3, 4, 0]);
}

mod schedule;
