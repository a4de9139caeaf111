//! CWL expressions: parameter references and JavaScript.
//!
//! A string field of a CWL document that contains `$(` or `${` is
//! evaluated by an [`Evaluator`] (CWL v1.2 concepts: "Parameter
//! references", "Expressions", "String interpolation"):
//!
//! - `$(inputs.x.y[0])`, `$(self['a b'])`, `$(runtime.outdir)`,
//!   `$(inputs.list.length)` are *parameter references*, resolved natively
//!   without a JavaScript engine ([`paramref`]).
//! - With `InlineJavascriptRequirement`, any other `$(...)` is a JavaScript
//!   expression and `${...}` a JavaScript function body, run by QuickJS
//!   ([`js`]) under a time and a memory limit ([`JsLimits`]).
//! - A string that is exactly one expression (after trimming whitespace)
//!   gives that expression's value, of any JSON type. Otherwise each
//!   expression's value is interpolated as text ([`to_interpolated_string`]).
//! - `\$(` and `\${` stand for `$(` and `${` (not evaluated), `\\` for `\`;
//!   any other backslash is kept.

mod format;
mod js;
mod paramref;

use serde_json::Value;

use crate::{CwlError, Runtime};

pub use format::{format_number, format_number_json, to_interpolated_string, to_sorted_json};
pub use js::JsLimits;

/// Longest expression text quoted in an error message.
const SHOWN_MAX_CHARS: usize = 300;

/// Evaluates the expressions of one process: parameter references natively,
/// `$(...)` and `${...}` JavaScript through an embedded engine when the
/// process has `InlineJavascriptRequirement` (with its `expressionLib`).
///
/// The JavaScript engine is created on the first JavaScript evaluation and
/// reused for the following ones; the `expressionLib` is loaded into it
/// once. An evaluator for a process without `InlineJavascriptRequirement`
/// never creates one. An `Evaluator` is `Send`, so it may live in async
/// tasks.
pub struct Evaluator {
    js: bool,
    lib: Vec<String>,
    limits: JsLimits,
    engine: Option<js::JsEngine>,
    legacy_escapes: bool,
}

impl std::fmt::Debug for Evaluator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Evaluator")
            .field("js", &self.js)
            .field("expression_lib_entries", &self.lib.len())
            .field("limits", &self.limits)
            .field("js_started", &self.engine.is_some())
            .field("legacy_escapes", &self.legacy_escapes)
            .finish()
    }
}

/// A scanned piece of an expression-bearing string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Span {
    /// `$(...)` or `${...}` from `start` (the `$`) to `end` (exclusive).
    Expr { start: usize, end: usize },
    /// A backslash at `start` and the character after it.
    Backslash { start: usize },
}

