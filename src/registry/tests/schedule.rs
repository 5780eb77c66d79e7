//! The poll schedule: order, lanes of claims, the running list's hints, PREPARED re-reads, and
//! the consistency of its indexes.

use super::super::schedule::{order_key, Filed, OrderKey};
use super::*;

#[test]
fn poll_order_is_never_polled_then_least_recent() {
    let r = TaskRegistry::new();
    let t0 = Instant::now();
    for id in ["a", "b", "c"] {
        r.track(1, id, None, Source::Discovery);
    }
    let mut seen = vec![];
    while let Some((_, id)) = r.next_to_poll(&[1], Some(t0)) {
        seen.push(id);
    }
    assert_eq!(seen.len(), 3);
    // In flight: not handed out twice.
    assert!(r.next_to_poll(&[1], Some(Instant::now())).is_none());
    r.finish_poll(1, "b", t0);
    r.finish_poll(1, "a", t0 + Duration::from_millis(1));
    r.finish_poll(1, "c", t0 + Duration::from_millis(2));
    let later = t0 + Duration::from_secs(1);
    let order: Vec<String> = std::iter::from_fn(|| r.next_to_poll(&[1], Some(later)).map(|k| k.1)).collect();
    assert_eq!(order, ["b", "a", "c"]);
    // Other apps are not handed out.
    assert!(r.next_to_poll(&[2], Some(later)).is_none());
}

/// Reads of ids only a callback named wait behind known tasks' urgent and first reads, and
/// share the rest with the round robin; the apps' lanes take turns.
#[test]
fn claims_about_unknown_ids_share_the_budget_fairly() {
    let r = TaskRegistry::new();
    for i in 0..4 {
        r.observe_callback(1, &format!("f{i}"), PushEvent::Stopped, &stopped(None));
    }
    r.observe_callback(3, "h0", PushEvent::Stopped, &stopped(None));
    r.track(2, "new", None, Source::Discovery);
    let all = [1, 2, 3];
    assert_eq!(
        r.next_to_poll(&all, None),
        Some((2, "new".to_string())),
        "a first read goes first"
    );
    r.apply_answer(2, "new", &Answer::State(obs(TaskStatus::Pushing)), Duration::ZERO);
    r.finish_poll(2, "new", Instant::now());
    // A sweep: the round robin and the lanes alternate; the lanes go app by app in claim order.
    std::thread::sleep(Duration::from_millis(2));
    let sweep = Instant::now();
    let picks: Vec<String> = std::iter::from_fn(|| r.next_to_poll(&all, Some(sweep)).map(|k| k.1))
        .take(4)
        .collect();
    assert!(
        picks.contains(&"new".to_string()) && picks.iter().position(|p| p == "new") <= Some(1),
        "{picks:?}"
    );
    assert_eq!(
        picks
            .iter()
            .filter(|p| p.starts_with('f') || p.starts_with('h'))
            .count(),
        3,
        "{picks:?}"
    );
    assert!(
        picks.contains(&"h0".to_string()),
        "the other app's lane gets its turn: {picks:?}"
    );
    // Each read once in a sweep: a lane that answers TaskNotFound cannot hold the sweep open.
    for id in &picks {
        let app = match id.as_str() {
            "new" => 2,
            "h0" => 3,
            _ => 1,
        };
        r.apply_answer(app, id, &Answer::NotFound, Duration::ZERO);
        r.finish_poll(app, id, Instant::now());
    }
    let rest: Vec<String> = std::iter::from_fn(|| r.next_to_poll(&all, Some(sweep)).map(|k| k.1)).collect();
    assert!(rest.iter().all(|id| !picks.contains(id)), "{picks:?} then {rest:?}");
    assert_eq!(rest.len(), 2, "the lane's other two: {picks:?} then {rest:?}");
}

