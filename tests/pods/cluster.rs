//! The namespace as a kubelet sees it, the objects created in it, and how Services reach pods.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use goim_operator::render::{Children, Owner, secret};
use k8s_openapi::ByteString;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, ObjectReference, PodSpec, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, PostParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::pod::Pod;
use crate::support::process::Scratch;

/// The namespace as a kubelet sees it: the API server, the objects pods reference, the pod IP.
pub struct Cluster {
    pub client: kube::Client,
    pub ns: String,
    /// The API server as a pod reaches it (`KUBERNETES_SERVICE_HOST`/`_PORT`): the kubeconfig's.
    pub api: (String, u16),
    pub pod_ip: IpAddr,
    pub config_maps: BTreeMap<String, ConfigMap>,
    pub secrets: BTreeMap<String, Secret>,
    /// As created: with their cluster IPs.
    pub services: Vec<Service>,
    /// `ca.crt` of the `kube-root-ca.crt` ConfigMap, what the kubelet projects next to the token.
    pub root_ca: String,
    /// Staged files and process logs; removed after the processes (declared first, dropped last).
    pub dir: Scratch,
}

impl Cluster {
    pub async fn set_up(
        client: kube::Client,
        ns: &str,
        children: &Children,
        owner: &Owner,
        user_secrets: Vec<Secret>,
    ) -> Cluster {
        for sa in &children.service_accounts {
            create(&client, ns, sa).await;
        }
        for r in &children.roles {
            create(&client, ns, r).await;
        }
        for rb in &children.role_bindings {
            create(&client, ns, rb).await;
        }
        let mut services = Vec::new();
        for s in &children.services {
            services.push(create(&client, ns, s).await);
        }
        let mut secrets = BTreeMap::new();
        for s in user_secrets.iter().chain([&secret::generated(owner)]) {
            let created = create(&client, ns, s).await;
            secrets.insert(created.name_any(), created);
        }
        let config = kube::Config::infer().await.expect("kubeconfig");
        let url = &config.cluster_url;
        let api = (url.host().expect("API server host").to_owned(), url.port_u16().unwrap_or(443));
        let cluster = Cluster {
            client: client.clone(),
            ns: ns.to_owned(),
            api,
            pod_ip: pod_ip(),
            config_maps: children.config_maps.iter().map(|c| (c.name_any(), c.clone())).collect(),
            secrets,
            services,
            root_ca: root_ca(&client, ns).await,
            dir: Scratch::new("operator-pods"),
        };
        cluster.publish_endpoints(children).await;
        cluster
    }

