//! The OpenAPI v3 documents kubectl downloads (`/openapi/v3` and one
//! document per group-version), generated from the k8s-openapi types'
//! schemas for exactly the resources in [`resources::RESOURCES`].
//!
//! What kubectl reads in them:
//! - every PATCH operation carries `x-kubernetes-group-version-kind` and
//!   declares the `fieldValidation` query parameter, so `kubectl apply` and
//!   `kubectl create` leave validation to the server
//!   (`fieldValidation=Strict`, see [`crate::emulator::fieldvalidation`]);
//! - the kinds' schemas carry `x-kubernetes-group-version-kind`, and the
//!   lists that merge by key carry `x-kubernetes-patch-merge-key` and
//!   `x-kubernetes-patch-strategy`, which client-side `kubectl apply` uses to
//!   compute its strategic merge patch (and `kubectl explain` to describe
//!   fields).
//!
//! `/openapi/v2` is not served (404): kubectl v1.27 and later only fall back
//! to it when `/openapi/v3` is missing.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use k8s_openapi::api::{batch::v1 as batch, core::v1 as core, rbac::v1 as rbac};
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_openapi::schemars::generate::{SchemaGenerator, SchemaSettings};
use k8s_openapi::schemars::{JsonSchema, Schema};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::emulator::resources::{RESOURCES, ResourceType};

const REF_PREFIX: &str = "#/components/schemas/";
const PATCH_SCHEMA: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";
const DELETE_OPTIONS_SCHEMA: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
const STATUS_SCHEMA: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
const LIST_META_SCHEMA: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";

/// Lists that strategic merge patches merge by key, as the Kubernetes types
/// declare them (`patchStrategy`/`patchMergeKey` struct tags): schema,
/// property, strategy, merge key (empty for a merged list of scalars).
pub const MERGE_KEYS: &[(&str, &str, &str, &str)] = &[
    ("io.k8s.api.core.v1.PodSpec", "containers", "merge", "name"),
    (
        "io.k8s.api.core.v1.PodSpec",
        "initContainers",
        "merge",
        "name",
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "ephemeralContainers",
        "merge",
        "name",
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "volumes",
        "merge,retainKeys",
        "name",
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "imagePullSecrets",
        "merge",
        "name",
    ),
    ("io.k8s.api.core.v1.PodSpec", "hostAliases", "merge", "ip"),
    (
        "io.k8s.api.core.v1.PodSpec",
        "topologySpreadConstraints",
        "merge",
        "topologyKey",
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "resourceClaims",
        "merge,retainKeys",
        "name",
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "schedulingGates",
        "merge",
        "name",
    ),
    ("io.k8s.api.core.v1.Container", "env", "merge", "name"),
    (
        "io.k8s.api.core.v1.Container",
        "ports",
        "merge",
        "containerPort",
    ),
    (
        "io.k8s.api.core.v1.Container",
        "volumeMounts",
        "merge",
        "mountPath",
    ),
    (
        "io.k8s.api.core.v1.Container",
        "volumeDevices",
        "merge",
        "devicePath",
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "env",
        "merge",
        "name",
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "volumeMounts",
        "merge",
        "mountPath",
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "volumeDevices",
        "merge",
        "devicePath",
    ),
    ("io.k8s.api.core.v1.ServiceSpec", "ports", "merge", "port"),
    (
        "io.k8s.api.core.v1.PodStatus",
        "conditions",
        "merge",
        "type",
    ),
    ("io.k8s.api.core.v1.PodStatus", "podIPs", "merge", "ip"),
    ("io.k8s.api.core.v1.PodStatus", "hostIPs", "merge", "ip"),
    (
        "io.k8s.api.core.v1.NodeStatus",
        "conditions",
        "merge",
        "type",
    ),
    (
        "io.k8s.api.core.v1.NodeStatus",
        "addresses",
        "merge",
        "type",
    ),
    (
        "io.k8s.api.core.v1.NamespaceStatus",
        "conditions",
        "merge",
        "type",
    ),
    (
        "io.k8s.api.core.v1.PersistentVolumeClaimStatus",
        "conditions",
        "merge",
        "type",
    ),
    (
        "io.k8s.api.batch.v1.JobStatus",
        "conditions",
        "merge",
        "type",
    ),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "ownerReferences",
        "merge",
        "uid",
    ),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "finalizers",
        "merge",
        "",
    ),
];

