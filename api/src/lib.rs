//! goim-api: the contract the tiers meet in. Nothing here does I/O.
//!
//! - [`frame`]: the goim v2 packet and its TCP-stream and WebSocket-message framings.
//! - [`op`]: the operation codes.
//! - [`push`]: the push job logic hands to job (goim's `PushMsg`).
//! - [`session`]: what comet and logic exchange about a connection.
//!
//! # Wire format (client ↔ comet)
//!
//! Every integer is big-endian and signed.
//!
//! | offset | size | field       | notes                                                          |
//! |-------:|-----:|-------------|----------------------------------------------------------------|
//! | 0      | 4    | `packLen`   | 16 + body length; at most 16 + `max_body` (default 4096) on reads |
//! | 4      | 2    | `headerLen` | always 16; anything else closes the connection                  |
//! | 6      | 2    | `ver`       | echoed in replies; 1 on server pushes                           |
//! | 8      | 4    | `op`        | see [`Op`]; business ops (1000, ...) pass through                |
//! | 12     | 4    | `seq`       | echoed in replies; 0 on server pushes                           |
//! | 16     | rest | body        |                                                                |
//!
//! TCP carries packets back to back. WebSocket carries one packet per binary message, and a
//! server push arrives as one op-9 ([`Op::Raw`]) message whose body is one or more whole packets.
//! A TCP client receives those inner packets directly and never sees op 9.

pub mod frame;
pub mod op;
pub mod pb;
pub mod position;
pub mod push;
pub mod session;

pub use frame::{Batch, DEFAULT_MAX_BODY, Error as FrameError, Frame, HEADER_LEN};
pub use op::Op;
pub use position::{Position, RecoverAsk, RecoverRequest, Recovered, Replayed, Stream, StreamRecovery};
pub use push::{PushKind, PushMsg};
pub use session::{Connect, Online, Presence, Session, Uplink};
