//! Comet discovery from recorded EndpointSlice objects (`fixtures/endpointslice/`, written from
//! the `discovery.k8s.io/v1` API reference): which comets job pushes to and which logic offers.
#![cfg(feature = "kubernetes")]

use goim_job::discovery::{CometEndpoint, comet_endpoints};
use k8s_openapi::api::discovery::v1::EndpointSlice;

fn fixture(name: &str) -> EndpointSlice {
    let path = format!("{}/tests/fixtures/endpointslice/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn ids<'a>(comets: impl IntoIterator<Item = &'a CometEndpoint>) -> Vec<&'a str> {
    comets.into_iter().map(|c| c.server_id.as_str()).collect()
}

#[test]
fn ready_pods_map_to_their_pod_name_and_grpc_port() {
    let comets = comet_endpoints([&fixture("all-ready.json")], "grpc");
    assert_eq!(
        comets,
        [
            CometEndpoint::up("goim-comet-0", "10.244.1.17:3109"),
            CometEndpoint::up("goim-comet-1", "10.244.2.9:3109"),
        ]
    );
}

#[test]
fn during_a_rolling_update_job_keeps_pushing_to_a_draining_comet_and_logic_offers_only_ready_ones() {
    let comets = comet_endpoints([&fixture("rolling-update.json")], "grpc");
    // The endpoint without a targetRef has no server id and is left out.
    assert_eq!(ids(&comets), ["goim-comet-0", "goim-comet-1", "goim-comet-2", "goim-comet-3"]);

    let draining = &comets[1];
    assert_eq!((draining.ready, draining.serving, draining.terminating), (false, true, true));

    let job_pushes_to = ids(comets.iter().filter(|c| c.serving));
    assert_eq!(job_pushes_to, ["goim-comet-0", "goim-comet-1"]);
    let logic_offers = ids(comets.iter().filter(|c| c.ready));
    assert_eq!(logic_offers, ["goim-comet-0"]);
}

#[test]
fn a_starting_comet_and_a_terminated_one_receive_nothing() {
    let comets = comet_endpoints([&fixture("rolling-update.json")], "grpc");
    let starting = comets.iter().find(|c| c.server_id == "goim-comet-2").unwrap();
    assert_eq!((starting.ready, starting.serving, starting.terminating), (false, false, false));
    let gone = comets.iter().find(|c| c.server_id == "goim-comet-3").unwrap();
    assert_eq!((gone.ready, gone.serving, gone.terminating), (false, false, true));
}

#[test]
fn every_slice_of_the_service_counts_and_ipv6_addresses_are_bracketed() {
    let slices = [fixture("rolling-update.json"), fixture("second-slice-ipv6.json")];
    let comets = comet_endpoints(&slices, "grpc");
    assert_eq!(comets.len(), 5);
    let v6 = comets.iter().find(|c| c.server_id == "goim-comet-4").unwrap();
    assert_eq!(v6.addr, "[fd00:10:244:5::12]:3109");
}

#[test]
fn a_slice_with_no_endpoints_yields_no_comets() {
    assert!(comet_endpoints([&fixture("empty.json")], "grpc").is_empty());
}

#[test]
fn a_port_name_the_slice_does_not_have_yields_no_comets() {
    assert!(comet_endpoints([&fixture("all-ready.json")], "rpc").is_empty());
    let admin = comet_endpoints([&fixture("all-ready.json")], "admin");
    assert_eq!(admin[0].addr, "10.244.1.17:3100");
}
