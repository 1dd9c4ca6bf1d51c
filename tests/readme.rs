//! The README stays true: its first command runs the proxy, and every reason code and config key it documents
//! exists (and every reason code the proxy can emit is documented).

use std::process::Command;

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap()
}

#[test]
fn cargo_run_picks_the_proxy_binary() {
    // With a second binary (the load harness) in the package, `cargo run --release` needs `default-run`.
    let cargo = option_env!("CARGO").unwrap_or("cargo");
    let out = Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let pkg = &meta["packages"][0];
    assert_eq!(pkg["default_run"], "egressd");
    assert!(
        readme().contains("cargo run --release "),
        "README's first command changed"
    );
}

#[test]
fn every_reason_code_is_in_the_readme_table() {
    let readme = readme();
    let missing: Vec<&str> = egressd::reason::Reason::ALL
        .iter()
        .map(|r| r.as_str())
        .filter(|code| !readme.contains(&format!("| `{code}` |")))
        .collect();
    assert!(
        missing.is_empty(),
        "reason codes missing from README's table: {missing:?}"
    );
}

#[test]
fn the_embedded_config_documents_every_top_level_key() {
    // Every top-level key of the raw config appears in config/egressd.yaml (set or commented) and README.
    let yaml = egressd::config::DEFAULT_CONFIG;
    let readme = readme();
    for key in egressd::config::TOP_LEVEL_KEYS {
        assert!(
            yaml.lines()
                .any(|l| l.trim_start_matches("# ").starts_with(&format!("{key}:"))),
            "config/egressd.yaml does not show {key}"
        );
        assert!(
            readme.contains(&format!("`{key}")),
            "README does not mention {key}"
        );
    }
}
