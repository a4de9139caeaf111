//! A YAML or JSON document as a tree of values that remember where they are.
//!
//! yaml-rust2's own `Yaml` type drops positions, so the tree is built from its
//! marked event stream. JSON is read by the same parser (JSON is YAML).
//! Aliases are expanded with a size budget; plain scalars are typed with the
//! YAML 1.2 core schema (`true`, `12`, `1.5e3`, `null`, `~`).

use std::collections::HashMap;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use serde_json::Value;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// The deepest nesting of lists and mappings accepted.
const MAX_DEPTH: usize = 256;

/// The most values (plus text bytes) aliases may add to one document.
const ALIAS_BUDGET: usize = 16 << 20;

/// Where a value starts: file, line and column (both from 1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pos {
    /// The file's path as given to the loader (or a name for text).
    pub file: Arc<str>,
    /// Line, from 1.
    pub line: u32,
    /// Column, from 1.
    pub col: u32,
}

impl Pos {
    /// A position at the start of `file`.
    pub fn start(file: &Arc<str>) -> Pos {
        Pos {
            file: file.clone(),
            line: 1,
            col: 1,
        }
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            // The whole file (for example one that cannot be read).
            return write!(f, "{}", self.file);
        }
        write!(f, "{}:{}:{}", self.file, self.line, self.col)
    }
}

/// A value of the tree.
#[derive(Clone, Debug, PartialEq)]
pub enum V {
    /// `null`, `~`, or nothing.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer that fits in 64 bits.
    Int(i64),
    /// Any other number.
    Float(f64),
    /// A string (quoted, or plain text that is nothing else).
    Str(String),
    /// A list.
    Seq(Vec<Node>),
    /// A mapping, in document order.
    Map(Vec<Entry>),
}

/// One `key: value` of a mapping.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// The key.
    pub key: String,
    /// Where the key is written.
    pub key_pos: Pos,
    /// The value.
    pub value: Node,
}

/// A value with its position.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Where the value starts.
    pub pos: Pos,
    /// The value.
    pub v: V,
}

impl Node {
    /// A new node.
    pub fn new(pos: Pos, v: V) -> Node {
        Node { pos, v }
    }

    /// A string node.
    pub fn str(pos: &Pos, s: impl Into<String>) -> Node {
        Node::new(pos.clone(), V::Str(s.into()))
    }

    /// An empty mapping.
    pub fn map(pos: &Pos) -> Node {
        Node::new(pos.clone(), V::Map(Vec::new()))
    }

    /// How to call this kind of value in a message.
    pub fn describe(&self) -> &'static str {
        match &self.v {
            V::Null => "null",
            V::Bool(_) => "a boolean",
            V::Int(_) => "an integer",
            V::Float(_) => "a number",
            V::Str(_) => "a string",
            V::Seq(_) => "a list",
            V::Map(_) => "a mapping",
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match &self.v {
            V::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The entries, if this is a mapping.
    pub fn entries(&self) -> Option<&[Entry]> {
        match &self.v {
            V::Map(e) => Some(e),
            _ => None,
        }
    }

    /// The entries, if this is a mapping.
    pub fn entries_mut(&mut self) -> Option<&mut Vec<Entry>> {
        match &mut self.v {
            V::Map(e) => Some(e),
            _ => None,
        }
    }

    /// The items, if this is a list.
    pub fn items(&self) -> Option<&[Node]> {
        match &self.v {
            V::Seq(e) => Some(e),
            _ => None,
        }
    }

    /// Whether this is a mapping.
    pub fn is_map(&self) -> bool {
        matches!(self.v, V::Map(_))
    }

    /// Whether this is null.
    pub fn is_null(&self) -> bool {
        matches!(self.v, V::Null)
    }

    /// The entry `key` of a mapping.
    pub fn entry(&self, key: &str) -> Option<&Entry> {
        self.entries()?.iter().find(|e| e.key == key)
    }

    /// The value of `key` in a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|e| &e.value)
    }

    /// The value of `key` in a mapping, mutable.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Node> {
        self.entries_mut()?
            .iter_mut()
            .find(|e| e.key == key)
            .map(|e| &mut e.value)
    }

