//! One pod's life on its node: admission, volumes, image pulls, init
//! containers, containers (with restarts), termination and the final phase.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::Value;
use tokio::sync::watch;

use super::container::{self, Exit, Launch, StopRequest};
use super::rootfs::{self, Bundle, RootfsSpec, RunAs};
use super::sandbox::{Mount, Privileges};
use super::status::{self, container_status, set_condition, update_pod};
use super::{env, logs, volumes};
use crate::emulator::cluster::{Cluster, now_str, random_token};
use crate::emulator::config::ImageConfig;
use crate::emulator::quantity::Quantity;
use crate::emulator::resources;
use crate::emulator::scheduler;

/// Identity and surroundings of the pod being run.
pub struct PodCtx {
    /// The emulator.
    pub cluster: Arc<Cluster>,
    /// Namespace.
    pub ns: String,
    /// Name.
    pub name: String,
    /// Uid (guards against a new pod of the same name).
    pub uid: String,
    /// Node it runs on.
    pub node: String,
    /// Per-pod state directory.
    pub dir: PathBuf,
    /// Stop requests from the kubelet manager.
    pub stop: watch::Receiver<Option<StopRequest>>,
}

/// How one container's life ended.
enum Outcome {
    /// It ran and exited.
    Exited(Exit),
    /// Stopped before it ever ran.
    NeverRan,
    /// The node vanished; report nothing.
    NodeLost,
}

impl PodCtx {
    fn stopped(&self) -> Option<StopRequest> {
        *self.stop.borrow()
    }

    /// Sleeps, returning early (true) if a stop arrives.
    async fn sleep_or_stop(&self, d: Duration) -> bool {
        let mut rx = self.stop.clone();
        if rx.borrow_and_update().is_some() {
            return true;
        }
        tokio::select! {
            _ = tokio::time::sleep(d) => false,
            _ = rx.changed() => true,
        }
    }

    fn event(&self, type_: &str, reason: &str, message: &str) {
        if let Some(pod) = self
            .cluster
            .get(resources::core("pods"), &self.ns, &self.name)
        {
            self.cluster
                .record_event(&pod, type_, reason, message, "kubelet", Some(&self.node));
        }
    }

    fn update(&self, f: impl FnOnce(&mut Pod)) -> bool {
        update_pod(&self.cluster, &self.ns, &self.name, &self.uid, f)
    }

    fn set_container(
        &self,
        c: &Container,
        init: bool,
        f: impl FnOnce(&mut k8s_openapi::api::core::v1::ContainerStatus),
    ) {
        let image = c.image.clone().unwrap_or_default();
        self.update(|p| {
            let st = p.status.get_or_insert_with(Default::default);
            f(container_status(st, &c.name, &image, init));
            refresh_conditions(p);
        });
    }
}

/// Keeps Ready / ContainersReady / Initialized and the phase in line with
/// the container statuses, as the kubelet's status manager does.
fn refresh_conditions(p: &mut Pod) {
    let spec = p.spec.clone().unwrap_or_default();
    let st = p.status.get_or_insert_with(Default::default);
    let cs = st.container_statuses.clone().unwrap_or_default();
    let all_ready = !spec.containers.is_empty()
        && spec
            .containers
            .iter()
            .all(|c| cs.iter().any(|s| s.name == c.name && s.ready));
    let not_ready: Vec<String> = spec
        .containers
        .iter()
        .filter(|c| !cs.iter().any(|s| s.name == c.name && s.ready))
        .map(|c| c.name.clone())
        .collect();
    let finished = matches!(st.phase.as_deref(), Some("Succeeded") | Some("Failed"));
    if all_ready {
        set_condition(st, "ContainersReady", true, None, None);
        set_condition(st, "Ready", true, None, None);
    } else {
        let (reason, msg) = if finished {
            ("PodCompleted", None)
        } else {
            (
                "ContainersNotReady",
                Some(format!(
                    "containers with unready status: [{}]",
                    not_ready.join(" ")
                )),
            )
        };
        set_condition(st, "ContainersReady", false, Some(reason), msg.as_deref());
        set_condition(st, "Ready", false, Some(reason), msg.as_deref());
    }
    if finished {
        return;
    }
    // Phase while running: Pending while any container waits (and never
    // ran), Running once they have all started.
    let waiting_fresh = spec.containers.iter().any(|c| {
        cs.iter().find(|s| s.name == c.name).is_none_or(|s| {
            s.state.as_ref().is_some_and(|x| x.waiting.is_some())
                && s.last_state.as_ref().is_none_or(|l| l.terminated.is_none())
        })
    });
    st.phase = Some(if waiting_fresh { "Pending" } else { "Running" }.into());
}

