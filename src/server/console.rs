//! The web console under `/console`: server-rendered pages (maud) over the
//! same API. Every page and form calls the API router in process with the
//! session's token, so roles, checks, errors and the audit are the API's own
//! (docs/console.md).
//!
//! The session is a random id in an `HttpOnly`, `SameSite=Strict` cookie;
//! the token stays on the server. Every form carries the session's CSRF
//! token; the sign-in form, before any session, a double-submit one.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use maud::{html, Markup, DOCTYPE};
use serde::Deserialize;
use serde_json::{json, Value as Json};
use tower::ServiceExt;

use super::AppState;
use crate::store::tokens::Role;

/// How long a session lasts after sign-in.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
const SESSION_COOKIE: &str = "pv_console";
const SIGN_IN_COOKIE: &str = "pv_console_signin";
const STYLE: &str = include_str!("console.css");
const LEVELS: [&str; 4] = ["user", "project", "org", "plan"];

struct Session {
    token: String,
    csrf: String,
    expires: Instant,
}

static SESSIONS: LazyLock<Mutex<HashMap<String, Session>>> = LazyLock::new(|| Mutex::new(HashMap::new()));

#[derive(Clone)]
struct Console {
    state: AppState,
    api: Router,
}

/// The console's routes; `api` is the API router the pages call.
pub fn router(state: AppState, api: Router) -> Router {
    Router::new()
        .route("/", get(|| async { redirect("/console") }))
        .route("/console", get(catalog))
        .route("/console/style.css", get(style))
        .route("/console/sign-in", get(sign_in_page).post(sign_in))
        .route("/console/sign-out", post(sign_out))
        .route("/console/keys/{key}", get(key_page))
        .route("/console/keys/{key}/write", post(write))
        .route("/console/change-requests", get(change_requests))
        .route("/console/change-requests/{id}", get(change_request))
        .route("/console/change-requests/{id}/{verb}", post(decide))
        .route("/console/audit", get(audit))
        .layer(axum::middleware::map_response(secure_headers))
        .with_state(Console { state, api })
}

async fn secure_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.entry("cache-control").or_insert(HeaderValue::from_static("no-store"));
    response
}

async fn style() -> Response {
    ([(CONTENT_TYPE, "text/css; charset=utf-8"), (axum::http::header::CACHE_CONTROL, "max-age=300")], STYLE)
        .into_response()
}

fn redirect(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(LOCATION, to.to_string())]).into_response()
}

fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    // getrandom fails only without an OS source of randomness; the uuid
    // crate's generator is the fallback then.
    if getrandom::fill(&mut bytes).is_err() {
        return format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    }
    hex::encode(bytes)
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get_all(COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

fn set_cookie(name: &str, value: &str, max_age: u64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}={value}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}")
}

/// Served over TLS (behind a proxy that says so).
fn over_tls(headers: &HeaderMap) -> bool {
    headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()) == Some("https")
}

/// The signed-in caller of a page.
struct Caller {
    token: String,
    csrf: String,
    name: String,
    role: Role,
}

impl Console {
    /// The caller, or the answer to give instead (to the sign-in page).
    async fn caller(&self, headers: &HeaderMap) -> Result<Caller, Response> {
        let to_sign_in = || redirect("/console/sign-in");
        let id = cookie(headers, SESSION_COOKIE).ok_or_else(to_sign_in)?;
        let (token, csrf) = {
            let mut sessions = SESSIONS.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            sessions.retain(|_, s| s.expires > now);
            let session = sessions.get(id).ok_or_else(to_sign_in)?;
            (session.token.clone(), session.csrf.clone())
        };
        match self.state.tokens.authenticate(&self.state.pool, &token).await {
            Ok(Some(p)) => Ok(Caller { token, csrf, name: p.name, role: p.role }),
            Ok(None) => Err(to_sign_in()),
            Err(_) => Err(page_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unavailable",
                "the database cannot be reached; try again shortly",
            )),
        }
    }

    /// The caller of a form POST whose CSRF token matches its session's.
    async fn poster(&self, headers: &HeaderMap, csrf: Option<&str>) -> Result<Caller, Response> {
        let caller = self.caller(headers).await?;
        if csrf != Some(caller.csrf.as_str()) {
            return Err(page_error(StatusCode::FORBIDDEN, "csrf_failed", "the form's CSRF token is missing or wrong"));
        }
        Ok(caller)
    }

    /// Calls the API as `token`: the status and the JSON answer.
    async fn api(&self, method: Method, uri: &str, token: &str, body: Option<Json>) -> (StatusCode, Json) {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header(AUTHORIZATION, format!("Bearer {token}"))
            .header("x-request-id", uuid::Uuid::new_v4().to_string());
        if body.is_some() {
            req = req.header(CONTENT_TYPE, "application/json");
        }
        let body = body.map(|b| Body::from(b.to_string())).unwrap_or_else(Body::empty);
        let Ok(req) = req.body(body) else {
            return (StatusCode::BAD_REQUEST, json!({"code": "invalid_request", "message": "bad request"}));
        };
        let Ok(response) = self.api.clone().oneshot(req).await;
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 64 << 20).await.unwrap_or_default();
        (status, serde_json::from_slice(&bytes).unwrap_or(Json::Null))
    }
}