/// The poll order index holds exactly the pollable tasks that are not in flight nor parked.
#[test]
fn poll_queue_stays_consistent() {
    let r = TaskRegistry::new();
    let check = |r: &TaskRegistry| {
        let inner = r.lock();
        let expected: BTreeSet<OrderKey> = inner
            .tasks
            .values()
            .filter(|t| Inner::queued(t) && !t.in_claims_lane())
            .map(|t| order_key(t))
            .collect();
        let queued: BTreeSet<OrderKey> = inner.schedule.queues.values().flatten().cloned().collect();
        assert_eq!(queued, expected);
        // The per-app indexes hold exactly the app's tasks, and its tasks with a pending claim.
        let index = |m: &HashMap<u64, HashSet<String>>| -> BTreeSet<Key> {
            m.iter()
                .flat_map(|(app, ids)| ids.iter().map(|id| (*app, id.clone())))
                .collect()
        };
        assert_eq!(index(&inner.by_app), inner.tasks.keys().cloned().collect());
        assert_eq!(
            index(&inner.claimed),
            inner
                .tasks
                .iter()
                .filter(|(_, t)| t.claim.is_some())
                .map(|(k, _)| k.clone())
                .collect()
        );
        let lanes: usize = inner.schedule.lanes.values().map(BTreeSet::len).sum();
        let in_lanes = inner
            .tasks
            .values()
            .filter(|t| Inner::queued(t) && t.in_claims_lane())
            .count();
        assert_eq!(lanes, in_lanes);
        // Each task remembers exactly where it is filed.
        for (key, t) in &inner.tasks {
            let filed_at = match t.poll.filed {
                Some(Filed::Queue(rank, last)) => inner
                    .schedule
                    .queues
                    .get(&key.0)
                    .is_some_and(|q| q.contains(&(rank, last, key.0, key.1.clone()))),
                Some(Filed::Lane(seq)) => inner
                    .schedule
                    .lanes
                    .get(&key.0)
                    .is_some_and(|l| l.contains(&(seq, key.1.clone()))),
                None => !Inner::queued(t),
            };
            assert!(filed_at, "{key:?} filed {:?}", t.poll.filed);
        }
    };
    for i in 0..20 {
        r.track(1 + i % 2, &format!("t{i}"), None, Source::Discovery);
    }
    check(&r);
    let t0 = Instant::now();
    let mut picked = vec![];
    while let Some(k) = r.next_to_poll(&[1], Some(t0)) {
        picked.push(k);
    }
    assert_eq!(picked.len(), 10);
    check(&r);
    for (i, (app, id)) in picked.iter().enumerate() {
        if i % 3 == 0 {
            r.apply_answer(
                *app,
                id,
                &Answer::State(stopped(Some(FinishReason::Auto))),
                Duration::ZERO,
            );
        }
        r.finish_poll(*app, id, t0 + Duration::from_millis(i as u64));
    }
    check(&r);
    r.observe_callback(2, "t1", PushEvent::Stopped, &stopped(Some(FinishReason::Exception)));
    r.observe_callback(2, "fresh", PushEvent::Started, &obs(TaskStatus::Pushing));
    check(&r);
    r.apply_answer(2, "t1", &Answer::NotFound, Duration::ZERO);
    r.clear_polling();
    check(&r);
    r.expire(Duration::ZERO);
    r.set_configured([1]);
    check(&r);
}

/// Polls `id` with a PUSHING answer, so it is no longer wanted early.
fn polled_pushing(r: &TaskRegistry, id: &str) {
    answer(r, id, Answer::State(obs(TaskStatus::Pushing)));
}

