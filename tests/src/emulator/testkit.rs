//! Small helpers for tests that drive the emulator through kube-rs: object
//! builders and polling waits with a deadline (so a broken controller fails
//! a test in seconds with the last state seen, instead of hanging).

use std::fmt::Debug;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use serde::de::DeserializeOwned;
use serde_json::json;

/// Polls `api.get(name)` until `pred` holds or `timeout` passes; the error
/// carries the last state seen.
pub async fn wait_for<K>(
    api: &Api<K>,
    name: &str,
    timeout: Duration,
    pred: impl Fn(&K) -> bool,
) -> Result<K, String>
where
    K: kube::Resource + Clone + DeserializeOwned + Debug,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last: String;
    loop {
        match api.get_opt(name).await {
            Ok(Some(obj)) => {
                if pred(&obj) {
                    return Ok(obj);
                }
                last = format!("{obj:?}");
            }
            Ok(None) => last = "not found".into(),
            Err(e) => last = format!("error: {e}"),
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("timed out waiting for {name}; last state: {last}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls until an object is gone.
pub async fn wait_gone<K>(api: &Api<K>, name: &str, timeout: Duration) -> Result<(), String>
where
    K: kube::Resource + Clone + DeserializeOwned + Debug,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match api.get_opt(name).await {
            Ok(None) => return Ok(()),
            Ok(Some(o)) if tokio::time::Instant::now() >= deadline => {
                return Err(format!("{name} still exists: {o:?}"));
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Polls a list until `pred` holds for it.
pub async fn wait_list<K>(
    api: &Api<K>,
    params: &kube::api::ListParams,
    timeout: Duration,
    pred: impl Fn(&[K]) -> bool,
) -> Result<Vec<K>, String>
where
    K: kube::Resource + Clone + DeserializeOwned + Debug,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let items = api
            .list(params)
            .await
            .map(|l| l.items)
            .map_err(|e| e.to_string());
        if let Ok(items) = &items
            && pred(items)
        {
            return Ok(items.clone());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("timed out; last list: {items:?}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A pod running `command` in `image`, restartPolicy Never.
pub fn pod(name: &str, image: &str, command: &[&str]) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 2,
            "containers": [{"name": "main", "image": image, "command": command}],
        },
    }))
    .unwrap_or_default()
}

/// A Job of one pod running `command` in `image`, backoffLimit 0.
pub fn job(name: &str, image: &str, command: &[&str]) -> Job {
    serde_json::from_value(json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {"spec": {
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 2,
                "containers": [{"name": "main", "image": image, "command": command}],
            }},
        },
    }))
    .unwrap_or_default()
}

/// The first container's terminated state of a pod, if any.
pub fn terminated(p: &Pod) -> Option<k8s_openapi::api::core::v1::ContainerStateTerminated> {
    p.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()?
        .state
        .as_ref()?
        .terminated
        .clone()
}

/// The first container's waiting reason of a pod, if any.
pub fn waiting_reason(p: &Pod) -> Option<String> {
    p.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()?
        .state
        .as_ref()?
        .waiting
        .as_ref()?
        .reason
        .clone()
}

/// The phase of a pod.
pub fn phase(p: &Pod) -> String {
    p.status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default()
}

/// A pod condition `(status, reason, message)`.
pub fn pod_condition(p: &Pod, type_: &str) -> Option<(String, Option<String>, Option<String>)> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// A Job condition `(status, reason)`.
pub fn job_condition(j: &Job, type_: &str) -> Option<(String, Option<String>)> {
    j.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone()))
}
