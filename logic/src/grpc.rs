//! logic's gRPC server: goim's `goim.logic.Logic`, which comets call to authenticate
//! connections, renew sessions and report online counts. A thin adapter over [`Logic`];
//! [`service`] maps requests and errors, [`serve`] runs it on a listener. Requests may be
//! gzip-compressed (goim's comet compresses RenewOnline).
//!
//! Its settings are the `[grpc]` table, [`goim_kit::grpc::ServerConfig`], on port 3119 (goim's).

mod service;

use std::sync::Arc;

use goim_api::pb::logic::logic_server::LogicServer;
use goim_kit::grpc::ServerConfig;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;
use tonic::transport::server::TcpIncoming;

use crate::Logic;

pub use service::Service;

/// goim's logic gRPC port: the `[grpc]` table's default in the logic binary.
pub const PORT: u16 = 3119;

/// Serves `goim.logic.Logic` for `logic` on `listener` until `shutdown`, then stops accepting and
/// lets calls in flight finish (the caller bounds that wait).
pub async fn serve(
    listener: TcpListener,
    logic: Arc<Logic>,
    config: &ServerConfig,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let service = LogicServer::new(Service::new(logic))
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(config.max_message_size);
    config
        .server()
        .add_service(service)
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown.cancelled_owned())
        .await
}
