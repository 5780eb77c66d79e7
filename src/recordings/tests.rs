use std::collections::HashMap;
use std::time::Duration;

use super::*;

const APP: u64 = 1400000001;
const EVERY: Duration = Duration::from_secs(15);

fn state(status: RecordStatus, reason: Option<RecordFinishReason>) -> RecordAnswer {
    RecordAnswer::State(RecordFacts {
        status,
        finish_reason: reason,
        ..RecordFacts::default()
    })
}

fn listed(items: &[(&str, bool)]) -> HashMap<String, (Option<i64>, bool)> {
    items
        .iter()
        .map(|(id, running)| (id.to_string(), (Some(7), *running)))
        .collect()
}

fn registry() -> RecordRegistry {
    let r = RecordRegistry::default();
    r.set_configured([APP]);
    r
}

fn read(r: &RecordRegistry, id: &str, answer: RecordAnswer) -> RecordApplied {
    r.answer(&(APP, id.to_string()), &answer, EVERY)
}

#[test]
fn a_recording_listed_running_is_tracked_and_one_listed_finished_is_history() {
    let r = registry();
    assert_eq!(r.listed(APP, &listed(&[("a", true), ("old", false)]), true), (1, 0));
    assert!(r.get(APP, "a").is_some());
    assert!(r.get(APP, "old").is_none(), "a recording that ended unseen is not news");
    assert_eq!(r.next_to_poll(&[APP], u64::MAX), Some((APP, "a".to_string())));
    assert_eq!(
        r.next_to_poll(&[APP], u64::MAX),
        None,
        "a read under way is not handed out twice"
    );
    assert_eq!(r.next_to_poll(&[APP + 1], u64::MAX), None);
}

#[test]
fn an_end_a_result_and_exceptions_are_counted_once() {
    let r = registry();
    r.listed(APP, &listed(&[("a", true)]), true);
    r.next_to_poll(&[APP], u64::MAX);
    let recording = RecordAnswer::State(RecordFacts {
        status: RecordStatus::Recording,
        exception_cnt: Some(2),
        ..RecordFacts::default()
    });
    assert_eq!(read(&r, "a", recording.clone()).ended, None);
    read(&r, "a", recording);
    let applied = read(
        &r,
        "a",
        state(RecordStatus::Stopped, Some(RecordFinishReason::Exception)),
    );
    assert_eq!(applied.ended, Some(RecordFinishReason::Exception));
    assert_eq!(
        read(
            &r,
            "a",
            state(RecordStatus::Stopped, Some(RecordFinishReason::Exception))
        )
        .ended,
        None
    );
    let finished = RecordAnswer::State(RecordFacts {
        status: RecordStatus::Finished,
        finish_reason: Some(RecordFinishReason::Exception),
        total_time_ms: Some(90_000),
        video_bytes: Some(1000),
        videos: Some(1),
        ..RecordFacts::default()
    });
    assert!(read(&r, "a", finished.clone()).finished);
    assert!(!read(&r, "a", finished).finished);
    let (tasks, apps) = r.snapshot();
    let stats = &apps[0].1;
    assert_eq!(stats.finished_total[RecordFinishReason::Exception.index()], 1);
    assert_eq!(stats.finished_total.iter().sum::<u64>(), 1);
    assert_eq!((stats.exceptions_total, stats.video_bytes_total), (2, 1000));
    assert_eq!((stats.duration.count, stats.duration.sum), (1, 90.0));
    assert_eq!(
        stats.upload.count, 1,
        "STOPPED was seen, so the upload's length is known"
    );
    assert!(tasks[0].is_final());
    assert_eq!(r.next_due(&[APP]), None, "a final recording is not read again");
}

#[test]
fn an_end_without_a_reason_waits_for_one_and_a_failure_counts_as_failed() {
    let r = registry();
    r.listed(APP, &listed(&[("a", true), ("b", true)]), true);
    assert_eq!(read(&r, "a", state(RecordStatus::Stopped, None)).ended, None);
    assert_eq!(
        read(&r, "a", state(RecordStatus::Finished, Some(RecordFinishReason::Auto))).ended,
        Some(RecordFinishReason::Auto),
        "a documented reason is counted, not OTHER"
    );
    let failed = read(&r, "b", RecordAnswer::Failed("record failed".into()));
    assert_eq!(failed.ended, Some(RecordFinishReason::Failed));
    let b = r.get(APP, "b").unwrap();
    assert_eq!(b.facts.failure.unwrap().code, "FailedOperation.Record");
    let (_, apps) = r.snapshot();
    assert_eq!(apps[0].1.upload.count, 1, "a's upload, once; b never uploaded");
}

