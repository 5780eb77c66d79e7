//! An embedded stand-in for TIW's API 3.0, for tests and `demo`.
//!
//! It behaves like Tencent where the exporter can tell: it verifies every request's TC3 signature
//! and timestamp ([`api`]), counts requests per sliding second per action and SecretId and answers
//! `RequestLimitExceeded` past the limit, replies with Tencent's envelopes and error codes, and runs
//! push tasks through their lifecycles ([`lifecycle`]). Knobs inject faults per task or per app.

pub mod api;
pub mod callbacks;
pub mod faults;
pub mod lifecycle;
pub mod recording;
mod reply;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand::Rng;
use tokio_util::sync::CancellationToken;

pub use callbacks::{CallbackKnobs, CallbackStats};
pub use faults::{FaultRates, RandomFault};

pub use lifecycle::{LifecyclePlan, Outcome};

/// Credentials the simulator accepts.
#[derive(Clone, Default)]
pub struct SimCredential {
    pub secret_id: String,
    pub secret_key: String,
    /// When set, requests must carry it as `X-TC-Token`.
    pub session_token: Option<String>,
    /// The account (UIN) the SecretId belongs to. Tencent counts the rate limit per account and
    /// action (its code `RequestLimitExceeded.UinLimitExceeded`), so SecretIds of one account
    /// share one window. `None`: the SecretId is an account of its own.
    pub account: Option<String>,
    /// Actions the credentials' CAM policy does not grant (a sub-account allowed some actions of
    /// tiw and not others): refused with `AuthFailure.UnauthorizedOperation`, Tencent's common
    /// error code for a request CAM does not authorise. CAM grants permissions per action.
    pub denied_actions: Vec<String>,
}

/// Settings of a simulator.
#[derive(Clone)]
pub struct SimConfig {
    pub credentials: Vec<SimCredential>,
    pub apps: Vec<u64>,
    /// Requests per sliding second per action and SecretId.
    pub requests_per_second: usize,
    /// Added before every admitted reply.
    pub latency: Duration,
    /// Random extra latency, uniform in 0..=jitter.
    pub latency_jitter: Duration,
    /// Seconds the simulator's clock is ahead of the machine's (to provoke SignatureExpire).
    pub clock_offset_secs: i64,
    /// Random faults on API requests, from the start; [`Simulator::set_fault_rates`] changes them.
    pub fault_rates: FaultRates,
    /// DescribeRunningTasks also lists ended tasks of its 3-day window, with `Status` `FINISHED`.
    /// Tencent documents the field as `QUEUED | PROCESSING | FINISHED` (the API page of
    /// DescribeRunningTasks, and tccli's api.json) without saying when FINISHED is listed: the
    /// exporter must be right under either reading, so tests and the demo can choose.
    pub list_finished: bool,
    /// Tencent's FORCE_STOP limits of a recording: the longest pause and the longest recording
    /// ([`recording::MAX_PAUSE`], [`recording::MAX_RECORDING`]); tests shorten them.
    pub record_limits: (Duration, Duration),
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            credentials: vec![SimCredential {
                secret_id: "AKIDsimulator0000000000000000000000".into(),
                secret_key: "simulatorSecretKey000000000000000".into(),
                session_token: None,
                ..Default::default()
            }],
            apps: vec![1400000001],
            requests_per_second: 20,
            latency: Duration::ZERO,
            latency_jitter: Duration::ZERO,
            clock_offset_secs: 0,
            fault_rates: FaultRates::default(),
            list_finished: false,
            record_limits: (recording::MAX_PAUSE, recording::MAX_RECORDING),
        }
    }
}

/// Status of a simulated task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimStatus {
    Prepared,
    Pushing,
    Stopped,
    /// DescribeWhiteboardPush answers `FailedOperation.WhiteboardPush`.
    Failed,
}

