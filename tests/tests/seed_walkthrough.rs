//! The seed's "Option 1: Running the Leader Inside Kubernetes" and its
//! "Monitoring and Debugging" and "When Things Go Wrong" steps, done as a
//! user does them: with the real kubectl against the emulator, from the
//! shipped `deploy/rbac.yaml` and `deploy/leader-job.yaml`.
//!
//! The manifests are changed only where their comments tell users to change
//! them (the owner); the emulator maps the manifest's image to the
//! release binaries, and the leader's port is picked at random because
//! emulated pods share this machine's network.
//!
//! A second test covers `kubectl apply` itself: validation on (the server's
//! `fieldValidation=Strict`), a second apply after an edit patches, the
//! unknown-field error, server-side apply, and the seed's cleanup pipeline.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use toil_tests::emulator::{Emulator, EmulatorConfig, Identity, NodeConfig};
use toil_tests::harness::{bin_dir, repo_root, scratch};
use toil_tests::kubectl::Kubectl;
use toil_tests::wait::{wait_for, when};

/// The namespace of the shipped manifests (the seed's YOUR_NAMESPACE_HERE).
const NS: &str = "toil";
/// The seed's TOIL_KUBERNETES_OWNER, as a user would put their own name.
const OWNER: &str = "walker";

/// Two jobs that keep working until they are stopped: the leader dies
/// while they run, which is what leaves dangling Jobs behind.
const WORKFLOW: &str = r#"
name: walkthrough
defaults:
  cores: 0.1
  memory: 256Mi
  disk: 100Mi
jobs:
  align:
    command: |
      echo "aligning in $TOIL_POD_NAME"
      sleep 600
  call:
    command: |
      echo "calling in $TOIL_POD_NAME"
      sleep 600
"#;

fn manifest_image() -> String {
    let manifest = std::fs::read_to_string(repo_root().join("deploy/leader-job.yaml"))
        .unwrap_or_else(|e| panic!("{e}"));
    manifest
        .lines()
        .find_map(|l| l.trim().strip_prefix("image: "))
        .unwrap_or_else(|| panic!("no image in deploy/leader-job.yaml"))
        .to_string()
}

/// An emulator with no RBAC loaded (kubectl applies it), the namespace of
/// the manifests, and kubectl as the cluster's administrator with that
/// namespace as its context's (as after `kubectl config set-context
/// --current --namespace toil`).
fn start(dir: &Path) -> (Emulator, Kubectl) {
    let cfg = EmulatorConfig::default()
        .with_nodes(vec![NodeConfig::new("node-1"), NodeConfig::new("node-2")])
        .with_image(&manifest_image(), Some(bin_dir()))
        .with_namespace(NS);
    let emu = Emulator::start(cfg).unwrap_or_else(|e| panic!("emulator: {e}"));
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, emu.kubeconfig_yaml(&Identity::Admin, NS))
        .unwrap_or_else(|e| panic!("{e}"));
    (emu, Kubectl::new(&kubeconfig))
}

/// Lines of a running command's stdout, as they come.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let out = child
        .stdout
        .take()
        .unwrap_or_else(|| panic!("no stdout to follow"));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Reads followed lines until one contains `want`; returns all read.
fn follow_until(rx: &mpsc::Receiver<String>, seen: &mut Vec<String>, want: &str) {
    wait_for(
        &format!("`kubectl logs -f` to show {want:?}"),
        Duration::from_secs(120),
        || {
            while let Ok(line) = rx.try_recv() {
                seen.push(line);
            }
            when(seen.iter().any(|l| l.contains(want)), seen.join("\n"))
        },
    );
}

/// The first column of `kubectl get ... | grep PATTERN`, as the seed finds
/// pod names.
fn names_grepped(k: &Kubectl, what: &str, pattern: &str) -> Vec<String> {
    let r = k.shell(&format!("kubectl get {what} | grep {pattern} || true"));
    assert!(r.ok, "kubectl get {what}: {}", r.stderr);
    r.stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// The columns NAME and STATUS of `kubectl get pods`.
fn pod_statuses(k: &Kubectl) -> Vec<(String, String)> {
    k.run(&["get", "pods", "--no-headers"])
        .stdout
        .lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            Some((cols.first()?.to_string(), cols.get(2)?.to_string()))
        })
        .collect()
}

