//! Bearer-token authentication and role checks, as a middleware per group
//! of routes; the handler finds the `Principal` in the request extensions.

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::AppState;
use crate::store::tokens::Role;

/// Length of the random part of a token, in bytes (256 bits).
const TOKEN_BYTES: usize = 32;

/// The prefix every token starts with, so secret scanners can find one.
pub const TOKEN_PREFIX: &str = "pvt_";

/// A new random token: the prefix and 64 hex digits.
pub fn generate_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut bytes)?;
    Ok(format!("{TOKEN_PREFIX}{}", hex::encode(bytes)))
}

fn bearer(req: &Request) -> Option<&str> {
    let value = req.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// Refuses a request without a valid token (401) or whose token's role does
/// not allow `needed` (403).
pub async fn require(
    State((state, needed)): State<(AppState, Role)>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let Some(token) = bearer(&req) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing bearer token: send Authorization: Bearer <token>",
        ));
    };
    let principal =
        state.tokens.authenticate(&state.pool, token).await?.ok_or_else(|| {
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "unknown, revoked or expired token")
        })?;
    // The principal rides on the response too, so the audit of refused
    // attempts can name who was refused.
    if !principal.role.allows(needed) {
        let message =
            format!("this endpoint needs the {} role; the token has {}", needed.as_str(), principal.role.as_str());
        let mut response = ApiError::new(StatusCode::FORBIDDEN, "forbidden", message).into_response();
        response.extensions_mut().insert(principal);
        return Ok(response);
    }
    req.extensions_mut().insert(principal.clone());
    let mut response = next.run(req).await;
    response.extensions_mut().insert(principal);
    Ok(response)
}
