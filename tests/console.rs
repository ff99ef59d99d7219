//! The web console in a real browser: headless Chromium driven over
//! WebDriver (chromedriver) with fantoccini, against the real server on a
//! real PostgreSQL. Each test is a person's task (docs/console.md).
//!
//! Without Chromium or chromedriver the tests print why and pass, unless
//! `CI` is set: then a missing browser fails them (`.ci/run` installs both).

mod common;

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{create_token, TestApp};
use fantoccini::{Client, ClientBuilder, Locator};
use policy_values::store::tokens::Role;
use reqwest::StatusCode;
use serde_json::{json, Value as Json};
use sqlx::PgPool;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const REFUND: &str = "allocation.refund_window_days";
const DEPOSIT: &str = "billing.minimum_deposit_minor";

fn find(env: &str, default: &str) -> Option<String> {
    let path = std::env::var(env).unwrap_or_else(|_| default.to_string());
    std::path::Path::new(&path).exists().then_some(path)
}

/// A chromedriver process, killed when dropped.
struct Driver {
    child: Child,
    url: String,
    chromium: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        // chromedriver and the browsers it started share its process group:
        // end them all, so a test that panics before closing its browser
        // leaves no Chromium behind.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts chromedriver; `None` (the test skips) when the browser is missing
/// and `CI` is unset.
async fn driver() -> Option<Driver> {
    let (chromium, chromedriver) = (find("CHROMIUM", CHROMIUM), find("CHROMEDRIVER", CHROMEDRIVER));
    let (Some(chromium), Some(chromedriver)) = (chromium, chromedriver) else {
        if std::env::var_os("CI").is_some() {
            panic!("CI is set but Chromium ({CHROMIUM}) or chromedriver ({CHROMEDRIVER}) is missing: install Debian's chromium and chromium-driver");
        }
        eprintln!("SKIPPED: the console's browser tests need {CHROMIUM} and {CHROMEDRIVER} (apt-get install -y chromium chromium-driver)");
        return None;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(chromedriver)
        .arg(format!("--port={port}"))
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    // Killed and waited for when dropped, a panic below included.
    let driver = Driver { child, url: format!("http://127.0.0.1:{port}"), chromium };
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Some(driver);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("chromedriver did not listen on port {port}");
}

/// A new headless browser (its own profile, so its own cookies).
async fn browser(driver: &Driver) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".to_string(),
        json!({
            "binary": driver.chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,900"]
        }),
    );
    // Plain HTTP to the local chromedriver: no TLS.
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector).capabilities(caps).connect(&driver.url).await.expect("a WebDriver session")
}

async fn sign_in(b: &Client, base: &str, token: &str) {
    b.goto(&format!("{base}/console")).await.unwrap();
    // Not signed in: the console sends the browser to the sign-in page.
    assert!(b.current_url().await.unwrap().as_str().ends_with("/console/sign-in"));
    b.find(Locator::Id("token")).await.unwrap().send_keys(token).await.unwrap();
    b.find(Locator::Css("main form button[type=submit]")).await.unwrap().click().await.unwrap();
    b.wait().for_element(Locator::Id("catalog")).await.unwrap();
}

async fn text(b: &Client, css: &str) -> String {
    b.find(Locator::Css(css)).await.unwrap().text().await.unwrap()
}

async fn body(b: &Client) -> String {
    text(b, "body").await
}

/// Fills the key page's write form and asks for its preview.
async fn preview(b: &Client, value: &str, reason: &str) {
    let value_input = b.find(Locator::Id("value")).await.unwrap();
    value_input.clear().await.unwrap();
    value_input.send_keys(value).await.unwrap();
    let reason_input = b.find(Locator::Id("reason")).await.unwrap();
    reason_input.clear().await.unwrap();
    reason_input.send_keys(reason).await.unwrap();
    click_and_wait(b, b.find(Locator::Id("preview-button")).await.unwrap()).await;
}

