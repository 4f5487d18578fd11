//! `POST /goim/push/{keys,mids,room,all}`: the query names the targets, the raw body is the
//! message (forwarded verbatim whatever its Content-Type).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::query::{Need, Query};
use super::{ApiError, ok};
use crate::auth::PushTokens;
use crate::logic::Logic;

/// `operation` (optional), `keys` (repeated).
pub(super) async fn keys(State(logic): State<Arc<Logic>>, request: Request) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let q = Query::parse(parts.uri.query());
    let op = q.int("operation", Need::Optional)?;
    let keys = q.strings("keys", Need::Optional)?;
    let msg = read_body(&parts.headers, body, logic.config().http.max_body).await?;
    logic.push_keys(op, keys, msg).await?;
    Ok(ok())
}

/// `operation` (optional), `mids` (repeated integers).
pub(super) async fn mids(State(logic): State<Arc<Logic>>, request: Request) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let q = Query::parse(parts.uri.query());
    let op = q.int("operation", Need::Optional)?;
    let mids = q.ints("mids", Need::Optional)?;
    let msg = read_body(&parts.headers, body, logic.config().http.max_body).await?;
    logic.push_mids(op, mids, msg).await?;
    Ok(ok())
}

/// `operation`, `type` and `room`, all required.
pub(super) async fn room(State(logic): State<Arc<Logic>>, request: Request) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let q = Query::parse(parts.uri.query());
    let op = q.int("operation", Need::Required)?;
    let room_type = q.string("type", Need::Required)?;
    let room = q.string("room", Need::Required)?;
    let msg = read_body(&parts.headers, body, logic.config().http.max_body).await?;
    logic.push_room(op, &room_type, &room, msg).await?;
    Ok(ok())
}

/// `operation` (required), `speed` (optional).
pub(super) async fn all(State(logic): State<Arc<Logic>>, request: Request) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let q = Query::parse(parts.uri.query());
    let op = q.int("operation", Need::Required)?;
    let speed = q.int("speed", Need::Optional)?;
    let msg = read_body(&parts.headers, body, logic.config().http.max_body).await?;
    logic.push_all(op, speed, msg).await?;
    Ok(ok())
}

/// Reads the whole body, refusing more than `max` bytes (early when Content-Length says so).
async fn read_body(headers: &HeaderMap, body: Body, max: usize) -> Result<Bytes, ApiError> {
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max as u64) {
        return Err(ApiError::TooLarge { max });
    }
    match Limited::new(body, max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(ApiError::TooLarge { max }),
        Err(_) => Err(ApiError::Body),
    }
}

/// Lets the request through only with `Authorization: Bearer <token>` naming an accepted token.
pub(super) async fn require_bearer(
    State(tokens): State<Arc<PushTokens>>,
    request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    if tokens.check(presented) { next.run(request).await } else { ApiError::Unauthorized.into_response() }
}
