//! The request pipeline and the verbs on resources.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::{Value, json};

use super::request::{self, ResourceRequest, Target, flag};
use super::{Body, admin, error_response, json_response, logs, table, watch};
use crate::emulator::cluster::Cluster;
use crate::emulator::config::Identity;
use crate::emulator::crud::DeleteOpts;
use crate::emulator::error::ApiError;
use crate::emulator::fieldvalidation;
use crate::emulator::patch::{self, PatchKind};
use crate::emulator::protobuf;
use crate::emulator::rbac::{self, Attributes};
use crate::emulator::resources::{self, ResourceType};
use crate::emulator::selector::{FieldSelector, LabelSelector};
use crate::emulator::store::key_of;
use crate::emulator::yaml;

/// Largest request body accepted (the apiserver's limit is 3 MiB for most
/// objects; a little slack for big manifests).
const MAX_BODY: usize = 8 << 20;

/// Reads the whole request body.
pub async fn read_body(body: Incoming) -> Result<Bytes, ApiError> {
    let collected = http_body_util::Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
    Ok(collected.to_bytes())
}

/// Parses a JSON (or YAML) request body into a value.
fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    serde_json::from_slice(body)
        .map_err(|e| e.to_string())
        .or_else(|_| yaml::from_slice(body))
        .map_err(|e| {
            ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
        })
}

/// Parses a create or update body: JSON or YAML, or the protobuf kubectl's
/// typed commands send (for the kinds [`protobuf`] decodes; 415 otherwise).
fn parse_object(content_type: &str, body: &[u8]) -> Result<Value, ApiError> {
    if !content_type.starts_with("application/vnd.kubernetes.protobuf") {
        return parse_json(body);
    }
    protobuf::decode(body).map_err(|why| {
        let mut e = ApiError::bad_request(why);
        e.code = 415;
        e.reason = "UnsupportedMediaType";
        e
    })
}

fn bearer(req: &Request<Incoming>) -> Option<String> {
    let h = req.headers().get("authorization")?.to_str().ok()?;
    let (scheme, token) = h.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

/// Entry point for every request.
pub async fn handle(cluster: Arc<Cluster>, req: Request<Incoming>) -> Response<Body> {
    match handle_inner(cluster, req).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    }
}

async fn handle_inner(
    cluster: Arc<Cluster>,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let path = req.uri().path().to_string();
    let query = request::parse_query(req.uri().query());
    tracing::debug!(
        method = %req.method(),
        uri = %req.uri(),
        content_type = ?req.headers().get("content-type"),
        accept = ?req.headers().get("accept"),
        "request"
    );
    let identity = bearer(&req).and_then(|t| cluster.identity_for_token(&t));
    if path.starts_with("/emulator/") {
        if identity != Some(Identity::Admin) {
            return Err(ApiError::unauthorized());
        }
        let method = req.method().clone();
        let body = read_body(req.into_body()).await?;
        return admin::handle(&cluster, &method, &path, &query, &body).await;
    }
    let public = matches!(
        path.as_str(),
        "/version" | "/healthz" | "/livez" | "/readyz"
    );
    let identity = match identity {
        Some(i) => i,
        None if public => Identity::User("system:anonymous".into()),
        None => return Err(ApiError::unauthorized()),
    };
    let target = request::parse(req.method(), &path, &query)?;
    match target {
        Target::NonResource(p) => {
            let verb = req.method().as_str().to_ascii_lowercase();
            if let Some(err) = crate::emulator::cluster::lock(&cluster.faults).on_request(&verb, &p)
            {
                return Err(err);
            }
            if !rbac::authorize_path(&cluster.store(), &identity, &verb, &p) {
                return Err(ApiError::forbidden_path(&identity.user_name(), &verb, &p));
            }
            non_resource(&p)
        }
        Target::Resource(rr) => {
            if let Some(err) = crate::emulator::cluster::lock(&cluster.faults)
                .on_request(rr.verb, &rr.resource_key())
            {
                return Err(err);
            }
            if super::stream::is_stream(&rr) {
                return super::stream::serve(cluster, req, rr, &identity).await;
            }
            authorize_verb(&cluster, &identity, &rr, rr.verb)?;
            resource(cluster, req, rr, query).await
        }
    }
}

