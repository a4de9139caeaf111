//! Checking the fields of a mapping: known names, required ones, value
//! kinds, namespaced extensions, and the map form of list fields
//! (`mapSubject`/`mapPredicate`).

use super::node::{Entry, Node, Pos, V};
use super::{Loader, uri};

/// Kinds of scalar or structure a field may hold.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum K {
    Str,
    Bool,
    Int,
    Num,
    Seq,
    Map,
    Null,
    /// A string holding an expression: `$(...)` or `${...}`.
    Expr,
}

impl K {
    fn matches(self, n: &Node) -> bool {
        matches!(
            (self, &n.v),
            (K::Str, V::Str(_))
                | (K::Bool, V::Bool(_))
                | (K::Int, V::Int(_))
                | (K::Num, V::Int(_) | V::Float(_))
                | (K::Seq, V::Seq(_))
                | (K::Map, V::Map(_))
                | (K::Null, V::Null)
        ) || (self == K::Expr && n.as_str().is_some_and(super::process::is_expression))
    }
    fn name(self) -> &'static str {
        match self {
            K::Str => "a string",
            K::Bool => "true or false",
            K::Int => "an integer",
            K::Num => "a number",
            K::Seq => "a list",
            K::Map => "a mapping",
            K::Null => "null",
            K::Expr => "an expression ($(...) or ${...})",
        }
    }
}

impl Loader {
    /// `label` is a string; `doc` a string or a list of strings.
    pub(crate) fn check_label_doc(&mut self, key: &str, value: &Node) {
        match key {
            "label" => {
                self.expect(value, &[K::Str], "label");
            }
            "doc" if self.expect(value, &[K::Str, K::Seq], "doc") => {
                for i in value.items().unwrap_or(&[]) {
                    self.expect(i, &[K::Str], "doc");
                }
            }
            _ => {}
        }
    }

    /// Reports an error unless `n` is one of `kinds`. Returns whether it is.
    pub(crate) fn expect(&mut self, n: &Node, kinds: &[K], what: &str) -> bool {
        if kinds.iter().any(|k| k.matches(n)) {
            return true;
        }
        let names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
        self.error(
            &n.pos,
            format!(
                "`{what}` must be {}, not {}",
                names.join(" or "),
                n.describe()
            ),
            None,
        );
        false
    }

    /// Checks `value` is one of `symbols`.
    pub(crate) fn expect_enum(&mut self, n: &Node, symbols: &[&str], what: &str) {
        if n.is_null() {
            return;
        }
        match n.as_str() {
            Some(s) if symbols.contains(&s) => {}
            Some(s) => {
                let hint = uri::did_you_mean(s, symbols.iter().copied()).map_or_else(
                    || format!("use one of: {}", symbols.join(", ")),
                    |m| format!("did you mean `{m}`?"),
                );
                self.error(&n.pos, format!("`{what}` cannot be `{s}`"), Some(hint));
            }
            None => {
                self.expect(n, &[K::Str], what);
            }
        }
    }

    /// Expands `prefix:rest` through `$namespaces`, if the prefix is known.
    pub(crate) fn expand_prefix(&self, s: &str) -> Option<String> {
        if uri::has_scheme(s) {
            return Some(s.to_string());
        }
        let (prefix, rest) = s.split_once(':')?;
        let ns = self.namespaces.get(prefix)?.as_str()?;
        Some(format!("{ns}{rest}"))
    }

