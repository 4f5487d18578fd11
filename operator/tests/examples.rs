//! The examples parse as PushClusters and render; `tests/cluster.rs` sends them to the API server.

use goim_operator::PushCluster;
use goim_operator::render;

pub fn example(name: &str) -> PushCluster {
    let path = format!("{}/../examples/pushcluster-{name}.yaml", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn the_examples_parse_and_render() {
    for (name, deployments) in [("minimal", 2), ("production", 3), ("distributed", 3)] {
        let mut pc = example(name);
        pc.metadata.namespace = Some("ns1".into());
        pc.metadata.uid = Some("0f7e9b8e-0000-4000-8000-000000000001".into());
        let c = render::children(&pc).unwrap();
        assert_eq!(c.deployments.len(), deployments, "{name}");
    }
}
