//! The batch/v1 Job that runs one agent.
//!
//! One container, `toil-agent run`, in the appliance image, configured
//! through its environment (the same variables the local batch system
//! sets). Requests equal limits for CPU, memory and ephemeral storage, so
//! the pod is Guaranteed and the scheduler's view matches what the job
//! asked for, plus the agent's own memory (`AGENT_MEMORY`), which shares
//! the container's limit with the job. The leader retries, so the Job never does (`backoffLimit: 0`,
//! `restartPolicy: Never`), and `ttlSecondsAfterFinished` removes it even if
//! the leader is gone.
//!
//! The agent's token is not in the Job: it is in a Secret of the same name
//! ([`token_secret`], created right after the Job and owned by it, so the
//! garbage collector removes it with the Job), read into the agent's
//! environment with `secretKeyRef`. Whoever may `get jobs` sees only the
//! reference.
//!
//! Pods pass the Pod Security Standard "restricted" unless an option needs
//! more ([`security_level`]): no privilege escalation, no capabilities,
//! seccomp `RuntimeDefault`, and a non-root user ([`AGENT_UID`]) when no host
//! path is mounted (the kubelet creates host directories owned by root).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Affinity, AppArmorProfile, Capabilities, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    HostPathVolumeSource, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
    ObjectFieldSelector, PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec,
    PodTemplateSpec, PreferredSchedulingTerm, ResourceRequirements, SeccompProfile, Secret,
    SecretKeySelector, SecretVolumeSource, SecurityContext, Toleration as KubeToleration, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::names::{self, JOB_ID_ANNOTATION, Naming};
use super::settings::KubernetesConfig;
use crate::batch::AgentLaunch;

/// Memory added to every pod's request and limit for the agent itself, so
/// that the job gets all the memory it asked for. `bench-agent-footprint`
/// measured the agent's peak RSS at 10 MB beside a quiet job and 13-14 MB
/// beside one that floods its log (its buffers are bounded, so that holds
/// whatever the job prints); this rounds it up.
pub const AGENT_MEMORY: u64 = 16 << 20;

/// The agent container's name.
pub const CONTAINER: &str = "agent";
/// Where the AWS credentials secret is mounted (not under `/root`, which a
/// non-root agent cannot enter).
pub const AWS_MOUNT: &str = "/var/run/secrets/toil/aws";
/// The key of the agent's token in its Secret.
pub const TOKEN_KEY: &str = "token";
/// The user and group agents run as when no host path is mounted: the
/// appliance image's `toil` user (`deploy/Dockerfile`), numeric so the
/// kubelet can verify `runAsNonRoot`.
pub const AGENT_UID: i64 = 1000;
/// Seconds between SIGTERM and SIGKILL when a pod is deleted: the agent
/// kills its job and reports within this.
pub(crate) const GRACE_SECONDS: i64 = 30;

/// A byte count as a Kubernetes quantity, in the largest binary unit that
/// divides it (`64Mi`, `2Gi`, `1500`).
pub fn bytes_quantity(bytes: u64) -> Quantity {
    for (unit, shift) in [("Ti", 40), ("Gi", 30), ("Mi", 20), ("Ki", 10)] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return Quantity(format!("{}{unit}", bytes >> shift));
        }
    }
    Quantity(bytes.to_string())
}

/// Millicores as a CPU quantity (`2`, `500m`).
pub fn cpu_quantity(millicores: u32) -> Quantity {
    if millicores.is_multiple_of(1000) {
        Quantity((millicores / 1000).to_string())
    } else {
        Quantity(format!("{millicores}m"))
    }
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: None,
                field_path: path.into(),
            }),
            ..Default::default()
        }),
    }
}

fn secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
    }
}

/// The Pod Security Standard level agent pods need with these settings:
/// `restricted` unless an option needs more, and why.
pub fn security_level(cfg: &KubernetesConfig) -> (&'static str, Vec<&'static str>) {
    let mut why = Vec::new();
    if cfg.privileged {
        why.push("--kubernetesPrivileged (a privileged container)");
    }
    if cfg.host_path.is_some() {
        why.push("--kubernetesHostPath (a hostPath volume)");
    }
    if cfg.apparmor_unconfined {
        why.push("--kubernetesAppArmorUnconfined (AppArmor unconfined)");
    }
    let level = if why.is_empty() {
        "restricted"
    } else {
        "privileged"
    };
    (level, why)
}

