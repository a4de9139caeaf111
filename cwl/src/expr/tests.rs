use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::*;

fn no_js() -> Evaluator {
    Evaluator::new(&[]).unwrap()
}

fn with_js(lib: &[&str]) -> Evaluator {
    Evaluator::new(&[json!({"class": "InlineJavascriptRequirement", "expressionLib": lib})])
        .unwrap()
}

fn inputs() -> Value {
    json!({
        "x": "hello",
        "n": 42,
        "f": 2.5,
        "big": 12345678901234567890u64,
        "neg": -9007199254740993i64,
        "arr": [1, 2, 3],
        "bar": {"baz": "zab1", "b az": 2, "b'az": true, "b\"az": null, "buz": ["a", "b", "c"]},
        "file": {"class": "File", "location": "file:///data/a.txt", "path": "/data/a.txt",
                 "basename": "a.txt", "size": 3},
        "length": 7,
        "rec": {"length": 9},
        "nothing": null,
    })
}

fn rt() -> Value {
    json!({"outdir": "/out", "tmpdir": "/tmp/t", "cores": 2, "ram": 1024})
}

fn ev(e: &mut Evaluator, s: &str) -> Result<Value, CwlError> {
    e.eval(&json!(s), &inputs(), &json!({"s": 1}), &rt())
}

fn ok(e: &mut Evaluator, s: &str) -> Value {
    ev(e, s).unwrap_or_else(|err| panic!("{s}: {err}"))
}

fn failed_message(r: Result<Value, CwlError>) -> String {
    match r {
        Err(CwlError::Failed(m)) => m,
        other => panic!("expected Failed, got {other:?}"),
    }
}

#[test]
fn is_expression_detects_both_forms() {
    assert!(Evaluator::is_expression("a $(b)"));
    assert!(Evaluator::is_expression("${return 1}"));
    assert!(!Evaluator::is_expression("$ (x) and {y}"));
}

#[test]
fn non_strings_and_plain_strings_are_unchanged() {
    let mut e = no_js();
    assert_eq!(
        e.eval(&json!(5), &inputs(), &Value::Null, &rt()).unwrap(),
        json!(5)
    );
    assert_eq!(
        e.eval(&json!({"a": "$(inputs.x)"}), &inputs(), &Value::Null, &rt())
            .unwrap(),
        json!({"a": "$(inputs.x)"})
    );
    // No expression: backslashes and surrounding whitespace stay.
    assert_eq!(ok(&mut e, "  a\\\\b  "), json!("  a\\\\b  "));
}

#[test]
fn parameter_references_resolve_natively() {
    let mut e = no_js();
    assert_eq!(ok(&mut e, "$(inputs.x)"), json!("hello"));
    assert_eq!(ok(&mut e, "$(inputs.n)"), json!(42));
    assert_eq!(ok(&mut e, "$(inputs['x'])"), json!("hello"));
    assert_eq!(ok(&mut e, "$(inputs.bar[\"b az\"])"), json!(2));
    assert_eq!(ok(&mut e, "$(inputs.bar['b\\'az'])"), json!(true));
    assert_eq!(ok(&mut e, "$(inputs.bar[\"b'az\"])"), json!(true));
    assert_eq!(ok(&mut e, "$(inputs.bar['b\"az'])"), Value::Null);
    assert_eq!(ok(&mut e, "$(inputs.bar.buz[1])"), json!("b"));
    assert_eq!(ok(&mut e, "$(inputs['bar'][\"buz\"][2])"), json!("c"));
    assert_eq!(ok(&mut e, "$(inputs.file.path)"), json!("/data/a.txt"));
    assert_eq!(ok(&mut e, "$(self.s)"), json!(1));
    assert_eq!(ok(&mut e, "$(runtime.outdir)"), json!("/out"));
    assert_eq!(ok(&mut e, "$(runtime.cores)"), json!(2));
    assert_eq!(ok(&mut e, "$(null)"), Value::Null);
    assert_eq!(ok(&mut e, "$(inputs.bar)"), inputs()["bar"]);
    assert_eq!(ok(&mut e, "$(inputs)"), inputs());
    assert!(!e.js_started());
}

