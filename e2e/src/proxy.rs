//! Service traffic: the API server for pods, and kube-proxy for every other Service.
//!
//! - The API server listens on the host's loopback, which a pod's namespace cannot reach. The node
//!   listens on its bridge address, port 443, and forwards each TCP connection to the API server;
//!   pods find it as `kubernetes.default.svc` ([`crate::names`]), a name its serving certificate
//!   holds, so in-cluster clients verify TLS as in a cluster.
//! - kube-proxy (built by scripts/k8s.sh from the control plane's own module and version) runs in
//!   nftables mode on the host, supervised by the node: ClusterIP traffic from the host and from
//!   pods reaches the Service's ready endpoints. It programs one nft table for the whole host, so
//!   one node per host runs it. At shutdown the node stops it and deletes its tables.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

/// The port pods reach the API server at (the `kubernetes` Service's port).
pub const API_PORT: u16 = 443;

/// Accepts on `listen` until `shutdown`, forwarding each connection to `upstream`.
pub async fn forward_api(listener: TcpListener, upstream: String, shutdown: CancellationToken) {
    loop {
        let (inbound, peer) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "API forwarder: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => return,
        };
        let upstream = upstream.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut inbound = inbound;
            let mut outbound = match TcpStream::connect(&upstream).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, %peer, %upstream, "API forwarder: upstream unreachable");
                    return;
                }
            };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                () = shutdown.cancelled() => {}
            }
        });
    }
}

/// The API server's `host:port` from a kubeconfig's server URL (`https://host[:port][/path]`).
pub fn upstream(server: &str) -> Option<String> {
    let authority = server.strip_prefix("https://")?.split('/').next().filter(|a| !a.is_empty())?;
    let has_port = authority.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok());
    Some(if has_port { authority.to_owned() } else { format!("{authority}:443") })
}

/// What kube-proxy is given.
#[derive(Clone, Debug)]
pub struct KubeProxy {
    pub binary: PathBuf,
    pub kubeconfig: PathBuf,
    pub node_name: String,
    pub cluster_cidr: String,
    /// Its configuration file and log go here.
    pub dir: PathBuf,
}

impl KubeProxy {
    fn config(&self, healthz: u16, metrics: u16) -> String {
        // healthz and metrics on loopback, on ports that were free at start; conntrack left as the host has it
        // (maxPerCore 0); NodePorts only at the node's InternalIP (the bridge address), never on
        // the host's other interfaces.
        format!(
            "apiVersion: kubeproxy.config.k8s.io/v1alpha1\n\
             kind: KubeProxyConfiguration\n\
             mode: nftables\n\
             clientConnection:\n  kubeconfig: {kubeconfig}\n\
             hostnameOverride: {node}\n\
             clusterCIDR: {cidr}\n\
             detectLocalMode: ClusterCIDR\n\
             healthzBindAddress: 127.0.0.1:{healthz}\n\
             metricsBindAddress: 127.0.0.1:{metrics}\n\
             nodePortAddresses: [primary]\n\
             conntrack:\n  maxPerCore: 0\n  min: 0\n",
            kubeconfig = self.kubeconfig.display(),
            node = self.node_name,
            cidr = self.cluster_cidr,
        )
    }

