//! The in-process ports of the embedded mode: comet calls logic directly, and job calls comet
//! directly. The distributed mode plugs gRPC clients into the same traits.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use goim_api::{Connect, Online, Presence, RecoverRequest, Recovered, Session, Uplink};
use goim_comet::logic as comet_port;
use goim_job::CometError;

/// comet → logic, as a direct call.
pub struct InProcessLogic(pub Arc<goim_logic::Logic>);

fn unavailable(e: goim_logic::Error) -> comet_port::Error {
    comet_port::Error::Unavailable(e.to_string())
}

#[async_trait]
impl goim_comet::Logic for InProcessLogic {
    async fn connect(&self, req: Connect) -> Result<Session, comet_port::Error> {
        self.0.connect(req).await.map_err(|e| match e {
            goim_logic::Error::Auth(a) => comet_port::Error::Rejected(a.to_string()),
            goim_logic::Error::BadRequest(m) => comet_port::Error::Rejected(m),
            other => unavailable(other),
        })
    }

    async fn disconnect(&self, p: Presence) -> Result<(), comet_port::Error> {
        self.0.disconnect(p).await.map(drop).map_err(unavailable)
    }

    async fn heartbeat(&self, p: Presence) -> Result<(), comet_port::Error> {
        self.0.heartbeat(p).await.map_err(unavailable)
    }

    async fn renew_online(&self, online: Online) -> Result<HashMap<String, i32>, comet_port::Error> {
        self.0.renew_online(online).await.map_err(unavailable)
    }

    async fn receive(&self, uplink: Uplink) -> Result<(), comet_port::Error> {
        self.0.receive(uplink).await;
        Ok(())
    }

    async fn recover(&self, req: RecoverRequest) -> Result<Recovered, comet_port::Error> {
        self.0.recover(req).await.map_err(unavailable)
    }
}

/// job → comet, as a direct call to the one comet in this process.
pub struct InProcessComet(pub goim_comet::Comet);

impl InProcessComet {
    fn check(&self, server: &str) -> Result<(), CometError> {
        if server == self.0.server_id() { Ok(()) } else { Err(CometError::UnknownServer(server.to_string())) }
    }
}

#[async_trait]
impl goim_job::Comets for InProcessComet {
    fn servers(&self) -> Vec<String> {
        vec![self.0.server_id().to_string()]
    }

    async fn push_keys(
        &self,
        server: &str,
        keys: &[String],
        op: i32,
        packet: Bytes,
    ) -> Result<(), CometError> {
        self.check(server)?;
        self.0.push_keys(keys, op, packet).map(drop).map_err(|e| CometError::Rejected(e.to_string()))
    }

    async fn broadcast_room(&self, server: &str, room: &str, batch: Bytes) -> Result<(), CometError> {
        self.check(server)?;
        self.0.broadcast_room(room, batch).map(drop).map_err(|e| CometError::Rejected(e.to_string()))
    }

    async fn broadcast(&self, server: &str, op: i32, packet: Bytes, speed: i32) -> Result<(), CometError> {
        self.check(server)?;
        self.0.broadcast(op, packet, speed);
        Ok(())
    }
}
