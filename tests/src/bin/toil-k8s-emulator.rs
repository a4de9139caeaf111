//! `toil-k8s-emulator`: runs the Kubernetes API emulator as a standalone
//! server, writes a kubeconfig, and serves until SIGINT/SIGTERM.
//!
//! ```text
//! toil-k8s-emulator --node worker-1:cpu=4,memory=8Gi --node spot-1:cpu=8,memory=16Gi,preemptible \
//!     --image toil-appliance:dev=target/debug --kubeconfig-out /tmp/kc \
//!     --user serviceaccount:toil:toil-leader
//! kubectl --kubeconfig /tmp/kc get pods
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use toil_tests::emulator::{
    Emulator, EmulatorConfig, Identity, ImageConfig, MemoryEnforcement, NodeConfig, PodNetworkMode,
    TaintConfig,
};

/// Kubernetes API emulator: HTTPS apiserver, Job controller, scheduler and
/// kubelets running containers as local processes.
#[derive(Debug, Parser)]
#[command(name = "toil-k8s-emulator", version)]
struct Args {
    /// A node: NAME[:cpu=4,memory=8Gi,ephemeral-storage=50Gi,gpu=0,pods=110,preemptible,label=k=v,taint=k=v:NoSchedule]
    #[arg(
        long = "node",
        env = "TOIL_EMULATOR_NODES",
        value_delimiter = ';',
        default_value = "node-1"
    )]
    nodes: Vec<NodeConfig>,
    /// Plain-HTTP listen address.
    #[arg(long, env = "TOIL_EMULATOR_LISTEN", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// HTTPS listen address (what kubeconfigs and pods use).
    #[arg(
        long,
        env = "TOIL_EMULATOR_HTTPS_LISTEN",
        default_value = "127.0.0.1:0"
    )]
    https_listen: SocketAddr,
    /// State directory (node hostPaths, pod directories, logs); a temporary one if unset.
    #[arg(long, env = "TOIL_EMULATOR_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// A known image, NAME[=DIR]; DIR is put first on the container's PATH.
    #[arg(long = "image", env = "TOIL_EMULATOR_IMAGES", value_delimiter = ';')]
    images: Vec<ImageConfig>,
    /// RBAC manifest to load (repeatable); deploy/rbac.yaml if it exists and none is given.
    #[arg(long = "rbac", env = "TOIL_EMULATOR_RBAC", value_delimiter = ';')]
    rbac: Vec<PathBuf>,
    /// Namespace to create at start (repeatable).
    #[arg(
        long = "namespace",
        env = "TOIL_EMULATOR_NAMESPACES",
        value_delimiter = ';'
    )]
    namespaces: Vec<String>,
    /// Where to write a kubeconfig for --user.
    #[arg(long, env = "TOIL_EMULATOR_KUBECONFIG_OUT")]
    kubeconfig_out: Option<PathBuf>,
    /// Identity of the kubeconfig: admin, user:NAME or serviceaccount:NS:NAME.
    #[arg(long, env = "TOIL_EMULATOR_USER", default_value = "admin")]
    user: Identity,
    /// Extended resource name of GPUs.
    #[arg(
        long,
        env = "TOIL_EMULATOR_GPU_RESOURCE",
        default_value = "nvidia.com/gpu"
    )]
    gpu_resource: String,
    /// Label of preemptible nodes, k=v (repeatable; default cloud.google.com/gke-spot=true).
    #[arg(
        long = "preemptible-label",
        env = "TOIL_EMULATOR_PREEMPTIBLE_LABELS",
        value_delimiter = ';'
    )]
    preemptible_labels: Vec<String>,
    /// Taint of preemptible nodes, k=v:Effect (repeatable; default none).
    #[arg(
        long = "preemptible-taint",
        env = "TOIL_EMULATOR_PREEMPTIBLE_TAINTS",
        value_delimiter = ';'
    )]
    preemptible_taints: Vec<TaintConfig>,
    /// How many changes watches can resume from before 410 Expired.
    #[arg(long, env = "TOIL_EMULATOR_WATCH_HISTORY", default_value_t = 20_000)]
    watch_history: usize,
    /// Memory limit enforcement: auto, cgroup, poll or off.
    #[arg(long, env = "TOIL_EMULATOR_MEMORY", default_value = "auto", value_parser = parse_memory)]
    memory: MemoryEnforcement,
    /// Host environment variables passed into every container (repeatable).
    #[arg(
        long = "pass-env",
        env = "TOIL_EMULATOR_PASS_ENV",
        value_delimiter = ';'
    )]
    pass_env: Vec<String>,
    /// Pod network: host (pods share the host's network) or isolated (one
    /// network namespace for all pods, loopback only: the host's 127.0.0.1
    /// is unreachable from pods, which reach the API at 127.96.0.1:443).
    #[arg(long, env = "TOIL_EMULATOR_POD_NETWORK", default_value = "host")]
    pod_network: PodNetworkMode,
}