#[test]
fn length_of_arrays_and_strings_and_user_fields_named_length() {
    let mut e = no_js();
    assert_eq!(ok(&mut e, "$(inputs.arr.length)"), json!(3));
    assert_eq!(ok(&mut e, "$(inputs.bar.buz['length'])"), json!(3));
    assert_eq!(ok(&mut e, "$(inputs.x.length)"), json!(5));
    // A field called `length` is an ordinary field.
    assert_eq!(ok(&mut e, "$(inputs.length)"), json!(7));
    assert_eq!(ok(&mut e, "$(inputs.rec.length)"), json!(9));
    // String indexing gives one character, as in JavaScript.
    assert_eq!(ok(&mut e, "$(inputs.x[1])"), json!("e"));
}

#[test]
fn parameter_reference_errors_name_the_problem() {
    let mut e = no_js();
    let m = failed_message(ev(&mut e, "$(inputs.n.length)"));
    assert!(
        m.contains("$(inputs.n.length)") && m.contains("a number"),
        "{m}"
    );
    let m = failed_message(ev(&mut e, "$(inputs.missing)"));
    assert!(m.contains("no field `missing`"), "{m}");
    let m = failed_message(ev(&mut e, "$(inputs.arr[3])"));
    assert!(m.contains("out of range") && m.contains("3 item"), "{m}");
    let m = failed_message(ev(&mut e, "$(inputs.nothing.x)"));
    assert!(m.contains("inputs.nothing is null"), "{m}");
    let m = failed_message(ev(&mut e, "$(null.something)"));
    assert!(m.contains("null"), "{m}");
    let m = failed_message(ev(&mut e, "$(outputs.x)"));
    assert!(m.contains("unknown name `outputs`"), "{m}");
    let m = failed_message(ev(&mut e, "$(inputs.bar['baz'].q)"));
    assert!(m.contains("inputs.bar.baz is a string"), "{m}");
}

#[test]
fn javascript_without_the_requirement_is_refused() {
    let mut e = no_js();
    for s in [
        "$(inputs.n + 1)",
        "${return 1;}",
        "x $(1 + 1) y",
        "$( inputs.x )",
    ] {
        match ev(&mut e, s) {
            Err(CwlError::Invalid(m)) => assert!(m.contains("InlineJavascriptRequirement"), "{m}"),
            other => panic!("{s}: {other:?}"),
        }
    }
    assert!(!e.js_started());
    assert!(Evaluator::check("a $(inputs.x) b $(runtime.outdir)", false).is_ok());
    assert!(Evaluator::check("$(inputs.x + 1)", false).is_err());
    assert!(Evaluator::check("$(inputs.x + 1)", true).is_ok());
    assert!(Evaluator::check("\\$(echo hi) $(inputs.x)", false).is_ok());
    assert!(matches!(
        Evaluator::check("$(inputs.x", true),
        Err(CwlError::Invalid(_))
    ));
}

#[test]
fn whole_string_reference_keeps_type_after_trimming_whitespace() {
    let mut e = no_js();
    assert_eq!(ok(&mut e, "  $(inputs.n)\n"), json!(42));
    assert_eq!(ok(&mut e, "$(inputs.arr)"), json!([1, 2, 3]));
    // Without trimming, surrounding whitespace makes it interpolation.
    let v = e
        .eval_keep_whitespace(&json!(" $(inputs.n)\n"), &inputs(), &Value::Null, &rt())
        .unwrap();
    assert_eq!(v, json!(" 42\n"));
}

#[test]
fn interpolation_of_several_references_and_types() {
    let mut e = no_js();
    assert_eq!(ok(&mut e, "-$(inputs.bar.baz)"), json!("-zab1"));
    assert_eq!(
        ok(&mut e, "$(inputs.bar.baz) $(inputs.bar.baz)"),
        json!("zab1 zab1")
    );
    assert_eq!(
        ok(
            &mut e,
            "$(inputs.x)/$(inputs.n)/$(inputs.nothing)/$(inputs.bar['b\\'az'])"
        ),
        json!("hello/42/null/true")
    );
    assert_eq!(ok(&mut e, "a $(inputs.arr) b"), json!("a [1, 2, 3] b"));
    assert_eq!(ok(&mut e, "r=$(inputs.rec)"), json!("r={\"length\": 9}"));
    assert_eq!(
        ok(&mut e, "$(inputs.bar.buz)$(inputs.f)"),
        json!("[\"a\", \"b\", \"c\"]2.5")
    );
    // Object keys sorted.
    assert_eq!(
        to_interpolated_string(&json!({"b": 1, "a": {"d": [], "c": "x"}})),
        "{\"a\": {\"c\": \"x\", \"d\": []}, \"b\": 1}"
    );
}

