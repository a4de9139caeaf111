//! A job that looks for its agent's token where a job could find it: its
//! own environment, and its agent's `/proc/PID/environ` and
//! `/proc/PID/mem`. It prints what it saw (lines starting `probe:`), and
//! [`assert_out_of_reach`] checks that output. Used on one machine and in
//! pods.

/// The job's shell lines, one per line, for a YAML `command: |` block
/// indented by `indent` spaces.
pub fn command(indent: usize) -> String {
    const LINES: [&str; 5] = [
        r#"if env | grep -q '^TOIL_AGENT_TOKEN='; then echo "probe: the token is in the job's environment"; else echo "probe: no token in the job's environment"; fi"#,
        r#"echo "probe: the parent is $(tr '\0' ' ' < /proc/$PPID/cmdline)""#,
        r#"if cat /proc/$$/environ > /dev/null; then echo "probe: read its own environment"; fi"#,
        r#"if cat /proc/$PPID/environ > /dev/null 2> environ.err; then echo "probe: read the agent's environment"; else echo "probe: reading the agent's environment failed: $(cat environ.err)"; fi"#,
        r#"if (exec 3< /proc/$PPID/mem) 2> mem.err; then echo "probe: opened the agent's memory"; else echo "probe: opening the agent's memory failed: $(cat mem.err)"; fi"#,
    ];
    let pad = " ".repeat(indent);
    LINES.iter().map(|l| format!("{pad}{l}\n")).collect()
}

/// Checks what the probe printed: no token in the job's environment, its
/// parent is the agent, it could read its own environment, and its agent's
/// environment and memory were refused with EACCES.
pub fn assert_out_of_reach(out: &str) {
    assert!(
        out.contains("probe: no token in the job's environment"),
        "{out}"
    );
    assert!(
        out.contains("probe: the parent is ") && out.contains("toil-agent run"),
        "{out}"
    );
    assert!(out.contains("probe: read its own environment"), "{out}");
    assert!(
        out.contains("probe: reading the agent's environment failed: cat: /proc/")
            && out.contains("/environ: Permission denied"),
        "{out}"
    );
    assert!(
        out.contains("probe: opening the agent's memory failed:")
            && out.contains("/mem: Permission denied"),
        "{out}"
    );
    assert!(!out.contains("probe: read the agent's"), "{out}");
    assert!(!out.contains("probe: opened the agent's"), "{out}");
}
