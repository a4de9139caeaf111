//! The way back to a leader that pods cannot route to (a laptop behind NAT),
//! through nothing but the Kubernetes API server.
//!
//! One relay pod per workflow (`toil-agent relay`, in the appliance image,
//! run by a Job labelled like the agents' so every cleanup path removes it)
//! listens for agents on the pod network behind a ClusterIP Service (a
//! stable address across relay pod replacement). The leader opens a few
//! connections to the relay's tunnel port with `pods/portforward`; each
//! agent connection becomes a stream over one of them, and arrives at the
//! gRPC server as a connection like any other, TLS included: the relay
//! carries the agents' TLS unread, and agents pin the leader's certificate.
//!
//! Choosing the path (`--agentConnection auto`): the relay first probes the
//! leader's direct address (TCP and a pinned TLS handshake) and prints the
//! result, which the leader reads from the pod's log. Reachable: the relay
//! is deleted and agents dial directly. Not: agents use the tunnel.
//!
//! A deleted or evicted relay pod is replaced by its Job; a deleted Job or
//! Service is recreated (the Service with the same cluster IP), and the
//! tunnels are reopened, so agents reconnect within their lease.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{AsyncBufReadExt, StreamExt};
use k8s_openapi::ByteString;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, ObjectFieldSelector, Pod,
    PodSecurityContext, PodSpec, PodTemplateSpec, ResourceRequirements, SeccompProfile, Secret,
    SecretKeySelector, SecurityContext, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams};
use toil_agent::relay::PROBE_PREFIX;
use toil_agent::tunnel::{self, Inbound, Mux};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Cluster;
use super::api::{self, ApiError, RetryPolicy, Target};
use super::names::{self, Naming};
use super::podspec::{AGENT_UID, TOKEN_KEY, bytes_quantity, cpu_quantity};
use super::settings::AgentConnection;
use crate::server::listen::TunnelConn;

/// Label on the relay's Job, pod and Service (value `relay`).
pub const ROLE: &str = "toil.io/role";
/// Port-forward connections the leader keeps open to the relay.
pub const TUNNELS: usize = 3;
/// How long the relay pod may take to start and report its probe.
const START_LIMIT: Duration = Duration::from_secs(120);
/// How often the keeper checks that the Job and Service still exist.
const KEEP_EVERY: Duration = Duration::from_secs(2);

/// How agents reach the leader, as chosen at start.
pub struct Path {
    /// What agents dial (`TOIL_LEADER_ADDRESS`).
    pub address: String,
    /// The start-up line: which path, and why.
    pub line: String,
    /// The relay to keep, for the tunnel path.
    pub relay: Option<Relay>,
}

/// What the relay's probe of the direct address found.
#[derive(Debug, PartialEq, Eq)]
pub enum Probe {
    /// A pinned TLS handshake with the leader succeeded from the relay pod.
    Reachable,
    /// It failed, with the reason.
    Unreachable(String),
}

/// Reads the relay's probe line (`toil-relay probe: reachable ADDR` or
/// `... unreachable ADDR: REASON`).
pub fn parse_probe(line: &str) -> Option<Probe> {
    let rest = line.trim().strip_prefix(PROBE_PREFIX)?.trim_start();
    if rest.starts_with("reachable ") {
        return Some(Probe::Reachable);
    }
    let rest = rest.strip_prefix("unreachable ")?;
    let reason = rest.split_once(": ").map_or("", |(_, r)| r);
    Some(Probe::Unreachable(reason.to_string()))
}