/// One simulated push task, with Tencent's fields.
#[derive(Debug, Clone)]
pub struct SimTask {
    pub task_id: String,
    pub sdk_app_id: u64,
    pub room_id: i64,
    pub group_id: String,
    pub push_user_id: String,
    pub status: SimStatus,
    /// AUTO, USER_CALL or EXCEPTION once stopped.
    pub finish_reason: Option<&'static str>,
    pub push_start_time: i64,
    pub push_stop_time: i64,
    pub exception_cnt: i64,
    pub im_sync_time: i64,
    pub create_time: i64,
    pub failed_message: String,
    /// How DescribeWhiteboardPush answers once the task has failed.
    pub failure_reply: FailureReply,
    /// Drives the task when it runs on its own (demo); `None` for tasks a test moves by hand.
    pub plan: Option<LifecyclePlan>,
    pub(crate) created: Instant,
}

/// How DescribeWhiteboardPush answers for a failed task. Tencent's two sites document two
/// answers: the China site's example is the error `FailedOperation.WhiteboardPush`; the
/// international API page's "Querying failed whiteboard push tasks" example is a success reply
/// with nothing but `RequestId`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FailureReply {
    /// `FailedOperation.WhiteboardPush` with the failure message (China site's example).
    #[default]
    ErrorCode,
    /// `{"Response":{"RequestId":...}}` and nothing else (international site's example).
    BareSuccess,
}

/// App-level error codes (design §2) with the messages of Tencent's common error code list, to
/// inject with [`Simulator::set_app_fault`]. Bare codes exist: Tencent's Go SDK lists
/// `ResourceUnavailable` and `UnauthorizedOperation` themselves.
pub fn app_level_fault(code: &str) -> Fault {
    let message = match code {
        "ResourceUnavailable" => "Resource is unavailable.",
        "ResourceUnavailable.ServiceExpired" => "The service has expired because of an overdue payment.",
        "UnauthorizedOperation" => "Unauthorized operation.",
        "UnauthorizedOperation.SdkAppId" => "SdkAppId does not belong to this account.",
        "IpInBlacklist" => "Your IP is in uin IP blacklist.",
        "IpNotInWhitelist" => "Your IP is not in uin IP whitelist.",
        "InvalidParameter.SdkAppIdNotFound" => "The SdkAppId does not exist.",
        _ => "The request was refused.",
    };
    Fault::Error {
        code: code.to_string(),
        message: message.to_string(),
    }
}

/// A fault injected into the replies for one task (or every DescribeWhiteboardPush of an app).
#[derive(Debug, Clone)]
pub enum Fault {
    /// HTTP 500 with an HTML body.
    Http500,
    /// HTTP 200 with a body that is not JSON.
    NotJson,
    /// No reply until the client gives up.
    Hang,
    /// Tencent's error envelope with this code and message.
    Error { code: String, message: String },
    /// This `Response` object (RequestId is added), e.g. with fields missing or null.
    Response(serde_json::Value),
    /// Exactly this status and body (`application/json`), for replies no envelope can describe.
    Raw { status: u16, body: Vec<u8> },
}

/// A task of a type the simulator does not run (document transcoding), as DescribeRunningTasks
/// lists it: Tencent's `RunningTaskItem` (the Go SDK's models.go) with `Status` QUEUED →
/// PROCESSING → FINISHED.
#[derive(Debug, Clone)]
pub struct SimListed {
    pub task_id: String,
    pub sdk_app_id: u64,
    /// `TranscodeH5` or `TranscodeJPG`.
    pub task_type: &'static str,
    /// `QUEUED`, `PROCESSING` or `FINISHED`.
    pub status: &'static str,
    pub create_time: i64,
    /// Drives it when it runs on its own (demo): seconds queued, then processing, from creation.
    pub plan: Option<(Duration, Duration)>,
    pub(crate) created: Instant,
}

#[derive(Default)]
pub(crate) struct World {
    pub tasks: HashMap<String, SimTask>,
    /// Transcode tasks, listed only.
    pub listed: HashMap<String, SimListed>,
    /// Real-time recording tasks.
    pub records: HashMap<String, recording::SimRecord>,
    pub task_faults: HashMap<String, Fault>,
    pub app_faults: HashMap<u64, Fault>,
    pub callbacks: HashMap<u64, (String, String)>,
    /// The real-time recording feature's callback URL and key per app.
    pub record_callbacks: HashMap<u64, (String, String)>,
    windows: HashMap<(String, String), VecDeque<Instant>>,
}

