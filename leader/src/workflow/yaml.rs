//! A YAML document as a small tree of nodes that remember where they are.
//!
//! yaml-rust2's own `Yaml` type drops positions, so we build the tree from
//! its marked event stream instead. Aliases are expanded (with a size budget
//! against "billion laughs" documents) and `<<` merge keys are applied, so
//! the conversion to workflow types never sees either.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use super::diag::Sink;
use super::spec::Pos;

/// The most that aliases (`*name`) may add to a document, counted as one
/// per value plus the bytes of its text: 16 MiB. Far above any real use
/// (sharing a few settings between jobs), far below what would exhaust
/// memory (an alias to a long string, repeated, counts its full length
/// each time).
const ALIAS_BUDGET: usize = 16 << 20;

/// A value in the document.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Node {
    /// Where the value starts.
    pub pos: Pos,
    pub kind: Kind,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Kind {
    /// `~`, `null`, or nothing at all (`key:` with no value).
    Null,
    /// Any other scalar, as written (numbers and booleans too).
    Scalar {
        text: String,
        /// Written without quotes (so `true` may be a boolean).
        plain: bool,
        /// A `|` or `>` block, which starts on the line after its marker.
        block: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<Entry>),
    /// Something already reported as an error; checks skip it silently.
    Invalid,
}

/// One `key: value` of a mapping. Duplicate keys are kept (in order) so the
/// caller can report them with context ("duplicate job", "duplicate output").
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Entry {
    pub key: String,
    pub key_pos: Pos,
    pub value: Node,
}

impl Node {
    /// How to call this kind of value in a message ("a list").
    pub(crate) fn describe(&self) -> &'static str {
        match &self.kind {
            Kind::Null => "nothing",
            Kind::Scalar { .. } => "a single value",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
            Kind::Invalid => "an invalid value",
        }
    }

    fn size(&self) -> usize {
        match &self.kind {
            Kind::Seq(items) => 1 + items.iter().map(Node::size).sum::<usize>(),
            Kind::Map(entries) => {
                1 + entries
                    .iter()
                    .map(|e| 1 + e.key.len() + e.value.size())
                    .sum::<usize>()
            }
            Kind::Scalar { text, .. } => 1 + text.len(),
            _ => 1,
        }
    }
}

fn pos_of(mark: &Marker) -> Pos {
    // yaml-rust2 counts lines from 1 but columns from 0.
    Pos {
        line: mark.line(),
        col: mark.col() + 1,
    }
}

/// Parses `text` into a tree. Syntax errors (and a few structural ones, such
/// as a second document) are reported to `sink`; the result is `None` when
/// no tree can be trusted.
pub(crate) fn parse(text: &str, sink: &mut Sink) -> Option<Node> {
    let mut b = Builder::default();
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        Parser::new_from_str(text).load(&mut b, true)
    }));
    let before = sink.diags.len();
    for (pos, msg, hint) in b.errors.drain(..) {
        sink.push(pos, msg, hint);
    }
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            let pos = pos_of(e.marker());
            let hint = syntax_hint(text, pos, e.info());
            sink.push(pos, format!("invalid YAML: {}", e.info()), hint);
            return None;
        }
        Err(_) => {
            sink.error(
                Pos { line: 1, col: 1 },
                "the YAML parser failed on this file",
                "check the file's syntax with a YAML linter",
            );
            return None;
        }
    }
    if sink.diags.len() > before && b.root.is_none() {
        return None;
    }
    b.root
}

