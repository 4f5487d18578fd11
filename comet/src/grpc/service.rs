//! The `goim.comet.Comet` service over [`Comet`]: requests in, [`Error`] → [`Status`] in one place.

use bytes::Bytes;
use goim_api::frame::split_packets;
use goim_api::pb::comet::{
    BroadcastReply, BroadcastReq, BroadcastRoomReply, BroadcastRoomReq, PushMsgReply, PushMsgReq, RoomsReply,
    RoomsReq, comet_server,
};
use goim_api::pb::protocol::Proto;
use goim_api::{Frame, Op};
use tonic::{Request, Response, Status};

use crate::{Comet, PushError};

/// Implements `goim.comet.Comet` for one [`Comet`].
#[derive(Clone)]
pub struct Service {
    comet: Comet,
}

impl Service {
    pub fn new(comet: Comet) -> Service {
        Service { comet }
    }
}

/// Why a call was refused. Every variant is the caller's mistake (`InvalidArgument`), as in goim.
#[derive(Debug, thiserror::Error)]
enum Error {
    #[error("rpc {call} arg error: {reason}")]
    Arg { call: &'static str, reason: &'static str },
    #[error("rpc {call} arg error: {source}")]
    Push {
        call: &'static str,
        #[source]
        source: PushError,
    },
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        Status::invalid_argument(e.to_string())
    }
}

/// The bytes to deliver for `proto`. goim's job sends an op-9 (Raw) proto whose body is already
/// whole packets: those go out as they are, after checking they are whole packets. Any other
/// proto is one packet, encoded here.
fn packets(call: &'static str, proto: Option<Proto>) -> Result<Bytes, Error> {
    let proto = proto.ok_or(Error::Arg { call, reason: "no proto" })?;
    if proto.op != Op::Raw.code() {
        return Ok(Frame::from(proto).to_bytes());
    }
    let body = proto.body;
    if body.is_empty() || split_packets(body.clone()).any(|p| p.is_err()) {
        return Err(Error::Arg { call, reason: "raw proto body is not whole packets" });
    }
    Ok(body)
}

#[tonic::async_trait]
impl comet_server::Comet for Service {
    async fn push_msg(&self, req: Request<PushMsgReq>) -> Result<Response<PushMsgReply>, Status> {
        const CALL: &str = "pushmsg";
        let req = req.into_inner();
        if req.keys.is_empty() {
            return Err(Error::Arg { call: CALL, reason: "no keys" }.into());
        }
        let packet = packets(CALL, req.proto)?;
        let report = self
            .comet
            .push_keys(&req.keys, req.proto_op, packet)
            .map_err(|source| Error::Push { call: CALL, source })?;
        tracing::trace!(keys = req.keys.len(), missing = report.missing, "grpc push");
        Ok(Response::new(PushMsgReply {}))
    }

    async fn broadcast(&self, req: Request<BroadcastReq>) -> Result<Response<BroadcastReply>, Status> {
        let req = req.into_inner();
        let packet = packets("broadcast", req.proto)?;
        self.comet.broadcast(req.proto_op, packet, req.speed);
        Ok(Response::new(BroadcastReply {}))
    }

    async fn broadcast_room(
        &self,
        req: Request<BroadcastRoomReq>,
    ) -> Result<Response<BroadcastRoomReply>, Status> {
        const CALL: &str = "broadcastroom";
        let req = req.into_inner();
        if req.room_id.is_empty() {
            return Err(Error::Arg { call: CALL, reason: "no roomID" }.into());
        }
        let batch = packets(CALL, req.proto)?;
        self.comet
            .broadcast_room(&req.room_id, batch)
            .map_err(|source| Error::Push { call: CALL, source })?;
        Ok(Response::new(BroadcastRoomReply {}))
    }

    async fn rooms(&self, _req: Request<RoomsReq>) -> Result<Response<RoomsReply>, Status> {
        let rooms = self.comet.rooms().into_iter().map(|room| (room, true)).collect();
        Ok(Response::new(RoomsReply { rooms }))
    }
}

#[cfg(test)]
mod tests {
    use goim_api::frame::encode_push;

    use super::*;

    fn raw(body: Bytes) -> Option<Proto> {
        Some(Proto { ver: 1, op: Op::Raw.code(), seq: 0, body })
    }

    #[test]
    fn a_raw_proto_passes_its_packets_through_unchanged() {
        let mut two = encode_push(1000, b"a").to_vec();
        two.extend_from_slice(&encode_push(1001, b"bc"));
        let two = Bytes::from(two);
        assert_eq!(packets("t", raw(two.clone())).unwrap(), two);
    }

    #[test]
    fn a_plain_proto_is_encoded_as_one_packet() {
        let proto = Proto { ver: 1, op: 1000, seq: 0, body: Bytes::from_static(b"hi") };
        assert_eq!(packets("t", Some(proto)).unwrap(), encode_push(1000, b"hi"));
    }

    #[test]
    fn a_missing_or_malformed_proto_is_an_argument_error() {
        assert!(matches!(packets("t", None), Err(Error::Arg { reason: "no proto", .. })));
        assert!(packets("t", raw(Bytes::new())).is_err());
        assert!(packets("t", raw(Bytes::from_static(b"not a packet at all"))).is_err());
        let mut cut = encode_push(1000, b"hello").to_vec();
        cut.pop();
        assert!(packets("t", raw(Bytes::from(cut))).is_err());
    }

    #[test]
    fn argument_errors_become_invalid_argument() {
        let status = Status::from(Error::Arg { call: "pushmsg", reason: "no keys" });
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(status.message(), "rpc pushmsg arg error: no keys");
    }
}
