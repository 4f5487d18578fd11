//! HTTP/1.1 as comet's HTTP port speaks it: the request head ([`request`]) and the responses
//! ([`response`]). Mechanism only: what the port answers, and to whom, is `front`'s; the
//! WebSocket upgrade is `websocket`'s.

pub mod request;
pub mod response;

pub use request::{Error as HeadError, Request, read_request, read_request_after};
pub use response::{Receipt, Response, error_response, retry_after_secs};
