//! Follows the names in `[logic] addrs`. In Kubernetes the address is a headless Service, one
//! A record per logic pod; one channel for the name would connect to one pod and stay there, so
//! every comet would pin to one logic and a new logic pod would get no calls. Instead each name
//! is resolved at start and every `resolve_interval`, and stands for one [`Instance`] per
//! address it resolves to:
//!
//! - an address that stays keeps its instance (and its connection);
//! - a vanished one is dropped from the set (calls already on it finish);
//! - a new one gets a new instance;
//! - a failed or empty resolution keeps the last set (warned once per outage);
//! - until the name first resolves, its own lazy channel stands in (comet starts regardless).
//!
//! IP literals are never resolved: one instance each, as configured.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Weak};

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Endpoint, Uri};
use tracing::{info, warn};

use super::{ClientConfig, Instance, Shared, endpoint};

#[cfg(test)]
mod tests;

/// Name resolution: the system's in production, scripted in tests.
#[async_trait]
pub(super) trait Resolve: Send + Sync + 'static {
    /// The addresses `host:port` stands for now. May take as long as the system resolver does;
    /// an empty answer is treated as a failure.
    async fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>>;
}

/// getaddrinfo, through tokio: `/etc/hosts`, then DNS.
pub(super) struct Dns;

#[async_trait]
impl Resolve for Dns {
    async fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        Ok(tokio::net::lookup_host((host, port)).await?.collect())
    }
}

/// One entry of `[logic] addrs`.
pub(super) enum Target {
    /// An IP literal: one instance, never resolved.
    Ip(Instance),
    /// A host name: the instances of the addresses it resolved to.
    Name(Name),
}

pub(super) struct Name {
    /// As configured, for logs.
    addr: String,
    host: String,
    port: u16,
    scheme: String,
    /// The configured URI: sent as `:authority` by the instances of the resolved addresses.
    origin: Uri,
    /// A channel for the name itself, used until the name first resolves.
    own: Instance,
    /// The addresses of the last successful resolution; empty until there is one.
    resolved: BTreeMap<SocketAddr, Instance>,
    /// Whether the last resolution failed (so an outage is warned once, not every interval).
    failing: bool,
}

impl Target {
    pub(super) fn new(config: &ClientConfig, addr: &str) -> Result<Target, tonic::transport::Error> {
        let ep = endpoint(addr)?;
        let uri = ep.uri().clone();
        let host = uri.host().unwrap_or_default();
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || bare.parse::<IpAddr>().is_ok() {
            return Ok(Target::Ip(Instance::new(config, ep, addr.to_owned())));
        }
        let scheme = uri.scheme_str().unwrap_or("http").to_owned();
        let port = uri.port_u16().unwrap_or(if scheme == "https" { 443 } else { 80 });
        Ok(Target::Name(Name {
            addr: addr.to_owned(),
            host: host.to_owned(),
            port,
            scheme,
            origin: uri,
            own: Instance::new(config, ep, addr.to_owned()),
            resolved: BTreeMap::new(),
            failing: false,
        }))
    }

    pub(super) fn is_named(&self) -> bool {
        matches!(self, Target::Name(_))
    }
}

/// The instances of every target, in the order configured; never empty while `targets` is not.
pub(super) fn current(targets: &[Target]) -> Arc<[Instance]> {
    let mut all = Vec::new();
    for target in targets {
        match target {
            Target::Ip(i) => all.push(i.clone()),
            Target::Name(n) if n.resolved.is_empty() => all.push(n.own.clone()),
            Target::Name(n) => all.extend(n.resolved.values().cloned()),
        }
    }
    all.into()
}

/// The resolver task: resolves every name now and then every `config.resolve_interval`, and
/// publishes the instances when they change. Holds only a `Weak` to the client, and ends when
/// `stop` is cancelled (by the client's last clone dropping) or the client is gone.
pub(super) async fn run(
    shared: Weak<Shared>,
    mut targets: Vec<Target>,
    resolve: Arc<dyn Resolve>,
    config: ClientConfig,
    stop: CancellationToken,
) {
    loop {
        if shared.strong_count() == 0 {
            return;
        }
        let pass = async {
            let mut changed = false;
            for target in &mut targets {
                if let Target::Name(name) = target {
                    changed |= name.refresh(&*resolve, &config).await;
                }
            }
            changed
        };
        let changed = tokio::select! {
            _ = stop.cancelled() => return,
            changed = pass => changed,
        };
        if changed {
            let Some(shared) = shared.upgrade() else { return };
            shared.publish(current(&targets));
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(config.resolve_interval) => {}
        }
    }
}

impl Name {
    /// Resolves the name once; true if its set of instances changed.
    async fn refresh(&mut self, resolve: &dyn Resolve, config: &ClientConfig) -> bool {
        let addrs: BTreeSet<SocketAddr> = match resolve.resolve(&self.host, self.port).await {
            Ok(addrs) if !addrs.is_empty() => addrs.into_iter().collect(),
            Ok(_) => {
                self.failed(&"no addresses");
                return false;
            }
            Err(e) => {
                self.failed(&e);
                return false;
            }
        };
        if std::mem::take(&mut self.failing) {
            info!(addr = %self.addr, "logic address resolves again");
        }
        if addrs.iter().eq(self.resolved.keys()) {
            return false;
        }
        let mut old = std::mem::take(&mut self.resolved);
        let mut added = Vec::new();
        for addr in addrs {
            let instance = old.remove(&addr).unwrap_or_else(|| {
                added.push(addr);
                self.instance(config, addr)
            });
            self.resolved.insert(addr, instance);
        }
        let removed: Vec<SocketAddr> = old.into_keys().collect();
        info!(addr = %self.addr, ?added, ?removed, "logic instances changed");
        true
    }

    /// Records a failed resolution; true if it was warned about (the first of an outage).
    fn failed(&mut self, error: &dyn Display) -> bool {
        if std::mem::replace(&mut self.failing, true) {
            return false;
        }
        if self.resolved.is_empty() {
            warn!(addr = %self.addr, error = %error, "resolving logic address failed, dialing the name as is");
        } else {
            let keeping: Vec<&SocketAddr> = self.resolved.keys().collect();
            warn!(addr = %self.addr, error = %error, ?keeping, "resolving logic address failed, keeping the last addresses");
        }
        true
    }

    fn instance(&self, config: &ClientConfig, addr: SocketAddr) -> Instance {
        // A scheme and a socket address always make a valid URI.
        let ep = Endpoint::from_shared(format!("{}://{addr}", self.scheme))
            .expect("socket address URI")
            .origin(self.origin.clone());
        Instance::new(config, ep, addr.to_string())
    }
}
