//! The web console in a real browser: headless Chromium driven over
//! WebDriver (chromedriver) with fantoccini, against the real server on a
//! real PostgreSQL. Each test is a person's task (docs/console.md).
//!
//! Without Chromium or chromedriver the tests print why and pass, unless
//! `CI` is set: then a missing browser fails them (`.ci/run` installs both).

mod common;

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

/// Fills the key page's write form and submits it.
async fn write(b: &Client, value: &str, reason: &str) {
    let value_input = b.find(Locator::Id("value")).await.unwrap();
    value_input.clear().await.unwrap();
    value_input.send_keys(value).await.unwrap();
    b.find(Locator::Id("reason")).await.unwrap().send_keys(reason).await.unwrap();
    b.find(Locator::Css("#write-form button[type=submit]")).await.unwrap().click().await.unwrap();
    b.wait().for_element(Locator::Css("main h1")).await.unwrap();
}

#[sqlx::test]
async fn an_admin_signs_in_sees_the_catalog_writes_a_value_and_is_told_why_a_bad_one_is_refused(pool: PgPool) {
    let Some(driver) = driver().await else { return };
    let app = TestApp::spawn(pool).await;
    let b = browser(&driver).await;
    sign_in(&b, &app.base, &app.admin).await;

    // The catalog: every key, its bounds and whether it needs approval.
    let row = |key: &str| format!("#catalog tr[data-key='{key}']");
    assert!(text(&b, &format!("{} .bounds", row(REFUND))).await.contains("\"max\":365"));
    assert_eq!(text(&b, &format!("{} .approval", row(REFUND))).await, "no");
    assert_eq!(text(&b, &format!("{} .approval", row(DEPOSIT))).await, "needs 1 approval");
    let rows = b.find_all(Locator::Css("#catalog tbody tr")).await.unwrap().len();
    assert_eq!(rows, common::catalog_len());

    // A write at org acme, the old value prefilled: nothing is stored
    // there, so the global value (the default, 30).
    b.goto(&format!("{}/console/keys/{REFUND}?level=org&scope_id=acme", app.base)).await.unwrap();
    assert_eq!(b.find(Locator::Id("old_value")).await.unwrap().prop("value").await.unwrap().as_deref(), Some("30"));
    write(&b, "45", "customer success asked").await;
    assert!(body(&b).await.contains("Written."), "{}", body(&b).await);
    assert!(text(&b, "#overrides tbody").await.contains("45"));
    assert_eq!(app.resolve(REFUND, "org_id=acme").await, json!(45));
    // What a caller of org acme gets, with the level that won.
    b.goto(&format!("{}/console/keys/{REFUND}?org_id=acme&user_id=u1", app.base)).await.unwrap();
    assert_eq!(text(&b, "#resolved-value").await, "45");
    assert_eq!(text(&b, "#resolved-level").await, "org");

    // Out of bounds: the API's 422 in words, with its code; nothing written.
    let before = app.counts().await;
    b.goto(&format!("{}/console/keys/{REFUND}?level=org&scope_id=acme", app.base)).await.unwrap();
    assert_eq!(b.find(Locator::Id("old_value")).await.unwrap().prop("value").await.unwrap().as_deref(), Some("45"));
    write(&b, "1000", "too long a window").await;
    let error = text(&b, "#write-error").await;
    assert!(error.contains("422") && error.contains("out_of_bounds"), "{error}");
    assert!(error.contains("365"), "the bound in words: {error}");
    assert_eq!(app.counts().await, before);
    assert_eq!(app.resolve(REFUND, "org_id=acme").await, json!(45));

    // A stale old value: the conflict, with the current value.
    b.find(Locator::Id("old_value")).await.unwrap().clear().await.unwrap();
    b.find(Locator::Id("old_value")).await.unwrap().send_keys("30").await.unwrap();
    b.find(Locator::Id("reason")).await.unwrap().clear().await.unwrap();
    write(&b, "50", "meanwhile").await;
    let error = text(&b, "#write-error").await;
    assert!(error.contains("stale_old_value") && error.contains("The current value is 45"), "{error}");
    assert_eq!(app.resolve(REFUND, "org_id=acme").await, json!(45));
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
    bob.find(Locator::Css("#change-requests tbody a")).await.unwrap().click().await.unwrap();
    bob.wait().for_element(Locator::Id("decide")).await.unwrap();
    bob.find(Locator::Id("reason")).await.unwrap().send_keys("checked with finance").await.unwrap();
    bob.find(Locator::Css("button[value=approve]")).await.unwrap().click().await.unwrap();
    bob.wait().for_element(Locator::Id("cr-state")).await.unwrap();
    assert_eq!(text(&bob, "#cr-state").await, "applied");
    assert_eq!(app.resolve(DEPOSIT, "org_id=acme").await, json!(2500));
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
