//! Removing what the leader made, always by label selector: at shutdown
//! (this leader's Jobs), on `--restart` (the previous epochs' Jobs), and
//! with `toil-leader cleanup-jobs` after a crash.
//!
//! Jobs are deleted with `propagationPolicy: Background`: the API's
//! default for batch/v1 Jobs orphans their pods, which then run on.
//! The agents' token Secrets are owned by their Jobs, so the garbage
//! collector deletes them too; they are also deleted by label, for those
//! whose Job was deleted with `--cascade=orphan` and so that none outlives
//! the leader while the collector catches up.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use kube::Client;
use kube::api::{DeleteParams, ListParams};

use super::api::{self, ApiError, RetryPolicy, Target};
use super::names;

/// A deletecollection answer read for names only: the API server returns
/// every deleted object in full, and thousands of Jobs decoded whole (kube
/// goes through a JSON tree) would be the leader's largest allocation.
#[derive(serde::Deserialize, Default)]
struct Names {
    #[serde(default)]
    items: Vec<Named>,
}

#[derive(serde::Deserialize, Default)]
struct Named {
    #[serde(default)]
    metadata: NameOnly,
}

#[derive(serde::Deserialize, Default)]
struct NameOnly {
    #[serde(default)]
    name: String,
}

/// Deletes the objects of kind `K` matching `selector` in `namespace`;
/// returns their names.
async fn delete_collection<K>(
    client: &Client,
    namespace: &str,
    selector: &str,
    dp: &DeleteParams,
    target: Target,
    what: &str,
) -> Result<Vec<String>, ApiError>
where
    K: kube::Resource<DynamicType = ()>,
{
    let request = kube::core::Request::new(K::url_path(&(), Some(namespace)));
    let lp = ListParams::default().labels(selector);
    let names: Names = api::call(&RetryPolicy::default(), &target, what, || async {
        let req = request
            .delete_collection(dp, &lp)
            .map_err(kube::Error::BuildRequest)?;
        client.request::<Names>(req).await
    })
    .await?;
    Ok(names.items.into_iter().map(|i| i.metadata.name).collect())
}

/// Deletes the Jobs matching `selector` (and so their pods); returns the
/// names of those deleted.
pub async fn delete_jobs(
    client: &Client,
    namespace: &str,
    selector: &str,
) -> Result<Vec<String>, ApiError> {
    delete_collection::<Job>(
        client,
        namespace,
        selector,
        &DeleteParams::background(),
        Target::new("deletecollection", "jobs", "batch", namespace),
        &format!("deleting the Jobs labelled {selector}"),
    )
    .await
}

/// Deletes pods matching `selector` whose Job is already gone (pods
/// orphaned by a `kubectl delete job --cascade=orphan` or an API client
/// that forgot the propagation policy).
pub async fn delete_pods(
    client: &Client,
    namespace: &str,
    selector: &str,
) -> Result<usize, ApiError> {
    delete_collection::<Pod>(
        client,
        namespace,
        selector,
        &DeleteParams::default(),
        Target::new("deletecollection", "pods", "", namespace),
        &format!("deleting the pods labelled {selector}"),
    )
    .await
    .map(|names| names.len())
}

/// Deletes the agents' token Secrets matching `selector`; returns how many.
pub async fn delete_secrets(
    client: &Client,
    namespace: &str,
    selector: &str,
) -> Result<usize, ApiError> {
    delete_collection::<Secret>(
        client,
        namespace,
        selector,
        &DeleteParams::default(),
        Target::new("deletecollection", "secrets", "", namespace),
        &format!("deleting the agents' token Secrets labelled {selector}"),
    )
    .await
    .map(|names| names.len())
}

/// Deletes the relay Services matching `selector` (owned by the relay Job,
/// so the collector removes them too); returns how many.
pub async fn delete_services(
    client: &Client,
    namespace: &str,
    selector: &str,
) -> Result<usize, ApiError> {
    delete_collection::<Service>(
        client,
        namespace,
        selector,
        &DeleteParams::default(),
        Target::new("deletecollection", "services", "", namespace),
        &format!("deleting the relay Services labelled {selector}"),
    )
    .await
    .map(|names| names.len())
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
    let secrets = delete_secrets(&conn.client, &conn.namespace, &selector).await?;
    // Older RBAC without `services` has no relay to clean up either.
    let services = match delete_services(&conn.client, &conn.namespace, &selector).await {
        Ok(n) => n,
        Err(e) if e.code() == Some(403) => 0,
        Err(e) => return Err(e.into()),
    };
    let whose = match workflow {
        Some(w) => format!("owner {owner}, workflow {w}"),
        None => format!("owner {owner}"),
    };
    if deleted.is_empty() && pods == 0 && secrets == 0 && services == 0 {
        println!(
            "no Jobs of {whose} in namespace {} ({})",
            conn.namespace, conn.server
        );
        return Ok(0);
    }
    println!(
        "deleted {} Job(s) of {whose} in namespace {}{}{}{}",
        deleted.len(),
        conn.namespace,
        if pods > 0 {
            format!(", {pods} orphaned pod(s)")
        } else {
            String::new()
        },
        if secrets > 0 {
            format!(", {secrets} token Secret(s)")
        } else {
            String::new()
        },
        if services > 0 {
            format!(", {services} relay Service(s)")
        } else {
            String::new()
        }
    );
    for name in deleted {
        println!("  {name}");
    }
    Ok(0)
}
