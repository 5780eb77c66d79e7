//! Finding and reading recordings: per app with `apps[].record`, a pass of the OnlineRecord
//! running list every `poll.discovery_interval`; per credential group, one loop that reads the
//! most overdue recording with DescribeOnlineRecord whenever that action's own budget gives a turn.
//! A recording is read every `poll.interval` until it is final; the list's hint (a recording gone
//! from it, or listed FINISHED) puts its read first, so an end shows within a pass and a read.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{ms, Key, RecordRegistry};
use crate::census::{Census, TaskType};
use crate::instruments::PollSinks;
use crate::recording::{RecordAnswer, RecordFinishReason};
use crate::task::{truncate, unix_now};
use crate::tencentcloud::ratelimit::Permit;
use crate::tencentcloud::tiw::RUNNING_TASKS_PAGE;
use crate::tencentcloud::TiwClient;

/// Safety stop for paging (a Total that never ends), as for push.
const MAX_PAGES: i64 = 200;
/// Reads of one credential group in flight at once; enough to use 20/s with 3 s replies (as for push).
const MAX_IN_FLIGHT: usize = 64;
/// How often final recordings past retention are removed.
const EXPIRY_PERIOD: Duration = Duration::from_secs(5);

/// How recordings are found and read.
#[derive(Debug, Clone)]
pub struct RecordSettings {
    /// `poll.interval`: a recording not final is read at least this often, budget permitting.
    pub interval: Duration,
    /// `poll.discovery_interval`: how often the running list is read.
    pub discovery_interval: Duration,
    /// `retention.stopped_tasks`: how long a final recording stays.
    pub retention: Duration,
}

/// One app whose recordings are tracked, as the recording loops see it.
#[derive(Clone)]
pub struct RecordedApp {
    pub client: TiwClient,
    /// Key of the credential group (one DescribeOnlineRecord budget).
    pub group: String,
    /// Its complete list passes are also the OnlineRecord census (`apps[].census`).
    pub census: bool,
}

/// The recording loops of the apps with `apps[].record`.
pub struct RecordPoller {
    records: Arc<RecordRegistry>,
    metrics: PollSinks,
    apps: HashMap<u64, RecordedApp>,
    settings: RecordSettings,
}

impl RecordPoller {
    pub fn new(
        records: Arc<RecordRegistry>,
        metrics: PollSinks,
        apps: HashMap<u64, RecordedApp>,
        settings: RecordSettings,
    ) -> Arc<RecordPoller> {
        records.set_configured(apps.keys().copied());
        Arc::new(RecordPoller {
            records,
            metrics,
            apps,
            settings,
        })
    }

    /// Whether `sdk_app_id`'s recordings are tracked (its OnlineRecord list is read every pass).
    pub fn tracks(&self, sdk_app_id: u64) -> bool {
        self.apps.contains_key(&sdk_app_id)
    }

    /// Spawns the list and read loops and the expiry; they stop when `token` is cancelled.
    pub fn spawn(self: &Arc<Self>, tracker: &tokio_util::task::TaskTracker, token: &CancellationToken) {
        if self.apps.is_empty() {
            return;
        }
        let mut groups: HashMap<&str, Vec<u64>> = HashMap::new();
        for (id, app) in &self.apps {
            groups.entry(app.group.as_str()).or_default().push(*id);
            let (me, token, id) = (self.clone(), token.clone(), *id);
            tracker.spawn(async move {
                token
                    .run_until_cancelled(async move {
                        loop {
                            me.list_once(id).await;
                            tokio::time::sleep(me.settings.discovery_interval).await;
                        }
                    })
                    .await
            });
        }
        for (_, mut apps) in groups {
            apps.sort_unstable();
            let (me, token) = (self.clone(), token.clone());
            tracker.spawn(async move { token.run_until_cancelled(me.read_loop(apps)).await });
        }
        let (me, token) = (self.clone(), token.clone());
        let period = (self.settings.retention / 4).clamp(Duration::from_millis(100), EXPIRY_PERIOD);
        tracker.spawn(async move {
            token
                .run_until_cancelled(async move {
                    loop {
                        tokio::time::sleep(period).await;
                        me.records.expire(me.settings.retention);
                    }
                })
                .await
        });
    }

