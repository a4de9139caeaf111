//! RBAC authorization over the Role, ClusterRole, RoleBinding and
//! ClusterRoleBinding objects in the store.
//!
//! The rules come from the same YAML the project ships in `deploy/`, loaded
//! as ordinary objects, so a leader that passes here is known to work under
//! that Role on a real cluster, and one that oversteps it gets the 403 a real
//! cluster would give.

use serde_json::Value;

use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, Subject,
};

use super::config::Identity;
use super::resources;
use super::store::Store;

/// What a request wants to do.
#[derive(Clone, Debug)]
pub struct Attributes<'a> {
    /// Who asks.
    pub user: &'a Identity,
    /// RBAC verb (`get`, `list`, `watch`, `create`...).
    pub verb: &'a str,
    /// API group.
    pub group: &'a str,
    /// Plural resource.
    pub resource: &'a str,
    /// Subresource (`log`), empty if none.
    pub subresource: &'a str,
    /// Namespace, empty for cluster scope.
    pub namespace: &'a str,
    /// Object name, empty for collections.
    pub name: &'a str,
}

fn subject_matches(s: &Subject, user: &Identity, binding_ns: &str) -> bool {
    match s.kind.as_str() {
        "User" => s.name == user.user_name(),
        "Group" => user.groups().contains(&s.name),
        "ServiceAccount" => {
            let ns = s
                .namespace
                .as_deref()
                .filter(|n| !n.is_empty())
                .unwrap_or(binding_ns);
            *user == Identity::service_account(ns, &s.name)
        }
        _ => false,
    }
}

fn contains(list: &[String], want: &str) -> bool {
    list.iter().any(|x| x == "*" || x == want)
}

fn resource_matches(rule_resources: &[String], resource: &str, sub: &str) -> bool {
    let combined = if sub.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}/{sub}")
    };
    rule_resources.iter().any(|r| {
        r == "*"
            || *r == combined
            || (!sub.is_empty() && (*r == format!("*/{sub}") || *r == format!("{resource}/*")))
    })
}

/// Whether one rule allows the request.
pub fn rule_allows(rule: &PolicyRule, a: &Attributes<'_>) -> bool {
    if !contains(&rule.verbs, a.verb) {
        return false;
    }
    let groups = rule.api_groups.clone().unwrap_or_default();
    if !contains(&groups, a.group) {
        return false;
    }
    if !resource_matches(
        &rule.resources.clone().unwrap_or_default(),
        a.resource,
        a.subresource,
    ) {
        return false;
    }
    match &rule.resource_names {
        Some(names) if !names.is_empty() => !a.name.is_empty() && names.iter().any(|n| n == a.name),
        _ => true,
    }
}

fn non_resource_allows(rule: &PolicyRule, user: &Identity, verb: &str, path: &str) -> bool {
    let _ = user;
    let Some(urls) = &rule.non_resource_urls else {
        return false;
    };
    contains(&rule.verbs, verb)
        && urls.iter().any(|u| {
            u == "*"
                || u == path
                || u.strip_suffix('*')
                    .is_some_and(|prefix| path.starts_with(prefix))
        })
}

fn typed<T: serde::de::DeserializeOwned>(v: &Value) -> Option<T> {
    serde_json::from_value(v.clone()).ok()
}

fn cluster_role_rules(store: &Store, name: &str) -> Vec<PolicyRule> {
    store
        .get(resources::core("clusterroles"), "", name)
        .and_then(|v| typed::<ClusterRole>(&v))
        .and_then(|r| r.rules)
        .unwrap_or_default()
}

/// All rules that apply to a user in a namespace (cluster-wide bindings
/// plus, when `namespace` is set, that namespace's RoleBindings).
fn applicable_rules(store: &Store, user: &Identity, namespace: &str) -> Vec<PolicyRule> {
    let mut rules = Vec::new();
    for crb in store.list(resources::core("clusterrolebindings"), None) {
        let Some(b) = typed::<ClusterRoleBinding>(&crb) else {
            continue;
        };
        if b.subjects
            .iter()
            .flatten()
            .any(|s| subject_matches(s, user, ""))
        {
            rules.extend(cluster_role_rules(store, &b.role_ref.name));
        }
    }
    if namespace.is_empty() {
        return rules;
    }
    for rb in store.list(resources::core("rolebindings"), Some(namespace)) {
        let Some(b) = typed::<RoleBinding>(&rb) else {
            continue;
        };
        if !b
            .subjects
            .iter()
            .flatten()
            .any(|s| subject_matches(s, user, namespace))
        {
            continue;
        }
        match b.role_ref.kind.as_str() {
            "ClusterRole" => rules.extend(cluster_role_rules(store, &b.role_ref.name)),
            _ => {
                let role = store
                    .get(resources::core("roles"), namespace, &b.role_ref.name)
                    .and_then(|v| typed::<Role>(&v));
                rules.extend(role.and_then(|r| r.rules).unwrap_or_default());
            }
        }
    }
    rules
}