/// Finds the next expression or backslash escape in `s`, as the reference
/// runner does: parentheses, braces and quoted strings inside an expression
/// are balanced, a backslash escapes the next character inside quotes.
fn scan(s: &[char]) -> Result<Option<Span>, CwlError> {
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum St {
        Default,
        Dollar,
        Paren,
        Brace,
        Single,
        Double,
        Backslash,
    }
    let mut stack = vec![St::Default];
    let mut start = 0;
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        let state = stack.last().copied().unwrap_or(St::Default);
        match state {
            St::Default => match c {
                '$' => stack.push(St::Dollar),
                '\\' => stack.push(St::Backslash),
                _ => {}
            },
            St::Backslash => {
                stack.pop();
                if stack.last() == Some(&St::Default) {
                    return Ok(Some(Span::Backslash { start: i - 1 }));
                }
            }
            St::Dollar => match c {
                '(' => {
                    start = i - 1;
                    stack.push(St::Paren);
                }
                '{' => {
                    start = i - 1;
                    stack.push(St::Brace);
                }
                _ => {
                    stack.pop();
                    // Look at this character again in the outer state.
                    continue;
                }
            },
            St::Paren | St::Brace => {
                let (open, close) = if state == St::Paren {
                    ('(', ')')
                } else {
                    ('{', '}')
                };
                if c == open {
                    stack.push(state);
                } else if c == close {
                    stack.pop();
                    if stack.last() == Some(&St::Dollar) {
                        return Ok(Some(Span::Expr { start, end: i + 1 }));
                    }
                } else if c == '\'' {
                    stack.push(St::Single);
                } else if c == '"' {
                    stack.push(St::Double);
                }
            }
            St::Single | St::Double => {
                let quote = if state == St::Single { '\'' } else { '"' };
                if c == quote {
                    stack.pop();
                } else if c == '\\' {
                    stack.push(St::Backslash);
                }
            }
        }
        i += 1;
    }
    let trailing_ok = stack.len() == 2 && matches!(stack[1], St::Backslash | St::Dollar);
    if stack.len() > 1 && !trailing_ok {
        let rest: String = s[start..].iter().collect();
        return Err(CwlError::Invalid(format!(
            "unfinished expression starting at character {start}: '{}' (a `$(` or `${{` \
             needs its closing `)` or `}}`; write `\\$(` for a literal `$(`)",
            shorten(&rest)
        )));
    }
    Ok(None)
}

fn shorten(s: &str) -> String {
    if s.chars().count() <= SHOWN_MAX_CHARS {
        s.to_string()
    } else {
        let head: String = s.chars().take(SHOWN_MAX_CHARS).collect();
        format!("{head}...")
    }
}

/// The `runtime` object that expressions see, from a [`Runtime`]:
/// `outdir`, `tmpdir` (paths as strings), `cores`, `ram`, `outdirSize`,
/// `tmpdirSize`. Add `exitCode` for output evaluation.
pub fn runtime_object(rt: &Runtime) -> Value {
    serde_json::json!({
        "outdir": rt.outdir.to_string_lossy(),
        "tmpdir": rt.tmpdir.to_string_lossy(),
        "cores": rt.cores,
        "ram": rt.ram,
        "outdirSize": rt.outdir_size,
        "tmpdirSize": rt.tmpdir_size,
    })
}

impl Evaluator {
    /// An evaluator for a process with these effective requirements, with
    /// the limits of [`JsLimits::current_default`].
    /// JavaScript is enabled when one of them is `InlineJavascriptRequirement`
    /// (the last one wins, with its `expressionLib`, a list of strings).
    pub fn new(requirements: &[Value]) -> Result<Evaluator, CwlError> {
        let ijr = requirements.iter().rev().find(|r| {
            r.get("class").and_then(Value::as_str) == Some("InlineJavascriptRequirement")
        });
        let mut lib = Vec::new();
        if let Some(req) = ijr {
            match req.get("expressionLib") {
                None | Some(Value::Null) => {}
                Some(Value::Array(items)) => {
                    for (n, item) in items.iter().enumerate() {
                        let Some(code) = item.as_str() else {
                            return Err(CwlError::Invalid(format!(
                                "InlineJavascriptRequirement.expressionLib[{n}] must be a string \
                                 of JavaScript (or a $include of one), not {}",
                                shorten(&item.to_string())
                            )));
                        };
                        lib.push(code.to_string());
                    }
                }
                Some(other) => {
                    return Err(CwlError::Invalid(format!(
                        "InlineJavascriptRequirement.expressionLib must be a list of strings, not {}",
                        shorten(&other.to_string())
                    )));
                }
            }
        }
        Ok(Evaluator {
            js: ijr.is_some(),
            lib,
            limits: JsLimits::current_default(),
            engine: None,
            legacy_escapes: false,
        })
    }

    /// An evaluator like [`Evaluator::new`] with other JavaScript limits.
    pub fn with_limits(requirements: &[Value], limits: JsLimits) -> Result<Evaluator, CwlError> {
        let mut ev = Evaluator::new(requirements)?;
        ev.set_limits(limits);
        Ok(ev)
    }

