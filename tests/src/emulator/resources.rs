//! The resource types the emulator serves, and the discovery documents built
//! from them.
//!
//! One static table drives routing, discovery (`/api/v1`, `/apis/batch/v1`),
//! RBAC resource names and body validation, so a resource is either fully
//! served or not at all: kubectl decides what exists from discovery.

use serde_json::{Value, json};

use super::error::QualifiedResource;

/// Converts a body through its k8s-openapi type: refuses JSON of the wrong
/// shape (400) and drops unknown fields, as the apiserver's decoder does.
pub type Normalizer = fn(Value) -> Result<Value, String>;

/// One served resource.
#[derive(Debug)]
pub struct ResourceType {
    /// API group, empty for core.
    pub group: &'static str,
    /// API version within the group.
    pub version: &'static str,
    /// Plural name used in URLs and RBAC rules.
    pub plural: &'static str,
    /// Singular name (discovery).
    pub singular: &'static str,
    /// `kind` of the objects.
    pub kind: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Short names for kubectl (`po`, `ns`).
    pub short_names: &'static [&'static str],
    /// Subresources served (`log`, `status`, `eviction`).
    pub subresources: &'static [&'static str],
    /// Whether kubectl's `all` category includes it.
    pub in_all: bool,
    /// Body normalizer through the typed struct.
    pub normalize: Normalizer,
}

impl ResourceType {
    /// `apiVersion` of the objects (`batch/v1`, `v1`).
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The name used in messages and error details.
    pub fn qualified(&self) -> QualifiedResource {
        QualifiedResource::new(self.group, self.plural)
    }

    /// The `kind` of a list of these objects.
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }
}

fn normalize<T>(v: Value) -> Result<Value, String>
where
    T: serde::de::DeserializeOwned + serde::Serialize,
{
    let typed: T = serde_json::from_value(v).map_err(|e| e.to_string())?;
    serde_json::to_value(typed).map_err(|e| e.to_string())
}

use k8s_openapi::api::{batch::v1 as batch, core::v1 as core, rbac::v1 as rbac};

/// Every served resource.
pub static RESOURCES: &[ResourceType] = &[
    ResourceType {
        group: "",
        version: "v1",
        plural: "namespaces",
        singular: "namespace",
        kind: "Namespace",
        namespaced: false,
        short_names: &["ns"],
        subresources: &["status"],
        in_all: false,
        normalize: normalize::<core::Namespace>,
    },
    ResourceType {
        group: "",
        version: "v1",
        plural: "pods",
        singular: "pod",
        kind: "Pod",
        namespaced: true,
        short_names: &["po"],
        subresources: &["log", "status", "eviction", "exec", "portforward"],
        in_all: true,
        normalize: normalize::<core::Pod>,
    },
    ResourceType {
        group: "",
        version: "v1",
        plural: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        short_names: &["ev"],
        subresources: &[],
        in_all: false,
        normalize: normalize::<core::Event>,
    },
    ResourceType {
        group: "",
        version: "v1",
        plural: "nodes",
        singular: "node",
        kind: "Node",
        namespaced: false,
        short_names: &["no"],
        subresources: &["status"],
        in_all: false,
        normalize: normalize::<core::Node>,
    },
    ResourceType {
        group: "",
        version: "v1",
        plural: "secrets",
        singular: "secret",
        kind: "Secret",
        namespaced: true,
        short_names: &[],
        subresources: &[],
        in_all: false,
        normalize: normalize::<core::Secret>,
    },
    ResourceType {
        group: "",
        version: "v1",
        plural: "configmaps",
        singular: "configmap",
        kind: "ConfigMap",
        namespaced: true,
        short_names: &["cm"],
        subresources: &[],
        in_all: false,
        normalize: normalize::<core::ConfigMap>,
    },
    ResourceType {
        group: "",
        version: "v1",
        plural: "serviceaccounts",
        singular: "serviceaccount",
        kind: "ServiceAccount",
        namespaced: true,
        short_names: &["sa"],
        subresources: &[],
        in_all: false,
        normalize: normalize::<core::ServiceAccount>,
    },
    ResourceType {
        group: "",
        version: "v1",
        plural: "services",
        singular: "service",
        kind: "Service",
        namespaced: true,
        short_names: &["svc"],
        subresources: &["status"],
        in_all: true,
        normalize: normalize::<core::Service>,
    },
    ResourceType {
        group: "",
        version: "v1",
        plural: "persistentvolumeclaims",
        singular: "persistentvolumeclaim",
        kind: "PersistentVolumeClaim",
        namespaced: true,
        short_names: &["pvc"],
        subresources: &["status"],
        in_all: false,
        normalize: normalize::<core::PersistentVolumeClaim>,
    },
    ResourceType {
        group: "",
        version: "v1",
        plural: "persistentvolumes",
        singular: "persistentvolume",
        kind: "PersistentVolume",
        namespaced: false,
        short_names: &["pv"],
        subresources: &["status"],
        in_all: false,
        normalize: normalize::<core::PersistentVolume>,
    },
    ResourceType {
        group: "batch",
        version: "v1",
        plural: "jobs",
        singular: "job",
        kind: "Job",
        namespaced: true,
        short_names: &[],
        subresources: &["status"],
        in_all: true,
        normalize: normalize::<batch::Job>,
    },
    ResourceType {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "roles",
        singular: "role",
        kind: "Role",
        namespaced: true,
        short_names: &[],
        subresources: &[],
        in_all: false,
        normalize: normalize::<rbac::Role>,
    },
    ResourceType {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "rolebindings",
        singular: "rolebinding",
        kind: "RoleBinding",
        namespaced: true,
        short_names: &[],
        subresources: &[],
        in_all: false,
        normalize: normalize::<rbac::RoleBinding>,
    },
    ResourceType {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "clusterroles",
        singular: "clusterrole",
        kind: "ClusterRole",
        namespaced: false,
        short_names: &[],
        subresources: &[],
        in_all: false,
        normalize: normalize::<rbac::ClusterRole>,
    },
    ResourceType {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "clusterrolebindings",
        singular: "clusterrolebinding",
        kind: "ClusterRoleBinding",
        namespaced: false,
        short_names: &[],
        subresources: &[],
        in_all: false,
        normalize: normalize::<rbac::ClusterRoleBinding>,
    },
];

