//! The agent's caches: every object one watch has seen, kept current by that watch.
//!
//! The agent used kube-runtime's reflector store until the agent bench's heap profile at 3,000
//! running pods (docs/benchmarks.md, "Member agent with 10,000 pods") showed that the caches hold
//! most of its heap, and three costs that were the store's own, not the objects':
//!
//! * the store keys each object by an `ObjectRef` that copies its name, namespace,
//!   resourceVersion and UID: four more strings per object, besides the object's own;
//! * it clones every object a watch delivers into the map (the watch's copy is then dropped);
//! * a relist (the first list, and every list after a watch's resourceVersion expired) is built
//!   in a second map beside the first, so for the length of the list the agent holds every pod
//!   twice.
//!
//! Here objects are found by the namespace and name they hold themselves (a hash table of
//! `Arc<K>`; the hash is computed from the object), the watch's object is moved in, and a relist
//! replaces objects in place, then drops the ones the list did not return — as client-go's
//! informers update their indexer item by item. Readers see each object as a watch delivered it;
//! during a relist they may see some objects already relisted and others not yet, as with
//! client-go.

use std::hash::BuildHasher;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use hashbrown::{DefaultHashBuilder, HashTable};
use kube::Resource;
use kube::runtime::watcher;
use tokio::sync::watch;

/// A cached object and the relist that last saw it.
struct Entry<K> {
    object: Arc<K>,
    listed: u32,
}

struct Table<K> {
    entries: HashTable<Entry<K>>,
    hasher: DefaultHashBuilder,
}

impl<K: Resource> Table<K> {
    fn hash(&self, namespace: Option<&str>, name: &str) -> u64 {
        self.hasher.hash_one((namespace, name))
    }

    fn hash_of(&self, obj: &K) -> u64 {
        let meta = obj.meta();
        self.hash(
            meta.namespace.as_deref(),
            meta.name.as_deref().unwrap_or(""),
        )
    }
}

/// The hash of an entry, as the table needs it when it grows or shrinks.
fn hash_entry<K: Resource>(hasher: &DefaultHashBuilder, e: &Entry<K>) -> u64 {
    let meta = e.object.meta();
    hasher.hash_one((
        meta.namespace.as_deref(),
        meta.name.as_deref().unwrap_or(""),
    ))
}

fn is<K: Resource>(obj: &K, namespace: Option<&str>, name: &str) -> bool {
    let meta = obj.meta();
    meta.name.as_deref() == Some(name) && meta.namespace.as_deref() == namespace
}

/// The read side: what the watch has seen, shared by every task that reads it.
pub struct Cache<K> {
    table: Arc<RwLock<Table<K>>>,
    ready: watch::Receiver<bool>,
}

impl<K> Clone for Cache<K> {
    fn clone(&self) -> Self {
        Cache {
            table: self.table.clone(),
            ready: self.ready.clone(),
        }
    }
}

/// The watch stopped before its first list was complete.
#[derive(Debug, thiserror::Error)]
#[error("the watch stopped before its first list was complete")]
pub struct Stopped;

impl<K: Resource> Cache<K> {
    fn read(&self) -> RwLockReadGuard<'_, Table<K>> {
        // A panic while holding the lock cannot leave the table half-written: every write is one
        // call into the hash table.
        self.table.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every cached object, in no particular order.
    pub fn state(&self) -> Vec<Arc<K>> {
        self.state_filter(|_| true)
    }

    /// The cached objects `keep` accepts.
    pub fn state_filter(&self, mut keep: impl FnMut(&K) -> bool) -> Vec<Arc<K>> {
        self.read()
            .entries
            .iter()
            .filter(|e| keep(&e.object))
            .map(|e| e.object.clone())
            .collect()
    }

    /// The object named `name` in `namespace` (`None`: cluster-scoped).
    pub fn get(&self, namespace: Option<&str>, name: &str) -> Option<Arc<K>> {
        let table = self.read();
        let hash = table.hash(namespace, name);
        table
            .entries
            .find(hash, |e| is(e.object.as_ref(), namespace, name))
            .map(|e| e.object.clone())
    }

    /// How many objects are cached.
    pub fn len(&self) -> usize {
        self.read().entries.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Returns once the watch's first list is complete.
    pub async fn wait_until_ready(&self) -> Result<(), Stopped> {
        let mut ready = self.ready.clone();
        ready
            .wait_for(|r| *r)
            .await
            .map(|_| ())
            .map_err(|_| Stopped)
    }
}

/// The write side, fed by one watch.
pub struct Writer<K> {
    table: Arc<RwLock<Table<K>>>,
    ready: watch::Sender<bool>,
    /// Counts relists; an object carries the count of the last one that returned it.
    listing: u32,
}

/// A new, empty cache and the writer that fills it.
pub fn new<K>() -> (Cache<K>, Writer<K>) {
    let table = Arc::new(RwLock::new(Table {
        entries: HashTable::new(),
        hasher: DefaultHashBuilder::default(),
    }));
    let (tx, rx) = watch::channel(false);
    (
        Cache {
            table: table.clone(),
            ready: rx,
        },
        Writer {
            table,
            ready: tx,
            listing: 0,
        },
    )
}

impl<K: Resource> Writer<K> {
    fn write(&self) -> RwLockWriteGuard<'_, Table<K>> {
        self.table.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn insert(&self, obj: K) -> Arc<K> {
        let object = Arc::new(obj);
        let mut table = self.write();
        let hash = table.hash_of(&object);
        let meta = object.meta();
        let (namespace, name) = (
            meta.namespace.as_deref(),
            meta.name.as_deref().unwrap_or(""),
        );
        let Table { entries, hasher } = &mut *table;
        let entry = Entry {
            object: object.clone(),
            listed: self.listing,
        };
        match entries.find_mut(hash, |e| is(e.object.as_ref(), namespace, name)) {
            Some(found) => *found = entry,
            None => {
                entries.insert_unique(hash, entry, |e| hash_entry(hasher, e));
            }
        }
        object
    }