/// What the simulator has seen.
#[derive(Debug, Clone, Default)]
pub struct SimStats {
    /// Requests per action, whatever their outcome.
    pub requests: HashMap<String, u64>,
    /// Requests answered `RequestLimitExceeded`.
    pub rate_limited: u64,
    /// Requests refused for the per-second limit (not injected faults), per action.
    pub over_limit: HashMap<String, u64>,
    /// Requests refused with an `AuthFailure.*` code.
    pub auth_failures: u64,
    /// Arrival instants of admitted requests, per action (for rate checks in tests).
    pub admitted: HashMap<String, Vec<Instant>>,
    /// DescribeRunningTasks requests answered, per `TaskType`.
    pub running_lists: HashMap<String, u64>,
    /// Random faults injected, by kind (`http_5xx`, `connection_reset`, ...).
    pub faults_injected: HashMap<&'static str, u64>,
}

impl SimStats {
    /// Largest number of admitted requests of `action` within any sliding second.
    pub fn max_per_second(&self, action: &str) -> usize {
        let Some(ts) = self.admitted.get(action) else {
            return 0;
        };
        let mut best = 0;
        let mut lo = 0;
        for hi in 0..ts.len() {
            while ts[hi].duration_since(ts[lo]) >= Duration::from_secs(1) {
                lo += 1;
            }
            best = best.max(hi - lo + 1);
        }
        best
    }

    /// Admitted requests of `action` that arrived within `[from, to)`.
    pub fn admitted_between(&self, action: &str, from: Instant, to: Instant) -> usize {
        self.admitted
            .get(action)
            .map_or(0, |ts| ts.iter().filter(|t| **t >= from && **t < to).count())
    }
}

pub(crate) struct Shared {
    pub config: SimConfig,
    world: Mutex<World>,
    stats: Mutex<SimStats>,
    knobs: Mutex<CallbackKnobs>,
    fault_rates: Mutex<FaultRates>,
    callback_stats: Mutex<CallbackStats>,
    /// Events of task transitions go here once the sender runs.
    outbox: Mutex<Option<tokio::sync::mpsc::UnboundedSender<callbacks::Pending>>>,
    /// When kept ([`Simulator::keep_acknowledged`]): every callback body answered 2xx, as sent.
    acknowledged: Mutex<Option<Vec<Acknowledged>>>,
    pub shutdown: CancellationToken,
}

impl Shared {
    pub(crate) fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub(crate) fn stats_mut(&self) -> MutexGuard<'_, SimStats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub(crate) fn callback_stats_mut(&self) -> MutexGuard<'_, CallbackStats> {
        self.callback_stats.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub(crate) fn fault_rates(&self) -> FaultRates {
        self.fault_rates.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
    pub(crate) fn set_fault_rates(&self, rates: FaultRates) -> Result<(), String> {
        rates.validate()?;
        *self.fault_rates.lock().unwrap_or_else(|e| e.into_inner()) = rates;
        Ok(())
    }
    pub(crate) fn callback_knobs(&self) -> CallbackKnobs {
        self.knobs.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Queues the callback a task's transition from `before` produces.
    pub(crate) fn emit(&self, before: SimStatus, task: &SimTask) {
        self.send(callbacks::event_for(before, task));
    }

    /// Hands an event to the callback sender, if one runs.
    pub(crate) fn send(&self, event: Option<callbacks::Pending>) {
        if let Some(event) = event {
            if let Some(tx) = self.outbox.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                let _ = tx.send(event);
            }
        }
    }

    /// Sliding-window admission for one account and action. Every authenticated request counts,
    /// refused ones included, as a strict server would count them.
    pub(crate) fn admit(&self, secret_id: &str, action: &str, at: Instant) -> bool {
        let account = self
            .config
            .credentials
            .iter()
            .find(|c| c.secret_id == secret_id)
            .and_then(|c| c.account.clone())
            .unwrap_or_else(|| secret_id.to_string());
        let mut world = self.world();
        let window = world.windows.entry((account, action.to_string())).or_default();
        while window
            .front()
            .is_some_and(|t| at.duration_since(*t) >= Duration::from_secs(1))
        {
            window.pop_front();
        }
        let ok = window.len() < self.config.requests_per_second;
        window.push_back(at);
        ok
    }
}

/// A callback body the receiver answered 2xx, with its app.
pub type Acknowledged = (u64, Vec<u8>);

/// A simulator: cheap to clone, all clones share one world.
#[derive(Clone)]
pub struct Simulator {
    pub(crate) shared: Arc<Shared>,
}

/// A running simulator server.
pub struct SimServer {
    pub sim: Simulator,
    pub addr: SocketAddr,
    pub token: CancellationToken,
    pub handle: tokio::task::JoinHandle<()>,
}

impl SimServer {
    /// `http://127.0.0.1:PORT`, the endpoint to configure.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the server and every lifecycle loop.
    pub async fn stop(self) {
        self.token.cancel();
        let _ = self.handle.await;
    }
}

/// A random id in Tencent's style (20 lowercase letters and digits).
pub fn random_task_id() -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..20)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}