    /// Checks the fields of a mapping: unknown ones are errors (with a
    /// suggestion) unless they are namespaced extensions; required ones must
    /// be present. Namespaced keys are expanded to full URIs in place.
    pub(crate) fn check_fields(
        &mut self,
        entries: &mut [Entry],
        pos: &Pos,
        what: &str,
        allowed: &[&str],
        required: &[&str],
    ) {
        for e in entries.iter_mut() {
            if allowed.contains(&e.key.as_str())
                || matches!(e.key.as_str(), "$namespaces" | "$schemas" | "$base")
            {
                continue;
            }
            if e.key.contains(':') {
                match self.expand_prefix(&e.key) {
                    Some(full) => e.key = full,
                    None => {
                        let prefix = e.key.split(':').next().unwrap_or("");
                        self.error(
                            &e.key_pos,
                            format!("unknown namespace prefix `{prefix}` in field `{}`", e.key),
                            Some(format!(
                                "declare it at the top of the document: `$namespaces: {{{prefix}: http://...}}`"
                            )),
                        );
                    }
                }
                continue;
            }
            let misplaced = match e.key.as_str() {
                "glob" | "outputEval" if allowed.contains(&"outputBinding") => {
                    Some("outputBinding")
                }
                "position" | "prefix" | "separate" | "itemSeparator" | "shellQuote"
                    if allowed.contains(&"inputBinding") =>
                {
                    Some("inputBinding")
                }
                _ => None,
            };
            let hint = match uri::did_you_mean(&e.key, allowed.iter().copied()) {
                _ if matches!(e.key.as_str(), "items" | "fields" | "symbols")
                    && allowed.contains(&"type")
                    && !allowed.contains(&"items") =>
                {
                    format!(
                        "`{}` belongs to a type: write `type: {{type: array, items: string}}` (or \
                         `type: string[]`), with the type mapping under `type`",
                        e.key
                    )
                }
                _ if misplaced.is_some() => {
                    format!("move `{}` under `{}`", e.key, misplaced.unwrap_or_default())
                }
                Some(m) => format!("did you mean `{m}`?"),
                None if allowed.is_empty() => format!("{what} takes no fields"),
                None => format!(
                    "{what} takes: {}; extensions must be namespaced (`prefix:{}`)",
                    allowed.join(", "),
                    e.key
                ),
            };
            self.error(
                &e.key_pos,
                format!("unknown field `{}` in {what}", e.key),
                Some(hint),
            );
        }
        for r in required {
            if !entries.iter().any(|e| e.key == *r) {
                self.error(pos, format!("{what} is missing required field `{r}`"), None);
            }
        }
    }

    /// The remaining extension entries (those with full-URI keys), to keep.
    pub(crate) fn extensions(entries: Vec<Entry>) -> impl Iterator<Item = Entry> {
        entries.into_iter().filter(|e| uri::has_scheme(&e.key))
    }

    /// Turns the map form `{key: value}` of a list field into the list form,
    /// per the field's `mapSubject` and `mapPredicate`.
    pub(crate) fn list_form(
        &mut self,
        node: Node,
        subject: &str,
        predicate: Option<&str>,
        what: &str,
    ) -> Vec<Node> {
        match node.v {
            V::Null => Vec::new(),
            V::Seq(items) => items,
            V::Map(mut entries) => {
                // Like schema-salad, the map form is read in key order.
                entries.sort_by(|a, b| a.key.cmp(&b.key));
                entries
                    .into_iter()
                    .map(|e| {
                        let key = Node::str(&e.key_pos, e.key);
                        match e.value.v {
                            V::Map(mut inner) => {
                                inner.retain(|x| x.key != subject);
                                inner.insert(
                                    0,
                                    Entry {
                                        key: subject.to_string(),
                                        key_pos: key.pos.clone(),
                                        value: key,
                                    },
                                );
                                Node::new(e.key_pos, V::Map(inner))
                            }
                            V::Null => {
                                let mut m = Node::map(&e.key_pos);
                                m.set(subject, key);
                                m
                            }
                            _ => {
                                let mut m = Node::map(&e.key_pos);
                                m.set(subject, key);
                                match predicate {
                                    Some(p) => m.set(p, e.value),
                                    None => self.error(
                                        &e.value.pos,
                                        format!("each entry of `{what}` must be a mapping"),
                                        None,
                                    ),
                                }
                                m
                            }
                        }
                    })
                    .collect()
            }
            _ => {
                self.error(
                    &node.pos,
                    format!(
                        "`{what}` must be a list or a mapping, not {}",
                        node.describe()
                    ),
                    None,
                );
                Vec::new()
            }
        }
    }
}