#[test]
fn format_number_is_plain_decimal() {
    let n = |v: Value| match v {
        Value::Number(n) => format_number(&n),
        other => panic!("{other}"),
    };
    assert_eq!(n(json!(0.00001)), "0.00001");
    assert_eq!(n(json!(1.23e-5)), "0.0000123");
    assert_eq!(n(json!(1.23e5)), "123000");
    assert_eq!(n(json!(1230000.0)), "1230000");
    assert_eq!(n(json!(2.0)), "2");
    assert_eq!(n(json!(2.3)), "2.3");
    assert_eq!(n(json!(-0.5)), "-0.5");
    assert_eq!(
        n(json!(4.2e42)),
        "4200000000000000000000000000000000000000000"
    );
    assert_eq!(n(json!(12345678901234567890u64)), "12345678901234567890");
    assert_eq!(n(json!(-9007199254740993i64)), "-9007199254740993");
    assert_eq!(n(json!(-0.0)), "0");
}

/// Expected texts are Python's `repr` and `json.dumps(sort_keys=True)`,
/// which the reference runner uses for interpolation.
#[test]
fn interpolated_numbers_and_json_match_python() {
    let n = |v: Value| to_interpolated_string(&v);
    let cases = [
        (json!(0.00001), "1e-05"),
        (json!(1.23e-5), "1.23e-05"),
        (json!(1.23e5), "123000.0"),
        (json!(2.0), "2.0"),
        (json!(2.3), "2.3"),
        (json!(-0.5), "-0.5"),
        (json!(1e16), "1e+16"),
        (json!(1.5e16), "1.5e+16"),
        (json!(0.0001), "0.0001"),
        (json!(1234567890123456.0), "1234567890123456.0"),
        (json!(123456789012345678.0), "1.2345678901234568e+17"),
        (json!(-0.0), "-0.0"),
        (json!(0.1 + 0.2), "0.30000000000000004"),
        (json!(5e-324), "5e-324"),
        (json!(1.5e-300), "1.5e-300"),
        (json!(12345678901234567890u64), "12345678901234567890"),
        (json!(-9007199254740993i64), "-9007199254740993"),
    ];
    for (v, want) in cases {
        assert_eq!(n(v.clone()), want, "{v}");
    }
    assert_eq!(
        to_sorted_json(&json!({"b": "\u{e9}\u{2603}\u{1F600}\u{1}\u{7f}\"\\\n",
                               "a": [1, 2.5, null, true]})),
        "{\"a\": [1, 2.5, null, true], \"b\": \"\\u00e9\\u2603\\ud83d\\ude00\\u0001\\u007f\\\"\\\\\\n\"}"
    );
    // A whole double too big for a 64-bit integer is an integer literal the
    // parsers could only keep as a double: written as digits, as the
    // reference runner (whose integers have no size limit) writes it, and
    // read back exactly.
    assert_eq!(
        n(json!(1e42)),
        "1000000000000000000000000000000000000000000"
    );
    assert_eq!(
        n(json!(-4.2e42)),
        "-4200000000000000000000000000000000000000000"
    );
    assert_eq!(n(json!(1e19)), "1e+19");
    let text = to_interpolated_string(&json!({"d": 4.2e42}));
    assert_eq!(text, "{\"d\": 4200000000000000000000000000000000000000000}");
    let back: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(back["d"].as_f64(), Some(4.2e42));
    let mut e = no_js();
    assert_eq!(ok(&mut e, "$(inputs.big)"), json!(12345678901234567890u64));
    assert_eq!(
        ok(&mut e, "n=$(inputs.big)"),
        json!("n=12345678901234567890")
    );
    assert_eq!(ok(&mut e, "n=$(inputs.neg)"), json!("n=-9007199254740993"));
    assert_eq!(ok(&mut e, "f=$(inputs.f)"), json!("f=2.5"));
}