/// Whole unix seconds, as Tencent's fields carry them (from the crate's one clock).
pub(crate) fn unix_now() -> i64 {
    crate::task::unix_now() as i64
}

impl Simulator {
    pub fn new(config: SimConfig) -> Simulator {
        let shutdown = CancellationToken::new();
        Simulator {
            shared: Arc::new(Shared {
                fault_rates: Mutex::new(config.fault_rates.clone()),
                config,
                world: Mutex::new(World::default()),
                stats: Mutex::new(SimStats::default()),
                knobs: Mutex::new(CallbackKnobs::default()),
                callback_stats: Mutex::new(CallbackStats::default()),
                outbox: Mutex::new(None),
                acknowledged: Mutex::new(None),
                shutdown,
            }),
        }
    }

    pub fn config(&self) -> &SimConfig {
        &self.shared.config
    }

    /// Serves the API on `listener` until `token` is cancelled.
    pub async fn serve(self, listener: tokio::net::TcpListener, token: CancellationToken) -> std::io::Result<()> {
        let app = api::router(self.shared.clone());
        let shared = self.shared.clone();
        let stop = token.clone();
        let app = app.into_make_service_with_connect_info::<faults::ResetFlag>();
        let result = axum::serve(faults::ResetListener(listener), app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        shared.shutdown.cancel();
        result
    }

    /// Binds `addr` (port 0 for any) and serves in the background.
    pub async fn spawn(self, addr: SocketAddr) -> std::io::Result<SimServer> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let token = CancellationToken::new();
        // Hung replies end when the server stops.
        let shutdown = self.shared.shutdown.clone();
        let t = token.clone();
        tokio::spawn(async move {
            t.cancelled().await;
            shutdown.cancel();
        });
        let (tx, rx) = callbacks::channel();
        *self.shared.outbox.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        let sender = tokio::spawn(callbacks::run(self.shared.clone(), rx));
        let stop_sender = token.clone();
        tokio::spawn(async move {
            stop_sender.cancelled().await;
            sender.abort();
        });
        let sim = self.clone();
        let t = token.clone();
        let handle = tokio::spawn(async move {
            if let Err(e) = sim.serve(listener, t).await {
                tracing::error!(error = %e, "simulator stopped");
            }
        });
        Ok(SimServer {
            sim: self,
            addr,
            token,
            handle,
        })
    }

    /// Creates a task in PREPARED for `sdk_app_id` and returns its id.
    pub fn create_task(&self, sdk_app_id: u64, room_id: i64) -> String {
        self.create_task_with(sdk_app_id, room_id, None)
    }

