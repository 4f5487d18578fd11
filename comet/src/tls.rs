//! WSS: comet's HTTP port over TLS (rustls), with the certificate and key from config. The
//! acceptor, and [`serve`], which hands the decrypted stream to `front`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tracing::debug;

use crate::config::TlsConfig;
use crate::front::Front;
use crate::metrics::TransportLabel;

#[derive(Clone)]
pub struct Acceptor(tokio_rustls::TlsAcceptor);

fn io_err(what: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, what)
}

impl Acceptor {
    /// Reads the PEM certificate chain and key named in `cfg`.
    pub fn load(cfg: &TlsConfig) -> std::io::Result<Acceptor> {
        let (Some(cert), Some(key)) = (&cfg.cert, &cfg.key) else {
            return Err(io_err("comet.websocket.tls: cert and key are required".into()));
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .and_then(|it| it.collect::<Result<_, _>>())
            .map_err(|e| io_err(format!("comet.websocket.tls.cert {}: {e}", cert.display())))?;
        if certs.is_empty() {
            return Err(io_err(format!("comet.websocket.tls.cert {}: no certificate found", cert.display())));
        }
        let key = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| io_err(format!("comet.websocket.tls.key {}: {e}", key.display())))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| io_err(format!("comet.websocket.tls: {e}")))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| io_err(format!("comet.websocket.tls: {e}")))?;
        Ok(Acceptor(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
    }
}

/// Serves one accepted connection: the TLS handshake, then the HTTP port over it. (Not an
/// `async fn`, which would hold its arguments twice; see `connection::Conn::run`.)
#[expect(clippy::manual_async_fn, reason = "an `async fn` would store its arguments twice")]
pub fn serve(
    front: Arc<Front>,
    acceptor: Acceptor,
    stream: TcpStream,
    peer: SocketAddr,
) -> impl Future<Output = ()> + Send + 'static {
    async move {
        // Boxed, and matched into the next future rather than awaited inside the match: the
        // TLS handshake's state would otherwise stay in the connection's task for its life.
        let handshake = timeout(front.ctx.config.protocol.handshake_timeout, acceptor.0.accept(stream));
        let serve = match Box::pin(handshake).await {
            Ok(Ok(tls)) => crate::front::serve(front, tls, peer),
            Ok(Err(e)) => {
                debug!(peer = %peer, error = %e, "tls handshake failed");
                front.ctx.metrics.bad_input.get_or_create(&TransportLabel { transport: "wss" }).inc();
                return;
            }
            Err(_) => {
                front.ctx.metrics.handshake_timeout("tls");
                return debug!(peer = %peer, "tls handshake timed out");
            }
        };
        serve.await
    }
}
