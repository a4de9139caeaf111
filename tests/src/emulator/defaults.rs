//! Defaulting and admission: the fields a real apiserver fills in on create.
//!
//! Clients read back what the server stored (a Job's generated selector, a
//! pod's service-account volume, requests copied from limits), so these
//! defaults are part of the observable contract.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    ConfigMapProjection, Container, DownwardAPIProjection, DownwardAPIVolumeFile, KeyToPath,
    ObjectFieldSelector, Pod, PodSecurityContext, PodSpec, PodStatus, ProjectedVolumeSource,
    ServiceAccountTokenProjection, Toleration, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Where service-account credentials are mounted in every container.
pub const SA_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The labels the Job controller relies on to find its pods.
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
/// Legacy spelling of [`JOB_NAME_LABEL`], still set by the controller.
pub const LEGACY_JOB_NAME_LABEL: &str = "job-name";
/// The label holding the owning Job's uid.
pub const CONTROLLER_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
/// Legacy spelling of [`CONTROLLER_UID_LABEL`].
pub const LEGACY_CONTROLLER_UID_LABEL: &str = "controller-uid";

fn default_container(c: &mut Container) {
    if c.image_pull_policy.is_none() {
        let image = c.image.clone().unwrap_or_default();
        let last = image.rsplit('/').next().unwrap_or_default();
        let tag = last.split_once(':').map(|(_, t)| t);
        let policy = if tag.is_none() || tag == Some("latest") {
            "Always"
        } else {
            "IfNotPresent"
        };
        c.image_pull_policy = Some(policy.into());
    }
    if c.termination_message_path.is_none() {
        c.termination_message_path = Some("/dev/termination-log".into());
    }
    if c.termination_message_policy.is_none() {
        c.termination_message_policy = Some("File".into());
    }
    let res = c.resources.get_or_insert_with(Default::default);
    if let Some(limits) = &res.limits {
        let req = res.requests.get_or_insert_with(BTreeMap::new);
        for (k, v) in limits {
            req.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
}

/// Fills pod-spec defaults (also used for Job templates).
pub fn default_pod_spec(spec: &mut PodSpec) {
    spec.restart_policy.get_or_insert_with(|| "Always".into());
    spec.termination_grace_period_seconds.get_or_insert(30);
    spec.dns_policy.get_or_insert_with(|| "ClusterFirst".into());
    spec.scheduler_name
        .get_or_insert_with(|| "default-scheduler".into());
    let sa = spec
        .service_account_name
        .clone()
        .or_else(|| spec.service_account.clone())
        .unwrap_or_else(|| "default".into());
    spec.service_account_name = Some(sa.clone());
    spec.service_account = Some(sa);
    spec.security_context
        .get_or_insert_with(PodSecurityContext::default);
    spec.enable_service_links.get_or_insert(true);
    spec.priority.get_or_insert(0);
    spec.preemption_policy
        .get_or_insert_with(|| "PreemptLowerPriority".into());
    for c in spec.containers.iter_mut() {
        default_container(c);
    }
    for c in spec.init_containers.iter_mut().flatten() {
        default_container(c);
    }
}

/// The `DefaultTolerationSeconds` admission plugin: 300 s of tolerance for
/// node-not-ready and node-unreachable.
fn add_default_tolerations(spec: &mut PodSpec) {
    let tols = spec.tolerations.get_or_insert_with(Vec::new);
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        if !tols.iter().any(|t| t.key.as_deref() == Some(key)) {
            tols.push(Toleration {
                key: Some(key.into()),
                operator: Some("Exists".into()),
                effect: Some("NoExecute".into()),
                toleration_seconds: Some(300),
                value: None,
            });
        }
    }
}

/// The `ServiceAccount` admission plugin's projected token volume, mounted
/// read-only in every container.
fn add_service_account_volume(spec: &mut PodSpec, suffix: &str) {
    if spec.automount_service_account_token == Some(false) {
        return;
    }
    let already = spec.containers.iter().any(|c| {
        c.volume_mounts
            .iter()
            .flatten()
            .any(|m| m.mount_path == SA_MOUNT_PATH)
    });
    if already {
        return;
    }
    let name = format!("kube-api-access-{suffix}");
    spec.volumes.get_or_insert_with(Vec::new).push(Volume {
        name: name.clone(),
        projected: Some(ProjectedVolumeSource {
            default_mode: Some(0o644),
            sources: Some(vec![
                VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        expiration_seconds: Some(3607),
                        path: "token".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                VolumeProjection {
                    config_map: Some(ConfigMapProjection {
                        name: "kube-root-ca.crt".into(),
                        items: Some(vec![KeyToPath {
                            key: "ca.crt".into(),
                            path: "ca.crt".into(),
                            ..Default::default()
                        }]),
                        optional: None,
                    }),
                    ..Default::default()
                },
                VolumeProjection {
                    downward_api: Some(DownwardAPIProjection {
                        items: Some(vec![DownwardAPIVolumeFile {
                            path: "namespace".into(),
                            field_ref: Some(ObjectFieldSelector {
                                api_version: Some("v1".into()),
                                field_path: "metadata.namespace".into(),
                            }),
                            ..Default::default()
                        }]),
                    }),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        }),
        ..Default::default()
    });
    let mount = VolumeMount {
        name,
        mount_path: SA_MOUNT_PATH.into(),
        read_only: Some(true),
        ..Default::default()
    };
    for c in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        c.volume_mounts
            .get_or_insert_with(Vec::new)
            .push(mount.clone());
    }
}

/// The pod's QoS class from its containers' requests and limits.
pub fn qos_class(spec: &PodSpec) -> &'static str {
    let mut any = false;
    let mut guaranteed = true;
    for c in &spec.containers {
        let res = c.resources.clone().unwrap_or_default();
        let req = res.requests.unwrap_or_default();
        let lim = res.limits.unwrap_or_default();
        if !req.is_empty() || !lim.is_empty() {
            any = true;
        }
        for key in ["cpu", "memory"] {
            match (req.get(key), lim.get(key)) {
                (Some(r), Some(l)) if r == l => {}
                _ => guaranteed = false,
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// Defaults and admits a new pod: spec defaults, tolerations, the
/// service-account volume (unless the service account opts out), and an
/// initial Pending status.
pub fn default_pod(pod: &mut Pod, sa_automount: Option<bool>, suffix: &str) {
    let spec = pod.spec.get_or_insert_with(PodSpec::default);
    default_pod_spec(spec);
    add_default_tolerations(spec);
    if spec.automount_service_account_token.is_none() && sa_automount == Some(false) {
        // The service account opted out; the pod did not override it.
    } else {
        add_service_account_volume(spec, suffix);
    }
    let qos = qos_class(spec);
    pod.status = Some(PodStatus {
        phase: Some("Pending".into()),
        qos_class: Some(qos.into()),
        ..Default::default()
    });
}

/// Defaults a new Job: counts, backoff limit, the generated selector and the
/// controller labels on the template.
pub fn default_job(job: &mut Job, uid: &str) {
    let name = job.metadata.name.clone().unwrap_or_default();
    let spec = job.spec.get_or_insert_with(JobSpec::default);
    if spec.parallelism.is_none() {
        spec.parallelism = Some(1);
        spec.completions.get_or_insert(1);
    }
    spec.backoff_limit.get_or_insert(6);
    spec.completion_mode
        .get_or_insert_with(|| "NonIndexed".into());
    spec.suspend.get_or_insert(false);
    spec.pod_replacement_policy
        .get_or_insert_with(|| "TerminatingOrFailed".into());
    if spec.manual_selector != Some(true) {
        spec.selector = Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                CONTROLLER_UID_LABEL.to_string(),
                uid.to_string(),
            )])),
            match_expressions: None,
        });
        let labels = spec
            .template
            .metadata
            .get_or_insert_with(Default::default)
            .labels
            .get_or_insert_with(BTreeMap::new);
        labels.insert(CONTROLLER_UID_LABEL.into(), uid.into());
        labels.insert(LEGACY_CONTROLLER_UID_LABEL.into(), uid.into());
        labels.insert(JOB_NAME_LABEL.into(), name.clone());
        labels.insert(LEGACY_JOB_NAME_LABEL.into(), name);
    }
    if let Some(ps) = spec.template.spec.as_mut() {
        default_pod_spec(ps);
    }
}