    /// Creates a task that runs through `plan` on its own (needs [`Simulator::spawn_lifecycle`]).
    pub fn create_task_with(&self, sdk_app_id: u64, room_id: i64, plan: Option<LifecyclePlan>) -> String {
        self.create_task_named(sdk_app_id, room_id, &random_task_id(), plan)
    }

    /// Creates a task with the id `task_id` (tests whose callbacks name their tasks).
    pub fn create_task_named(
        &self,
        sdk_app_id: u64,
        room_id: i64,
        task_id: &str,
        plan: Option<LifecyclePlan>,
    ) -> String {
        let task_id = task_id.to_string();
        let task = SimTask {
            task_id: task_id.clone(),
            sdk_app_id,
            room_id,
            group_id: room_id.to_string(),
            push_user_id: format!("tic_push_user_{room_id}_{}", &task_id[..4]),
            status: SimStatus::Prepared,
            finish_reason: None,
            push_start_time: 0,
            push_stop_time: 0,
            exception_cnt: 0,
            im_sync_time: 0,
            create_time: unix_now(),
            failed_message: String::new(),
            failure_reply: FailureReply::default(),
            plan,
            created: Instant::now(),
        };
        self.shared.world().tasks.insert(task_id.clone(), task);
        task_id
    }

    /// Adds a transcode task (`TranscodeH5` or `TranscodeJPG`) created `age` ago, QUEUED: only
    /// DescribeRunningTasks sees it. It moves on its own with `plan` (queued, then processing) once
    /// [`Simulator::spawn_lifecycle`] runs, else by [`Simulator::set_listed_status`].
    pub fn add_listed(
        &self,
        sdk_app_id: u64,
        task_type: &'static str,
        age: Duration,
        plan: Option<(Duration, Duration)>,
    ) -> String {
        let task_id = random_task_id();
        let listed = SimListed {
            task_id: task_id.clone(),
            sdk_app_id,
            task_type,
            status: "QUEUED",
            create_time: unix_now() - age.as_secs() as i64,
            plan,
            created: Instant::now(),
        };
        self.shared.world().listed.insert(task_id.clone(), listed);
        task_id
    }

    /// A copy of one transcode task.
    pub fn listed(&self, task_id: &str) -> Option<SimListed> {
        self.shared.world().listed.get(task_id).cloned()
    }

    /// Moves a transcode task to `status` (`QUEUED`, `PROCESSING`, `FINISHED`).
    pub fn set_listed_status(&self, task_id: &str, status: &'static str) -> bool {
        let mut world = self.shared.world();
        let Some(t) = world.listed.get_mut(task_id) else {
            return false;
        };
        t.status = status;
        true
    }

    /// Changes a task by hand; returns false when there is no such task.
    pub fn update_task(&self, task_id: &str, f: impl FnOnce(&mut SimTask)) -> bool {
        let mut world = self.shared.world();
        let Some(t) = world.tasks.get_mut(task_id) else {
            return false;
        };
        let before = t.status;
        f(t);
        self.shared.emit(before, t);
        true
    }

    /// Registers the callback URL and key of an app, as SetWhiteboardPushCallback(Key) would.
    pub fn set_callback(&self, sdk_app_id: u64, url: &str, key: &str) {
        self.shared
            .world()
            .callbacks
            .insert(sdk_app_id, (url.to_string(), key.to_string()));
    }

    /// From now on, keeps every callback body the receiver answered 2xx, byte for byte, in the
    /// order answered ([`Simulator::acknowledged`]): what TIW no longer retries.
    pub fn keep_acknowledged(&self) {
        self.shared
            .acknowledged
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_with(Vec::new);
    }

    /// The bodies kept since [`Simulator::keep_acknowledged`], with their app.
    pub fn acknowledged(&self) -> Vec<(u64, Vec<u8>)> {
        self.shared
            .acknowledged
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_default()
    }

