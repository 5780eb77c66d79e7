//! The landing page as an operator's debugging aid, like blackbox_exporter's "recent probes":
//! tracked tasks per app and status, the tasks that need a look, the last callbacks (time, app,
//! event, task, outcome and why) and the last API errors per app; each task links to a detail page
//! with what the exporter knows of it (`GET /-/task?sdk_app_id=…&task_id=…`, from the registry:
//! it never calls Tencent). Plain HTML, no JavaScript; everything shown is bounded
//! ([`crate::recent::RecentEvents`], [`NEEDS_A_LOOK`]) and HTML-escaped. Never a key, a Sign
//! or a body: callbacks are kept as the receiver's verdict, with the task id only once the
//! signature verified.

use std::fmt::Write;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;

use super::HttpState;
use crate::census::{Census, ListedStatus, TaskType};
use crate::metrics::{REVISION, VERSION};
use crate::registry::{Task, TaskStatus};
use crate::task::{unix_now, FinishReason};

/// Tasks listed under "Tasks that need a look", most recently changed first.
pub const NEEDS_A_LOOK: usize = 20;
/// A task PREPARED for longer than this needs a look (TiwPushStuckPreparing's threshold).
const PREPARED_TOO_LONG: f64 = 120.0;

pub(super) const TASK: &str = "/-/task";

pub(super) fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// `s` as a query-string value.
fn query_value(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Unix seconds as `2026-12-01 23:47:10 UTC`.
fn when(unix: f64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix as i64)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute]:[second] UTC"
            ))
            .ok()
        })
        .unwrap_or_else(|| "—".into())
}

/// How long ago, in words a person reads at a glance.
fn ago(unix: f64) -> String {
    let s = (unix_now() - unix).max(0.0) as u64;
    match s {
        0..=119 => format!("{s} s ago"),
        120..=7199 => format!("{} min ago", s / 60),
        7200..=172_799 => format!("{} h ago", s / 3600),
        _ => format!("{} days ago", s / 86_400),
    }
}

fn task_link(sdk_app_id: u64, task_id: &str) -> String {
    format!(
        r#"<a href="{TASK}?sdk_app_id={sdk_app_id}&amp;task_id={}">{}</a>"#,
        query_value(task_id),
        escape(task_id)
    )
}

/// Why a tracked task is worth a look, if it is.
fn needs_a_look(t: &Task, now: f64) -> Option<(String, &'static str)> {
    let shown = t.shown();
    match (shown.status(), shown.finish_reason()) {
        (TaskStatus::Failed, _) => Some((format!("failed{}", tencent_says(t)), "tiwpushfailed")),
        (TaskStatus::Stopped, Some(FinishReason::Exception)) => Some((
            format!(
                "ended with EXCEPTION after {}{}",
                exceptions(shown.exception_cnt()),
                tencent_says(t)
            ),
            "tiwpushfinishedwithexception",
        )),
        (TaskStatus::Pushing, _) if shown.exception_cnt() > 0 => Some((
            format!("{} while pushing", exceptions(shown.exception_cnt())),
            "tiwpushexceptionsrising",
        )),
        (TaskStatus::Prepared, _) if now - t.last_update > PREPARED_TOO_LONG => Some((
            format!("PREPARED, unchanged since {}", ago(t.last_update)),
            "tiwpushstuckpreparing",
        )),
        _ => None,
    }
}

/// A task that needs a look: last change, app, id, room, status, and why with its runbook anchor.
type LookRow = (f64, u64, String, Option<i64>, &'static str, (String, &'static str));

/// "1 exception", "3 exceptions".
fn exceptions(n: u64) -> String {
    format!("{n} exception{}", if n == 1 { "" } else { "s" })
}

