//! Chaos: a mixed workload under random faults, a recorder that keeps a history from every side,
//! and a checker that proves the invariants of issue 15 on it (docs/reliability.md).

pub mod check;
pub mod history;

pub use check::{Report, check};
pub use history::History;
