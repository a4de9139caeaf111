//! The cluster's nodes, read once at start: what each can hold (so a job
//! larger than every node is refused before anything runs) and what they
//! hold together (so the leader does not queue more pods than fit, which
//! would make waiting pods look unschedulable).

use k8s_openapi::api::core::v1::Node;

use crate::batch::Capacity;
use crate::workflow::Machine;
use crate::workflow::units::{format_cores, format_size, parse_cores, parse_size};

/// What one node offers to pods.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeShape {
    /// The node's name.
    pub name: String,
    /// Allocatable CPU in millicores.
    pub millicores: u64,
    /// Allocatable memory in bytes.
    pub memory: u64,
    /// Allocatable ephemeral storage in bytes, if reported.
    pub disk: Option<u64>,
    /// Allocatable GPUs.
    pub gpus: u32,
    /// Most pods.
    pub pods: u64,
    /// Ready and not cordoned.
    pub schedulable: bool,
}

fn quantity(node: &Node, name: &str) -> Option<String> {
    node.status
        .as_ref()?
        .allocatable
        .as_ref()?
        .get(name)
        .map(|q| q.0.clone())
}

/// Reads a node object (`gpu_resource` names the GPU resource).
pub fn shape(node: &Node, gpu_resource: &str) -> NodeShape {
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let cordoned = node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false);
    NodeShape {
        name: node.metadata.name.clone().unwrap_or_default(),
        millicores: quantity(node, "cpu")
            .and_then(|q| parse_cores(&q).ok())
            .map_or(0, u64::from),
        memory: quantity(node, "memory")
            .and_then(|q| parse_size(&q).ok())
            .unwrap_or(0),
        disk: quantity(node, "ephemeral-storage").and_then(|q| parse_size(&q).ok()),
        gpus: quantity(node, gpu_resource)
            .and_then(|q| q.parse::<u32>().ok())
            .unwrap_or(0),
        pods: quantity(node, "pods")
            .and_then(|q| q.parse::<u64>().ok())
            .unwrap_or(110),
        schedulable: ready && !cordoned,
    }
}

/// The nodes as machines for `workflow::check_fits` (cordoned and
/// not-ready nodes count too: they may come back). A job's pod also holds
/// its agent, so a job can use a node's memory less the agent's share.
pub fn machines(nodes: &[NodeShape]) -> Vec<Machine> {
    nodes
        .iter()
        .map(|n| Machine {
            name: format!(
                "node {} (cpu {}, memory {} of which {} for the agent{}{})",
                n.name,
                format_cores(n.millicores.min(u64::from(u32::MAX)) as u32),
                format_size(n.memory),
                format_size(super::podspec::AGENT_MEMORY),
                n.disk
                    .map(|d| format!(", ephemeral-storage {}", format_size(d)))
                    .unwrap_or_default(),
                if n.gpus > 0 {
                    format!(", {} GPUs", n.gpus)
                } else {
                    String::new()
                }
            ),
            millicores: n.millicores,
            memory: n.memory.saturating_sub(super::podspec::AGENT_MEMORY),
            disk: n.disk,
            gpus: n.gpus,
        })
        .collect()
}

/// What the schedulable nodes hold together, within the user's limits
/// (`--maxCores`, `--maxMemory`, `--maxDisk` as given in `limits`).
pub fn capacity(nodes: &[NodeShape], limits: &Capacity) -> Capacity {
    let up: Vec<&NodeShape> = nodes.iter().filter(|n| n.schedulable).collect();
    let sum = |f: &dyn Fn(&NodeShape) -> u64| up.iter().map(|n| f(n)).sum::<u64>();
    let disk = if up.iter().all(|n| n.disk.is_some()) && !up.is_empty() {
        Some(sum(&|n| n.disk.unwrap_or(0)))
    } else {
        None
    };
    Capacity {
        millicores: sum(&|n| n.millicores).min(limits.millicores),
        memory: sum(&|n| n.memory).min(limits.memory),
        disk: match (disk, limits.disk) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        },
        gpus: (sum(&|n| u64::from(n.gpus)).min(u64::from(u32::MAX)) as u32).min(limits.gpus),
        max_jobs: Some(sum(&|n| n.pods) as usize).map(|m| limits.max_jobs.map_or(m, |l| l.min(m))),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn node(name: &str, cpu: &str, mem: &str, ready: bool, extra: serde_json::Value) -> Node {
        let mut v = json!({
            "metadata": {"name": name},
            "spec": {},
            "status": {
                "allocatable": {"cpu": cpu, "memory": mem, "ephemeral-storage": "50Gi", "pods": "110"},
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "Unknown" }}]
            }
        });
        if let (Some(a), Some(b)) = (v.as_object_mut(), extra.as_object()) {
            for (k, x) in b {
                if k == "gpus" {
                    a["status"]["allocatable"]["nvidia.com/gpu"] = x.clone();
                } else {
                    a[k.as_str()] = x.clone();
                }
            }
        }
        serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn shapes_from_allocatable() {
        let n = shape(
            &node("n1", "3800m", "7982040Ki", true, json!({"gpus": "2"})),
            "nvidia.com/gpu",
        );
        assert_eq!(
            n,
            NodeShape {
                name: "n1".into(),
                millicores: 3800,
                memory: 7982040 * 1024,
                disk: Some(50 << 30),
                gpus: 2,
                pods: 110,
                schedulable: true,
            }
        );
        let cordoned = shape(
            &node(
                "n2",
                "4",
                "8Gi",
                true,
                json!({"spec": {"unschedulable": true}}),
            ),
            "nvidia.com/gpu",
        );
        assert!(!cordoned.schedulable);
        assert_eq!(cordoned.gpus, 0);
        let m = machines(&[n]);
        assert_eq!(
            m[0].name,
            "node n1 (cpu 3.8, memory 7.61 GiB of which 16 MiB for the agent, ephemeral-storage 50 GiB, 2 GPUs)"
        );
        assert_eq!(m[0].memory, 7982040 * 1024 - (16 << 20));
    }

    #[test]
    fn capacity_sums_schedulable_nodes_within_limits() {
        let nodes = vec![
            shape(&node("a", "4", "8Gi", true, json!({})), "g"),
            shape(&node("b", "4", "8Gi", true, json!({})), "g"),
            shape(&node("c", "4", "8Gi", false, json!({})), "g"),
        ];
        let unlimited = Capacity {
            millicores: u64::MAX,
            memory: u64::MAX,
            disk: None,
            gpus: u32::MAX,
            max_jobs: None,
        };
        let c = capacity(&nodes, &unlimited);
        assert_eq!(c.millicores, 8000);
        assert_eq!(c.memory, 16 << 30);
        assert_eq!(c.disk, Some(100 << 30));
        assert_eq!(c.max_jobs, Some(220));
        let capped = capacity(
            &nodes,
            &Capacity {
                millicores: 2000,
                ..unlimited
            },
        );
        assert_eq!(capped.millicores, 2000);
    }
}