fn page_error(status: StatusCode, code: &str, message: &str) -> Response {
    html_page(layout("Error", None, error_box(code, message, &Json::Null))).with_status(status)
}

fn error_box(code: &str, message: &str, details: &Json) -> Markup {
    html! {
        div.error role="alert" {
            strong { "Refused: " } (message) " " code { "(" (code) ")" }
            @if let Some(current) = details.get("current_value") {
                p { "The current value is " code.current { (current) } "." }
            }
            @if !details.is_null() && details.get("current_value").is_none() {
                p { "Details: " code { (details) } }
            }
        }
    }
}

fn api_error(status: StatusCode, body: &Json) -> Response {
    let code = body["code"].as_str().unwrap_or("error");
    let message = body["message"].as_str().unwrap_or("the API refused the request");
    html_page(layout("Error", None, error_box(code, message, &body["details"]))).with_status(status)
}

fn layout(title: &str, caller: Option<&Caller>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · policy-values console" }
                link rel="stylesheet" href="/console/style.css";
            }
            body {
                header {
                    nav {
                        a href="/console" { "Catalog" }
                        @if let Some(c) = caller {
                            @if c.role.allows(Role::Auditor) {
                                a href="/console/change-requests" { "Change requests" }
                                a href="/console/audit" { "Audit log" }
                            }
                            span.who { (c.name) " (" (c.role.as_str()) ")" }
                            form.inline method="post" action="/console/sign-out" {
                                input type="hidden" name="csrf" value=(c.csrf);
                                button type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    }
}

fn html_page(markup: Markup) -> Response {
    ([(CONTENT_TYPE, "text/html; charset=utf-8")], markup.into_string()).into_response()
}

fn scalar(v: &Json) -> String {
    match v {
        Json::Null => "—".to_string(),
        other => other.to_string(),
    }
}

async fn sign_in_page(headers: HeaderMap) -> Response {
    let csrf = random_hex();
    let markup = layout(
        "Sign in",
        None,
        html! {
            form method="post" action="/console/sign-in" {
                input type="hidden" name="csrf" value=(csrf);
                label for="token" { "API token" }
                input id="token" name="token" type="password" autocomplete="off" required;
                button type="submit" { "Sign in" }
            }
        },
    );
    let cookie = set_cookie(SIGN_IN_COOKIE, &csrf, 600, over_tls(&headers));
    let mut response = html_page(markup);
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(SET_COOKIE, v);
    }
    response
}

#[derive(Deserialize)]
struct SignIn {
    token: String,
    csrf: Option<String>,
}

async fn sign_in(State(c): State<Console>, headers: HeaderMap, Form(form): Form<SignIn>) -> Response {
    let expected = cookie(&headers, SIGN_IN_COOKIE);
    if expected.is_none() || form.csrf.as_deref() != expected {
        return page_error(StatusCode::FORBIDDEN, "csrf_failed", "the form's CSRF token is missing or wrong");
    }
    let token = form.token.trim().to_string();
    match c.state.tokens.authenticate(&c.state.pool, &token).await {
        Ok(Some(_)) => {}
        Ok(None) => return page_error(StatusCode::UNAUTHORIZED, "unauthorized", "unknown, revoked or expired token"),
        Err(_) => {
            return page_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unavailable",
                "the database cannot be reached",
            )
        }
    }
    let id = random_hex();
    SESSIONS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id.clone(), Session { token, csrf: random_hex(), expires: Instant::now() + SESSION_TTL });
    let mut response = redirect("/console");
    let secure = over_tls(&headers);
    let h = response.headers_mut();
    for value in
        [set_cookie(SESSION_COOKIE, &id, SESSION_TTL.as_secs(), secure), set_cookie(SIGN_IN_COOKIE, "", 0, secure)]
    {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.append(SET_COOKIE, v);
        }
    }
    response
}