    fn remove(&self, obj: &K) {
        let mut table = self.write();
        let hash = table.hash_of(obj);
        let meta = obj.meta();
        let (namespace, name) = (
            meta.namespace.as_deref(),
            meta.name.as_deref().unwrap_or(""),
        );
        if let Ok(found) = table
            .entries
            .find_entry(hash, |e| is(e.object.as_ref(), namespace, name))
        {
            found.remove();
        }
    }

    /// Applies one event of the watch, then tells `changed` of it: the object added, changed or
    /// deleted, or `None` when a list is complete. Objects of a list in progress are not told
    /// one by one.
    pub fn apply(&mut self, event: watcher::Event<K>, changed: impl FnOnce(Option<&K>)) {
        match event {
            watcher::Event::Apply(obj) => {
                let obj = self.insert(obj);
                changed(Some(&obj));
            }
            watcher::Event::Delete(obj) => {
                self.remove(&obj);
                changed(Some(&obj));
            }
            watcher::Event::Init => self.listing = self.listing.wrapping_add(1),
            watcher::Event::InitApply(obj) => {
                self.insert(obj);
            }
            watcher::Event::InitDone => {
                let listing = self.listing;
                let mut table = self.write();
                let Table { entries, hasher } = &mut *table;
                entries.retain(|e| e.listed == listing);
                entries.shrink_to_fit(|e| hash_entry(hasher, e));
                drop(table);
                self.ready.send_replace(true);
                changed(None);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::ObjectMeta;

    fn pod(namespace: &str, name: &str, version: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                namespace: Some(namespace.into()),
                name: Some(name.into()),
                resource_version: Some(version.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn versions(cache: &Cache<Pod>) -> Vec<(String, String, String)> {
        let mut v: Vec<_> = cache
            .state()
            .iter()
            .map(|p| {
                (
                    p.metadata.namespace.clone().unwrap_or_default(),
                    p.metadata.name.clone().unwrap_or_default(),
                    p.metadata.resource_version.clone().unwrap_or_default(),
                )
            })
            .collect();
        v.sort();
        v
    }

    fn row(ns: &str, name: &str, version: &str) -> (String, String, String) {
        (ns.into(), name.into(), version.into())
    }

    #[test]
    fn objects_are_found_by_namespace_and_name_and_replaced_by_newer_versions() {
        let (cache, mut writer) = new::<Pod>();
        let mut told = vec![];
        for event in [
            watcher::Event::Init,
            watcher::Event::InitApply(pod("a", "p", "1")),
            watcher::Event::InitApply(pod("b", "p", "2")),
            watcher::Event::InitDone,
            watcher::Event::Apply(pod("a", "p", "3")),
            watcher::Event::Apply(pod("a", "q", "4")),
            watcher::Event::Delete(pod("b", "p", "5")),
        ] {
            writer.apply(event, |o| {
                told.push(o.and_then(|p| p.metadata.resource_version.clone()))
            });
        }
        assert_eq!(
            told,
            [None, Some("3".into()), Some("4".into()), Some("5".into())]
        );
        assert_eq!(versions(&cache), [row("a", "p", "3"), row("a", "q", "4")]);
        let found = cache
            .get(Some("a"), "p")
            .map(|p| p.metadata.resource_version.clone());
        assert_eq!(found, Some(Some("3".into())));
        assert!(cache.get(Some("b"), "p").is_none());
        assert!(cache.get(None, "p").is_none());
        assert!(cache.get(Some("a"), "r").is_none());
        let in_a = cache.state_filter(|p| p.metadata.name.as_deref() == Some("q"));
        assert_eq!(in_a.len(), 1);
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn a_relist_keeps_what_it_returned_and_drops_the_rest_only_when_it_is_complete() {
        let (cache, mut writer) = new::<Pod>();
        for event in [
            watcher::Event::Init,
            watcher::Event::InitApply(pod("a", "kept", "1")),
            watcher::Event::InitApply(pod("a", "deleted-meanwhile", "2")),
            watcher::Event::InitDone,
            watcher::Event::Init,
            watcher::Event::InitApply(pod("a", "kept", "7")),
            watcher::Event::InitApply(pod("a", "new", "8")),
        ] {
            writer.apply(event, |_| {});
        }
        // Mid-list: the relisted objects are current, the others still there.
        assert_eq!(
            versions(&cache),
            [
                row("a", "deleted-meanwhile", "2"),
                row("a", "kept", "7"),
                row("a", "new", "8")
            ]
        );
        writer.apply(watcher::Event::InitDone, |_| {});
        assert_eq!(
            versions(&cache),
            [row("a", "kept", "7"), row("a", "new", "8")]
        );
    }

    #[tokio::test]
    async fn readers_wait_for_the_first_complete_list() {
        let (cache, mut writer) = new::<Pod>();
        let waiting = tokio::spawn({
            let cache = cache.clone();
            async move { cache.wait_until_ready().await.map(|_| cache.len()) }
        });
        writer.apply(watcher::Event::Init, |_| {});
        writer.apply(watcher::Event::InitApply(pod("a", "p", "1")), |_| {});
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        writer.apply(watcher::Event::InitDone, |_| {});
        assert_eq!(waiting.await.ok().and_then(Result::ok), Some(1));
        // A writer dropped before its first list: readers are told, not left waiting.
        let (never, writer) = new::<Pod>();
        drop(writer);
        assert!(never.wait_until_ready().await.is_err());
    }
}
