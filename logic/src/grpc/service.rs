//! The `goim.logic.Logic` service over [`Logic`]; [`status`] is the one place its errors become
//! gRPC statuses.

use std::sync::Arc;

use goim_api::pb::logic::{
    Backoff, ConnectReply, ConnectReq, DisconnectReply, DisconnectReq, HeartbeatReply, HeartbeatReq,
    NodesReply, NodesReq, OnlineReply, OnlineReq, ReceiveReply, ReceiveReq, RecoverReply, RecoverReq,
    logic_server,
};
use goim_api::{Online, Uplink};
use tonic::{Request, Response, Status};

use crate::logic::{Error, Logic};

/// Implements `goim.logic.Logic` for one [`Logic`].
#[derive(Clone, Debug)]
pub struct Service {
    logic: Arc<Logic>,
}

impl Service {
    pub fn new(logic: Arc<Logic>) -> Service {
        Service { logic }
    }
}

/// A refused token is `Unauthenticated` with its (client-safe) reason; bad input is
/// `InvalidArgument`; a store or queue failure is `Unavailable` (comet may retry), with the
/// detail logged here rather than sent.
fn status(call: &'static str, e: Error) -> Status {
    match e {
        Error::Auth(a) => Status::unauthenticated(a.to_string()),
        Error::BadRequest(m) => Status::invalid_argument(m),
        Error::Store(s) => {
            tracing::warn!(error = %s, call, "session store failed");
            Status::unavailable("session store unavailable")
        }
        Error::Queue(q) => {
            tracing::warn!(error = %q, call, "push queue failed");
            Status::unavailable("push queue unavailable")
        }
    }
}

#[tonic::async_trait]
impl logic_server::Logic for Service {
    async fn connect(&self, req: Request<ConnectReq>) -> Result<Response<ConnectReply>, Status> {
        let session = self.logic.connect(req.into_inner().into()).await.map_err(|e| status("connect", e))?;
        Ok(Response::new(session.into()))
    }

    async fn disconnect(&self, req: Request<DisconnectReq>) -> Result<Response<DisconnectReply>, Status> {
        let has =
            self.logic.disconnect(req.into_inner().into()).await.map_err(|e| status("disconnect", e))?;
        Ok(Response::new(DisconnectReply { has }))
    }

    async fn heartbeat(&self, req: Request<HeartbeatReq>) -> Result<Response<HeartbeatReply>, Status> {
        self.logic.heartbeat(req.into_inner().into()).await.map_err(|e| status("heartbeat", e))?;
        Ok(Response::new(HeartbeatReply {}))
    }

    async fn renew_online(&self, req: Request<OnlineReq>) -> Result<Response<OnlineReply>, Status> {
        let online = Online::from(req.into_inner());
        let all_room_count = self.logic.renew_online(online).await.map_err(|e| status("renew_online", e))?;
        let store_epoch = self.logic.store_epoch().await.map_err(|e| status("renew_online", e))?;
        Ok(Response::new(OnlineReply { all_room_count, store_epoch }))
    }

    async fn receive(&self, req: Request<ReceiveReq>) -> Result<Response<ReceiveReply>, Status> {
        let uplink = Uplink::try_from(req.into_inner())
            .map_err(|e| status("receive", Error::BadRequest(e.to_string())))?;
        self.logic.receive(uplink).await;
        Ok(Response::new(ReceiveReply {}))
    }

    async fn recover(&self, req: Request<RecoverReq>) -> Result<Response<RecoverReply>, Status> {
        let recovered =
            self.logic.recover(req.into_inner().into()).await.map_err(|e| status("recover", e))?;
        Ok(Response::new(recovered.into()))
    }

    async fn nodes(&self, req: Request<NodesReq>) -> Result<Response<NodesReply>, Status> {
        let req = req.into_inner();
        let n =
            self.logic.nodes_weighted(&req.platform, &req.client_ip).await.map_err(|e| status("nodes", e))?;
        Ok(Response::new(NodesReply {
            domain: n.domain,
            tcp_port: n.tcp_port,
            ws_port: n.ws_port,
            wss_port: n.wss_port,
            heartbeat: n.heartbeat,
            nodes: n.nodes,
            backoff: Some(Backoff {
                max_delay: n.backoff.max_delay,
                base_delay: n.backoff.base_delay,
                factor: n.backoff.factor,
                jitter: n.backoff.jitter,
            }),
            heartbeat_max: n.heartbeat_max,
        }))
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;
    use crate::{auth, queue, store};

    #[test]
    fn each_error_maps_to_its_code_without_internal_detail() {
        let s = status("connect", Error::Auth(auth::Error::Expired));
        assert_eq!((s.code(), s.message()), (Code::Unauthenticated, "token expired"));
        let s = status("connect", Error::BadRequest("no server".into()));
        assert_eq!((s.code(), s.message()), (Code::InvalidArgument, "no server"));
        let s =
            status("heartbeat", Error::Store(store::Error::Unavailable("redis://10.0.0.1 refused".into())));
        assert_eq!((s.code(), s.message()), (Code::Unavailable, "session store unavailable"));
        let s = status("push", Error::Queue(queue::Error::Closed));
        assert_eq!(s.code(), Code::Unavailable);
    }
}