/// Chooses how agents reach the leader and, for the tunnel, starts the
/// relay. `direct` is the address agents would dial without a tunnel (the
/// leader's `--leaderAddress`, pod IP or bound address); `pin` is the
/// leader certificate's fingerprint.
pub async fn choose(
    cluster: &Cluster,
    naming: &Naming,
    direct: &str,
    in_pod: bool,
    pin: &str,
) -> Result<Path, String> {
    let mode = cluster.cfg.agent_connection;
    if mode == AgentConnection::Direct {
        return Ok(Path {
            address: direct.to_string(),
            line: format!(
                "agents reach the leader directly at {direct} (--agentConnection direct)"
            ),
            relay: None,
        });
    }
    if in_pod && mode == AgentConnection::Auto {
        return Ok(Path {
            address: direct.to_string(),
            line: format!("agents reach the leader at its pod IP: {direct}"),
            relay: None,
        });
    }
    let probe = (mode == AgentConnection::Auto).then(|| direct.to_string());
    let mut relay = Relay::new(cluster, naming, pin, probe);
    if let Err(e) = relay.ensure().await {
        let why = relay.explain(&e);
        relay.delete().await;
        if mode == AgentConnection::Tunnel {
            return Err(why);
        }
        return Ok(unchecked(direct, &why));
    }
    if mode == AgentConnection::Tunnel {
        if let Err(e) = relay.check_tunnel().await {
            relay.delete().await;
            return Err(e);
        }
        let line = format!(
            "agents reach the leader through a tunnel over the API server (relay {}, {}) (--agentConnection tunnel)",
            relay.name,
            relay.address()
        );
        return Ok(Path {
            address: relay.address(),
            line,
            relay: Some(relay),
        });
    }
    let found = tokio::time::timeout(START_LIMIT, relay.read_probe()).await;
    let probe = match found {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => {
            relay.delete().await;
            return Ok(unchecked(direct, &e));
        }
        Err(_) => {
            relay.delete().await;
            let why = format!(
                "the relay pod of Job {} did not report whether pods can reach the leader within {}s",
                relay.name,
                START_LIMIT.as_secs()
            );
            return Ok(unchecked(direct, &why));
        }
    };
    match probe {
        Probe::Reachable => {
            relay.delete().await;
            Ok(Path {
                address: direct.to_string(),
                line: format!(
                    "agents reach the leader directly at {direct} (a relay pod's probe reached it)"
                ),
                relay: None,
            })
        }
        Probe::Unreachable(why) => {
            if let Err(e) = relay.check_tunnel().await {
                relay.delete().await;
                return Err(format!(
                    "{direct} is not reachable from pods ({why}), and {e}"
                ));
            }
            Ok(Path {
                address: relay.address(),
                line: format!(
                    "agents reach the leader through a tunnel over the API server (relay {}, {}): {direct} is not reachable from pods ({why})",
                    relay.name,
                    relay.address()
                ),
                relay: Some(relay),
            })
        }
    }
}

/// The direct path, taken without the probe's answer (the relay could not
/// be made or did not report): what the leader did before it had a tunnel,
/// with the reason and the fixes in the start-up line.
fn unchecked(direct: &str, why: &str) -> Path {
    Path {
        address: direct.to_string(),
        line: format!(
            "agents reach the leader directly at {direct}, unchecked: {why}. If pods cannot reach that address, give --leaderAddress ADDR (one they can reach) or let the leader run its relay (deploy/rbac.yaml)"
        ),
        relay: None,
    }
}

/// The relay's Job, Secret and Service, and the tunnels to it.
pub struct Relay {
    client: Client,
    /// The client the port-forwards use (TCP_NODELAY, no read timeout).
    streams: Client,
    ns: String,
    /// The relay Job's (and Secret's and Service's) name.
    pub name: String,
    labels: BTreeMap<String, String>,
    image: String,
    service_account: Option<String>,
    token: String,
    pin: String,
    probe: Option<String>,
    /// Where agents connect (pod and Service port).
    port: u16,
    /// The relay's tunnel port (token-protected).
    tunnel_port: u16,
    /// The Service's cluster IP, once made; kept across recreation.
    cluster_ip: Option<String>,
    policy: RetryPolicy,
    ttl: i32,
}

impl Relay {
    fn new(cluster: &Cluster, naming: &Naming, pin: &str, probe: Option<String>) -> Relay {
        let mut labels = BTreeMap::from([
            (names::MANAGED_BY.to_string(), names::MANAGER.to_string()),
            (names::OWNER.to_string(), naming.owner.clone()),
            (names::WORKFLOW.to_string(), naming.workflow_id.clone()),
            (names::EPOCH.to_string(), naming.epoch.to_string()),
        ]);
        labels.insert(ROLE.into(), "relay".into());
        // Ports from the workflow id: fixed for the workflow (the Service
        // must keep pointing at them), and unlikely to collide where pods
        // share a network (a test cluster on one host).
        let h = naming
            .workflow_id
            .bytes()
            .fold(naming.epoch as u32, |h, b| {
                h.wrapping_mul(31).wrapping_add(b as u32)
            });
        let port = 20000 + (h % 10000) as u16 * 2;
        Relay {
            client: cluster.conn.client.clone(),
            streams: cluster.conn.streams.clone(),
            ns: cluster.conn.namespace.clone(),
            name: naming.relay_name(),
            labels,
            image: cluster.cfg.image.clone(),
            service_account: cluster.cfg.service_account.clone(),
            token: crate::driver::new_token(),
            pin: pin.to_string(),
            probe,
            port,
            tunnel_port: port + 1,
            cluster_ip: None,
            policy: RetryPolicy::default(),
            ttl: cluster.cfg.job_ttl.as_secs().min(i32::MAX as u64) as i32,
        }
    }