    /// Changes the time and memory limits of JavaScript evaluations.
    pub fn set_limits(&mut self, limits: JsLimits) {
        self.limits = limits;
        if let Some(engine) = self.engine.as_mut() {
            engine.set_limits(limits);
        }
    }

    /// The JavaScript limits in force.
    pub fn limits(&self) -> JsLimits {
        self.engine
            .as_ref()
            .map_or(self.limits, js::JsEngine::limits)
    }

    /// Whether JavaScript is enabled (`InlineJavascriptRequirement`).
    pub fn has_js(&self) -> bool {
        self.js
    }

    /// Whether the JavaScript engine has been started (for tests and
    /// diagnostics: it starts on the first JavaScript evaluation).
    pub fn js_started(&self) -> bool {
        self.engine.is_some()
    }

    /// Uses the backslash rules of CWL v1.0 and v1.1 (a backslash always
    /// escapes the next character, which is kept) instead of v1.2's.
    pub fn set_legacy_escapes(&mut self, legacy: bool) {
        self.legacy_escapes = legacy;
    }

    /// Picks the backslash rules of the document's *original* `cwlVersion`
    /// (before the loader upgraded it): v1.0 and v1.1 documents get the old
    /// rules, as in the reference runner. Unknown versions get v1.2's.
    pub fn set_cwl_version(&mut self, original_version: &str) {
        self.legacy_escapes = matches!(
            original_version,
            "v1.0" | "v1.1" | "v1.1.0-dev1" | "v1.2.0-dev1" | "v1.2.0-dev2" | "v1.2.0-dev3"
        );
    }

    /// True when `s` holds an expression or parameter reference.
    pub fn is_expression(s: &str) -> bool {
        s.contains("$(") || s.contains("${")
    }

    /// Checks, without evaluating, that every expression in `s` is
    /// complete and, when `js` is false, that each is a parameter
    /// reference. For the loader's validation of a document.
    pub fn check(s: &str, js: bool) -> Result<(), CwlError> {
        if !Self::is_expression(s) {
            return Ok(());
        }
        let chars: Vec<char> = s.trim().chars().collect();
        let mut rest: &[char] = &chars;
        while let Some(span) = scan(rest)? {
            match span {
                Span::Expr { start, end } => {
                    let code: String = rest[start + 1..end].iter().collect();
                    if !js && !is_param_ref(&code) {
                        return Err(needs_js(&format!("${code}")));
                    }
                    rest = &rest[end..];
                }
                Span::Backslash { start } => {
                    rest = &rest[(start + 2).min(rest.len())..];
                }
            }
        }
        Ok(())
    }

    /// Evaluates `v`: a string is interpolated (a string that is exactly one
    /// expression, leading and trailing whitespace aside, gives that
    /// expression's value, of any type); any other value is returned
    /// unchanged. A string without `$(` or `${` is returned as it is.
    pub fn eval(
        &mut self,
        v: &Value,
        inputs: &Value,
        self_: &Value,
        runtime: &Value,
    ) -> Result<Value, CwlError> {
        self.eval_with(v, inputs, self_, runtime, true)
    }

    /// [`Evaluator::eval`] without trimming the string's leading and
    /// trailing whitespace first (as for `InitialWorkDirRequirement`
    /// `entry` fields, where the whitespace is file content).
    pub fn eval_keep_whitespace(
        &mut self,
        v: &Value,
        inputs: &Value,
        self_: &Value,
        runtime: &Value,
    ) -> Result<Value, CwlError> {
        self.eval_with(v, inputs, self_, runtime, false)
    }

    /// Evaluates a string as [`Evaluator::eval`] does.
    pub fn eval_str(
        &mut self,
        s: &str,
        inputs: &Value,
        self_: &Value,
        runtime: &Value,
    ) -> Result<Value, CwlError> {
        self.interpolate(s, inputs, self_, runtime, true)
    }

