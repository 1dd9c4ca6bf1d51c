//! `egressd test`: policy cases files evaluated with the proxy's verdict. The cases shipped for every vendor
//! profile hold; a case that does not hold fails the run with what differs; unreadable files are errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_egressd");

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn egressd_test(args: &[&Path]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("test");
    for a in args {
        cmd.arg(a);
    }
    // EGRESSD_* variables would be read as overrides of the cases' configuration.
    for (k, _) in std::env::vars() {
        if k.starts_with("EGRESSD_") {
            cmd.env_remove(k);
        }
    }
    cmd.output().unwrap()
}

#[test]
fn every_vendor_profile_has_cases_and_they_hold() {
    let mut files = Vec::new();
    for name in egressd::vendors::names() {
        let f = repo(&format!("config/vendors/tests/{name}.cases.yaml"));
        assert!(
            f.is_file(),
            "profile {name} has no cases file {}",
            f.display()
        );
        files.push(f);
    }
    let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let out = egressd_test(&refs);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!stdout.contains("FAIL"), "{stdout}");
    assert_eq!(
        stdout.matches(" 0 failed\n").count(),
        files.len(),
        "{stdout}"
    );
}

#[test]
fn a_case_that_does_not_hold_fails_the_run_with_what_differs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("egressd.yaml"),
        "clients:\n  - {name: agents, cidrs: [\"10.42.0.0/16\"]}\nallow:\n  - {name: api, hosts: [api.example.com], clients: [agents]}\n  - {name: open, hosts: [new.example.com]}\ndeny:\n  - {name: trial, hosts: [new.example.com], mode: report}\n",
    )
    .unwrap();
    let cases = dir.path().join("cases.yaml");
    std::fs::write(
        &cases,
        r#"config: egressd.yaml
cases:
  - {name: agents reach the API, target: "api.example.com:443", from: 10.42.1.2, expect: allow, rule: api}
  - {name: the group by name, target: "https://api.example.com/", client: agents, expect: allow}
  - {name: others do not, target: "api.example.com:443", from: 10.9.9.9, expect: deny, reason: denied_no_rule}
  - {name: report mode, target: "new.example.com:443", expect: would_deny, rule: trial}
  - {name: wrong on purpose, target: "evil.example.com:443", expect: allow, rule: api}
"#,
    )
    .unwrap();
    let out = egressd_test(&[&cases]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let passed = stdout.lines().filter(|l| l.starts_with("ok   ")).count();
    assert_eq!(passed, 4, "{stdout}");
    assert!(
        stdout.contains("FAIL") && stdout.contains("case 5: wrong on purpose"),
        "{stdout}"
    );
    assert!(
        stdout.contains("decision: expected allow, got deny")
            && stdout.contains("rule: expected api, got -"),
        "{stdout}"
    );
    assert!(stdout.contains("5 cases, 4 passed, 1 failed"), "{stdout}");
}

#[test]
fn unreadable_cases_and_configs_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "cases:\n  - {target: \"a.example:443\", expect: maybe}\n",
    )
    .unwrap();
    let out = egressd_test(&[&bad]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("bad.yaml") && stderr.contains("cases[0].expect"),
        "{stderr}"
    );
    let missing = dir.path().join("missing-config.yaml");
    std::fs::write(
        &missing,
        "config: nowhere.yaml\ncases:\n  - {target: \"a.example:443\", expect: deny}\n",
    )
    .unwrap();
    let out = egressd_test(&[&missing]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nowhere.yaml"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