#[test]
fn the_seeds_leader_inside_kubernetes_walkthrough() {
    let dir = scratch("seed-walk-");
    let (emu, k) = start(dir.path());

    // Setting up: the RBAC, the workflow and the AWS credentials secret.
    let out = k
        .run(&[
            "apply",
            "-f",
            &repo_root().join("deploy/rbac.yaml").to_string_lossy(),
        ])
        .expect_ok("kubectl apply -f deploy/rbac.yaml");
    for want in [
        "serviceaccount/toil-leader created",
        "role.rbac.authorization.k8s.io/toil-leader created",
        "rolebinding.rbac.authorization.k8s.io/toil-leader created",
    ] {
        assert!(out.contains(want), "{want:?} missing from:\n{out}");
    }
    let workflow = dir.path().join("workflow.yaml");
    std::fs::write(&workflow, WORKFLOW).unwrap_or_else(|e| panic!("{e}"));
    k.run(&[
        "create",
        "configmap",
        "toil-workflow",
        &format!("--from-file=workflow.yaml={}", workflow.display()),
    ])
    .expect_ok("kubectl create configmap");
    let aws = dir.path().join(".aws");
    std::fs::create_dir_all(&aws).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        aws.join("credentials"),
        "[default]\naws_access_key_id = AKIAEXAMPLE\naws_secret_access_key = example\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // The seed: `cd ~/.aws; kubectl create secret generic aws-credentials --from-file credentials`.
    k.shell(&format!(
        "cd '{}' && kubectl create secret generic aws-credentials --from-file credentials",
        aws.display()
    ))
    .expect_ok("kubectl create secret generic aws-credentials");

    // `kubectl apply -f leader.yaml`, validation on.
    let manifest = std::fs::read_to_string(repo_root().join("deploy/leader-job.yaml"))
        .unwrap_or_else(|e| panic!("{e}"))
        .replace("demo-user", OWNER)
        .replace("0.0.0.0:7070", "0.0.0.0:0");
    let leader_yaml = dir.path().join("leader.yaml");
    std::fs::write(&leader_yaml, manifest).unwrap_or_else(|e| panic!("{e}"));
    let out = k
        .run(&["apply", "-f", &leader_yaml.to_string_lossy()])
        .expect_ok("kubectl apply -f leader.yaml");
    let job = format!("toil-leader-{OWNER}");
    assert!(out.contains(&format!("job.batch/{job} created")), "{out}");
    assert!(
        out.contains("persistentvolumeclaim/toil-jobstore created"),
        "{out}"
    );

    // `kubectl get pods | grep demo-user-toil-test`: the leader's pod.
    let leader_pod = wait_for("the leader's pod", Duration::from_secs(60), || {
        let names = names_grepped(&k, "pods", &job);
        names.first().cloned().ok_or(names)
    });
    wait_for("the leader running", Duration::from_secs(60), || {
        let st = pod_statuses(&k);
        when(st.contains(&(leader_pod.clone(), "Running".into())), st)
    });

    // `kubectl logs -f POD`: the leader's log, followed while it works.
    let mut follow = k
        .command()
        .args(["logs", "-f", &leader_pod])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("kubectl logs -f: {e}"));
    let rx = lines_of(&mut follow);
    let mut log = Vec::new();
    follow_until(&rx, &mut log, "[align] aligning in");
    follow_until(&rx, &mut log, "[call] calling in");

    // `kubectl get pods | grep demo-user`: the workflow's pods by owner.
    let agents: Vec<String> = wait_for("the agents' pods running", Duration::from_secs(60), || {
        let st = pod_statuses(&k);
        let running: Vec<String> = names_grepped(&k, "pods", OWNER)
            .into_iter()
            .filter(|n| *n != leader_pod)
            .filter(|n| st.contains(&(n.clone(), "Running".into())))
            .collect();
        if running.len() >= 2 {
            Ok(running)
        } else {
            Err(st)
        }
    });
    let by_label = k
        .run(&[
            "get",
            "pods",
            "-l",
            &format!("toil.io/owner={OWNER}"),
            "-o",
            "name",
        ])
        .expect_ok("kubectl get pods -l toil.io/owner=...");
    for a in &agents {
        assert!(
            by_label.contains(&format!("pod/{a}")),
            "{a} not labelled:\n{by_label}"
        );
    }

    // `kubectl describe pod POD`, with its events at the end.
    let agent = &agents[0];
    let out = k
        .run(&["describe", "pod", agent])
        .expect_ok("kubectl describe pod");
    for want in [
        "Status:           Running",
        &format!("toil.io/owner={OWNER}"),
        "Controlled By:  Job/toil-",
        "Events:",
        "Started container",
    ] {
        assert!(out.contains(want), "describe lacks {want:?}:\n{out}");
    }

    // `kubectl exec -ti POD /bin/bash`, here a command instead of a shell
    // session (no terminal in a test); it runs in the container, with the
    // container's environment (TOIL_POD_NAME from the downward API).
    let out = k
        .run(&[
            "exec",
            agent,
            "--",
            "sh",
            "-c",
            "echo inside $TOIL_POD_NAME",
        ])
        .expect_ok("kubectl exec");
    assert_eq!(out, format!("inside {agent}\n"));

    // The leader "suffers a sudden existence failure": its pod is killed.
    k.run(&["delete", "pod", &leader_pod, "--grace-period=0", "--force"])
        .expect_ok("kubectl delete pod --force");
    // The followed log ends with the pod.
    let status = wait_for(
        "`kubectl logs -f` to end",
        Duration::from_secs(60),
        || match follow.try_wait() {
            Ok(Some(s)) => Ok(s),
            other => Err(format!("{other:?}")),
        },
    );
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(5)) {
        log.push(line);
    }
    let _ = status;
    // The leader Job failed (backoffLimit 0: not re-run); the agents' Jobs dangle.
    wait_for("the leader Job failed", Duration::from_secs(60), || {
        let out = k.run(&["get", "job", &job]).stdout;
        when(out.contains("Failed"), out)
    });
    let dangling = names_grepped(&k, "jobs", OWNER);
    assert!(
        dangling.iter().filter(|j| **j != job).count() >= 2,
        "the agents' Jobs should outlive the leader: {dangling:?}\n{}",
        log.join("\n")
    );

    // The seed's cleanup snippet, verbatim but for the owner.
    let r = k.shell(&format!(
        "kubectl get jobs | grep {OWNER} | cut -f1 -d' ' | xargs -n10 kubectl delete job"
    ));
    assert!(r.ok, "cleanup pipeline: {}{}", r.stdout, r.stderr);
    for j in &dangling {
        assert!(
            r.stdout.contains(&format!("job.batch \"{j}\" deleted")),
            "{j} not deleted:\n{}",
            r.stdout
        );
    }

    // Nothing of the workflow is left: no Job, no pod, no process.
    wait_for("the workflow's pods gone", Duration::from_secs(90), || {
        let left = names_grepped(&k, "pods,jobs", OWNER);
        when(left.is_empty(), left)
    });
    let r = k.run(&["get", "jobs,pods", "-l", &format!("toil.io/owner={OWNER}")]);
    assert!(r.ok && r.stdout.is_empty(), "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("No resources found"), "{}", r.stderr);
    wait_for("no container running", Duration::from_secs(30), || {
        let n = emu.running_containers();
        when(n == 0, n)
    });
    emu.shutdown();
}

