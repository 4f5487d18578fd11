//! EndpointSlices of the comet headless Service → [`CometEndpoint`]s. Pure: no I/O, tested on
//! recorded objects (`job/tests/fixtures/endpointslice/`).
//!
//! Per endpoint (`discovery.k8s.io/v1`):
//! - server id = `targetRef.name`, the pod name (comet's `server_id` defaults to `POD_NAME`).
//!   An endpoint without a pod `targetRef` cannot be matched to a server id and is skipped.
//! - address = the first of `addresses` with the slice's port named `port_name` (IPv6 in
//!   brackets). A slice without that port is skipped.
//! - conditions, as the API documents their nil values: `ready` nil → true; `serving` nil →
//!   true; `terminating` nil → false. job pushes to every `serving` comet, terminating ones
//!   included (they drain their clients with op 6 and still deliver until then); logic offers
//!   only `ready` ones to new clients.
//!
//! The Service must not set `publishNotReadyAddresses`, or every endpoint reads as ready.
//! An endpoint listed by two slices (briefly, while the controller moves it) appears once, with
//! its most available conditions.

use std::collections::BTreeMap;

use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};

use super::CometEndpoint;

/// The comets of `slices`, sorted by server id, one per server id.
pub fn comet_endpoints<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    port_name: &str,
) -> Vec<CometEndpoint> {
    let mut by_id: BTreeMap<String, CometEndpoint> = BTreeMap::new();
    for slice in slices {
        let Some(port) = port(slice, port_name) else {
            continue;
        };
        let ipv6 = slice.address_type == "IPv6";
        for endpoint in slice.endpoints.iter().flatten() {
            let Some(comet) = comet(endpoint, port, ipv6) else {
                continue;
            };
            match by_id.get(&comet.server_id) {
                Some(seen) if rank(seen) >= rank(&comet) => {}
                _ => {
                    by_id.insert(comet.server_id.clone(), comet);
                }
            }
        }
    }
    by_id.into_values().collect()
}

/// How available an endpoint is, for choosing between duplicates.
fn rank(c: &CometEndpoint) -> (bool, bool, bool) {
    (c.ready, c.serving, !c.terminating)
}

/// The slice's port named `name` (or its first port when `name` is empty).
fn port(slice: &EndpointSlice, name: &str) -> Option<u16> {
    let ports = slice.ports.as_deref()?;
    let found =
        if name.is_empty() { ports.first() } else { ports.iter().find(|p| p.name.as_deref() == Some(name)) };
    found?.port.and_then(|p| u16::try_from(p).ok()).filter(|&p| p > 0)
}

fn comet(endpoint: &Endpoint, port: u16, ipv6: bool) -> Option<CometEndpoint> {
    let target = endpoint.target_ref.as_ref()?;
    if target.kind.as_deref().is_some_and(|k| k != "Pod") {
        return None;
    }
    let server_id = target.name.clone().filter(|n| !n.is_empty())?;
    let address = endpoint.addresses.first()?;
    let addr = if ipv6 { format!("[{address}]:{port}") } else { format!("{address}:{port}") };
    let conditions = endpoint.conditions.clone().unwrap_or_default();
    Some(CometEndpoint {
        server_id,
        addr,
        ready: conditions.ready.unwrap_or(true),
        serving: conditions.serving.unwrap_or(true),
        terminating: conditions.terminating.unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ObjectReference;
    use k8s_openapi::api::discovery::v1::{EndpointConditions, EndpointPort};

    use super::*;

    fn slice(address_type: &str, port_name: &str, endpoints: Vec<Endpoint>) -> EndpointSlice {
        EndpointSlice {
            address_type: address_type.into(),
            endpoints: Some(endpoints),
            ports: Some(vec![EndpointPort {
                name: Some(port_name.into()),
                port: Some(3109),
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    fn pod(name: &str, ip: &str, ready: Option<bool>) -> Endpoint {
        Endpoint {
            addresses: vec![ip.into()],
            conditions: Some(EndpointConditions { ready, serving: ready, terminating: None }),
            target_ref: Some(ObjectReference {
                kind: Some("Pod".into()),
                name: Some(name.into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn ipv6_addresses_are_bracketed() {
        let s = slice("IPv6", "grpc", vec![pod("comet-0", "fd00::5", Some(true))]);
        assert_eq!(comet_endpoints([&s], "grpc")[0].addr, "[fd00::5]:3109");
    }

    #[test]
    fn nil_conditions_read_as_ready_serving_and_not_terminating() {
        let mut e = pod("comet-0", "10.0.0.5", None);
        e.conditions = None;
        let got = comet_endpoints([&slice("IPv4", "grpc", vec![e])], "grpc");
        assert_eq!(got, [CometEndpoint::up("comet-0", "10.0.0.5:3109")]);
    }

    #[test]
    fn a_slice_without_the_named_port_is_skipped_and_an_empty_name_takes_the_first_port() {
        let s = slice("IPv4", "metrics", vec![pod("comet-0", "10.0.0.5", Some(true))]);
        assert!(comet_endpoints([&s], "grpc").is_empty());
        assert_eq!(comet_endpoints([&s], "").len(), 1);
    }

    #[test]
    fn an_endpoint_in_two_slices_appears_once_with_its_best_conditions() {
        let a = slice("IPv4", "grpc", vec![pod("comet-0", "10.0.0.5", Some(false))]);
        let b = slice("IPv4", "grpc", vec![pod("comet-0", "10.0.0.5", Some(true))]);
        let got = comet_endpoints([&a, &b], "grpc");
        assert_eq!(got.len(), 1);
        assert!(got[0].ready);
        let got = comet_endpoints([&b, &a], "grpc");
        assert!(got[0].ready);
    }
}
