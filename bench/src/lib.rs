//! goim-bench: the load generator that measures goim-rs side by side with its peers. (The goim
//! client of the black-box tests is in `goim-test-support`.)
//!
//! - The load generator (`goim-bench run`, `goim-bench smoke`): a coordinator ([`run`]) starts
//!   the servers under test ([`target`]), spreads connections over worker processes ([`fleet`],
//!   [`worker`]) that dial from many addresses in 127.0.0.0/8 and speak goim over WebSocket, TCP
//!   or long-polling, nchan's WebSocket or socket.io ([`protocol`], [`subscriber`],
//!   [`long_poll`]), pushes through each server's HTTP API with send-time stamps ([`publisher`],
//!   [`stamp`]), and sums the workers' counts and latency histograms ([`histogram`]) into the
//!   scenarios' results ([`scenario`]), a Markdown table and PNG plots ([`report`]).
//! - The floor (`goim-bench floor-server`, [`floor`]): not a push server, the least a program
//!   does to write one frame to N connections; the limit fan-out is measured against.
//! - The soak (`goim-bench soak`, [`soak`]): thousands of clients against the distributed mode
//!   for an hour, checking every numbered push and sampling the servers' memory.

pub mod fleet;
pub mod floor;
pub mod histogram;
pub mod http;
pub mod limits;
pub mod long_poll;
pub mod processes;
pub mod protocol;
pub mod publisher;
pub mod report;
pub mod run;
pub mod scenario;
pub mod soak;
pub mod stamp;
pub mod stats;
pub mod subscriber;
pub mod target;
pub mod usage;
pub mod worker;