/// `: <code> (push code …, TRTC code …): <message>` when Tencent said why, else nothing.
fn tencent_says(t: &Task) -> String {
    let Some(f) = t.shown().failure() else {
        return String::new();
    };
    let mut codes = Vec::new();
    if let Some(c) = f.push_code {
        codes.push(format!("push code {c}"));
    }
    if let Some(c) = f.trtc_code {
        codes.push(format!("TRTC code {c}"));
    }
    let codes = if codes.is_empty() {
        String::new()
    } else {
        format!(" ({})", codes.join(", "))
    };
    format!(": {}{codes}: {}", f.code, f.message)
}

/// Where an alert's runbook is, for a link beside a task that would raise it.
fn runbook(anchor: &str) -> String {
    format!("{}/blob/main/docs/runbooks.md#{anchor}", env!("CARGO_PKG_REPOSITORY"))
}

const STYLE: &str = "body{font-family:sans-serif;max-width:72em;margin:2em auto;padding:0 1em;line-height:1.45}\
code{background:#eee;padding:0 .2em}table{border-collapse:collapse;margin:.5em 0 1.5em}\
th,td{border:1px solid #ccc;padding:.2em .6em;text-align:left;vertical-align:top}th{background:#f4f4f4}\
td.n{text-align:right}td:first-child{white-space:nowrap}.bad{color:#a40000;font-weight:bold}.ok{color:#2d6a00}.muted{color:#777}";

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title><style>{STYLE}</style></head><body>\n{body}</body></html>\n"
    )
}