    fn eval_with(
        &mut self,
        v: &Value,
        inputs: &Value,
        self_: &Value,
        runtime: &Value,
        strip: bool,
    ) -> Result<Value, CwlError> {
        match v {
            Value::String(s) => self.interpolate(s, inputs, self_, runtime, strip),
            other => Ok(other.clone()),
        }
    }

    fn interpolate(
        &mut self,
        s: &str,
        inputs: &Value,
        self_: &Value,
        runtime: &Value,
        strip: bool,
    ) -> Result<Value, CwlError> {
        if !Self::is_expression(s) {
            return Ok(Value::String(s.to_string()));
        }
        let text = if strip { s.trim() } else { s };
        let chars: Vec<char> = text.chars().collect();
        let mut rest: &[char] = &chars;
        let mut out = String::new();
        let mut first = true;
        while let Some(span) = scan(rest)? {
            match span {
                Span::Expr { start, end } => {
                    out.extend(&rest[..start]);
                    let code: String = rest[start + 1..end].iter().collect();
                    let value = self.eval_one(&code, inputs, self_, runtime)?;
                    if first && start == 0 && end == rest.len() {
                        return Ok(value);
                    }
                    out.push_str(&to_interpolated_string(&value));
                    rest = &rest[end..];
                }
                Span::Backslash { start } => {
                    out.extend(&rest[..start]);
                    let next = rest.get(start + 1).copied();
                    let after = rest.get(start + 2).copied();
                    let mut consumed = 2;
                    if self.legacy_escapes {
                        out.extend(next);
                    } else if next == Some('$') && matches!(after, Some('(' | '{')) {
                        // `\$(` and `\${`: the literal text, not evaluated.
                        out.push('$');
                        out.extend(after);
                        consumed = 3;
                    } else if next == Some('\\') {
                        out.push('\\');
                    } else {
                        out.push('\\');
                        out.extend(next);
                    }
                    rest = &rest[(start + consumed).min(rest.len())..];
                }
            }
            first = false;
        }
        out.extend(rest);
        Ok(Value::String(out))
    }

    /// Evaluates one `$(...)` or `${...}`; `code` is without the `$`.
    fn eval_one(
        &mut self,
        code: &str,
        inputs: &Value,
        self_: &Value,
        runtime: &Value,
    ) -> Result<Value, CwlError> {
        let shown = format!("${}", shorten(code));
        let mut native_error = None;
        if let Some(inner) = code.strip_prefix('(').and_then(|c| c.strip_suffix(')'))
            && let Some(r) = paramref::parse(inner)
        {
            match paramref::resolve(&r, inputs, self_, runtime) {
                Ok(v) => return Ok(v),
                Err(e) => native_error = Some(e),
            }
        }
        if !self.js {
            return Err(match native_error {
                Some(e) => CwlError::Failed(format!("parameter reference {shown}: {e}")),
                None => needs_js(&shown),
            });
        }
        // A reference that failed natively (a missing field, say) gets
        // JavaScript's answer, as in the reference runner.
        if self.engine.is_none() {
            self.engine = Some(js::JsEngine::new(&self.lib, self.limits)?);
        }
        match self.engine.as_mut() {
            Some(engine) => engine.eval(code, &shown, inputs, self_, runtime),
            None => Err(CwlError::Failed(
                "the JavaScript engine is not available".into(),
            )),
        }
    }
}

fn is_param_ref(code: &str) -> bool {
    code.strip_prefix('(')
        .and_then(|c| c.strip_suffix(')'))
        .and_then(paramref::parse)
        .is_some()
}

fn needs_js(shown: &str) -> CwlError {
    CwlError::Invalid(format!(
        "{shown} is not a parameter reference (like $(inputs.name), $(self[0].path) or \
         $(runtime.outdir)); JavaScript expressions need InlineJavascriptRequirement in the \
         process's requirements"
    ))
}

#[cfg(test)]
mod tests;