fn known_image(cluster: &Cluster, image: &str) -> Option<ImageConfig> {
    let strip = |s: &str| -> String {
        let s = s.strip_prefix("docker.io/").unwrap_or(s);
        let s = s.strip_prefix("library/").unwrap_or(s);
        let last = s.rsplit('/').next().unwrap_or(s);
        if last.contains(':') || last.contains('@') {
            s.to_string()
        } else {
            format!("{s}:latest")
        }
    };
    let want = strip(image);
    cluster
        .config
        .images
        .iter()
        .find(|i| strip(&i.name) == want)
        .cloned()
}

fn base_env(
    ctx: &PodCtx,
    image_dir: Option<&PathBuf>,
    bundle: Option<&(Bundle, RunAs)>,
    pod: &Pod,
) -> Vec<(String, String)> {
    // The API server as pods reach it: in-cluster address or the host's.
    let (host, port) = match ctx.cluster.pod_network().in_cluster_api() {
        Some(a) => (a.ip().to_string(), a.port()),
        None => (
            "127.0.0.1".to_string(),
            ctx.cluster.https_port.get().copied().unwrap_or(443),
        ),
    };
    let port = port.to_string();
    let mut path = String::new();
    if let Some(d) = image_dir {
        path.push_str(&d.to_string_lossy());
        path.push(':');
    }
    path.push_str("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    let mut home = "/root".to_string();
    let mut image_env = Vec::new();
    if let Some((b, run_as)) = bundle {
        // The image's own environment; HOME from its passwd, like runtimes.
        image_env = b.env.clone();
        if let Some((_, h)) = b.passwd(run_as.uid) {
            home = h;
        } else if run_as.uid != 0 {
            home = "/".into();
        }
        if let Some((_, p)) = image_env.iter().find(|(k, _)| k == "PATH") {
            path = p.clone();
        }
    }
    let mut v = vec![
        ("PATH".to_string(), path),
        ("HOSTNAME".to_string(), ctx.name.chars().take(63).collect()),
        ("HOME".to_string(), home),
        ("KUBERNETES_SERVICE_HOST".to_string(), host.clone()),
        ("KUBERNETES_SERVICE_PORT".to_string(), port.clone()),
        ("KUBERNETES_SERVICE_PORT_HTTPS".to_string(), port.clone()),
        (
            "KUBERNETES_PORT".to_string(),
            format!("tcp://{host}:{port}"),
        ),
        (
            "KUBERNETES_PORT_443_TCP".to_string(),
            format!("tcp://{host}:{port}"),
        ),
        (
            "KUBERNETES_PORT_443_TCP_PROTO".to_string(),
            "tcp".to_string(),
        ),
        ("KUBERNETES_PORT_443_TCP_PORT".to_string(), port),
        ("KUBERNETES_PORT_443_TCP_ADDR".to_string(), host.clone()),
    ];
    v.extend(
        image_env
            .into_iter()
            .filter(|(k, _)| k != "PATH" && k != "HOME"),
    );
    if pod.spec.as_ref().and_then(|s| s.enable_service_links) != Some(false) {
        v.extend(crate::emulator::services::link_env(&ctx.cluster, &ctx.ns));
    }
    for name in &ctx.cluster.config.passthrough_env {
        if let Ok(val) = std::env::var(name) {
            v.push((name.clone(), val));
        }
    }
    v
}

fn memory_limit(c: &Container) -> Option<u64> {
    c.resources
        .as_ref()
        .and_then(|r| r.limits.as_ref())
        .and_then(|l| l.get("memory"))
        .and_then(|q| q.0.parse::<Quantity>().ok())
        .map(|q| q.ceil_units().clamp(0, i128::from(u64::MAX)) as u64)
}

fn container_mounts(c: &Container, vols: &BTreeMap<String, PathBuf>) -> Vec<Mount> {
    c.volume_mounts
        .iter()
        .flatten()
        .filter_map(|m| {
            let mut source = vols.get(&m.name)?.clone();
            if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                source = source.join(sub);
                if !source.exists() {
                    let _ = std::fs::create_dir_all(&source);
                }
            }
            Some(Mount {
                source,
                target: PathBuf::from(&m.mount_path),
                read_only: m.read_only == Some(true),
            })
        })
        .collect()
}