/// The subPath of the host path a workflow of `owner` mounts: owners share
/// no files (cache, job directories, images) on a node.
pub fn owner_sub_path(owner: &str) -> String {
    format!("owner-{}", names::label_value(owner))
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..Default::default()
    }
}

/// The Job for an agent. `leader_address` is what the agent dials.
pub fn build_job(
    cfg: &KubernetesConfig,
    naming: &Naming,
    leader_address: &str,
    l: &AgentLaunch,
) -> Job {
    let name = naming.job_name(&l.agent_id, &l.job_id);
    let labels = naming.labels(&l.agent_id, &l.job_id);
    let req = &l.request;

    let mut resources = BTreeMap::from([
        ("cpu".to_string(), cpu_quantity(req.millicores.max(1))),
        (
            "memory".to_string(),
            bytes_quantity(req.memory.saturating_add(AGENT_MEMORY)),
        ),
    ]);
    if req.disk > 0 {
        resources.insert("ephemeral-storage".into(), bytes_quantity(req.disk));
    }
    if req.gpus > 0 {
        resources.insert(cfg.gpu_resource.clone(), Quantity(req.gpus.to_string()));
    }

    let mut vars = vec![
        env("TOIL_LEADER_ADDRESS", leader_address),
        env("TOIL_AGENT_ID", &l.agent_id),
        // From the Job's own Secret: the Job holds only the reference.
        secret_env("TOIL_AGENT_TOKEN", &name, TOKEN_KEY),
        env("TOIL_WORKDIR", &cfg.work_dir),
        env("TOIL_AGENT_MILLICORES", req.millicores.to_string()),
        env("TOIL_AGENT_MEMORY", req.memory.to_string()),
        env("TOIL_AGENT_DISK", req.disk.to_string()),
        env("TOIL_AGENT_GPUS", req.gpus.to_string()),
        env("TOIL_AGENT_PREEMPTIBLE", req.preemptible.to_string()),
        env("TOIL_AGENT_LOG", &cfg.agent_log),
        field_env("TOIL_POD_NAME", "metadata.name"),
        field_env("TOIL_NODE_NAME", "spec.nodeName"),
    ];
    if cfg.aws_secret.is_some() {
        vars.push(env(
            "AWS_SHARED_CREDENTIALS_FILE",
            format!("{AWS_MOUNT}/credentials"),
        ));
        vars.push(env("AWS_CONFIG_FILE", format!("{AWS_MOUNT}/config")));
    }
    vars.extend(cfg.env.iter().map(|(k, v)| env(k, v)));

    let mut volumes = vec![Volume {
        name: "workdir".into(),
        host_path: cfg.host_path.as_ref().map(|p| HostPathVolumeSource {
            path: p.clone(),
            type_: Some("DirectoryOrCreate".into()),
        }),
        empty_dir: cfg.host_path.is_none().then(EmptyDirVolumeSource::default),
        ..Default::default()
    }];
    let mut work_mount = mount("workdir", &cfg.work_dir, false);
    if cfg.host_path.is_some() {
        // Each owner gets a directory of its own on the node.
        work_mount.sub_path = Some(owner_sub_path(&cfg.owner));
    }
    let mut mounts = vec![work_mount];
    if let Some(secret) = &cfg.aws_secret {
        volumes.push(Volume {
            name: "aws-credentials".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.clone()),
                ..Default::default()
            }),
            ..Default::default()
        });
        mounts.push(mount("aws-credentials", AWS_MOUNT, true));
    }
    if let Some(c) = &cfg.job_store_claim {
        volumes.push(Volume {
            name: "jobstore".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: c.claim.clone(),
                read_only: None,
            }),
            ..Default::default()
        });
        mounts.push(mount("jobstore", &c.mount_path, false));
    }

    let apparmor = cfg.apparmor_unconfined.then(|| AppArmorProfile {
        type_: "Unconfined".into(),
        localhost_profile: None,
    });
    // A privileged container has every capability and no seccomp filter
    // anyway, and the API refuses allowPrivilegeEscalation=false with it.
    let security = if cfg.privileged {
        SecurityContext {
            privileged: Some(true),
            app_armor_profile: apparmor,
            ..Default::default()
        }
    } else {
        SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            app_armor_profile: apparmor,
            ..Default::default()
        }
    };
    // Non-root where the options allow: host directories are created by the
    // kubelet owned by root, and a privileged container is root anyway.
    let non_root = !cfg.privileged && cfg.host_path.is_none();
    let pod_security = PodSecurityContext {
        seccomp_profile: (!cfg.privileged).then(|| SeccompProfile {
            type_: "RuntimeDefault".into(),
            localhost_profile: None,
        }),
        run_as_non_root: non_root.then_some(true),
        run_as_user: non_root.then_some(AGENT_UID),
        run_as_group: non_root.then_some(AGENT_UID),
        // Volumes that support ownership (emptyDir, most claims) become
        // writable by the agent's group.
        fs_group: non_root.then_some(AGENT_UID),
        ..Default::default()
    };
    let mut pod_annotations = BTreeMap::from([(JOB_ID_ANNOTATION.to_string(), l.job_id.clone())]);
    if cfg.apparmor_unconfined {
        // Clusters before 1.30 read the annotation, newer ones the field;
        // when both are set they must agree, and they do.
        pod_annotations.insert(
            format!("container.apparmor.security.beta.kubernetes.io/{CONTAINER}"),
            "unconfined".into(),
        );
    }

    let container = Container {
        name: CONTAINER.into(),
        image: Some(cfg.image.clone()),
        command: Some(vec!["toil-agent".into(), "run".into()]),
        env: Some(vars),
        resources: Some(ResourceRequirements {
            limits: Some(resources.clone()),
            requests: Some(resources),
            claims: None,
        }),
        volume_mounts: Some(mounts),
        security_context: Some(security),
        ..Default::default()
    };

    let (tolerations, affinity) = placement(cfg, req.preemptible);
    let pod = PodSpec {
        containers: vec![container],
        restart_policy: Some("Never".into()),
        // Agents talk to the leader, never to the API server.
        automount_service_account_token: Some(false),
        service_account_name: cfg.service_account.clone(),
        enable_service_links: Some(false),
        security_context: Some(pod_security),
        termination_grace_period_seconds: Some(GRACE_SECONDS),
        volumes: Some(volumes),
        tolerations,
        affinity: Some(affinity),
        ..Default::default()
    };
    // With pod reuse one pod runs many jobs, each limited by the agent; a
    // pod deadline would cut the later ones short.
    let deadline = match (cfg.reuse_agents, l.time_limit) {
        (false, Some(t)) => {
            let secs = t.saturating_add(cfg.deadline_slack).as_secs_f64().ceil() as i64;
            Some(secs.max(1))
        }
        _ => None,
    };
    Job {
        metadata: ObjectMeta {
            name: Some(name),
            labels: Some(labels.clone()),
            annotations: Some(BTreeMap::from([(
                JOB_ID_ANNOTATION.to_string(),
                l.job_id.clone(),
            )])),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            ttl_seconds_after_finished: Some(cfg.job_ttl.as_secs().min(i32::MAX as u64) as i32),
            active_deadline_seconds: deadline,
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: Some(pod_annotations),
                    ..Default::default()
                }),
                spec: Some(pod),
            },
            ..Default::default()
        }),
        status: None,
    }
}

