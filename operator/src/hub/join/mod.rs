//! Open joining by stake (ADR 0031): a provider with at least the pool's `minBond` staked signs
//! a join request with its wallet and sends it to the hub's registration endpoint, which checks
//! it ([`checks`], pure), limits how often each source may ask ([`limit`]), creates the
//! MemberCluster and answers with a short-lived token of the member's ServiceAccount that the
//! agent renews ([`server`]).

pub mod checks;
pub mod limit;
pub mod server;
