//! What the cache footprint tests (`agent_cache_footprint.rs`, `hub_cache_footprint.rs`) share:
//! objects read from the API's JSON and trimmed as a watch trims them, and their heap cost counted
//! with dhat's heap statistics (each test binary installs `dhat::Alloc` and starts a profiler).

use std::sync::Arc;

use kube::Resource;
use kube::api::ObjectMeta;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Heap bytes and blocks per object of `n` objects made by `make` and held in `Arc`s, as a
/// reflector's store holds them.
pub fn per_object<K>(n: usize, make: impl Fn(usize) -> K) -> (usize, f64) {
    let before = dhat::HeapStats::get();
    let held: Vec<Arc<K>> = (0..n).map(|i| Arc::new(make(i))).collect();
    let after = dhat::HeapStats::get();
    let bytes = after.curr_bytes - before.curr_bytes - held.capacity() * size_of::<usize>();
    let blocks = after.curr_blocks - before.curr_blocks - 1;
    drop(held);
    (bytes / n, blocks as f64 / n as f64)
}

/// `json` read as `K`, its metadata trimmed by `meta` and then the object by `slim`, as the watch
/// under test trims what it caches.
pub fn cached<K: Resource + DeserializeOwned>(
    json: Value,
    meta: impl Fn(&mut ObjectMeta),
    slim: impl Fn(&mut K),
) -> K {
    let mut obj: K = serde_json::from_value(json).expect("the test's JSON reads as the type");
    meta(obj.meta_mut());
    slim(&mut obj);
    obj
}