/// A hint for the YAML mistakes people make most in workflow files.
fn syntax_hint(text: &str, pos: Pos, info: &str) -> Option<String> {
    let line = text.lines().nth(pos.line.saturating_sub(1)).unwrap_or("");
    let near = |l: usize| text.lines().nth(l.saturating_sub(1)).unwrap_or("");
    if line.contains('\t') || near(pos.line.saturating_sub(1)).starts_with('\t') {
        return Some("indent with spaces: YAML does not allow tabs for indentation".into());
    }
    if line.contains("{{") {
        return Some(
            "a value containing a {{placeholder}} must be quoted when it starts with one: \
             \"{{sample}}.txt\""
                .into(),
        );
    }
    if info.contains("mapping values are not allowed") {
        return Some(
            "quote a value that contains \": \" (command: \"echo a: b\"), or write it as a \
             block:\ncommand: |\n  echo a: b"
                .into(),
        );
    }
    if info.contains("did not find expected key") || info.contains("block mapping") {
        return Some("check the indentation: keys of one mapping must line up".into());
    }
    if info.contains("did not find expected") && (info.contains(',') || info.contains(']')) {
        return Some("a list or mapping written inline ([...], {...}) is not closed".into());
    }
    None
}

// === impl Builder ===

#[derive(Default)]
struct Builder {
    /// Open sequences and mappings, innermost last.
    stack: Vec<Frame>,
    /// Anchored nodes by anchor id, with their sizes, for aliases.
    anchors: HashMap<usize, (Node, usize)>,
    /// The first document's root.
    root: Option<Node>,
    /// Documents seen so far.
    documents: usize,
    /// Nodes added by aliases so far.
    alias_nodes: usize,
    /// Problems found while building.
    errors: Vec<(Pos, String, Option<String>)>,
}

struct Frame {
    pos: Pos,
    anchor: usize,
    kind: FrameKind,
}

enum FrameKind {
    Seq(Vec<Node>),
    /// Keys and values in order; a key waits in `key` for its value.
    Map {
        pairs: Vec<(Node, Node)>,
        key: Option<Node>,
    },
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let pos = pos_of(&mark);
        match ev {
            Event::DocumentStart => {
                self.documents += 1;
                if self.documents == 2 {
                    self.errors.push((
                        pos,
                        "a workflow file holds one YAML document, this is a second one".into(),
                        Some("remove the \"---\" line and everything after it".into()),
                    ));
                }
            }
            Event::Scalar(text, style, anchor, _tag) => {
                let plain = style == TScalarStyle::Plain;
                let kind = if plain && matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL")
                {
                    Kind::Null
                } else {
                    let block = matches!(style, TScalarStyle::Literal | TScalarStyle::Folded);
                    Kind::Scalar { text, plain, block }
                };
                self.finish(Node { pos, kind }, anchor);
            }
            Event::SequenceStart(anchor, _tag) => self.stack.push(Frame {
                pos,
                anchor,
                kind: FrameKind::Seq(Vec::new()),
            }),
            Event::MappingStart(anchor, _tag) => self.stack.push(Frame {
                pos,
                anchor,
                kind: FrameKind::Map {
                    pairs: Vec::new(),
                    key: None,
                },
            }),
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some(frame) = self.stack.pop() {
                    let node = self.close(frame);
                    self.finish(node, 0);
                }
            }
            Event::Alias(id) => {
                let node = match self.anchors.get(&id) {
                    Some((n, size)) => {
                        if self.alias_nodes + size > ALIAS_BUDGET {
                            self.errors.push((
                                pos,
                                "aliases expand this document to too many values".into(),
                                Some("use fewer nested aliases (*name)".into()),
                            ));
                            Node {
                                pos,
                                kind: Kind::Invalid,
                            }
                        } else {
                            self.alias_nodes += size;
                            n.clone()
                        }
                    }
                    None => {
                        self.errors
                            .push((pos, "alias to an unknown anchor".into(), None));
                        Node {
                            pos,
                            kind: Kind::Invalid,
                        }
                    }
                };
                self.finish(node, 0);
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
        }
    }
}

