//! `GET /goim/online/{top,room,total}` and `GET /goim/nodes/{weighted,instances}`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::connect_info::ConnectInfo;
use axum::extract::{RawQuery, Request, State};
use axum::http::request::Parts;
use axum::response::Response;

use super::query::{Need, Query};
use super::{ApiError, data};
use crate::logic::Logic;

/// `type` and `limit` (> 0), both required.
pub(super) async fn top(
    State(logic): State<Arc<Logic>>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = Query::parse(raw.as_deref());
    let room_type = q.string("type", Need::Required)?;
    let limit: i64 = q.int("limit", Need::Required)?;
    // goim slices with a negative limit and panics; refuse it instead.
    let limit = usize::try_from(limit).map_err(|_| ApiError::Binding("limit must be positive".into()))?;
    Ok(data(logic.online_top(&room_type, limit).await?))
}

/// `type` and `rooms` (repeated), both required.
pub(super) async fn room(
    State(logic): State<Arc<Logic>>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = Query::parse(raw.as_deref());
    let room_type = q.string("type", Need::Required)?;
    let rooms = q.strings("rooms", Need::Required)?;
    Ok(data(logic.online_room(&room_type, &rooms).await?))
}

pub(super) async fn total(State(logic): State<Arc<Logic>>) -> Result<Response, ApiError> {
    Ok(data(logic.online_total().await?))
}

/// `platform` (optional; `web` gets host names).
pub(super) async fn nodes_weighted(
    State(logic): State<Arc<Logic>>,
    request: Request,
) -> Result<Response, ApiError> {
    let (parts, _) = request.into_parts();
    let q = Query::parse(parts.uri.query());
    let platform = q.string("platform", Need::Optional)?;
    Ok(data(logic.nodes_weighted(&platform, &client_ip(&parts)).await?))
}

pub(super) async fn nodes_instances(State(logic): State<Arc<Logic>>) -> Result<Response, ApiError> {
    Ok(data(logic.nodes_instances().await?))
}

/// gin's `ClientIP`: the first `X-Forwarded-For` entry, else `X-Real-IP`, else the peer address.
fn client_ip(parts: &Parts) -> String {
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(first) = header("x-forwarded-for").and_then(|v| v.split(',').next()).map(str::trim)
        && !first.is_empty()
    {
        return first.to_owned();
    }
    if let Some(real) = header("x-real-ip").filter(|v| !v.is_empty()) {
        return real.to_owned();
    }
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip().to_string())
        .unwrap_or_default()
}