/// The Secret holding an agent's token, named like its Job and owned by it
/// (`job_uid`), so the garbage collector deletes it with the Job (the TTL,
/// the leader's deletion, `cleanup-jobs`). Immutable: nothing changes it,
/// and kubelets need not watch it.
pub fn token_secret(naming: &Naming, l: &AgentLaunch, job_uid: &str) -> Secret {
    let name = naming.job_name(&l.agent_id, &l.job_id);
    Secret {
        metadata: ObjectMeta {
            labels: Some(naming.labels(&l.agent_id, &l.job_id)),
            owner_references: Some(vec![OwnerReference {
                api_version: "batch/v1".into(),
                kind: "Job".into(),
                name: name.clone(),
                uid: job_uid.into(),
                controller: None,
                block_owner_deletion: None,
            }]),
            name: Some(name),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            TOKEN_KEY.to_string(),
            ByteString(l.agent_token.clone().into_bytes()),
        )])),
        immutable: Some(true),
        type_: Some("Opaque".into()),
        ..Default::default()
    }
}

/// Where a job may run: preemptible jobs tolerate the spot taint and
/// prefer spot nodes; the others are kept off spot nodes.
fn placement(cfg: &KubernetesConfig, preemptible: bool) -> (Option<Vec<KubeToleration>>, Affinity) {
    let (key, value) = &cfg.spot_label;
    let term = |op: &str| NodeSelectorTerm {
        match_expressions: Some(vec![NodeSelectorRequirement {
            key: key.clone(),
            operator: op.into(),
            values: Some(vec![value.clone()]),
        }]),
        match_fields: None,
    };
    if preemptible {
        let t = &cfg.spot_toleration;
        let toleration = KubeToleration {
            key: Some(t.key.clone()),
            operator: Some(
                if t.value.is_empty() {
                    "Exists"
                } else {
                    "Equal"
                }
                .into(),
            ),
            value: (!t.value.is_empty()).then(|| t.value.clone()),
            effect: Some(t.effect.clone()),
            toleration_seconds: None,
        };
        (
            Some(vec![toleration]),
            Affinity {
                node_affinity: Some(NodeAffinity {
                    preferred_during_scheduling_ignored_during_execution: Some(vec![
                        PreferredSchedulingTerm {
                            weight: 100,
                            preference: term("In"),
                        },
                    ]),
                    required_during_scheduling_ignored_during_execution: None,
                }),
                ..Default::default()
            },
        )
    } else {
        (
            None,
            Affinity {
                node_affinity: Some(NodeAffinity {
                    required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                        node_selector_terms: vec![term("NotIn")],
                    }),
                    preferred_during_scheduling_ignored_during_execution: None,
                }),
                ..Default::default()
            },
        )
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use super::*;
    use crate::batch::kubernetes::settings::{ClaimMount, Toleration};
    use crate::core::Request;

    pub(crate) fn config() -> KubernetesConfig {
        KubernetesConfig {
            context: None,
            namespace: None,
            image: "toil-appliance:dev".into(),
            owner: "alice".into(),
            host_path: Some("/data/scratch".into()),
            work_dir: "/var/lib/toil".into(),
            aws_secret: Some("aws-credentials".into()),
            service_account: Some("toil-agent".into()),
            pod_timeout: Duration::from_secs(120),
            pending_timeout: Duration::from_secs(600),
            privileged: false,
            apparmor_unconfined: true,
            gpu_resource: "nvidia.com/gpu".into(),
            spot_label: ("cloud.google.com/gke-spot".into(), "true".into()),
            spot_toleration: Toleration {
                key: "cloud.google.com/gke-spot".into(),
                value: "true".into(),
                effect: "NoSchedule".into(),
            },
            job_store_claim: Some(ClaimMount {
                claim: "toil-jobstore".into(),
                mount_path: "/jobstore".into(),
            }),
            max_creates_per_second: 20.0,
            job_ttl: Duration::from_secs(600),
            deadline_slack: Duration::from_secs(60),
            reuse_agents: false,
            env: vec![("TOIL_AGENT_LEASE".into(), "30s".into())],
            agent_log: "warn".into(),
            leader_pod_ip: None,
            agent_connection: Default::default(),
        }
    }

    pub(crate) fn launch(preemptible: bool) -> AgentLaunch {
        AgentLaunch {
            agent_id: "agent-2-5".into(),
            agent_token: "secret".into(),
            attempt_id: "align[3].1".into(),
            job_id: "align[3]".into(),
            request: Request {
                millicores: 1500,
                memory: 3 << 30,
                disk: 10 << 30,
                gpus: 1,
                preemptible,
            },
            time_limit: Some(Duration::from_secs(90)),
        }
    }

    #[test]
    fn jobs_ask_for_exactly_what_the_job_asked() {
        let naming = Naming::new("alice", "0123abcd-0000", 2);
        let job = build_job(&config(), &naming, "http://10.0.0.5:7070", &launch(false));
        let v = serde_json::to_value(&job).unwrap_or_default();
        assert_eq!(v["metadata"]["name"], "toil-alice-0123abcd-2-5-align-3");
        assert_eq!(v["metadata"]["annotations"]["toil.io/job-id"], "align[3]");
        assert_eq!(v["spec"]["backoffLimit"], 0);
        assert_eq!(v["spec"]["ttlSecondsAfterFinished"], 600);
        assert_eq!(v["spec"]["activeDeadlineSeconds"], 150);
        let pod = &v["spec"]["template"]["spec"];
        assert_eq!(pod["restartPolicy"], "Never");
        assert_eq!(pod["automountServiceAccountToken"], false);
        assert_eq!(pod["serviceAccountName"], "toil-agent");
        let c = &pod["containers"][0];
        assert_eq!(c["image"], "toil-appliance:dev");
        assert_eq!(c["command"], serde_json::json!(["toil-agent", "run"]));
        // The job's 3 GiB plus the agent's 16 MiB.
        let want = serde_json::json!({"cpu": "1500m", "memory": "3088Mi",
            "ephemeral-storage": "10Gi", "nvidia.com/gpu": "1"});
        assert_eq!(c["resources"]["requests"], want);
        assert_eq!(c["resources"]["limits"], want);
        let envs: BTreeMap<String, serde_json::Value> = c["env"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| (e["name"].as_str().unwrap_or("").to_string(), e.clone()))
            .collect();
        assert_eq!(envs["TOIL_LEADER_ADDRESS"]["value"], "http://10.0.0.5:7070");
        assert_eq!(envs["TOIL_AGENT_ID"]["value"], "agent-2-5");
        assert_eq!(envs["TOIL_WORKDIR"]["value"], "/var/lib/toil");
        assert_eq!(envs["TOIL_AGENT_MEMORY"]["value"], (3u64 << 30).to_string());
        assert_eq!(
            envs["TOIL_POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"],
            "metadata.name"
        );
        assert_eq!(
            envs["TOIL_NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"],
            "spec.nodeName"
        );
        assert_eq!(
            envs["AWS_SHARED_CREDENTIALS_FILE"]["value"],
            "/var/run/secrets/toil/aws/credentials"
        );
        assert_eq!(envs["TOIL_AGENT_LEASE"]["value"], "30s");
        let mounts = c["volumeMounts"].to_string();
        assert!(mounts.contains("/var/lib/toil") && mounts.contains(AWS_MOUNT));
        assert!(mounts.contains("/jobstore"));
        let vols = pod["volumes"].to_string();
        assert!(vols.contains("\"path\":\"/data/scratch\""), "{vols}");
        assert!(vols.contains("\"secretName\":\"aws-credentials\""));
        assert!(vols.contains("\"claimName\":\"toil-jobstore\""));
        assert_eq!(
            c["securityContext"]["appArmorProfile"]["type"],
            "Unconfined"
        );
        assert_eq!(
            v["spec"]["template"]["metadata"]["annotations"]["container.apparmor.security.beta.kubernetes.io/agent"],
            "unconfined"
        );
        // Not preemptible: kept off spot nodes.
        let req =
            &pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"];
        assert_eq!(
            req["nodeSelectorTerms"][0]["matchExpressions"][0]["operator"],
            "NotIn"
        );
        assert!(pod["tolerations"].is_null());
    }

    #[test]
    fn preemptible_jobs_tolerate_and_prefer_spot_nodes() {
        let mut cfg = config();
        cfg.host_path = None;
        cfg.reuse_agents = true;
        cfg.apparmor_unconfined = false;
        let naming = Naming::new("alice", "wf", 2);
        let job = build_job(&cfg, &naming, "http://l:1", &launch(true));
        let v = serde_json::to_value(&job).unwrap_or_default();
        let pod = &v["spec"]["template"]["spec"];
        assert_eq!(pod["tolerations"][0]["key"], "cloud.google.com/gke-spot");
        assert_eq!(pod["tolerations"][0]["operator"], "Equal");
        let pref =
            &pod["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"];
        assert_eq!(
            pref[0]["preference"]["matchExpressions"][0]["operator"],
            "In"
        );
        assert!(pod["volumes"][0]["emptyDir"].is_object());
        // Pod reuse: no deadline, the agent enforces each job's limit.
        assert!(v["spec"]["activeDeadlineSeconds"].is_null());
        // No host path, not privileged: the restricted profile, non-root.
        let sc = &pod["containers"][0]["securityContext"];
        assert_eq!(sc["allowPrivilegeEscalation"], false);
        assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
        assert!(sc["privileged"].is_null() && sc["appArmorProfile"].is_null());
        let psc = &pod["securityContext"];
        assert_eq!(psc["seccompProfile"]["type"], "RuntimeDefault");
        assert_eq!(psc["runAsNonRoot"], true);
        assert_eq!(psc["runAsUser"], AGENT_UID);
        assert_eq!(psc["fsGroup"], AGENT_UID);
        assert!(pod["containers"][0]["volumeMounts"][0]["subPath"].is_null());
        assert_eq!(security_level(&cfg), ("restricted", vec![]));
        let envs = pod["containers"][0]["env"].to_string();
        assert!(
            envs.contains("\"name\":\"TOIL_AGENT_PREEMPTIBLE\",\"value\":\"true\""),
            "{envs}"
        );
    }

    #[test]
    fn the_token_is_in_a_secret_the_job_owns_and_not_in_the_job() {
        let naming = Naming::new("alice", "0123abcd-0000", 2);
        let mut l = launch(false);
        l.agent_token = "tok-0f7c1d2e".into();
        let job = build_job(&config(), &naming, "http://10.0.0.5:7070", &l);
        let text = serde_json::to_string(&job).unwrap_or_default();
        assert!(!text.contains(&l.agent_token), "{text}");
        let v = serde_json::to_value(&job).unwrap_or_default();
        let env = &v["spec"]["template"]["spec"]["containers"][0]["env"];
        let token = env
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["name"] == "TOIL_AGENT_TOKEN")
            .cloned()
            .unwrap_or_default();
        assert!(token["value"].is_null());
        let r = &token["valueFrom"]["secretKeyRef"];
        assert_eq!(r["name"], "toil-alice-0123abcd-2-5-align-3");
        assert_eq!(r["key"], TOKEN_KEY);
        assert_eq!(r["optional"], false);

        let secret = token_secret(&naming, &l, "uid-1");
        let s = serde_json::to_value(&secret).unwrap_or_default();
        assert_eq!(s["metadata"]["name"], "toil-alice-0123abcd-2-5-align-3");
        assert_eq!(s["metadata"]["labels"], v["metadata"]["labels"]);
        let owner = &s["metadata"]["ownerReferences"][0];
        assert_eq!(owner["kind"], "Job");
        assert_eq!(owner["apiVersion"], "batch/v1");
        assert_eq!(owner["uid"], "uid-1");
        assert_eq!(owner["name"], s["metadata"]["name"]);
        assert_eq!(s["immutable"], true);
        // base64 of the token.
        assert_eq!(s["data"][TOKEN_KEY], "dG9rLTBmN2MxZDJl");
    }

    #[test]
    fn options_that_need_more_than_restricted_say_so() {
        // The host path: mounted per owner, and the agent stays root (the
        // kubelet makes host directories owned by root), but still without
        // capabilities or privilege escalation.
        let mut cfg = config();
        cfg.apparmor_unconfined = false;
        let naming = Naming::new("alice", "wf", 2);
        let v = serde_json::to_value(build_job(&cfg, &naming, "http://l:1", &launch(false)))
            .unwrap_or_default();
        let pod = &v["spec"]["template"]["spec"];
        assert_eq!(
            pod["containers"][0]["volumeMounts"][0]["subPath"],
            "owner-alice"
        );
        assert!(pod["securityContext"]["runAsNonRoot"].is_null());
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault"
        );
        let sc = &pod["containers"][0]["securityContext"];
        assert_eq!(sc["allowPrivilegeEscalation"], false);
        assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
        let (level, why) = security_level(&cfg);
        assert_eq!(level, "privileged");
        assert_eq!(why, vec!["--kubernetesHostPath (a hostPath volume)"]);
        assert_ne!(owner_sub_path("alice"), owner_sub_path("bob"));

        cfg.privileged = true;
        let v = serde_json::to_value(build_job(&cfg, &naming, "http://l:1", &launch(false)))
            .unwrap_or_default();
        let pod = &v["spec"]["template"]["spec"];
        let sc = &pod["containers"][0]["securityContext"];
        assert_eq!(sc["privileged"], true);
        assert!(sc["allowPrivilegeEscalation"].is_null() && sc["capabilities"].is_null());
        assert!(pod["securityContext"]["seccompProfile"].is_null());
        assert_eq!(security_level(&cfg).1.len(), 2);
    }

    #[test]
    fn quantities_read_like_kubectl_writes_them() {
        assert_eq!(bytes_quantity(64 << 20).0, "64Mi");
        assert_eq!(bytes_quantity(3 << 30).0, "3Gi");
        assert_eq!(bytes_quantity(1500).0, "1500");
        assert_eq!(bytes_quantity(2048).0, "2Ki");
        assert_eq!(cpu_quantity(2000).0, "2");
        assert_eq!(cpu_quantity(100).0, "100m");
    }
}
