//! Which comets exist: the optional port behind `/goim/nodes/*` and the `Nodes` RPC (the ready
//! ones), and behind the sweep of dead comets' routes (the listed ones).
//!
//! Without one, every comet that reports online counts is offered (goim-rs's embedded and static
//! setups). On Kubernetes the binary plugs in the comet headless Service's EndpointSlices, so a
//! comet that is not ready (starting, or draining before it exits) is not handed to new clients
//! even while it still reports.

/// The comets discovery knows.
///
/// Contract: both calls answer from memory (`ready` is called on every nodes query) and never
/// block.
pub trait CometDirectory: Send + Sync + 'static {
    /// Server ids (pod names on Kubernetes) of the comets ready now.
    fn ready(&self) -> Vec<String>;

    /// Server ids of every comet discovery lists now, ready or not (starting, draining): a comet
    /// missing here for longer than the grace has its routes dropped
    /// ([`Logic::sweep_gone_comets`](crate::Logic::sweep_gone_comets)).
    fn listed(&self) -> Vec<String>;
}