#[test]
fn a_complete_pass_that_no_longer_lists_a_recording_puts_its_read_first() {
    let r = registry();
    r.listed(APP, &listed(&[("a", true), ("b", true)]), true);
    for id in ["a", "b"] {
        r.next_to_poll(&[APP], u64::MAX);
        read(&r, id, state(RecordStatus::Recording, None));
    }
    let now = ms(crate::task::unix_now());
    assert_eq!(r.next_to_poll(&[APP], now), None, "both read just now");
    r.listed(APP, &listed(&[("a", true)]), false);
    assert_eq!(r.next_to_poll(&[APP], now), None, "a partial pass says nothing of b");
    r.listed(APP, &listed(&[("a", true)]), true);
    assert_eq!(r.next_to_poll(&[APP], now), Some((APP, "b".to_string())));
    r.listed(APP, &listed(&[("a", false)]), true);
    assert_eq!(
        r.next_to_poll(&[APP], now),
        Some((APP, "a".to_string())),
        "listed FINISHED"
    );
}

#[test]
fn not_found_three_times_drops_and_batches_carry_every_change() {
    let r = registry();
    r.listed(APP, &listed(&[("a", true), ("b", true)]), true);
    let batch = r.take_batch();
    assert_eq!(batch.tasks.len(), 2);
    assert!(r.take_batch().is_empty());
    for _ in 0..NOT_FOUND_LIMIT {
        read(&r, "a", RecordAnswer::NotFound);
    }
    assert!(r.get(APP, "a").is_none());
    read(&r, "b", state(RecordStatus::Recording, None));
    let batch = r.take_batch();
    assert_eq!(batch.removed, vec![(APP, "a".to_string())]);
    assert_eq!(batch.tasks.len(), 1);
    r.return_batch(batch.clone());
    assert_eq!(
        r.take_batch().tasks,
        batch.tasks,
        "a batch that was not written is taken again"
    );

    let restored = RecordRegistry::default();
    restored.restore(RecordRestored {
        tasks: batch.tasks,
        apps: batch.apps,
    });
    restored.set_configured([APP]);
    assert_eq!(
        restored.next_to_poll(&[APP], u64::MAX),
        Some((APP, "b".to_string())),
        "read again at once"
    );
}

#[test]
fn the_lists_hint_goes_before_recordings_never_read() {
    let r = registry();
    let many: Vec<(String, bool)> = (0..50).map(|i| (format!("r{i:02}"), true)).collect();
    let items: Vec<(&str, bool)> = many.iter().map(|(id, running)| (id.as_str(), *running)).collect();
    r.listed(APP, &listed(&items), true);
    // r49 ended: the next complete pass lists every other one.
    let rest: Vec<(&str, bool)> = items.iter().copied().filter(|(id, _)| *id != "r49").collect();
    r.listed(APP, &listed(&rest), true);
    assert_eq!(
        r.next_to_poll(&[APP], u64::MAX),
        Some((APP, "r49".to_string())),
        "the hint is read before the 49 first reads still owed"
    );
}

#[test]
fn callbacks_name_recordings_unshown_and_bounded_until_the_api_answers() {
    let r = registry();
    for i in 0..MAX_UNCONFIRMED_PER_APP {
        assert_eq!(r.claimed(APP, &format!("c{i}")), RecordClaim::Taken);
    }
    assert_eq!(r.claimed(APP, "one-too-many"), RecordClaim::Full);
    assert_eq!(
        r.claimed(APP + 1, "another-app"),
        RecordClaim::Taken,
        "the bound is per app"
    );
    assert!(r.snapshot().0.is_empty(), "nothing only a callback named is shown");
    // The API answers for c0: shown, and room for one more.
    read(&r, "c0", state(RecordStatus::Recording, None));
    assert_eq!(r.snapshot().0.len(), 1);
    assert_eq!(r.claimed(APP, "one-too-many"), RecordClaim::Taken);
    // c1 is made up: dropped after three TaskNotFound, and its next event is refuted.
    for _ in 0..NOT_FOUND_LIMIT {
        read(&r, "c1", RecordAnswer::NotFound);
    }
    assert!(r.get(APP, "c1").is_none());
    assert_eq!(r.claimed(APP, "c1"), RecordClaim::Refuted);
}

#[test]
fn a_known_recordings_event_puts_its_read_first_even_during_a_read() {
    let r = registry();
    r.listed(APP, &listed(&[("a", true), ("b", true)]), true);
    for _ in 0..2 {
        let (_, id) = r.next_to_poll(&[APP], u64::MAX).unwrap();
        read(&r, &id, state(RecordStatus::Recording, None));
    }
    let now = ms(crate::task::unix_now());
    assert_eq!(r.next_to_poll(&[APP], now), None, "both read just now");
    assert_eq!(r.claimed(APP, "b"), RecordClaim::Taken);
    assert_eq!(r.next_to_poll(&[APP], now), Some((APP, "b".to_string())));
    // An event while b's read is under way: that read may predate it, so b is read again at once.
    assert_eq!(r.claimed(APP, "b"), RecordClaim::Taken);
    read(&r, "b", state(RecordStatus::Recording, None));
    assert_eq!(r.next_to_poll(&[APP], now), Some((APP, "b".to_string())));
    read(&r, "b", state(RecordStatus::Recording, None));
    assert_eq!(r.next_to_poll(&[APP], now), None);
}
