//! The shared state of one emulated cluster: the object store, tokens,
//! faults, and the hooks controllers use to read and change objects.
//!
//! Everything that changes objects goes through here (API handlers and
//! controllers alike), and every change wakes the controllers and watches
//! through one `watch` channel carrying the latest resourceVersion.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use rand::Rng;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::config::{EmulatorConfig, Identity};
use super::faults::Faults;
use super::kubelet::KubeletState;
use super::netns::PodNetwork;
use super::resources::{self, ResourceType};
use super::store::Store;

/// The alphabet of generated name suffixes (Kubernetes' `utilrand`): no
/// vowels, no look-alike characters.
const SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// A random suffix of `n` characters, as used for generateName.
pub fn random_suffix(n: usize) -> String {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| SUFFIX_ALPHABET[rng.random_range(0..SUFFIX_ALPHABET.len())] as char)
        .collect()
}

/// Now, in the second-precision RFC 3339 form of `metav1.Time`.
pub fn now_str() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Now, with microseconds (`metav1.MicroTime`).
pub fn now_micro_str() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

/// Parses a `metav1.Time` string.
pub fn parse_time(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

/// Reads a JSON object into a k8s-openapi type.
pub fn typed<T: DeserializeOwned>(v: &Value) -> Option<T> {
    serde_json::from_value(v.clone()).ok()
}

/// Bearer tokens, both ways.
#[derive(Debug, Default)]
struct Tokens {
    by_token: HashMap<String, Identity>,
    by_identity: HashMap<Identity, String>,
}

/// A rule that keeps matching pods in ContainerCreating, as a volume that
/// never mounts does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StallRule {
    /// Namespace to match, any if `None`.
    pub namespace: Option<String>,
    /// Pod name prefix to match, any if `None`.
    pub name_prefix: Option<String>,
    /// Label selector to match, any if `None`.
    pub label_selector: Option<String>,
}

