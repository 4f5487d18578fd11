//! `crds/pushcluster.yaml` is what `crdgen` prints.

#[test]
fn crds_are_fresh() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/pushcluster.yaml");
    let on_disk = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        on_disk == goim_operator::crd_yaml(),
        "crds/pushcluster.yaml is stale: run `cargo run -p goim-operator --bin crdgen > crds/pushcluster.yaml`"
    );
}
