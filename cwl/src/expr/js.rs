//! JavaScript expressions through QuickJS (the `rquickjs` crate).
//!
//! One [`JsEngine`] belongs to one [`super::Evaluator`]: a QuickJS runtime
//! with a memory limit, an interrupt handler enforcing a time limit, and one
//! context into which the `expressionLib` is loaded once. Each evaluation
//! sets the globals `inputs`, `self` and `runtime` from JSON, runs the code
//! in strict mode and converts the result back to JSON.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rquickjs::context::intrinsic;
use rquickjs::{Context, Ctx, Runtime};
use serde_json::Value;

use crate::CwlError;

/// Limits on one JavaScript evaluation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JsLimits {
    /// Wall-clock time one expression may run (default 10 s).
    pub timeout: Duration,
    /// Memory the engine may hold, in bytes, `expressionLib` and the
    /// injected `inputs` included (default 256 MiB).
    pub memory_bytes: usize,
}

impl Default for JsLimits {
    fn default() -> Self {
        JsLimits {
            timeout: Duration::from_secs(10),
            memory_bytes: 256 << 20,
        }
    }
}

/// Process-wide defaults for new evaluators (0: the built-in default).
static DEFAULT_TIMEOUT_MS: AtomicU64 = AtomicU64::new(0);
static DEFAULT_MEMORY_BYTES: AtomicUsize = AtomicUsize::new(0);

impl JsLimits {
    /// The limits a new [`super::Evaluator`] starts with: those given to
    /// [`JsLimits::set_default`], else 10 s and 256 MiB.
    pub fn current_default() -> JsLimits {
        let builtin = JsLimits::default();
        let ms = DEFAULT_TIMEOUT_MS.load(Ordering::Relaxed);
        let mem = DEFAULT_MEMORY_BYTES.load(Ordering::Relaxed);
        JsLimits {
            timeout: if ms == 0 {
                builtin.timeout
            } else {
                Duration::from_millis(ms)
            },
            memory_bytes: if mem == 0 { builtin.memory_bytes } else { mem },
        }
    }

    /// Sets the limits of every evaluator created afterwards in this
    /// process (for a runner option such as `--eval-timeout`).
    pub fn set_default(limits: JsLimits) {
        let ms = u64::try_from(limits.timeout.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        DEFAULT_TIMEOUT_MS.store(ms, Ordering::Relaxed);
        DEFAULT_MEMORY_BYTES.store(limits.memory_bytes.max(1), Ordering::Relaxed);
    }
}

/// QuickJS's own C stack limit. Evaluations run on the caller's thread
/// (2 MiB stacks for Rust and tokio threads), so stay well below that.
const MAX_STACK_BYTES: usize = 512 << 10;

/// A QuickJS runtime and context with the expression library loaded.
pub(crate) struct JsEngine {
    runtime: Runtime,
    context: Context,
    /// When the running evaluation must stop: nanoseconds after `epoch`;
    /// `u64::MAX` when nothing runs.
    deadline: Arc<AtomicU64>,
    epoch: Instant,
    /// Set by the interrupt handler when it stopped an evaluation.
    interrupted: Arc<AtomicBool>,
    limits: JsLimits,
}

impl JsEngine {
    /// Creates the engine and runs the `expressionLib` entries (in order, as
    /// one strict-mode script).
    pub(crate) fn new(lib: &[String], limits: JsLimits) -> Result<JsEngine, CwlError> {
        let runtime = Runtime::new()
            .map_err(|e| CwlError::Failed(format!("cannot start the JavaScript engine: {e}")))?;
        runtime.set_memory_limit(limits.memory_bytes);
        runtime.set_max_stack_size(MAX_STACK_BYTES);
        let deadline = Arc::new(AtomicU64::new(u64::MAX));
        let interrupted = Arc::new(AtomicBool::new(false));
        let epoch = Instant::now();
        {
            let deadline = deadline.clone();
            let interrupted = interrupted.clone();
            runtime.set_interrupt_handler(Some(Box::new(move || {
                let now = u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
                if now >= deadline.load(Ordering::Relaxed) {
                    interrupted.store(true, Ordering::Relaxed);
                    true
                } else {
                    false
                }
            })));
        }
        // Every standard object but typed arrays (a third of the cost of a
        // context, and of no use to CWL expressions) and the browser-only
        // `performance` and `DOMException`.
        let context = Context::custom::<(
            intrinsic::Date,
            intrinsic::Eval,
            intrinsic::RegExpCompiler,
            intrinsic::RegExp,
            intrinsic::Json,
            intrinsic::Proxy,
            intrinsic::MapSet,
            intrinsic::Promise,
            intrinsic::WeakRef,
        )>(&runtime)
        .map_err(|e| CwlError::Failed(format!("cannot create a JavaScript context: {e}")))?;
        let mut engine = JsEngine {
            runtime,
            context,
            deadline,
            epoch,
            interrupted,
            limits,
        };
        if !lib.is_empty() {
            let script = format!("\"use strict\";\n{}\n", lib.join("\n"));
            engine
                .run(&script, "expressionLib", |_| Ok(()))
                .map_err(|e| match e {
                    CwlError::Failed(m) => {
                        CwlError::Failed(format!("InlineJavascriptRequirement.expressionLib: {m}"))
                    }
                    other => other,
                })?;
        }
        Ok(engine)
    }