#[derive(Deserialize)]
struct CsrfOnly {
    csrf: Option<String>,
}

async fn sign_out(State(c): State<Console>, headers: HeaderMap, Form(form): Form<CsrfOnly>) -> Response {
    if let Err(r) = c.poster(&headers, form.csrf.as_deref()).await {
        return r;
    }
    if let Some(id) = cookie(&headers, SESSION_COOKIE) {
        SESSIONS.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
    }
    let mut response = redirect("/console/sign-in");
    if let Ok(v) = HeaderValue::from_str(&set_cookie(SESSION_COOKIE, "", 0, over_tls(&headers))) {
        response.headers_mut().insert(SET_COOKIE, v);
    }
    response
}

#[derive(Deserialize)]
struct Search {
    q: Option<String>,
}

async fn catalog(State(c): State<Console>, headers: HeaderMap, Query(search): Query<Search>) -> Response {
    let caller = match c.caller(&headers).await {
        Ok(caller) => caller,
        Err(r) => return r,
    };
    let (status, body) = c.api(Method::GET, "/api/v1/policy-keys", &caller.token, None).await;
    if !status.is_success() {
        return api_error(status, &body);
    }
    let q = search.q.unwrap_or_default();
    let keys: Vec<&Json> = body["keys"]
        .as_array()
        .map(|a| a.iter().filter(|k| k["key"].as_str().is_some_and(|name| name.contains(q.as_str()))).collect())
        .unwrap_or_default();
    html_page(layout(
        "Catalog",
        Some(&caller),
        html! {
            form.search method="get" action="/console" {
                label for="q" { "Search keys" }
                input id="q" name="q" type="search" value=(q);
                button type="submit" { "Search" }
            }
            table #catalog {
                thead { tr { th { "Key" } th { "Type" } th { "Bounds" } th { "Default" } th { "Approval" } } }
                tbody {
                    @for k in &keys {
                        @let name = k["key"].as_str().unwrap_or("");
                        tr data-key=(name) {
                            td { a href={ "/console/keys/" (name) } { (name) } }
                            td { (k["type"].as_str().unwrap_or("")) }
                            td.bounds { (k["bounds"]) }
                            td { code { (scalar(&k["default"])) } }
                            td.approval {
                                @match k["approvals_required"].as_i64().unwrap_or(0) {
                                    0 => "no",
                                    n => { "needs " (n) " approval" @if n > 1 { "s" } }
                                }
                            }
                        }
                    }
                }
            }
        },
    ))
}

#[derive(Deserialize, Default)]
struct KeyQuery {
    user_id: Option<String>,
    project_id: Option<String>,
    org_id: Option<String>,
    plan: Option<String>,
    /// The level the write form targets (`global` or one of LEVELS).
    level: Option<String>,
    scope_id: Option<String>,
    done: Option<String>,
}

/// What the write form held, to show again with the API's refusal.
#[derive(Deserialize, Default)]
struct WriteForm {
    csrf: Option<String>,
    level: String,
    #[serde(default)]
    scope_id: String,
    value: String,
    old_value: String,
    reason: String,
    #[serde(default)]
    remove: Option<String>,
}

fn query_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn scope_json(level: &str, scope_id: &str) -> Json {
    if level == "global" {
        json!({})
    } else if level == "plan" {
        json!({ "plan": scope_id })
    } else {
        json!({ format!("{level}_id"): scope_id })
    }
}

