//! comet's gRPC server: goim's `goim.comet.Comet`, which job calls to push. A thin adapter over
//! [`Comet`]; [`service`] maps its requests and errors, [`serve`] runs it on a listener.
//!
//! Its settings are the `[grpc]` table, [`goim_kit::grpc::ServerConfig`], on port 3109 (goim's).

mod service;

use goim_api::pb::comet::comet_server::CometServer;
use goim_kit::grpc::ServerConfig;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;
use tonic::transport::server::TcpIncoming;

use crate::Comet;

pub use service::Service;

/// goim's comet gRPC port: the `[grpc]` table's default in the comet binary.
pub const PORT: u16 = 3109;

/// Serves `goim.comet.Comet` for `comet` on `listener` until `shutdown`, then stops accepting and
/// lets calls in flight finish (the caller bounds that wait). Accepts gzip-compressed requests.
pub async fn serve(
    listener: TcpListener,
    comet: Comet,
    config: &ServerConfig,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let service = CometServer::new(Service::new(comet))
        .accept_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(config.max_message_size);
    config
        .server()
        .add_service(service)
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown.cancelled_owned())
        .await
}