/// Looks a resource up by group, version and plural name.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceType> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Looks a resource up by its kind and apiVersion (for manifests).
pub fn find_kind(api_version: &str, kind: &str) -> Option<&'static ResourceType> {
    RESOURCES
        .iter()
        .find(|r| r.kind == kind && r.api_version() == api_version)
}

/// The resource handle for a well-known plural in the core or batch group.
pub fn core(plural: &str) -> &'static ResourceType {
    RESOURCES
        .iter()
        .find(|r| r.plural == plural)
        .unwrap_or(&RESOURCES[0])
}

fn verbs_for(_r: &ResourceType) -> Vec<&'static str> {
    vec![
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch",
    ]
}

/// `GET /api`.
pub fn api_versions() -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}],
    })
}

fn groups() -> Vec<&'static str> {
    let mut gs: Vec<&'static str> = Vec::new();
    for r in RESOURCES {
        if !r.group.is_empty() && !gs.contains(&r.group) {
            gs.push(r.group);
        }
    }
    gs
}

fn group_doc(group: &str) -> Value {
    let gv = format!("{group}/v1");
    json!({
        "name": group,
        "versions": [{"groupVersion": gv, "version": "v1"}],
        "preferredVersion": {"groupVersion": gv, "version": "v1"},
    })
}

/// `GET /apis`.
pub fn api_group_list() -> Value {
    json!({
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": groups().into_iter().map(group_doc).collect::<Vec<_>>(),
    })
}

/// `GET /apis/GROUP`, if the group is served.
pub fn api_group(group: &str) -> Option<Value> {
    if !groups().contains(&group) {
        return None;
    }
    let mut doc = group_doc(group);
    doc["kind"] = json!("APIGroup");
    doc["apiVersion"] = json!("v1");
    Some(doc)
}

/// `GET /api/v1` or `GET /apis/GROUP/VERSION`, if served.
pub fn api_resource_list(group: &str, version: &str) -> Option<Value> {
    let mut entries = Vec::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        let mut e = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": verbs_for(r),
        });
        if !r.short_names.is_empty() {
            e["shortNames"] = json!(r.short_names);
        }
        if r.in_all {
            e["categories"] = json!(["all"]);
        }
        entries.push(e);
        for sub in r.subresources {
            let (kind, verbs): (&str, Vec<&str>) = match *sub {
                "log" => ("Pod", vec!["get"]),
                "eviction" => ("Eviction", vec!["create"]),
                "exec" => ("PodExecOptions", vec!["create", "get"]),
                "portforward" => ("PodPortForwardOptions", vec!["create", "get"]),
                _ => (r.kind, vec!["get", "patch", "update"]),
            };
            let mut e = json!({
                "name": format!("{}/{}", r.plural, sub),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": kind,
                "verbs": verbs,
            });
            if *sub == "eviction" {
                e["group"] = json!("policy");
                e["version"] = json!("v1");
            }
            entries.push(e);
        }
    }
    if entries.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": gv,
        "resources": entries,
    }))
}

/// `GET /version`.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "34",
        "gitVersion": "v1.34.0-toil-emulator",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-08-27T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_lists_jobs_and_pod_log() {
        let batch = api_resource_list("batch", "v1").unwrap_or_default();
        assert_eq!(batch["groupVersion"], "batch/v1");
        assert_eq!(batch["resources"][0]["name"], "jobs");
        let core = api_resource_list("", "v1").unwrap_or_default();
        let names: Vec<&str> = core["resources"]
            .as_array()
            .map(|a| a.iter().filter_map(|r| r["name"].as_str()).collect())
            .unwrap_or_default();
        assert!(names.contains(&"pods/log"));
        assert!(api_group("nope").is_none());
        assert!(find("batch", "v1", "jobs").is_some_and(|r| r.namespaced));
    }

    #[test]
    fn normalizer_rejects_wrong_shapes() {
        let jobs = find("batch", "v1", "jobs").map(|r| r.normalize);
        let Some(norm) = jobs else {
            panic!("jobs missing")
        };
        assert!(norm(json!({"spec": {"backoffLimit": "x"}})).is_err());
        let ok = norm(json!({"metadata": {"name": "a"}, "bogus": 1})).unwrap_or_default();
        assert!(ok.get("bogus").is_none());
    }
}