    /// The string value of `key`.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key)?.as_str()
    }

    /// Removes `key` from a mapping and returns its entry.
    pub fn remove(&mut self, key: &str) -> Option<Entry> {
        let entries = self.entries_mut()?;
        let i = entries.iter().position(|e| e.key == key)?;
        Some(entries.remove(i))
    }

    /// Sets `key` (replacing its value in place, or appending).
    pub fn set(&mut self, key: &str, value: Node) {
        let pos = value.pos.clone();
        if let Some(entries) = self.entries_mut() {
            if let Some(e) = entries.iter_mut().find(|e| e.key == key) {
                e.value = value;
            } else {
                entries.push(Entry {
                    key: key.to_string(),
                    key_pos: pos,
                    value,
                });
            }
        }
    }

    /// Converts to JSON (positions dropped).
    pub fn to_json(&self) -> Value {
        match &self.v {
            V::Null => Value::Null,
            V::Bool(b) => Value::Bool(*b),
            V::Int(i) => Value::from(*i),
            V::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            V::Str(s) => Value::String(s.clone()),
            V::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            V::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|e| (e.key.clone(), e.value.to_json()))
                    .collect(),
            ),
        }
    }

    /// Converts JSON to a tree, every node at `pos`.
    pub fn from_json(v: &Value, pos: &Pos) -> Node {
        let v = match v {
            Value::Null => V::Null,
            Value::Bool(b) => V::Bool(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => V::Int(i),
                None => V::Float(n.as_f64().unwrap_or(0.0)),
            },
            Value::String(s) => V::Str(s.clone()),
            Value::Array(a) => V::Seq(a.iter().map(|x| Node::from_json(x, pos)).collect()),
            Value::Object(o) => V::Map(
                o.iter()
                    .map(|(k, x)| Entry {
                        key: k.clone(),
                        key_pos: pos.clone(),
                        value: Node::from_json(x, pos),
                    })
                    .collect(),
            ),
        };
        Node::new(pos.clone(), v)
    }

    fn size(&self) -> usize {
        match &self.v {
            V::Seq(items) => 1 + items.iter().map(Node::size).sum::<usize>(),
            V::Map(entries) => {
                1 + entries
                    .iter()
                    .map(|e| 1 + e.key.len() + e.value.size())
                    .sum::<usize>()
            }
            V::Str(s) => 1 + s.len(),
            _ => 1,
        }
    }
}

/// A problem found while parsing: where, what, and how to fix it.
#[derive(Clone, Debug, PartialEq)]
pub struct ParseError {
    /// Where.
    pub pos: Pos,
    /// What.
    pub msg: String,
    /// How to fix it, if we can tell.
    pub hint: Option<String>,
}

/// Parses YAML (or JSON) `text` read from `file` into a tree.
pub fn parse(text: &str, file: &Arc<str>) -> Result<Node, ParseError> {
    let mut b = Builder {
        file: file.clone(),
        stack: Vec::new(),
        anchors: HashMap::new(),
        root: None,
        documents: 0,
        alias_nodes: 0,
        error: None,
        last_is_block: false,
        skipped: 0,
    };
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        Parser::new_from_str(text).load(&mut b, false)
    }));
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            let pos = b.pos_of(e.marker());
            let hint = syntax_hint(text, &pos, e.info());
            return Err(ParseError {
                pos,
                msg: format!("invalid YAML: {}", e.info()),
                hint,
            });
        }
        Err(_) => {
            return Err(ParseError {
                pos: Pos::start(file),
                msg: "the YAML parser failed on this file".into(),
                hint: Some("check the file's syntax with a YAML linter".into()),
            });
        }
    }
    if let Some(e) = b.error {
        return Err(e);
    }
    let mut root = b
        .root
        .unwrap_or_else(|| Node::new(Pos::start(file), V::Null));
    if b.last_is_block && !text.ends_with('\n') {
        // A `|` or `>` block at the very end of a file without a final line
        // break has no final line break either (yaml-rust2 adds one).
        if let Some(s) = last_string(&mut root)
            && s.ends_with('\n')
        {
            s.pop();
        }
    }
    Ok(root)
}

/// The last value of a tree in document order, if it is a string.
fn last_string(node: &mut Node) -> Option<&mut String> {
    match &mut node.v {
        V::Map(entries) => entries.last_mut().and_then(|e| last_string(&mut e.value)),
        V::Seq(items) => items.last_mut().and_then(last_string),
        V::Str(s) => Some(s),
        _ => None,
    }
}

