//! Removing what the leader made, always by label selector: at shutdown
//! (this leader's Jobs), on `--restart` (the previous epochs' Jobs), and
//! with `toil-leader cleanup-jobs` after a crash.
//!
//! Jobs are deleted with `propagationPolicy: Background`: the API's
//! default for batch/v1 Jobs orphans their pods, which then run on.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams};
use kube::{Client, ResourceExt};

use super::api::{self, ApiError, RetryPolicy, Target};
use super::names;

/// Deletes the Jobs matching `selector` (and so their pods); returns the
/// names of those deleted.
pub async fn delete_jobs(
    client: &Client,
    namespace: &str,
    selector: &str,
) -> Result<Vec<String>, ApiError> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    let lp = ListParams::default().labels(selector);
    let dp = DeleteParams::background();
    let target = Target::new("deletecollection", "jobs", "batch", namespace);
    let what = format!("deleting the Jobs labelled {selector}");
    let r = api::call(&RetryPolicy::default(), &target, &what, || {
        jobs.delete_collection(&dp, &lp)
    })
    .await?;
    // Left: the deleted objects; Right: a bare Status (nothing listed).
    Ok(r.left()
        .map(|list| list.items.iter().map(|j| j.name_any()).collect())
        .unwrap_or_default())
}

/// Deletes pods matching `selector` whose Job is already gone (pods
/// orphaned by a `kubectl delete job --cascade=orphan` or an API client
/// that forgot the propagation policy).
pub async fn delete_pods(
    client: &Client,
    namespace: &str,
    selector: &str,
) -> Result<usize, ApiError> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let lp = ListParams::default().labels(selector);
    let dp = DeleteParams::default();
    let target = Target::new("deletecollection", "pods", "", namespace);
    let what = format!("deleting the pods labelled {selector}");
    let r = api::call(&RetryPolicy::default(), &target, &what, || {
        pods.delete_collection(&dp, &lp)
    })
    .await?;
    Ok(r.left().map_or(0, |list| list.items.len()))
}

/// `toil-leader cleanup-jobs`: removes an owner's Jobs (one workflow's,
/// with `workflow`) left behind by a leader that died. Returns the exit code.
pub async fn cleanup_jobs(
    owner: &str,
    workflow: Option<&str>,
    context: Option<&str>,
    namespace: Option<&str>,
) -> anyhow::Result<u8> {
    let conn = api::connect(context, namespace)
        .await
        .map_err(anyhow::Error::msg)?;
    let selector = names::owner_selector(owner, workflow);
    let deleted = delete_jobs(&conn.client, &conn.namespace, &selector).await?;
    let pods = delete_pods(&conn.client, &conn.namespace, &selector).await?;
    let whose = match workflow {
        Some(w) => format!("owner {owner}, workflow {w}"),
        None => format!("owner {owner}"),
    };
    if deleted.is_empty() && pods == 0 {
        println!(
            "no Jobs of {whose} in namespace {} ({})",
            conn.namespace, conn.server
        );
        return Ok(0);
    }
    println!(
        "deleted {} Job(s) of {whose} in namespace {}{}",
        deleted.len(),
        conn.namespace,
        if pods > 0 {
            format!(" and {pods} orphaned pod(s)")
        } else {
            String::new()
        }
    );
    for name in deleted {
        println!("  {name}");
    }
    Ok(0)
}
