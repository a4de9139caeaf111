//! Pod Security admission: the `pod-security.kubernetes.io/enforce` label
//! of a namespace (`privileged`, `baseline`, `restricted`) checked on every
//! pod creation, as the API server's built-in PodSecurity plugin does.
//!
//! Only pods are refused (a Job is admitted, and its controller's pod
//! creations fail with a `FailedCreate` event carrying this message, as on a
//! real cluster). The checks and their words follow the upstream
//! `k8s.io/pod-security-admission/policy` package: each violation is a
//! reason and a detail, baseline checks first, then restricted ones, each
//! group in the order of the upstream check ids; a restricted check
//! replaces the baseline check it overrides (volume types replace hostPath
//! volumes, the restricted seccomp check the baseline one).
//!
//! Implemented: host namespaces, privileged, capabilities (baseline and
//! restricted), hostPath volumes, host ports, AppArmor, seccomp,
//! allowPrivilegeEscalation, volume types, runAsNonRoot, runAsUser=0.
//! Not implemented (never refused here): SELinux options, `/proc` mount
//! type, sysctls, Windows host processes, probes with a host, and the
//! `enforce-version` label (every level is `latest`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, PodSpec, SecurityContext};

/// The namespace label that enforces a level.
pub const ENFORCE_LABEL: &str = "pod-security.kubernetes.io/enforce";
/// The namespace label that pins the level's version.
pub const ENFORCE_VERSION_LABEL: &str = "pod-security.kubernetes.io/enforce-version";

/// A Pod Security Standard level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Anything goes.
    Privileged,
    /// Known privilege escalations are refused.
    Baseline,
    /// Current pod hardening practice.
    Restricted,
}

impl Level {
    /// The level a namespace enforces, from its labels. A value the API
    /// server does not know is evaluated as `restricted`, as upstream does.
    pub fn of_namespace(labels: &BTreeMap<String, String>) -> Level {
        match labels.get(ENFORCE_LABEL).map(String::as_str) {
            None | Some("privileged") => Level::Privileged,
            Some("baseline") => Level::Baseline,
            Some(_) => Level::Restricted,
        }
    }

    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            Level::Privileged => "privileged",
            Level::Baseline => "baseline",
            Level::Restricted => "restricted",
        }
    }
}

/// Capabilities baseline allows a container to add (the container runtime's
/// defaults).
const BASELINE_CAPS: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

fn containers(spec: &PodSpec) -> impl Iterator<Item = &Container> {
    spec.init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
}

fn sc(c: &Container) -> Option<&SecurityContext> {
    c.security_context.as_ref()
}

fn plural<'a>(one: &'a str, many: &'a str, n: usize) -> &'a str {
    if n == 1 { one } else { many }
}

