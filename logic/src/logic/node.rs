//! What clients and operators are told about the comets: `/goim/nodes/weighted` (goim's
//! `NodesReply`) and `/goim/nodes/instances` (goim's discovery instances).

use std::collections::{BTreeMap, HashSet};
use std::time::{SystemTime, UNIX_EPOCH};

use goim_api::Online;

use serde::Serialize;

use super::online::{ONLINE_TICK, View};
use super::{Error, Logic};

/// How many comets `nodes_weighted` returns (goim's `_maxNodes`).
const MAX_NODES: usize = 5;

/// goim's `pb.NodesReply` as JSON: Go's `omitempty` on every field, fields in proto order.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Nodes {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub domain: String,
    #[serde(skip_serializing_if = "is_zero")]
    pub tcp_port: i32,
    #[serde(skip_serializing_if = "is_zero")]
    pub ws_port: i32,
    #[serde(skip_serializing_if = "is_zero")]
    pub wss_port: i32,
    /// The client heartbeat interval in seconds.
    #[serde(skip_serializing_if = "is_zero")]
    pub heartbeat: i32,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<String>,
    pub backoff: Backoff,
    #[serde(skip_serializing_if = "is_zero")]
    pub heartbeat_max: i32,
}

/// goim's `pb.Backoff`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Backoff {
    #[serde(skip_serializing_if = "is_zero")]
    pub max_delay: i32,
    #[serde(skip_serializing_if = "is_zero")]
    pub base_delay: i32,
    #[serde(skip_serializing_if = "is_zero_f32")]
    pub factor: f32,
    #[serde(skip_serializing_if = "is_zero_f32")]
    pub jitter: f32,
}

/// One comet in goim's discovery-instance shape. goim-rs has no discovery service here, so
/// `hostname` is the server id, `latest_timestamp` the time of its last online report (ns), and
/// `metadata` carries its `conn_count` and `ip_count` as strings, as discovery does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Instance {
    pub region: String,
    pub zone: String,
    pub env: String,
    pub appid: String,
    pub hostname: String,
    pub addrs: Vec<String>,
    pub version: String,
    pub latest_timestamp: i64,
    /// Sorted keys, as Go encodes a map.
    pub metadata: BTreeMap<String, String>,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

fn is_zero_f32(n: &f32) -> bool {
    *n == 0.0
}

impl Logic {
    /// Where a client should connect. `nodes` lists up to 5 live comets, fewest connections first:
    /// for `platform == "web"` each server id + `node.host_domain`, otherwise the server ids; or
    /// `node.default_domain` alone when no comet reports.
    ///
    /// This simplifies goim's balancer (weights from discovery metadata, a moving connection
    /// estimate, and a region bonus that its stub location lookup never applied) to sorting by
    /// reported connection count. `client_ip` is accepted for that region lookup and unused.
    pub async fn nodes_weighted(&self, platform: &str, _client_ip: &str) -> Result<Nodes, Error> {
        let view = self.view(ONLINE_TICK).await?;
        let node = &self.config.node;
        let mut servers: Vec<(i64, &str)> =
            self.offered(&view).map(|(o, _)| (o.conn_count, o.server.as_str())).collect();
        servers.sort();
        let mut nodes: Vec<String> = servers
            .into_iter()
            .take(MAX_NODES)
            .map(
                |(_, server)| {
                    if platform == "web" { format!("{server}{}", node.host_domain) } else { server.into() }
                },
            )
            .collect();
        if nodes.is_empty() {
            nodes.push(node.default_domain.clone());
        }
        Ok(Nodes {
            domain: node.default_domain.clone(),
            tcp_port: node.tcp_port.into(),
            ws_port: node.ws_port.into(),
            wss_port: node.wss_port.into(),
            // validate() bounds the heartbeat to i32 seconds.
            heartbeat: i32::try_from(node.heartbeat.as_secs()).unwrap_or(i32::MAX),
            nodes,
            backoff: Backoff {
                max_delay: node.backoff.max_delay,
                base_delay: node.backoff.base_delay,
                factor: node.backoff.factor,
                jitter: node.backoff.jitter,
            },
            heartbeat_max: i32::try_from(node.heartbeat_max).unwrap_or(i32::MAX),
        })
    }

    /// Every live comet, sorted by server id.
    pub async fn nodes_instances(&self) -> Result<Vec<Instance>, Error> {
        let view = self.view(ONLINE_TICK).await?;
        Ok(self
            .offered(&view)
            .map(|(online, updated)| Instance {
                region: String::new(),
                zone: String::new(),
                env: String::new(),
                appid: "goim.comet".into(),
                hostname: online.server.clone(),
                addrs: Vec::new(),
                version: String::new(),
                latest_timestamp: unix_nanos(*updated),
                metadata: BTreeMap::from([
                    ("conn_count".to_string(), online.conn_count.to_string()),
                    ("ip_count".to_string(), online.ip_count.to_string()),
                ]),
            })
            .collect())
    }
}

impl Logic {
    /// The reporting comets that may be offered: all of them, or only the ready ones when a
    /// [`Comets`](crate::comet::CometDirectory) port is plugged in.
    fn offered<'a>(&self, view: &'a View) -> impl Iterator<Item = &'a (Online, SystemTime)> {
        let ready: Option<HashSet<String>> = self.comets.as_ref().map(|c| c.ready().into_iter().collect());
        view.servers.iter().filter(move |(o, _)| ready.as_ref().is_none_or(|r| r.contains(&o.server)))
    }
}

fn unix_nanos(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}
