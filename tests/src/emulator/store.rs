//! The object store: every object as JSON, one global resourceVersion
//! counter, and a bounded history of changes that watches replay.
//!
//! Watches read the history from their own cursor rather than from a
//! broadcast channel, so a slow watcher can never make another one lag, and a
//! cursor that falls out of the window gets `410 Expired` exactly as on a real
//! apiserver whose watch cache has moved on.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde_json::{Value, json};

use super::error::ApiError;
use super::resources::ResourceType;

/// What happened to an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    /// Created.
    Added,
    /// Updated.
    Modified,
    /// Removed.
    Deleted,
}

impl ChangeKind {
    /// The watch event `type`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ChangeKind::Added => "ADDED",
            ChangeKind::Modified => "MODIFIED",
            ChangeKind::Deleted => "DELETED",
        }
    }
}

/// One entry of the change history.
#[derive(Clone, Debug)]
pub struct Change {
    /// The resourceVersion this change produced.
    pub rv: u64,
    /// Which resource it concerns.
    pub resource: &'static ResourceType,
    /// What happened.
    pub kind: ChangeKind,
    /// The object after the change (the last state, for deletions).
    pub object: Arc<Value>,
    /// The object before the change; lets a filtered watch turn a MODIFIED
    /// that leaves its selector into a DELETED, as the apiserver does.
    pub previous: Option<Arc<Value>>,
}

/// `(namespace, name)`; the namespace is empty for cluster-scoped objects.
pub type ObjectKey = (String, String);

/// All objects and their history.
#[derive(Debug)]
pub struct Store {
    /// Objects by resource plural, then by key.
    objects: HashMap<&'static str, BTreeMap<ObjectKey, Arc<Value>>>,
    /// The last resourceVersion handed out.
    rv: u64,
    /// Recent changes, oldest first.
    history: VecDeque<Change>,
    /// How many changes the history keeps.
    history_limit: usize,
    /// The newest resourceVersion whose change was dropped from the history:
    /// watches from before it cannot be served.
    compacted_rv: u64,
}

/// Reads `metadata.namespace` and `metadata.name`.
pub fn key_of(obj: &Value) -> ObjectKey {
    let s = |p: &str| {
        obj.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    (s("/metadata/namespace"), s("/metadata/name"))
}

/// Reads `metadata.resourceVersion` as a number (0 if absent).
pub fn rv_of(obj: &Value) -> u64 {
    obj.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn set_rv(obj: &mut Value, rv: u64) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), json!(rv.to_string()));
    }
}

/// Two objects equal apart from their resourceVersion.
fn same_content(a: &Value, b: &Value) -> bool {
    let (Value::Object(a), Value::Object(b)) = (a, b) else {
        return a == b;
    };
    if a.len() != b.len() {
        return false;
    }
    a.iter().all(|(k, av)| {
        let Some(bv) = b.get(k) else { return false };
        if k != "metadata" {
            return av == bv;
        }
        match (av, bv) {
            (Value::Object(am), Value::Object(bm)) => {
                let strip = |m: &serde_json::Map<String, Value>| {
                    m.iter().filter(|(k, _)| *k != "resourceVersion").count()
                };
                strip(am) == strip(bm)
                    && am
                        .iter()
                        .filter(|(k, _)| *k != "resourceVersion")
                        .all(|(k, v)| bm.get(k) == Some(v))
            }
            _ => av == bv,
        }
    })
}

impl Store {
    /// An empty store keeping `history_limit` changes.
    pub fn new(history_limit: usize) -> Self {
        Self {
            objects: HashMap::new(),
            rv: 0,
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            compacted_rv: 0,
        }
    }

    /// The current (latest) resourceVersion.
    pub fn current_rv(&self) -> u64 {
        self.rv
    }

    /// The newest resourceVersion that can no longer be watched from.
    pub fn compacted_rv(&self) -> u64 {
        self.compacted_rv
    }

    fn record(&mut self, change: Change) {
        self.history.push_back(change);
        while self.history.len() > self.history_limit {
            if let Some(old) = self.history.pop_front() {
                self.compacted_rv = old.rv;
            }
        }
    }

    /// Forgets the whole history: every watch from an older resourceVersion
    /// now gets 410, as after an etcd compaction.
    pub fn compact(&mut self) {
        self.history.clear();
        self.compacted_rv = self.rv;
    }

    /// One object.
    pub fn get(&self, r: &ResourceType, ns: &str, name: &str) -> Option<Arc<Value>> {
        self.objects
            .get(r.plural)
            .and_then(|m| m.get(&(ns.to_string(), name.to_string())))
            .cloned()
    }