pub(super) async fn landing(State(state): State<HttpState>) -> Html<String> {
    let mut b = String::with_capacity(16 * 1024);
    let path = escape(&state.telemetry_path);
    let _ = write!(
        b,
        r#"<h1>TIW Push Exporter</h1>
<p>Prometheus exporter for Tencent Cloud Interactive Whiteboard whiteboard-push tasks.
Version <code>{VERSION}</code>, revision <code>{REVISION}</code>.</p>
<ul>
<li><a href="{path}">Metrics</a> — task status, durations, exceptions and exporter health (polled in the background; a scrape never calls Tencent)</li>
<li><a href="/-/healthy">Health</a> · <a href="/-/ready">Readiness</a></li>
<li><code>POST /-/reload</code> (or SIGHUP) reloads the configuration file</li>
</ul>
"#
    );

    // What the registry tracks, under one short lock.
    let now = unix_now();
    let (counts, mut look) = {
        let view = state.registry.view();
        let counts = view.status_counts();
        let look: Vec<LookRow> = view
            .tasks()
            .filter_map(|t| {
                let why = needs_a_look(t, now)?;
                Some((
                    t.last_update,
                    t.sdk_app_id,
                    t.task_id.clone(),
                    t.shown().room_id(),
                    t.shown().status().as_str(),
                    why,
                ))
            })
            .collect();
        (counts, look)
    };
    b.push_str("<h2>Tracked tasks</h2>\n");
    if counts.is_empty() {
        b.push_str("<p class=\"muted\">No app is configured.</p>\n");
    } else {
        b.push_str("<table><tr><th>SdkAppId</th>");
        for s in TaskStatus::ALL {
            let _ = write!(b, "<th>{}</th>", s.as_str());
        }
        b.push_str("</tr>\n");
        for (app, c) in &counts {
            let _ = write!(b, "<tr><td>{app}</td>");
            for s in TaskStatus::ALL {
                let _ = write!(b, "<td class=\"n\">{}</td>", c[s as usize]);
            }
            b.push_str("</tr>\n");
        }
        b.push_str("</table>\n");
    }

    running_at_tencent(&mut b, &state.metrics.recent.censuses(), now);

    look.sort_by(|a, b| b.0.total_cmp(&a.0));
    let _ = writeln!(
        b,
        "<h2>Tasks that need a look</h2>\n<p class=\"muted\">Failed, ended with EXCEPTION, PREPARED for over 2 minutes, or pushing with exceptions; the {NEEDS_A_LOOK} most recently changed of {}.</p>",
        look.len()
    );
    if look.is_empty() {
        b.push_str("<p class=\"ok\">None.</p>\n");
    } else {
        b.push_str("<table><tr><th>Last change</th><th>SdkAppId</th><th>Room</th><th>Task</th><th>Status</th><th>Why</th><th>Runbook</th></tr>\n");
        for (at, app, task, room, status, (why, anchor)) in look.iter().take(NEEDS_A_LOOK) {
            let _ = writeln!(
                b,
                "<tr><td title=\"{}\">{}</td><td>{app}</td><td>{}</td><td>{}</td><td>{status}</td><td class=\"bad\">{}</td><td><a href=\"{}\">runbook</a></td></tr>",
                when(*at),
                ago(*at),
                room.map(|r| r.to_string()).unwrap_or_else(|| "—".into()),
                task_link(*app, task),
                escape(why),
                escape(&runbook(anchor))
            );
        }
        b.push_str("</table>\n");
    }

    let callbacks = state.metrics.recent.callbacks();
    let _ = writeln!(
        b,
        "<h2>Recent callbacks</h2>\n<p class=\"muted\">The last {} of at most {}, newest first.</p>",
        callbacks.len(),
        crate::recent::RECENT_CALLBACKS
    );
    if callbacks.is_empty() {
        b.push_str("<p class=\"muted\">No callback yet.</p>\n");
    } else {
        b.push_str("<table><tr><th>Time</th><th>SdkAppId</th><th>Event</th><th>Task</th><th>Outcome</th><th>HTTP</th><th>Why</th></tr>\n");
        for c in &callbacks {
            let app = if c.sdk_app_id == 0 {
                "—".to_string()
            } else {
                c.sdk_app_id.to_string()
            };
            let task = match &c.task_id {
                Some(id) => task_link(c.sdk_app_id, id),
                None => "<span class=\"muted\">—</span>".into(),
            };
            let class = if c.status == 200 { "ok" } else { "bad" };
            let _ = writeln!(
                b,
                "<tr><td title=\"{}\">{}</td><td>{app}</td><td>{}</td><td>{task}</td><td class=\"{class}\">{}</td><td>{}</td><td>{}</td></tr>",
                when(c.at),
                ago(c.at),
                escape(&match c.finish_reason {
                    Some(reason) => format!("{} ({reason})", c.event_type),
                    None => c.event_type.to_string(),
                }),
                escape(c.outcome),
                c.status,
                escape(&c.reason)
            );
        }
        b.push_str("</table>\n");
    }

    if let Some(relay) = &state.relay {
        relayed(&mut b, relay);
    }

    let errors = state.metrics.recent.api_errors();
    b.push_str("<h2>Recent API errors</h2>\n");
    if errors.iter().all(|(_, e)| e.is_empty()) {
        b.push_str("<p class=\"ok\">None since start.</p>\n");
    } else {
        let _ = writeln!(
            b,
            "<p class=\"muted\">The last {} per app, newest first.</p>\n<table><tr><th>Time</th><th>SdkAppId</th><th>Error</th></tr>",
            crate::recent::RECENT_API_ERRORS
        );
        for (app, list) in &errors {
            for e in list {
                let _ = writeln!(
                    b,
                    "<tr><td title=\"{}\">{}</td><td>{app}</td><td>{}</td></tr>",
                    when(e.at),
                    ago(e.at),
                    escape(&e.error)
                );
            }
        }
        b.push_str("</table>\n");
    }
    Html(page("TIW Push Exporter", &b))
}