/// A form field as JSON: JSON if it parses, else the text as a string.
fn form_json(text: &str) -> Json {
    let t = text.trim();
    if t.is_empty() {
        return Json::Null;
    }
    serde_json::from_str(t).unwrap_or_else(|_| Json::String(t.to_string()))
}

async fn key_page(
    State(c): State<Console>,
    headers: HeaderMap,
    Path(key): Path<String>,
    Query(q): Query<KeyQuery>,
) -> Response {
    let caller = match c.caller(&headers).await {
        Ok(caller) => caller,
        Err(r) => return r,
    };
    render_key(&c, &caller, &key, &q, None, StatusCode::OK).await
}

async fn render_key(
    c: &Console,
    caller: &Caller,
    key: &str,
    q: &KeyQuery,
    refused: Option<(&WriteForm, StatusCode, Json)>,
    status: StatusCode,
) -> Response {
    let (s, catalog) = c.api(Method::GET, "/api/v1/policy-keys", &caller.token, None).await;
    if !s.is_success() {
        return api_error(s, &catalog);
    }
    let Some(def) = catalog["keys"].as_array().and_then(|a| a.iter().find(|k| k["key"] == key)).cloned() else {
        return page_error(StatusCode::NOT_FOUND, "unknown_key", "the key is not in the catalog");
    };
    // Resolve for the scope the page names.
    let mut resolve = format!("/api/v1/policy-values/resolve?key={}", query_encode(key));
    let ids = [("user_id", &q.user_id), ("project_id", &q.project_id), ("org_id", &q.org_id), ("plan", &q.plan)];
    for (name, v) in ids {
        if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
            resolve.push_str(&format!("&{name}={}", query_encode(v)));
        }
    }
    let (rs, resolved) = c.api(Method::GET, &resolve, &caller.token, None).await;
    // Overrides: the auditor's listing; a reader is told so, as the API does.
    let (os, overrides) = c
        .api(Method::GET, &format!("/api/v1/admin/policy-values?key={}", query_encode(key)), &caller.token, None)
        .await;
    let level = q.level.clone().unwrap_or_else(|| "global".to_string());
    let scope_id = q.scope_id.clone().unwrap_or_default();
    let scope = scope_json(&level, &scope_id);
    // What a write replaces: the value stored at that exact scope, else the
    // global value now (an admin-set one, else the default); docs/model.md.
    let stored_at = |scope: &Json| {
        overrides["overrides"]
            .as_array()
            .and_then(|a| a.iter().find(|o| &o["scope"] == scope && o["current"].is_object()))
            .map(|o| o["current"]["value"].clone())
    };
    let stored = stored_at(&scope).or_else(|| stored_at(&json!({}))).unwrap_or_else(|| def["default"].clone());
    let (form_value, form_old, form_reason) = match &refused {
        Some((f, _, _)) => (f.value.clone(), f.old_value.clone(), f.reason.clone()),
        None => (String::new(), stored.to_string(), String::new()),
    };
    let kp = query_encode(key);
    html_page(layout(
        key,
        Some(caller),
        html! {
            @if q.done.as_deref() == Some("written") { p.ok role="status" { "Written." } }
            dl.def {
                dt { "Type" } dd { (def["type"].as_str().unwrap_or("")) }
                dt { "Bounds" } dd { code { (def["bounds"]) } }
                dt { "Default" } dd { code { (scalar(&def["default"])) } }
                dt { "Needs approval" } dd.approval { (def["approvals_required"]) }
                dt { "Description" } dd { (def["description"].as_str().unwrap_or("")) }
            }
            section #resolve {
                h2 { "What does this caller get" }
                form method="get" action={ "/console/keys/" (kp) } {
                    @for (name, v) in ids {
                        label for=(name) { (name) }
                        input id=(name) name=(name) value=(v.clone().unwrap_or_default());
                    }
                    button type="submit" { "Resolve" }
                }
                @if rs.is_success() {
                    p { "Value: " code #resolved-value { (resolved["value"]) } " from level "
                        strong #resolved-level { (resolved["source"]["level"].as_str().unwrap_or("default")) } }
                    table #explain {
                        thead { tr { th { "Level" } th { "Scope id" } th { "State" } th { "Value" } th { "Won" } } }
                        tbody { @for e in resolved["explain"].as_array().into_iter().flatten() {
                            tr { td { (e["level"].as_str().unwrap_or("")) } td { (scalar(&e["scope_id"])) }
                                 td { (e["state"].as_str().unwrap_or("")) } td { code { (scalar(&e["value"])) } }
                                 td { @if e["won"] == true { "✔" } } }
                        } }
                    }
                } @else {
                    (error_box(resolved["code"].as_str().unwrap_or("error"), resolved["message"].as_str().unwrap_or(""), &resolved["details"]))
                }
            }
            section #overrides {
                h2 { "Values by scope" }
                @if os.is_success() {
                    table {
                        thead { tr { th { "Level" } th { "Scope" } th { "Value" } th { "Actor" } th { "Reason" } th { "Since" } th { "Scheduled" } } }
                        tbody { @for o in overrides["overrides"].as_array().into_iter().flatten() {
                            @let cur = &o["current"];
                            tr { td { (o["level"].as_str().unwrap_or("")) } td { (o["scope"]) }
                                 td.value { code { (scalar(&cur["value"])) } } td { (cur["actor"].as_str().unwrap_or("")) }
                                 td { (cur["reason"].as_str().unwrap_or("")) } td { (cur["effective_at"].as_str().unwrap_or("")) }
                                 td { (o["scheduled"].as_array().map(|s| s.len()).unwrap_or(0)) } }
                        } }
                    }
                } @else {
                    p.note { "Listing every scope's value needs the auditor role ("
                        (overrides["code"].as_str().unwrap_or("")) ")." }
                }
            }
            @if caller.role.allows(Role::Admin) {
                section #write {
                    h2 { "Set or remove a value" }
                    form method="get" action={ "/console/keys/" (kp) } {
                        label for="pick-level" { "Scope level" }
                        select id="pick-level" name="level" {
                            @for l in std::iter::once("global").chain(LEVELS) {
                                option value=(l) selected[l == level] { (l) }
                            }
                        }
                        label for="pick-scope" { "Scope id" }
                        input id="pick-scope" name="scope_id" value=(scope_id);
                        button type="submit" { "Load the value stored there" }
                    }
                    @if let Some((_, s, body)) = &refused {
                        div #write-error { (error_box(body["code"].as_str().unwrap_or("error"),
                            &format!("{} {}", s.as_u16(), body["message"].as_str().unwrap_or("")), &body["details"])) }
                    }
                    form #write-form method="post" action={ "/console/keys/" (kp) "/write" } {
                        input type="hidden" name="csrf" value=(caller.csrf);
                        input type="hidden" name="level" value=(level);
                        input type="hidden" name="scope_id" value=(scope_id);
                        p { "At " strong { (level) } @if level != "global" { " " code { (scope_id) } } }
                        label for="value" { "New value (JSON; plain text is a string)" }
                        input id="value" name="value" value=(form_value);
                        label for="old_value" { "Old value (what you expect to replace)" }
                        input id="old_value" name="old_value" value=(form_old);
                        label for="reason" { "Reason" }
                        input id="reason" name="reason" value=(form_reason) required;
                        label { input type="checkbox" name="remove" value="1"; " Remove the value at this scope" }
                        button type="submit" { "Write" }
                    }
                }
            }
        },
    ))
    .with_status(status)
}