    /// Sends another TIW feature's event (document transcoding, real-time recording) to the app's
    /// callback URL, signed with that feature's own `key` as TIW does (its callback docs:
    /// "Sign = md5(CallbackKey+ExpireTime)", the key set per feature), and retried like a push
    /// event. For an operator who registered the same URL for several features.
    pub fn send_feature_event(&self, sdk_app_id: u64, event_type: &str, data: serde_json::Value, key: Option<&str>) {
        let body = serde_json::json!({
            "EventType": event_type,
            "EventData": data,
            "SdkAppId": sdk_app_id,
            "Timestamp": unix_now(),
        });
        self.shared.send(Some(callbacks::Pending {
            app: sdk_app_id,
            body,
            key: key.map(str::to_string),
            record: false,
        }));
    }

    /// The callback URL and key registered for an app.
    pub fn callback(&self, sdk_app_id: u64) -> (String, String) {
        self.shared
            .world()
            .callbacks
            .get(&sdk_app_id)
            .cloned()
            .unwrap_or_default()
    }

    /// Changes how callbacks are delivered from now on.
    pub fn set_callback_knobs(&self, knobs: CallbackKnobs) {
        *self.shared.knobs.lock().unwrap_or_else(|e| e.into_inner()) = knobs;
    }

    /// What the callback sender has done so far.
    pub fn callback_stats(&self) -> CallbackStats {
        self.shared.callback_stats_mut().clone()
    }

    /// PREPARED → PUSHING now.
    pub fn start_pushing(&self, task_id: &str) -> bool {
        self.update_task(task_id, lifecycle::start)
    }

    /// → STOPPED with `reason` (AUTO, USER_CALL or EXCEPTION) now.
    pub fn stop(&self, task_id: &str, reason: &'static str) -> bool {
        self.update_task(task_id, |t| lifecycle::stop(t, reason))
    }

    /// → FAILED with Tencent's message.
    pub fn fail(&self, task_id: &str, message: &str) -> bool {
        self.update_task(task_id, |t| lifecycle::fail(t, message))
    }

    /// → FAILED, answered the international site's way: a success reply with only `RequestId`.
    pub fn fail_bare(&self, task_id: &str) -> bool {
        self.update_task(task_id, |t| {
            t.failure_reply = FailureReply::BareSuccess;
            lifecycle::fail(t, "");
        })
    }

    /// A copy of one task.
    pub fn task(&self, task_id: &str) -> Option<SimTask> {
        self.shared.world().tasks.get(task_id).cloned()
    }

    /// Every task of every app.
    pub fn tasks(&self) -> Vec<SimTask> {
        self.shared.world().tasks.values().cloned().collect()
    }

    /// Injects a fault into every DescribeWhiteboardPush of one task; `None` clears it.
    pub fn set_task_fault(&self, task_id: &str, fault: Option<Fault>) {
        let mut world = self.shared.world();
        match fault {
            Some(f) => world.task_faults.insert(task_id.to_string(), f),
            None => world.task_faults.remove(task_id),
        };
    }

    /// Injects a fault into every call for one app (e.g. `ResourceUnavailable.ServiceExpired`).
    pub fn set_app_fault(&self, sdk_app_id: u64, fault: Option<Fault>) {
        let mut world = self.shared.world();
        match fault {
            Some(f) => world.app_faults.insert(sdk_app_id, f),
            None => world.app_faults.remove(&sdk_app_id),
        };
    }

    /// Sets the random fault rates of API requests (all zero: none); refuses invalid rates.
    pub fn set_fault_rates(&self, rates: FaultRates) -> Result<(), String> {
        self.shared.set_fault_rates(rates)
    }

    /// The random fault rates in force.
    pub fn fault_rates(&self) -> FaultRates {
        self.shared.fault_rates()
    }

    /// What the simulator has counted so far.
    pub fn stats(&self) -> SimStats {
        self.shared.stats_mut().clone()
    }

    /// Runs planned tasks through their lifecycles (and creates new ones per `gen`) until cancelled.
    pub fn spawn_lifecycle(&self, gen: lifecycle::Generator, token: CancellationToken) -> tokio::task::JoinHandle<()> {
        let sim = self.clone();
        tokio::spawn(async move { token.run_until_cancelled(lifecycle::run(sim, gen)).await.unwrap_or(()) })
    }
}