/// Pulls (looks up) the image, showing ErrImagePull / ImagePullBackOff
/// until it appears or the pod is stopped. Returns the image.
async fn pull(ctx: &PodCtx, c: &Container, init: bool) -> Result<ImageConfig, ()> {
    let image = c.image.clone().unwrap_or_default();
    let policy = c
        .image_pull_policy
        .clone()
        .unwrap_or_else(|| "IfNotPresent".into());
    let base = ctx.cluster.config.timing.image_pull_backoff;
    let mut attempt = 0u32;
    loop {
        if ctx.stopped().is_some() {
            return Err(());
        }
        if let Some(found) = known_image(&ctx.cluster, &image) {
            if policy == "Always" {
                ctx.event("Normal", "Pulling", &format!("Pulling image \"{image}\""));
                ctx.event(
                    "Normal",
                    "Pulled",
                    &format!("Successfully pulled image \"{image}\" in 2ms (2ms including waiting). Image size: 0 bytes."),
                );
            } else {
                ctx.event(
                    "Normal",
                    "Pulled",
                    &format!("Container image \"{image}\" already present on machine"),
                );
            }
            return Ok(found);
        }
        let reference = if image.contains('/') {
            image.clone()
        } else {
            format!("docker.io/library/{image}")
        };
        let reference = if reference
            .rsplit('/')
            .next()
            .is_some_and(|l| l.contains(':'))
        {
            reference
        } else {
            format!("{reference}:latest")
        };
        let msg = format!(
            "failed to pull and unpack image \"{reference}\": failed to resolve reference \"{reference}\": pull access denied, repository does not exist or may require authorization: server message: insufficient_scope: authorization failed"
        );
        ctx.event("Normal", "Pulling", &format!("Pulling image \"{image}\""));
        ctx.event(
            "Warning",
            "Failed",
            &format!("Failed to pull image \"{image}\": {msg}"),
        );
        ctx.event("Warning", "Failed", "Error: ErrImagePull");
        ctx.set_container(c, init, |cs| {
            cs.state = Some(status::waiting("ErrImagePull", Some(&msg)))
        });
        if ctx.sleep_or_stop(base).await {
            return Err(());
        }
        let backoff = format!("Back-off pulling image \"{image}\"");
        ctx.event("Normal", "BackOff", &backoff);
        ctx.event("Warning", "Failed", "Error: ImagePullBackOff");
        ctx.set_container(c, init, |cs| {
            cs.state = Some(status::waiting("ImagePullBackOff", Some(&backoff)))
        });
        attempt += 1;
        let wait = base * 2u32.saturating_pow(attempt.min(4));
        if ctx.sleep_or_stop(wait).await {
            return Err(());
        }
    }
}