fn parse_memory(s: &str) -> Result<MemoryEnforcement, String> {
    match s {
        "auto" => Ok(MemoryEnforcement::Auto),
        "cgroup" => Ok(MemoryEnforcement::Cgroup),
        "poll" => Ok(MemoryEnforcement::Poll),
        "off" => Ok(MemoryEnforcement::Off),
        other => Err(format!("unknown memory enforcement {other:?}")),
    }
}

fn config(args: Args) -> anyhow::Result<(EmulatorConfig, Option<PathBuf>, Identity)> {
    let mut cfg = EmulatorConfig::default().with_nodes(args.nodes);
    cfg.http_listen = args.listen;
    cfg.https_listen = args.https_listen;
    cfg.state_dir = args.state_dir;
    cfg.images = args.images;
    cfg.rbac_files = if args.rbac.is_empty() {
        let default = PathBuf::from("deploy/rbac.yaml");
        if default.exists() {
            vec![default]
        } else {
            vec![]
        }
    } else {
        args.rbac
    };
    cfg.namespaces = args.namespaces;
    cfg.gpu_resource = args.gpu_resource;
    if !args.preemptible_labels.is_empty() {
        cfg.preemptible_labels.clear();
        for l in args.preemptible_labels {
            let (k, v) = l
                .split_once('=')
                .with_context(|| format!("--preemptible-label {l:?} must be k=v"))?;
            cfg.preemptible_labels.insert(k.into(), v.into());
        }
    }
    cfg.preemptible_taints = args.preemptible_taints;
    cfg.watch_history = args.watch_history;
    cfg.memory_enforcement = args.memory;
    cfg.passthrough_env = args.pass_env;
    cfg.pod_network = args.pod_network;
    cfg.validate().map_err(anyhow::Error::msg)?;
    Ok((cfg, args.kubeconfig_out, args.user))
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let (cfg, kubeconfig_out, user) = match config(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("toil-k8s-emulator: {e:#}");
            std::process::exit(64);
        }
    };
    let emu = Emulator::start(cfg).context("cannot start the emulator")?;
    let kubeconfig = match kubeconfig_out {
        Some(path) => {
            std::fs::write(
                &path,
                emu.kubeconfig_yaml(
                    &user,
                    &toil_tests::emulator::kubeconfig::default_namespace(&user),
                ),
            )
            .with_context(|| format!("cannot write {}", path.display()))?;
            path
        }
        None => emu.kubeconfig_for(&user)?,
    };
    println!(
        "toil-k8s-emulator listening on {} (plain HTTP {})",
        emu.url(),
        emu.http_url()
    );
    if let Some(api) = emu.pod_network().in_cluster_api() {
        println!("pod network: isolated; pods reach the API at https://{api}");
    }
    println!("kubeconfig: {}", kubeconfig.display());
    println!("admin token: {}", emu.admin_token());
    println!("state dir: {}", emu.state_dir().display());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        anyhow::Ok(())
    })?;
    eprintln!("toil-k8s-emulator: shutting down");
    emu.shutdown();
    Ok(())
}