/// Decides a resource request.
pub fn authorize(store: &Store, a: &Attributes<'_>) -> bool {
    if *a.user == Identity::Admin {
        return true;
    }
    applicable_rules(store, a.user, a.namespace)
        .iter()
        .any(|r| rule_allows(r, a))
}

/// Paths every authenticated identity may read (the `system:discovery` and
/// `system:public-info-viewer` roles of a real cluster).
const PUBLIC_PATHS: &[&str] = &["/version", "/healthz", "/livez", "/readyz"];

/// Decides a non-resource request such as discovery.
pub fn authorize_path(store: &Store, user: &Identity, verb: &str, path: &str) -> bool {
    if *user == Identity::Admin || PUBLIC_PATHS.contains(&path) {
        return true;
    }
    // Discovery and OpenAPI, as the built-in system:discovery role grants.
    if path == "/api"
        || path == "/apis"
        || path.starts_with("/api/")
        || path.starts_with("/apis/")
        || path == "/openapi/v3"
        || path.starts_with("/openapi/")
    {
        return true;
    }
    applicable_rules(store, user, "")
        .iter()
        .any(|r| non_resource_allows(r, user, verb, path))
}

/// Built-in ClusterRoles present on every real cluster, so manifests that
/// bind to `view` or `edit` behave as expected.
pub fn builtin_cluster_roles() -> Vec<Value> {
    let role = |name: &str, rules: Value| {
        serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
            "rules": rules,
        })
    };
    let read = ["get", "list", "watch"];
    let write = [
        "get",
        "list",
        "watch",
        "create",
        "update",
        "patch",
        "delete",
        "deletecollection",
    ];
    let ns_resources = [
        "pods",
        "pods/log",
        "pods/status",
        "events",
        "configmaps",
        "services",
        "persistentvolumeclaims",
        "serviceaccounts",
    ];
    vec![
        role(
            "cluster-admin",
            serde_json::json!([
                {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                {"nonResourceURLs": ["*"], "verbs": ["*"]},
            ]),
        ),
        role(
            "view",
            serde_json::json!([
                {"apiGroups": [""], "resources": ns_resources, "verbs": read},
                {"apiGroups": ["batch"], "resources": ["jobs", "jobs/status"], "verbs": read},
            ]),
        ),
        role(
            "edit",
            serde_json::json!([
                {"apiGroups": [""], "resources": ns_resources, "verbs": write},
                {"apiGroups": [""], "resources": ["secrets"], "verbs": write},
                {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": write},
            ]),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn store_with_role() -> Store {
        let mut s = Store::new(100);
        let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "r", "namespace": "toil"},
            "rules": [{"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "create"]},
                      {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
                      {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": ["aws"]}]});
        let rb = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "rb", "namespace": "toil"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
            "subjects": [{"kind": "ServiceAccount", "name": "leader"}]});
        assert!(s.insert(resources::core("roles"), role).is_ok());
        assert!(s.insert(resources::core("rolebindings"), rb).is_ok());
        s
    }

    #[test]
    fn role_binding_grants_only_its_rules() {
        let s = store_with_role();
        let sa = Identity::service_account("toil", "leader");
        let other = Identity::service_account("toil", "other");
        let a = |user: &'static Identity,
                 verb: &'static str,
                 group: &'static str,
                 res: &'static str,
                 sub: &'static str,
                 ns: &'static str,
                 name: &'static str| Attributes {
            user,
            verb,
            group,
            resource: res,
            subresource: sub,
            namespace: ns,
            name,
        };
        let sa: &'static Identity = Box::leak(Box::new(sa));
        let other: &'static Identity = Box::leak(Box::new(other));
        assert!(authorize(
            &s,
            &a(sa, "create", "batch", "jobs", "", "toil", "")
        ));
        assert!(!authorize(
            &s,
            &a(sa, "delete", "batch", "jobs", "", "toil", "x")
        ));
        assert!(!authorize(
            &s,
            &a(sa, "create", "batch", "jobs", "", "default", "")
        ));
        assert!(!authorize(
            &s,
            &a(other, "create", "batch", "jobs", "", "toil", "")
        ));
        assert!(authorize(&s, &a(sa, "get", "", "pods", "log", "toil", "p")));
        assert!(!authorize(&s, &a(sa, "get", "", "pods", "", "toil", "p")));
        assert!(authorize(
            &s,
            &a(sa, "get", "", "secrets", "", "toil", "aws")
        ));
        assert!(!authorize(
            &s,
            &a(sa, "get", "", "secrets", "", "toil", "other")
        ));
        assert!(authorize(
            &s,
            &a(&Identity::Admin, "delete", "", "nodes", "", "", "n")
        ));
    }
}
