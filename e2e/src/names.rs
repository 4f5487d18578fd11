//! Service names for pods, without a DNS server: every pod gets its own `/etc/hosts` (bind-mounted
//! over the host's) listing its own name and every Service of the cluster, kept current from a
//! watch of Services and EndpointSlices, and a `/etc/resolv.conf` whose nameserver is the pod's own
//! loopback, where nothing answers: a name that is not listed fails at once instead of waiting for
//! a resolver timeout.
//!
//! A Service with a ClusterIP is listed at it (kube-proxy carries the traffic on); a headless one at
//! the addresses of its ready endpoints, one line each, the way cluster DNS answers with one A
//! record per ready pod. `kubernetes.default.svc` is the node's bridge address, where
//! [`crate::proxy`] forwards to the API server. Names take the forms a pod's resolver would
//! complete: `name.ns.svc`, `name.ns.svc.cluster.local`, `name.ns`, and `name` in the pod's own
//! namespace.
//!
//! The files are rewritten in place (the bind mount holds the inode), so a lookup that lands in
//! the middle of a rewrite can see a short file; resolvers in the pods retry.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The domain pods' names are under.
const DOMAIN: &str = "cluster.local";

/// Where a Service's name points.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Target {
    cluster_ip: Option<Ipv4Addr>,
    headless: bool,
}

/// One pod's files.
#[derive(Clone, Debug)]
struct PodFiles {
    hosts: PathBuf,
    namespace: String,
    hostname: String,
    ip: Ipv4Addr,
}

#[derive(Default)]
struct State {
    /// (namespace, name) → the Service's target.
    services: BTreeMap<(String, String), Target>,
    /// (namespace, slice name) → (service name, ready IPv4 addresses).
    slices: HashMap<(String, String), (String, BTreeSet<Ipv4Addr>)>,
    /// Pod UID → its files.
    pods: HashMap<String, PodFiles>,
}

/// The node's Service names: one per node, shared by its pods.
pub struct Names {
    /// `kubernetes.default.svc`: the node's bridge address.
    api: Ipv4Addr,
    state: Mutex<State>,
    changed: Notify,
}

impl Names {
    pub fn new(api: Ipv4Addr) -> Arc<Names> {
        Arc::new(Names { api, state: Mutex::new(State::default()), changed: Notify::new() })
    }

    /// Writes a pod's `etc-hosts` and `etc-resolv.conf` under `dir` and keeps the hosts file
    /// current until [`Names::remove`]; returns (hosts, resolv.conf) for the bind mounts.
    pub fn add(
        &self,
        uid: &str,
        dir: &Path,
        namespace: &str,
        hostname: &str,
        ip: Ipv4Addr,
    ) -> std::io::Result<(PathBuf, PathBuf)> {
        std::fs::create_dir_all(dir)?;
        let files = PodFiles {
            hosts: dir.join("etc-hosts"),
            namespace: namespace.to_owned(),
            hostname: hostname.to_owned(),
            ip,
        };
        let resolv = dir.join("etc-resolv.conf");
        std::fs::write(
            &resolv,
            format!(
                "# goim-e2e-node: no DNS server; Service names are in /etc/hosts\nnameserver 127.0.0.1\n\
                 search {namespace}.svc.{DOMAIN} svc.{DOMAIN} {DOMAIN}\noptions ndots:5 timeout:1 attempts:1\n"
            ),
        )?;
        let mut state = self.state.lock();
        write_in_place(&files.hosts, &render(&state, self.api, &files))?;
        state.pods.insert(uid.to_owned(), files.clone());
        Ok((files.hosts, resolv))
    }

    pub fn remove(&self, uid: &str) {
        self.state.lock().pods.remove(uid);
    }

    /// Watches Services and EndpointSlices and rewrites every pod's hosts file after a change
    /// (changes that come together are written once), until `shutdown`.
    pub async fn run(self: Arc<Self>, client: Client, shutdown: CancellationToken) {
        let services =
            watcher(Api::<Service>::all(client.clone()), watcher::Config::default()).default_backoff();
        let slices = watcher(Api::<EndpointSlice>::all(client), watcher::Config::default()).default_backoff();
        let writer = {
            let names = self.clone();
            let shutdown = shutdown.clone();
            async move {
                loop {
                    tokio::select! {
                        () = names.changed.notified() => {}
                        () = shutdown.cancelled() => return,
                    }
                    // Coalesces a burst (a relist, a rollout's many slice updates).
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    names.write_all();
                }
            }
        };
        let watch = async {
            tokio::pin!(services, slices);
            // The keys a relist has shown so far, per watch.
            let (mut listed_services, mut listed_slices) = (None::<BTreeSet<_>>, None::<BTreeSet<_>>);
            loop {
                tokio::select! {
                    e = services.next() => match e {
                        None => return,
                        Some(Err(e)) => tracing::warn!(error = %e, "service watch failed; retrying"),
                        Some(Ok(e)) => self.service_event(e, &mut listed_services),
                    },
                    e = slices.next() => match e {
                        None => return,
                        Some(Err(e)) => tracing::warn!(error = %e, "endpointslice watch failed; retrying"),
                        Some(Ok(e)) => self.slice_event(e, &mut listed_slices),
                    },
                }
            }
        };
        tokio::select! {
            () = watch => {}
            () = writer => {}
            () = shutdown.cancelled() => {}
        }
    }

