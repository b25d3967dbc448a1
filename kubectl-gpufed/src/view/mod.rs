//! Pure views: each turns API objects (already fetched) into what a command prints, with no I/O,
//! so every one is unit-tested from fixture objects. Times are passed in (`now`) for stable ages.

pub mod explain;
pub mod jobs;
pub mod join;
pub mod market;
pub mod members;
pub mod payments;
pub mod top;
