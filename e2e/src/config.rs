//! What a test node is: its name, its pod range and bridge, where it keeps pod files, and which
//! local directory stands in for each image.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use k8s_openapi::api::core::v1::Taint;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("pod_cidr: {0:?} is not an IPv4 network `a.b.c.d/n` with n in 8..=30")]
    Cidr(String),
    #[error("bridge: {0:?} must be 1 to 15 characters of [a-z0-9-]")]
    Bridge(String),
    #[error("node_name: {0:?} is not a DNS subdomain")]
    NodeName(String),
    #[error("image: {0:?} is not `IMAGE=DIR`")]
    Image(String),
    #[error("kube_proxy needs kubeconfig (the file kube-proxy reads)")]
    KubeProxyConfig,
}

/// The test node's settings. [`Config::new`] gives the defaults a single node uses.
#[derive(Clone, Debug)]
pub struct Config {
    /// The Node object's name (default `e2e-node-0`).
    pub node_name: String,
    /// The node's pod range: the bridge takes the first address, pods the following ones.
    /// Default 10.250.0.0/24, outside the 10.244.0.0/16 that scripts/k8s.sh routes to `lo`.
    pub pod_cidr: Cidr,
    /// The host bridge every pod's veth joins (default `goim-e2e0`).
    pub bridge: String,
    /// Per-pod files (volumes, logs), under `pods/<uid>` (default /var/tmp/goim-e2e-node/<node>).
    pub state_dir: PathBuf,
    /// Where each image's binaries are: a container's command is looked up there first.
    pub images: Vec<Image>,
    /// Labels besides the usual `kubernetes.io/hostname`, `kubernetes.io/os` and `kubernetes.io/arch`.
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    /// Given to pods as KUBERNETES_SERVICE_HOST/PORT (an address pods can reach the API server at).
    pub kubernetes_service: Option<SocketAddr>,
    /// The API server's `host:port` (the kubeconfig's server): forwarded from the bridge address,
    /// port 443, which pods reach as `kubernetes.default.svc` (src/proxy.rs). `None`: pods get no
    /// API server unless `kubernetes_service` says where one is.
    pub api_server: Option<String>,
    /// kube-proxy's binary: run and supervised in nftables mode for Service traffic (one node per
    /// host). `None`: Services carry no traffic; only their names resolve.
    pub kube_proxy: Option<PathBuf>,
    /// The kubeconfig file kube-proxy uses (the node's own).
    pub kubeconfig: Option<PathBuf>,
    /// Delete the Node object on shutdown (a kubelet keeps it; tests clean up).
    pub delete_node_on_exit: bool,
    /// The node Lease's duration; it is renewed every quarter of it.
    pub lease_duration: Duration,
}

impl Config {
    pub fn new(node_name: impl Into<String>) -> Config {
        let node_name = node_name.into();
        Config {
            state_dir: PathBuf::from("/var/tmp/goim-e2e-node").join(&node_name),
            node_name,
            pod_cidr: Cidr { network: Ipv4Addr::new(10, 250, 0, 0), prefix: 24 },
            bridge: "goim-e2e0".into(),
            images: Vec::new(),
            labels: BTreeMap::new(),
            taints: Vec::new(),
            kubernetes_service: None,
            api_server: None,
            kube_proxy: None,
            kubeconfig: None,
            delete_node_on_exit: false,
            lease_duration: Duration::from_secs(40),
        }
    }

    pub fn validate(&self) -> Result<(), Error> {
        let n = &self.node_name;
        let dns = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
        if n.is_empty() || n.len() > 253 || !n.chars().all(dns) {
            return Err(Error::NodeName(n.clone()));
        }
        let b = &self.bridge;
        if b.is_empty() || b.len() > 15 || !b.chars().all(|c| dns(c) && c != '.') {
            return Err(Error::Bridge(b.clone()));
        }
        if self.kube_proxy.is_some() && self.kubeconfig.is_none() {
            return Err(Error::KubeProxyConfig);
        }
        Ok(())
    }

    /// The directory standing in for `image`: an exact match first, then by repository
    /// (`goim-rs:0.1.0` and `registry.local/goim-rs` both match `goim-rs`).
    pub fn image_dir(&self, image: &str) -> Option<&Path> {
        let repository =
            image.rsplit_once(':').filter(|(_, tag)| !tag.contains('/')).map_or(image, |(r, _)| r);
        let last = repository.rsplit('/').next().unwrap_or(repository);
        [image, repository, last]
            .iter()
            .find_map(|want| self.images.iter().find(|i| i.name == *want))
            .map(|i| i.dir.as_path())
    }
}

/// An image name and the local directory holding its binaries (`goim-rs=target/release`).
#[derive(Clone, Debug)]
pub struct Image {
    pub name: String,
    pub dir: PathBuf,
}

impl FromStr for Image {
    type Err = Error;
    fn from_str(s: &str) -> Result<Image, Error> {
        match s.split_once('=') {
            Some((name, dir)) if !name.is_empty() && !dir.is_empty() => {
                Ok(Image { name: name.to_owned(), dir: PathBuf::from(dir) })
            }
            _ => Err(Error::Image(s.to_owned())),
        }
    }
}

/// An IPv4 network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub network: Ipv4Addr,
    pub prefix: u8,
}

impl Cidr {
    /// The `n`th address of the network (0 is the network address itself).
    pub fn host(&self, n: u32) -> Option<Ipv4Addr> {
        (n > 0 && n < self.size() - 1).then(|| Ipv4Addr::from(u32::from(self.network) + n))
    }

    pub fn size(&self) -> u32 {
        1 << (32 - self.prefix)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX << (32 - self.prefix);
        u32::from(ip) & mask == u32::from(self.network)
    }

    /// The bridge's (and the node's) address: the first host.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = Error;
    fn from_str(s: &str) -> Result<Cidr, Error> {
        let bad = || Error::Cidr(s.to_owned());
        let (ip, prefix) = s.split_once('/').ok_or_else(bad)?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        if !(8..=30).contains(&prefix) {
            return Err(bad());
        }
        let cidr = Cidr { network: ip, prefix };
        // The network address itself, not a host inside it.
        if !cidr.contains(ip) || u32::from(ip) & !(u32::MAX << (32 - prefix)) != 0 {
            return Err(bad());
        }
        Ok(cidr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parses_a_network_and_rejects_a_host_address() {
        let c: Cidr = "10.250.3.0/24".parse().unwrap();
        assert_eq!(c.gateway(), Ipv4Addr::new(10, 250, 3, 1));
        assert_eq!(c.host(254), Some(Ipv4Addr::new(10, 250, 3, 254)));
        assert_eq!(c.host(255), None);
        assert!(c.contains(Ipv4Addr::new(10, 250, 3, 77)));
        assert!(!c.contains(Ipv4Addr::new(10, 250, 4, 1)));
        assert!("10.250.3.5/24".parse::<Cidr>().is_err());
        assert!("10.250.3.0/31".parse::<Cidr>().is_err());
        assert!("nonsense".parse::<Cidr>().is_err());
    }

    #[test]
    fn image_dir_matches_by_repository_without_tag_or_registry() {
        let mut c = Config::new("n");
        c.images.push("goim-rs=/opt/goim".parse().unwrap());
        assert_eq!(c.image_dir("goim-rs:0.1.0"), Some(Path::new("/opt/goim")));
        assert_eq!(c.image_dir("registry.local:5000/goim-rs:0.1.0"), Some(Path::new("/opt/goim")));
        assert_eq!(c.image_dir("other:1"), None);
    }
}
