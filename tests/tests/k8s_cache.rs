//! The node cache on Kubernetes: with TOIL_KUBERNETES_HOST_PATH the pods of
//! one node share it (the second pod's input is a hit), pods on different
//! nodes do not, and without a host path every pod starts cold. The counts
//! come back in each attempt's ResourceUsage; `toil-leader status` sums them.

mod k8s_support;

use std::time::Duration;

use k8s_support::{Cluster, config};
use toil_tests::emulator::NodeConfig;

const LIMIT: Duration = Duration::from_secs(120);

fn workflow(chained: bool) -> String {
    let after = if chained { "\n    after: [first]" } else { "" };
    format!(
        r#"
name: share
defaults:
  cores: 1
  memory: 256Mi
  disk: 100Mi
jobs:
  first:
    inputs: [data.bin]
    command: echo "first read $(wc -c < data.bin) bytes on $TOIL_NODE_NAME"
  second:{after}
    inputs: [data.bin]
    command: echo "second read $(wc -c < data.bin) bytes on $TOIL_NODE_NAME"
"#
    )
}

fn cache_line(status: &str) -> &str {
    status
        .lines()
        .find(|l| l.starts_with("attempts:"))
        .unwrap_or_else(|| panic!("no usage line in:\n{status}"))
}

async fn run(c: &Cluster, name: &str, chained: bool, host_path: bool) -> (String, String) {
    std::fs::write(c.dir.path().join("data.bin"), vec![7u8; 1 << 20])
        .unwrap_or_else(|e| panic!("{e}"));
    c.workflow(name, &workflow(chained));
    let mut cmd = c.leader(name, &[]);
    if host_path {
        cmd.env("TOIL_KUBERNETES_HOST_PATH", "/toil-cache");
    }
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let out = tokio::time::timeout(LIMIT, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("too slow"))
        .unwrap_or_else(|e| panic!("{e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{text}");
    (text, c.status(name).await)
}

#[tokio::test]
async fn pods_on_one_node_share_the_cache_through_the_host_path() {
    let c = Cluster::start(config(vec![NodeConfig::new("node-1")])).await;
    let (out, status) = run(&c, "share", true, true).await;
    assert!(out.contains("second read 1048576 bytes on node-1"), "{out}");
    assert!(
        cache_line(&status).contains("cache 1 hits, 1 misses"),
        "{status}"
    );
    // The entry lives in the node's directory, not in a pod's: in the
    // owner's own part of it (the host path is mounted per owner).
    let cache = c
        .emu
        .host_path("node-1", "/toil-cache")
        .join("owner-tester")
        .join("cache");
    assert!(cache.is_dir(), "{}", cache.display());

    // Without a host path each pod has its own emptyDir: both cold.
    let (_, status) = run(&c, "cold", true, false).await;
    assert!(
        cache_line(&status).contains("cache 0 hits, 2 misses"),
        "{status}"
    );
}

#[tokio::test]
async fn pods_on_different_nodes_do_not_share_a_cache() {
    // One core per node and per job: the two jobs land on different nodes.
    let nodes = ["node-a", "node-b"]
        .iter()
        .map(|n| {
            format!("{n}:cpu=1,memory=4Gi")
                .parse::<NodeConfig>()
                .unwrap_or_else(|e| panic!("{e}"))
        })
        .collect();
    let c = Cluster::start(config(nodes)).await;
    let (out, status) = run(&c, "share", false, true).await;
    assert!(out.contains("first read 1048576 bytes on node-"), "{out}");
    let on = |who: &str| {
        out.lines()
            .find(|l| l.contains(&format!("{who} read")))
            .and_then(|l| l.split(" on ").last())
            .map(str::to_string)
    };
    assert_ne!(on("first"), on("second"), "{out}");
    assert!(
        cache_line(&status).contains("cache 0 hits, 2 misses"),
        "{status}"
    );
}
