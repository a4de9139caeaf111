//! Server-side field validation over real HTTP, as any client sees it:
//! `fieldValidation=Strict` refuses unknown and duplicate fields with the
//! apiserver's message, `Warn` (the default) stores the object without them
//! and says so in `Warning` headers, `Ignore` says nothing; and the OpenAPI
//! documents kubectl reads need a token, like the rest of the API.

use std::io::{Read, Write};

use toil_tests::emulator::{Emulator, EmulatorConfig, NodeConfig};

/// One HTTP/1.1 exchange; returns the status line, headers and body.
fn http(
    emu: &Emulator,
    token: Option<&str>,
    method: &str,
    path: &str,
    content_type: &str,
    body: &str,
) -> String {
    let addr = emu.http_url().trim_start_matches("http://").to_string();
    let mut sock = std::net::TcpStream::connect(&addr).unwrap_or_else(|e| panic!("{e}"));
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    sock.write_all(req.as_bytes())
        .unwrap_or_else(|e| panic!("{e}"));
    let mut out = String::new();
    sock.read_to_string(&mut out)
        .unwrap_or_else(|e| panic!("{e}"));
    out
}

fn configmap(name: &str, extra: &str) -> String {
    format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}"}},"data":{{"a":"1"}}{extra}}}"#
    )
}

#[test]
fn unknown_and_duplicate_fields_per_field_validation() {
    let emu = Emulator::start(
        EmulatorConfig::default()
            .with_nodes(vec![NodeConfig::new("n1")])
            .with_namespace("toil"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let token = emu.admin_token().to_string();
    let post = |query: &str, body: &str| {
        http(
            &emu,
            Some(&token),
            "POST",
            &format!("/api/v1/namespaces/toil/configmaps{query}"),
            "application/json",
            body,
        )
    };

    let r = post(
        "?fieldValidation=Strict",
        &configmap("strict", r#","bogus":1,"data":{"b":"2"}"#),
    );
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    assert!(
        r.contains(r#"ConfigMap in version \"v1\" cannot be handled as a ConfigMap: strict decoding error: duplicate field \"data\", unknown field \"bogus\""#),
        "{r}"
    );
    assert!(r.contains(r#""reason":"BadRequest""#), "{r}");

    let r = post("", &configmap("warned", r#","bogus":1"#));
    assert!(r.starts_with("HTTP/1.1 201"), "{r}");
    assert!(
        r.to_ascii_lowercase()
            .contains(r#"warning: 299 - "unknown field \"bogus\"""#),
        "{r}"
    );
    assert!(
        !r.contains("bogus\":1"),
        "the unknown field was stored: {r}"
    );

    let r = post(
        "?fieldValidation=Ignore",
        &configmap("ignored", r#","bogus":1"#),
    );
    assert!(r.starts_with("HTTP/1.1 201"), "{r}");
    assert!(!r.to_ascii_lowercase().contains("warning:"), "{r}");

    let r = post("?fieldValidation=Loose", &configmap("loose", ""));
    assert!(
        r.starts_with("HTTP/1.1 400") && r.contains("Unsupported value"),
        "{r}"
    );

    // A patch's unknown field is found in the patched object; its
    // directives are not fields.
    let patch = |body: &str| {
        http(
            &emu,
            Some(&token),
            "PATCH",
            "/api/v1/namespaces/toil/configmaps/warned?fieldValidation=Strict",
            "application/strategic-merge-patch+json",
            body,
        )
    };
    let r = patch(r#"{"metadata":{"labels":{"x":"y"}},"extra":{"deep":true}}"#);
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    assert!(
        r.contains(r#"strict decoding error: unknown field \"extra\""#),
        "{r}"
    );
    let r = patch(r#"{"metadata":{"$setElementOrder/finalizers":[],"labels":{"x":"y"}}}"#);
    assert!(
        r.starts_with("HTTP/1.1 200") && r.contains(r#""x":"y""#),
        "{r}"
    );

    // The OpenAPI documents need a token, and then list every group.
    let r = http(&emu, None, "GET", "/openapi/v3", "", "");
    assert!(r.starts_with("HTTP/1.1 401"), "{r}");
    let r = http(&emu, Some(&token), "GET", "/openapi/v3", "", "");
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    for gv in [
        "api/v1",
        "apis/batch/v1",
        "apis/rbac.authorization.k8s.io/v1",
    ] {
        assert!(
            r.contains(&format!(
                "\"{gv}\":{{\"serverRelativeURL\":\"/openapi/v3/{gv}?hash="
            )),
            "{gv}: {r}"
        );
    }
    let r = http(&emu, Some(&token), "GET", "/openapi/v2", "", "");
    assert!(r.starts_with("HTTP/1.1 404"), "{r}");
    emu.shutdown();
}