/// The running-task census: what DescribeRunningTasks last listed per app and type, with how long
/// the oldest queued task has waited (README, "Metrics": `tiw_running_tasks`).
fn running_at_tencent(b: &mut String, censuses: &[(u64, TaskType, Census, f64)], now: f64) {
    if censuses.is_empty() {
        return;
    }
    b.push_str("<h2>Running at Tencent</h2>\n<p class=\"muted\">What DescribeRunningTasks lists for every task type (transcodes are counted here, not tracked one by one), from each type's last complete pass.</p>\n");
    b.push_str("<table><tr><th>SdkAppId</th><th>Type</th>");
    for s in ListedStatus::ALL {
        let _ = write!(b, "<th>{}</th>", s.as_str());
    }
    b.push_str("<th>Oldest queued</th><th>Listed</th></tr>\n");
    for (app, task_type, census, at) in censuses {
        let _ = write!(b, "<tr><td>{app}</td><td>{}</td>", task_type.as_str());
        for s in ListedStatus::ALL {
            let _ = write!(b, "<td class=\"n\">{}</td>", census.count(s));
        }
        let oldest = census.oldest(ListedStatus::Queued).map_or_else(
            || "—".to_string(),
            |created| format!("created {}", ago(created.min(now))),
        );
        let _ = writeln!(
            b,
            "<td>{}</td><td title=\"{}\">{}</td></tr>",
            oldest,
            when(*at),
            ago(*at)
        );
    }
    b.push_str("</table>\n");
}

/// Relay mode: each app's queue toward its backend, and the last deliveries and failures.
fn relayed(b: &mut String, relay: &crate::relay::Relay) {
    let depths = relay.depths();
    if depths.is_empty() {
        return;
    }
    b.push_str("<h2>Relayed callbacks</h2>\n<p class=\"muted\">Every request TIW sends for these apps goes on to their backend (callback_forward_url), in order, at least once.</p>\n");
    b.push_str(
        "<table><tr><th>SdkAppId</th><th>Backend</th><th>Queued</th><th>Oldest</th><th>Dead letters</th></tr>\n",
    );
    for d in &depths {
        let backend = relay
            .url(d.sdk_app_id)
            .map(|u| escape(&u.origin().ascii_serialization()))
            .unwrap_or_else(|| "<span class=\"bad\">none configured: waiting</span>".into());
        let class = |bad: bool| if bad { "bad" } else { "ok" };
        let _ = writeln!(
            b,
            "<tr><td>{}</td><td>{backend}</td><td class=\"{}\">{}</td><td>{}</td><td class=\"{}\">{}</td></tr>",
            d.sdk_app_id,
            class(d.requests > 0),
            d.requests,
            d.oldest.map(ago).unwrap_or_else(|| "—".into()),
            class(d.dead_letters > 0),
            d.dead_letters
        );
    }
    b.push_str("</table>\n");
    let recent = relay.recent();
    if recent.is_empty() {
        b.push_str("<p class=\"muted\">No delivery attempt since start.</p>\n");
        return;
    }
    let _ = writeln!(
        b,
        "<p class=\"muted\">The last {} deliveries and failures of at most {}, newest first.</p>\n<table><tr><th>Time</th><th>SdkAppId</th><th>Request</th><th>Outcome</th><th>Backend's answer</th><th>Waited</th></tr>",
        recent.len(),
        crate::relay::RECENT_DELIVERIES
    );
    for r in &recent {
        let class = if r.outcome == "delivered" { "ok" } else { "bad" };
        let _ = writeln!(
            b,
            "<tr><td title=\"{}\">{}</td><td>{}</td><td>#{}</td><td class=\"{class}\">{}</td><td>{}</td><td>{:.1} s</td></tr>",
            when(r.at),
            ago(r.at),
            r.sdk_app_id,
            r.seq,
            r.outcome,
            escape(&r.answer),
            r.waited
        );
    }
    b.push_str("</table>\n");
}

#[derive(Deserialize)]
pub(super) struct TaskQuery {
    sdk_app_id: u64,
    task_id: String,
}