trait WithStatus {
    fn with_status(self, status: StatusCode) -> Response;
}

impl WithStatus for Response {
    fn with_status(mut self, status: StatusCode) -> Response {
        *self.status_mut() = status;
        self
    }
}

async fn write(
    State(c): State<Console>,
    headers: HeaderMap,
    Path(key): Path<String>,
    Form(form): Form<WriteForm>,
) -> Response {
    let caller = match c.poster(&headers, form.csrf.as_deref()).await {
        Ok(caller) => caller,
        Err(r) => return r,
    };
    let value = if form.remove.is_some() { Json::Null } else { form_json(&form.value) };
    let body = json!({
        "key": key,
        "scope": scope_json(&form.level, &form.scope_id),
        "value": value,
        "old_value": form_json(&form.old_value),
        "reason": form.reason,
    });
    let (status, answer) = c.api(Method::POST, "/api/v1/admin/policy-values", &caller.token, Some(body)).await;
    let kp = query_encode(&key);
    let at = format!("level={}&scope_id={}", query_encode(&form.level), query_encode(&form.scope_id));
    if status == StatusCode::ACCEPTED {
        let id = answer["change_request"]["id"].as_str().or(answer["id"].as_str()).unwrap_or("");
        return redirect(&format!("/console/change-requests/{}", query_encode(id)));
    }
    if status.is_success() {
        return redirect(&format!("/console/keys/{kp}?{at}&done=written"));
    }
    let q = KeyQuery { level: Some(form.level.clone()), scope_id: Some(form.scope_id.clone()), ..KeyQuery::default() };
    render_key(&c, &caller, &key, &q, Some((&form, status, answer)), status).await
}

