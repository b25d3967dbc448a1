//! Shared helpers of the property tests: random snapshots and batches, and a reference oracle.
#![allow(dead_code)]

pub mod inputs;
pub mod oracle;
