//! Input objects (job orders).

use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

use super::node::{self, Node, V};
use super::process::resolve_files_in;
use super::{Loader, uri};
use crate::{CwlError, Document};

/// Loads an input object from its text; `path` names the file (relative
/// locations are resolved against its directory). See
/// [`super::load_job_order`].
pub fn load_job_order_from_str(text: &str, path: &Path, doc: &Document) -> Result<Value, CwlError> {
    let abs = super::absolute(path);
    let file: Arc<str> = Arc::from(abs.to_string_lossy().as_ref());
    let tree = node::parse(text, &file).map_err(|e| {
        CwlError::Invalid(
            super::Diag {
                pos: e.pos,
                msg: format!("in the input object: {}", e.msg),
                hint: e.hint,
            }
            .to_string(),
        )
    })?;
    let mut loader = Loader {
        namespaces: doc.namespaces.clone(),
        ..Loader::default()
    };
    loader
        .given
        .insert(abs.to_string_lossy().into_owned(), text.to_string());
    let mut tree = loader.preprocess(tree, &file);
    loader.outcome()?;
    match &tree.v {
        V::Null => return Ok(Value::Object(serde_json::Map::new())),
        V::Map(_) => {}
        _ => {
            return Err(CwlError::Invalid(format!(
                "{}: the input object must be a mapping of input names to values, not {}\n  hint: write `name: value` lines",
                tree.pos,
                tree.describe()
            )));
        }
    }
    // The job's own `$namespaces` add to the document's.
    if let Some(ns) = tree.remove("$namespaces")
        && let Some(entries) = ns.value.entries()
    {
        for e in entries {
            if let Some(u) = e.value.as_str() {
                loader
                    .namespaces
                    .entry(e.key.clone())
                    .or_insert_with(|| Value::String(u.to_string()));
            }
        }
    }
    tree.remove("$schemas");
    tree.remove("cwl:tool");
    tree.remove("https://w3id.org/cwl/cwl#tool");
    resolve_files_in(&mut tree, Some(&uri::path_to_uri(&abs)));
    expand_formats(&mut tree, &loader);
    Ok(tree.to_json())
}

/// Expands `format` of File objects through the document's `$namespaces`.
fn expand_formats(n: &mut Node, loader: &Loader) {
    match &mut n.v {
        V::Map(entries) => {
            let is_file = entries
                .iter()
                .any(|e| e.key == "class" && e.value.as_str() == Some("File"));
            for e in entries.iter_mut() {
                if is_file
                    && e.key == "format"
                    && let V::Str(s) = &e.value.v
                    && let Some(full) = loader.expand_prefix(s)
                {
                    e.value.v = V::Str(full);
                    continue;
                }
                expand_formats(&mut e.value, loader);
            }
        }
        V::Seq(items) => {
            for i in items {
                expand_formats(i, loader);
            }
        }
        _ => {}
    }
}