    /// Pages through the app's OnlineRecord running list once: new running recordings are
    /// tracked, and after a complete pass the ones it no longer lists are read first. A complete
    /// pass is also the census of OnlineRecord (`tiw_running_tasks`). Returns how many were added.
    pub async fn list_once(&self, sdk_app_id: u64) -> usize {
        let Some(app) = self.apps.get(&sdk_app_id) else {
            return 0;
        };
        let mut listed = HashMap::new();
        let mut census = Census::default();
        let mut complete = false;
        let mut offset = 0;
        for _ in 0..MAX_PAGES {
            let page = match app
                .client
                .describe_running_tasks(TaskType::OnlineRecord, offset, RUNNING_TASKS_PAGE)
                .await
            {
                Ok(page) => page,
                Err(e) => {
                    if e.is_action_denied() {
                        self.metrics
                            .poll
                            .set_permitted(sdk_app_id, "DescribeRunningTasks", false);
                    }
                    tracing::debug!(sdk_app_id, error = %e, "the OnlineRecord running list failed; read again next interval");
                    return 0;
                }
            };
            let tasks = page.tasks.unwrap_or_default();
            let n = tasks.len() as i64;
            let now = unix_now();
            for t in tasks.into_iter().filter(|t| t.is_of(TaskType::OnlineRecord)) {
                census.add(t.status.as_deref(), t.create_time.as_deref(), now);
                let Some(id) = t.task_id.filter(|id| crate::task::is_task_id(id)) else {
                    continue;
                };
                let running = t.status.as_deref() != Some("FINISHED");
                listed.insert(id, (crate::task::plausible(t.room_id), running));
            }
            offset += n;
            if n == 0 || offset >= page.total.unwrap_or(0) {
                complete = true;
                break;
            }
        }
        let (added, refused) = self.records.listed(sdk_app_id, &listed, complete);
        for _ in 0..refused {
            self.metrics.tasks.dropped(sdk_app_id, "limit");
        }
        if complete && app.census {
            self.metrics.poll.census(sdk_app_id, TaskType::OnlineRecord, &census);
            self.metrics.recent.census(sdk_app_id, TaskType::OnlineRecord, &census);
        }
        if added > 0 {
            tracing::debug!(sdk_app_id, recordings = added, "discovered recording tasks");
        }
        added
    }

    /// Reads the recordings of one credential group as they come due, each in a turn of
    /// DescribeOnlineRecord's budget, at most [`MAX_IN_FLIGHT`] at once.
    async fn read_loop(self: Arc<Self>, apps: Vec<u64>) {
        let Some(client) = apps.iter().find_map(|id| self.apps.get(id)).map(|a| a.client.clone()) else {
            return;
        };
        let mut wanted = self.records.subscribe();
        let mut in_flight = JoinSet::new();
        loop {
            while in_flight.try_join_next().is_some() {}
            while in_flight.len() >= MAX_IN_FLIGHT {
                in_flight.join_next().await;
            }
            wanted.borrow_and_update();
            let now = ms(unix_now());
            match self.records.next_due(&apps) {
                Some(at) if at <= now => {
                    let turn = client.record_turn().await;
                    if let Some(key) = self.records.next_to_poll(&apps, ms(unix_now())) {
                        let me = self.clone();
                        in_flight.spawn(async move { me.read(key, turn).await });
                    }
                }
                next => {
                    let wait = next.map_or(Duration::from_secs(3600), |at| Duration::from_millis(at - now));
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = wanted.changed() => {}
                        Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
                    }
                }
            }
        }
    }

    /// Reads one recording in `turn` and folds the answer in.
    async fn read(&self, key: Key, turn: Permit) {
        let (sdk_app_id, task_id) = (key.0, key.1.as_str());
        let Some(app) = self.apps.get(&sdk_app_id) else {
            self.records.finish_poll(&key, self.settings.interval);
            return;
        };
        let answered = match app.client.read_record(task_id, Some(turn)).await {
            Ok(answered) => answered,
            Err(e) => {
                if e.is_action_denied() {
                    self.metrics
                        .poll
                        .set_permitted(sdk_app_id, "DescribeOnlineRecord", false);
                }
                tracing::debug!(sdk_app_id, task_id, error = %e, "DescribeOnlineRecord failed");
                self.records.finish_poll(&key, self.settings.interval);
                return;
            }
        };
        self.metrics
            .poll
            .set_permitted(sdk_app_id, "DescribeOnlineRecord", true);
        let applied = self.records.answer(&key, &answered.answer, self.settings.interval);
        let room_id = applied.room_id.map(|r| r.to_string()).unwrap_or_default();
        let request_id = answered.request_id.as_str();
        match (applied.ended, &answered.answer) {
            (Some(RecordFinishReason::Failed), RecordAnswer::Failed(message)) => {
                tracing::warn!(sdk_app_id, task_id, room_id, request_id, reason = %truncate(message, 200), "real-time recording task failed: the class has no recording")
            }
            (Some(reason), _) if reason.is_bad() => {
                tracing::warn!(
                    sdk_app_id,
                    task_id,
                    room_id,
                    reason = reason.as_str(),
                    exceptions = applied.exceptions,
                    request_id,
                    "real-time recording ended abnormally: the class's recording may be incomplete"
                )
            }
            (Some(reason), _) => tracing::debug!(sdk_app_id, task_id, reason = reason.as_str(), "recording ended"),
            (None, _) => {}
        }
        if applied.dropped {
            self.metrics.tasks.dropped(sdk_app_id, "not_found");
            tracing::info!(
                sdk_app_id,
                task_id,
                "dropped a recording Tencent does not know (TaskNotFound 3 times in a row)"
            );
        }
    }
}
