//! The session messages of `goim.logic.Logic` ⇄ [`Connect`], [`Session`], [`Presence`],
//! [`Online`] and [`Uplink`].

use std::time::Duration;

use crate::pb::{Error, logic};
use crate::{Connect, Frame, Online, Presence, Session, Uplink};

impl From<Connect> for logic::ConnectReq {
    fn from(c: Connect) -> logic::ConnectReq {
        logic::ConnectReq { server: c.server, cookie: c.cookie, token: c.token }
    }
}

impl From<logic::ConnectReq> for Connect {
    fn from(c: logic::ConnectReq) -> Connect {
        Connect { server: c.server, cookie: c.cookie, token: c.token }
    }
}

impl From<Session> for logic::ConnectReply {
    /// `heartbeat` goes out as nanoseconds (a Go `time.Duration`), saturating at `i64::MAX`.
    fn from(s: Session) -> logic::ConnectReply {
        logic::ConnectReply {
            mid: s.mid,
            key: s.key,
            room_id: s.room,
            accepts: s.accepts,
            heartbeat: i64::try_from(s.heartbeat.as_nanos()).unwrap_or(i64::MAX),
        }
    }
}

impl From<logic::ConnectReply> for Session {
    /// A negative `heartbeat` reads as zero.
    fn from(r: logic::ConnectReply) -> Session {
        Session {
            mid: r.mid,
            key: r.key,
            room: r.room_id,
            accepts: r.accepts,
            heartbeat: Duration::from_nanos(u64::try_from(r.heartbeat).unwrap_or(0)),
        }
    }
}

impl From<Presence> for logic::DisconnectReq {
    fn from(p: Presence) -> logic::DisconnectReq {
        logic::DisconnectReq { mid: p.mid, key: p.key, server: p.server }
    }
}

impl From<logic::DisconnectReq> for Presence {
    fn from(p: logic::DisconnectReq) -> Presence {
        Presence { mid: p.mid, key: p.key, server: p.server }
    }
}

impl From<Presence> for logic::HeartbeatReq {
    fn from(p: Presence) -> logic::HeartbeatReq {
        logic::HeartbeatReq { mid: p.mid, key: p.key, server: p.server }
    }
}

impl From<logic::HeartbeatReq> for Presence {
    fn from(p: logic::HeartbeatReq) -> Presence {
        Presence { mid: p.mid, key: p.key, server: p.server }
    }
}

impl From<Online> for logic::OnlineReq {
    fn from(o: Online) -> logic::OnlineReq {
        logic::OnlineReq {
            server: o.server,
            room_count: o.room_count,
            conn_count: o.conn_count,
            ip_count: o.ip_count,
        }
    }
}

impl From<logic::OnlineReq> for Online {
    fn from(o: logic::OnlineReq) -> Online {
        Online { server: o.server, room_count: o.room_count, conn_count: o.conn_count, ip_count: o.ip_count }
    }
}

impl From<Uplink> for logic::ReceiveReq {
    fn from(u: Uplink) -> logic::ReceiveReq {
        logic::ReceiveReq { mid: u.mid, proto: Some(u.frame.into()), key: u.key }
    }
}

impl TryFrom<logic::ReceiveReq> for Uplink {
    type Error = Error;

    fn try_from(r: logic::ReceiveReq) -> Result<Uplink, Error> {
        let proto = r.proto.ok_or(Error::MissingField("proto"))?;
        Ok(Uplink { mid: r.mid, key: r.key, frame: Frame::from(proto) })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use bytes::Bytes;
    use prost::Message;

    use super::*;

    #[test]
    fn connect_survives_a_round_trip() {
        let c = Connect {
            server: "comet-1".into(),
            cookie: "a=b".into(),
            token: Bytes::from_static(b"{\"mid\":1}"),
        };
        let bytes = logic::ConnectReq::from(c.clone()).encode_to_vec();
        assert_eq!(Connect::from(logic::ConnectReq::decode(bytes.as_slice()).unwrap()), c);
    }

    #[test]
    fn connect_reply_heartbeat_is_go_duration_nanoseconds() {
        let s = Session {
            mid: 5,
            key: "k".into(),
            room: "live://1".into(),
            accepts: vec![1000, 1001],
            heartbeat: Duration::from_secs(480),
        };
        let reply = logic::ConnectReply::from(s.clone());
        assert_eq!(reply.heartbeat, 480_000_000_000);
        let bytes = reply.encode_to_vec();
        assert_eq!(Session::from(logic::ConnectReply::decode(bytes.as_slice()).unwrap()), s);
    }

    #[test]
    fn connect_reply_encodes_accepts_packed_with_goims_field_numbers() {
        let s = Session {
            mid: 1,
            key: "k".into(),
            room: "r".into(),
            accepts: vec![1, 2],
            heartbeat: Duration::from_nanos(3),
        };
        // mid = 1 (0x08), key = 2 (0x12), roomID = 3 (0x1a), accepts = 4 packed (0x22),
        // heartbeat = 5 (0x28).
        let want = [0x08, 1, 0x12, 1, b'k', 0x1a, 1, b'r', 0x22, 2, 1, 2, 0x28, 3];
        assert_eq!(logic::ConnectReply::from(s).encode_to_vec(), want);
    }

    #[test]
    fn negative_heartbeat_reads_as_zero() {
        let reply = logic::ConnectReply { heartbeat: -1, ..Default::default() };
        assert_eq!(Session::from(reply).heartbeat, Duration::ZERO);
    }

    #[test]
    fn presence_survives_disconnect_and_heartbeat_requests() {
        let p = Presence { mid: 9, key: "k9".into(), server: "c".into() };
        assert_eq!(Presence::from(logic::DisconnectReq::from(p.clone())), p);
        assert_eq!(Presence::from(logic::HeartbeatReq::from(p.clone())), p);
    }

    #[test]
    fn online_counts_travel_in_new_field_numbers() {
        let o = Online { server: "c".into(), room_count: HashMap::new(), conn_count: 2, ip_count: 1 };
        // server = 1 (0x0a), conn_count = 3 (0x18), ip_count = 4 (0x20).
        let want = [0x0a, 1, b'c', 0x18, 2, 0x20, 1];
        let bytes = logic::OnlineReq::from(o.clone()).encode_to_vec();
        assert_eq!(bytes, want);
        assert_eq!(Online::from(logic::OnlineReq::decode(bytes.as_slice()).unwrap()), o);
    }

    #[test]
    fn online_room_counts_survive_a_round_trip() {
        let o = Online {
            server: "c".into(),
            room_count: HashMap::from([("live://1".into(), 3), ("live://2".into(), 1)]),
            conn_count: 4,
            ip_count: 2,
        };
        let bytes = logic::OnlineReq::from(o.clone()).encode_to_vec();
        assert_eq!(Online::from(logic::OnlineReq::decode(bytes.as_slice()).unwrap()), o);
    }

    #[test]
    fn uplink_survives_a_round_trip() {
        let u = Uplink {
            mid: 3,
            key: "k".into(),
            frame: Frame { ver: 1, op: 4, seq: 8, body: Bytes::from_static(b"up") },
        };
        let bytes = logic::ReceiveReq::from(u.clone()).encode_to_vec();
        let back = Uplink::try_from(logic::ReceiveReq::decode(bytes.as_slice()).unwrap());
        assert_eq!(back, Ok(u));
    }

    #[test]
    fn receive_without_proto_is_an_error() {
        let r = logic::ReceiveReq { mid: 1, proto: None, key: String::new() };
        assert_eq!(Uplink::try_from(r), Err(Error::MissingField("proto")));
    }
}