#[test]
fn backslash_escapes_follow_v1_2_rules() {
    let mut e = no_js();
    assert_eq!(ok(&mut e, "\\$(inputs.x)"), json!("$(inputs.x)"));
    assert_eq!(ok(&mut e, "\\${inputs.x}"), json!("${inputs.x}"));
    assert_eq!(
        ok(&mut e, "echo \\$(date) $(inputs.x)"),
        json!("echo $(date) hello")
    );
    // `\\` is one backslash; the reference after it is evaluated.
    assert_eq!(ok(&mut e, "\\\\$(inputs.x)"), json!("\\hello"));
    // Any other backslash stays.
    assert_eq!(ok(&mut e, "a\\nb $(inputs.n)"), json!("a\\nb 42"));
    // A backslash at the very end stays.
    assert_eq!(ok(&mut e, "$(inputs.n)\\"), json!("42\\"));
    // A lone `$` is text.
    assert_eq!(ok(&mut e, "$5 $(inputs.n) $"), json!("$5 42 $"));
    // v1.0 rules: a backslash always escapes the next character.
    e.set_cwl_version("v1.0");
    assert_eq!(ok(&mut e, "a\\nb \\$(inputs.n)"), json!("anb $(inputs.n)"));
    e.set_cwl_version("v1.2");
    assert_eq!(
        ok(&mut e, "a\\nb \\$(inputs.n)"),
        json!("a\\nb $(inputs.n)")
    );
}

#[test]
fn unfinished_expressions_are_invalid() {
    let mut e = with_js(&[]);
    for s in ["$(inputs.x", "${ return 1; ", "a $(f(')')"] {
        match ev(&mut e, s) {
            Err(CwlError::Invalid(m)) => assert!(m.contains("unfinished"), "{m}"),
            other => panic!("{s}: {other:?}"),
        }
    }
}

#[test]
fn parameter_references_never_start_the_engine() {
    let mut e = with_js(&["function f() { return 1; }"]);
    assert_eq!(
        ok(&mut e, "$(inputs.arr.length) $(runtime.outdir)"),
        json!("3 /out")
    );
    assert_eq!(ok(&mut e, "$(inputs.bar['b az'])"), json!(2));
    assert!(!e.js_started());
    assert_eq!(ok(&mut e, "$(f())"), json!(1));
    assert!(e.js_started());
}

#[test]
fn javascript_expressions_and_bodies() {
    let mut e = with_js(&[]);
    assert_eq!(ok(&mut e, "$(inputs.n + 1)"), json!(43));
    assert_eq!(ok(&mut e, "$(inputs.f * 2)"), json!(5));
    assert_eq!(ok(&mut e, "$(inputs.f / 2)"), json!(1.25));
    assert_eq!(
        ok(
            &mut e,
            "${ return inputs.arr.map(function(x){ return x * 2; }); }"
        ),
        json!([2, 4, 6])
    );
    assert_eq!(
        ok(&mut e, "$({'a': [1, {'b': null}]})"),
        json!({"a": [1, {"b": null}]})
    );
    assert_eq!(
        ok(&mut e, "${ var s = ')'; return s + \"}\"; }"),
        json!(")}")
    );
    assert_eq!(ok(&mut e, "$(self.s + runtime.cores)"), json!(3));
    assert_eq!(ok(&mut e, "$(undefined)"), Value::Null);
    assert_eq!(ok(&mut e, "${ }"), Value::Null);
    assert_eq!(ok(&mut e, "$(function(){})"), Value::Null);
    assert_eq!(ok(&mut e, "$(1e21)"), json!(1e21));
    assert_eq!(ok(&mut e, "$(Math.pow(2, 53))"), json!(9007199254740992u64));
    assert_eq!(ok(&mut e, "$(-3)"), json!(-3));
    assert_eq!(ok(&mut e, "$(true)"), json!(true));
    assert_eq!(ok(&mut e, "$('\\u00e9')"), json!("\u{e9}"));
    // Interpolation of JavaScript values.
    assert_eq!(
        ok(&mut e, "x$(inputs.n / 4)y$([1,2])"),
        json!("x10.5y[1, 2]")
    );
    assert_eq!(ok(&mut e, "$(0.00001 * 1)"), json!(0.00001));
    assert_eq!(ok(&mut e, "$(44.4)\n"), json!(44.4));
    let v = e
        .eval_keep_whitespace(
            &json!("${ return 44.4; }\n"),
            &inputs(),
            &Value::Null,
            &rt(),
        )
        .unwrap();
    assert_eq!(v, json!("44.4\n"));
    // Parameter references still work, and a failed one gets JavaScript's
    // answer (a missing field is undefined, so null).
    assert_eq!(ok(&mut e, "$(inputs.bar['b az'])"), json!(2));
    assert_eq!(ok(&mut e, "$(inputs.missing)"), Value::Null);
    // Strict mode: assigning an undeclared variable throws.
    let m = failed_message(ev(&mut e, "${ undeclared = 1; return 2; }"));
    assert!(m.contains("undeclared"), "{m}");
    assert!(e.js_started());
}