#[derive(Deserialize)]
struct ListQuery {
    state: Option<String>,
}

async fn change_requests(State(c): State<Console>, headers: HeaderMap, Query(lq): Query<ListQuery>) -> Response {
    let caller = match c.caller(&headers).await {
        Ok(caller) => caller,
        Err(r) => return r,
    };
    let mut uri = "/api/v1/admin/change-requests?limit=100".to_string();
    if let Some(s) = lq.state.as_deref().filter(|s| !s.is_empty()) {
        uri.push_str(&format!("&state={}", query_encode(s)));
    }
    let (status, body) = c.api(Method::GET, &uri, &caller.token, None).await;
    if !status.is_success() {
        return api_error(status, &body);
    }
    html_page(layout(
        "Change requests",
        Some(&caller),
        html! {
            table #change-requests {
                thead { tr { th { "#" } th { "State" } th { "Key" } th { "Scope" } th { "Value" } th { "Author" } th { "Reason" } } }
                tbody { @for r in body["change_requests"].as_array().into_iter().flatten() {
                    tr { td { a href={ "/console/change-requests/" (r["id"].as_str().unwrap_or("")) } { (r["number"]) } }
                         td.state { (r["state"].as_str().unwrap_or("")) } td { (r["key"].as_str().unwrap_or("")) }
                         td { (r["scope"]) } td { code { (scalar(&r["value"])) } }
                         td { (r["author"].as_str().unwrap_or("")) } td { (r["reason"].as_str().unwrap_or("")) } }
                } }
            }
        },
    ))
}

async fn change_request(State(c): State<Console>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let caller = match c.caller(&headers).await {
        Ok(caller) => caller,
        Err(r) => return r,
    };
    render_change_request(&c, &caller, &id, None).await
}

async fn render_change_request(
    c: &Console,
    caller: &Caller,
    id: &str,
    refused: Option<(StatusCode, Json)>,
) -> Response {
    let (status, r) =
        c.api(Method::GET, &format!("/api/v1/admin/change-requests/{}", query_encode(id)), &caller.token, None).await;
    if !status.is_success() {
        return api_error(status, &r);
    }
    let pending = r["state"] == "pending";
    let author = r["author"].as_str() == Some(caller.name.as_str());
    let page = layout(
        &format!("Change request {}", r["number"]),
        Some(caller),
        html! {
            @if let Some((s, body)) = &refused {
                (error_box(body["code"].as_str().unwrap_or("error"),
                    &format!("{} {}", s.as_u16(), body["message"].as_str().unwrap_or("")), &body["details"]))
            }
            dl.def {
                dt { "State" } dd #cr-state { (r["state"].as_str().unwrap_or("")) }
                dt { "Key" } dd { a href={ "/console/keys/" (query_encode(r["key"].as_str().unwrap_or(""))) } { (r["key"].as_str().unwrap_or("")) } }
                dt { "Scope" } dd { (r["scope"]) }
                dt { "Proposed value" } dd { code { (scalar(&r["value"])) } }
                dt { "Replaces" } dd { code { (scalar(&r["old_value"])) } }
                dt { "Current value" } dd { code { (scalar(&r["current_value"])) } }
                dt { "Author" } dd { (r["author"].as_str().unwrap_or("")) }
                dt { "Reason" } dd { (r["reason"].as_str().unwrap_or("")) }
                dt { "Approvals" } dd { (r["approvals"].as_array().map(|a| a.len()).unwrap_or(0)) " of " (r["approvals_required"]) }
                @if let Some(d) = r["decision_reason"].as_str() { dt { "Decision" } dd { (d) } }
            }
            @if pending && caller.role.allows(Role::Admin) {
                form #decide method="post" action={ "/console/change-requests/" (query_encode(id)) "/decide" } {
                    input type="hidden" name="csrf" value=(caller.csrf);
                    label for="reason" { "Reason" }
                    input id="reason" name="reason" required;
                    @if !author {
                        button type="submit" name="verb" value="approve" { "Approve" }
                    }
                    button type="submit" name="verb" value="reject" { "Reject" }
                    @if author {
                        button type="submit" name="verb" value="withdraw" { "Withdraw" }
                    }
                }
            }
        },
    );
    match &refused {
        Some((s, _)) => html_page(page).with_status(*s),
        None => html_page(page),
    }
}