    /// What agents dial: the Service's cluster IP and the relay's port.
    pub fn address(&self) -> String {
        let ip = self.cluster_ip.as_deref().unwrap_or("0.0.0.0");
        if ip.contains(':') {
            format!("https://[{ip}]:{}", self.port)
        } else {
            format!("https://{ip}:{}", self.port)
        }
    }

    /// A refusal, with what to do instead of the tunnel.
    fn explain(&self, e: &ApiError) -> String {
        if e.code() == Some(403) {
            format!(
                "agents cannot be given a tunnel to the leader: {e}. The tunnel needs the rules for `jobs`, `secrets`, `services` and `pods/portforward` in deploy/rbac.yaml; or give --leaderAddress ADDR (an address pods can reach) with --agentConnection direct to do without it"
            )
        } else {
            format!("starting the relay pod for the agents' tunnel: {e}")
        }
    }

    fn jobs(&self) -> Api<Job> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    fn services(&self) -> Api<Service> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    fn selector(&self) -> String {
        self.labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Makes sure the Job, its Secret and the Service exist (creating
    /// whatever is missing).
    pub async fn ensure(&mut self) -> Result<(), ApiError> {
        let pp = PostParams::default();
        let jobs = self.jobs();
        let existing = api::call(
            &self.policy,
            &Target::new("get", "jobs", "batch", &self.ns),
            &format!("reading the relay Job {}", self.name),
            || jobs.get_opt(&self.name),
        )
        .await?;
        let mut made_job = false;
        let job = match existing {
            Some(j) if j.metadata.deletion_timestamp.is_none() => j,
            _ => {
                made_job = true;
                let job = self.build_job();
                let made = api::call(
                    &self.policy,
                    &Target::new("create", "jobs", "batch", &self.ns),
                    &format!("creating the relay Job {}", self.name),
                    || jobs.create(&pp, &job),
                )
                .await;
                // A 409: the old Job is still being deleted; the keeper's
                // next round makes the new one.
                made?
            }
        };
        let uid = job.metadata.uid.clone().unwrap_or_default();
        let owner = OwnerReference {
            api_version: "batch/v1".into(),
            kind: "Job".into(),
            name: self.name.clone(),
            uid,
            controller: None,
            block_owner_deletion: None,
        };
        if made_job {
            // The pod waits for its token (secretKeyRef) until this lands.
            let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.ns);
            let secret = self.build_secret(owner.clone());
            let made = api::call(
                &self.policy,
                &Target::new("create", "secrets", "", &self.ns),
                &format!("creating the relay's token Secret {}", self.name),
                || secrets.create(&pp, &secret),
            )
            .await;
            match made {
                Ok(_) => {}
                Err(e) if e.code() == Some(409) => {}
                Err(e) => return Err(e),
            }
        }
        let services = self.services();
        let existing = api::call(
            &self.policy,
            &Target::new("get", "services", "", &self.ns),
            &format!("reading the relay Service {}", self.name),
            || services.get_opt(&self.name),
        )
        .await?;
        let svc = match existing {
            Some(s) if s.metadata.deletion_timestamp.is_none() => s,
            _ => {
                let svc = self.build_service(owner);
                api::call(
                    &self.policy,
                    &Target::new("create", "services", "", &self.ns),
                    &format!("creating the relay Service {}", self.name),
                    || services.create(&pp, &svc),
                )
                .await?
            }
        };
        if let Some(ip) = svc.spec.and_then(|s| s.cluster_ip)
            && !ip.is_empty()
            && ip != "None"
        {
            self.cluster_ip = Some(ip);
        }
        Ok(())
    }

    fn build_job(&self) -> Job {
        let env = |name: &str, value: String| EnvVar {
            name: name.into(),
            value: Some(value),
            value_from: None,
        };
        let mut vars = vec![
            EnvVar {
                name: "TOIL_POD_IP".into(),
                value: None,
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        field_path: "status.podIP".into(),
                        api_version: None,
                    }),
                    ..Default::default()
                }),
            },
            env("TOIL_RELAY_AGENT_PORT", self.port.to_string()),
            env(
                "TOIL_RELAY_TUNNEL_BIND",
                format!("0.0.0.0:{}", self.tunnel_port),
            ),
            env("TOIL_LEADER_CERT_SHA256", self.pin.clone()),
            EnvVar {
                name: toil_agent::relay::TOKEN_VAR.into(),
                value: None,
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: self.name.clone(),
                        key: TOKEN_KEY.into(),
                        optional: None,
                    }),
                    ..Default::default()
                }),
            },
        ];
        if let Some(p) = &self.probe {
            vars.push(env("TOIL_RELAY_PROBE", p.clone()));
        }
        let resources = BTreeMap::from([
            ("cpu".to_string(), cpu_quantity(100)),
            ("memory".to_string(), bytes_quantity(64 << 20)),
        ]);
        let container = Container {
            name: "relay".into(),
            image: Some(self.image.clone()),
            command: Some(vec!["toil-agent".into(), "relay".into()]),
            env: Some(vars),
            ports: Some(vec![ContainerPort {
                container_port: i32::from(self.port),
                name: Some("agents".into()),
                ..Default::default()
            }]),
            resources: Some(ResourceRequirements {
                limits: Some(resources.clone()),
                requests: Some(resources),
                claims: None,
            }),
            security_context: Some(SecurityContext {
                allow_privilege_escalation: Some(false),
                capabilities: Some(Capabilities {
                    drop: Some(vec!["ALL".into()]),
                    add: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let pod = PodSpec {
            containers: vec![container],
            restart_policy: Some("Never".into()),
            automount_service_account_token: Some(false),
            service_account_name: self.service_account.clone(),
            enable_service_links: Some(false),
            security_context: Some(PodSecurityContext {
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    localhost_profile: None,
                }),
                run_as_non_root: Some(true),
                run_as_user: Some(AGENT_UID),
                run_as_group: Some(AGENT_UID),
                ..Default::default()
            }),
            termination_grace_period_seconds: Some(5),
            ..Default::default()
        };
        Job {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                labels: Some(self.labels.clone()),
                ..Default::default()
            },
            spec: Some(JobSpec {
                // A failed or evicted relay pod is replaced, many times
                // over: the workflow depends on it.
                backoff_limit: Some(1000),
                ttl_seconds_after_finished: Some(self.ttl),
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(self.labels.clone()),
                        ..Default::default()
                    }),
                    spec: Some(pod),
                },
                ..Default::default()
            }),
            status: None,
        }
    }

    fn build_secret(&self, owner: OwnerReference) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                labels: Some(self.labels.clone()),
                owner_references: Some(vec![owner]),
                ..Default::default()
            },
            data: Some(BTreeMap::from([(
                TOKEN_KEY.to_string(),
                ByteString(self.token.clone().into_bytes()),
            )])),
            immutable: Some(true),
            type_: Some("Opaque".into()),
            ..Default::default()
        }
    }

    fn build_service(&self, owner: OwnerReference) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                labels: Some(self.labels.clone()),
                owner_references: Some(vec![owner]),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: Some("ClusterIP".into()),
                // The same address as before when recreated: agents keep it.
                cluster_ip: self.cluster_ip.clone(),
                selector: Some(self.labels.clone()),
                ports: Some(vec![ServicePort {
                    name: Some("agents".into()),
                    port: i32::from(self.port),
                    target_port: Some(IntOrString::Int(i32::from(self.port))),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            status: None,
        }
    }

    /// The name of a running relay pod, if there is one; `Err` with the
    /// cluster's words when the relay pod cannot start because its image
    /// cannot be pulled (the agents' pods, in the same image, will say more).
    async fn running_or_stuck(&self) -> Result<Result<Option<String>, String>, ApiError> {
        let pods = self.pods();
        let lp = ListParams::default().labels(&self.selector());
        let list = api::call(
            &self.policy,
            &Target::new("list", "pods", "", &self.ns),
            &format!("finding the relay pod of {}", self.name),
            || pods.list(&lp),
        )
        .await?;
        let mut stuck = None;
        for p in list.items {
            if p.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let status = p.status.unwrap_or_default();
            if status.phase.as_deref() == Some("Running") {
                return Ok(Ok(p.metadata.name));
            }
            for c in status.container_statuses.unwrap_or_default() {
                if let Some(w) = c.state.and_then(|s| s.waiting)
                    && let Some(reason) = w.reason
                    && matches!(
                        reason.as_str(),
                        "ErrImagePull" | "ImagePullBackOff" | "InvalidImageName"
                    )
                {
                    stuck = Some(format!(
                        "the relay pod cannot start: {reason}: {}",
                        w.message.unwrap_or_default()
                    ));
                }
            }
        }
        Ok(stuck.map_or(Ok(None), Err))
    }

    /// The name of a running relay pod, if there is one.
    async fn running_pod(&self) -> Result<Option<String>, ApiError> {
        Ok(self.running_or_stuck().await?.unwrap_or(None))
    }

    /// Opens one tunnel before agents depend on it, so that a refused
    /// `pods/portforward` is reported now, with the fix.
    async fn check_tunnel(&self) -> Result<(), String> {
        let pod = self.wait_running().await?;
        let shared = self.shared();
        match open(&shared, &pod).await {
            Ok((mux, _)) => {
                mux.close();
                Ok(())
            }
            Err(e) if e.contains("403") => Err(format!(
                "the leader may not open a tunnel to the relay pod ({e}): add `pods/portforward` (verbs get, create) to the leader's Role as deploy/rbac.yaml does, or give --leaderAddress ADDR (an address pods can reach) with --agentConnection direct"
            )),
            Err(e) => Err(format!(
                "the leader cannot open a tunnel to the relay pod: {e}"
            )),
        }
    }

    fn shared(&self) -> Arc<Shared> {
        Arc::new(Shared {
            pods: Api::namespaced(self.streams.clone(), &self.ns),
            token: self.token.clone(),
            tunnel_port: self.tunnel_port,
            name: self.name.clone(),
        })
    }

    /// Waits for a running relay pod.
    async fn wait_running(&self) -> Result<String, String> {
        let found = tokio::time::timeout(START_LIMIT, async {
            loop {
                match self
                    .running_or_stuck()
                    .await
                    .map_err(|e| self.explain(&e))?
                {
                    Ok(Some(p)) => return Ok(p),
                    Ok(None) => {}
                    Err(stuck) => return Err(stuck),
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await;
        found.unwrap_or_else(|_| {
            Err(format!(
                "the relay pod of Job {} did not start within {}s (see `kubectl describe job {}`)",
                self.name,
                START_LIMIT.as_secs(),
                self.name
            ))
        })
    }

    /// Waits for the relay pod and reads its probe line from its log.
    async fn read_probe(&self) -> Result<Probe, String> {
        let pod = self.wait_running().await?;
        let pods = self.pods();
        let lp = LogParams {
            follow: true,
            ..Default::default()
        };
        let mut lines = pods
            .log_stream(&pod, &lp)
            .await
            .map_err(|e| {
                format!(
                    "reading the relay pod {pod}'s log for its probe: {}",
                    api::short(&e)
                )
            })?
            .lines();
        while let Some(line) = lines.next().await {
            let line = line.map_err(|e| format!("reading the relay pod {pod}'s log: {e}"))?;
            if let Some(p) = parse_probe(&line) {
                return Ok(p);
            }
        }
        Err(format!(
            "the relay pod {pod} ended before it reported whether pods can reach the leader (see `kubectl logs {pod}`)"
        ))
    }

    /// Deletes the Job (its pod, Secret and Service go with it) and the
    /// Service by name, for when the tunnel is not needed.
    pub async fn delete(&self) {
        let _ = self
            .jobs()
            .delete(&self.name, &DeleteParams::background())
            .await;
        let _ = self
            .services()
            .delete(&self.name, &DeleteParams::default())
            .await;
    }

    /// Keeps the relay and [`TUNNELS`] tunnels to it until `stop`, handing
    /// every agent stream to `streams`.
    pub async fn run(mut self, streams: mpsc::Sender<TunnelConn>, stop: CancellationToken) {
        let pod: Arc<tokio::sync::watch::Sender<Option<String>>> =
            Arc::new(tokio::sync::watch::channel(None).0);
        let shared = self.shared();
        let mut slots = tokio::task::JoinSet::new();
        for i in 0..TUNNELS {
            slots.spawn(slot(
                i,
                shared.clone(),
                pod.subscribe(),
                streams.clone(),
                stop.clone(),
            ));
        }
        let mut warned = false;
        loop {
            // The keeper: the Job and the Service exist, and which pod runs.
            if let Err(e) = self.ensure().await {
                if !warned {
                    crate::say!("warning: keeping the agents' relay: {}", self.explain(&e));
                    warned = true;
                }
            } else {
                warned = false;
            }
            match self.running_pod().await {
                Ok(p) => {
                    pod.send_if_modified(|cur| {
                        if *cur != p {
                            *cur = p.clone();
                            true
                        } else {
                            false
                        }
                    });
                }
                Err(e) => tracing::warn!("finding the relay pod: {e}"),
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(KEEP_EVERY) => {}
            }
        }
        slots.abort_all();
    }
}

/// What the tunnel slots share.
struct Shared {
    /// Pods through the streams client: only for `pods/portforward`.
    pods: Api<Pod>,
    token: String,
    tunnel_port: u16,
    name: String,
}

/// One tunnel: opened to the current relay pod, reopened when it drops or
/// the pod changes.
async fn slot(
    i: usize,
    s: Arc<Shared>,
    mut pod: tokio::sync::watch::Receiver<Option<String>>,
    streams: mpsc::Sender<TunnelConn>,
    stop: CancellationToken,
) {
    let mut wait = Duration::from_millis(100);
    let mut said_forbidden = false;
    loop {
        let current = pod.borrow_and_update().clone();
        let Some(name) = current else {
            tokio::select! {
                _ = stop.cancelled() => return,
                r = pod.changed() => if r.is_err() { return } else { continue },
            }
        };
        match open(&s, &name).await {
            Ok((mux, mut inbound)) => {
                tracing::debug!(tunnel = i, pod = %name, "tunnel to the relay is up");
                wait = Duration::from_millis(100);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => { mux.close(); return; }
                        r = pod.changed() => {
                            if r.is_err() { mux.close(); return; }
                            if pod.borrow().as_deref() != Some(name.as_str()) {
                                mux.close();
                                break;
                            }
                        }
                        m = inbound.recv() => match m {
                            Some(Inbound::Stream { io, peer }) => {
                                if streams.send(TunnelConn { io, peer }).await.is_err() {
                                    return;
                                }
                            }
                            Some(Inbound::Report(line)) => tracing::info!(tunnel = i, "relay: {line}"),
                            None => break,
                        }
                    }
                }
                tracing::debug!(tunnel = i, pod = %name, "tunnel to the relay closed; reopening");
            }
            Err(e) => {
                if e.contains("403") {
                    if !said_forbidden {
                        crate::say!(
                            "warning: the leader may not open a tunnel to the relay pod {name}: {e}; add `pods/portforward` (verbs get, create) to the leader's Role (deploy/rbac.yaml), or give --leaderAddress ADDR (an address pods can reach) with --agentConnection direct"
                        );
                        said_forbidden = true;
                    }
                } else {
                    tracing::info!(tunnel = i, pod = %name, "opening a tunnel to the relay failed: {e}");
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Opens one port-forward to the relay's tunnel port and runs the handshake.
async fn open(s: &Shared, pod: &str) -> Result<(Mux, mpsc::Receiver<Inbound>), String> {
    let mut pf = s
        .pods
        .portforward(pod, &[s.tunnel_port])
        .await
        .map_err(|e| {
            format!(
                "pods/portforward of {pod} (relay {}): {}",
                s.name,
                api::short(&e)
            )
        })?;
    let mut io = pf
        .take_stream(s.tunnel_port)
        .ok_or_else(|| "the port-forward gave no stream".to_string())?;
    tokio::time::timeout(
        Duration::from_secs(10),
        tunnel::handshake(&mut io, &s.token),
    )
    .await
    .map_err(|_| "the relay did not answer the tunnel handshake".to_string())?
    .map_err(|e| e.to_string())?;
    // The forwarder's task runs on its own; the stream is all we need.
    drop(pf);
    Ok(Mux::start(io))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_lines_are_read() {
        assert_eq!(
            parse_probe("toil-relay probe: reachable https://127.0.0.1:7070"),
            Some(Probe::Reachable)
        );
        assert_eq!(
            parse_probe(
                "toil-relay probe: unreachable https://127.0.0.1:7070: Connection refused (os error 111)"
            ),
            Some(Probe::Unreachable(
                "Connection refused (os error 111)".into()
            ))
        );
        assert_eq!(parse_probe("toil-relay: agents on 10.0.0.5:7070"), None);
    }
}