#[test]
fn expression_lib_is_loaded_once_and_usable() {
    let mut e = with_js(&[
        "var loads = (typeof loads === 'undefined' ? 0 : loads) + 1;",
        "function twice(x) { return helper(x) * 2; }",
        "function helper(x) { return x; }",
    ]);
    assert_eq!(ok(&mut e, "$(twice(inputs.n))"), json!(84));
    assert_eq!(ok(&mut e, "$(loads)"), json!(1));
    assert_eq!(ok(&mut e, "$(loads)"), json!(1));
    // A broken library is reported on the first evaluation.
    let mut bad = with_js(&["function ( {"]);
    let m = failed_message(ev(&mut bad, "$(1)"));
    assert!(m.contains("expressionLib"), "{m}");
    // A library entry that is not a string is invalid.
    let r = Evaluator::new(&[json!({"class": "InlineJavascriptRequirement",
                                    "expressionLib": [{"$include": "x.js"}]})]);
    assert!(matches!(r, Err(CwlError::Invalid(_))));
}

#[test]
fn each_evaluation_sees_its_own_inputs() {
    let mut e = with_js(&[]);
    let rt = rt();
    let v = e
        .eval(
            &json!("${ inputs.n = 0; return inputs.n; }"),
            &json!({"n": 1}),
            &Value::Null,
            &rt,
        )
        .unwrap();
    assert_eq!(v, json!(0));
    let v = e
        .eval(&json!("$(inputs.n)"), &json!({"n": 5}), &Value::Null, &rt)
        .unwrap();
    assert_eq!(v, json!(5));
    let v = e
        .eval(
            &json!("$(inputs.n + 0)"),
            &json!({"n": 6}),
            &Value::Null,
            &rt,
        )
        .unwrap();
    assert_eq!(v, json!(6));
}

#[test]
fn exceptions_become_failures_naming_the_expression() {
    let mut e = with_js(&[]);
    let m = failed_message(ev(&mut e, "${ throw new Error('boom'); }"));
    assert!(m.contains("boom") && m.contains("throw new Error"), "{m}");
    let m = failed_message(ev(&mut e, "$(inputs.nothing.field)"));
    assert!(
        m.contains("TypeError") && m.contains("$(inputs.nothing.field)"),
        "{m}"
    );
    let m = failed_message(ev(&mut e, "${ throw 'plain text'; }"));
    assert!(m.contains("plain text"), "{m}");
    let m = failed_message(ev(&mut e, "$(1 +)"));
    assert!(m.contains("SyntaxError"), "{m}");
    // The engine still works afterwards.
    assert_eq!(ok(&mut e, "$(1 + 1)"), json!(2));
}

