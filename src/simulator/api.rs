//! The simulator's HTTP API: TC3 verification, the per-second limit, Tencent's envelopes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use rand::Rng;
use serde_json::{json, Value};

use super::faults::{FaultRates, RandomFault, ResetFlag, SLOW_REPLY};
use super::reply::{envelope, error};
use super::{unix_now, FailureReply, Fault, Shared, SimStatus, SimTask};
use crate::tencentcloud::sign::{parse_authorization, sign, utc_date, SignInput, SIGNED_HEADERS};
use crate::tencentcloud::tiw;

/// Tencent refuses timestamps more than this far from its clock.
const MAX_CLOCK_SKEW: i64 = 300;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", post(handle))
        .route("/sim/stats", get(stats))
        .route("/sim/tasks", get(tasks))
        .route("/sim/faults", get(get_faults).put(put_faults))
        .with_state(shared)
}

async fn stats(State(shared): State<Arc<Shared>>) -> Response {
    let s = shared.stats_mut().clone();
    axum::Json(
        json!({ "requests": s.requests, "rate_limited": s.rate_limited, "auth_failures": s.auth_failures,
                       "faults_injected": s.faults_injected }),
    )
    .into_response()
}

/// `GET /sim/faults`: the random fault rates; `PUT` with a JSON object of rates sets them, e.g.
/// `curl -X PUT localhost:18080/sim/faults -d '{"http_5xx":0.1,"slow":0.05}'` (omitted: 0).
async fn get_faults(State(shared): State<Arc<Shared>>) -> Response {
    axum::Json(shared.fault_rates()).into_response()
}

async fn put_faults(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let rates: FaultRates = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    match shared.set_fault_rates(rates.clone()) {
        Ok(()) => axum::Json(rates).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    }
}

/// The simulator's truth, for tests and curious demo users: every task with its state.
async fn tasks(State(shared): State<Arc<Shared>>) -> Response {
    let tasks: Vec<Value> = shared
        .world()
        .tasks
        .values()
        .map(|t| {
            let status = match t.status {
                SimStatus::Prepared => "PREPARED",
                SimStatus::Pushing => "PUSHING",
                SimStatus::Stopped => "STOPPED",
                SimStatus::Failed => "FAILED",
            };
            json!({"SdkAppId": t.sdk_app_id, "TaskId": t.task_id, "RoomId": t.room_id, "Status": status,
                   "FinishReason": t.finish_reason, "ExceptionCnt": t.exception_cnt})
        })
        .collect();
    axum::Json(tasks).into_response()
}