fn syntax_hint(text: &str, pos: &Pos, info: &str) -> Option<String> {
    let line = text
        .lines()
        .nth((pos.line as usize).saturating_sub(1))
        .unwrap_or("");
    if line.starts_with('\t') || line.contains("\t-") {
        return Some("indent with spaces: YAML does not allow tabs for indentation".into());
    }
    if info.contains("mapping values are not allowed") {
        return Some(
            "quote a value that contains \": \" (baseCommand: \"echo a: b\") or use a block \
             scalar (|)"
                .into(),
        );
    }
    if info.contains("did not find expected key") || info.contains("block mapping") {
        return Some("check the indentation: keys of one mapping must line up".into());
    }
    if info.contains("did not find expected") {
        return Some("a list or mapping written inline ([...], {...}) may not be closed".into());
    }
    None
}

/// Types a plain (unquoted) scalar by the YAML 1.2 core schema.
fn plain_scalar(text: String) -> V {
    match text.as_str() {
        "" | "~" | "null" | "Null" | "NULL" => return V::Null,
        "true" | "True" | "TRUE" => return V::Bool(true),
        "false" | "False" | "FALSE" => return V::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => return V::Float(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return V::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return V::Float(f64::NAN),
        _ => {}
    }
    let bytes = text.as_bytes();
    let first = bytes[0];
    if !(first.is_ascii_digit() || first == b'-' || first == b'+' || first == b'.') {
        return V::Str(text);
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(&text);
    if !digits.is_empty() && digits.bytes().all(|c| c.is_ascii_digit()) {
        if let Ok(i) = text.parse::<i64>() {
            return V::Int(i);
        }
        if let Ok(f) = text.parse::<f64>() {
            return V::Float(f);
        }
    }
    if let Some(hex) = text.strip_prefix("0x")
        && let Ok(i) = i64::from_str_radix(hex, 16)
    {
        return V::Int(i);
    }
    if let Some(oct) = text.strip_prefix("0o")
        && let Ok(i) = i64::from_str_radix(oct, 8)
    {
        return V::Int(i);
    }
    // A float: digits with a dot and/or exponent (no "inf"/"nan" words).
    let is_float_syntax = digits
        .bytes()
        .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'-' | b'+'))
        && digits.bytes().any(|c| c.is_ascii_digit());
    if is_float_syntax && let Ok(f) = text.parse::<f64>() {
        return V::Float(f);
    }
    V::Str(text)
}

struct Builder {
    file: Arc<str>,
    stack: Vec<Frame>,
    anchors: HashMap<usize, (Node, usize)>,
    root: Option<Node>,
    documents: usize,
    alias_nodes: usize,
    error: Option<ParseError>,
    /// Whether the last value seen was a `|` or `>` block scalar.
    last_is_block: bool,
    /// Open collections beyond `MAX_DEPTH`, being skipped.
    skipped: usize,
}

struct Frame {
    pos: Pos,
    anchor: usize,
    kind: FrameKind,
}

