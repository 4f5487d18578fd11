//! The Services: client-facing comet, headless comet gRPC (job's and logic's EndpointSlice
//! discovery), logic's push API, and headless logic gRPC (every comet reaches every logic).

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{Owner, Tier, config, selector_labels};
use crate::crd::PushCluster;

fn port(name: &str, port: i32, target: u16) -> ServicePort {
    ServicePort {
        name: Some(name.to_owned()),
        port,
        target_port: Some(IntOrString::Int(target.into())),
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

fn headless(owner: &Owner, name: String, tier: Tier, ports: Vec<ServicePort>) -> Service {
    Service {
        metadata: owner.meta(name, Some(tier)),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(selector_labels(&owner.names.cluster, tier)),
            ports: Some(ports),
            // publishNotReadyAddresses stays unset (false): only ready pods are listed.
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn services(pc: &PushCluster, owner: &Owner) -> Vec<Service> {
    let exposure = &pc.spec.comet.service;
    let mut client_ports = vec![
        port("tcp", exposure.tcp_port, config::COMET_TCP),
        port("websocket", exposure.websocket_port, config::COMET_WS),
    ];
    if !exposure.wss.tls_secret_name.is_empty() {
        client_ports.push(port("wss", exposure.wss.port, config::COMET_WSS));
    }
    let mut client = Service {
        metadata: owner.meta(owner.names.comet_service(), Some(Tier::Comet)),
        spec: Some(ServiceSpec {
            type_: Some(exposure.type_.clone()),
            selector: Some(selector_labels(&owner.names.cluster, Tier::Comet)),
            ports: Some(client_ports),
            external_traffic_policy: exposure
                .external_traffic_policy
                .clone()
                .filter(|_| exposure.type_ != "ClusterIP"),
            ..Default::default()
        }),
        ..Default::default()
    };
    if !exposure.annotations.is_empty() {
        client.metadata.annotations = Some(exposure.annotations.clone());
    }
    let logic_api = Service {
        metadata: owner.meta(owner.names.logic_service(), Some(Tier::Logic)),
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(&owner.names.cluster, Tier::Logic)),
            ports: Some(vec![port("http", config::LOGIC_HTTP.into(), config::LOGIC_HTTP)]),
            ..Default::default()
        }),
        ..Default::default()
    };
    vec![
        client,
        headless(
            owner,
            owner.names.comet_grpc_service(),
            Tier::Comet,
            vec![port("grpc", config::COMET_GRPC.into(), config::COMET_GRPC)],
        ),
        logic_api,
        headless(
            owner,
            owner.names.logic_grpc_service(),
            Tier::Logic,
            vec![port("grpc", config::LOGIC_GRPC.into(), config::LOGIC_GRPC)],
        ),
    ]
}
