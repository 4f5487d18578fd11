//! Fuzzes the gRPC services with arbitrary protobuf, as a peer reaches them: comet's
//! `goim.comet.Comet` (what job calls to push) and logic's `goim.logic.Logic` (what comets call
//! for sessions and online reports). Each request is decoded with prost as tonic decodes it off
//! the wire (a message that fails to decode, or is over the server's `grpc.max_message_size`, is
//! refused there and never reaches a handler, so it is skipped) and handed to the real handler
//! through the generated service trait.
//!
//! An input is a sequence of calls, so a call meets the state earlier ones left (a heartbeat of
//! a key that connected, a second comet's report on the same rooms): each call is one byte that
//! picks the method, a protobuf varint length, and that many bytes of request message (all that
//! is left, when fewer). logic is built afresh for each input (memory store and queue), so an
//! input replays on its own; comet is built once, as its handlers keep no state without clients.
//!
//! Besides "no panic": comet refuses only with `InvalidArgument` and has no rooms; logic over the
//! memory store (which never fails) refuses only with `Unauthenticated` or `InvalidArgument`; an
//! accepted connect has a key; a node list has 1 to 5 entries.

#![no_main]

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use goim_api::pb::comet::comet_server::Comet as _;
use goim_api::pb::logic::logic_server::Logic as _;
use goim_api::{Connect, Online, Presence, Session, Uplink};
use goim_logic::config::AuthMode;
use goim_logic::{MemoryStore, queue};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use tonic::{Code, Request, Response, Status};

/// The methods in the order the first byte of a call picks them (modulo their number).
const METHODS: u8 = 10;

struct Setup {
    rt: tokio::runtime::Runtime,
    comet: goim_comet::grpc::Service,
    /// Each server's configured `grpc.max_message_size` (tonic's decoding limit).
    comet_max: usize,
    logic_max: usize,
}

static SETUP: LazyLock<Setup> = LazyLock::new(|| {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    let comet = {
        let _in_runtime = rt.enter();
        let config = goim_comet::Config { server_id: "comet-fuzz".into(), ..goim_comet::Config::default() };
        config.validate().expect("the default config with a server id is valid");
        goim_comet::Comet::new(config, Arc::new(NoLogic), Arc::new(goim_comet::Metrics::default()))
    };
    Setup {
        rt,
        comet: goim_comet::grpc::Service::new(comet),
        comet_max: goim_kit::grpc::ServerConfig::default().max_message_size,
        logic_max: goim_kit::grpc::ServerConfig::default().max_message_size,
    }
});

/// comet's logic port. No client ever connects to the fuzzed comet, so it is never called.
struct NoLogic;

#[async_trait]
impl goim_comet::Logic for NoLogic {
    async fn connect(&self, _: Connect) -> Result<Session, goim_comet::logic::Error> {
        Err(goim_comet::logic::Error::Unavailable("no logic in the fuzzer".into()))
    }
    async fn disconnect(&self, _: Presence) -> Result<(), goim_comet::logic::Error> {
        Ok(())
    }
    async fn heartbeat(&self, _: Presence) -> Result<(), goim_comet::logic::Error> {
        Ok(())
    }
    async fn renew_online(&self, _: Online) -> Result<HashMap<String, i32>, goim_comet::logic::Error> {
        Ok(HashMap::new())
    }
    async fn receive(&self, _: Uplink) -> Result<(), goim_comet::logic::Error> {
        Ok(())
    }
}

/// A logic as the embedded mode builds one, in goim's JSON token mode (so connects succeed and
/// leave sessions for the later calls), with nothing consuming its push queue (no gRPC method
/// publishes).
fn logic() -> goim_logic::grpc::Service {
    let mut config = goim_logic::Config::default();
    config.auth.mode = AuthMode::Json;
    let store = Arc::new(MemoryStore::new(config.session.mapping_ttl));
    let (queue, _) = queue::Memory::channel(16, Duration::from_millis(100));
    let logic = goim_logic::Logic::new(config, store, Arc::new(queue)).expect("json mode loads no keys");
    goim_logic::grpc::Service::new(Arc::new(logic))
}

