//! Prints the PushCluster CRD: `cargo run -p goim-operator --bin crdgen > crds/pushcluster.yaml`.

fn main() {
    print!("{}", goim_operator::crd_yaml());
}
