//! How many clients a cluster holds: the sum of `goim_comet_connections` over its ready comet
//! pods, read from each pod's admin port (`GET http://<pod IP>:3100/metrics`). The status
//! reports it; the connection autoscaler decides on the same readings.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::render::{Tier, config, selector_labels};

/// How long one comet may take to answer.
const TIMEOUT: Duration = Duration::from_secs(1);
/// The most of a `/metrics` answer read (a comet's is a few KB).
const MAX_ANSWER: usize = 1 << 20;

/// One comet pod's reading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reading {
    pub pod: String,
    /// `None`: it did not answer, or its answer had no connection gauge.
    pub connections: Option<i64>,
}

/// The comet pods of the cluster `name` in `namespace` (terminating ones left out), and the
/// readings of the ready ones.
pub async fn read(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<(Vec<Pod>, Vec<Reading>), kube::Error> {
    let selector = selector_labels(name, Tier::Comet)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let list = Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&selector))
        .await?;
    let pods: Vec<Pod> = list.items.into_iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
    let reads = pods.iter().filter(|p| is_ready(p)).filter_map(|p| Some((p.name_any(), ip(p)?))).map(
        |(pod, ip)| async move {
            let connections = scrape(SocketAddr::new(ip, config::COMET_ADMIN)).await;
            Reading { pod, connections }
        },
    );
    let readings = futures_util::future::join_all(reads).await;
    Ok((pods, readings))
}

/// Whether the pod is ready and not terminating.
pub fn is_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn ip(pod: &Pod) -> Option<IpAddr> {
    pod.status.as_ref()?.pod_ip.as_deref()?.parse().ok()
}

/// `goim_comet_connections` (summed over its transports) from `addr`'s `/metrics`.
pub async fn scrape(addr: SocketAddr) -> Option<i64> {
    let io = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let request = format!("GET /metrics HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut answer = Vec::new();
        stream.take(MAX_ANSWER as u64).read_to_end(&mut answer).await.ok()?;
        Some(answer)
    };
    let answer = tokio::time::timeout(TIMEOUT, io).await.ok()??;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return None;
    }
    connections(body)
}

/// The sum of every `goim_comet_connections` sample in a Prometheus text exposition.
pub fn connections(exposition: &str) -> Option<i64> {
    let mut total = None;
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix("goim_comet_connections") else { continue };
        // Not goim_comet_connections_total or another metric sharing the prefix.
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue;
        }
        let value = rest.rsplit_once(' ').map(|(_, v)| v.trim())?;
        let v: f64 = value.parse().ok()?;
        *total.get_or_insert(0) += v as i64;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::connections;

    #[test]
    fn the_gauge_is_summed_over_transports_and_nothing_else_is() {
        let text = "# HELP goim_comet_connections Authenticated connections held.\n\
            # TYPE goim_comet_connections gauge\n\
            goim_comet_connections{transport=\"tcp\"} 3\n\
            goim_comet_connections{transport=\"websocket\"} 4\n\
            goim_comet_connections_total 99\n\
            goim_comet_connects_total{transport=\"tcp\"} 7\n";
        assert_eq!(connections(text), Some(7));
        assert_eq!(connections("goim_comet_rooms 2\n"), None, "no gauge: no reading");
        assert_eq!(connections("goim_comet_connections{transport=\"tcp\"} x\n"), None);
    }
}