/// Clicks a button that submits a form and waits for the next page: until
/// the button's element is gone (stale) and the new page has its heading.
async fn click_and_wait(b: &Client, button: fantoccini::elements::Element) {
    button.clone().click().await.unwrap();
    for _ in 0..200 {
        if button.is_displayed().await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.wait().for_element(Locator::Css("main h1")).await.unwrap();
}

/// Fills the key page's write form, previews it and, when the preview has
/// no refusal, submits it.
async fn write(b: &Client, value: &str, reason: &str) {
    preview(b, value, reason).await;
    if let Ok(submit) = b.find(Locator::Id("submit-button")).await {
        click_and_wait(b, submit).await;
    }
}

/// With `CONSOLE_SCREENSHOTS=<dir>`, saves the whole page as `<dir>/<name>.png`
/// (the window is made as tall as the page, up to 2,000 pixels).
async fn shot(b: &Client, name: &str) {
    let Some(dir) = std::env::var_os("CONSOLE_SCREENSHOTS") else { return };
    let (width, height) = b.get_window_size().await.unwrap();
    let page = b.execute("return document.documentElement.scrollHeight", vec![]).await.unwrap();
    let tall =
        page.as_u64().unwrap_or(900).clamp(500, 2000) as u32 + (height as u32).saturating_sub(inner_height(b).await);
    b.set_window_size(width as u32, tall).await.unwrap();
    let png = b.screenshot().await.unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(std::path::Path::new(&dir).join(format!("{name}.png")), png).unwrap();
    b.set_window_size(width as u32, height as u32).await.unwrap();
}

async fn inner_height(b: &Client) -> u32 {
    b.execute("return window.innerHeight", vec![]).await.unwrap().as_u64().unwrap_or(0) as u32
}

/// The page is no wider than the window: nothing scrolls sideways but
/// the tables inside their own wrappers.
async fn assert_no_sideways_scroll(b: &Client, page: &str) {
    let widths = b
        .execute("return [document.documentElement.scrollWidth, document.body.scrollWidth, window.innerWidth]", vec![])
        .await
        .unwrap();
    let w: Vec<u64> = widths.as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    assert!(w[0] <= w[2] && w[1] <= w[2], "{page} scrolls sideways at {} px: {w:?}", w[2]);
}

/// Waits until the browser's URL contains `part` (a form's GET answered).
async fn wait_for_url(b: &Client, part: &str) {
    for _ in 0..100 {
        if b.current_url().await.unwrap().as_str().contains(part) {
            b.wait().for_element(Locator::Css("main h1")).await.unwrap();
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the URL never contained {part}");
}

/// The session cookie the browser holds (WebDriver reads HttpOnly cookies).
async fn session_cookie(b: &Client) -> String {
    let cookie = b.get_named_cookie("pv_console").await.unwrap();
    format!("pv_console={}", cookie.value())
}

#[sqlx::test]
async fn an_admin_signs_in_sees_the_catalog_previews_and_writes_a_value_and_sees_refusals_beside_their_field(
    pool: PgPool,
) {
    let Some(driver) = driver().await else { return };
    let app = TestApp::spawn(pool).await;
    let b = browser(&driver).await;
    b.goto(&format!("{}/console", app.base)).await.unwrap();
    shot(&b, "sign-in").await;
    sign_in(&b, &app.base, &app.admin).await;

    // The catalog: every key, its bounds, global value and approval.
    let row = |key: &str| format!("#catalog tr[data-key='{key}']");
    assert!(text(&b, &format!("{} .bounds", row(REFUND))).await.contains("\"max\":365"));
    assert_eq!(text(&b, &format!("{} .approval", row(REFUND))).await, "no");
    assert_eq!(text(&b, &format!("{} .approval", row(DEPOSIT))).await, "needs 1 approval");
    assert_eq!(text(&b, &format!("{} .global", row(REFUND))).await, "30 (default)");
    assert_eq!(text(&b, &format!("{} .overrides", row(REFUND))).await, "0");
    let rows = b.find_all(Locator::Css("#catalog tbody tr")).await.unwrap().len();
    assert_eq!(rows, common::catalog_len());
    shot(&b, "catalog").await;

    // A write at org acme, the old value prefilled: nothing is stored
    // there, so the global value (the default, 30). The preview first:
    // 30 -> 45, written at once; nothing is written yet.
    b.goto(&format!("{}/console/keys/{REFUND}?level=org&scope_id=acme", app.base)).await.unwrap();
    assert_eq!(b.find(Locator::Id("old_value")).await.unwrap().prop("value").await.unwrap().as_deref(), Some("30"));
    assert!(b.find(Locator::Id("submit-button")).await.is_err(), "no submit before a preview");
    let before = app.counts().await;
    preview(&b, "45", "customer success asked").await;
    assert_eq!(text(&b, "#preview-before").await, "30");
    assert_eq!(text(&b, "#preview-after").await, "45");
    assert!(text(&b, "#preview-outcome").await.contains("writes it at once"));
    assert_eq!(app.counts().await, before, "a preview writes nothing");
    shot(&b, "key-preview").await;
    // A value edited after its preview is previewed again, not written.
    for value in ["46", "45"] {
        let input = b.find(Locator::Id("value")).await.unwrap();
        input.clear().await.unwrap();
        input.send_keys(value).await.unwrap();
        click_and_wait(&b, b.find(Locator::Id("submit-button")).await.unwrap()).await;
        assert_eq!(text(&b, "#preview-after").await, value);
        assert_eq!(app.counts().await, before, "a changed form is previewed again");
    }
    click_and_wait(&b, b.find(Locator::Id("submit-button")).await.unwrap()).await;
    assert!(body(&b).await.contains("Written."), "{}", body(&b).await);
    assert!(text(&b, "#overrides tbody").await.contains("45"));
    assert_eq!(app.resolve(REFUND, "org_id=acme").await, json!(45));
    b.goto(&format!("{}/console?q=refund", app.base)).await.unwrap();
    assert_eq!(text(&b, &format!("{} .overrides", row(REFUND))).await, "1");
    assert_eq!(b.find_all(Locator::Css("#catalog tbody tr")).await.unwrap().len(), 1, "search by name");
    // What a caller of org acme gets, with the level that won.
    b.goto(&format!("{}/console/keys/{REFUND}?org_id=acme&user_id=u1", app.base)).await.unwrap();
    assert_eq!(text(&b, "#resolved-value").await, "45");
    assert_eq!(text(&b, "#resolved-level").await, "org");
    shot(&b, "caller").await;

    // Out of bounds: the API's 422 in words, with its code, beside the
    // value field; nothing written.
    let before = app.counts().await;
    b.goto(&format!("{}/console/keys/{REFUND}?level=org&scope_id=acme", app.base)).await.unwrap();
    assert_eq!(b.find(Locator::Id("old_value")).await.unwrap().prop("value").await.unwrap().as_deref(), Some("45"));
    write(&b, "1000", "too long a window").await;
    let error = text(&b, "#value-error").await;
    assert!(error.contains("422") && error.contains("out_of_bounds"), "{error}");
    assert!(error.contains("365"), "the bound in words: {error}");
    assert_eq!(
        b.find(Locator::Id("value")).await.unwrap().attr("aria-describedby").await.unwrap().as_deref(),
        Some("value-error")
    );
    assert!(b.find(Locator::Id("submit-button")).await.is_err(), "a refused preview offers no submit");
    shot(&b, "key-error").await;
    assert_eq!(app.counts().await, before);
    assert_eq!(app.resolve(REFUND, "org_id=acme").await, json!(45));

    // A blank reason: refused beside the reason field.
    write(&b, "50", "   ").await;
    let error = text(&b, "#reason-error").await;
    assert!(error.contains("invalid_reason"), "{error}");
    assert!(b.find(Locator::Id("value-error")).await.is_err(), "only the field concerned");

    // A stale old value: the conflict beside the old value, with the
    // current value.
    b.find(Locator::Id("old_value")).await.unwrap().clear().await.unwrap();
    b.find(Locator::Id("old_value")).await.unwrap().send_keys("30").await.unwrap();
    write(&b, "50", "meanwhile").await;
    let error = text(&b, "#old_value-error").await;
    assert!(error.contains("stale_old_value") && error.contains("The current value is 45"), "{error}");
    assert_eq!(app.resolve(REFUND, "org_id=acme").await, json!(45));
    assert_eq!(app.counts().await, before);
    b.close().await.unwrap();
}

#[sqlx::test]
async fn an_admin_cancels_a_scheduled_change_from_the_key_page(pool: PgPool) {
    let Some(driver) = driver().await else { return };
    let app = TestApp::spawn(pool).await;
    let at = (time::OffsetDateTime::now_utc() + time::Duration::days(2))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let reply = app
        .write(json!({"key": REFUND, "scope": {"org_id": "acme"}, "value": 60, "old_value": 30,
                      "effective_at": at, "reason": "from next week"}))
        .await;
    assert!(reply.status.is_success(), "{:?}", reply.json);
    let b = browser(&driver).await;
    sign_in(&b, &app.base, &app.admin).await;
    let row = format!("#catalog tr[data-key='{REFUND}']");
    assert_eq!(text(&b, &format!("{row} .scheduled")).await, "1");
    assert_eq!(text(&b, &format!("{row} .overrides")).await, "0");

    b.goto(&format!("{}/console/keys/{REFUND}", app.base)).await.unwrap();
    let scheduled = text(&b, "#scheduled tbody").await;
    assert!(
        scheduled.contains("org acme") && scheduled.contains("60") && scheduled.contains("from next week"),
        "{scheduled}"
    );
    shot(&b, "key").await;
    b.find(Locator::Id("cancel-reason-0")).await.unwrap().send_keys("plan changed").await.unwrap();
    click_and_wait(&b, b.find(Locator::Css("#scheduled form.cancel button")).await.unwrap()).await;
    assert!(body(&b).await.contains("Cancelled."));
    assert_eq!(text(&b, "#scheduled").await, "Scheduled changes\nNone.");
    let overrides = app.get(&format!("/api/v1/admin/policy-values?key={REFUND}"), &app.auditor).await;
    assert_eq!(overrides.json["overrides"], json!([]), "{:?}", overrides.json);
    let audit = app.get(&format!("/api/v1/admin/audit-logs?policy_key={REFUND}&limit=1"), &app.auditor).await;
    assert_eq!(audit.json["items"][0]["action"], "policy_value.cancel");
    assert_eq!(audit.json["items"][0]["metadata"]["reason"], "plan changed");
    b.close().await.unwrap();
}

#[sqlx::test]
async fn an_auditor_follows_a_change_to_its_audit_record_and_exports_the_filtered_log(pool: PgPool) {
    let Some(driver) = driver().await else { return };
    let app = TestApp::spawn(pool).await;
    for (old, new, reason) in [(30, 45, "customer success asked"), (45, 50, "a longer trial")] {
        let reply = app
            .write(
                json!({"key": REFUND, "scope": {"org_id": "acme"}, "value": new, "old_value": old, "reason": reason}),
            )
            .await;
        assert!(reply.status.is_success(), "{:?}", reply.json);
    }
    let reply = app
        .write(
            json!({"key": "billing.window_seconds", "scope": {}, "value": 90, "old_value": 60, "reason": "other key"}),
        )
        .await;
    assert!(reply.status.is_success(), "{:?}", reply.json);
    let b = browser(&driver).await;
    sign_in(&b, &app.base, &app.auditor).await;
    assert!(b.find(Locator::Id("write-form")).await.is_err(), "an auditor sees no write form");

    // From the key page to the history at org acme: newest first.
    b.goto(&format!("{}/console/keys/{REFUND}", app.base)).await.unwrap();
    b.find(Locator::Css("#overrides a.history")).await.unwrap().click().await.unwrap();
    b.wait().for_element(Locator::Id("history")).await.unwrap();
    assert!(text(&b, "main h1").await.ends_with("at org acme"));
    let rows = b.find_all(Locator::Css("#history tbody tr")).await.unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(text(&b, "#history tbody tr:nth-child(1) .change").await, "45 → 50");
    assert_eq!(text(&b, "#history tbody tr:nth-child(2) .change").await, "30 → 45");
    assert_eq!(text(&b, "#history tbody tr:nth-child(1) .reason").await, "a longer trial");
    assert!(text(&b, "#history tbody tr:nth-child(1)").await.contains("alice-admin"));
    shot(&b, "history").await;
    // Its audit record, every field: the same as the API's newest record.
    b.find(Locator::Css("#history tbody tr:nth-child(1) a.audit-link")).await.unwrap().click().await.unwrap();
    b.wait().for_element(Locator::Id("record")).await.unwrap();
    let api = app.get(&format!("/api/v1/admin/audit-logs?policy_key={REFUND}&limit=1"), &app.auditor).await;
    let newest = &api.json["items"][0];
    assert_eq!(text(&b, "#record-seq").await, newest["seq"].to_string());
    assert_eq!(text(&b, "#record-hash").await, newest["hash"].as_str().unwrap());
    assert_eq!(text(&b, "#record-action").await, "policy_value.set");
    let metadata: Json = serde_json::from_str(&text(&b, "#record-metadata").await).unwrap();
    assert_eq!((metadata["old_value"].clone(), metadata["new_value"].clone()), (json!(45), json!(50)));
    shot(&b, "audit-record").await;

    // The audit log: the chain verified with its head; filtered to the key.
    b.goto(&format!("{}/console/audit", app.base)).await.unwrap();
    let head = app.get("/api/v1/admin/audit-logs/head", &app.auditor).await;
    assert_eq!(text(&b, "#chain-state").await, "verified");
    assert_eq!(text(&b, "#chain-head").await, head.json["hash"].as_str().unwrap());
    b.find(Locator::Id("policy_key")).await.unwrap().send_keys(REFUND).await.unwrap();
    b.find(Locator::Css("form.filters button")).await.unwrap().click().await.unwrap();
    wait_for_url(&b, "policy_key=").await;
    let api = app.get(&format!("/api/v1/admin/audit-logs?policy_key={REFUND}"), &app.auditor).await;
    let shown = b.find_all(Locator::Css("#audit tbody tr")).await.unwrap().len();
    assert_eq!(shown, api.json["items"].as_array().unwrap().len(), "{}", text(&b, "#audit").await);
    assert!(!text(&b, "#audit").await.contains("billing.window_seconds"));
    shot(&b, "audit").await;

    // The export links download, with the session, what the API exports
    // for the same filter.
    let cookie = session_cookie(&b).await;
    for (id, format, kind) in [("export-ndjson", "ndjson", "application/x-ndjson"), ("export-csv", "csv", "text/csv")] {
        let href = b.find(Locator::Id(id)).await.unwrap().attr("href").await.unwrap().unwrap();
        assert!(href.contains(&format!("format={format}")) && href.contains("policy_key="), "{href}");
        let download = app.http.get(format!("{}{href}", app.base)).header("cookie", &cookie).send().await.unwrap();
        assert_eq!(download.status(), StatusCode::OK);
        assert!(download.headers()["content-type"].to_str().unwrap().starts_with(kind));
        assert!(download.headers()["content-disposition"].to_str().unwrap().contains("attachment"));
        let got = download.text().await.unwrap();
        let want = app
            .http
            .get(format!("{}/api/v1/admin/audit-logs?format={format}&policy_key={REFUND}", app.base))
            .bearer_auth(&app.auditor)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(got, want);
        assert!(got.contains("a longer trial") && got.contains("customer success asked"), "{got}");
        assert!(!got.contains("other key"), "the filter applies: {got}");
    }
    // Paging, the filter kept: the catalog's creation records (one per key)
    // fill more than one page of 50.
    b.goto(&format!("{}/console/audit?action=policy_key.create", app.base)).await.unwrap();
    let seqs = |rows: Vec<fantoccini::elements::Element>| async move {
        let mut out = Vec::new();
        for r in rows {
            out.push(r.attr("data-seq").await.unwrap().unwrap().parse::<i64>().unwrap());
        }
        out
    };
    let first = seqs(b.find_all(Locator::Css("#audit tbody tr")).await.unwrap()).await;
    assert_eq!(first.len(), 50);
    b.find(Locator::Id("older")).await.unwrap().click().await.unwrap();
    wait_for_url(&b, "cursor=").await;
    assert!(b.current_url().await.unwrap().as_str().contains("action=policy_key.create"));
    let second = seqs(b.find_all(Locator::Css("#audit tbody tr")).await.unwrap()).await;
    assert_eq!(first.len() + second.len(), common::catalog_len(), "every key's creation, once");
    assert!(second.iter().all(|s| s < first.last().unwrap()), "older records: {second:?}");
    assert!(text(&b, "#audit tbody").await.matches("policy_key.create").count() == second.len());
    assert!(b.find(Locator::Id("older")).await.is_err(), "the last page");
    click_and_wait(&b, b.find(Locator::Id("newest")).await.unwrap()).await;
    assert_eq!(seqs(b.find_all(Locator::Css("#audit tbody tr")).await.unwrap()).await, first);

    // Without a session the export sends the browser to sign in.
    let bare = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let resp = bare.get(format!("{}/console/audit/export?format=csv", app.base)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    b.close().await.unwrap();
}

#[sqlx::test]
async fn a_person_on_a_phone_signs_in_by_keyboard_and_no_page_scrolls_sideways(pool: PgPool) {
    let Some(driver) = driver().await else { return };
    let app = TestApp::spawn(pool).await;
    let reply = app
        .write(
            json!({"key": REFUND, "scope": {"org_id": "acme"}, "value": 45, "old_value": 30, "reason": "wider window"}),
        )
        .await;
    assert!(reply.status.is_success(), "{:?}", reply.json);
    let b = browser(&driver).await;
    b.set_window_size(390, 844).await.unwrap();

    // Sign in with the keyboard only: Tab to the token field, type, Enter.
    b.goto(&format!("{}/console/sign-in", app.base)).await.unwrap();
    let mut width = Json::Null;
    for _ in 0..50 {
        width = b.execute("return window.innerWidth", vec![]).await.unwrap();
        if width == json!(390) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(width, json!(390), "the window is phone-wide");
    let mut reached = false;
    for _ in 0..10 {
        b.active_element().await.unwrap().send_keys("\u{E004}").await.unwrap();
        if b.active_element().await.unwrap().attr("id").await.unwrap().as_deref() == Some("token") {
            reached = true;
            break;
        }
    }
    assert!(reached, "Tab reaches the token field");
    b.active_element().await.unwrap().send_keys(&format!("{}\u{E007}", app.admin)).await.unwrap();
    b.wait().for_element(Locator::Id("catalog")).await.unwrap();
    // Every input has a label.
    for page in ["/console", &format!("/console/keys/{REFUND}"), "/console/audit"] {
        b.goto(&format!("{}{page}", app.base)).await.unwrap();
        let unlabelled = b
            .execute(
                "return [...document.querySelectorAll('input:not([type=hidden]), select')]\
                 .filter(i => !(i.labels && i.labels.length)).map(i => i.name)",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(unlabelled, json!([]), "{page}");
    }

    let pages = [
        ("catalog-390", "/console".to_string()),
        ("key-390", format!("/console/keys/{REFUND}?org_id=acme")),
        ("history-390", format!("/console/keys/{REFUND}/history?level=org&scope_id=acme")),
        ("audit-390", "/console/audit".to_string()),
        ("change-requests-390", "/console/change-requests".to_string()),
    ];
    for (name, page) in &pages {
        b.goto(&format!("{}{page}", app.base)).await.unwrap();
        b.wait().for_element(Locator::Css("main h1")).await.unwrap();
        assert_no_sideways_scroll(&b, page).await;
        shot(&b, name).await;
    }
    b.close().await.unwrap();
}

#[sqlx::test]
async fn a_sensitive_write_becomes_a_change_request_that_a_second_admin_approves(pool: PgPool) {
    let Some(driver) = driver().await else { return };
    let app = TestApp::spawn(pool).await;
    let second = create_token(&app.pool, Role::Admin, "bob-admin").await;
    let alice = browser(&driver).await;
    sign_in(&alice, &app.base, &app.admin).await;
    alice.goto(&format!("{}/console/keys/{DEPOSIT}", app.base)).await.unwrap();
    write(&alice, "2500", "finance asked").await;
    // A change request, pending; its author has no approve button.
    assert!(alice.current_url().await.unwrap().path().starts_with("/console/change-requests/"));
    assert_eq!(text(&alice, "#cr-state").await, "pending");
    assert!(alice.find(Locator::Css("button[value=approve]")).await.is_err());
    assert_eq!(app.resolve(DEPOSIT, "org_id=acme").await, json!(1000));

    let bob = browser(&driver).await;
    sign_in(&bob, &app.base, &second).await;
    bob.goto(&format!("{}/console/change-requests", app.base)).await.unwrap();
    assert!(text(&bob, "#change-requests").await.contains(DEPOSIT));
    shot(&bob, "change-requests").await;
    bob.find(Locator::Css("#change-requests tbody a")).await.unwrap().click().await.unwrap();
    bob.wait().for_element(Locator::Id("decide")).await.unwrap();
    bob.find(Locator::Id("reason")).await.unwrap().send_keys("checked with finance").await.unwrap();
    click_and_wait(&bob, bob.find(Locator::Css("button[value=approve]")).await.unwrap()).await;
    assert_eq!(text(&bob, "#cr-state").await, "applied");
    assert_eq!(app.resolve(DEPOSIT, "org_id=acme").await, json!(2500));
    // The lists by state: no longer pending, now among the applied.
    bob.goto(&format!("{}/console/change-requests", app.base)).await.unwrap();
    assert!(text(&bob, "#no-requests").await.contains("No pending change requests"));
    bob.find(Locator::LinkText("Applied")).await.unwrap().click().await.unwrap();
    wait_for_url(&bob, "state=applied").await;
    assert_eq!(text(&bob, "#change-requests tbody .state").await, "applied");
    assert!(text(&bob, "#change-requests tbody").await.contains(DEPOSIT));
    // More pending requests than a page (25): Older gives the rest.
    for i in 0..26 {
        let body = json!({"key": DEPOSIT, "scope": {"org_id": format!("o{i}")}, "value": 1500 + i,
                          "old_value": 2500, "reason": "batch"});
        let reply = app.write(body).await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{:?}", reply.json);
    }
    bob.goto(&format!("{}/console/change-requests?state=pending", app.base)).await.unwrap();
    let numbers = |b: &Client| {
        let b = b.clone();
        async move {
            let mut out = Vec::new();
            for a in b.find_all(Locator::Css("#change-requests tbody td:first-child a")).await.unwrap() {
                out.push(a.text().await.unwrap().parse::<i64>().unwrap());
            }
            out
        }
    };
    let first = numbers(&bob).await;
    assert_eq!(first.len(), 25);
    bob.find(Locator::Id("older")).await.unwrap().click().await.unwrap();
    wait_for_url(&bob, "before=").await;
    let second = numbers(&bob).await;
    assert_eq!(second.len(), 1);
    assert!(second[0] < *first.iter().min().unwrap(), "{first:?} then {second:?}");
    assert!(bob.find(Locator::Id("older")).await.is_err(), "the last page");
    alice.close().await.unwrap();
    bob.close().await.unwrap();
}

#[sqlx::test]
async fn a_reader_finds_no_admin_forms_and_a_post_without_the_csrf_token_is_refused(pool: PgPool) {
    let Some(driver) = driver().await else { return };
    let app = TestApp::spawn(pool).await;
    let b = browser(&driver).await;
    sign_in(&b, &app.base, &app.reader).await;
    b.goto(&format!("{}/console/keys/{REFUND}?org_id=acme", app.base)).await.unwrap();
    assert_eq!(text(&b, "#resolved-value").await, "30");
    assert!(b.find(Locator::Id("write-form")).await.is_err(), "a reader sees no write form");
    assert!(text(&b, "#overrides").await.contains("needs the auditor role"));
    // The audit log answers a reader as the API does: 403 forbidden.
    b.goto(&format!("{}/console/audit", app.base)).await.unwrap();
    let page = body(&b).await;
    assert!(page.contains("forbidden") && page.contains("auditor role"), "{page}");
    b.close().await.unwrap();

    // An admin's form with its CSRF token taken out is refused.
    let before = app.counts().await;
    let b = browser(&driver).await;
    sign_in(&b, &app.base, &app.admin).await;
    b.goto(&format!("{}/console/keys/{REFUND}", app.base)).await.unwrap();
    b.execute("document.querySelector('#write-form input[name=csrf]').remove()", vec![]).await.unwrap();
    write(&b, "40", "forged").await;
    let page = body(&b).await;
    assert!(page.contains("csrf_failed"), "{page}");
    assert_eq!(app.counts().await, before);
    assert_eq!(app.resolve(REFUND, "").await, json!(30));
    b.close().await.unwrap();

    // A forged POST from elsewhere, with no session cookie, writes nothing.
    let forged = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let resp = forged
        .post(format!("{}/console/keys/{REFUND}/write", app.base))
        .form(&[("level", "global"), ("scope_id", ""), ("value", "40"), ("old_value", "null"), ("reason", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(app.counts().await, before);
}

#[sqlx::test]
async fn a_script_in_a_reason_is_shown_as_text_and_sign_out_ends_the_session(pool: PgPool) {
    let Some(driver) = driver().await else { return };
    let app = TestApp::spawn(pool).await;
    let b = browser(&driver).await;
    sign_in(&b, &app.base, &app.admin).await;
    b.goto(&format!("{}/console/keys/{REFUND}", app.base)).await.unwrap();
    write(&b, "31", "<script>alert(1)</script>").await;
    // Shown as text (an alert would make every later command fail).
    assert!(text(&b, "#overrides tbody").await.contains("<script>alert(1)</script>"));
    let html = b.source().await.unwrap();
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "escaped in the page");
    // The headers a browser enforces.
    let resp = reqwest::get(format!("{}/console/sign-in", app.base)).await.unwrap();
    let csp = resp.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("default-src 'none'") && !csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(resp.headers()["x-frame-options"], "DENY");
    let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    // The token never reaches JavaScript: no cookie is readable there.
    let cookies = b.execute("return document.cookie", vec![]).await.unwrap();
    assert_eq!(cookies, Json::String(String::new()));

    // Sign out: the session cookie no longer opens a page.
    b.find(Locator::Css("header form button")).await.unwrap().click().await.unwrap();
    b.wait().for_element(Locator::Id("token")).await.unwrap();
    b.goto(&format!("{}/console", app.base)).await.unwrap();
    assert!(b.current_url().await.unwrap().as_str().ends_with("/console/sign-in"));
    b.close().await.unwrap();
}