/// One emulated cluster.
pub struct Cluster {
    /// The configuration it was started with.
    pub config: EmulatorConfig,
    /// Root of node, pod and kubeconfig files.
    pub state_dir: PathBuf,
    /// PEM of the CA that signed the HTTPS certificate (pods trust it).
    pub ca_pem: String,
    /// The objects.
    store: Mutex<Store>,
    /// Carries the latest resourceVersion; wakes controllers and watches.
    changed: watch::Sender<u64>,
    /// Known bearer tokens.
    tokens: Mutex<Tokens>,
    /// Request faults and counters.
    pub faults: Mutex<Faults>,
    /// Bumped to make every open watch drop its connection.
    pub watch_generation: watch::Sender<u64>,
    /// Cancelled at shutdown; every task watches it.
    pub shutdown: CancellationToken,
    /// The HTTPS port, once bound.
    pub https_port: OnceLock<u16>,
    /// The HTTP port, once bound.
    pub http_port: OnceLock<u16>,
    /// Pod workers and their processes.
    pub kubelet: KubeletState,
    /// Pods matching any of these never finish mounting volumes.
    pub stall_rules: Mutex<Vec<StallRule>>,
    /// Aggregation key of each recorded event -> the Event's name, so
    /// repeats find their Event without scanning them all.
    event_index: Mutex<HashMap<String, String>>,
    /// The pod network, set once at start (host network if never set).
    network: OnceLock<Arc<PodNetwork>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("state_dir", &self.state_dir)
            .finish_non_exhaustive()
    }
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it (the
/// store stays consistent: every mutation is a single insert or remove).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Cluster {
    /// An empty cluster; [`super::bootstrap`] fills it.
    pub fn new(
        config: EmulatorConfig,
        state_dir: PathBuf,
        ca_pem: String,
        kubelet: KubeletState,
    ) -> Self {
        let (changed, _) = watch::channel(0);
        let (watch_generation, _) = watch::channel(0);
        Self {
            store: Mutex::new(Store::new(config.watch_history)),
            config,
            state_dir,
            ca_pem,
            changed,
            tokens: Mutex::new(Tokens::default()),
            faults: Mutex::new(Faults::default()),
            watch_generation,
            shutdown: CancellationToken::new(),
            https_port: OnceLock::new(),
            http_port: OnceLock::new(),
            kubelet,
            stall_rules: Mutex::new(Vec::new()),
            event_index: Mutex::new(HashMap::new()),
            network: OnceLock::new(),
        }
    }

    /// The pod network: pod IPs, sockets inside it, the in-cluster API
    /// address (see [`super::netns`]).
    pub fn pod_network(&self) -> &Arc<PodNetwork> {
        self.network.get_or_init(|| Arc::new(PodNetwork::host()))
    }

    /// Installs the pod network (once, at start); false if one was set.
    pub fn set_pod_network(&self, net: PodNetwork) -> bool {
        self.network.set(Arc::new(net)).is_ok()
    }

    /// Locks the store. Never hold the guard across an `.await`.
    pub fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.store)
    }

    /// Wakes controllers and watches after a change.
    pub fn notify(&self, rv: u64) {
        self.changed.send_replace(rv);
    }

    /// A receiver that sees every change notification.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// One object.
    pub fn get(&self, r: &ResourceType, ns: &str, name: &str) -> Option<Arc<Value>> {
        self.store().get(r, ns, name)
    }

    /// One object, typed.
    pub fn get_typed<T: DeserializeOwned>(
        &self,
        r: &ResourceType,
        ns: &str,
        name: &str,
    ) -> Option<T> {
        self.get(r, ns, name).and_then(|v| typed(&v))
    }

    /// Applies `f` to a copy of an object and stores the result if it
    /// changed. Returns the stored object, or `None` if it does not exist.
    pub fn mutate(
        &self,
        r: &'static ResourceType,
        ns: &str,
        name: &str,
        f: impl FnOnce(&mut Value),
    ) -> Option<Arc<Value>> {
        let mut store = self.store();
        let current = store.get(r, ns, name)?;
        let mut next = (*current).clone();
        f(&mut next);
        let stored = store.replace(r, next).ok()?;
        let rv = store.current_rv();
        drop(store);
        self.notify(rv);
        Some(stored)
    }

    /// Like [`Cluster::mutate`] through a k8s-openapi type.
    pub fn mutate_typed<T>(
        &self,
        r: &'static ResourceType,
        ns: &str,
        name: &str,
        f: impl FnOnce(&mut T),
    ) -> Option<T>
    where
        T: DeserializeOwned + serde::Serialize,
    {
        let stored = self.mutate(r, ns, name, |v| {
            let Some(mut t) = typed::<T>(v) else { return };
            f(&mut t);
            if let Ok(nv) = serde_json::to_value(&t) {
                *v = nv;
            }
        })?;
        typed::<T>(&stored)
    }

    /// Removes an object at once (no grace period, no propagation).
    pub fn remove(&self, r: &'static ResourceType, ns: &str, name: &str) -> Option<Arc<Value>> {
        let mut store = self.store();
        let gone = store.remove(r, ns, name);
        let rv = store.current_rv();
        drop(store);
        self.notify(rv);
        gone
    }

    /// The identity behind a bearer token.
    pub fn identity_for_token(&self, token: &str) -> Option<Identity> {
        lock(&self.tokens).by_token.get(token).cloned()
    }

    /// The token of an identity, minted on first use.
    pub fn token_for(&self, identity: &Identity) -> String {
        let mut t = lock(&self.tokens);
        if let Some(tok) = t.by_identity.get(identity) {
            return tok.clone();
        }
        let tok = format!("emu-{}", random_token());
        t.by_token.insert(tok.clone(), identity.clone());
        t.by_identity.insert(identity.clone(), tok.clone());
        tok
    }

    /// Registers a fixed token.
    pub fn add_token(&self, token: &str, identity: Identity) {
        let mut t = lock(&self.tokens);
        t.by_token.insert(token.to_string(), identity.clone());
        t.by_identity
            .entry(identity)
            .or_insert_with(|| token.to_string());
    }

    /// Records an Event about `involved`, aggregating repeats (same object,
    /// reason, message and source) into `count` as the real event recorder
    /// does.
    pub fn record_event(
        &self,
        involved: &Value,
        type_: &str,
        reason: &str,
        message: &str,
        component: &str,
        host: Option<&str>,
    ) {
        let events = resources::core("events");
        let ns = involved
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or("default")
            .to_string();
        let involved_ref = object_ref(involved);
        let uid = involved_ref["uid"].clone();
        let now = now_str();
        let mut store = self.store();
        let key = format!(
            "{}\u{0}{reason}\u{0}{component}\u{0}{message}",
            uid.as_str().unwrap_or_default()
        );
        let mut index = lock(&self.event_index);
        let existing = index
            .get(&key)
            .and_then(|name| store.get(events, &ns, name));
        let result = match existing {
            Some(e) => {
                let mut next = (*e).clone();
                let count = next["count"].as_i64().unwrap_or(1) + 1;
                next["count"] = json!(count);
                next["lastTimestamp"] = json!(now);
                store.replace(events, next).map(|_| ())
            }
            None => {
                let name = format!(
                    "{}.{:016x}",
                    involved_ref["name"].as_str().unwrap_or("object"),
                    rand::rng().random::<u64>()
                );
                let mut source = json!({"component": component});
                if let Some(h) = host {
                    source["host"] = json!(h);
                }
                let ev = json!({
                    "apiVersion": "v1",
                    "kind": "Event",
                    "metadata": {
                        "name": name,
                        "namespace": ns,
                        "uid": uuid::Uuid::new_v4().to_string(),
                        "creationTimestamp": now,
                    },
                    "involvedObject": involved_ref,
                    "reason": reason,
                    "message": message,
                    "source": source,
                    "firstTimestamp": now,
                    "lastTimestamp": now,
                    "count": 1,
                    "type": type_,
                    "eventTime": null,
                    "reportingComponent": component,
                    "reportingInstance": host.unwrap_or(""),
                });
                index.insert(key, name);
                store.insert(events, ev).map(|_| ())
            }
        };
        drop(index);
        if let Err(e) = result {
            tracing::warn!(error = %e, "cannot record event");
        }
        let rv = store.current_rv();
        drop(store);
        self.notify(rv);
    }

    /// Makes pods matching a rule stick in ContainerCreating.
    pub fn add_stall_rule(&self, rule: StallRule) {
        lock(&self.stall_rules).push(rule);
    }

    /// Whether a pod is stuck by a stall rule.
    pub fn is_stalled(&self, pod: &Value) -> bool {
        let (ns, name) = super::store::key_of(pod);
        lock(&self.stall_rules).iter().any(|r| {
            r.namespace.as_deref().is_none_or(|n| n == ns)
                && r.name_prefix.as_deref().is_none_or(|p| name.starts_with(p))
                && r.label_selector.as_deref().is_none_or(|s| {
                    super::selector::LabelSelector::parse(s)
                        .is_ok_and(|sel| sel.matches_object(pod))
                })
        })
    }
}

/// A random alphanumeric token.
pub fn random_token() -> String {
    let mut rng = rand::rng();
    (0..32)
        .map(|_| {
            let c = rng.random_range(0..36u8);
            if c < 10 {
                (b'0' + c) as char
            } else {
                (b'a' + c - 10) as char
            }
        })
        .collect()
}

/// An `ObjectReference` to an object, as events and owner checks use.
pub fn object_ref(obj: &Value) -> Value {
    let m = &obj["metadata"];
    let mut r = json!({
        "kind": obj["kind"],
        "name": m["name"],
        "uid": m["uid"],
        "apiVersion": obj["apiVersion"],
        "resourceVersion": m["resourceVersion"],
    });
    if let Some(ns) = m["namespace"].as_str() {
        r["namespace"] = json!(ns);
    }
    r
}