#[test]
fn infinite_loop_is_stopped_by_the_time_limit() {
    let mut e = with_js(&[]);
    e.set_limits(JsLimits {
        timeout: Duration::from_millis(200),
        ..JsLimits::default()
    });
    let t0 = Instant::now();
    let m = failed_message(ev(&mut e, "${ while (true) {} }"));
    let took = t0.elapsed();
    assert!(
        m.contains("time limit") && m.contains("while (true)"),
        "{m}"
    );
    assert!(took >= Duration::from_millis(200), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    // A loop that catches the interruption cannot swallow it.
    let m = failed_message(ev(
        &mut e,
        "${ while (true) { try { while (true) {} } catch (e) {} } }",
    ));
    assert!(m.contains("time limit"), "{m}");
    // The next evaluation has its own time.
    assert_eq!(ok(&mut e, "$(1 + 2)"), json!(3));
}

#[test]
fn huge_allocation_is_stopped_by_the_memory_limit() {
    let mut e = with_js(&[]);
    e.set_limits(JsLimits {
        memory_bytes: 32 << 20,
        ..JsLimits::default()
    });
    let m = failed_message(ev(
        &mut e,
        "${ var a = []; while (true) { a.push(new Array(100000).fill(1.5)); } }",
    ));
    assert!(m.contains("memory") && m.contains("32 MiB"), "{m}");
    let m = failed_message(ev(&mut e, "$('x'.repeat(100 * 1024 * 1024).length)"));
    assert!(m.contains("memory"), "{m}");
    // Still usable afterwards.
    assert_eq!(ok(&mut e, "$([1, 2].length)"), json!(2));
    assert_eq!(e.limits().memory_bytes, 32 << 20);
}

#[test]
fn deep_recursion_fails_cleanly() {
    let mut e = with_js(&["function f(n) { return f(n + 1) + 1; }"]);
    let m = failed_message(ev(&mut e, "$(f(0))"));
    assert!(m.contains("stack") || m.contains("recursion"), "{m}");
}

#[test]
fn evaluator_is_send() {
    fn is_send<T: Send>(_: &T) {}
    let mut e = with_js(&[]);
    assert_eq!(ok(&mut e, "$(1)"), json!(1));
    is_send(&e);
    let handle = std::thread::spawn(move || ok(&mut e, "$(inputs.n * 2)"));
    assert_eq!(handle.join().unwrap(), json!(84));
}

#[test]
fn last_inline_javascript_requirement_wins() {
    let reqs = [
        json!({"class": "InlineJavascriptRequirement", "expressionLib": ["var v = 1;"]}),
        json!({"class": "ResourceRequirement"}),
        json!({"class": "InlineJavascriptRequirement", "expressionLib": ["var v = 2;"]}),
    ];
    let mut e = Evaluator::new(&reqs).unwrap();
    assert!(e.has_js());
    assert_eq!(ok(&mut e, "$(v)"), json!(2));
}

#[test]
fn runtime_object_has_cwl_names() {
    let r = crate::Runtime {
        outdir: "/o".into(),
        tmpdir: "/t".into(),
        cores: 3,
        ram: 512,
        outdir_size: 10,
        tmpdir_size: 20,
    };
    assert_eq!(
        runtime_object(&r),
        json!({"outdir": "/o", "tmpdir": "/t", "cores": 3, "ram": 512,
               "outdirSize": 10, "tmpdirSize": 20})
    );
}

#[test]
fn standard_objects_are_available() {
    let mut e = with_js(&[]);
    assert_eq!(
        ok(&mut e, "$(new Date(0).toISOString())"),
        json!("1970-01-01T00:00:00.000Z")
    );
    assert_eq!(ok(&mut e, "$('a-b-c'.replace(/-/g, '+'))"), json!("a+b+c"));
    assert_eq!(ok(&mut e, "$(JSON.parse('[1]')[0])"), json!(1));
    assert_eq!(ok(&mut e, "$(new Map([[1, 2]]).get(1))"), json!(2));
    assert_eq!(ok(&mut e, "$(Math.max(1, 5))"), json!(5));
    assert_eq!(ok(&mut e, "$([3, 1, 2].sort())"), json!([1, 2, 3]));
    assert_eq!(
        ok(&mut e, "$(parseInt('12', 10) + Number('1.5'))"),
        json!(13.5)
    );
    assert_eq!(
        ok(&mut e, "$(Object.keys({b: 1, a: 2}))"),
        json!(["b", "a"])
    );
}

#[test]
fn process_default_limits_apply_to_new_evaluators() {
    // Close to the built-in values, so that tests running at the same time
    // are not affected.
    let limits = JsLimits {
        timeout: Duration::from_millis(10_001),
        memory_bytes: (256 << 20) + 4096,
    };
    JsLimits::set_default(limits);
    assert_eq!(JsLimits::current_default(), limits);
    let e = no_js();
    assert_eq!(e.limits(), limits);
    let e = Evaluator::with_limits(&[], JsLimits::default()).unwrap();
    assert_eq!(e.limits(), JsLimits::default());
}

/// Cases whose results were taken from the reference runner's
/// interpolation (cwltool), to keep the two in step.
#[test]
fn interpolation_matches_the_reference_runner() {
    let inputs = json!({"x": "hello", "n": 42, "arr": [1, 2, 3],
                        "rec": {"b": 1, "a": [true, null]}, "f": 2.5});
    let cases: &[(&str, Value)] = &[
        (
            "echo \\$(echo \\\n  x) '$(inputs.x)'",
            json!("echo $(echo \\\n  x) 'hello'"),
        ),
        ("a\\\\\\$(inputs.x)", json!("a\\$(inputs.x)")),
        ("\\\\\\\\$(inputs.n)", json!("\\\\42")),
        ("x\\y$(inputs.n)\\", json!("x\\y42\\")),
        ("$(inputs.x)$(inputs.n)", json!("hello42")),
        (" $(inputs.n) ", json!(42)),
        (
            "a $(inputs.rec) $(inputs.arr)",
            json!("a {\"a\": [true, null], \"b\": 1} [1, 2, 3]"),
        ),
        ("$$(inputs.n)", json!("$42")),
        ("$(inputs.x)\\${x}", json!("hello${x}")),
        ("$(inputs.f)x", json!("2.5x")),
        ("\\\\$(inputs.n)\\\\", json!("\\42\\")),
    ];
    let mut e = no_js();
    for (s, want) in cases {
        let got = e
            .eval(&json!(s), &inputs, &Value::Null, &json!({"outdir": "/out"}))
            .unwrap_or_else(|err| panic!("{s:?}: {err}"));
        assert_eq!(&got, want, "{s:?}");
    }
}

use crate::spec::spec_dir;

#[test]
fn a_real_expression_library_underscore_templates() {
    // The conformance suite's template tool: underscore.js as expressionLib
    // and a template rendered with the inputs.
    let underscore = std::fs::read_to_string(spec_dir().join("tests/underscore.js")).unwrap();
    let lib = [
        underscore.as_str(),
        "var t = function(s) { return _.template(s, {variable: 'data'})({'inputs': inputs}); };",
    ];
    let mut e = with_js(&lib);
    let inputs = json!({"file1": {"class": "File", "path": "/staged/dir/whale.txt"}});
    let v = e
        .eval(
            &json!(
                "$(t(\"The file is <%= data.inputs.file1.path.split('/').slice(-1)[0] %>\\n\"))"
            ),
            &inputs,
            &Value::Null,
            &rt(),
        )
        .unwrap();
    assert_eq!(v, json!("The file is whale.txt\n"));
    let v = e
        .eval(
            &json!("$(_.map([1, 2], function(x) { return x + inputs.n; }))"),
            &json!({"n": 1}),
            &Value::Null,
            &rt(),
        )
        .unwrap();
    assert_eq!(v, json!([2, 3]));
}

#[test]
fn json_dump_of_a_long_list_is_byte_identical_to_the_reference_runner() {
    // The conformance suite's InitialWorkDir JSON dump (iwd-jsondump1-nl):
    // its expected size and checksum come from the reference runner.
    let mut e = with_js(&[]);
    let entry = "${\n  var ls = [];\n  for (var i = 1; i < 10000; i++) {\n    \
                 ls.push(\"example_input_file\"+i+\".txt\");\n  }\n  return ls;\n}\n";
    let v = e
        .eval_keep_whitespace(&json!(entry), &json!({}), &Value::Null, &rt())
        .unwrap();
    let text = v.as_str().unwrap();
    assert_eq!(text.len(), 298864);
    assert_eq!(
        sha1_smol::Sha1::from(text).digest().to_string(),
        "7307f027449371b3642c1f7c32124218af0e41b5"
    );
}

#[test]
fn pretty_output_json_keeps_big_integer_literals_as_digits() {
    let v = json!({"b": [1, 2.5, 1e42, {"x": null}], "a": {}, "c": [], "s": "\u{e9}\"", "big": 12345678901234567890u64});
    let text = to_json_pretty(&v);
    assert!(
        text.contains("1000000000000000000000000000000000000000000"),
        "{text}"
    );
    assert!(
        text.contains("\n    \"b\": [\n        1,\n        2.5,"),
        "{text}"
    );
    let back: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(back, v);
}
