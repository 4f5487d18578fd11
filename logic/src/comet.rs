//! Which comets logic may offer to clients: the optional port behind `/goim/nodes/*` and the
//! `Nodes` RPC.
//!
//! Without one, every comet that reports online counts is offered (goim-rs's embedded and static
//! setups). On Kubernetes the binary plugs in the comet headless Service's EndpointSlices, so a
//! comet that is not ready (starting, or draining before it exits) is not handed to new clients
//! even while it still reports.

/// The comets ready for new clients.
///
/// Contract: [`ready`](Comets::ready) answers from memory (it is called on every nodes query) and
/// never blocks.
pub trait Comets: Send + Sync + 'static {
    /// Server ids (pod names on Kubernetes) of the comets ready now.
    fn ready(&self) -> Vec<String>;
}