/// `s` single-quoted for a POSIX shell (a `'` inside becomes `'\''`): a command printed for a
/// person to copy runs as what it says, whatever the id holds (`x;curl …|sh` stays one argument).
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// `describe`-like detail of one tracked task, from the registry.
pub(super) async fn task(
    State(state): State<HttpState>,
    query: Result<Query<TaskQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return (
            StatusCode::BAD_REQUEST,
            "expected ?sdk_app_id=<SdkAppId>&task_id=<TaskId>\n",
        )
            .into_response();
    };
    let Some(t) = state.registry.get(q.sdk_app_id, &q.task_id) else {
        let body = format!(
            "<h1>Task not tracked</h1><p>The exporter tracks no task <code>{}</code> of app {}: it may have left after <code>retention.stopped_tasks</code>, or never been seen. <code>tiw-push-exporter describe --app {} {}</code> asks Tencent.</p><p><a href=\"/\">Back</a></p>",
            escape(&q.task_id),
            q.sdk_app_id,
            q.sdk_app_id,
            escape(&shell_quote(&q.task_id))
        );
        return (StatusCode::NOT_FOUND, Html(page("Task not tracked", &body))).into_response();
    };
    let opt = |v: Option<String>| v.unwrap_or_else(|| "—".into());
    let unix = |v: Option<i64>| opt(v.filter(|s| *s > 0).map(|s| format!("{} ({s})", when(s as f64))));
    let shown = t.shown();
    let mut rows: Vec<(&str, String)> = vec![
        ("SdkAppId", t.sdk_app_id.to_string()),
        ("TaskId", t.task_id.clone()),
        ("Status", shown.status().as_str().into()),
        (
            "FinishReason",
            opt(shown.finish_reason().map(|r| r.as_str().to_string())),
        ),
        ("RoomId", opt(shown.room_id().map(|r| r.to_string()))),
        ("GroupId", shown.group_id().to_string()),
        ("PushUserId", shown.push_user_id().to_string()),
        ("PushStartTime", unix(shown.push_start_time())),
        ("PushStopTime", unix(shown.push_stop_time())),
        ("Duration", opt(shown.duration().map(|d| format!("{d} s")))),
        ("ExceptionCnt", shown.exception_cnt().to_string()),
        ("IMSyncTime", unix(shown.im_sync_time())),
        (
            "Tencent's reason",
            opt(shown
                .failure()
                .map(|_| tencent_says(&t).trim_start_matches(": ").to_string())),
        ),
        (
            "Ended (as the exporter saw it)",
            opt(t.ended_at.filter(|_| shown.status().is_ended()).map(|at| {
                let seen = if t.history {
                    ", before the exporter first read it: history, not paged"
                } else {
                    ""
                };
                format!("{} ({}){seen}", when(at), ago(at))
            })),
        ),
        ("First seen through", format!("{:?}", t.source).to_lowercase()),
        (
            "Last change",
            format!("{} ({})", when(t.last_update), ago(t.last_update)),
        ),
    ];
    let confirmed = t.confirmed();
    rows.push((
        "Confirmed by DescribeWhiteboardPush",
        format!(
            "{}{}",
            confirmed.status.as_str(),
            confirmed
                .finish_reason
                .map(|r| format!(", {}", r.as_str()))
                .unwrap_or_default()
        ),
    ));
    if let Some(claim) = &t.claim {
        rows.push((
            "Claimed by a callback, not yet confirmed",
            format!(
                "{}{} ({})",
                claim.facts.status.as_str(),
                claim
                    .facts
                    .finish_reason
                    .map(|r| format!(", {}", r.as_str()))
                    .unwrap_or_default(),
                ago(claim.at)
            ),
        ));
    }
    let mut b = format!("<h1>Task {}</h1>\n<table>\n", escape(&t.task_id));
    for (k, v) in rows {
        let _ = writeln!(b, "<tr><th>{k}</th><td>{}</td></tr>", escape(&v));
    }
    let _ = write!(
        b,
        "</table>\n<p>What Tencent answers now: <code>tiw-push-exporter describe --app {} {}</code>. <a href=\"/\">Back</a></p>\n",
        t.sdk_app_id,
        escape(&shell_quote(&t.task_id))
    );
    Html(page(&format!("Task {}", escape(&t.task_id)), &b)).into_response()
}

#[cfg(test)]
mod tests {
    use super::shell_quote;

    #[test]
    fn printed_commands_quote_the_task_id() {
        assert_eq!(shell_quote("abc"), "'abc'");
        assert_eq!(shell_quote("x;curl e|sh"), "'x;curl e|sh'");
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
    }
}