#[derive(Deserialize)]
struct Decision {
    csrf: Option<String>,
    verb: Option<String>,
    #[serde(default)]
    reason: String,
}

async fn decide(
    State(c): State<Console>,
    headers: HeaderMap,
    Path((id, _)): Path<(String, String)>,
    Form(form): Form<Decision>,
) -> Response {
    let caller = match c.poster(&headers, form.csrf.as_deref()).await {
        Ok(caller) => caller,
        Err(r) => return r,
    };
    let verb = match form.verb.as_deref() {
        Some(v @ ("approve" | "reject" | "withdraw")) => v,
        _ => return page_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", "approve, reject or withdraw"),
    };
    let uri = format!("/api/v1/admin/change-requests/{}/{verb}", query_encode(&id));
    let (status, body) = c.api(Method::POST, &uri, &caller.token, Some(json!({ "reason": form.reason }))).await;
    if status.is_success() {
        return redirect(&format!("/console/change-requests/{}", query_encode(&id)));
    }
    render_change_request(&c, &caller, &id, Some((status, body))).await
}

async fn audit(State(c): State<Console>, headers: HeaderMap, Query(filters): Query<Vec<(String, String)>>) -> Response {
    let caller = match c.caller(&headers).await {
        Ok(caller) => caller,
        Err(r) => return r,
    };
    let names = ["policy_key", "actor", "action", "outcome", "cursor"];
    let mut uri = "/api/v1/admin/audit-logs?limit=50".to_string();
    for (k, v) in filters.iter().filter(|(k, v)| names.contains(&k.as_str()) && !v.is_empty()) {
        uri.push_str(&format!("&{k}={}", query_encode(v)));
    }
    let (status, body) = c.api(Method::GET, &uri, &caller.token, None).await;
    if !status.is_success() {
        return api_error(status, &body);
    }
    let (_, verify) = c.api(Method::GET, "/api/v1/admin/audit-logs/verify", &caller.token, None).await;
    let value_of = |k: &str| filters.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_default();
    html_page(layout(
        "Audit log",
        Some(&caller),
        html! {
            p #chain { "Hash chain: " code { (verify) } }
            form.search method="get" action="/console/audit" {
                @for n in &names[..4] {
                    label for=(n) { (n) }
                    input id=(n) name=(n) value=(value_of(n));
                }
                button type="submit" { "Filter" }
            }
            table #audit {
                thead { tr { th { "Seq" } th { "When" } th { "Actor" } th { "Action" } th { "Outcome" } th { "Key" } th { "Scope" } th { "Details" } } }
                tbody { @for r in body["items"].as_array().into_iter().flatten() {
                    tr { td { (r["seq"]) } td { (r["occurred_at"].as_str().unwrap_or("")) } td { (r["actor"].as_str().unwrap_or("")) }
                         td { (r["action"].as_str().unwrap_or("")) } td { (r["outcome"].as_str().unwrap_or("")) " " (r["code"].as_str().unwrap_or("")) }
                         td { (r["policy_key"].as_str().unwrap_or("")) }
                         td { (r["scope_level"].as_str().unwrap_or("")) " " (r["scope_id"].as_str().unwrap_or("")) }
                         td { code { (r["metadata"]) } } }
                } }
            }
            @if let Some(next) = body["next_cursor"].as_str() {
                a href={ "/console/audit?cursor=" (query_encode(next)) } { "Older" }
            }
        },
    ))
}