fn request_id() -> String {
    let mut rng = rand::rng();
    let b: [u8; 16] = rng.random();
    let h = hex::encode(b);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Verifies a request as Tencent does; returns the SecretId or `(code, message)`.
fn verify(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Result<String, (&'static str, String)> {
    let auth = header(headers, "Authorization").ok_or((
        "AuthFailure.InvalidAuthorization",
        "Authorization header is missing.".to_string(),
    ))?;
    let parsed = parse_authorization(auth).ok_or((
        "AuthFailure.InvalidAuthorization",
        "Authorization header does not follow TC3-HMAC-SHA256.".to_string(),
    ))?;
    let timestamp: i64 = header(headers, "X-TC-Timestamp").and_then(|t| t.parse().ok()).ok_or((
        "AuthFailure.InvalidAuthorization",
        "X-TC-Timestamp is missing or not a number.".to_string(),
    ))?;
    let cred = shared
        .config
        .credentials
        .iter()
        .find(|c| c.secret_id == parsed.secret_id)
        .ok_or((
            "AuthFailure.SecretIdNotFound",
            "The SecretId is not found, please ensure that your SecretId is correct.".to_string(),
        ))?;
    let server_now = unix_now() + shared.config.clock_offset_secs;
    if (server_now - timestamp).abs() > MAX_CLOCK_SKEW {
        return Err((
            "AuthFailure.SignatureExpire",
            format!("Signature expired. Timestamp comparing to the server time deviates more than 5 minutes (server time {server_now})."),
        ));
    }
    let signature_failure = || {
        (
            "AuthFailure.SignatureFailure",
            "The provided credentials could not be validated. Please check your signature is correct.".to_string(),
        )
    };
    if parsed.service != "tiw"
        || parsed.signed_headers != SIGNED_HEADERS
        || utc_date(timestamp).as_deref() != Some(parsed.date.as_str())
    {
        return Err(signature_failure());
    }
    let expected = sign(&SignInput {
        secret_id: &cred.secret_id,
        secret_key: &cred.secret_key,
        service: "tiw",
        host: header(headers, "Host").unwrap_or_default(),
        content_type: header(headers, "Content-Type").unwrap_or_default(),
        timestamp,
        body,
    })
    .ok_or_else(signature_failure)?;
    // Constant time: the simulator must not be a timing oracle either.
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        expected.signature.as_bytes(),
        parsed.signature.as_bytes(),
    )) {
        return Err(signature_failure());
    }
    if let Some(token) = &cred.session_token {
        if header(headers, "X-TC-Token") != Some(token.as_str()) {
            return Err(("AuthFailure.TokenFailure", "Token is invalid or expired.".to_string()));
        }
    }
    Ok(cred.secret_id.clone())
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    extensions: axum::http::Extensions,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let arrived = Instant::now();
    let rid = request_id();
    let action = header(&headers, "X-TC-Action").unwrap_or_default().to_string();
    *shared.stats_mut().requests.entry(action.clone()).or_default() += 1;
    let drawn = shared.fault_rates().draw(&mut rand::rng());
    if let Some(fault) = drawn {
        *shared.stats_mut().faults_injected.entry(fault.label()).or_default() += 1;
        let reset = extensions
            .get::<axum::extract::ConnectInfo<ResetFlag>>()
            .map(|c| c.0.clone());
        if let Some(reply) = random_fault(&shared, fault, reset, &rid).await {
            return reply;
        }
    }

    let secret_id = match verify(&shared, &headers, &body) {
        Ok(id) => id,
        Err((code, message)) => {
            shared.stats_mut().auth_failures += 1;
            return error(code, &message, &rid);
        }
    };
    // Every API 3.0 call names its region (X-TC-Region); one the product does not serve is refused
    // with the common error code UnsupportedRegion (Tencent's common error code list).
    match header(&headers, "X-TC-Region") {
        None | Some("") => {
            return error(
                "MissingParameter",
                "The request is missing a required parameter `Region`.",
                &rid,
            )
        }
        Some(region) if !crate::tencentcloud::TIW_REGIONS.contains(&region) => {
            return error(
                "UnsupportedRegion",
                "The API does not support the region passed in.",
                &rid,
            )
        }
        Some(_) => {}
    }
    let denied = shared
        .config
        .credentials
        .iter()
        .any(|c| c.secret_id == secret_id && c.denied_actions.contains(&action));
    if denied {
        // Tencent's common error code list: "AuthFailure.UnauthorizedOperation 请求未授权。请参考
        // CAM 文档对鉴权的说明。"
        return error(
            "AuthFailure.UnauthorizedOperation",
            "The request is not authorized. Please refer to the CAM documentation on authentication.",
            &rid,
        );
    }
    if !shared.admit(&secret_id, &action, arrived) {
        {
            let mut stats = shared.stats_mut();
            stats.rate_limited += 1;
            *stats.over_limit.entry(action.clone()).or_default() += 1;
        }
        let limit = shared.config.requests_per_second;
        // Several SecretIds of one account over the account's budget: Tencent's sub-code.
        let shared_account = shared
            .config
            .credentials
            .iter()
            .any(|c| c.secret_id == secret_id && c.account.is_some());
        let code = if shared_account {
            "RequestLimitExceeded.UinLimitExceeded"
        } else {
            "RequestLimitExceeded"
        };
        return error(
            code,
            &format!("Your current request times exceeds the frequency limit `{limit}` for a second. Please reduce the frequency of calls."),
            &rid,
        );
    }
    {
        let mut stats = shared.stats_mut();
        let log = stats.admitted.entry(action.clone()).or_default();
        // Bounded, so a long demo does not grow without end.
        if log.len() >= 200_000 {
            log.drain(..100_000);
        }
        log.push(arrived);
    }
    let jitter = shared.config.latency_jitter.as_millis() as u64;
    let extra = if jitter > 0 {
        rand::rng().random_range(0..=jitter)
    } else {
        0
    };
    let latency = shared.config.latency + Duration::from_millis(extra);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if header(&headers, "X-TC-Version") != Some(crate::tencentcloud::client::VERSION) {
        return error("NoSuchVersion", "The API version does not exist.", &rid);
    }
    let params: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        _ => return error("InvalidParameter", "The request body is not a JSON object.", &rid),
    };
    let app_key = if action == tiw::DESCRIBE_RUNNING_TASKS {
        "SdkAppID"
    } else {
        "SdkAppId"
    };
    let Some(app) = params.get(app_key).and_then(Value::as_u64) else {
        return error(
            "MissingParameter",
            &format!("The request is missing a required parameter `{app_key}`."),
            &rid,
        );
    };
    if !shared.config.apps.contains(&app) {
        return error(
            "UnauthorizedOperation.SdkAppId",
            "SdkAppId does not belong to this account.",
            &rid,
        );
    }
    let app_fault = shared.world().app_faults.get(&app).cloned();
    if let Some(f) = app_fault {
        return apply_fault(&shared, f, &rid).await;
    }
    match action.as_str() {
        tiw::DESCRIBE_WHITEBOARD_PUSH => describe_push(&shared, app, &params, &rid).await,
        tiw::DESCRIBE_RUNNING_TASKS => describe_running(&shared, app, &params, &rid),
        crate::tencentcloud::online_record::DESCRIBE_ONLINE_RECORD => {
            super::recording::describe(&shared, app, &params, &rid)
        }
        // Each feature has its own callback URL and key (the Go SDK's client.go:
        // Set/DescribeWhiteboardPushCallback(Key), Set/DescribeOnlineRecordCallback(Key)).
        tiw::DESCRIBE_WHITEBOARD_PUSH_CALLBACK | tiw::DESCRIBE_ONLINE_RECORD_CALLBACK => {
            let record = action == tiw::DESCRIBE_ONLINE_RECORD_CALLBACK;
            let world = shared.world();
            let callbacks = if record {
                &world.record_callbacks
            } else {
                &world.callbacks
            };
            let (url, key) = callbacks.get(&app).cloned().unwrap_or_default();
            envelope(json!({ "Callback": url, "CallbackKey": key }), &rid)
        }
        tiw::SET_WHITEBOARD_PUSH_CALLBACK => set_callback(&shared, app, &params, &rid, true, false),
        tiw::SET_WHITEBOARD_PUSH_CALLBACK_KEY => set_callback(&shared, app, &params, &rid, false, false),
        tiw::SET_ONLINE_RECORD_CALLBACK => set_callback(&shared, app, &params, &rid, true, true),
        tiw::SET_ONLINE_RECORD_CALLBACK_KEY => set_callback(&shared, app, &params, &rid, false, true),
        "" => error(
            "MissingParameter",
            "The request is missing a required parameter `Action`.",
            &rid,
        ),
        _ => error("InvalidAction", "The requested action does not exist.", &rid),
    }
}