impl Builder {
    /// Places a complete node in its parent (or makes it the root).
    fn finish(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, (node.clone(), node.size()));
        }
        match self.stack.last_mut() {
            None => {
                if self.documents <= 1 {
                    self.root = Some(node);
                }
            }
            Some(Frame {
                kind: FrameKind::Seq(items),
                ..
            }) => items.push(node),
            Some(Frame {
                kind: FrameKind::Map { pairs, key },
                ..
            }) => match key.take() {
                None => *key = Some(node),
                Some(k) => pairs.push((k, node)),
            },
        }
    }

    /// Turns a finished sequence or mapping into a node.
    fn close(&mut self, frame: Frame) -> Node {
        let mut pos = frame.pos;
        let kind = match frame.kind {
            FrameKind::Seq(items) => Kind::Seq(items),
            FrameKind::Map { mut pairs, .. } => {
                // A block mapping's start mark lies inside its first key;
                // the key's own position is where the mapping starts.
                if let Some((k, _)) = pairs.first()
                    && k.pos < pos
                {
                    pos = k.pos;
                }
                // `key:` with nothing after it: point at the key, not at
                // whatever comes next.
                for (k, v) in &mut pairs {
                    if v.kind == Kind::Null && v.pos.line != k.pos.line {
                        v.pos = k.pos;
                    }
                }
                if let Some(name) = unquoted_placeholder(&pairs) {
                    self.errors.push((
                        pos,
                        format!(
                            "unquoted placeholder {{{{{name}}}}}: YAML reads a value starting \
                             with \"{{\" as a mapping"
                        ),
                        Some(format!("put the value in quotes: \"{{{{{name}}}}}\"")),
                    ));
                    Kind::Invalid
                } else {
                    Kind::Map(self.entries(pairs))
                }
            }
        };
        let node = Node { pos, kind };
        if frame.anchor > 0 {
            self.anchors
                .insert(frame.anchor, (node.clone(), node.size()));
        }
        node
    }

    /// Checks keys are plain values and applies `<<` merge keys: the merged
    /// mapping's entries are added unless the mapping sets them itself.
    fn entries(&mut self, pairs: Vec<(Node, Node)>) -> Vec<Entry> {
        let mut out = Vec::with_capacity(pairs.len());
        let mut merged: Vec<Entry> = Vec::new();
        for (k, v) in pairs {
            let key = match k.kind {
                Kind::Scalar { text, .. } => text,
                Kind::Null => String::new(),
                Kind::Invalid => continue,
                _ => {
                    self.errors.push((
                        k.pos,
                        format!("a key must be a plain name, not {}", k.describe()),
                        Some("write keys as `name: value`".into()),
                    ));
                    continue;
                }
            };
            if key == "<<" {
                let sources = match v.kind {
                    Kind::Map(entries) => vec![entries],
                    Kind::Seq(items) => items
                        .into_iter()
                        .filter_map(|n| match n.kind {
                            Kind::Map(e) => Some(e),
                            _ => None,
                        })
                        .collect(),
                    Kind::Invalid => Vec::new(),
                    _ => {
                        self.errors.push((
                            v.pos,
                            "a merge key (<<) needs a mapping, such as an alias *name".into(),
                            None,
                        ));
                        Vec::new()
                    }
                };
                for entries in sources {
                    for e in entries {
                        if !merged.iter().any(|m| m.key == e.key) {
                            merged.push(e);
                        }
                    }
                }
                continue;
            }
            out.push(Entry {
                key,
                key_pos: k.pos,
                value: v,
            });
        }
        for e in merged {
            if !out.iter().any(|o| o.key == e.key) {
                out.push(e);
            }
        }
        out
    }
}