/// RBAC for `verb` on the request's resource (and subresource): a 403
/// worded like the API server's when the identity may not.
pub(super) fn authorize_verb(
    cluster: &Cluster,
    identity: &Identity,
    rr: &ResourceRequest,
    verb: &str,
) -> Result<(), ApiError> {
    let attrs = Attributes {
        user: identity,
        verb,
        group: rr.resource.group,
        resource: rr.resource.plural,
        subresource: &rr.subresource,
        namespace: &rr.namespace,
        name: &rr.name,
    };
    if rbac::authorize(&cluster.store(), &attrs) {
        return Ok(());
    }
    Err(ApiError::forbidden_rbac(
        &rr.resource.qualified(),
        &rr.subresource,
        &rr.name,
        &identity.user_name(),
        verb,
        &rr.namespace,
    ))
}

fn non_resource(path: &str) -> Result<Response<Body>, ApiError> {
    if let Some(doc) = super::openapi::document(path) {
        return Ok(json_response(200, doc));
    }
    let doc = match path.trim_end_matches('/') {
        "/api" => resources::api_versions(),
        "/apis" => resources::api_group_list(),
        "/version" => resources::version(),
        "/healthz" | "/livez" | "/readyz" => {
            return Ok(Response::builder()
                .header("content-type", "text/plain")
                .body(super::full("ok"))
                .unwrap_or_else(|_| Response::new(super::full(""))));
        }
        "/api/v1" => resources::api_resource_list("", "v1").ok_or_else(ApiError::path_not_found)?,
        p => {
            let segs: Vec<&str> = p.trim_matches('/').split('/').collect();
            match segs.as_slice() {
                ["apis", g] => resources::api_group(g).ok_or_else(ApiError::path_not_found)?,
                ["apis", g, v] => {
                    resources::api_resource_list(g, v).ok_or_else(ApiError::path_not_found)?
                }
                _ => return Err(ApiError::path_not_found()),
            }
        }
    };
    Ok(json_response(200, &doc))
}

fn wants_table(req: &Request<Incoming>) -> bool {
    req.headers()
        .get("accept")
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| {
            a.split(',')
                .next()
                .is_some_and(|first| first.contains("as=Table"))
        })
}

fn delete_opts(query: &HashMap<String, String>, body: &[u8]) -> DeleteOpts {
    let mut opts = DeleteOpts {
        grace_period: query.get("gracePeriodSeconds").and_then(|g| g.parse().ok()),
        propagation: query.get("propagationPolicy").cloned(),
        ..Default::default()
    };
    if let Some(o) = query.get("orphanDependents")
        && opts.propagation.is_none()
    {
        opts.propagation = Some(if o == "true" { "Orphan" } else { "Background" }.into());
    }
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        opts.merge_body(&v);
    }
    opts
}

/// Objects matching a list request, sorted, with the list's resourceVersion.
pub fn select(
    cluster: &Cluster,
    r: &'static ResourceType,
    ns: &str,
    query: &HashMap<String, String>,
) -> Result<(Vec<Arc<Value>>, u64), ApiError> {
    let labels = LabelSelector::parse(
        query
            .get("labelSelector")
            .map(String::as_str)
            .unwrap_or_default(),
    )?;
    let fields = FieldSelector::parse(
        query
            .get("fieldSelector")
            .map(String::as_str)
            .unwrap_or_default(),
        r.plural,
    )?;
    let store = cluster.store();
    let rv = store.current_rv();
    let ns = (!ns.is_empty()).then_some(ns);
    let items = store
        .list(r, ns)
        .into_iter()
        .filter(|o| labels.matches_object(o) && fields.matches_object(o))
        .collect();
    Ok((items, rv))
}