/// The schema of a served kind, added to the generator's definitions; the
/// `$ref` to it is returned (`None` for a kind missing here, which the unit
/// tests catch).
fn kind_schema(g: &mut SchemaGenerator, r: &ResourceType) -> Option<Schema> {
    fn s<T: JsonSchema>(g: &mut SchemaGenerator) -> Option<Schema> {
        Some(g.subschema_for::<T>())
    }
    match (r.group, r.kind) {
        ("", "Namespace") => s::<core::Namespace>(g),
        ("", "Pod") => s::<core::Pod>(g),
        ("", "Event") => s::<core::Event>(g),
        ("", "Node") => s::<core::Node>(g),
        ("", "Secret") => s::<core::Secret>(g),
        ("", "ConfigMap") => s::<core::ConfigMap>(g),
        ("", "ServiceAccount") => s::<core::ServiceAccount>(g),
        ("", "Service") => s::<core::Service>(g),
        ("", "PersistentVolumeClaim") => s::<core::PersistentVolumeClaim>(g),
        ("", "PersistentVolume") => s::<core::PersistentVolume>(g),
        ("batch", "Job") => s::<batch::Job>(g),
        ("rbac.authorization.k8s.io", "Role") => s::<rbac::Role>(g),
        ("rbac.authorization.k8s.io", "RoleBinding") => s::<rbac::RoleBinding>(g),
        ("rbac.authorization.k8s.io", "ClusterRole") => s::<rbac::ClusterRole>(g),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => s::<rbac::ClusterRoleBinding>(g),
        _ => None,
    }
}

fn ref_name(schema: &Schema) -> Option<String> {
    schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix(REF_PREFIX))
        .map(str::to_string)
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("{REF_PREFIX}{name}")})
}

/// `x-kubernetes-group-version-kind` of a schema: a list.
fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!([op_gvk(group, version, kind)])
}

/// `x-kubernetes-group-version-kind` of an operation: one object (kubectl
/// skips an operation whose extension is a list).
fn op_gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({"group": group, "version": version, "kind": kind})
}

fn query_param(name: &str, description: &str) -> Value {
    json!({
        "name": name,
        "in": "query",
        "description": description,
        "schema": {"type": "string", "uniqueItems": true},
    })
}

fn path_param(name: &str, description: &str) -> Value {
    json!({
        "name": name,
        "in": "path",
        "required": true,
        "description": description,
        "schema": {"type": "string", "uniqueItems": true},
    })
}

/// The parameters of every write (create, update, patch).
fn write_params(patch: bool) -> Vec<Value> {
    let mut params = vec![
        query_param(
            "dryRun",
            "When present, indicates that modifications should not be persisted. Valid values are: All.",
        ),
        query_param(
            "fieldManager",
            "fieldManager is a name associated with the actor or entity that is making these changes.",
        ),
        query_param(
            "fieldValidation",
            "fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields. Valid values are: Ignore, Warn (the default) and Strict.",
        ),
    ];
    if patch {
        params.push(json!({
            "name": "force",
            "in": "query",
            "description": "Force is going to \"force\" Apply requests.",
            "schema": {"type": "boolean", "uniqueItems": true},
        }));
    }
    params
}

fn json_content(schema: &Value) -> Value {
    let mut m = Map::new();
    for ct in [
        "application/json",
        "application/yaml",
        "application/vnd.kubernetes.protobuf",
    ] {
        m.insert(ct.into(), json!({"schema": schema}));
    }
    Value::Object(m)
}

fn response(code: &str, schema: &Value) -> Value {
    json!({code: {"description": "OK", "content": json_content(schema)}})
}

struct Op<'a> {
    r: &'a ResourceType,
    action: &'static str,
    operation_id: String,
    kind_ref: Value,
}

impl Op<'_> {
    fn build(&self, extra: Map<String, Value>) -> Value {
        let mut op = json!({
            "operationId": self.operation_id,
            "x-kubernetes-action": self.action,
            "x-kubernetes-group-version-kind": op_gvk(self.r.group, self.r.version, self.r.kind),
            "responses": response("200", &self.kind_ref),
        });
        if let Some(m) = op.as_object_mut() {
            m.extend(extra);
        }
        op
    }
}

fn camel_kind(r: &ResourceType, namespaced: bool) -> String {
    let gv = if r.group.is_empty() {
        format!("Core{}", upper_first(r.version))
    } else {
        let first = r.group.split('.').next().unwrap_or(r.group);
        format!("{}{}", upper_first(first), upper_first(r.version))
    };
    let ns = if namespaced { "Namespaced" } else { "" };
    format!("{gv}{ns}{}", r.kind)
}