/// `{{name}}` written without quotes parses as a mapping whose only key is a
/// mapping `{name: null}`, with a null value. Returns `name` in that case.
fn unquoted_placeholder(pairs: &[(Node, Node)]) -> Option<&str> {
    let [(key, value)] = pairs else { return None };
    if value.kind != Kind::Null {
        return None;
    }
    let Kind::Map(inner) = &key.kind else {
        return None;
    };
    let [entry] = inner.as_slice() else {
        return None;
    };
    (entry.value.kind == Kind::Null).then_some(entry.key.as_str())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::path::Path;

    fn tree(text: &str) -> (Option<Node>, Vec<String>) {
        let mut sink = Sink::new(Path::new("t.yaml"));
        let node = parse(text, &mut sink);
        (node, sink.diags.iter().map(|d| d.to_string()).collect())
    }

    fn map(node: &Node) -> &[Entry] {
        match &node.kind {
            Kind::Map(e) => e,
            other => panic!("expected a map, got {other:?}"),
        }
    }

    #[test]
    fn positions_are_one_based() {
        let (root, errs) = tree("a: 1\nbb:\n  c: \"x\"\n  d: [1, two]\n");
        assert!(errs.is_empty(), "{errs:?}");
        let root = root.expect("root");
        assert_eq!(root.pos, Pos { line: 1, col: 1 });
        let top = map(&root);
        assert_eq!(top[0].key, "a");
        assert_eq!(top[0].value.pos, Pos { line: 1, col: 4 });
        assert_eq!(top[1].key_pos, Pos { line: 2, col: 1 });
        let inner = map(&top[1].value);
        assert_eq!(inner[0].key_pos, Pos { line: 3, col: 3 });
        assert_eq!(inner[0].value.pos, Pos { line: 3, col: 6 });
        assert!(
            matches!(&inner[0].value.kind, Kind::Scalar { text, plain: false, .. } if text == "x")
        );
        let Kind::Seq(items) = &inner[1].value.kind else {
            panic!("not a list")
        };
        assert_eq!(items[1].pos, Pos { line: 4, col: 10 });
    }

    #[test]
    fn nulls_and_quoted_nulls() {
        let (root, _) = tree("a:\nb: ~\nc: null\nd: \"\"\ne: 'null'\n");
        let root = root.expect("root");
        let kinds: Vec<bool> = map(&root)
            .iter()
            .map(|e| e.value.kind == Kind::Null)
            .collect();
        assert_eq!(kinds, [true, true, true, false, false]);
    }

    #[test]
    fn aliases_and_merge_keys() {
        let text = "base: &b {cores: 1, memory: 1G}\njob:\n  <<: *b\n  cores: 2\nlist: *b\n";
        let (root, errs) = tree(text);
        assert!(errs.is_empty(), "{errs:?}");
        let root = root.expect("root");
        let job = map(&map(&root)[1].value);
        let keys: Vec<&str> = job.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["cores", "memory"]);
        assert!(matches!(&job[0].value.kind, Kind::Scalar { text, .. } if text == "2"));
        assert_eq!(map(&map(&root)[2].value).len(), 2);
    }

    #[test]
    fn syntax_errors_have_positions_and_hints() {
        let (root, errs) = tree("jobs:\n  a:\n    command: echo a: b\n");
        assert!(root.is_none());
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].starts_with("t.yaml:3:"), "{}", errs[0]);
        assert!(errs[0].contains("quote a value"), "{}", errs[0]);

        let (_, errs) = tree("jobs:\n\ta: 1\n");
        assert!(errs[0].contains("tabs"), "{errs:?}");

        let (root, errs) = tree("a: [1, 2\n");
        assert!(root.is_none());
        assert!(errs[0].starts_with("t.yaml:"), "{errs:?}");
    }

    #[test]
    fn unquoted_placeholder_is_explained() {
        let (root, errs) = tree("env: {S: {{sample}}}\n");
        assert!(root.is_some());
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].contains("unquoted placeholder {{sample}}"),
            "{}",
            errs[0]
        );
        assert!(errs[0].contains("\"{{sample}}\""), "{}", errs[0]);
    }

    #[test]
    fn second_document_is_an_error() {
        let (_, errs) = tree("a: 1\n---\nb: 2\n");
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].contains("second"), "{}", errs[0]);
    }

    #[test]
    fn alias_bombs_are_stopped() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let p = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let (_, errs) = tree(&text);
        assert!(
            errs.iter().any(|e| e.contains("too many values")),
            "{errs:?}"
        );
    }
}
