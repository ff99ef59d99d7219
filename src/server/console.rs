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
use axum::extract::{FromRequestParts, Path, Query, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use axum::http::request::Parts;
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
        .route("/console/keys/{key}/cancel", post(cancel))
        .route("/console/keys/{key}/history", get(history))
        .route("/console/change-requests", get(change_requests))
        .route("/console/change-requests/{id}", get(change_request))
        .route("/console/change-requests/{id}/{verb}", post(decide))
        .route("/console/audit", get(audit))
        .route("/console/audit/export", get(export))
        .route("/console/audit/{seq}", get(audit_record))
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

/// The signed-in caller of a page that only reads, taken after the page's
/// path and query; without a session, the sign-in page instead.
impl FromRequestParts<Console> for Caller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, c: &Console) -> Result<Caller, Response> {
        c.caller(&parts.headers).await
    }
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

    /// Calls the API as `token`: its whole answer, body unread.
    async fn api_raw(&self, method: Method, uri: &str, token: &str, body: Option<Json>) -> Response {
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
            let refusal = json!({"code": "invalid_request", "message": "bad request"});
            return (StatusCode::BAD_REQUEST, axum::Json(refusal)).into_response();
        };
        let Ok(response) = self.api.clone().oneshot(req).await;
        response
    }

    /// Calls the API as `token`: the status and the JSON answer.
    async fn api(&self, method: Method, uri: &str, token: &str, body: Option<Json>) -> (StatusCode, Json) {
        let response = self.api_raw(method, uri, token, body).await;
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
            @if details.as_object().is_some_and(|d| d.keys().any(|k| k != "field")) && details.get("current_value").is_none() {
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

/// A key's approval rule in words: "no", "needs 1 approval", "needs 2 approvals".
fn approval(required: &Json) -> String {
    match required.as_i64().unwrap_or(0) {
        0 => "no".to_string(),
        1 => "needs 1 approval".to_string(),
        n => format!("needs {n} approvals"),
    }
}

/// A scope id as shown: the global level's empty id (and a missing one) as a dash.
fn scope_id_text(v: &Json) -> String {
    match v.as_str() {
        Some("") | None => "—".to_string(),
        Some(id) => id.to_string(),
    }
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

async fn catalog(State(c): State<Console>, Query(search): Query<Search>, caller: Caller) -> Response {
    let (status, body) = c.api(Method::GET, "/api/v1/policy-keys", &caller.token, None).await;
    if !status.is_success() {
        return api_error(status, &body);
    }
    // The global value of every key: the replica's snapshot for no scope.
    let (status, snapshot) = c.api(Method::GET, "/api/v1/policy-values/snapshot", &caller.token, None).await;
    if !status.is_success() {
        return api_error(status, &snapshot);
    }
    // Overrides and scheduled changes of every key, in one query (auditor).
    let (cs, counts) = c.api(Method::GET, "/api/v1/admin/policy-values/counts", &caller.token, None).await;
    let count = |key: &str, what: &str| -> Markup {
        if !cs.is_success() {
            return html! { span.note title="needs the auditor role" { "—" } };
        }
        let n = counts["keys"][key][what].as_i64().unwrap_or(0);
        html! { (n) }
    };
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
            @if !cs.is_success() {
                p.note { "Counting overrides and scheduled changes needs the auditor role ("
                    (counts["code"].as_str().unwrap_or("")) ")." }
            }
            div.table-wrap {
                table.cards #catalog {
                    thead { tr { th { "Key" } th { "Type" } th { "Bounds" } th { "Default" } th { "Global value" }
                        th { "Overrides" } th { "Scheduled" } th { "Approval" } } }
                    tbody {
                        @for k in &keys {
                            @let name = k["key"].as_str().unwrap_or("");
                            @let global = &snapshot["values"][name];
                            tr data-key=(name) {
                                td.key { a href={ "/console/keys/" (query_encode(name)) } { (name) } }
                                td data-label="Type" { (k["type"].as_str().unwrap_or("")) }
                                td.bounds.clip data-label="Bounds" { code { (k["bounds"]) } }
                                td.clip data-label="Default" { code { (scalar(&k["default"])) } }
                                td.global.clip data-label="Global value" {
                                    code { (scalar(&global["value"])) }
                                    @if global["source"]["level"] == "default" { " " span.note { "(default)" } }
                                }
                                td.overrides data-label="Overrides" { (count(name, "overrides")) }
                                td.scheduled data-label="Scheduled" { (count(name, "scheduled")) }
                                td.approval data-label="Approval" { (approval(&k["approvals_required"])) }
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

/// What the write form held, to show again with a preview or a refusal.
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
    effective_at: String,
    #[serde(default)]
    remove: Option<String>,
    /// `preview` (the default) or `submit`.
    #[serde(default)]
    intent: Option<String>,
    /// The change the shown preview was for (`WriteForm::fingerprint`).
    #[serde(default)]
    previewed: Option<String>,
}

impl WriteForm {
    /// The change the form describes, to tell whether it is the one previewed.
    fn fingerprint(&self) -> String {
        json!([self.level, self.scope_id, self.value, self.old_value, self.reason, self.effective_at, self.remove])
            .to_string()
    }

    /// The API's write body.
    fn body(&self, key: &str) -> Json {
        let value = if self.remove.is_some() { Json::Null } else { form_json(&self.value) };
        let mut body = json!({
            "key": key,
            "scope": scope_json(&self.level, &self.scope_id),
            "value": value,
            "old_value": form_json(&self.old_value),
            "reason": self.reason,
        });
        if !self.effective_at.trim().is_empty() {
            body["effective_at"] = json!(self.effective_at.trim());
        }
        body
    }
}

/// What the key page shows besides the key: a fresh form, a write's preview,
/// or a refusal of a write or of a cancel.
enum KeyView<'a> {
    Fresh,
    Previewed(&'a WriteForm, Json),
    Refused(&'a WriteForm, StatusCode, Json),
    CancelRefused(StatusCode, Json),
}

/// The write form's field an API refusal concerns, if any.
fn field_of(code: &str, details: &Json) -> &'static str {
    match details["field"].as_str() {
        Some("value") => "value",
        Some("old_value") => "old_value",
        Some("reason") => "reason",
        Some("effective_at") => "effective_at",
        Some("scope") => "scope",
        _ => match code {
            "stale_old_value" => "old_value",
            "out_of_bounds" | "type_mismatch" => "value",
            "invalid_reason" => "reason",
            "effective_at_in_past" | "invalid_time" => "effective_at",
            "invalid_scope" => "scope",
            "not_overridden" => "remove",
            _ => "",
        },
    }
}

fn refusal_box(id: &str, status: StatusCode, body: &Json) -> Markup {
    html! {
        div id=(id) {
            (error_box(body["code"].as_str().unwrap_or("error"),
                &format!("{} {}", status.as_u16(), body["message"].as_str().unwrap_or("")), &body["details"]))
        }
    }
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

    Path(key): Path<String>,
    Query(q): Query<KeyQuery>,
    caller: Caller,
) -> Response {
    render_key(&c, &caller, &key, &q, KeyView::Fresh, StatusCode::OK).await
}

/// A scope as the console's query string names it (`level=…&scope_id=…`).
fn scope_query(level: &str, scope_id: &str) -> String {
    format!("level={}&scope_id={}", query_encode(level), query_encode(scope_id))
}

/// A scope as the API's query string names it (nothing for global).
fn api_scope_query(level: &str, scope_id: &str) -> String {
    match level {
        "global" | "" => String::new(),
        "plan" => format!("&plan={}", query_encode(scope_id)),
        other => format!("&{other}_id={}", query_encode(scope_id)),
    }
}

/// `{"org_id": "acme"}` as `org acme`; `{}` as `global`.
fn scope_words(scope: &Json) -> String {
    match scope.as_object().and_then(|o| o.iter().next()) {
        Some((k, v)) => format!("{} {}", k.trim_end_matches("_id"), v.as_str().unwrap_or("")),
        None => "global".to_string(),
    }
}

/// A labelled input of the write form, with the API's refusal beside it
/// when it concerns this field.
fn field(name: &str, label: &str, value: &str, error: Option<(StatusCode, &Json)>, required: bool) -> Markup {
    let error_id = format!("{name}-error");
    html! {
        label for=(name) { (label) }
        @if let Some((status, body)) = error {
            input id=(name) name=(name) value=(value) required[required] aria-invalid="true" aria-describedby=(error_id);
            (refusal_box(&error_id, status, body))
        } @else {
            input id=(name) name=(name) value=(value) required[required];
        }
    }
}

async fn render_key(
    c: &Console,
    caller: &Caller,
    key: &str,
    q: &KeyQuery,
    view: KeyView<'_>,
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
    let (level, scope_id) = match &view {
        KeyView::Previewed(f, _) | KeyView::Refused(f, _, _) => (f.level.clone(), f.scope_id.clone()),
        _ => (q.level.clone().unwrap_or_else(|| "global".to_string()), q.scope_id.clone().unwrap_or_default()),
    };
    let scope = scope_json(&level, &scope_id);
    // What a write replaces: the value stored at that exact scope, else the
    // global value now (an admin-set one, else the default); docs/model.md.
    let stored_at = |scope: &Json| {
        overrides["overrides"]
            .as_array()
            .and_then(|a| a.iter().find(|o| &o["scope"] == scope && o["current"].is_object()))
            .map(|o| o["current"]["value"].clone())
    };
    let global = stored_at(&json!({})).filter(|v| !v.is_null()).unwrap_or_else(|| def["default"].clone());
    let stored = stored_at(&scope).filter(|v| !v.is_null()).unwrap_or_else(|| global.clone());
    let blank = WriteForm { old_value: stored.to_string(), ..WriteForm::default() };
    let (form, refusal, preview) = match &view {
        KeyView::Previewed(f, p) => (*f, None, Some(p)),
        KeyView::Refused(f, s, b) => (*f, Some((*s, b)), None),
        _ => (&blank, None, None),
    };
    let refused_field = refusal.map(|(_, b)| field_of(b["code"].as_str().unwrap_or(""), &b["details"]));
    let error_for = |name: &str| refusal.filter(|_| refused_field == Some(name));
    let scheduled: Vec<(&Json, &Json)> = overrides["overrides"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|o| o["scheduled"].as_array().into_iter().flatten().map(move |r| (&o["scope"], r)))
        .collect();
    let kp = query_encode(key);
    let admin = caller.role.allows(Role::Admin);
    html_page(layout(
        key,
        Some(caller),
        html! {
            @if q.done.as_deref() == Some("written") { p.ok role="status" { "Written." } }
            @if q.done.as_deref() == Some("unchanged") { p.ok role="status" { "Unchanged: the value was already stored here." } }
            @if q.done.as_deref() == Some("cancelled") { p.ok role="status" { "Cancelled." } }
            dl.def {
                dt { "Type" } dd { (def["type"].as_str().unwrap_or("")) }
                dt { "Bounds" } dd { code { (def["bounds"]) } }
                dt { "Default" } dd { code { (scalar(&def["default"])) } }
                @if os.is_success() { dt { "Global value" } dd #global-value { code { (scalar(&global)) } } }
                dt { "Approval" } dd.approval { (approval(&def["approvals_required"])) }
                dt { "Description" } dd { (def["description"].as_str().unwrap_or("")) }
            }
            section #resolve {
                h2 { "What does this caller get" }
                form.ids method="get" action={ "/console/keys/" (kp) } {
                    @for (name, v) in ids {
                        div { label for=(name) { (name) }
                              input id=(name) name=(name) value=(v.clone().unwrap_or_default()); }
                    }
                    button type="submit" { "Resolve" }
                }
                @if rs.is_success() {
                    p { "Value: " code #resolved-value { (resolved["value"]) } " from level "
                        strong #resolved-level { (resolved["source"]["level"].as_str().unwrap_or("default")) } }
                    div.table-wrap { table #explain {
                        thead { tr { th { "Level" } th { "Scope id" } th { "State" } th { "Value" } th { "Won" } } }
                        tbody { @for e in resolved["explain"].as_array().into_iter().flatten() {
                            tr { td { (e["level"].as_str().unwrap_or("")) } td { (scope_id_text(&e["scope_id"])) }
                                 td { (e["state"].as_str().unwrap_or("")) } td { code { (scalar(&e["value"])) } }
                                 td { @if e["won"] == true { "✔" } } }
                        } }
                    } }
                } @else {
                    (error_box(resolved["code"].as_str().unwrap_or("error"), resolved["message"].as_str().unwrap_or(""), &resolved["details"]))
                }
            }
            section #overrides {
                h2 { "Values by scope" }
                @if os.is_success() {
                    p { a #global-history href={ "/console/keys/" (kp) "/history?" (scope_query("global", "")) } { "History of the global value" } }
                    @if !overrides["overrides"].as_array().is_some_and(|a| !a.is_empty()) {
                        p.note #no-overrides { "No scope holds a value or has a change scheduled." }
                    }
                    div.table-wrap { table {
                        thead { tr { th { "Level" } th { "Scope" } th { "Value" } th { "Actor" } th { "Reason" } th { "Since" } th { "Scheduled" } th { "History" } } }
                        tbody { @for o in overrides["overrides"].as_array().into_iter().flatten() {
                            @let cur = &o["current"];
                            @let sid = o["scope"].as_object().and_then(|m| m.values().next()).and_then(|v| v.as_str()).unwrap_or("");
                            tr { td { (o["level"].as_str().unwrap_or("")) } td { (scope_words(&o["scope"])) }
                                 td.value { code { (scalar(&cur["value"])) } } td { (cur["actor"].as_str().unwrap_or("")) }
                                 td { (cur["reason"].as_str().unwrap_or("")) } td { (cur["effective_at"].as_str().unwrap_or("")) }
                                 td { (o["scheduled"].as_array().map(|s| s.len()).unwrap_or(0)) }
                                 td { a.history href={ "/console/keys/" (kp) "/history?" (scope_query(o["level"].as_str().unwrap_or(""), sid)) } { "History" } } }
                        } }
                    } }
                } @else {
                    p.note { "Listing every scope's value needs the auditor role ("
                        (overrides["code"].as_str().unwrap_or("")) ")." }
                }
            }
            @if os.is_success() {
                section #scheduled {
                    h2 { "Scheduled changes" }
                    @if let KeyView::CancelRefused(s, body) = &view { (refusal_box("cancel-error", *s, body)) }
                    @if scheduled.is_empty() {
                        p.note { "None." }
                    } @else {
                        div.table-wrap { table {
                            thead { tr { th { "At" } th { "Scope" } th { "Value" } th { "Actor" } th { "Reason" }
                                @if admin { th { "Cancel" } } } }
                            tbody { @for (i, (scope, r)) in scheduled.iter().enumerate() {
                                @let id = r["id"].as_str().unwrap_or("");
                                tr data-id=(id) {
                                    td { (r["effective_at"].as_str().unwrap_or("")) } td { (scope_words(scope)) }
                                    td { code { (scalar(&r["value"])) } @if r["value"].is_null() { " (removal)" } }
                                    td { (r["actor"].as_str().unwrap_or("")) } td { (r["reason"].as_str().unwrap_or("")) }
                                    @if admin { td {
                                        form.cancel method="post" action={ "/console/keys/" (kp) "/cancel" } {
                                            input type="hidden" name="csrf" value=(caller.csrf);
                                            input type="hidden" name="id" value=(id);
                                            label for={ "cancel-reason-" (i) } { "Reason to cancel" }
                                            input id={ "cancel-reason-" (i) } name="reason" required;
                                            button type="submit" { "Cancel this change" }
                                        }
                                    } }
                                }
                            } }
                        } }
                    }
                }
            }
            @if admin {
                section #write {
                    h2 { "Set or remove a value" }
                    form.ids method="get" action={ "/console/keys/" (kp) } {
                        div { label for="pick-level" { "Scope level" }
                        select id="pick-level" name="level" {
                            @for l in std::iter::once("global").chain(LEVELS) {
                                option value=(l) selected[l == level] { (l) }
                            }
                        } }
                        div { label for="pick-scope" { "Scope id" }
                              input id="pick-scope" name="scope_id" value=(scope_id); }
                        button type="submit" { "Load the value stored there" }
                    }
                    @if let Some((s, body)) = refusal.filter(|_| matches!(refused_field, Some("" | "scope" | "remove"))) {
                        (refusal_box("write-error", s, body))
                    }
                    @if let Some(p) = preview {
                        div #preview role="status" {
                            h3 { "Preview" }
                            p { "At " strong { (scope_words(&p["scope"])) } ": "
                                code #preview-before { (scalar(&p["before"])) } " → " code #preview-after { (scalar(&p["after"])) }
                                @if let Some(at) = p["effective_at"].as_str() { ", from " (at) } }
                            p #preview-outcome { @if p["outcome"] == "change_request" {
                                "Submitting opens a change request: it needs " (p["approvals_required"]) " approval(s) before it applies."
                            } @else if p["outcome"] == "unchanged" {
                                "This value is already stored here: submitting changes nothing."
                            } @else { "Submitting writes it at once." } }
                            @let shadowed = p["shadowed_by"]["total"].as_i64().unwrap_or(0);
                            @if shadowed > 0 {
                                p { (shadowed) " more specific override(s) keep their own value: "
                                    @for s in p["shadowed_by"]["first"].as_array().into_iter().flatten() {
                                        code { (s["level"].as_str().unwrap_or("")) " " (s["scope_id"].as_str().unwrap_or("")) " = " (s["value"]) } " "
                                    } }
                            }
                        }
                    }
                    form #write-form method="post" action={ "/console/keys/" (kp) "/write" } {
                        input type="hidden" name="csrf" value=(caller.csrf);
                        input type="hidden" name="level" value=(level);
                        input type="hidden" name="scope_id" value=(scope_id);
                        p { "At " strong { (level) } @if level != "global" { " " code { (scope_id) } } }
                        (field("value", "New value (JSON; plain text is a string)", &form.value, error_for("value"), false))
                        (field("old_value", "Old value (what you expect to replace)", &form.old_value, error_for("old_value"), false))
                        (field("reason", "Reason", &form.reason, error_for("reason"), true))
                        (field("effective_at", "Effective at (RFC 3339; empty: now)", &form.effective_at, error_for("effective_at"), false))
                        label.check { input type="checkbox" name="remove" value="1" checked[form.remove.is_some()]; " Remove the value at this scope" }
                        @if preview.is_some() {
                            input type="hidden" name="previewed" value=(form.fingerprint());
                        }
                        div.buttons {
                            button #preview-button type="submit" name="intent" value="preview" { "Preview" }
                            @if preview.is_some() {
                                button #submit-button type="submit" name="intent" value="submit" { "Submit" }
                            }
                        }
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

/// The write form: `intent=preview` asks the API's preview and shows it
/// with a Submit button; `intent=submit` of the change just previewed
/// writes it. A submit whose fields differ from the preview's is previewed
/// again instead of written.
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
    let q = KeyQuery { level: Some(form.level.clone()), scope_id: Some(form.scope_id.clone()), ..KeyQuery::default() };
    let previewed = form.previewed.as_deref() == Some(form.fingerprint().as_str());
    if form.intent.as_deref() != Some("submit") || !previewed {
        let (status, answer) =
            c.api(Method::POST, "/api/v1/admin/policy-values/preview", &caller.token, Some(form.body(&key))).await;
        let view = if status.is_success() {
            KeyView::Previewed(&form, answer)
        } else {
            KeyView::Refused(&form, status, answer)
        };
        let shown = if status.is_success() { StatusCode::OK } else { status };
        return render_key(&c, &caller, &key, &q, view, shown).await;
    }
    let (status, answer) =
        c.api(Method::POST, "/api/v1/admin/policy-values", &caller.token, Some(form.body(&key))).await;
    let kp = query_encode(&key);
    let at = scope_query(&form.level, &form.scope_id);
    if status == StatusCode::ACCEPTED {
        let id = answer["change_request"]["id"].as_str().or(answer["id"].as_str()).unwrap_or("");
        return redirect(&format!("/console/change-requests/{}", query_encode(id)));
    }
    if status.is_success() {
        let done = if answer["unchanged"] == true { "unchanged" } else { "written" };
        return redirect(&format!("/console/keys/{kp}?{at}&done={done}"));
    }
    render_key(&c, &caller, &key, &q, KeyView::Refused(&form, status, answer), status).await
}

#[derive(Deserialize)]
struct CancelForm {
    csrf: Option<String>,
    id: String,
    #[serde(default)]
    reason: String,
}

/// Cancels a scheduled change through the API's cancel endpoint.
async fn cancel(
    State(c): State<Console>,
    headers: HeaderMap,
    Path(key): Path<String>,
    Form(form): Form<CancelForm>,
) -> Response {
    let caller = match c.poster(&headers, form.csrf.as_deref()).await {
        Ok(caller) => caller,
        Err(r) => return r,
    };
    let uri = format!("/api/v1/admin/policy-values/{}/cancel", query_encode(&form.id));
    let (status, answer) = c.api(Method::POST, &uri, &caller.token, Some(json!({ "reason": form.reason }))).await;
    if status.is_success() {
        return redirect(&format!("/console/keys/{}?done=cancelled", query_encode(&key)));
    }
    let view = KeyView::CancelRefused(status, answer);
    render_key(&c, &caller, &key, &KeyQuery::default(), view, status).await
}

#[derive(Deserialize)]
struct ScopeQuery {
    #[serde(default)]
    level: String,
    #[serde(default)]
    scope_id: String,
}

/// A key's history at one scope: before → after, who, when, why, each with
/// a link to its audit record.
async fn history(
    State(c): State<Console>,

    Path(key): Path<String>,
    Query(sq): Query<ScopeQuery>,
    caller: Caller,
) -> Response {
    let level = if sq.level.is_empty() { "global" } else { sq.level.as_str() };
    let scope = api_scope_query(level, &sq.scope_id);
    let kp = query_encode(&key);
    let (status, body) = c
        .api(
            Method::GET,
            &format!("/api/v1/admin/policy-values/history?key={kp}{scope}&limit=200"),
            &caller.token,
            None,
        )
        .await;
    if !status.is_success() {
        return api_error(status, &body);
    }
    // The audit records of those changes (before and after, the seq to link).
    let (status, audit) = c
        .api(
            Method::GET,
            &format!("/api/v1/admin/audit-logs?policy_key={kp}{scope}&outcome=success&limit=1000"),
            &caller.token,
            None,
        )
        .await;
    if !status.is_success() {
        return api_error(status, &audit);
    }
    let records: HashMap<&str, &Json> =
        audit["items"].as_array().into_iter().flatten().filter_map(|r| Some((r["id"].as_str()?, r))).collect();
    let title = format!("History of {key} at {}", scope_words(&scope_json(level, &sq.scope_id)));
    html_page(layout(
        &title,
        Some(&caller),
        html! {
            p { a href={ "/console/keys/" (kp) } { "Back to " (key) } }
            div.table-wrap { table #history {
                thead { tr { th { "When" } th { "Change" } th { "Who" } th { "Why" } th { "Kind" } th { "Audit record" } } }
                tbody { @for h in body["changes"].as_array().into_iter().flatten() {
                    @let record = h["audit_id"].as_str().and_then(|id| records.get(id));
                    tr {
                        td { (h["effective_at"].as_str().unwrap_or("")) }
                        td.change { @match record {
                            Some(r) => { code.before { (scalar(&r["metadata"]["old_value"])) } " → " code.after { (scalar(&h["value"])) } }
                            None => { "→ " code.after { (scalar(&h["value"])) } }
                        } }
                        td { (h["actor"].as_str().unwrap_or("")) }
                        td.reason { (h["reason"].as_str().unwrap_or("")) }
                        td { (h["kind"].as_str().unwrap_or(""))
                             @if !h["cancelled_by"].is_null() { " (cancelled)" } }
                        td { @if let Some(r) = record {
                            a.audit-link href={ "/console/audit/" (r["seq"]) } { "#" (r["seq"]) }
                        } }
                    }
                } }
            } }
        },
    ))
}

#[derive(Deserialize)]
struct ListQuery {
    state: Option<String>,
    before: Option<i64>,
}

/// The change-request lists: pending, scheduled, and the closed states.
const TABS: [(&str, &str); 7] = [
    ("pending", "Pending"),
    ("scheduled", "Scheduled"),
    ("applied", "Applied"),
    ("rejected", "Rejected"),
    ("withdrawn", "Withdrawn"),
    ("expired", "Expired"),
    ("conflicted", "Conflicted"),
];
/// Change requests a page.
const REQUESTS_PAGE: usize = 25;

async fn change_requests(State(c): State<Console>, Query(lq): Query<ListQuery>, caller: Caller) -> Response {
    let state = lq.state.as_deref().filter(|s| !s.is_empty()).unwrap_or("pending");
    let mut uri = format!("/api/v1/admin/change-requests?limit={REQUESTS_PAGE}");
    if state != "all" {
        uri.push_str(&format!("&state={}", query_encode(state)));
    }
    if let Some(before) = lq.before {
        uri.push_str(&format!("&before={before}"));
    }
    let (status, body) = c.api(Method::GET, &uri, &caller.token, None).await;
    if !status.is_success() {
        return api_error(status, &body);
    }
    let sq = query_encode(state);
    html_page(layout(
        "Change requests",
        Some(&caller),
        html! {
            nav.tabs aria-label="Change request states" {
                @for (s, name) in TABS.iter().chain([("all", "All")].iter()) {
                    @if *s == state { strong aria-current="page" { (name) } }
                    @else { a href={ "/console/change-requests?state=" (s) } { (name) } }
                    @if *s == "scheduled" { span.sep { " · closed: " } }
                }
            }
            div.table-wrap { table #change-requests {
                thead { tr { th { "#" } th { "State" } th { "Key" } th { "Scope" } th { "Value" } th { "Author" } th { "Reason" } th { "Created" } } }
                tbody { @for r in body["change_requests"].as_array().into_iter().flatten() {
                    tr { td { a href={ "/console/change-requests/" (r["id"].as_str().unwrap_or("")) } { (r["number"]) } }
                         td.state { (r["state"].as_str().unwrap_or("")) } td { (r["key"].as_str().unwrap_or("")) }
                         td { (scope_words(&r["scope"])) } td { code { (scalar(&r["value"])) } }
                         td { (r["author"].as_str().unwrap_or("")) } td { (r["reason"].as_str().unwrap_or("")) }
                         td { (r["created_at"].as_str().unwrap_or("")) } }
                } }
            } }
            @if !body["change_requests"].as_array().is_some_and(|a| !a.is_empty()) { p.note #no-requests { "No " (state) " change requests." } }
            nav.pager {
                @if lq.before.is_some() { a #newest href={ "/console/change-requests?state=" (sq) } { "Newest" } }
                @if let Some(next) = body["next_before"].as_i64() {
                    a #older rel="next" href={ "/console/change-requests?state=" (sq) "&before=" (next) } { "Older" }
                }
            }
        },
    ))
}

async fn change_request(State(c): State<Console>, Path(id): Path<String>, caller: Caller) -> Response {
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

/// The audit log's filters the console passes on to the API.
const AUDIT_FILTERS: [&str; 8] =
    ["policy_key", "actor", "action", "outcome", "user_id", "project_id", "org_id", "plan"];
/// Audit records a page.
const AUDIT_PAGE: usize = 50;

/// The query string of the filters given (`&name=value…`).
fn audit_filters(query: &[(String, String)]) -> String {
    query
        .iter()
        .filter(|(k, v)| AUDIT_FILTERS.contains(&k.as_str()) && !v.is_empty())
        .map(|(k, v)| format!("&{k}={}", query_encode(v)))
        .collect()
}

async fn audit(State(c): State<Console>, Query(query): Query<Vec<(String, String)>>, caller: Caller) -> Response {
    let filters = audit_filters(&query);
    let cursor = query.iter().find(|(k, v)| k == "cursor" && !v.is_empty()).map(|(_, v)| v.clone());
    let mut uri = format!("/api/v1/admin/audit-logs?limit={AUDIT_PAGE}{filters}");
    if let Some(cursor) = &cursor {
        uri.push_str(&format!("&cursor={}", query_encode(cursor)));
    }
    let (status, body) = c.api(Method::GET, &uri, &caller.token, None).await;
    if !status.is_success() {
        return api_error(status, &body);
    }
    let (vs, verify) = c.api(Method::GET, "/api/v1/admin/audit-logs/verify", &caller.token, None).await;
    let value_of = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_default();
    let filters_qs = filters.trim_start_matches('&').to_string();
    html_page(layout(
        "Audit log",
        Some(&caller),
        html! {
            @if !vs.is_success() {
                (error_box(verify["code"].as_str().unwrap_or("error"), "the chain could not be verified", &verify["details"]))
            } @else if verify["status"] == "intact" {
                p #chain .ok { "Hash chain: " strong #chain-state { "verified" } ", " (verify["rows"]) " rows; head "
                    @if let Some(seq) = verify["head"]["seq"].as_i64() { a href={ "/console/audit/" (seq) } { "#" (seq) } " " }
                    code #chain-head { (verify["head"]["hash"].as_str().unwrap_or("—")) } }
            } @else {
                p #chain .error role="alert" { "Hash chain: " strong #chain-state { "broken" } " at row "
                    a href={ "/console/audit/" (verify["seq"]) } { "#" (verify["seq"]) } ": " (verify["reason"].as_str().unwrap_or(""))
                    " (" (verify["rows_checked"]) " rows checked)" }
            }
            form.filters method="get" action="/console/audit" {
                @for n in AUDIT_FILTERS {
                    div { label for=(n) { (n) } input id=(n) name=(n) value=(value_of(n)); }
                }
                button type="submit" { "Filter" }
            }
            p.exports { "Export everything these filters select: "
                a #export-ndjson href={ "/console/audit/export?format=ndjson&" (filters_qs) } download { "NDJSON" } " · "
                a #export-csv href={ "/console/audit/export?format=csv&" (filters_qs) } download { "CSV" } }
            div.table-wrap { table #audit {
                thead { tr { th { "Seq" } th { "When" } th { "Actor" } th { "Action" } th { "Outcome" } th { "Key" } th { "Scope" } th { "Details" } } }
                tbody { @for r in body["items"].as_array().into_iter().flatten() {
                    tr data-seq=(r["seq"]) {
                         td { a href={ "/console/audit/" (r["seq"]) } { (r["seq"]) } }
                         td { (r["occurred_at"].as_str().unwrap_or("")) } td { (r["actor"].as_str().unwrap_or("")) }
                         td { (r["action"].as_str().unwrap_or("")) } td { (r["outcome"].as_str().unwrap_or("")) " " (r["code"].as_str().unwrap_or("")) }
                         td { (r["policy_key"].as_str().unwrap_or("")) }
                         td { (r["scope_level"].as_str().unwrap_or("")) " " (r["scope_id"].as_str().unwrap_or("")) }
                         td.details { code { (r["metadata"]) } } }
                } }
            } }
            nav.pager {
                @if cursor.is_some() { a #newest href={ "/console/audit?" (filters_qs) } { "Newest" } }
                @if let Some(next) = body["next_cursor"].as_str() {
                    a #older rel="next" href={ "/console/audit?cursor=" (query_encode(next)) (filters) } { "Older" }
                }
            }
        },
    ))
}

/// The audit export (NDJSON or CSV) with the page's filters, streamed from
/// the API with the session's token.
async fn export(State(c): State<Console>, Query(query): Query<Vec<(String, String)>>, caller: Caller) -> Response {
    let format = match query.iter().find(|(k, _)| k == "format").map(|(_, v)| v.as_str()) {
        Some(f @ ("ndjson" | "csv")) => f,
        _ => return page_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_query", "format must be ndjson or csv"),
    };
    let uri = format!("/api/v1/admin/audit-logs?format={format}{}", audit_filters(&query));
    let response = c.api_raw(Method::GET, &uri, &caller.token, None).await;
    if !response.status().is_success() {
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap_or_default();
        return api_error(status, &serde_json::from_slice(&bytes).unwrap_or(Json::Null));
    }
    let (mut parts, body) = response.into_parts();
    let disposition = format!("attachment; filename=\"audit-log.{format}\"");
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        parts.headers.insert(axum::http::header::CONTENT_DISPOSITION, v);
    }
    Response::from_parts(parts, body)
}

/// One audit record, every field, found through the API's cursor (the
/// record just before seq + 1).
async fn audit_record(State(c): State<Console>, Path(seq): Path<String>, caller: Caller) -> Response {
    let Some(seq) = seq.parse::<i64>().ok().filter(|s| *s > 0 && *s < i64::MAX) else {
        return page_error(StatusCode::NOT_FOUND, "not_found", "no such audit record");
    };
    let cursor = super::audit::encode_cursor(seq + 1);
    let (status, body) =
        c.api(Method::GET, &format!("/api/v1/admin/audit-logs?limit=1&cursor={cursor}"), &caller.token, None).await;
    if !status.is_success() {
        return api_error(status, &body);
    }
    let Some(r) = body["items"].as_array().and_then(|a| a.first()).filter(|r| r["seq"].as_i64() == Some(seq)) else {
        return page_error(StatusCode::NOT_FOUND, "not_found", "no such audit record");
    };
    let text = |k: &str| r[k].as_str().map(str::to_string).unwrap_or_else(|| "—".to_string());
    let metadata = serde_json::to_string_pretty(&r["metadata"]).unwrap_or_default();
    html_page(layout(
        &format!("Audit record #{seq}"),
        Some(&caller),
        html! {
            dl.def #record {
                dt { "Seq" } dd #record-seq { (seq) }
                dt { "Id" } dd #record-id { code { (text("id")) } }
                dt { "When" } dd { (text("occurred_at")) }
                dt { "Actor" } dd { (text("actor")) }
                dt { "Action" } dd #record-action { (text("action")) }
                dt { "Outcome" } dd { (text("outcome")) @if let Some(code) = r["code"].as_str() { " " code { (code) } } }
                dt { "Key" } dd { @if let Some(k) = r["policy_key"].as_str() { a href={ "/console/keys/" (query_encode(k)) } { (k) } } @else { "—" } }
                dt { "Scope" } dd { (text("scope_level")) " " (r["scope_id"].as_str().unwrap_or("")) }
                dt { "Effective at" } dd { (text("effective_at")) }
                dt { "Request id" } dd { code { (text("request_id")) } }
                dt { "Details" } dd { pre #record-metadata { (metadata) } }
                dt { "Previous hash" } dd { code { (text("prev_hash")) } }
                dt { "Hash" } dd { code #record-hash { (text("hash")) } }
            }
            p { a href={ "/console/audit?cursor=" (cursor) } { "This record in the audit log" } }
        },
    ))
}