    fn service_event(&self, e: watcher::Event<Service>, listed: &mut Option<BTreeSet<(String, String)>>) {
        let mut state = self.state.lock();
        match e {
            watcher::Event::Init => *listed = Some(BTreeSet::new()),
            watcher::Event::InitApply(s) | watcher::Event::Apply(s) => {
                let key = key(&s);
                if let Some(l) = listed {
                    l.insert(key.clone());
                }
                state.services.insert(key, target(&s));
            }
            watcher::Event::InitDone => {
                if let Some(l) = listed.take() {
                    state.services.retain(|k, _| l.contains(k));
                }
            }
            watcher::Event::Delete(s) => {
                state.services.remove(&key(&s));
            }
        }
        drop(state);
        self.changed.notify_one();
    }

    fn slice_event(&self, e: watcher::Event<EndpointSlice>, listed: &mut Option<BTreeSet<(String, String)>>) {
        let mut state = self.state.lock();
        match e {
            watcher::Event::Init => *listed = Some(BTreeSet::new()),
            watcher::Event::InitApply(s) | watcher::Event::Apply(s) => {
                let key = (s.namespace().unwrap_or_default(), s.name_any());
                if let Some(l) = listed {
                    l.insert(key.clone());
                }
                match slice(&s) {
                    Some(v) => state.slices.insert(key, v),
                    None => state.slices.remove(&key),
                };
            }
            watcher::Event::InitDone => {
                if let Some(l) = listed.take() {
                    state.slices.retain(|k, _| l.contains(k));
                }
            }
            watcher::Event::Delete(s) => {
                state.slices.remove(&(s.namespace().unwrap_or_default(), s.name_any()));
            }
        }
        drop(state);
        self.changed.notify_one();
    }

    fn write_all(&self) {
        let state = self.state.lock();
        for files in state.pods.values() {
            if let Err(e) = write_in_place(&files.hosts, &render(&state, self.api, files)) {
                tracing::warn!(error = %e, file = %files.hosts.display(), "hosts file not written");
            }
        }
    }
}

fn key(s: &Service) -> (String, String) {
    (s.namespace().unwrap_or_default(), s.name_any())
}

fn target(s: &Service) -> Target {
    let ip = s.spec.as_ref().and_then(|s| s.cluster_ip.as_deref());
    Target { cluster_ip: ip.and_then(|ip| ip.parse().ok()), headless: ip == Some("None") }
}

/// The Service a slice belongs to and its ready IPv4 addresses (`None`: a slice of no Service).
fn slice(s: &EndpointSlice) -> Option<(String, BTreeSet<Ipv4Addr>)> {
    let service = s.labels().get("kubernetes.io/service-name")?.clone();
    let ready = s
        .endpoints
        .iter()
        .flatten()
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
        .flat_map(|e| e.addresses.iter())
        .filter_map(|a| a.parse().ok())
        .collect();
    Some((service, ready))
}