/// Runs one container until it ends for good (restarts included).
async fn run_container(
    ctx: &PodCtx,
    c: &Container,
    init: bool,
    vols: &BTreeMap<String, PathBuf>,
) -> Outcome {
    let cluster = ctx.cluster.clone();
    let restart_policy = cluster
        .get_typed::<Pod>(resources::core("pods"), &ctx.ns, &ctx.name)
        .and_then(|p| p.spec.and_then(|s| s.restart_policy))
        .unwrap_or_else(|| "Always".into());
    let mut restarts = 0i32;
    let mut last_exit: Option<Exit> = None;
    loop {
        let Ok(image) = pull(ctx, c, init).await else {
            return last_exit.map(Outcome::Exited).unwrap_or(Outcome::NeverRan);
        };
        let Some(pod) = cluster.get_typed::<Pod>(resources::core("pods"), &ctx.ns, &ctx.name)
        else {
            return Outcome::NeverRan;
        };
        // An image with contents: its bundle, and who runs in it.
        let who = format!(
            "pod: \"{}_{}({})\", container: {}",
            ctx.name, ctx.ns, ctx.uid, c.name
        );
        let bundle = image
            .bundle
            .as_deref()
            .map(Bundle::load)
            .transpose()
            .map_err(|m| ("CreateContainerError", m))
            .and_then(|b| {
                b.map(|b| {
                    let id = b.run_as(&pod, c);
                    rootfs::check_non_root(&pod, c, &id, &who)
                        .map(|()| (b, id))
                        .map_err(|m| ("CreateContainerConfigError", m))
                })
                .transpose()
            });
        let bundle = match bundle {
            Ok(b) => b,
            Err((reason, msg)) => {
                ctx.event("Warning", "Failed", &format!("Error: {msg}"));
                ctx.set_container(c, init, |cs| {
                    cs.state = Some(status::waiting(reason, Some(&msg)))
                });
                if ctx.sleep_or_stop(Duration::from_secs(5)).await {
                    return last_exit.map(Outcome::Exited).unwrap_or(Outcome::NeverRan);
                }
                continue;
            }
        };
        let built = env::build_env(
            &cluster,
            &pod,
            c,
            &base_env(ctx, image.path_dir.as_ref(), bundle.as_ref(), &pod),
        )
        .and_then(|e| env::build_argv(c, &e).map(|a| (e, a)));
        let (env_vars, argv) = match built {
            Ok(v) => v,
            Err(env::ConfigError(msg)) => {
                ctx.event("Warning", "Failed", &format!("Error: {msg}"));
                ctx.set_container(c, init, |cs| {
                    cs.state = Some(status::waiting("CreateContainerConfigError", Some(&msg)))
                });
                if ctx
                    .sleep_or_stop(cluster.config.timing.crash_loop_backoff * 4)
                    .await
                {
                    return last_exit.map(Outcome::Exited).unwrap_or(Outcome::NeverRan);
                }
                continue;
            }
        };
        let container_id = format!("containerd://{}{}", random_token(), random_token());
        let scratch = ctx
            .dir
            .join("rootfs")
            .join(format!("{}-{restarts}", c.name));
        let rootfs = bundle.as_ref().map(|(b, run_as)| RootfsSpec {
            lower: b.rootfs.clone(),
            scratch: scratch.clone(),
            run_as: run_as.clone(),
        });
        if bundle.is_some()
            && let Err(e) = rootfs::prepare_volumes(&pod, vols, &cluster.state_dir)
        {
            tracing::warn!(pod = %ctx.name, error = %e, "cannot prepare the volumes for the image's user");
        }
        let default_dir = bundle
            .as_ref()
            .map(|(b, _)| b.cwd.to_string_lossy().into_owned())
            .unwrap_or_else(|| "/".into());
        let launch = Launch {
            argv,
            env: env_vars,
            workdir: PathBuf::from(c.working_dir.clone().unwrap_or(default_dir)),
            mounts: container_mounts(c, vols),
            memory_limit: memory_limit(c),
            log: logs::log_path(&ctx.dir, &c.name, restarts),
            cgroup_name: format!("{}-{}-{restarts}", ctx.uid, c.name),
            privileges: Privileges::of(c.security_context.as_ref()),
            rootfs,
            netns: cluster
                .pod_network()
                .netns_fd()
                .filter(|_| pod.spec.as_ref().and_then(|s| s.host_network) != Some(true)),
        };
        if let Err(why) = &cluster.kubelet.mount_ns_ok
            && (!launch.mounts.is_empty() || launch.rootfs.is_some())
        {
            ctx.event("Warning", "Failed", &format!("Error: {why}"));
            ctx.set_container(c, init, |cs| {
                cs.state = Some(status::waiting("CreateContainerError", Some(why)))
            });
            if ctx.sleep_or_stop(Duration::from_secs(5)).await {
                return Outcome::NeverRan;
            }
            continue;
        }
        ctx.event(
            "Normal",
            "Created",
            &format!("Created container: {}", c.name),
        );
        let running = match container::spawn(&cluster.kubelet.memory, &launch).await {
            Ok(r) => r,
            Err(msg) => {
                ctx.event("Warning", "Failed", &format!("Error: {msg}"));
                if launch.rootfs.is_some() {
                    let _ = std::fs::remove_dir_all(&scratch);
                }
                let now = now_str();
                let exit = Exit {
                    code: 128,
                    signal: None,
                    oom: false,
                    started_at: now.clone(),
                    finished_at: now,
                };
                ctx.set_container(c, init, |cs| {
                    let mut st = status::terminated(&exit, &container_id);
                    if let Some(t) = st.terminated.as_mut() {
                        t.reason = Some("StartError".into());
                        t.message = Some(msg.clone());
                    }
                    cs.state = Some(st);
                    cs.container_id = Some(container_id.clone());
                });
                return Outcome::Exited(exit);
            }
        };
        ctx.event(
            "Normal",
            "Started",
            &format!("Started container {}", c.name),
        );
        let started_at = running.started_at.clone();
        ctx.set_container(c, init, |cs| {
            cs.state = Some(status::running(&started_at));
            cs.ready = !init;
            cs.started = Some(true);
            cs.container_id = Some(container_id.clone());
            cs.image_id = format!(
                "docker.io/library/{}@sha256:{}",
                c.image.clone().unwrap_or_default(),
                "0".repeat(64)
            );
        });
        cluster
            .kubelet
            .register_proc(&ctx.uid, &c.name, running.handle.clone());
        let exit = running.wait(ctx.stop.clone()).await;
        cluster.kubelet.unregister_proc(&ctx.uid, &c.name);
        if launch.rootfs.is_some() {
            // The container's writable layer goes with it.
            let _ = std::fs::remove_dir_all(&scratch);
        }
        let Some(exit) = exit else {
            return Outcome::NodeLost;
        };
        ctx.set_container(c, init, |cs| {
            cs.state = Some(status::terminated(&exit, &container_id));
            cs.ready = false;
            cs.started = Some(false);
        });
        let again = match restart_policy.as_str() {
            "Always" => !init || exit.code != 0,
            "OnFailure" => exit.code != 0,
            _ => false,
        };
        if !again || ctx.stopped().is_some() {
            return Outcome::Exited(exit);
        }
        // CrashLoopBackOff before the restart.
        restarts += 1;
        let backoff = cluster.config.timing.crash_loop_backoff
            * 2u32.saturating_pow((restarts - 1).min(5) as u32);
        let msg = format!(
            "back-off {}s restarting failed container={} pod={}_{}({})",
            backoff.as_secs().max(1),
            c.name,
            ctx.name,
            ctx.ns,
            ctx.uid
        );
        let last = status::terminated(&exit, &container_id);
        ctx.event(
            "Warning",
            "BackOff",
            &format!(
                "Back-off restarting failed container {} in pod {}_{}({})",
                c.name, ctx.name, ctx.ns, ctx.uid
            ),
        );
        ctx.set_container(c, init, |cs| {
            cs.last_state = Some(last);
            cs.restart_count = restarts;
            cs.state = Some(status::waiting("CrashLoopBackOff", Some(&msg)));
        });
        last_exit = Some(exit);
        if ctx.sleep_or_stop(backoff).await {
            return last_exit.map(Outcome::Exited).unwrap_or(Outcome::NeverRan);
        }
    }
}

