//! goim's logic HTTP API (reference §3), a thin adapter over [`Logic`].
//!
//! Every response is goim's envelope `{"code":<int>,"message":"<string>","data":<any>}`:
//! `message` is always present, `data` only when there is some. Codes: 0 ok, -400 bad input, -500
//! backend failure (HTTP 200, as goim); binding errors (a missing, zero or non-numeric query
//! parameter) are HTTP 400 with code -400, like gin's `BindQuery`. goim-rs additions: a missing
//! or wrong bearer token is HTTP 401 / -401, a push body over `http.max_body` is HTTP 413 / -413.
//! [`ApiError`]'s `IntoResponse` is the one place errors become responses.

mod online;
mod push;
mod query;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::logic::{Error, Logic};
use crate::queue;

/// The API's routes, with the bearer check on `/goim/push/*` when a push token is configured
/// (`http.push_token`, `push_tokens`, `push_token_file`) and CORS when `http.cors_origins` is
/// not empty.
pub fn router(logic: Arc<Logic>) -> Router {
    let http = &logic.config().http;
    let mut pushes = Router::new()
        .route("/goim/push/keys", post(push::keys))
        .route("/goim/push/mids", post(push::mids))
        .route("/goim/push/room", post(push::room))
        .route("/goim/push/all", post(push::all));
    if let Some(tokens) = logic.push_tokens() {
        pushes =
            pushes.route_layer(axum::middleware::from_fn_with_state(tokens.clone(), push::require_bearer));
    }
    let queries = Router::new()
        .route("/goim/online/top", get(online::top))
        .route("/goim/online/room", get(online::room))
        .route("/goim/online/total", get(online::total))
        .route("/goim/nodes/weighted", get(online::nodes_weighted))
        .route("/goim/nodes/instances", get(online::nodes_instances));
    let mut app = pushes.merge(queries).with_state(logic.clone());
    if let Some(cors) = cors(&http.cors_origins) {
        app = app.layer(cors);
    }
    app
}

/// Serves the API on `listener` until `shutdown` is cancelled, then finishes in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    logic: Arc<Logic>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = router(logic).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.cancelled().await }).await
}

fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        // validate() rejected origins that are not header values; skip rather than panic.
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE]),
    )
}

/// goim's response envelope.
#[derive(Serialize)]
struct Envelope<'a, T: Serialize> {
    code: i32,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<T>,
}

fn envelope<T: Serialize>(status: StatusCode, code: i32, message: &str, data: Option<T>) -> Response {
    match serde_json::to_vec(&Envelope { code, message, data }) {
        Ok(body) => {
            (status, [(header::CONTENT_TYPE, "application/json; charset=utf-8")], body).into_response()
        }
        // Our reply types are plain structs and string-keyed maps; serializing them cannot fail.
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// `{"code":0,"message":""}`.
fn ok() -> Response {
    envelope::<()>(StatusCode::OK, 0, "", None)
}

/// `{"code":0,"message":"","data":...}`.
fn data<T: Serialize>(data: T) -> Response {
    envelope(StatusCode::OK, 0, "", Some(data))
}

/// Everything a request can fail with.
#[derive(Debug)]
enum ApiError {
    /// A query parameter is missing, zero where required, or not a number (gin's binding error).
    Binding(String),
    /// `/goim/push/*` without the configured bearer token.
    Unauthorized,
    /// The push body exceeds `http.max_body`.
    TooLarge {
        max: usize,
    },
    /// The request body could not be read (the client went away mid-body).
    Body,
    Logic(Error),
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        ApiError::Logic(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        const NONE: Option<()> = None;
        match self {
            ApiError::Binding(message) => envelope(StatusCode::BAD_REQUEST, -400, &message, NONE),
            ApiError::Unauthorized => {
                let mut response =
                    envelope(StatusCode::UNAUTHORIZED, -401, "missing or wrong bearer token", NONE);
                response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                response
            }
            ApiError::TooLarge { max } => {
                let message = format!("message body exceeds {max} bytes");
                envelope(StatusCode::PAYLOAD_TOO_LARGE, -413, &message, NONE)
            }
            ApiError::Body => envelope(StatusCode::BAD_REQUEST, -400, "cannot read the request body", NONE),
            ApiError::Logic(Error::BadRequest(message)) => envelope(StatusCode::OK, -400, &message, NONE),
            ApiError::Logic(Error::Auth(e)) => envelope(StatusCode::OK, -400, &e.to_string(), NONE),
            ApiError::Logic(Error::Queue(e)) => {
                tracing::warn!(error = %e, "push request failed: queue");
                let message = match e {
                    queue::Error::Full { .. } => "push queue is full, retry later",
                    queue::Error::Closed => "push queue is closed, logic is shutting down",
                    queue::Error::Unavailable(_) => "push queue is unavailable",
                };
                envelope(StatusCode::OK, -500, message, NONE)
            }
            ApiError::Logic(Error::Store(e)) => {
                tracing::warn!(error = %e, "request failed: session store");
                envelope(StatusCode::OK, -500, "session store is unavailable", NONE)
            }
        }
    }
}