    /// The EndpointSlices the EndpointSlice controller would write once the pods are ready
    /// (discovery reads the comet headless Service's): per Service, the pod it selects, by name
    /// and IP, with the Service's ports resolved against the pod's container.
    pub async fn publish_endpoints(&self, children: &Children) {
        for svc in &self.services {
            for d in children.deployments.iter().filter(|d| selects(svc, d)) {
                let container = &pod_spec(d).containers[0];
                let ports = svc.spec.as_ref().unwrap().ports.iter().flatten().map(|p| EndpointPort {
                    name: p.name.clone(),
                    port: Some(
                        target_port(container, p.target_port.as_ref().unwrap_or(&IntOrString::Int(p.port)))
                            .into(),
                    ),
                    protocol: p.protocol.clone(),
                    ..Default::default()
                });
                let mut slice = EndpointSlice {
                    address_type: if self.pod_ip.is_ipv4() { "IPv4" } else { "IPv6" }.into(),
                    endpoints: Some(vec![Endpoint {
                        addresses: vec![self.pod_ip.to_string()],
                        conditions: Some(EndpointConditions {
                            ready: Some(true),
                            serving: Some(true),
                            terminating: Some(false),
                        }),
                        target_ref: Some(ObjectReference {
                            kind: Some("Pod".into()),
                            name: Some(pod_name(d)),
                            namespace: Some(self.ns.clone()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }]),
                    ports: Some(ports.collect()),
                    ..Default::default()
                };
                slice.metadata.name = Some(format!("{}-{}", svc.name_any(), d.name_any()));
                slice.metadata.labels = Some(BTreeMap::from([
                    ("kubernetes.io/service-name".to_owned(), svc.name_any()),
                    // Not the controller's: it leaves slices of other managers alone.
                    ("endpointslice.kubernetes.io/managed-by".to_owned(), "operator-pods-test".to_owned()),
                ]));
                create(&self.client, &self.ns, &slice).await;
            }
        }
    }

    pub fn secret_value(&self, name: &str, key: &str) -> Option<Vec<u8>> {
        secret_data(self.secrets.get(name)?).remove(key)
    }
}

/// Creates `o` in `ns` without its owner references (see `run` in tests/operator_pods.rs);
/// returns it as stored.
pub async fn create<K>(client: &kube::Client, ns: &str, o: &K) -> K
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let mut o = o.clone();
    o.meta_mut().owner_references = None;
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let created = api.create(&PostParams::default(), &o).await;
    created.unwrap_or_else(|e| panic!("create {} {}: {e}", K::kind(&()), o.name_any()))
}

/// This machine's address on its default route: the pods' IP.
pub fn pod_ip() -> IpAddr {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    // Connecting a UDP socket sends nothing: it only picks the source address.
    socket.connect("10.255.255.255:9").expect("this machine needs a non-loopback route for the pod IP");
    let ip = socket.local_addr().unwrap().ip();
    assert!(!ip.is_loopback() && !ip.is_unspecified(), "no non-loopback address for the pod IP: {ip}");
    ip
}

pub async fn root_ca(client: &kube::Client, ns: &str) -> String {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    for _ in 0..150 {
        if let Some(cm) = api.get_opt("kube-root-ca.crt").await.unwrap()
            && let Some(ca) = cm.data.and_then(|mut d| d.remove("ca.crt"))
        {
            return ca;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the kube-root-ca.crt ConfigMap did not appear in {ns} within 30s");
}

pub fn secret_data(s: &Secret) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> =
        s.data.iter().flatten().map(|(k, ByteString(v))| (k.clone(), v.clone())).collect();
    out.extend(s.string_data.iter().flatten().map(|(k, v)| (k.clone(), v.clone().into_bytes())));
    out
}

pub fn pod_spec(d: &Deployment) -> &PodSpec {
    d.spec.template.spec.as_ref().expect("a pod template")
}

pub fn pod_name(d: &Deployment) -> String {
    format!("{}-5d9c8b7f6-pod0", d.name_any())
}

pub fn template_labels(d: &Deployment) -> BTreeMap<String, String> {
    let template = d.spec.template.metadata.as_ref();
    template.and_then(|m| m.labels.clone()).unwrap_or_default()
}

pub fn selects(svc: &Service, d: &Deployment) -> bool {
    let selector = svc.spec.as_ref().and_then(|s| s.selector.clone()).unwrap_or_default();
    let labels = template_labels(d);
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// A port as a probe, hook or Service names it: a number, or a container port's name.
pub fn target_port(c: &Container, port: &IntOrString) -> u16 {
    match port {
        IntOrString::Int(n) => {
            u16::try_from(*n).unwrap_or_else(|_| panic!("{}: port {n} out of range", c.name))
        }
        IntOrString::String(name) => {
            let p = c.ports.iter().flatten().find(|p| p.name.as_deref() == Some(name.as_str()));
            let p = p.unwrap_or_else(|| panic!("{}: no container port named {name:?}", c.name));
            u16::try_from(p.container_port).unwrap()
        }
    }
}

/// A token of `account`, as the kubelet requests it for the projected ServiceAccount volume.
pub async fn token(cluster: &Cluster, account: &str) -> String {
    let api: Api<ServiceAccount> = Api::namespaced(cluster.client.clone(), &cluster.ns);
    let request = TokenRequest {
        spec: Some(TokenRequestSpec { expiration_seconds: Some(3600), ..Default::default() }),
        ..Default::default()
    };
    let answer = api.create_token_request(account, &PostParams::default(), &request).await;
    let answer = answer.unwrap_or_else(|e| panic!("a token for ServiceAccount {account}: {e}"));
    answer.status.and_then(|s| s.token).expect("a token in the TokenRequest status")
}

/// Every Service selects one of the pods, and each of its ports reaches a port that pod serves.
pub async fn services_reach_their_pods(cluster: &Cluster, pods: &[Pod]) {
    for svc in &cluster.services {
        let pod = pod_behind(svc, pods);
        for p in svc.spec.as_ref().unwrap().ports.iter().flatten() {
            let addr = SocketAddr::new(
                cluster.pod_ip,
                service_target(svc, p.name.as_deref().unwrap_or_default(), pod),
            );
            if let Err(e) = tokio::net::TcpStream::connect(addr).await {
                panic!(
                    "Service {} port {:?}: target {addr} refuses connections: {e}",
                    svc.name_any(),
                    p.name
                );
            }
        }
    }
}

/// The pod a Service selects.
pub fn pod_behind<'a>(svc: &Service, pods: &'a [Pod]) -> &'a Pod {
    let selector = svc.spec.as_ref().and_then(|s| s.selector.clone()).unwrap_or_default();
    let selected =
        |p: &&Pod| !selector.is_empty() && selector.iter().all(|(k, v)| p.labels.get(k) == Some(v));
    let pod = pods.iter().find(selected);
    pod.unwrap_or_else(|| panic!("Service {} selects none of the pods ({selector:?})", svc.name_any()))
}

/// The container port behind the Service port named `name`.
pub fn service_target(svc: &Service, name: &str, pod: &Pod) -> u16 {
    let ports = svc.spec.as_ref().unwrap().ports.iter().flatten();
    let found = ports.clone().find(|p| p.name.as_deref().unwrap_or_default() == name);
    let p = found.unwrap_or_else(|| panic!("Service {} has no port named {name:?}", svc.name_any()));
    target_port(&pod.container, p.target_port.as_ref().unwrap_or(&IntOrString::Int(p.port)))
}

pub fn service_named<'a>(cluster: &'a Cluster, name: &str) -> &'a Service {
    let found = cluster.services.iter().find(|s| s.name_any() == name);
    found.unwrap_or_else(|| panic!("no Service {name} rendered"))
}