/// Checks a pod bound directly to a node (no scheduler) against the node's
/// free capacity, as kubelet admission does.
fn admit(ctx: &PodCtx, pod: &Pod) -> Result<(), String> {
    let raw = ctx.cluster.get(resources::core("pods"), &ctx.ns, &ctx.name);
    let scheduled_by_us = raw
        .as_ref()
        .and_then(|p| {
            p.pointer("/status/conditions")
                .and_then(Value::as_array)
                .cloned()
        })
        .is_some_and(|c| c.iter().any(|c| c["type"] == "PodScheduled"));
    if scheduled_by_us {
        return Ok(());
    }
    scheduler::kubelet_admit(&ctx.cluster, pod, &ctx.node)
}

/// Runs a pod to completion (or until stopped).
pub async fn run(ctx: PodCtx) {
    let cluster = ctx.cluster.clone();
    let Some(pod) = cluster.get_typed::<Pod>(resources::core("pods"), &ctx.ns, &ctx.name) else {
        return;
    };
    let spec = pod.spec.clone().unwrap_or_default();
    if let Err(resource) = admit(&ctx, &pod) {
        let msg = format!("Pod was rejected: Node didn't have enough resource: {resource}");
        ctx.event("Warning", &format!("OutOf{resource}"), &msg);
        ctx.update(|p| {
            let st = p.status.get_or_insert_with(Default::default);
            st.phase = Some("Failed".into());
            st.reason = Some(format!("OutOf{resource}"));
            st.message = Some(msg.clone());
        });
        return;
    }
    let has_init = spec.init_containers.as_ref().is_some_and(|v| !v.is_empty());
    // hostNetwork pods live in the host's network, with the node's IP.
    let host_network = spec.host_network == Some(true);
    let pod_ip = match host_network {
        true => "127.0.0.1".to_string(),
        false => cluster.pod_network().assign_pod_ip(&ctx.uid).to_string(),
    };
    ctx.update(|p| {
        let st = p.status.get_or_insert_with(Default::default);
        st.host_ip = Some("127.0.0.1".into());
        st.host_ips = Some(vec![k8s_openapi::api::core::v1::HostIP {
            ip: "127.0.0.1".into(),
        }]);
        st.pod_ip = Some(pod_ip.clone());
        st.pod_ips = Some(vec![k8s_openapi::api::core::v1::PodIP {
            ip: pod_ip.clone(),
        }]);
        st.start_time = status::now();
        set_condition(st, "PodReadyToStartContainers", false, None, None);
        set_condition(
            st,
            "Initialized",
            !has_init,
            has_init.then_some("ContainersNotInitialized"),
            None,
        );
        for c in spec.init_containers.iter().flatten() {
            container_status(st, &c.name, c.image.as_deref().unwrap_or_default(), true);
        }
        for c in &spec.containers {
            let cs = container_status(st, &c.name, c.image.as_deref().unwrap_or_default(), false);
            if has_init {
                cs.state = Some(status::waiting("PodInitializing", None));
            }
        }
        refresh_conditions(p);
    });

    // Volumes.
    let vols = loop {
        if ctx.stopped().is_some() {
            finish(&ctx, &[], true).await;
            return;
        }
        let raw = cluster.get(resources::core("pods"), &ctx.ns, &ctx.name);
        if raw.as_ref().is_some_and(|p| cluster.is_stalled(p)) {
            let names: Vec<String> = spec
                .volumes
                .iter()
                .flatten()
                .map(|v| v.name.clone())
                .collect();
            ctx.event(
                "Warning",
                "FailedMount",
                &format!(
                    "Unable to attach or mount volumes: unmounted volumes=[{}], unattached volumes=[], failed to process volumes=[]: timed out waiting for the condition",
                    names.join(" ")
                ),
            );
        } else {
            match volumes::setup(&cluster, &pod, &ctx.dir, &ctx.node) {
                Ok(v) => break v,
                Err(e) => ctx.event(
                    "Warning",
                    "FailedMount",
                    &format!(
                        "MountVolume.SetUp failed for volume \"{}\" : {}",
                        e.volume, e.message
                    ),
                ),
            }
        }
        if ctx.sleep_or_stop(cluster.config.timing.mount_retry).await {
            finish(&ctx, &[], true).await;
            return;
        }
    };
    ctx.update(|p| {
        let st = p.status.get_or_insert_with(Default::default);
        set_condition(st, "PodReadyToStartContainers", true, None, None);
    });

    // Init containers, one after another.
    for c in spec.init_containers.iter().flatten() {
        match run_container(&ctx, c, true, &vols).await {
            Outcome::NodeLost => return,
            Outcome::NeverRan => {
                finish(&ctx, &[], true).await;
                return;
            }
            Outcome::Exited(e) if e.code != 0 => {
                finish(&ctx, &[e.code], false).await;
                return;
            }
            Outcome::Exited(_) => {}
        }
        if ctx.stopped().is_some() {
            finish(&ctx, &[], true).await;
            return;
        }
    }
    if has_init {
        ctx.update(|p| {
            let st = p.status.get_or_insert_with(Default::default);
            set_condition(st, "Initialized", true, None, None);
            for c in &spec.containers {
                let cs =
                    container_status(st, &c.name, c.image.as_deref().unwrap_or_default(), false);
                cs.state = Some(status::waiting("ContainerCreating", None));
            }
        });
    }

    // Containers, together.
    let runs = spec
        .containers
        .iter()
        .map(|c| run_container(&ctx, c, false, &vols));
    let outcomes = futures::future::join_all(runs).await;
    if outcomes.iter().any(|o| matches!(o, Outcome::NodeLost)) {
        return;
    }
    let mut codes = Vec::new();
    let mut never = false;
    for o in outcomes {
        match o {
            Outcome::Exited(e) => codes.push(e.code),
            _ => never = true,
        }
    }
    finish(&ctx, &codes, never).await;
}