    /// The limits in force.
    pub(crate) fn limits(&self) -> JsLimits {
        self.limits
    }

    /// Changes the limits for the next evaluations.
    pub(crate) fn set_limits(&mut self, limits: JsLimits) {
        self.runtime.set_memory_limit(limits.memory_bytes);
        self.limits = limits;
    }

    /// Evaluates one expression: `code` is `(...)` (a JavaScript expression
    /// with its parentheses) or `{...}` (a function body with its braces).
    /// `shown` is the expression as written, for error messages.
    pub(crate) fn eval(
        &mut self,
        code: &str,
        shown: &str,
        inputs: &Value,
        self_: &Value,
        runtime: &Value,
    ) -> Result<Value, CwlError> {
        let script = if code.starts_with('{') {
            format!("\"use strict\";\n(function(){code})()")
        } else {
            format!("\"use strict\";\n(function(){{return (\n{code}\n);}})()")
        };
        let vars = [
            ("inputs", inputs.to_string()),
            ("self", self_.to_string()),
            ("runtime", runtime.to_string()),
        ];
        self.run(&script, shown, |ctx| {
            let globals = ctx.globals();
            for (name, json) in &vars {
                let v = ctx.json_parse(json.as_str())?;
                globals.set(*name, v)?;
            }
            Ok(())
        })
    }

    /// Runs `script` after `setup`, under the time limit, and converts its
    /// value to JSON.
    fn run<F>(&mut self, script: &str, shown: &str, setup: F) -> Result<Value, CwlError>
    where
        F: for<'js> FnOnce(&Ctx<'js>) -> rquickjs::Result<()>,
    {
        self.interrupted.store(false, Ordering::Relaxed);
        let start = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let limit = u64::try_from(self.limits.timeout.as_nanos()).unwrap_or(u64::MAX);
        self.deadline
            .store(start.saturating_add(limit), Ordering::Relaxed);
        let limits = self.limits;
        let interrupted = self.interrupted.clone();
        let result = self.context.with(|ctx| -> Result<Value, CwlError> {
            let outcome = setup(&ctx).and_then(|()| {
                let v: rquickjs::Value = ctx.eval(script.as_bytes().to_vec())?;
                match ctx.json_stringify(v)? {
                    Some(s) => s.to_string().map(Some),
                    None => Ok(None),
                }
            });
            match outcome {
                Ok(Some(json)) => serde_json::from_str(&json).map_err(|e| {
                    CwlError::Failed(format!(
                        "expression {shown} returned a value that is not JSON ({e})"
                    ))
                }),
                // `undefined`, a function or a symbol.
                Ok(None) => Ok(Value::Null),
                Err(e) => Err(describe_failure(
                    &ctx,
                    e,
                    shown,
                    limits,
                    interrupted.load(Ordering::Relaxed),
                )),
            }
        });
        self.deadline.store(u64::MAX, Ordering::Relaxed);
        if result.is_err() {
            // Give back what a failed (perhaps huge) evaluation allocated.
            self.runtime.run_gc();
        }
        result
    }
}

/// Turns a QuickJS error into a `CwlError::Failed` naming the expression.
fn describe_failure(
    ctx: &Ctx<'_>,
    e: rquickjs::Error,
    shown: &str,
    limits: JsLimits,
    interrupted: bool,
) -> CwlError {
    let message = if e.is_exception() {
        let thrown = ctx.catch();
        exception_text(ctx, &thrown)
    } else {
        e.to_string()
    };
    if interrupted {
        return CwlError::Failed(format!(
            "expression {shown} did not finish within the time limit of {:?} and was stopped",
            limits.timeout
        ));
    }
    if message.contains("out of memory") || matches!(e, rquickjs::Error::Allocation) {
        return CwlError::Failed(format!(
            "expression {shown} ran out of memory: it needed more than the limit of {} MiB",
            limits.memory_bytes >> 20
        ));
    }
    CwlError::Failed(format!("expression {shown} failed: {message}"))
}

/// The text of a thrown JavaScript value: `Name: message` for an error
/// object (with the stack when there is one), the value itself otherwise.
fn exception_text<'js>(ctx: &Ctx<'js>, thrown: &rquickjs::Value<'js>) -> String {
    if let Some(obj) = thrown.as_object() {
        let name: Option<String> = obj.get("name").ok();
        let message: Option<String> = obj.get("message").ok();
        if let Some(message) = message {
            let mut text = match name {
                Some(name) if !name.is_empty() => format!("{name}: {message}"),
                _ => message,
            };
            let stack: Option<String> = obj.get("stack").ok();
            if let Some(stack) = stack.filter(|s| !s.trim().is_empty()) {
                text.push('\n');
                text.push_str(stack.trim_end());
            }
            return text;
        }
    }
    if let Some(s) = thrown.as_string().and_then(|s| s.to_string().ok()) {
        return s;
    }
    match ctx.json_stringify(thrown.clone()) {
        Ok(Some(s)) => s.to_string().unwrap_or_else(|_| "an exception".to_string()),
        _ => format!("{thrown:?}"),
    }
}