    /// All objects of a resource, in one namespace or in all of them, sorted
    /// by namespace then name like the apiserver's lists.
    pub fn list(&self, r: &ResourceType, ns: Option<&str>) -> Vec<Arc<Value>> {
        let Some(m) = self.objects.get(r.plural) else {
            return Vec::new();
        };
        match ns {
            Some(ns) => m
                .range((ns.to_string(), String::new())..)
                .take_while(|((n, _), _)| n == ns)
                .map(|(_, v)| v.clone())
                .collect(),
            None => m.values().cloned().collect(),
        }
    }

    /// Inserts a new object, stamping its resourceVersion.
    pub fn insert(
        &mut self,
        r: &'static ResourceType,
        mut obj: Value,
    ) -> Result<Arc<Value>, ApiError> {
        let key = key_of(&obj);
        let map = self.objects.entry(r.plural).or_default();
        if map.contains_key(&key) {
            return Err(ApiError::already_exists(&r.qualified(), &key.1));
        }
        self.rv += 1;
        set_rv(&mut obj, self.rv);
        let obj = Arc::new(obj);
        map.insert(key, obj.clone());
        let rv = self.rv;
        self.record(Change {
            rv,
            resource: r,
            kind: ChangeKind::Added,
            object: obj.clone(),
            previous: None,
        });
        Ok(obj)
    }

    /// Replaces an existing object. A replacement equal to the stored object
    /// is a no-op (no new resourceVersion, no watch event), as on a real
    /// apiserver.
    pub fn replace(
        &mut self,
        r: &'static ResourceType,
        mut obj: Value,
    ) -> Result<Arc<Value>, ApiError> {
        let key = key_of(&obj);
        let Some(old) = self
            .objects
            .get(r.plural)
            .and_then(|m| m.get(&key))
            .cloned()
        else {
            return Err(ApiError::not_found(&r.qualified(), &key.1));
        };
        if same_content(&old, &obj) {
            return Ok(old);
        }
        self.rv += 1;
        set_rv(&mut obj, self.rv);
        let obj = Arc::new(obj);
        self.objects
            .entry(r.plural)
            .or_default()
            .insert(key, obj.clone());
        let rv = self.rv;
        self.record(Change {
            rv,
            resource: r,
            kind: ChangeKind::Modified,
            object: obj.clone(),
            previous: Some(old),
        });
        Ok(obj)
    }

    /// Removes an object; the DELETED event carries a fresh resourceVersion.
    pub fn remove(&mut self, r: &'static ResourceType, ns: &str, name: &str) -> Option<Arc<Value>> {
        let old = self
            .objects
            .get_mut(r.plural)?
            .remove(&(ns.to_string(), name.to_string()))?;
        self.rv += 1;
        let mut last = (*old).clone();
        set_rv(&mut last, self.rv);
        let last = Arc::new(last);
        let rv = self.rv;
        self.record(Change {
            rv,
            resource: r,
            kind: ChangeKind::Deleted,
            object: last.clone(),
            previous: Some(old),
        });
        Some(last)
    }

    /// The changes after `rv`, oldest first, or 410 if some were dropped.
    pub fn changes_since(&self, rv: u64) -> Result<Vec<Change>, ApiError> {
        if rv < self.compacted_rv {
            return Err(ApiError::expired(rv, self.compacted_rv + 1));
        }
        let start = self.history.partition_point(|c| c.rv <= rv);
        Ok(self.history.range(start..).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulator::resources;

    fn pod(name: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "ns"}, "spec": {}})
    }

    #[test]
    fn versions_history_and_expiry() {
        let pods = resources::core("pods");
        let mut s = Store::new(3);
        let a = s.insert(pods, pod("a")).map(|o| rv_of(&o)).unwrap_or(0);
        assert_eq!(a, 1);
        assert!(s.insert(pods, pod("a")).is_err_and(|e| e.code == 409));
        let mut changed = pod("a");
        changed["spec"]["nodeName"] = json!("n1");
        let _ = s.replace(pods, changed.clone());
        // Same content: no new version.
        let _ = s.replace(pods, changed);
        assert_eq!(s.current_rv(), 2);
        let _ = s.insert(pods, pod("b"));
        let _ = s.remove(pods, "ns", "b");
        assert_eq!(s.current_rv(), 4);
        assert_eq!(s.list(pods, Some("ns")).len(), 1);
        let since = s.changes_since(1).unwrap_or_default();
        assert_eq!(since.len(), 3);
        assert_eq!(since[2].kind, ChangeKind::Deleted);
        // rv 1 was dropped from the window of 3: watching from 0 is expired.
        assert!(s.changes_since(0).is_err_and(|e| e.code == 410));
        s.compact();
        assert!(s.changes_since(3).is_err_and(|e| e.code == 410));
        assert!(s.changes_since(4).is_ok_and(|c| c.is_empty()));
    }
}