/// A pod's hosts file as the state stands.
fn render(state: &State, api: Ipv4Addr, pod: &PodFiles) -> String {
    let mut out = String::from("# goim-e2e-node: this pod's names and the cluster's Services\n");
    out.push_str("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    let _ = writeln!(out, "{}\t{}", pod.ip, pod.hostname);
    let line = |out: &mut String, ip: Ipv4Addr, ns: &str, name: &str| {
        let _ = write!(out, "{ip}\t{name}.{ns}.svc {name}.{ns}.svc.{DOMAIN} {name}.{ns}");
        if ns == pod.namespace {
            let _ = write!(out, " {name}");
        }
        out.push('\n');
    };
    line(&mut out, api, "default", "kubernetes");
    let mut headless: BTreeMap<(&str, &str), BTreeSet<Ipv4Addr>> = BTreeMap::new();
    for ((ns, _), (service, ips)) in &state.slices {
        headless.entry((ns, service)).or_default().extend(ips);
    }
    for ((ns, name), t) in &state.services {
        if ns == "default" && name == "kubernetes" {
            continue;
        }
        if let Some(ip) = t.cluster_ip {
            line(&mut out, ip, ns, name);
        } else if t.headless {
            for ip in headless.get(&(ns.as_str(), name.as_str())).into_iter().flatten() {
                line(&mut out, *ip, ns, name);
            }
        }
    }
    out
}

/// Truncates and writes the same file: a bind mount of it keeps showing the new content.
fn write_in_place(path: &Path, content: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new().create(true).write(true).truncate(true).open(path)?;
    f.write_all(content.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ns: &str) -> PodFiles {
        PodFiles {
            hosts: PathBuf::new(),
            namespace: ns.into(),
            hostname: "web-0".into(),
            ip: Ipv4Addr::new(10, 250, 0, 7),
        }
    }

    #[test]
    fn lists_cluster_ips_ready_headless_endpoints_and_the_api_at_the_bridge() {
        let mut state = State::default();
        let svc =
            |ip: Option<&str>, headless| Target { cluster_ip: ip.map(|i| i.parse().unwrap()), headless };
        state.services.insert(("a".into(), "web".into()), svc(Some("10.96.0.20"), false));
        state.services.insert(("a".into(), "grpc".into()), svc(None, true));
        state.services.insert(("b".into(), "other".into()), svc(Some("10.96.0.30"), false));
        state.services.insert(("default".into(), "kubernetes".into()), svc(Some("10.96.0.1"), false));
        let ips = |v: &[&str]| v.iter().map(|i| i.parse().unwrap()).collect();
        state.slices.insert(("a".into(), "grpc-x".into()), ("grpc".into(), ips(&["10.250.0.3"])));
        state.slices.insert(("a".into(), "grpc-y".into()), ("grpc".into(), ips(&["10.250.0.4"])));
        let hosts = render(&state, Ipv4Addr::new(10, 250, 0, 1), &pod("a"));
        let lines: Vec<&str> = hosts.lines().collect();
        assert!(lines.contains(&"10.250.0.7\tweb-0"), "{hosts}");
        assert!(
            lines.contains(
                &"10.250.0.1\tkubernetes.default.svc kubernetes.default.svc.cluster.local kubernetes.default"
            ),
            "{hosts}"
        );
        assert!(
            !hosts.contains("10.96.0.1\t"),
            "the kubernetes Service's ClusterIP has no proxy here: {hosts}"
        );
        assert!(lines.contains(&"10.96.0.20\tweb.a.svc web.a.svc.cluster.local web.a web"), "{hosts}");
        assert!(lines.contains(&"10.250.0.3\tgrpc.a.svc grpc.a.svc.cluster.local grpc.a grpc"), "{hosts}");
        assert!(lines.contains(&"10.250.0.4\tgrpc.a.svc grpc.a.svc.cluster.local grpc.a grpc"), "{hosts}");
        // Another namespace's Service has no short name here.
        assert!(lines.contains(&"10.96.0.30\tother.b.svc other.b.svc.cluster.local other.b"), "{hosts}");
    }

    #[test]
    fn a_slice_lists_only_ready_ipv4_endpoints() {
        let s: EndpointSlice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "grpc-x", "namespace": "a", "labels": {"kubernetes.io/service-name": "grpc"}},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["10.250.0.3"], "conditions": {"ready": true}},
                {"addresses": ["10.250.0.4"], "conditions": {"ready": false}},
                {"addresses": ["10.250.0.5"]}
            ]
        }))
        .unwrap();
        let (service, ready) = slice(&s).unwrap();
        assert_eq!(service, "grpc");
        let want: BTreeSet<Ipv4Addr> =
            ["10.250.0.3", "10.250.0.5"].iter().map(|i| i.parse().unwrap()).collect();
        assert_eq!(ready, want);
    }

    #[test]
    fn add_writes_both_files_and_rewrites_in_place() {
        let dir = std::env::temp_dir().join(format!("goim-e2e-names-{}", std::process::id()));
        let names = Names::new(Ipv4Addr::new(10, 250, 0, 1));
        let (hosts, resolv) = names.add("u1", &dir, "a", "web-0", Ipv4Addr::new(10, 250, 0, 7)).unwrap();
        use std::os::unix::fs::MetadataExt;
        let inode = std::fs::metadata(&hosts).unwrap().ino();
        assert!(std::fs::read_to_string(&resolv).unwrap().contains("nameserver 127.0.0.1"));
        names.state.lock().services.insert(
            ("a".into(), "web".into()),
            Target { cluster_ip: Some(Ipv4Addr::new(10, 96, 0, 20)), headless: false },
        );
        names.write_all();
        assert!(std::fs::read_to_string(&hosts).unwrap().contains("10.96.0.20\tweb.a.svc"));
        assert_eq!(std::fs::metadata(&hosts).unwrap().ino(), inode, "the same file, for the bind mount");
        names.remove("u1");
        names.state.lock().services.clear();
        names.write_all();
        assert!(
            std::fs::read_to_string(&hosts).unwrap().contains("10.96.0.20"),
            "a removed pod's file is left"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
