//! Loading CWL documents into the normalized form of `cwl/DESIGN.md`.

/// The last segment of an id: `file:///a/b.cwl#step/x` gives `x`.
pub fn shortname(id: &str) -> &str {
    let tail = id.rsplit_once('#').map_or(id, |(_, f)| f);
    tail.rsplit_once('/').map_or(tail, |(_, s)| s)
}
