//! Create, update, patch and delete, with the apiserver's admission,
//! defaulting, validation and garbage-collection semantics.
//!
//! Controllers create pods through the same path as API clients, so a Job
//! whose template the apiserver would refuse fails here in the same way
//! (with a FailedCreate event on the Job).

use std::sync::Arc;

use base64::Engine;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret, ServiceAccount};
use serde_json::{Value, json};

use super::cluster::{Cluster, lock, now_str, random_suffix, typed};
use super::defaults;
use super::error::{ApiError, FieldError};
use super::patch::{self, PatchKind};
use super::podsecurity;
use super::resources::{self, ResourceType};
use super::selector::{FieldSelector, LabelSelector};
use super::services;
use super::store::{key_of, rv_of};
use super::validation;

/// Options of a DELETE.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeleteOpts {
    /// `gracePeriodSeconds`.
    pub grace_period: Option<i64>,
    /// `propagationPolicy`: Orphan, Background or Foreground.
    pub propagation: Option<String>,
    /// `preconditions.uid`.
    pub precondition_uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub precondition_rv: Option<String>,
}

impl DeleteOpts {
    /// Reads a DeleteOptions body (fields the query string did not set).
    pub fn merge_body(&mut self, body: &Value) {
        if self.grace_period.is_none() {
            self.grace_period = body["gracePeriodSeconds"].as_i64();
        }
        if self.propagation.is_none() {
            self.propagation = body["propagationPolicy"].as_str().map(String::from);
            if self.propagation.is_none() {
                match body["orphanDependents"].as_bool() {
                    Some(true) => self.propagation = Some("Orphan".into()),
                    Some(false) => self.propagation = Some("Background".into()),
                    None => {}
                }
            }
        }
        self.precondition_uid = body["preconditions"]["uid"].as_str().map(String::from);
        self.precondition_rv = body["preconditions"]["resourceVersion"]
            .as_str()
            .map(String::from);
    }
}

fn decode_error(r: &ResourceType, e: &str) -> ApiError {
    ApiError::bad_request(format!(
        "{} in version \"{}\" cannot be handled as a {}: {e}",
        r.kind, r.version, r.kind
    ))
}

fn labels_of(obj: &Value) -> std::collections::BTreeMap<String, String> {
    obj.pointer("/metadata/labels")
        .and_then(|l| serde_json::from_value(l.clone()).ok())
        .unwrap_or_default()
}

fn uses_label_names(r: &ResourceType) -> bool {
    matches!(r.plural, "namespaces" | "services")
}

/// Resources whose status is only written through `/status`.
fn has_status_subresource(r: &ResourceType) -> bool {
    r.subresources.contains(&"status")
}

impl Cluster {
    fn invalid(&self, r: &ResourceType, name: &str, errs: &[FieldError]) -> ApiError {
        ApiError::invalid(r.kind, r.group, name, errs)
    }