fuzz_target!(|data: &[u8]| {
    let s = &*SETUP;
    let logic = logic();
    let mut rest = data;
    while let Some((&method, mut tail)) = rest.split_first() {
        let Ok(len) = prost::encoding::decode_varint(&mut tail) else { break };
        let len = usize::try_from(len).unwrap_or(usize::MAX).min(tail.len());
        let (message, next) = tail.split_at(len);
        rest = next;
        s.rt.block_on(call(s, &logic, method % METHODS, message));
    }
    // What the calls spawned (a broadcast's walk over the shards) runs to its end here, so
    // nothing piles up across inputs. Without clients nothing spawned waits, so this ends.
    s.rt.block_on(async {
        while tokio::runtime::Handle::current().metrics().num_alive_tasks() > 0 {
            tokio::task::yield_now().await;
        }
    });
});

/// The request tonic would hand the handler, or `None` where tonic refuses the call itself.
fn decode<M: Message + Default>(message: &[u8], max: usize) -> Option<Request<M>> {
    if message.len() > max {
        return None;
    }
    M::decode(message).ok().map(Request::new)
}

async fn call(s: &Setup, logic: &goim_logic::grpc::Service, method: u8, message: &[u8]) {
    let (c, l) = (s.comet_max, s.logic_max);
    match method {
        0 => {
            if let Some(r) = decode(message, c) {
                comet_reply(s.comet.push_msg(r).await);
            }
        }
        1 => {
            if let Some(r) = decode(message, c) {
                comet_reply(s.comet.broadcast(r).await);
            }
        }
        2 => {
            if let Some(r) = decode(message, c) {
                comet_reply(s.comet.broadcast_room(r).await);
            }
        }
        3 => {
            if let Some(r) = decode(message, c) {
                let rooms = comet_reply(s.comet.rooms(r).await).expect("rooms always answers").rooms;
                assert!(rooms.is_empty(), "a comet without clients has no rooms: {rooms:?}");
            }
        }
        4 => {
            if let Some(r) = decode(message, l) {
                if let Some(session) = logic_reply(logic.connect(r).await) {
                    assert!(!session.key.is_empty(), "an accepted connection always has a key");
                }
            }
        }
        5 => {
            if let Some(r) = decode(message, l) {
                logic_reply(logic.disconnect(r).await);
            }
        }
        6 => {
            if let Some(r) = decode(message, l) {
                logic_reply(logic.heartbeat(r).await);
            }
        }
        7 => {
            if let Some(r) = decode(message, l) {
                if let Some(reply) = logic_reply(logic.renew_online(r).await) {
                    assert!(!reply.store_epoch.is_empty(), "the memory store has an epoch");
                }
            }
        }
        8 => {
            if let Some(r) = decode(message, l) {
                logic_reply(logic.receive(r).await);
            }
        }
        _ => {
            if let Some(r) = decode(message, l) {
                let nodes = logic_reply(logic.nodes(r).await).expect("nodes never fails on memory").nodes;
                assert!((1..=5).contains(&nodes.len()), "1 to 5 nodes: {nodes:?}");
            }
        }
    }
}

/// comet's answer; every refusal is the caller's mistake.
fn comet_reply<T>(reply: Result<Response<T>, Status>) -> Option<T> {
    match reply {
        Ok(r) => Some(r.into_inner()),
        Err(status) => {
            assert_eq!(status.code(), Code::InvalidArgument, "comet refuses only bad arguments: {status:?}");
            None
        }
    }
}

/// logic's answer; over the memory store, only a token or an argument is ever refused.
fn logic_reply<T>(reply: Result<Response<T>, Status>) -> Option<T> {
    match reply {
        Ok(r) => Some(r.into_inner()),
        Err(status) => {
            assert!(
                matches!(status.code(), Code::Unauthenticated | Code::InvalidArgument),
                "the memory store never fails: {status:?}"
            );
            None
        }
    }
}