    /// Runs kube-proxy until `shutdown`, restarting it a second after it exits; then stops it
    /// and removes the nft tables it made.
    pub async fn run(self, shutdown: CancellationToken) {
        if let Err(e) = std::fs::create_dir_all(&self.dir) {
            tracing::error!(error = %e, "kube-proxy: no directory; Services will not carry traffic");
            return;
        }
        let config = self.dir.join("kube-proxy.yaml");
        let ports = (free_port(), free_port());
        let (Ok(healthz), Ok(metrics)) = ports else {
            tracing::error!("kube-proxy: no free port on 127.0.0.1");
            return;
        };
        if let Err(e) = std::fs::write(&config, self.config(healthz, metrics)) {
            tracing::error!(error = %e, "kube-proxy: config not written");
            return;
        }
        let log = self.dir.join("kube-proxy.log");
        loop {
            let child = open_log(&log).and_then(|(out, err)| {
                Command::new(&self.binary)
                    .arg(format!("--config={}", config.display()))
                    .arg("--v=1")
                    .stdout(out)
                    .stderr(err)
                    .kill_on_drop(true)
                    .spawn()
            });
            let mut child = match child {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, binary = %self.binary.display(), "kube-proxy not started");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        () = shutdown.cancelled() => break,
                    }
                }
            };
            tracing::info!(pid = child.id(), log = %log.display(), "kube-proxy started (nftables)");
            tokio::select! {
                s = child.wait() => {
                    tracing::warn!(status = ?s, log = %log.display(), "kube-proxy exited; restarting in 1 s");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        () = shutdown.cancelled() => break,
                    }
                }
                () = shutdown.cancelled() => {
                    if let Some(pid) = child.id() {
                        // SAFETY: kill has no memory-safety preconditions.
                        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
                    }
                    if tokio::time::timeout(Duration::from_secs(5), child.wait()).await.is_err() {
                        let _ = child.kill().await;
                    }
                    break;
                }
            }
        }
        cleanup().await;
    }
}

/// A port free on 127.0.0.1 now (kube-proxy takes no port 0).
fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn open_log(path: &Path) -> std::io::Result<(std::fs::File, std::fs::File)> {
    let f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    Ok((f.try_clone()?, f))
}

/// Deletes kube-proxy's nft tables (`kube-proxy` in the ip and ip6 families).
pub async fn cleanup() {
    for family in ["ip", "ip6"] {
        let _ = Command::new("nft").args(["delete", "table", family, "kube-proxy"]).output().await;
    }
}

/// Routing between pods and to ClusterIPs crosses the host: forwarding on.
pub fn enable_forwarding() -> std::io::Result<()> {
    let path = "/proc/sys/net/ipv4/ip_forward";
    if std::fs::read_to_string(path)?.trim() != "1" {
        std::fs::write(path, "1")?;
        tracing::info!("net.ipv4.ip_forward set to 1");
    }
    Ok(())
}

/// The bridge address and port pods reach the API server at.
pub fn api_listen(bridge: std::net::Ipv4Addr) -> SocketAddr {
    SocketAddr::from((bridge, API_PORT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_is_the_servers_host_and_port() {
        assert_eq!(upstream("https://127.0.0.1:36443").as_deref(), Some("127.0.0.1:36443"));
        assert_eq!(upstream("https://api.example/").as_deref(), Some("api.example:443"));
        assert_eq!(upstream("http://127.0.0.1:8080"), None, "pods get TLS or nothing");
    }

    #[test]
    fn the_config_names_the_node_the_range_and_nftables() {
        let p = KubeProxy {
            binary: "kube-proxy".into(),
            kubeconfig: "/k/kubeconfig".into(),
            node_name: "e2e-node-0".into(),
            cluster_cidr: "10.250.0.0/24".into(),
            dir: PathBuf::new(),
        };
        let c = p.config(10256, 10249);
        for want in [
            "mode: nftables",
            "kubeconfig: /k/kubeconfig",
            "hostnameOverride: e2e-node-0",
            "clusterCIDR: 10.250.0.0/24",
        ] {
            assert!(c.contains(want), "{want} in {c}");
        }
    }

    #[tokio::test]
    async fn the_forwarder_carries_bytes_both_ways() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let upstream_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up = upstream_listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut s, _) = upstream_listener.accept().await.unwrap();
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(&buf.map(|b| b.to_ascii_uppercase())).await.unwrap();
        });
        let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = front.local_addr().unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(forward_api(front, up, stop.clone()));
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"PING");
        stop.cancel();
    }
}
