//! The objects a fresh cluster starts with: namespaces, nodes, built-in
//! ClusterRoles, and the manifests (RBAC) given in the configuration.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::{
    Node, NodeAddress, NodeCondition, NodeSpec, NodeStatus, NodeSystemInfo, Taint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as KQuantity;
use serde_json::{Value, json};

use crate::emulator::cluster::Cluster;
use crate::emulator::config::NodeConfig;
use crate::emulator::disruption::condition;
use crate::emulator::error::EmulatorError;
use crate::emulator::rbac;
use crate::emulator::resources;

/// The conditions of a healthy (or unknown) node.
pub fn node_conditions(ready: bool) -> Vec<NodeCondition> {
    vec![
        condition(
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
        ),
        condition(
            "DiskPressure",
            "False",
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure",
        ),
        condition(
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
        ),
        if ready {
            condition(
                "Ready",
                "True",
                "KubeletReady",
                "kubelet is posting ready status",
            )
        } else {
            condition(
                "Ready",
                "Unknown",
                "NodeStatusUnknown",
                "Kubelet stopped posting node status.",
            )
        },
    ]
}

/// The Node object of an emulated node.
pub fn node_object(cluster: &Cluster, n: &NodeConfig) -> Node {
    let cfg = &cluster.config;
    let mut labels = BTreeMap::from([
        ("kubernetes.io/hostname".to_string(), n.name.clone()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        ("kubernetes.io/arch".to_string(), "amd64".to_string()),
        ("beta.kubernetes.io/os".to_string(), "linux".to_string()),
        ("beta.kubernetes.io/arch".to_string(), "amd64".to_string()),
    ]);
    let mut taints: Vec<Taint> = Vec::new();
    if n.preemptible {
        labels.extend(cfg.preemptible_labels.clone());
        taints.extend(cfg.preemptible_taints.iter().map(|t| Taint {
            key: t.key.clone(),
            value: Some(t.value.clone()).filter(|v| !v.is_empty()),
            effect: t.effect.clone(),
            time_added: None,
        }));
    }
    labels.extend(n.labels.clone());
    taints.extend(n.taints.iter().map(|t| Taint {
        key: t.key.clone(),
        value: Some(t.value.clone()).filter(|v| !v.is_empty()),
        effect: t.effect.clone(),
        time_added: None,
    }));
    let mut capacity = BTreeMap::from([
        ("cpu".to_string(), KQuantity(n.cpu.to_string())),
        ("memory".to_string(), KQuantity(n.memory.to_string())),
        (
            "ephemeral-storage".to_string(),
            KQuantity(n.ephemeral_storage.to_string()),
        ),
        ("pods".to_string(), KQuantity(n.max_pods.to_string())),
    ]);
    if n.gpus > 0 {
        capacity.insert(cfg.gpu_resource.clone(), KQuantity(n.gpus.to_string()));
    }
    Node {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(n.name.clone()),
            labels: Some(labels),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            taints: Some(taints).filter(|t| !t.is_empty()),
            ..Default::default()
        }),
        status: Some(NodeStatus {
            allocatable: Some(capacity.clone()),
            capacity: Some(capacity),
            conditions: Some(node_conditions(true)),
            addresses: Some(vec![
                NodeAddress {
                    type_: "InternalIP".into(),
                    address: "127.0.0.1".into(),
                },
                NodeAddress {
                    type_: "Hostname".into(),
                    address: n.name.clone(),
                },
            ]),
            node_info: Some(NodeSystemInfo {
                architecture: "amd64".into(),
                boot_id: uuid::Uuid::new_v4().to_string(),
                container_runtime_version: "containerd://1.7.0-toil-emulator".into(),
                kernel_version: "6.1.0".into(),
                kube_proxy_version: String::new(),
                kubelet_version: "v1.34.0".into(),
                machine_id: n.name.clone(),
                operating_system: "linux".into(),
                os_image: "toil-k8s-emulator".into(),
                system_uuid: uuid::Uuid::new_v4().to_string(),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// Creates one object from a manifest (namespaces created on demand).
fn create_manifest_object(cluster: &Cluster, doc: Value, path: &Path) -> Result<(), EmulatorError> {
    let api_version = doc["apiVersion"].as_str().unwrap_or_default();
    let kind = doc["kind"].as_str().unwrap_or_default();
    let r = resources::find_kind(api_version, kind).ok_or_else(|| EmulatorError::Manifest {
        path: path.display().to_string(),
        why: format!("kind {kind} in {api_version} is not served by the emulator"),
    })?;
    let ns = doc
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default")
        .to_string();
    if r.namespaced
        && cluster
            .get(resources::core("namespaces"), "", &ns)
            .is_none()
    {
        cluster.create(
            resources::core("namespaces"),
            "",
            json!({"metadata": {"name": ns}}),
        )?;
    }
    match cluster.create(r, &ns, doc) {
        Ok(_) => Ok(()),
        // The same manifest given twice, or a namespace created just above.
        Err(e) if e.code == 409 => Ok(()),
        Err(e) => Err(EmulatorError::Manifest {
            path: path.display().to_string(),
            why: e.message,
        }),
    }
}

/// Loads every document of a YAML manifest file.
pub fn load_manifest(cluster: &Cluster, path: &Path) -> Result<(), EmulatorError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| EmulatorError::io(format!("cannot read {}", path.display()), e))?;
    let docs = super::yaml::documents(&text).map_err(|why| EmulatorError::Manifest {
        path: path.display().to_string(),
        why,
    })?;
    for v in docs {
        if v.is_null() {
            continue;
        }
        create_manifest_object(cluster, v, path)?;
    }
    Ok(())
}

/// Fills a fresh cluster.
pub fn bootstrap(cluster: &Cluster) -> Result<(), EmulatorError> {
    let mut namespaces = vec![
        "default".to_string(),
        "kube-system".to_string(),
        "kube-public".to_string(),
    ];
    namespaces.extend(cluster.config.namespaces.iter().cloned());
    for ns in namespaces {
        match cluster.create(
            resources::core("namespaces"),
            "",
            json!({"metadata": {"name": ns}}),
        ) {
            Ok(_) => {}
            Err(e) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    for role in rbac::builtin_cluster_roles() {
        cluster.create(resources::core("clusterroles"), "", role)?;
    }
    for n in &cluster.config.nodes {
        let node = serde_json::to_value(node_object(cluster, n))
            .map_err(|e| EmulatorError::Config(e.to_string()))?;
        cluster.create(resources::core("nodes"), "", node)?;
        let host = cluster.state_dir.join("nodes").join(&n.name).join("host");
        std::fs::create_dir_all(&host)
            .map_err(|e| EmulatorError::io(format!("cannot create {}", host.display()), e))?;
    }
    for f in &cluster.config.rbac_files {
        load_manifest(cluster, f)?;
    }
    Ok(())
}
