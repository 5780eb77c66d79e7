//! The landing page as a person sees it: loaded in headless Chromium (Debian's `chromium`, which
//! `.ci/run` installs), after real callbacks, a task that ended with EXCEPTION and an app whose API
//! calls fail.

use std::process::Command;
use std::time::Duration;

use serde_json::json;
use tiw_push_exporter::simulator::callbacks::sign_event;

use crate::common::*;

const APP: u64 = 1400000001;
/// An app the simulator does not know: every call for it fails.
const STRANGER: u64 = 1400000099;
const KEY: &str = "landingKey-0123456789";

/// Headless Chromium on `url` with `action` (`--dump-dom`, `--screenshot=…`): its stdout.
fn chromium(action: &str, url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("chromium");
    // --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
    cmd.args(["--headless", "--no-sandbox", "--disable-gpu", "--window-size=1280,1400"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(action)
        .arg(url);
    run_ok(&mut cmd, "chromium (apt-get install chromium)")
}

/// The DOM after Chromium loaded `url` (and ran whatever the page would run: nothing); a
/// screenshot too when asked for (`TIW_LANDING_SCREENSHOT=page.png`, to look at it yourself).
fn chromium_dom(url: &str, screenshot: Option<&std::path::Path>) -> String {
    if let Some(path) = screenshot {
        chromium(&format!("--screenshot={}", path.display()), url);
    }
    chromium("--dump-dom", url)
}

/// The text of the table row holding `needle`, tags removed and cells separated by `|`.
fn row_with(dom: &str, needle: &str) -> Option<String> {
    let at = dom.find(needle)?;
    let start = dom[..at].rfind("<tr")?;
    let end = at + dom[at..].find("</tr>")?;
    let mut text = String::new();
    let mut in_tag = false;
    for c in dom[start..end].chars() {
        match c {
            '<' => {
                in_tag = true;
                text.push('|');
            }
            '>' => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    let cells: Vec<&str> = text.split('|').map(str::trim).filter(|c| !c.is_empty()).collect();
    Some(cells.join(" | "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_landing_page_shows_callbacks_tasks_and_api_errors_to_a_person() {
    if !needs(&["chromium"]) {
        return;
    }
    let sim = start_sim(sim_config(&[APP])).await;
    let yaml = config_yaml(&sim.endpoint(), &[], "300ms", "").replace(
        "apps:\n",
        &format!("apps:\n  - sdk_app_id: {APP}\n    callback_key: {KEY}\n  - sdk_app_id: {STRANGER}\n"),
    );
    let exporter = start_exporter(&yaml).await;
    let task = sim.sim.create_task(APP, 2001);
    sim.sim.start_pushing(&task);
    let started = json!({"EventType": "WhiteboardPushStarted", "SdkAppId": APP, "Timestamp": now(),
                         "EventData": {"TaskId": task, "RoomId": 2001, "PushStartTime": now()}});
    let client = reqwest::Client::new();
    let post = |body: serde_json::Value| client.post(exporter.url("/callback")).body(body.to_string()).send();
    assert_eq!(
        post(sign_event(started.clone(), KEY, now() + 300))
            .await
            .unwrap()
            .status(),
        200
    );
    let forged = sign_event(started, "not-the-key", now() + 300);
    assert_eq!(post(forged).await.unwrap().status(), 401);
    sim.sim.stop(&task, "EXCEPTION");
    wait_status(&exporter, &task, "STOPPED").await;
    wait_for(Duration::from_secs(10), "an API error for the unknown app", || async {
        let page = reqwest::get(exporter.url("/")).await.ok()?.text().await.ok()?;
        page.contains(&format!("<td>{STRANGER}</td><td>")).then_some(())
    })
    .await;

    let url = exporter.url("/");
    let shot = std::env::var_os("TIW_LANDING_SCREENSHOT").map(std::path::PathBuf::from);
    let dom = tokio::task::spawn_blocking(move || chromium_dom(&url, shot.as_deref()))
        .await
        .unwrap();
    assert!(dom.contains("<h1>TIW Push Exporter</h1>"), "{dom}");
    assert!(!dom.contains(KEY) && !dom.contains("not-the-key"), "a key on the page");

    // Tracked tasks: one STOPPED for the app, nothing for the stranger.
    let counts = row_with(&dom, &format!("<td>{APP}</td><td class=\"n\">")).expect("a counts row");
    assert_eq!(
        counts,
        format!("{APP} | 0 | 0 | 1 | 0 | 0"),
        "PREPARED PUSHING STOPPED FAILED UNKNOWN"
    );
    // The task that ended with EXCEPTION, linked to its detail page.
    let look = row_with(&dom, ">ended with EXCEPTION").expect("the EXCEPTION task listed");
    assert!(look.contains(&task) && look.contains("STOPPED"), "{look}");
    // In words a person reads, with the room and the runbook.
    assert!(
        look.contains("after 1 exception") || look.contains("exceptions"),
        "{look}"
    );
    assert!(look.contains("runbook"), "{look}");
    // The callbacks, newest first: the forged one refused, and why; the real one accepted.
    let refused = row_with(&dom, "bad_signature").expect("the forged callback");
    assert!(
        refused.contains("WhiteboardPushStarted") && refused.contains("401"),
        "{refused}"
    );
    assert!(
        refused.contains(&APP.to_string()) && !refused.contains(&task),
        "no unverified task id: {refused}"
    );
    let accepted = row_with(&dom, ">accepted<").expect("the accepted callback");
    assert!(accepted.contains(&task) && accepted.contains("200"), "{accepted}");
    assert!(dom.find("bad_signature") < dom.find(">accepted<"), "newest first");
    // The app whose calls fail, with Tencent's error.
    let error = row_with(&dom, &format!("<td>{STRANGER}</td><td>")).expect("the API error");
    assert!(error.contains("ago"), "{error}");
    assert!(!dom.contains("<script"), "no JavaScript needed");

    // The task's detail page, through the link a person would click.
    let href = dom
        .split("href=\"")
        .filter_map(|s| s.split('"').next())
        .find(|h| h.starts_with("/-/task?") && h.contains(&task))
        .expect("a link to the task")
        .replace("&amp;", "&");
    let url = exporter.url(&href);
    let detail = tokio::task::spawn_blocking(move || chromium_dom(&url, None))
        .await
        .unwrap();
    assert_eq!(
        row_with(&detail, "FinishReason").as_deref(),
        Some("FinishReason | EXCEPTION")
    );
    assert_eq!(row_with(&detail, "RoomId").as_deref(), Some("RoomId | 2001"));
    let missing = reqwest::get(exporter.url(&format!("/-/task?sdk_app_id={APP}&task_id=nosuchtask")))
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    exporter.stop().await;
    sim.stop().await;
}