fn list(
    cluster: &Cluster,
    rr: &ResourceRequest,
    query: &HashMap<String, String>,
    as_table: bool,
) -> Result<Response<Body>, ApiError> {
    let r = rr.resource;
    if let Some(requested) = query
        .get("resourceVersion")
        .and_then(|v| v.parse::<u64>().ok())
    {
        let store = cluster.store();
        let current = store.current_rv();
        let exact = query.get("resourceVersionMatch").map(String::as_str) == Some("Exact");
        if requested > current {
            return Err(ApiError::too_large_resource_version(requested, current));
        }
        if exact && requested != current {
            return Err(ApiError::expired(requested, store.compacted_rv() + 1));
        }
    }
    let (mut items, rv) = select(cluster, r, &rr.namespace, query)?;
    // Pagination: the continue token is the last key returned.
    if let Some(cont) = query.get("continue").filter(|c| !c.is_empty()) {
        let (cns, cname) = cont
            .split_once('/')
            .ok_or_else(|| ApiError::bad_request("invalid continue token"))?;
        let after = (cns.to_string(), cname.to_string());
        items.retain(|o| key_of(o) > after);
    }
    let mut next = None;
    let mut remaining = 0usize;
    if let Some(limit) = query
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0)
        && items.len() > limit
    {
        remaining = items.len() - limit;
        items.truncate(limit);
        next = items.last().map(|o| {
            let (ns, name) = key_of(o);
            format!("{ns}/{name}")
        });
    }
    if as_table {
        let include = query
            .get("includeObject")
            .map(String::as_str)
            .unwrap_or("PartialObjectMetadata");
        let mut t = table::table(r, &items, include);
        t["metadata"] = json!({"resourceVersion": rv.to_string()});
        return Ok(json_response(200, &t));
    }
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if let Some(n) = next {
        meta["continue"] = json!(n);
        meta["remainingItemCount"] = json!(remaining);
    }
    let doc = json!({
        "kind": r.list_kind(),
        "apiVersion": r.api_version(),
        "metadata": meta,
        "items": items.iter().map(|o| (**o).clone()).collect::<Vec<_>>(),
    });
    Ok(json_response(200, &doc))
}

async fn resource(
    cluster: Arc<Cluster>,
    req: Request<Incoming>,
    rr: ResourceRequest,
    query: HashMap<String, String>,
) -> Result<Response<Body>, ApiError> {
    let r = rr.resource;
    let as_table = wants_table(&req);
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|c| c.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    match rr.verb {
        "get" if rr.subresource == "log" => logs::serve(cluster, &rr, &query).await,
        "get" => {
            let obj = cluster
                .get(r, &rr.namespace, &rr.name)
                .ok_or_else(|| ApiError::not_found(&r.qualified(), &rr.name))?;
            if as_table {
                let include = query
                    .get("includeObject")
                    .map(String::as_str)
                    .unwrap_or("PartialObjectMetadata");
                return Ok(json_response(200, &table::table(r, &[obj], include)));
            }
            Ok(json_response(200, &obj))
        }
        "list" => list(&cluster, &rr, &query, as_table),
        "watch" => watch::serve(cluster, &rr, &query, as_table),
        "create" => {
            let body = read_body(req.into_body()).await?;
            let v = parse_object(&content_type, &body)?;
            if rr.subresource == "eviction" {
                return evict(&cluster, &rr, &v);
            }
            let warnings = fieldvalidation::check(r, &query, &v, Some(&body))?;
            if dry_run(&query) {
                return Ok(json_response(201, &v));
            }
            let created = cluster.create(r, &rr.namespace, v)?;
            let mut resp = json_response(201, &created);
            fieldvalidation::add_warnings(&mut resp, &warnings);
            Ok(resp)
        }
        "update" => {
            let body = read_body(req.into_body()).await?;
            let v = parse_object(&content_type, &body)?;
            let warnings = fieldvalidation::check(r, &query, &v, Some(&body))?;
            if dry_run(&query) {
                cluster
                    .get(r, &rr.namespace, &rr.name)
                    .ok_or_else(|| ApiError::not_found(&r.qualified(), &rr.name))?;
                let preview = (r.normalize)(v).map_err(ApiError::bad_request)?;
                return Ok(json_response(200, &preview));
            }
            let updated =
                cluster.update(r, &rr.namespace, &rr.name, v, rr.subresource == "status")?;
            let mut resp = json_response(200, &updated);
            fieldvalidation::add_warnings(&mut resp, &warnings);
            Ok(resp)
        }
        "patch" => {
            let kind = PatchKind::from_content_type(&content_type).ok_or_else(|| {
                let mut e = ApiError::bad_request(format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {content_type})"));
                e.code = 415;
                e.reason = "UnsupportedMediaType";
                e
            })?;
            let body = read_body(req.into_body()).await?;
            let warnings = patch_field_problems(&cluster, &rr, kind, &body, &query)?;
            if dry_run(&query) {
                // `kubectl diff` previews with a dry-run PATCH: nothing is stored.
                let mut resp = json_response(200, &dry_run_patch(&cluster, &rr, kind, &body)?);
                fieldvalidation::add_warnings(&mut resp, &warnings);
                return Ok(resp);
            }
            let fm = query.get("fieldManager").map(String::as_str);
            let patched = cluster.patch(
                r,
                &rr.namespace,
                &rr.name,
                kind,
                &body,
                rr.subresource == "status",
                fm,
            )?;
            let mut resp = json_response(200, &patched);
            fieldvalidation::add_warnings(&mut resp, &warnings);
            Ok(resp)
        }
        "delete" => {
            let body = read_body(req.into_body()).await?;
            let opts = delete_opts(&query, &body);
            // kubectl puts it in the DeleteOptions body.
            let in_body = serde_json::from_slice::<Value>(&body).is_ok_and(|v| {
                v["dryRun"]
                    .as_array()
                    .is_some_and(|d| d.iter().any(|x| x == "All"))
            });
            if dry_run(&query) || in_body {
                let obj = cluster
                    .get(r, &rr.namespace, &rr.name)
                    .ok_or_else(|| ApiError::not_found(&r.qualified(), &rr.name))?;
                return Ok(json_response(200, &obj));
            }
            let gone = cluster.delete(r, &rr.namespace, &rr.name, &opts)?;
            Ok(json_response(200, &gone))
        }
        "deletecollection" => {
            let body = read_body(req.into_body()).await?;
            let opts = delete_opts(&query, &body);
            let labels = LabelSelector::parse(
                query
                    .get("labelSelector")
                    .map(String::as_str)
                    .unwrap_or_default(),
            )?;
            let fields = FieldSelector::parse(
                query
                    .get("fieldSelector")
                    .map(String::as_str)
                    .unwrap_or_default(),
                r.plural,
            )?;
            let ns = (!rr.namespace.is_empty()).then_some(rr.namespace.as_str());
            let gone = cluster.delete_collection(r, ns, &labels, &fields, &opts)?;
            let rv = cluster.store().current_rv();
            Ok(json_response(
                200,
                &json!({
                    "kind": r.list_kind(),
                    "apiVersion": r.api_version(),
                    "metadata": {"resourceVersion": rv.to_string()},
                    "items": gone.iter().map(|o| (**o).clone()).collect::<Vec<_>>(),
                }),
            ))
        }
        other => Err(ApiError::method_not_allowed(&r.qualified(), other)),
    }
}