    /// Creates an object as the apiserver would: decode, name, default,
    /// admit, validate, store.
    pub fn create(
        &self,
        r: &'static ResourceType,
        ns: &str,
        body: Value,
    ) -> Result<Arc<Value>, ApiError> {
        if !body.is_object() {
            return Err(decode_error(r, "expected a JSON object"));
        }
        if let Some(kind) = body.get("kind").and_then(Value::as_str)
            && kind != r.kind
        {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({}) does not match the expected API version ({})",
                body["apiVersion"].as_str().unwrap_or_default(),
                r.api_version()
            )));
        }
        let mut obj = (r.normalize)(body).map_err(|e| decode_error(r, &e))?;
        obj["kind"] = json!(r.kind);
        obj["apiVersion"] = json!(r.api_version());
        if !obj["metadata"].is_object() {
            obj["metadata"] = json!({});
        }
        let meta = &mut obj["metadata"];
        if r.namespaced {
            match meta["namespace"].as_str() {
                Some(n) if !n.is_empty() && n != ns => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                _ => meta["namespace"] = json!(ns),
            }
        } else if let Some(m) = meta.as_object_mut() {
            m.remove("namespace");
        }
        let mut name = meta["name"].as_str().unwrap_or_default().to_string();
        if name.is_empty()
            && let Some(prefix) = meta["generateName"].as_str()
        {
            let prefix: String = prefix.chars().take(58).collect();
            name = format!("{prefix}{}", random_suffix(5));
        }
        meta["name"] = json!(name);
        let mut errs = validation::validate_name(&name, uses_label_names(r));
        errs.extend(validation::validate_labels(
            &labels_of(&obj),
            "metadata.labels",
        ));
        if !errs.is_empty() {
            return Err(self.invalid(r, &name, &errs));
        }
        if r.namespaced {
            match self.get(resources::core("namespaces"), "", ns) {
                None => {
                    return Err(ApiError::not_found(
                        &resources::core("namespaces").qualified(),
                        ns,
                    ));
                }
                Some(n) if n.pointer("/metadata/deletionTimestamp").is_some() => {
                    return Err(ApiError::forbidden(
                        &r.qualified(),
                        &name,
                        &format!(
                            "unable to create new content in namespace {ns} because it is being terminated"
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        let uid = uuid::Uuid::new_v4().to_string();
        let meta = &mut obj["metadata"];
        meta["uid"] = json!(uid);
        meta["creationTimestamp"] = json!(now_str());
        if let Some(m) = meta.as_object_mut() {
            m.remove("resourceVersion");
            m.remove("deletionTimestamp");
            m.remove("deletionGracePeriodSeconds");
            m.remove("managedFields");
            m.remove("selfLink");
        }
        if r.plural != "events" && r.plural != "namespaces" {
            meta["generation"] = json!(1);
        }
        // A Service's clusterIP is chosen against the stored Services: no
        // other create may take one until this one is stored.
        let network = self.pod_network().clone();
        let _cluster_ips = (r.plural == "services").then(|| lock(&network.cluster_ip_lock));
        obj = self.admit(r, ns, &name, &uid, obj)?;
        let mut store = self.store();
        let stored = store.insert(r, obj)?;
        let rv = store.current_rv();
        drop(store);
        self.notify(rv);
        if r.plural == "namespaces" {
            self.populate_namespace(&name);
        }
        Ok(stored)
    }

    /// Per-kind defaulting and admission on create.
    fn admit(
        &self,
        r: &'static ResourceType,
        ns: &str,
        name: &str,
        uid: &str,
        obj: Value,
    ) -> Result<Value, ApiError> {
        let to_value = |v: &dyn erased::Ser| v.to_json().map_err(|e| decode_error(r, &e));
        match r.plural {
            "pods" => {
                let mut pod: Pod = typed(&obj).ok_or_else(|| decode_error(r, "bad pod"))?;
                if let Some(bad) = pod.spec.as_ref().and_then(validation::first_bad_quantity) {
                    return Err(decode_error(
                        r,
                        &format!(
                            "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$' (got {bad:?})"
                        ),
                    ));
                }
                let sa_name = pod
                    .spec
                    .as_ref()
                    .and_then(|s| {
                        s.service_account_name
                            .clone()
                            .or_else(|| s.service_account.clone())
                    })
                    .unwrap_or_else(|| "default".into());
                let sa: Option<ServiceAccount> =
                    self.get_typed(resources::core("serviceaccounts"), ns, &sa_name);
                let Some(sa) = sa else {
                    return Err(ApiError::forbidden(
                        &r.qualified(),
                        name,
                        &format!(
                            "error looking up service account {ns}/{sa_name}: serviceaccount \"{sa_name}\" not found"
                        ),
                    ));
                };
                defaults::default_pod(
                    &mut pod,
                    sa.automount_service_account_token,
                    &random_suffix(5),
                );
                if let Some(spec) = &pod.spec {
                    let errs = validation::validate_pod_spec(spec, "spec");
                    if !errs.is_empty() {
                        return Err(self.invalid(r, name, &errs));
                    }
                    // Pod Security admission runs after validation, on the
                    // defaulted pod, as the API server's plugin does.
                    let ns_labels = self
                        .get(resources::core("namespaces"), "", ns)
                        .map(|n| labels_of(&n))
                        .unwrap_or_default();
                    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
                    if let Err(why) = podsecurity::admit(&ns_labels, &annotations, spec) {
                        return Err(ApiError::forbidden(&r.qualified(), name, &why));
                    }
                }
                to_value(&pod)
            }
            "jobs" => {
                let mut job: Job = typed(&obj).ok_or_else(|| decode_error(r, "bad job"))?;
                if let Some(bad) = job
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.spec.as_ref())
                    .and_then(validation::first_bad_quantity)
                {
                    return Err(decode_error(
                        r,
                        &format!("quantities must match the regular expression (got {bad:?})"),
                    ));
                }
                defaults::default_job(&mut job, uid);
                let errs = validation::validate_job(&job);
                if !errs.is_empty() {
                    return Err(self.invalid(r, name, &errs));
                }
                let mut v = to_value(&job)?;
                v["status"] = json!({});
                Ok(v)
            }
            "secrets" => {
                let mut s: Secret = typed(&obj).ok_or_else(|| decode_error(r, "bad secret"))?;
                if let Some(sd) = s.string_data.take() {
                    let data = s.data.get_or_insert_with(Default::default);
                    for (k, v) in sd {
                        data.insert(k, k8s_openapi::ByteString(v.into_bytes()));
                    }
                }
                s.type_.get_or_insert_with(|| "Opaque".into());
                to_value(&s)
            }
            "services" => services::admit(self, obj).map_err(|errs| self.invalid(r, name, &errs)),
            "namespaces" => {
                let mut v = obj;
                v["spec"] = json!({"finalizers": ["kubernetes"]});
                v["status"] = json!({"phase": "Active"});
                v["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
                Ok(v)
            }
            "persistentvolumeclaims" => {
                let mut v = obj;
                let storage = v
                    .pointer("/spec/resources/requests/storage")
                    .cloned()
                    .unwrap_or(json!("1Gi"));
                if v.pointer("/spec/volumeName")
                    .and_then(Value::as_str)
                    .is_none()
                {
                    v["spec"]["volumeName"] = json!(format!("pvc-{uid}"));
                }
                v["status"] = json!({
                    "phase": "Bound",
                    "accessModes": v.pointer("/spec/accessModes").cloned().unwrap_or(json!(["ReadWriteOnce"])),
                    "capacity": {"storage": storage},
                });
                Ok(v)
            }
            _ => Ok(obj),
        }
    }

    /// What every new namespace gets: the `default` service account and the
    /// `kube-root-ca.crt` ConfigMap pods mount.
    pub fn populate_namespace(&self, ns: &str) {
        let sa =
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}});
        let _ = self.create(resources::core("serviceaccounts"), ns, sa);
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "kube-root-ca.crt"}, "data": {"ca.crt": self.ca_pem}});
        let _ = self.create(resources::core("configmaps"), ns, cm);
    }

    /// PUT: replaces an object (or only its status through `/status`).
    pub fn update(
        &self,
        r: &'static ResourceType,
        ns: &str,
        name: &str,
        body: Value,
        status_only: bool,
    ) -> Result<Arc<Value>, ApiError> {
        if !body.is_object() {
            return Err(decode_error(r, "expected a JSON object"));
        }
        let new = (r.normalize)(body).map_err(|e| decode_error(r, &e))?;
        let old = self
            .get(r, ns, name)
            .ok_or_else(|| ApiError::not_found(&r.qualified(), name))?;
        let body_name = new
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or(name);
        if body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let body_rv = rv_of(&new);
        if body_rv != 0 && body_rv != rv_of(&old) {
            return Err(ApiError::conflict(&r.qualified(), name));
        }
        let mut next = if status_only {
            let mut n = (*old).clone();
            n["status"] = new.get("status").cloned().unwrap_or(json!({}));
            n
        } else {
            let mut n = new;
            if has_status_subresource(r) {
                n["status"] = old.get("status").cloned().unwrap_or(Value::Null);
                if n["status"].is_null()
                    && let Some(m) = n.as_object_mut()
                {
                    m.remove("status");
                }
            }
            for keep in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "namespace",
                "name",
                "generation",
            ] {
                match old["metadata"].get(keep) {
                    Some(v) => n["metadata"][keep] = v.clone(),
                    None => {
                        if let Some(m) = n["metadata"].as_object_mut() {
                            m.remove(keep);
                        }
                    }
                }
            }
            if n.get("spec") != old.get("spec")
                && let Some(g) = old.pointer("/metadata/generation").and_then(Value::as_i64)
            {
                n["metadata"]["generation"] = json!(g + 1);
            }
            n
        };
        next["kind"] = json!(r.kind);
        next["apiVersion"] = json!(r.api_version());
        let errs = validation::validate_labels(&labels_of(&next), "metadata.labels");
        if !errs.is_empty() {
            return Err(self.invalid(r, name, &errs));
        }
        if r.plural == "services"
            && !status_only
            && let Err(e) = services::keep_cluster_ip(&old, &mut next)
        {
            return Err(self.invalid(r, name, &[e]));
        }
        if r.plural == "jobs"
            && !status_only
            && old.pointer("/spec/template") != next.pointer("/spec/template")
        {
            let errs = [FieldError::invalid(
                "spec.template",
                "...",
                "field is immutable",
            )];
            return Err(self.invalid(r, name, &errs));
        }
        let mut store = self.store();
        let current = store
            .get(r, ns, name)
            .ok_or_else(|| ApiError::not_found(&r.qualified(), name))?;
        if rv_of(&current) != rv_of(&old) {
            return Err(ApiError::conflict(&r.qualified(), name));
        }
        let stored = store.replace(r, next)?;
        let rv = store.current_rv();
        drop(store);
        self.notify(rv);
        Ok(stored)
    }

    /// PATCH; server-side apply creates a missing object.
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &self,
        r: &'static ResourceType,
        ns: &str,
        name: &str,
        kind: PatchKind,
        body: &[u8],
        status_only: bool,
        field_manager: Option<&str>,
    ) -> Result<Arc<Value>, ApiError> {
        if kind == PatchKind::Apply && field_manager.is_none_or(str::is_empty) {
            return Err(ApiError::invalid(
                "PatchOptions",
                "meta.k8s.io",
                "",
                &[FieldError::required(
                    "fieldManager",
                    "is required for apply patch",
                )],
            ));
        }
        let p = patch::parse_body(kind, body)?;
        let Some(current) = self.get(r, ns, name) else {
            if kind == PatchKind::Apply {
                let mut obj = p;
                obj["metadata"]["name"] = json!(name);
                return self.create(r, ns, obj);
            }
            return Err(ApiError::not_found(&r.qualified(), name));
        };
        let patched = patch::apply(kind, &current, &p)?;
        self.update(r, ns, name, patched, status_only)
    }

    /// DELETE of one object, with grace periods for pods and propagation to
    /// dependents.
    pub fn delete(
        &self,
        r: &'static ResourceType,
        ns: &str,
        name: &str,
        opts: &DeleteOpts,
    ) -> Result<Arc<Value>, ApiError> {
        let obj = self
            .get(r, ns, name)
            .ok_or_else(|| ApiError::not_found(&r.qualified(), name))?;
        if let Some(uid) = &opts.precondition_uid
            && obj.pointer("/metadata/uid").and_then(Value::as_str) != Some(uid.as_str())
        {
            return Err(ApiError::conflict(&r.qualified(), name));
        }
        if let Some(prv) = &opts.precondition_rv
            && obj
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                != Some(prv.as_str())
        {
            return Err(ApiError::conflict(&r.qualified(), name));
        }
        match r.plural {
            "pods" => Ok(self.delete_pod(ns, name, &obj, opts.grace_period)),
            "namespaces" => Ok(self.delete_namespace(name)),
            _ => {
                // batch/v1 Jobs keep the legacy default of orphaning their pods.
                let default = if r.plural == "jobs" {
                    "Orphan"
                } else {
                    "Background"
                };
                let policy = opts.propagation.as_deref().unwrap_or(default);
                let uid = obj
                    .pointer("/metadata/uid")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                match policy {
                    "Foreground" => {
                        let marked = self
                            .mutate(r, ns, name, |v| {
                                if v.pointer("/metadata/deletionTimestamp").is_none() {
                                    v["metadata"]["deletionTimestamp"] = json!(now_str());
                                    v["metadata"]["deletionGracePeriodSeconds"] = json!(0);
                                }
                                let fins = v["metadata"]["finalizers"]
                                    .as_array()
                                    .cloned()
                                    .unwrap_or_default();
                                if !fins.contains(&json!("foregroundDeletion")) {
                                    let mut f = fins;
                                    f.push(json!("foregroundDeletion"));
                                    v["metadata"]["finalizers"] = json!(f);
                                }
                            })
                            .unwrap_or(obj);
                        self.delete_dependents(ns, &uid);
                        Ok(marked)
                    }
                    "Orphan" => {
                        self.orphan_dependents(ns, &uid);
                        self.remove(r, ns, name)
                            .ok_or_else(|| ApiError::not_found(&r.qualified(), name))
                    }
                    "Background" => {
                        let gone = self
                            .remove(r, ns, name)
                            .ok_or_else(|| ApiError::not_found(&r.qualified(), name))?;
                        self.delete_dependents(ns, &uid);
                        Ok(gone)
                    }
                    other => Err(ApiError::invalid(
                        "DeleteOptions",
                        "meta.k8s.io",
                        "",
                        &[FieldError::not_supported(
                            "propagationPolicy",
                            other,
                            &["Foreground", "Background", "Orphan"],
                        )],
                    )),
                }
            }
        }
    }

    /// Graceful pod deletion: unscheduled or finished pods go at once; others
    /// get a deletionTimestamp and the kubelet stops them.
    pub fn delete_pod(&self, ns: &str, name: &str, obj: &Value, grace: Option<i64>) -> Arc<Value> {
        let pods = resources::core("pods");
        let scheduled = obj
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty());
        let phase = obj
            .pointer("/status/phase")
            .and_then(Value::as_str)
            .unwrap_or("Pending");
        let grace = grace
            .or_else(|| {
                obj.pointer("/spec/terminationGracePeriodSeconds")
                    .and_then(Value::as_i64)
            })
            .unwrap_or(30)
            .max(0);
        let live_worker = self.kubelet.has_worker(obj);
        if !scheduled || grace == 0 || ((phase == "Succeeded" || phase == "Failed") && !live_worker)
        {
            return self
                .remove(pods, ns, name)
                .unwrap_or_else(|| Arc::new(obj.clone()));
        }
        let deadline = chrono::Utc::now() + chrono::Duration::seconds(grace);
        self.mutate(pods, ns, name, |v| {
            let existing = v
                .pointer("/metadata/deletionGracePeriodSeconds")
                .and_then(Value::as_i64);
            if existing.is_none_or(|e| grace < e) {
                v["metadata"]["deletionTimestamp"] =
                    json!(deadline.format("%Y-%m-%dT%H:%M:%SZ").to_string());
                v["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
            }
        })
        .unwrap_or_else(|| Arc::new(obj.clone()))
    }

    /// The objects whose `ownerReferences` name `owner_uid`, by kind. The
    /// garbage collector follows every kind; the emulator follows the ones
    /// its users make dependents of: pods (of Jobs) and Secrets and
    /// ConfigMaps (owned by a Job, like the agents' token Secrets).
    fn dependents(&self, ns: &str, owner_uid: &str) -> Vec<(&'static ResourceType, Arc<Value>)> {
        let mut out = Vec::new();
        for kind in ["pods", "secrets", "configmaps"] {
            let r = resources::core(kind);
            for o in self.store().list(r, Some(ns)) {
                let owned = o
                    .pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                    .is_some_and(|refs| refs.iter().any(|x| x["uid"] == json!(owner_uid)));
                if owned {
                    out.push((r, o));
                }
            }
        }
        out
    }

    /// The garbage collector's Background/Foreground step: deletes the
    /// dependents an owner had (pods gracefully).
    pub fn delete_dependents(&self, ns: &str, owner_uid: &str) {
        for (r, o) in self.dependents(ns, owner_uid) {
            let (ons, oname) = key_of(&o);
            if r.plural == "pods" {
                if o.pointer("/metadata/deletionTimestamp").is_none() {
                    self.delete_pod(&ons, &oname, &o, None);
                }
            } else {
                self.remove(r, &ons, &oname);
            }
        }
    }

    /// The garbage collector's Orphan step: dependents lose their owner
    /// reference and live on.
    fn orphan_dependents(&self, ns: &str, owner_uid: &str) {
        for (r, o) in self.dependents(ns, owner_uid) {
            let (ons, oname) = key_of(&o);
            self.mutate(r, &ons, &oname, |v| {
                if let Some(refs) = v["metadata"]["ownerReferences"].as_array_mut() {
                    refs.retain(|o| o["uid"] != json!(owner_uid));
                    if refs.is_empty()
                        && let Some(m) = v["metadata"].as_object_mut()
                    {
                        m.remove("ownerReferences");
                    }
                }
            });
        }
    }

    fn delete_namespace(&self, name: &str) -> Arc<Value> {
        let ns_res = resources::core("namespaces");
        let marked = self.mutate(ns_res, "", name, |v| {
            v["metadata"]["deletionTimestamp"] = json!(now_str());
            v["status"]["phase"] = json!("Terminating");
        });
        for r in resources::RESOURCES.iter().filter(|r| r.namespaced) {
            let objs = self.store().list(r, Some(name));
            for o in objs {
                let (ons, oname) = key_of(&o);
                if r.plural == "pods" {
                    self.delete_pod(&ons, &oname, &o, Some(0));
                } else {
                    self.remove(r, &ons, &oname);
                }
            }
        }
        self.remove(ns_res, "", name);
        marked.unwrap_or_else(|| Arc::new(json!({})))
    }

    /// DELETE on a collection, filtered by selectors.
    pub fn delete_collection(
        &self,
        r: &'static ResourceType,
        ns: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
        opts: &DeleteOpts,
    ) -> Result<Vec<Arc<Value>>, ApiError> {
        let targets: Vec<Arc<Value>> = self
            .store()
            .list(r, ns)
            .into_iter()
            .filter(|o| labels.matches_object(o) && fields.matches_object(o))
            .collect();
        let mut out = Vec::new();
        for t in targets {
            let (tns, tname) = key_of(&t);
            match self.delete(r, &tns, &tname, opts) {
                Ok(v) => out.push(v),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Decodes a secret's data (for env and volumes).
    pub fn secret_data(
        &self,
        ns: &str,
        name: &str,
    ) -> Option<std::collections::BTreeMap<String, Vec<u8>>> {
        let s = self.get(resources::core("secrets"), ns, name)?;
        let mut out = std::collections::BTreeMap::new();
        if let Some(data) = s.get("data").and_then(Value::as_object) {
            for (k, v) in data {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(v.as_str().unwrap_or_default())
                    .unwrap_or_default();
                out.insert(k.clone(), bytes);
            }
        }
        Some(out)
    }
}

/// Serialization through a trait object, so `admit` can share one error path.
mod erased {
    /// Anything serializable to JSON.
    pub trait Ser {
        fn to_json(&self) -> Result<serde_json::Value, String>;
    }
    impl<T: serde::Serialize> Ser for T {
        fn to_json(&self) -> Result<serde_json::Value, String> {
            serde_json::to_value(self).map_err(|e| e.to_string())
        }
    }
}