/// Sets the final phase and, if the pod is being deleted, removes it.
async fn finish(ctx: &PodCtx, codes: &[i32], some_never_ran: bool) {
    let policy = ctx
        .cluster
        .get_typed::<Pod>(resources::core("pods"), &ctx.ns, &ctx.name)
        .and_then(|p| p.spec.and_then(|s| s.restart_policy))
        .unwrap_or_else(|| "Always".into());
    let phase = if some_never_ran && codes.is_empty() {
        "Failed"
    } else {
        status::final_phase(&policy, codes)
    };
    ctx.update(|p| {
        let st = p.status.get_or_insert_with(Default::default);
        // An eviction already decided the phase and reason.
        if st.reason.is_none() {
            st.phase = Some(if some_never_ran { "Failed" } else { phase }.into());
        } else {
            st.phase = Some("Failed".into());
        }
        for cs in st.container_statuses.iter_mut().flatten() {
            cs.ready = false;
            if cs.state.as_ref().is_some_and(|s| s.waiting.is_some()) {
                cs.state = Some(k8s_openapi::api::core::v1::ContainerState {
                    terminated: Some(k8s_openapi::api::core::v1::ContainerStateTerminated {
                        exit_code: 137,
                        reason: Some("ContainerStatusUnknown".into()),
                        message: Some(
                            "The container could not be located when the pod was terminated".into(),
                        ),
                        ..Default::default()
                    }),
                    ..Default::default()
                });
            }
        }
        refresh_conditions(p);
    });
    let deleting = ctx
        .cluster
        .get(resources::core("pods"), &ctx.ns, &ctx.name)
        .is_some_and(|p| {
            p.pointer("/metadata/deletionTimestamp").is_some()
                && p.pointer("/metadata/uid").and_then(Value::as_str) == Some(&ctx.uid)
        });
    if deleting {
        ctx.cluster
            .remove(resources::core("pods"), &ctx.ns, &ctx.name);
    }
}