fn upper_first(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
        .unwrap_or_default()
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// The paths of one resource: collection, object and subresources.
fn resource_paths(r: &ResourceType, kind_name: &str, paths: &mut Map<String, Value>) {
    let prefix = if r.group.is_empty() {
        format!("/api/{}", r.version)
    } else {
        format!("/apis/{}/{}", r.group, r.version)
    };
    let base = if r.namespaced {
        format!("{prefix}/namespaces/{{namespace}}/{}", r.plural)
    } else {
        format!("{prefix}/{}", r.plural)
    };
    let kind_ref = schema_ref(kind_name);
    let list_ref = schema_ref(&list_schema_name(kind_name));
    let op = |action: &'static str, verb: &str, kind_ref: &Value| Op {
        r,
        action,
        operation_id: format!("{verb}{}", camel_kind(r, r.namespaced)),
        kind_ref: kind_ref.clone(),
    };
    let mut common = vec![query_param(
        "pretty",
        "If 'true', then the output is pretty printed.",
    )];
    if r.namespaced {
        common.push(path_param(
            "namespace",
            "object name and auth scope, such as for teams and projects",
        ));
    }
    let write_body = json!({"content": json_content(&kind_ref), "required": true});
    let patch_body = {
        let mut m = Map::new();
        for ct in [
            "application/apply-patch+yaml",
            "application/json-patch+json",
            "application/merge-patch+json",
            "application/strategic-merge-patch+json",
        ] {
            m.insert(ct.into(), json!({"schema": schema_ref(PATCH_SCHEMA)}));
        }
        json!({"content": m, "required": true})
    };
    let delete_body = json!({"content": json_content(&schema_ref(DELETE_OPTIONS_SCHEMA))});

    // The collection: list, create, deletecollection.
    let mut collection = Map::new();
    collection.insert(
        "get".into(),
        op("list", "list", &list_ref).build(obj(json!({"parameters": [
            query_param("labelSelector", "A selector to restrict the list of returned objects by their labels."),
            query_param("fieldSelector", "A selector to restrict the list of returned objects by their fields."),
            query_param("limit", "limit is a maximum number of responses to return for a list call."),
            query_param("continue", "The continue option should be set when retrieving more results from the server."),
            query_param("resourceVersion", "resourceVersion sets a constraint on what resource versions a request may be served from."),
            query_param("watch", "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications."),
        ]}))),
    );
    collection.insert(
        "post".into(),
        op("post", "create", &kind_ref).build(obj(json!({
            "parameters": write_params(false),
            "requestBody": write_body,
            "responses": response("201", &kind_ref),
        }))),
    );
    collection.insert(
        "delete".into(),
        op("deletecollection", "deleteCollection", &kind_ref).build(obj(json!({
            "requestBody": delete_body,
            "responses": response("200", &schema_ref(STATUS_SCHEMA)),
        }))),
    );
    collection.insert("parameters".into(), json!(common));
    paths.insert(base.clone(), Value::Object(collection));

    // One object: get, replace, patch, delete.
    let mut item_params = common.clone();
    item_params.push(path_param("name", &format!("name of the {}", r.kind)));
    let mut item = Map::new();
    item.insert("get".into(), op("get", "read", &kind_ref).build(Map::new()));
    item.insert(
        "put".into(),
        op("put", "replace", &kind_ref).build(obj(json!({
            "parameters": write_params(false),
            "requestBody": write_body,
        }))),
    );
    item.insert(
        "patch".into(),
        op("patch", "patch", &kind_ref).build(obj(json!({
            "parameters": write_params(true),
            "requestBody": patch_body,
        }))),
    );
    item.insert(
        "delete".into(),
        op("delete", "delete", &kind_ref).build(obj(json!({
            "parameters": [
                query_param("gracePeriodSeconds", "The duration in seconds before the object should be deleted."),
                query_param("propagationPolicy", "Whether and how garbage collection will be performed: Orphan, Background or Foreground."),
            ],
            "requestBody": delete_body,
            "responses": response("200", &schema_ref(STATUS_SCHEMA)),
        }))),
    );
    item.insert("parameters".into(), json!(item_params));
    paths.insert(format!("{base}/{{name}}"), Value::Object(item));

    for sub in r.subresources {
        let mut m = Map::new();
        match *sub {
            "status" => {
                let id = |verb: &str| format!("{verb}{}Status", camel_kind(r, r.namespaced));
                let mk = |action: &'static str, verb: &str| Op {
                    r,
                    action,
                    operation_id: id(verb),
                    kind_ref: kind_ref.clone(),
                };
                m.insert("get".into(), mk("get", "read").build(Map::new()));
                m.insert(
                    "put".into(),
                    mk("put", "replace").build(obj(json!({
                        "parameters": write_params(false),
                        "requestBody": write_body,
                    }))),
                );
                m.insert(
                    "patch".into(),
                    mk("patch", "patch").build(obj(json!({
                        "parameters": write_params(true),
                        "requestBody": patch_body,
                    }))),
                );
            }
            "log" => {
                m.insert(
                    "get".into(),
                    json!({
                        "operationId": format!("read{}Log", camel_kind(r, r.namespaced)),
                        "x-kubernetes-action": "get",
                        "x-kubernetes-group-version-kind": op_gvk(r.group, r.version, r.kind),
                        "parameters": [
                            query_param("container", "The container for which to stream logs."),
                            query_param("follow", "Follow the log stream of the pod."),
                            query_param("tailLines", "The number of lines from the end of the logs to show."),
                        ],
                        "responses": {"200": {"description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}}},
                    }),
                );
            }
            "eviction" => {
                m.insert(
                    "post".into(),
                    json!({
                        "operationId": format!("create{}Eviction", camel_kind(r, r.namespaced)),
                        "x-kubernetes-action": "post",
                        "x-kubernetes-group-version-kind": op_gvk("policy", "v1", "Eviction"),
                        "parameters": write_params(false),
                        "responses": {"201": {"description": "Created"}},
                    }),
                );
            }
            _ => continue,
        }
        m.insert("parameters".into(), json!(item_params));
        paths.insert(format!("{base}/{{name}}/{sub}"), Value::Object(m));
    }

    if r.namespaced {
        let all = format!("{prefix}/{}", r.plural);
        paths.insert(
            all,
            json!({
                "get": Op {
                    r,
                    action: "list",
                    operation_id: format!("list{}ForAllNamespaces", camel_kind(r, false)),
                    kind_ref: list_ref,
                }.build(Map::new()),
                "parameters": [query_param("pretty", "If 'true', then the output is pretty printed.")],
            }),
        );
    }
}

fn list_schema_name(kind_name: &str) -> String {
    format!("{kind_name}List")
}

/// Adds the merge keys of [`MERGE_KEYS`] to the generated schemas.
fn add_merge_keys(schemas: &mut Map<String, Value>) {
    for (schema, prop, strategy, key) in MERGE_KEYS {
        let Some(p) = schemas
            .get_mut(*schema)
            .and_then(|s| s.pointer_mut(&format!("/properties/{prop}")))
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        p.insert("x-kubernetes-patch-strategy".into(), json!(strategy));
        if !key.is_empty() {
            p.insert("x-kubernetes-patch-merge-key".into(), json!(key));
        }
    }
}

/// Builds the document of one group-version.
fn group_version_doc(group: &str, version: &str) -> Option<Value> {
    let served: Vec<&ResourceType> = RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    if served.is_empty() {
        return None;
    }
    let mut g = SchemaSettings::openapi3()
        .with(|s| s.meta_schema = None)
        .into_generator();
    let mut paths = Map::new();
    let mut kinds = Vec::new();
    for r in &served {
        let Some(name) = kind_schema(&mut g, r).as_ref().and_then(ref_name) else {
            tracing::warn!(kind = r.kind, "no OpenAPI schema for this kind");
            continue;
        };
        resource_paths(r, &name, &mut paths);
        kinds.push((*r, name));
    }
    // The operations' bodies and answers refer to these.
    g.subschema_for::<meta::Patch>();
    g.subschema_for::<meta::DeleteOptions>();
    g.subschema_for::<meta::Status>();
    g.subschema_for::<meta::ListMeta>();
    let mut schemas = g.take_definitions(true);
    for (r, name) in &kinds {
        if let Some(s) = schemas.get_mut(name).and_then(Value::as_object_mut) {
            s.insert(
                "x-kubernetes-group-version-kind".into(),
                gvk(r.group, r.version, r.kind),
            );
        }
        let list_kind = r.list_kind();
        schemas.insert(
            list_schema_name(name),
            json!({
                "description": format!("{list_kind} is a list of {}.", r.kind),
                "type": "object",
                "required": ["items"],
                "properties": {
                    "apiVersion": {"type": "string"},
                    "kind": {"type": "string"},
                    "items": {"type": "array", "items": schema_ref(name)},
                    "metadata": {"allOf": [schema_ref(LIST_META_SCHEMA)], "default": {}},
                },
                "x-kubernetes-group-version-kind": gvk(r.group, r.version, &list_kind),
            }),
        );
    }
    add_merge_keys(&mut schemas);
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.34.0-toil-emulator"},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}

/// The index and the documents, keyed by `api/v1` or `apis/GROUP/VERSION`.
struct Docs {
    index: Value,
    docs: BTreeMap<String, Value>,
}

fn docs() -> &'static Docs {
    static DOCS: OnceLock<Docs> = OnceLock::new();
    DOCS.get_or_init(|| {
        let mut gvs: Vec<(&str, &str)> = Vec::new();
        for r in RESOURCES {
            if !gvs.contains(&(r.group, r.version)) {
                gvs.push((r.group, r.version));
            }
        }
        let mut docs = BTreeMap::new();
        let mut index = Map::new();
        for (group, version) in gvs {
            let key = if group.is_empty() {
                format!("api/{version}")
            } else {
                format!("apis/{group}/{version}")
            };
            let Some(doc) = group_version_doc(group, version) else {
                continue;
            };
            let hash = hex::encode(Sha256::digest(doc.to_string().as_bytes())).to_uppercase();
            index.insert(
                key.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash={hash}")}),
            );
            docs.insert(key, doc);
        }
        Docs {
            index: json!({"paths": index}),
            docs,
        }
    })
}

/// `GET /openapi/v3` (the index) or `GET /openapi/v3/api/v1`,
/// `/openapi/v3/apis/GROUP/VERSION`; `None` for any other path.
pub fn document(path: &str) -> Option<&'static Value> {
    let rest = path.trim_end_matches('/').strip_prefix("/openapi/v3")?;
    let d = docs();
    if rest.is_empty() {
        return Some(&d.index);
    }
    d.docs.get(rest.trim_start_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_resource_has_a_patch_operation_with_field_validation() {
        for r in RESOURCES {
            let key = if r.group.is_empty() {
                format!("/openapi/v3/api/{}", r.version)
            } else {
                format!("/openapi/v3/apis/{}/{}", r.group, r.version)
            };
            let Some(doc) = document(&key) else {
                panic!("no OpenAPI document for {}", r.kind)
            };
            let found = doc["paths"]
                .as_object()
                .into_iter()
                .flatten()
                .filter_map(|(_, item)| item.get("patch"))
                .filter(|op| {
                    op["x-kubernetes-group-version-kind"]["kind"] == r.kind
                        && op["parameters"]
                            .as_array()
                            .is_some_and(|ps| ps.iter().any(|p| p["name"] == "fieldValidation"))
                })
                .count();
            assert!(
                found >= 1,
                "no PATCH operation declares fieldValidation for {}",
                r.kind
            );
            let schemas = &doc["components"]["schemas"];
            let with_gvk = schemas
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(_, s)| s["x-kubernetes-group-version-kind"][0]["kind"] == r.kind)
                .count();
            assert_eq!(with_gvk, 1, "schema of {}", r.kind);
        }
    }

    #[test]
    fn merge_keys_and_refs_resolve() {
        let Some(doc) = document("/openapi/v3/apis/batch/v1") else {
            panic!("no batch/v1 document")
        };
        let schemas = &doc["components"]["schemas"];
        assert_eq!(
            schemas["io.k8s.api.core.v1.Container"]["properties"]["env"]["x-kubernetes-patch-merge-key"],
            "name"
        );
        // Every $ref points at a schema of the same document.
        let text = doc.to_string();
        for piece in text.split("\"$ref\":\"").skip(1) {
            let target = piece.split('"').next().unwrap_or_default();
            let name = target.strip_prefix(REF_PREFIX).unwrap_or(target);
            assert!(schemas.get(name).is_some(), "dangling $ref {target}");
        }
        let index = document("/openapi/v3").cloned().unwrap_or_default();
        assert!(
            index["paths"]["api/v1"]["serverRelativeURL"]
                .as_str()
                .is_some_and(|u| u.starts_with("/openapi/v3/api/v1?hash="))
        );
        assert!(document("/openapi/v3/apis/nope/v1").is_none());
    }
}