enum FrameKind {
    Seq(Vec<Node>),
    Map {
        pairs: Vec<(Node, Node)>,
        key: Option<Node>,
    },
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let pos = self.pos_of(&mark);
        // Past the depth limit, events are only counted, so no deep tree is
        // built (or dropped) recursively.
        if self.skipped > 0 {
            match ev {
                Event::SequenceStart(..) | Event::MappingStart(..) => self.skipped += 1,
                Event::SequenceEnd | Event::MappingEnd => self.skipped -= 1,
                _ => {}
            }
            return;
        }
        if matches!(ev, Event::SequenceStart(..) | Event::MappingStart(..))
            && self.stack.len() >= MAX_DEPTH
        {
            self.skipped = 1;
            if self.error.is_none() {
                self.error = Some(ParseError {
                    pos,
                    msg: format!("lists and mappings are nested more than {MAX_DEPTH} deep"),
                    hint: Some("no CWL document needs this much nesting".into()),
                });
            }
            return;
        }
        match ev {
            Event::DocumentStart => {
                self.documents += 1;
                if self.documents == 2 && self.error.is_none() {
                    self.error = Some(ParseError {
                        pos,
                        msg: "a CWL file holds one YAML document, this is a second one".into(),
                        hint: Some("remove the \"---\" line and everything after it".into()),
                    });
                }
            }
            Event::Scalar(text, style, anchor, _tag) => {
                self.last_is_block = matches!(style, TScalarStyle::Literal | TScalarStyle::Folded);
                let v = if style == TScalarStyle::Plain {
                    plain_scalar(text)
                } else {
                    V::Str(text)
                };
                self.finish(Node::new(pos, v), anchor);
            }
            Event::SequenceStart(anchor, _) => self.start(Frame {
                pos,
                anchor,
                kind: FrameKind::Seq(Vec::new()),
            }),
            Event::MappingStart(anchor, _) => self.start(Frame {
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
                self.last_is_block = false;
                let node = match self.anchors.get(&id) {
                    Some((n, size)) if self.alias_nodes + size <= ALIAS_BUDGET => {
                        self.alias_nodes += size;
                        n.clone()
                    }
                    found => {
                        if self.error.is_none() {
                            self.error = Some(ParseError {
                                pos: pos.clone(),
                                msg: if found.is_some() {
                                    "aliases expand this document to too many values".into()
                                } else {
                                    "alias to an unknown anchor".into()
                                },
                                hint: None,
                            });
                        }
                        Node::new(pos, V::Null)
                    }
                };
                self.finish(node, 0);
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
        }
    }
}

impl Builder {
    fn start(&mut self, frame: Frame) {
        self.last_is_block = false;
        self.stack.push(frame);
    }

    fn pos_of(&self, mark: &Marker) -> Pos {
        Pos {
            file: self.file.clone(),
            line: u32::try_from(mark.line()).unwrap_or(u32::MAX),
            col: u32::try_from(mark.col() + 1).unwrap_or(u32::MAX),
        }
    }

    fn finish(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            let size = node.size();
            self.anchors.insert(anchor, (node.clone(), size));
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

    fn close(&mut self, frame: Frame) -> Node {
        let mut pos = frame.pos;
        let v = match frame.kind {
            FrameKind::Seq(items) => V::Seq(items),
            FrameKind::Map { mut pairs, .. } => {
                if let Some((k, _)) = pairs.first()
                    && (k.pos.line, k.pos.col) < (pos.line, pos.col)
                {
                    pos = k.pos.clone();
                }
                for (k, v) in &mut pairs {
                    if v.is_null() && v.pos.line != k.pos.line {
                        v.pos = k.pos.clone();
                    }
                }
                let mut entries: Vec<Entry> = Vec::with_capacity(pairs.len());
                for (k, v) in pairs {
                    let key = match k.v {
                        V::Str(s) => s,
                        V::Null => String::new(),
                        V::Bool(b) => b.to_string(),
                        V::Int(i) => i.to_string(),
                        V::Float(f) => f.to_string(),
                        _ => {
                            if self.error.is_none() {
                                self.error = Some(ParseError {
                                    pos: k.pos.clone(),
                                    msg: format!("a key must be a name, not {}", k.describe()),
                                    hint: Some("quote a value that starts with `{` or `[`".into()),
                                });
                            }
                            continue;
                        }
                    };
                    if key == "<<"
                        && let V::Map(merged) = v.v
                    {
                        for e in merged {
                            if !entries.iter().any(|o| o.key == e.key) {
                                entries.push(e);
                            }
                        }
                        continue;
                    }
                    if let Some(dup) = entries.iter().find(|e| e.key == key) {
                        if self.error.is_none() {
                            self.error = Some(ParseError {
                                pos: k.pos.clone(),
                                msg: format!(
                                    "duplicate key `{key}` (first at line {})",
                                    dup.key_pos.line
                                ),
                                hint: Some("remove one of them".into()),
                            });
                        }
                        continue;
                    }
                    entries.push(Entry {
                        key,
                        key_pos: k.pos,
                        value: v,
                    });
                }
                V::Map(entries)
            }
        };
        let node = Node::new(pos, v);
        if frame.anchor > 0 {
            let size = node.size();
            self.anchors.insert(frame.anchor, (node.clone(), size));
        }
        node
    }
}
