//! What a CWL run does beside the driver (a `crate::run::FrontFn`): on a
//! first run, import the input object's files and store the document and
//! the imported input object in the job store (a restart reads them back
//! from there); run the workflow engine over [`SchedExecutor`]; export the
//! output object to the output directory and print it, as JSON, on
//! standard output, which holds nothing else.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Value, json};
use toil_cwl::{CwlError, Document};
use toil_jobstore::{Condition, JobStore};

use super::executor::{ExecOptions, SchedExecutor};
use super::{DOCUMENT_KEY, JOB_KEY};
use crate::run::FrontEnd;

/// What the run starts from.
pub struct Start {
    /// The loaded document and input object (files still local); `None`
    /// for a restart that takes both from the job store.
    pub given: Option<(Document, Value)>,
    /// Where the outputs go (`--outdir`).
    pub outdir: PathBuf,
    /// The executor's settings.
    pub exec: ExecOptions,
    /// On a failure, cancel the jobs still queued or running instead of
    /// letting them finish: for a temporary job store, which nobody will
    /// restart.
    pub cancel_on_failure: bool,
}

/// A document as stored in the job store.
pub fn document_json(doc: &Document) -> Value {
    json!({
        "process": *doc.process,
        "namespaces": doc.namespaces,
        "schemas": doc.schemas,
        "uri": doc.uri,
    })
}

/// A document read back from [`document_json`].
pub fn document_from_json(v: Value) -> Result<Document, CwlError> {
    let bad = || CwlError::Failed("the CWL document stored in the job store is damaged".into());
    let Value::Object(mut m) = v else {
        return Err(bad());
    };
    let process = m.remove("process").ok_or_else(bad)?;
    let namespaces = match m.remove("namespaces") {
        Some(Value::Object(n)) => n,
        _ => Default::default(),
    };
    let schemas = match m.remove("schemas") {
        Some(Value::Array(a)) => a
            .into_iter()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    };
    let uri = m
        .remove("uri")
        .and_then(|u| u.as_str().map(str::to_string))
        .unwrap_or_default();
    Ok(Document {
        process: Arc::new(process),
        namespaces,
        schemas,
        uri,
    })
}

async fn put_json(store: &JobStore, key: &str, v: &Value) -> Result<(), CwlError> {
    store
        .put_bytes(key, Bytes::from(v.to_string()), Condition::Always)
        .await
        .map(|_| ())
        .map_err(|e| CwlError::Failed(format!("storing {key}: {e}")))
}

async fn get_json(store: &JobStore, key: &str) -> Result<Option<Value>, CwlError> {
    match store.get_bytes(key).await {
        Ok(Some(o)) => serde_json::from_slice(&o.data)
            .map(Some)
            .map_err(|e| CwlError::Failed(format!("{key} in the job store is damaged: {e}"))),
        Ok(None) => Ok(None),
        Err(e) => Err(CwlError::Failed(format!("reading {key}: {e}"))),
    }
}

/// The document and the (imported) input object: from the job store when
/// it holds them (a restart), else from what was given, imported and then
/// stored.
async fn document_and_job(
    fe: &FrontEnd,
    exec: &SchedExecutor,
    given: Option<(Document, Value)>,
) -> Result<(Document, Value), CwlError> {
    if !fe.fresh
        && let (Some(d), Some(j)) = (
            get_json(&fe.store, DOCUMENT_KEY).await?,
            get_json(&fe.store, JOB_KEY).await?,
        )
    {
        return Ok((document_from_json(d)?, j));
    }
    let Some((doc, mut job)) = given else {
        return Err(CwlError::Invalid(
            "the job store holds no CWL document to restart; run the workflow again without --restart".into(),
        ));
    };
    super::files::fill_defaults(&mut job, &doc.process);
    super::files::add_secondary_files(&mut job, &doc.process);
    exec.import(&mut job).await?;
    put_json(&fe.store, DOCUMENT_KEY, &document_json(&doc)).await?;
    put_json(&fe.store, JOB_KEY, &job).await?;
    Ok((doc, job))
}

/// Runs the CWL workflow while the leader runs; returns the exit code
/// (0, or [`CwlError::exit_code`]).
pub async fn run(fe: FrontEnd, start: Start) -> u8 {
    let cancel = start.cancel_on_failure;
    match run_inner(&fe, start).await {
        Ok(()) => 0,
        Err(e) => {
            if cancel {
                let (tx, rx) = tokio::sync::oneshot::channel();
                let msg = crate::driver::Msg::CancelWorkflow {
                    reason: format!("the CWL workflow failed: {e}"),
                    reply: tx,
                };
                if fe.driver.send(msg).await.is_ok() {
                    let _ = rx.await;
                }
            }
            // The reason goes to stderr whatever the log level (--quiet
            // included): it is the run's result.
            eprintln!("toil-cwl-runner: {e}");
            u8::try_from(e.exit_code()).unwrap_or(1)
        }
    }
}

async fn run_inner(fe: &FrontEnd, start: Start) -> Result<(), CwlError> {
    let no_container = start.exec.no_container;
    let exec = SchedExecutor::new(fe.driver.clone(), &fe.events, fe.store.clone(), start.exec);
    let (doc, job) = document_and_job(fe, &exec, start.given).await?;
    let opts = toil_cwl::workflow::EngineOptions { no_container };
    let mut out = toil_cwl::workflow::run(&doc, job, Arc::new(exec), &opts).await?;
    super::files::export(&fe.store, &mut out, &start.outdir).await?;
    // Whole-valued doubles too large for an integer print as digits, as
    // written in the document (CWL runners print `1e+42` as 1000...0).
    let text = toil_cwl::expr::to_json_pretty(&out);
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{text}")
        .and_then(|()| stdout.flush())
        .map_err(|e| CwlError::Failed(format!("printing the outputs: {e}")))?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn documents_round_trip_through_their_stored_form() {
        let mut ns = serde_json::Map::new();
        ns.insert("edam".into(), json!("http://edamontology.org/"));
        let doc = Document {
            process: Arc::new(json!({"class": "CommandLineTool", "id": "file:///t.cwl#main"})),
            namespaces: ns,
            schemas: vec!["file:///s.rdf".into()],
            uri: "file:///t.cwl".into(),
        };
        let back = document_from_json(document_json(&doc)).unwrap();
        assert_eq!(*back.process, *doc.process);
        assert_eq!(back.namespaces, doc.namespaces);
        assert_eq!(back.schemas, doc.schemas);
        assert_eq!(back.uri, doc.uri);
        assert!(document_from_json(json!([])).is_err());
    }
}