#[test]
fn the_running_list_moves_gone_and_finished_tasks_to_the_front_once() {
    let r = TaskRegistry::new();
    for id in ["listed", "gone", "finished", "old"] {
        r.track(1, id, None, Source::Discovery);
        polled_pushing(&r, id);
    }
    assert!(r.next_to_poll(&[1], None).is_none(), "nothing wanted early");
    let pass = Instant::now();
    let listed: HashMap<String, bool> = [("listed", false), ("finished", true)]
        .into_iter()
        .map(|(id, f)| (id.to_string(), f))
        .collect();
    // "gone" and "old" are off the list, "finished" is listed FINISHED: all three first.
    assert_eq!(r.hint_running_list(1, &listed, pass), 3);
    let mut wanted: Vec<String> = std::iter::from_fn(|| r.next_to_poll(&[1], None))
        .map(|(_, id)| id)
        .collect();
    wanted.sort();
    assert_eq!(wanted, ["finished", "gone", "old"]);
    // "gone" really ended; "old" still pushes (older than the list's 3-day window).
    r.apply_answer(
        1,
        "gone",
        &Answer::State(stopped(Some(FinishReason::Exception))),
        Duration::from_secs(60),
    );
    r.apply_answer(
        1,
        "old",
        &Answer::State(obs(TaskStatus::Pushing)),
        Duration::from_secs(60),
    );
    r.apply_answer(
        1,
        "finished",
        &Answer::State(stopped(Some(FinishReason::Auto))),
        Duration::from_secs(60),
    );
    for id in ["gone", "old", "finished"] {
        r.finish_poll(1, id, Instant::now());
    }
    assert_eq!(r.get(1, "gone").unwrap().shown().status(), TaskStatus::Stopped);
    // The next pass still does not list "old": it is not hinted again, nor are ended tasks.
    let listed: HashMap<String, bool> = [("listed".to_string(), false)].into();
    assert_eq!(r.hint_running_list(1, &listed, Instant::now()), 0);
    assert!(r.next_to_poll(&[1], None).is_none());
    // A task tracked after the pass began (a callback raced the list) is left alone.
    let earlier = Instant::now();
    r.track(1, "new", None, Source::Callback);
    polled_pushing(&r, "new");
    assert_eq!(r.hint_running_list(1, &listed, earlier), 0);
    // Another app's tasks are not this list's business, even off it.
    r.track(2, "elsewhere", None, Source::Discovery);
    answer_in(&r, 2, "elsewhere", Answer::State(obs(TaskStatus::Pushing)));
    let listed: HashMap<String, bool> = [("listed".to_string(), false), ("new".to_string(), false)].into();
    assert_eq!(r.hint_running_list(1, &listed, Instant::now()), 0);
    assert!(r.next_to_poll(&[1, 2], None).is_none());
}

/// After a restart every task is owed its first read; an end the running list reveals goes ahead
/// of all of them, and a task whose poll is in flight is left to the next pass.
#[test]
fn a_hinted_read_goes_ahead_of_first_reads_and_waits_for_one_in_flight() {
    let r = TaskRegistry::new();
    for id in ["a", "b", "c", "d", "ended"] {
        r.track(1, id, None, Source::Discovery);
    }
    let (_, first) = r.next_to_poll(&[1], None).expect("never-read tasks are wanted");
    assert_eq!(first, "a", "first reads go in id order");
    // "a" is in flight; the list omits it and "ended".
    let listed: HashMap<String, bool> = ["b", "c", "d"].into_iter().map(|id| (id.to_string(), false)).collect();
    let pass = Instant::now() + Duration::from_secs(1);
    assert_eq!(r.hint_running_list(1, &listed, pass), 1, "only the idle one is hinted");
    assert_eq!(
        r.next_to_poll(&[1], None).map(|k| k.1).as_deref(),
        Some("ended"),
        "ahead of b, c and d"
    );
    // "a" comes back from its read; the next pass that still omits it hints it then.
    r.apply_answer(
        1,
        "a",
        &Answer::State(obs(TaskStatus::Pushing)),
        Duration::from_secs(60),
    );
    r.finish_poll(1, "a", Instant::now());
    assert_eq!(r.hint_running_list(1, &listed, pass), 1);
    assert_eq!(r.next_to_poll(&[1], None).map(|k| k.1).as_deref(), Some("a"));
}

/// A PREPARED task is read again every `poll.interval`, ahead of the round robin, whatever the
/// fleet's size; a PUSHING one waits for its turn.
#[test]
fn a_prepared_task_is_read_again_ahead_of_the_round_robin() {
    let r = TaskRegistry::new();
    r.set_prepared_reread(Duration::from_millis(50));
    r.track(1, "prepared", None, Source::Discovery);
    r.track(1, "pushing", None, Source::Discovery);
    answer(&r, "prepared", Answer::State(obs(TaskStatus::Prepared)));
    answer(&r, "pushing", Answer::State(obs(TaskStatus::Pushing)));
    assert!(r.next_to_poll(&[1], None).is_none(), "nothing due yet");
    std::thread::sleep(Duration::from_millis(60));
    assert_eq!(r.next_to_poll(&[1], None).map(|k| k.1).as_deref(), Some("prepared"));
    r.apply_answer(
        1,
        "prepared",
        &Answer::State(obs(TaskStatus::Pushing)),
        Duration::from_secs(60),
    );
    r.finish_poll(1, "prepared", Instant::now());
    std::thread::sleep(Duration::from_millis(60));
    assert!(
        r.next_to_poll(&[1], None).is_none(),
        "a PUSHING task is left to the round robin"
    );
}
