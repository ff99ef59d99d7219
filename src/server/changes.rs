//! `GET /api/v1/changes`: the change feed as server-sent events, and
//! `GET /api/v1/replica`: the bootstrap a follower loads before it.
//! A subscriber resumes with `Last-Event-ID` (or `?after=`) on this server
//! or any other on the same database: event ids are the store's positions.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use serde::Deserialize;
use tokio::sync::broadcast::{self, error::RecvError};

use super::error::ApiError;
use super::extract::QueryParams;
use super::feed::{reset_frame, Frame, Start, CLOSING};
use super::AppState;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ChangesParams {
    /// Resume after this position (the `Last-Event-ID` header wins).
    #[param(minimum = 0)]
    after: Option<i64>,
}

/// The position a subscriber asks to resume after.
fn resume_after(headers: &HeaderMap, params: &ChangesParams) -> Result<Option<i64>, ApiError> {
    let header = headers.get("last-event-id").map(|v| v.to_str().ok().and_then(|s| s.trim().parse::<i64>().ok()));
    let after = match header {
        Some(Some(id)) => Some(id),
        Some(None) => {
            return Err(ApiError::unprocessable(
                "invalid_last_event_id",
                "Last-Event-ID must be a position (an integer)",
            ))
        }
        None => params.after,
    };
    if after.is_some_and(|a| a < 0) {
        return Err(ApiError::unprocessable("invalid_query", "after must be a position of 0 or more"));
    }
    Ok(after)
}

/// Every change, in order, as server-sent events: `id` is the position,
/// `event` is `value` (a value row) or `key` (a catalog definition), `data`
/// the change as JSON. A comment every 15 s keeps idle streams open. A
/// subscriber that falls more than 4,096 events behind is disconnected and
/// resumes by id; one whose gap is no longer held gets `event: reset`.
#[utoipa::path(get, path = "/api/v1/changes", tag = "read", params(ChangesParams,
        ("Last-Event-ID" = Option<i64>, Header, description = "the last position received")),
    responses((status = 200, description = "server-sent events (text/event-stream)", content_type = "text/event-stream", body = String)))]
pub async fn changes(
    State(state): State<AppState>,
    headers: HeaderMap,
    QueryParams(params): QueryParams<ChangesParams>,
) -> Result<Response, ApiError> {
    let after = resume_after(&headers, &params)?;
    let body = match state.feed.subscribe(after) {
        Start::NotReady => return Err(ApiError::database_unavailable()),
        Start::Closed => return Err(ApiError::shutting_down()),
        Start::Reset { horizon } => {
            metrics::counter!("policy_values_feed_resets_total").increment(1);
            Body::from(reset_frame(horizon))
        }
        Start::Resume { backlog, live, after } => Body::from_stream(follow(backlog, live, after)),
    };
    let headers = [
        (CONTENT_TYPE, HeaderValue::from_static("text/event-stream")),
        (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        // Tells a buffering proxy (nginx) to pass events on at once.
        (axum::http::HeaderName::from_static("x-accel-buffering"), HeaderValue::from_static("no")),
    ];
    Ok((StatusCode::OK, headers, body).into_response())
}

/// Counts open subscriptions while it lives.
struct Subscribed;

impl Subscribed {
    fn new() -> Subscribed {
        metrics::gauge!("policy_values_feed_subscribers").increment(1.0);
        Subscribed
    }
}

impl Drop for Subscribed {
    fn drop(&mut self) {
        metrics::gauge!("policy_values_feed_subscribers").decrement(1.0);
    }
}

struct Following {
    backlog: std::vec::IntoIter<Frame>,
    live: broadcast::Receiver<Frame>,
    last: i64,
    _subscribed: Subscribed,
}

/// The backlog, then live events after the last one sent; ends when the
/// subscriber falls too far behind (it reconnects and resumes by id).
fn follow(
    backlog: Vec<Frame>,
    live: broadcast::Receiver<Frame>,
    after: i64,
) -> impl Stream<Item = Result<Bytes, Infallible>> {
    let state = Following { backlog: backlog.into_iter(), live, last: after, _subscribed: Subscribed::new() };
    futures_util::stream::unfold(state, |mut s| async move {
        if let Some(frame) = s.backlog.next() {
            s.last = frame.seq;
            return Some((Ok(frame.bytes), s));
        }
        loop {
            match s.live.recv().await {
                Ok(frame) if frame.seq == CLOSING => return None,
                Ok(frame) if frame.seq == 0 => return Some((Ok(frame.bytes), s)),
                Ok(frame) if frame.seq <= s.last => continue,
                Ok(frame) => {
                    s.last = frame.seq;
                    return Some((Ok(frame.bytes), s));
                }
                Err(RecvError::Lagged(_)) => {
                    metrics::counter!("policy_values_feed_lagged_total").increment(1);
                    return None;
                }
                Err(RecvError::Closed) => return None,
            }
        }
    })
}
