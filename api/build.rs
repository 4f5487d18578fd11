//! Compiles `proto/goim/**.proto` (goim's gRPC contract) into Rust with protox (pure Rust, no
//! system `protoc`) and tonic-prost-build. Clients and servers are generated without tonic's
//! transport helpers; the tiers bring their own channels and servers.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/goim/protocol/protocol.proto",
        "proto/goim/comet/comet.proto",
        "proto/goim/logic/logic.proto",
    ];
    let fds = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_transport(false)
        // `bytes` fields become `bytes::Bytes`, so bodies move between packets and messages
        // without copies.
        .bytes(".")
        .compile_fds(fds)?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