/// The reply for a drawn fault; `None` to go on with the true reply (after a delay).
async fn random_fault(shared: &Shared, fault: RandomFault, reset: Option<ResetFlag>, rid: &str) -> Option<Response> {
    Some(match fault {
        RandomFault::Http5xx => {
            let status = if rand::rng().random_bool(0.5) {
                StatusCode::BAD_GATEWAY
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            let page = format!("<html><head><title>{status}</title></head><body><center><h1>{status}</h1></center><hr><center>stgw</center></body></html>");
            (status, [("content-type", "text/html")], page).into_response()
        }
        RandomFault::ConnectionReset => match reset {
            Some(flag) => {
                flag.raise();
                StatusCode::OK.into_response()
            }
            // Served without the resetting listener (a router in a test): the nearest thing.
            None => apply_fault(shared, Fault::Http500, rid).await,
        },
        RandomFault::Hang => apply_fault(shared, Fault::Hang, rid).await,
        RandomFault::Truncated => {
            let whole = json!({"Response": {"Status": "PUSHING", "RoomId": 1, "RequestId": rid}}).to_string();
            (
                StatusCode::OK,
                [("content-type", "application/json")],
                whole[..whole.len() / 2].to_string(),
            )
                .into_response()
        }
        RandomFault::NotJson => apply_fault(shared, Fault::NotJson, rid).await,
        RandomFault::InternalError => error(
            "InternalError",
            "An internal error has occurred. Retry your request.",
            rid,
        ),
        RandomFault::RateLimited => {
            shared.stats_mut().rate_limited += 1;
            let limit = shared.config.requests_per_second;
            error(
                "RequestLimitExceeded",
                &format!("Your current request times exceeds the frequency limit `{limit}` for a second. Please reduce the frequency of calls."),
                rid,
            )
        }
        RandomFault::Slow => {
            tokio::select! {
                _ = tokio::time::sleep(SLOW_REPLY) => return None,
                _ = shared.shutdown.cancelled() => StatusCode::SERVICE_UNAVAILABLE.into_response(),
            }
        }
        RandomFault::ClockSkew => {
            shared.stats_mut().auth_failures += 1;
            let server_now = unix_now() + MAX_CLOCK_SKEW + 60;
            error(
                "AuthFailure.SignatureExpire",
                &format!("Signature expired. Timestamp comparing to the server time deviates more than 5 minutes (server time {server_now})."),
                rid,
            )
        }
    })
}

async fn apply_fault(shared: &Shared, fault: Fault, rid: &str) -> Response {
    match fault {
        Fault::Http500 => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "<html><body>500 Internal Server Error</body></html>",
        )
            .into_response(),
        Fault::NotJson => (
            StatusCode::OK,
            "upstream connect error or disconnect/reset before headers",
        )
            .into_response(),
        Fault::Hang => {
            shared.shutdown.cancelled().await;
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
        Fault::Error { code, message } => error(&code, &message, rid),
        Fault::Response(v) => envelope(v, rid),
        Fault::Raw { status, body } => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            [("content-type", "application/json")],
            body,
        )
            .into_response(),
    }
}