#[test]
fn kubectl_apply_validates_on_the_server_and_patches_on_the_second_apply() {
    let dir = scratch("seed-apply-");
    let (emu, k) = start(dir.path());
    let rbac = repo_root().join("deploy/rbac.yaml");
    let rbac = rbac.to_string_lossy();

    let out = k.run(&["apply", "-f", &rbac]).expect_ok("first apply");
    assert!(
        out.contains("role.rbac.authorization.k8s.io/toil-leader created"),
        "{out}"
    );
    let out = k.run(&["apply", "-f", &rbac]).expect_ok("second apply");
    assert!(
        out.contains("role.rbac.authorization.k8s.io/toil-leader unchanged"),
        "{out}"
    );

    // A Job, applied, then edited (a label) and re-applied: patched.
    let job = |label: &str, value: &str, extra: &str| {
        format!(
            "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {OWNER}-edit\n  labels:\n    stage: {label}\nspec:\n  backoffLimit: 0\n{extra}  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - name: main\n        image: {image}\n        command: [sh, -c, 'echo $GREETING; sleep 600']\n        env:\n        - name: GREETING\n          value: {value}\n        - name: KEEP\n          value: kept\n",
            image = manifest_image(),
        )
    };
    let file = dir.path().join("job.yaml");
    let file_s = file.to_string_lossy().into_owned();
    std::fs::write(&file, job("one", "hello", "")).unwrap_or_else(|e| panic!("{e}"));
    let out = k.run(&["apply", "-f", &file_s]).expect_ok("apply a Job");
    assert!(
        out.contains(&format!("job.batch/{OWNER}-edit created")),
        "{out}"
    );
    std::fs::write(&file, job("two", "hello", "")).unwrap_or_else(|e| panic!("{e}"));
    let out = k
        .run(&["apply", "-f", &file_s])
        .expect_ok("apply the edited Job");
    assert!(
        out.contains(&format!("job.batch/{OWNER}-edit configured")),
        "{out}"
    );
    let get_job = || {
        k.run(&[
            "get",
            "job",
            &format!("{OWNER}-edit"),
            "-o",
            "jsonpath={.metadata.labels.stage} {.spec.template.spec.containers[0].env[*].value}",
        ])
        .expect_ok("get the patched Job")
    };
    assert_eq!(get_job(), "two hello kept");
    let out = k.run(&["apply", "-f", &file_s]).expect_ok("apply it again");
    assert!(
        out.contains(&format!("job.batch/{OWNER}-edit unchanged")),
        "{out}"
    );
    // A Job's pod template is immutable, as on a real cluster.
    std::fs::write(&file, job("two", "bonjour", "")).unwrap_or_else(|e| panic!("{e}"));
    let r = k.run(&["apply", "-f", &file_s]);
    assert!(
        !r.ok && r.stderr.contains("field is immutable"),
        "{}{}",
        r.stdout,
        r.stderr
    );
    assert_eq!(get_job(), "two hello kept");

    // A Service's ports merge by port: one edited, one removed
    // ($setElementOrder and $patch: delete in kubectl's patch).
    let svc = dir.path().join("svc.yaml");
    let svc_s = svc.to_string_lossy().into_owned();
    let service = |ports: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {OWNER}-svc\nspec:\n  selector:\n    app: x\n  ports:\n{ports}"
        )
    };
    std::fs::write(
        &svc,
        service("  - {name: a, port: 80, targetPort: 8080}\n  - {name: b, port: 81}\n"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    k.run(&["apply", "-f", &svc_s]).expect_ok("apply a Service");
    std::fs::write(&svc, service("  - {name: a, port: 80, targetPort: 9090}\n"))
        .unwrap_or_else(|e| panic!("{e}"));
    let out = k
        .run(&["apply", "-f", &svc_s])
        .expect_ok("apply the edited Service");
    assert!(
        out.contains(&format!("service/{OWNER}-svc configured")),
        "{out}"
    );
    let ports = k
        .run(&[
            "get",
            "service",
            &format!("{OWNER}-svc"),
            "-o",
            "jsonpath={.spec.ports[*].port}:{.spec.ports[*].targetPort}",
        ])
        .expect_ok("get the Service");
    assert_eq!(ports, "80:9090");

    // An unknown field: refused by the server with its own words, since
    // kubectl leaves validation to it (fieldValidation=Strict).
    std::fs::write(&file, job("two", "hello", "  bogusField: 1\n"))
        .unwrap_or_else(|e| panic!("{e}"));
    let r = k.run(&["apply", "-f", &file_s]);
    assert!(!r.ok, "{}", r.stdout);
    assert!(
        r.stderr
            .contains("strict decoding error: unknown field \"spec.bogusField\""),
        "{}",
        r.stderr
    );
    // --validate=warn: accepted, with the server's warning.
    let r = k.run(&["apply", "--validate=warn", "-f", &file_s]);
    assert!(r.ok, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("Warning: unknown field \"spec.bogusField\""),
        "{}",
        r.stderr
    );

    // Server-side apply creates and then updates.
    let cm = dir.path().join("cm.yaml");
    let cm_s = cm.to_string_lossy().into_owned();
    std::fs::write(
        &cm,
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {OWNER}-ssa\ndata:\n  a: \"1\"\n"
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let out = k
        .run(&["apply", "--server-side", "-f", &cm_s])
        .expect_ok("kubectl apply --server-side");
    assert!(
        out.contains(&format!("configmap/{OWNER}-ssa serverside-applied")),
        "{out}"
    );
    std::fs::write(
        &cm,
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {OWNER}-ssa\ndata:\n  a: \"2\"\n"
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    k.run(&["apply", "--server-side", "-f", &cm_s])
        .expect_ok("second kubectl apply --server-side");
    let got = k
        .run(&[
            "get",
            "configmap",
            &format!("{OWNER}-ssa"),
            "-o",
            "jsonpath={.data.a}",
        ])
        .expect_ok("get the configmap");
    assert_eq!(got, "2");

    // `kubectl diff` previews with a dry-run PATCH, which stores nothing.
    std::fs::write(
        &cm,
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {OWNER}-ssa\ndata:\n  a: \"3\"\n"
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let r = k.run(&["diff", "-f", &cm_s]);
    assert!(
        !r.ok && r.stdout.contains("+  a: \"3\""),
        "{}{}",
        r.stdout,
        r.stderr
    );
    let r = k.run(&["delete", "-f", &cm_s, "--dry-run=server"]);
    assert!(
        r.ok && r.stdout.contains("(server dry run)"),
        "{}{}",
        r.stdout,
        r.stderr
    );
    let got = k
        .run(&[
            "get",
            "configmap",
            &format!("{OWNER}-ssa"),
            "-o",
            "jsonpath={.data.a}",
        ])
        .expect_ok("get the configmap after dry runs");
    assert_eq!(got, "2");

    // `kubectl explain` reads the same OpenAPI documents.
    let out = k
        .run(&["explain", "job.spec.template.spec.containers.env"])
        .expect_ok("kubectl explain");
    assert!(out.contains("FIELD: env <[]EnvVar>"), "{out}");

    // The seed's cleanup pipeline, with more Jobs than one xargs batch.
    let job_doc = |name: &str, command: &str| {
        format!(
            "---\napiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {name}\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - name: main\n        image: {image}\n        command: [sh, -c, '{command}']\n",
            image = manifest_image(),
        )
    };
    let mut many: String = (0..12)
        .map(|i| job_doc(&format!("{OWNER}-extra-{i}"), "sleep 600"))
        .collect();
    many.push_str(&job_doc("someone-else", "true"));
    let many_file = dir.path().join("many.yaml");
    std::fs::write(&many_file, many).unwrap_or_else(|e| panic!("{e}"));
    k.run(&["apply", "-f", &many_file.to_string_lossy()])
        .expect_ok("apply 13 Jobs");
    let r = k.shell(&format!(
        "kubectl get jobs | grep {OWNER} | cut -f1 -d' ' | xargs -n10 kubectl delete job"
    ));
    assert!(r.ok, "{}{}", r.stdout, r.stderr);
    assert_eq!(r.stdout.matches(" deleted").count(), 13, "{}", r.stdout);
    let left = names_grepped(&k, "jobs", "-v NAME");
    assert_eq!(left, vec!["someone-else".to_string()]);
    wait_for(
        "the deleted Jobs' pods gone",
        Duration::from_secs(90),
        || {
            let left = names_grepped(&k, "pods", OWNER);
            when(left.is_empty(), left)
        },
    );
    emu.shutdown();
}