/// Whether the request is a dry run (`dryRun=All`): answered, not stored.
fn dry_run(query: &HashMap<String, String>) -> bool {
    flag(query, "dryRun") || query.get("dryRun").is_some_and(|d| d == "All")
}

/// What a PATCH would make of the object, without storing it.
fn dry_run_patch(
    cluster: &Cluster,
    rr: &ResourceRequest,
    kind: PatchKind,
    body: &[u8],
) -> Result<Value, ApiError> {
    let r = rr.resource;
    let p = patch::parse_body(kind, body)?;
    let patched = match cluster.get(r, &rr.namespace, &rr.name) {
        Some(current) => patch::apply(kind, &current, &p)?,
        None if kind == PatchKind::Apply => p,
        None => return Err(ApiError::not_found(&r.qualified(), &rr.name)),
    };
    (r.normalize)(patched).map_err(ApiError::bad_request)
}

/// `fieldValidation` for a PATCH: the patched object is checked (so patch
/// directives never count as fields), and the body for duplicate keys.
fn patch_field_problems(
    cluster: &Cluster,
    rr: &ResourceRequest,
    kind: PatchKind,
    body: &[u8],
    query: &HashMap<String, String>,
) -> Result<Vec<String>, ApiError> {
    let mode = fieldvalidation::Mode::from_query(query)?;
    if mode == fieldvalidation::Mode::Ignore {
        return Ok(Vec::new());
    }
    // A body that does not parse or apply is refused by the patch itself.
    let Ok(p) = patch::parse_body(kind, body) else {
        return Ok(Vec::new());
    };
    let patched = match cluster.get(rr.resource, &rr.namespace, &rr.name) {
        Some(current) => match patch::apply(kind, &current, &p) {
            Ok(v) => v,
            Err(_) => return Ok(Vec::new()),
        },
        None => p,
    };
    let json_body = (kind != PatchKind::Json).then_some(body);
    let problems = fieldvalidation::problems(rr.resource, &patched, json_body);
    fieldvalidation::enforce(rr.resource, mode, problems)
}

/// `POST pods/NAME/eviction`: the Eviction API (no PodDisruptionBudgets
/// here, so it always succeeds for an existing pod).
fn evict(
    cluster: &Cluster,
    rr: &ResourceRequest,
    body: &Value,
) -> Result<Response<Body>, ApiError> {
    let grace = body
        .pointer("/deleteOptions/gracePeriodSeconds")
        .and_then(Value::as_i64);
    cluster.evict_via_api(&rr.namespace, &rr.name, grace)?;
    Ok(json_response(
        201,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    ))
}