fn join_quote(items: &[String]) -> String {
    items
        .iter()
        .map(|i| format!("{i:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn containers_detail(names: &[String]) -> String {
    format!(
        "{} {}",
        plural("container", "containers", names.len()),
        join_quote(names)
    )
}

/// One violation: the upstream `ForbiddenReason` and `ForbiddenDetail`.
type Violation = (String, String);

fn host_namespaces(spec: &PodSpec) -> Option<Violation> {
    let mut on = Vec::new();
    for (set, name) in [
        (spec.host_ipc, "hostIPC"),
        (spec.host_network, "hostNetwork"),
        (spec.host_pid, "hostPID"),
    ] {
        if set == Some(true) {
            on.push(format!("{name}=true"));
        }
    }
    (!on.is_empty()).then(|| ("host namespaces".into(), on.join(", ")))
}

fn privileged(spec: &PodSpec) -> Option<Violation> {
    let bad: Vec<String> = containers(spec)
        .filter(|c| sc(c).and_then(|s| s.privileged) == Some(true))
        .map(|c| c.name.clone())
        .collect();
    (!bad.is_empty()).then(|| {
        (
            "privileged".into(),
            format!(
                "{} must not set securityContext.privileged=true",
                containers_detail(&bad)
            ),
        )
    })
}

fn capabilities_baseline(spec: &PodSpec) -> Option<Violation> {
    let mut bad = Vec::new();
    let mut caps = Vec::new();
    for c in containers(spec) {
        let added = sc(c)
            .and_then(|s| s.capabilities.as_ref())
            .and_then(|k| k.add.as_ref());
        let extra: Vec<&String> = added
            .into_iter()
            .flatten()
            .filter(|a| !BASELINE_CAPS.contains(&a.as_str()))
            .collect();
        if !extra.is_empty() {
            bad.push(c.name.clone());
            caps.extend(extra.into_iter().cloned());
        }
    }
    caps.sort();
    caps.dedup();
    (!bad.is_empty()).then(|| {
        (
            "non-default capabilities".into(),
            format!(
                "{} must not include {} in securityContext.capabilities.add",
                containers_detail(&bad),
                join_quote(&caps)
            ),
        )
    })
}

fn host_path_volumes(spec: &PodSpec) -> Option<Violation> {
    let bad: Vec<String> = spec
        .volumes
        .iter()
        .flatten()
        .filter(|v| v.host_path.is_some())
        .map(|v| v.name.clone())
        .collect();
    (!bad.is_empty()).then(|| {
        (
            "hostPath volumes".into(),
            format!(
                "{} {}",
                plural("volume", "volumes", bad.len()),
                join_quote(&bad)
            ),
        )
    })
}

fn host_ports(spec: &PodSpec) -> Option<Violation> {
    let mut bad = Vec::new();
    let mut ports = Vec::new();
    for c in containers(spec) {
        let used: Vec<String> = c
            .ports
            .iter()
            .flatten()
            .filter_map(|p| p.host_port.filter(|h| *h != 0))
            .map(|h| h.to_string())
            .collect();
        if !used.is_empty() {
            bad.push(c.name.clone());
            ports.extend(used);
        }
    }
    (!bad.is_empty()).then(|| {
        (
            "hostPort".into(),
            format!(
                "{} {} {}",
                containers_detail(&bad),
                plural("uses hostPort", "use hostPorts", ports.len()),
                ports.join(", ")
            ),
        )
    })
}

fn app_armor(annotations: &BTreeMap<String, String>, spec: &PodSpec) -> Option<Violation> {
    let ok_type = |t: &str| matches!(t, "RuntimeDefault" | "Localhost");
    let mut setters = Vec::new();
    let mut values = Vec::new();
    if let Some(p) = spec
        .security_context
        .as_ref()
        .and_then(|s| s.app_armor_profile.as_ref())
        .filter(|p| !ok_type(&p.type_))
    {
        setters.push("pod".to_string());
        values.push(p.type_.clone());
    }
    let mut bad = Vec::new();
    for c in containers(spec) {
        if let Some(p) = sc(c)
            .and_then(|s| s.app_armor_profile.as_ref())
            .filter(|p| !ok_type(&p.type_))
        {
            bad.push(c.name.clone());
            values.push(p.type_.clone());
        }
    }
    values.sort();
    values.dedup();
    if !bad.is_empty() {
        setters.push(containers_detail(&bad));
    }
    let mut notes: Vec<String> = annotations
        .iter()
        .filter(|(k, v)| {
            k.starts_with("container.apparmor.security.beta.kubernetes.io/")
                && !(v.is_empty() || *v == "runtime/default" || v.starts_with("localhost/"))
        })
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect();
    notes.sort();
    if !notes.is_empty() {
        setters.push(plural("annotation", "annotations", notes.len()).to_string());
        values.extend(notes);
    }
    (!setters.is_empty()).then(|| {
        (
            plural(
                "forbidden AppArmor profile",
                "forbidden AppArmor profiles",
                values.len(),
            )
            .to_string(),
            format!(
                "{} must not set AppArmor profile type to {}",
                setters.join(" and "),
                join_quote(&values)
            ),
        )
    })
}

fn seccomp(spec: &PodSpec, restricted: bool) -> Option<Violation> {
    let valid = |t: &str| {
        if restricted {
            matches!(t, "RuntimeDefault" | "Localhost")
        } else {
            t != "Unconfined"
        }
    };
    let mut setters = Vec::new();
    let mut values = Vec::new();
    let pod = spec
        .security_context
        .as_ref()
        .and_then(|s| s.seccomp_profile.as_ref());
    let mut pod_ok = false;
    if let Some(p) = pod {
        if valid(&p.type_) {
            pod_ok = true;
        } else {
            setters.push("pod".to_string());
            values.push(p.type_.clone());
        }
    }
    let mut explicit = Vec::new();
    let mut implicit = Vec::new();
    for c in containers(spec) {
        match sc(c).and_then(|s| s.seccomp_profile.as_ref()) {
            Some(p) if !valid(&p.type_) => {
                explicit.push(c.name.clone());
                values.push(p.type_.clone());
            }
            Some(_) => {}
            None if !pod_ok => implicit.push(c.name.clone()),
            None => {}
        }
    }
    values.sort();
    values.dedup();
    if !explicit.is_empty() {
        setters.push(containers_detail(&explicit));
    }
    if !setters.is_empty() {
        return Some((
            "seccompProfile".into(),
            format!(
                "{} must not set securityContext.seccompProfile.type to {}",
                setters.join(" and "),
                join_quote(&values)
            ),
        ));
    }
    (restricted && !implicit.is_empty()).then(|| {
        (
            "seccompProfile".into(),
            format!(
                "pod or {} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\"",
                containers_detail(&implicit)
            ),
        )
    })
}

fn allow_privilege_escalation(spec: &PodSpec) -> Option<Violation> {
    let bad: Vec<String> = containers(spec)
        .filter(|c| sc(c).and_then(|s| s.allow_privilege_escalation) != Some(false))
        .map(|c| c.name.clone())
        .collect();
    (!bad.is_empty()).then(|| {
        (
            "allowPrivilegeEscalation != false".into(),
            format!(
                "{} must set securityContext.allowPrivilegeEscalation=false",
                containers_detail(&bad)
            ),
        )
    })
}

fn capabilities_restricted(spec: &PodSpec) -> Option<Violation> {
    let mut missing = Vec::new();
    let mut adding = Vec::new();
    let mut caps = Vec::new();
    for c in containers(spec) {
        let k = sc(c).and_then(|s| s.capabilities.as_ref());
        let dropped_all = k
            .and_then(|k| k.drop.as_ref())
            .is_some_and(|d| d.iter().any(|x| x == "ALL"));
        if !dropped_all {
            missing.push(c.name.clone());
        }
        let extra: Vec<&String> = k
            .and_then(|k| k.add.as_ref())
            .into_iter()
            .flatten()
            .filter(|a| *a != "NET_BIND_SERVICE")
            .collect();
        if !extra.is_empty() {
            adding.push(c.name.clone());
            caps.extend(extra.into_iter().cloned());
        }
    }
    caps.sort();
    caps.dedup();
    let mut details = Vec::new();
    if !missing.is_empty() {
        details.push(format!(
            "{} must set securityContext.capabilities.drop=[\"ALL\"]",
            containers_detail(&missing)
        ));
    }
    if !adding.is_empty() {
        details.push(format!(
            "{} must not include {} in securityContext.capabilities.add",
            containers_detail(&adding),
            join_quote(&caps)
        ));
    }
    (!details.is_empty()).then(|| ("unrestricted capabilities".into(), details.join("; ")))
}

fn restricted_volumes(spec: &PodSpec) -> Option<Violation> {
    let mut bad = Vec::new();
    let mut types = Vec::new();
    for v in spec.volumes.iter().flatten() {
        let allowed = v.config_map.is_some()
            || v.csi.is_some()
            || v.downward_api.is_some()
            || v.empty_dir.is_some()
            || v.ephemeral.is_some()
            || v.persistent_volume_claim.is_some()
            || v.projected.is_some()
            || v.secret.is_some();
        if allowed {
            continue;
        }
        bad.push(v.name.clone());
        let t = if v.host_path.is_some() {
            "hostPath"
        } else if v.nfs.is_some() {
            "nfs"
        } else if v.iscsi.is_some() {
            "iscsi"
        } else {
            "unknown"
        };
        types.push(t.to_string());
    }
    types.sort();
    types.dedup();
    (!bad.is_empty()).then(|| {
        (
            "restricted volume types".into(),
            format!(
                "{} {} {} {} {}",
                plural("volume", "volumes", bad.len()),
                join_quote(&bad),
                plural("uses", "use", bad.len()),
                plural(
                    "restricted volume type",
                    "restricted volume types",
                    types.len()
                ),
                join_quote(&types)
            ),
        )
    })
}

fn run_as_non_root(spec: &PodSpec) -> Option<Violation> {
    let pod = spec
        .security_context
        .as_ref()
        .and_then(|s| s.run_as_non_root);
    let mut setters = Vec::new();
    if pod == Some(false) {
        setters.push("pod".to_string());
    }
    let mut explicit = Vec::new();
    let mut implicit = Vec::new();
    for c in containers(spec) {
        match sc(c).and_then(|s| s.run_as_non_root) {
            Some(false) => explicit.push(c.name.clone()),
            Some(true) => {}
            None if pod != Some(true) => implicit.push(c.name.clone()),
            None => {}
        }
    }
    if !explicit.is_empty() {
        setters.push(containers_detail(&explicit));
    }
    if !setters.is_empty() {
        return Some((
            "runAsNonRoot != true".into(),
            format!(
                "{} must not set securityContext.runAsNonRoot=false",
                setters.join(" and ")
            ),
        ));
    }
    (!implicit.is_empty()).then(|| {
        (
            "runAsNonRoot != true".into(),
            format!(
                "pod or {} must set securityContext.runAsNonRoot=true",
                containers_detail(&implicit)
            ),
        )
    })
}

fn run_as_user(spec: &PodSpec) -> Option<Violation> {
    let mut setters = Vec::new();
    if spec.security_context.as_ref().and_then(|s| s.run_as_user) == Some(0) {
        setters.push("pod".to_string());
    }
    let bad: Vec<String> = containers(spec)
        .filter(|c| sc(c).and_then(|s| s.run_as_user) == Some(0))
        .map(|c| c.name.clone())
        .collect();
    if !bad.is_empty() {
        setters.push(containers_detail(&bad));
    }
    (!setters.is_empty()).then(|| {
        (
            "runAsUser=0".into(),
            format!("{} must not set runAsUser=0", setters.join(" and ")),
        )
    })
}

/// The violations of `level` by a pod, in the order upstream reports them.
pub fn violations(
    level: Level,
    annotations: &BTreeMap<String, String>,
    spec: &PodSpec,
) -> Vec<Violation> {
    if level == Level::Privileged {
        return Vec::new();
    }
    let restricted = level == Level::Restricted;
    // Baseline checks, by upstream check id.
    let mut out: Vec<Option<Violation>> = vec![
        app_armor(annotations, spec),
        capabilities_baseline(spec),
        host_namespaces(spec),
        // Replaced by the volume-type check at restricted.
        (!restricted).then(|| host_path_volumes(spec)).flatten(),
        host_ports(spec),
        privileged(spec),
        // Replaced by the restricted seccomp check.
        (!restricted).then(|| seccomp(spec, false)).flatten(),
    ];
    if restricted {
        out.extend([
            allow_privilege_escalation(spec),
            capabilities_restricted(spec),
            restricted_volumes(spec),
            run_as_non_root(spec),
            run_as_user(spec),
            seccomp(spec, true),
        ]);
    }
    out.into_iter().flatten().collect()
}

/// The admission decision for a pod in a namespace with `ns_labels`: the
/// message after `pods "NAME" is forbidden: ` when it is refused.
pub fn admit(
    ns_labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
    spec: &PodSpec,
) -> Result<(), String> {
    let level = Level::of_namespace(ns_labels);
    let found = violations(level, annotations, spec);
    if found.is_empty() {
        return Ok(());
    }
    let version = ns_labels
        .get(ENFORCE_VERSION_LABEL)
        .map(String::as_str)
        .unwrap_or("latest");
    let detail = found
        .iter()
        .map(|(reason, detail)| {
            if detail.is_empty() {
                reason.clone()
            } else {
                format!("{reason} ({detail})")
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    Err(format!(
        "violates PodSecurity \"{}:{version}\": {detail}",
        level.name()
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn spec(v: serde_json::Value) -> PodSpec {
        serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}"))
    }

    fn ns(level: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(ENFORCE_LABEL.to_string(), level.to_string())])
    }

    fn hardened() -> serde_json::Value {
        json!({
            "securityContext": {"runAsNonRoot": true, "runAsUser": 1000,
                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "agent", "image": "x",
                "securityContext": {"allowPrivilegeEscalation": false,
                    "capabilities": {"drop": ["ALL"]}}}],
            "volumes": [{"name": "workdir", "emptyDir": {}},
                {"name": "token", "secret": {"secretName": "s"}},
                {"name": "jobstore", "persistentVolumeClaim": {"claimName": "c"}}],
        })
    }

    #[test]
    fn a_bare_pod_fails_restricted_with_the_upstream_words() {
        let bare = spec(json!({"containers": [{"name": "agent", "image": "x"}]}));
        let none = BTreeMap::new();
        assert_eq!(
            admit(&ns("restricted"), &none, &bare),
            Err("violates PodSecurity \"restricted:latest\": allowPrivilegeEscalation != false (container \"agent\" must set securityContext.allowPrivilegeEscalation=false), unrestricted capabilities (container \"agent\" must set securityContext.capabilities.drop=[\"ALL\"]), runAsNonRoot != true (pod or container \"agent\" must set securityContext.runAsNonRoot=true), seccompProfile (pod or container \"agent\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")".into())
        );
        // Baseline and privileged accept it; no label means privileged.
        assert_eq!(admit(&ns("baseline"), &none, &bare), Ok(()));
        assert_eq!(admit(&ns("privileged"), &none, &bare), Ok(()));
        assert_eq!(admit(&BTreeMap::new(), &none, &bare), Ok(()));
    }

    #[test]
    fn a_hardened_pod_passes_restricted() {
        assert_eq!(
            admit(&ns("restricted"), &BTreeMap::new(), &spec(hardened())),
            Ok(())
        );
    }

    #[test]
    fn host_paths_privilege_and_apparmor_are_named() {
        let mut v = hardened();
        v["volumes"][0] = json!({"name": "workdir", "hostPath": {"path": "/data"}});
        let none = BTreeMap::new();
        assert_eq!(
            admit(&ns("restricted"), &none, &spec(v.clone())),
            Err("violates PodSecurity \"restricted:latest\": restricted volume types (volume \"workdir\" uses restricted volume type \"hostPath\")".into())
        );
        assert_eq!(
            admit(&ns("baseline"), &none, &spec(v)),
            Err(
                "violates PodSecurity \"baseline:latest\": hostPath volumes (volume \"workdir\")"
                    .into()
            )
        );

        let mut v = hardened();
        v["containers"][0]["securityContext"] = json!({"privileged": true,
            "appArmorProfile": {"type": "Unconfined"}});
        v["securityContext"]["runAsUser"] = json!(0);
        let notes = BTreeMap::from([(
            "container.apparmor.security.beta.kubernetes.io/agent".to_string(),
            "unconfined".to_string(),
        )]);
        let mut pinned = ns("restricted");
        pinned.insert(ENFORCE_VERSION_LABEL.into(), "v1.32".into());
        assert_eq!(
            admit(&pinned, &notes, &spec(v.clone())),
            Err("violates PodSecurity \"restricted:v1.32\": forbidden AppArmor profiles (container \"agent\" and annotation must not set AppArmor profile type to \"Unconfined\", \"container.apparmor.security.beta.kubernetes.io/agent=\\\"unconfined\\\"\"), privileged (container \"agent\" must not set securityContext.privileged=true), allowPrivilegeEscalation != false (container \"agent\" must set securityContext.allowPrivilegeEscalation=false), unrestricted capabilities (container \"agent\" must set securityContext.capabilities.drop=[\"ALL\"]), runAsUser=0 (pod must not set runAsUser=0)".into())
        );
        // Baseline: the privileged container and AppArmor only.
        let got = admit(&ns("baseline"), &notes, &spec(v))
            .err()
            .unwrap_or_default();
        assert!(
            got.starts_with(
                "violates PodSecurity \"baseline:latest\": forbidden AppArmor profiles"
            ),
            "{got}"
        );
        assert!(
            got.ends_with(
                "privileged (container \"agent\" must not set securityContext.privileged=true)"
            ),
            "{got}"
        );
    }

    #[test]
    fn capabilities_seccomp_and_host_namespaces() {
        let v = spec(json!({
            "hostNetwork": true, "hostPID": true,
            "securityContext": {"seccompProfile": {"type": "Unconfined"}},
            "containers": [{"name": "a", "image": "x",
                "ports": [{"containerPort": 80, "hostPort": 8080}],
                "securityContext": {"capabilities": {"add": ["SYS_ADMIN", "CHOWN"]}}}],
        }));
        assert_eq!(
            admit(&ns("baseline"), &BTreeMap::new(), &v),
            Err("violates PodSecurity \"baseline:latest\": non-default capabilities (container \"a\" must not include \"SYS_ADMIN\" in securityContext.capabilities.add), host namespaces (hostNetwork=true, hostPID=true), hostPort (container \"a\" uses hostPort 8080), seccompProfile (pod must not set securityContext.seccompProfile.type to \"Unconfined\")".into())
        );
        // An unknown level is evaluated as restricted.
        assert!(admit(&ns("strict"), &BTreeMap::new(), &spec(hardened())).is_ok());
        assert_eq!(Level::of_namespace(&ns("strict")), Level::Restricted);
    }
}