fn task_reply(t: &SimTask) -> Value {
    let status = match t.status {
        SimStatus::Prepared => "PREPARED",
        SimStatus::Pushing => "PUSHING",
        SimStatus::Stopped | SimStatus::Failed => "STOPPED",
    };
    json!({
        "TaskId": t.task_id,
        "Status": status,
        "FinishReason": t.finish_reason.unwrap_or(""),
        "RoomId": t.room_id,
        "GroupId": t.group_id,
        "PushUserId": t.push_user_id,
        "PushStartTime": t.push_start_time,
        "PushStopTime": t.push_stop_time,
        "ExceptionCnt": t.exception_cnt,
        "IMSyncTime": t.im_sync_time,
        "Backup": "",
    })
}

async fn describe_push(shared: &Shared, app: u64, params: &Value, rid: &str) -> Response {
    let Some(task_id) = params.get("TaskId").and_then(Value::as_str) else {
        return error(
            "MissingParameter",
            "The request is missing a required parameter `TaskId`.",
            rid,
        );
    };
    let (task, fault) = {
        let world = shared.world();
        (
            world.tasks.get(task_id).filter(|t| t.sdk_app_id == app).cloned(),
            world.task_faults.get(task_id).cloned(),
        )
    };
    if let Some(f) = fault {
        return apply_fault(shared, f, rid).await;
    }
    match task {
        None => error("InvalidParameter.TaskNotFound", "The task does not exist.", rid),
        Some(t) if t.status == SimStatus::Failed => match t.failure_reply {
            FailureReply::ErrorCode => error("FailedOperation.WhiteboardPush", &t.failed_message, rid),
            FailureReply::BareSuccess => envelope(json!({}), rid),
        },
        Some(t) => envelope(task_reply(&t), rid),
    }
}

/// `2023-03-14 15:00:00` in Beijing time, as Tencent writes CreateTime.
fn beijing_time(unix: i64) -> String {
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp(unix + 8 * 3600) else {
        return String::new();
    };
    t.format(time::macros::format_description!(
        "[year]-[month]-[day] [hour]:[minute]:[second]"
    ))
    .unwrap_or_default()
}

/// How far back DescribeRunningTasks sees: 3 days.
pub const RUNNING_LIST_WINDOW_SECS: i64 = 3 * 24 * 3600;

