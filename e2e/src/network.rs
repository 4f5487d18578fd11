//! Pod networking with iproute2: a host bridge holding the node's address (the pods' gateway),
//! and per pod a network namespace with one end of a veth pair as `eth0` and the other end in
//! the bridge. The host reaches every pod address through the bridge, and pods reach each other
//! across it, through real network stacks.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use parking_lot::Mutex;
use tokio::process::Command;

use crate::config::Cidr;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("`ip {args}` failed: {stderr}")]
    Command { args: String, stderr: String },
    #[error("`ip` could not be run: {0}")]
    Spawn(#[from] std::io::Error),
    #[error("the pod range {0} has no free address")]
    Exhausted(Cidr),
}

async fn ip(args: &[&str]) -> Result<(), Error> {
    let out = Command::new("ip").args(args).output().await?;
    if out.status.success() {
        return Ok(());
    }
    Err(Error::Command {
        args: args.join(" "),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    })
}

/// The host side: the bridge, created at start and removed at shutdown.
#[derive(Debug)]
pub struct Bridge {
    pub name: String,
    pub cidr: Cidr,
}

impl Bridge {
    /// Creates the bridge with the gateway address, or takes over one a previous run left.
    pub async fn ensure(name: &str, cidr: Cidr) -> Result<Bridge, Error> {
        if ip(&["link", "show", "dev", name]).await.is_err() {
            ip(&["link", "add", name, "type", "bridge"]).await?;
        }
        let gateway = format!("{}/{}", cidr.gateway(), cidr.prefix);
        // `replace`: no error when a previous run left the address in place.
        ip(&["addr", "replace", &gateway, "dev", name]).await?;
        ip(&["link", "set", name, "up"]).await?;
        Ok(Bridge { name: name.to_owned(), cidr })
    }

    pub async fn remove(&self) -> Result<(), Error> {
        ip(&["link", "del", &self.name]).await
    }
}

/// Addresses of the pod range in use. The gateway (first host) is never handed out.
#[derive(Debug)]
pub struct Ipam {
    cidr: Cidr,
    used: Mutex<BTreeSet<u32>>,
}

impl Ipam {
    pub fn new(cidr: Cidr) -> Ipam {
        Ipam { cidr, used: Mutex::new(BTreeSet::new()) }
    }

    pub fn allocate(&self) -> Result<Ipv4Addr, Error> {
        let mut used = self.used.lock();
        let n = (2..self.cidr.size() - 1).find(|n| !used.contains(n)).ok_or(Error::Exhausted(self.cidr))?;
        used.insert(n);
        // n is inside the range by the bounds above.
        Ok(self.cidr.host(n).expect("a host of the range"))
    }

    pub fn release(&self, ip: Ipv4Addr) {
        self.used.lock().remove(&(u32::from(ip) - u32::from(self.cidr.network)));
    }
}

/// One pod's namespace and veth pair, named after the pod's UID.
#[derive(Debug)]
pub struct PodNetwork {
    pub netns: String,
    pub ip: Ipv4Addr,
    host_veth: String,
}

impl PodNetwork {
    pub async fn create(bridge: &Bridge, uid: &str, ip_addr: Ipv4Addr) -> Result<PodNetwork, Error> {
        let short: String = uid.chars().filter(char::is_ascii_hexdigit).take(10).collect();
        let net = PodNetwork { netns: format!("e2e-{uid}"), ip: ip_addr, host_veth: format!("ve{short}") };
        let peer = format!("vp{short}");
        // A crashed run may have left them; neither error matters.
        let _ = ip(&["netns", "del", &net.netns]).await;
        let _ = ip(&["link", "del", &net.host_veth]).await;
        if let Err(e) = net.build(bridge, &peer).await {
            net.remove().await;
            return Err(e);
        }
        Ok(net)
    }

    async fn build(&self, bridge: &Bridge, peer: &str) -> Result<(), Error> {
        let ns = self.netns.as_str();
        let addr = format!("{}/{}", self.ip, bridge.cidr.prefix);
        let gateway = bridge.cidr.gateway().to_string();
        ip(&["netns", "add", ns]).await?;
        ip(&["link", "add", &self.host_veth, "type", "veth", "peer", "name", peer]).await?;
        ip(&["link", "set", peer, "netns", ns]).await?;
        ip(&["link", "set", &self.host_veth, "master", &bridge.name, "up"]).await?;
        // A pod reaching itself through its Service's ClusterIP: the bridge sends it back.
        ip(&["link", "set", &self.host_veth, "type", "bridge_slave", "hairpin", "on"]).await?;
        ip(&["-n", ns, "link", "set", peer, "name", "eth0"]).await?;
        ip(&["-n", ns, "addr", "add", &addr, "dev", "eth0"]).await?;
        ip(&["-n", ns, "link", "set", "eth0", "up"]).await?;
        ip(&["-n", ns, "link", "set", "lo", "up"]).await?;
        ip(&["-n", ns, "route", "add", "default", "via", &gateway]).await
    }

    /// The namespace's file, for `setns`.
    pub fn netns_path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.netns)
    }

    /// Deleting the namespace deletes its veth end, and with it the host end; the explicit
    /// delete covers a namespace some process still holds open.
    pub async fn remove(&self) {
        let _ = ip(&["link", "del", &self.host_veth]).await;
        if let Err(e) = ip(&["netns", "del", &self.netns]).await {
            tracing::warn!(error = %e, netns = %self.netns, "netns not removed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipam_skips_the_gateway_and_reuses_released_addresses() {
        let ipam = Ipam::new("10.250.0.0/30".parse().unwrap());
        let a = ipam.allocate().unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 250, 0, 2));
        assert!(matches!(ipam.allocate(), Err(Error::Exhausted(_))));
        ipam.release(a);
        assert_eq!(ipam.allocate().unwrap(), a);
    }
}