fn describe_running(shared: &Shared, app: u64, params: &Value, rid: &str) -> Response {
    // The four types of the Go SDK's DescribeRunningTasksRequest (`TaskType`).
    let task_type = params.get("TaskType").and_then(Value::as_str).unwrap_or_default();
    if !matches!(
        task_type,
        "WhiteboardPush" | "OnlineRecord" | "TranscodeH5" | "TranscodeJPG"
    ) {
        return error(
            "InvalidParameter",
            "TaskType must be one of TranscodeH5, TranscodeJPG, WhiteboardPush, OnlineRecord.",
            rid,
        );
    }
    let offset = params.get("Offset").and_then(Value::as_i64).unwrap_or(0).max(0) as usize;
    // Tencent's DescribeRunningTasks page: Limit defaults to 100, at most 500.
    let limit = params.get("Limit").and_then(Value::as_i64).unwrap_or(100);
    if !(1..=tiw::RUNNING_TASKS_PAGE).contains(&limit) {
        return error("InvalidParameter", "Limit must be between 1 and 500.", rid);
    }
    *shared
        .stats_mut()
        .running_lists
        .entry(task_type.to_string())
        .or_default() += 1;
    // Tencent's DescribeRunningTasks lists tasks created in the last 3 days only (its API doc:
    // "只能查询最近3天内的任务"; design §1): an older task that still pushes is not listed. Ended ones
    // are listed FINISHED only with `list_finished` (see SimConfig).
    let window_start = crate::task::unix_now() as i64 - RUNNING_LIST_WINDOW_SECS;
    let list_finished = shared.config.list_finished;
    // (create time, id, the item) of every task listed.
    let mut running: Vec<(i64, String, Value)> = Vec::new();
    let world = shared.world();
    if task_type == "WhiteboardPush" {
        running.extend(
            world
                .tasks
                .values()
                .filter(|t| {
                    t.sdk_app_id == app
                        && (list_finished || matches!(t.status, SimStatus::Prepared | SimStatus::Pushing))
                })
                .map(|t| {
                    let status = match t.status {
                        SimStatus::Prepared => "QUEUED",
                        SimStatus::Pushing => "PROCESSING",
                        _ => "FINISHED",
                    };
                    let item = running_item(app, &t.task_id, task_type, t.create_time, status, Some(t.room_id));
                    (t.create_time, t.task_id.clone(), item)
                }),
        );
    }
    if task_type == "OnlineRecord" {
        running.extend(super::recording::listed(&world, app, list_finished).into_iter().map(
            |(created, id, status, room)| {
                let item = running_item(app, &id, task_type, created, status, Some(room));
                (created, id, item)
            },
        ));
    }
    running.extend(
        world
            .listed
            .values()
            .filter(|t| t.sdk_app_id == app && t.task_type == task_type && (list_finished || t.status != "FINISHED"))
            .map(|t| {
                let item = running_item(app, &t.task_id, task_type, t.create_time, t.status, None);
                (t.create_time, t.task_id.clone(), item)
            }),
    );
    drop(world);
    running.retain(|(created, _, _)| *created >= window_start);
    running.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    let total = running.len();
    let page: Vec<Value> = running
        .into_iter()
        .skip(offset)
        .take(limit as usize)
        .map(|(_, _, item)| item)
        .collect();
    envelope(json!({ "Total": total, "Tasks": page }), rid)
}

/// One `RunningTaskItem` (the Go SDK's models.go; the field list of Tencent's example reply).
fn running_item(app: u64, task_id: &str, task_type: &str, created: i64, status: &str, room_id: Option<i64>) -> Value {
    json!({
        "SdkAppID": app,
        "TaskID": task_id,
        "TaskType": task_type,
        "CreateTime": beijing_time(created),
        "CancelTime": null,
        "Status": status,
        "Progress": 0,
        "FileURL": null,
        "RoomID": room_id,
    })
}

fn set_callback(shared: &Shared, app: u64, params: &Value, rid: &str, url: bool, record: bool) -> Response {
    let field = if url { "Callback" } else { "CallbackKey" };
    let Some(value) = params.get(field).and_then(Value::as_str) else {
        return error(
            "MissingParameter",
            &format!("The request is missing a required parameter `{field}`."),
            rid,
        );
    };
    if url && !value.is_empty() && !(value.starts_with("http://") || value.starts_with("https://")) {
        return error("InvalidParameter", "Callback must be an http or https URL.", rid);
    }
    if !url && value.chars().count() > 64 {
        return error("InvalidParameter", "CallbackKey must be at most 64 characters.", rid);
    }
    let mut world = shared.world();
    let callbacks = if record {
        &mut world.record_callbacks
    } else {
        &mut world.callbacks
    };
    let entry = callbacks.entry(app).or_default();
    if url {
        entry.0 = value.to_string();
    } else {
        entry.1 = value.to_string();
    }
    envelope(json!({}), rid)
}
