//! The command line: run (embedded default + environment overrides), validate and check exit codes.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_egressd");

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[test]
fn validate_exit_codes_and_every_error() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(
        &dir,
        "good.yaml",
        "allow:\n  - name: a\n    hosts: [api.cast.ai]\n",
    );
    let out = Command::new(BIN)
        .args(["validate", "--config", &good])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let bad = write(
        &dir,
        "bad.yaml",
        "allow:\n  - name: a\n    hosts: [\"api.cast.ai:443\", \"10.0.0.0/99\"]\n    ports: [0]\ntimeouts: {connect: soon}\n",
    );
    let out = Command::new(BIN)
        .args(["validate", "--config", &bad])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for path in [
        "allow[0].hosts[0]",
        "allow[0].hosts[1]",
        "allow[0].ports[0]",
        "timeouts.connect",
    ] {
        assert!(err.contains(path), "{path} missing from:\n{err}");
    }
    assert!(
        err.contains("\"soon\""),
        "the offending value is shown:\n{err}"
    );

    let out = Command::new(BIN)
        .args(["validate", "--config", "/nonexistent/egressd.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn check_decisions_and_exit_codes() {
    // The embedded default allows the CAST AI endpoints.
    let out = Command::new(BIN)
        .args([
            "check",
            "api.cast.ai:443",
            "https://grpc.cast.ai/",
            "104.16.81.56:443",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("api.cast.ai:443\tallow\trule=castai-us/api\treason=allowed"),
        "{stdout}"
    );

    let out = Command::new(BIN)
        .args(["check", "api.cast.ai:443", "evil.example:443"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("evil.example:443\tdeny\trule=-\treason=denied_no_rule"),
        "{stdout}"
    );

    let out = Command::new(BIN)
        .args(["check", "2130706433:443"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "numeric forms of loopback are not allowed"
    );

    let out = Command::new(BIN).args(["check"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "usage error");
}

#[test]
fn check_resolve_applies_destination_checks() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        &dir,
        "c.yaml",
        "allow:\n  - name: a\n    hosts: [.test]\ndns:\n  hosts:\n    meta.test: [169.254.169.254]\n    ok.test: [104.16.81.56]\n",
    );
    let out = Command::new(BIN)
        .args(["check", "--config", &cfg, "meta.test:443"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "without --resolve only the policy is checked"
    );
    let out = Command::new(BIN)
        .args([
            "check",
            "--config",
            &cfg,
            "--resolve",
            "meta.test:443",
            "ok.test:443",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("meta.test:443\tdeny\trule=a\treason=denied_private_address"),
        "{stdout}"
    );
    assert!(
        stdout.contains("ok.test:443\tallow\trule=a\treason=allowed\tresolved=104.16.81.56"),
        "{stdout}"
    );
}

#[test]
fn run_with_embedded_default_and_env_override() {
    let mut child = Command::new(BIN)
        .env("EGRESSD_LISTEN", "127.0.0.1:0")
        .env("EGRESSD_TIMEOUTS__HEADER", "2s")
        // The log filter shares the prefix but is no configuration key.
        .env("EGRESSD_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Startup warnings (path rules that CONNECT cannot enforce) come before the listening line.
    let mut warnings = Vec::new();
    let first = loop {
        let v: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        if v["message"] == "egressd listening" {
            break v;
        }
        warnings.push(v);
    };
    assert!(
        warnings.iter().any(|w| w["level"] == "WARN"
            && w["message"]
                .as_str()
                .unwrap()
                .contains("castai-us/node-components")
            && w["message"].as_str().unwrap().contains("TLS interception")),
        "{warnings:?}"
    );
    let addr: std::net::SocketAddr = first["listen"].as_str().unwrap().parse().unwrap();
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    assert_ne!(addr.port(), 0);

    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"CONNECT evil.example:443 HTTP/1.1\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
    let decision: serde_json::Value =
        serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(decision["event"], "decision");
    assert_eq!(decision["reason"], "denied_no_rule");
    child.kill().unwrap();
    let _ = child.wait();
}

#[test]
fn hash_password_prints_a_phc_string_that_verifies() {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    use std::io::Write;
    let hash = |input: &str| {
        let mut child = Command::new(BIN)
            .arg("hash-password")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let out = hash("correct horse\n");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let phc = String::from_utf8(out.stdout).unwrap();
    let phc = phc.trim_end();
    assert!(phc.starts_with("$argon2id$"), "{phc}");
    let parsed = PasswordHash::new(phc).unwrap();
    // The trailing newline is not part of the password.
    assert!(argon2::Argon2::default()
        .verify_password(b"correct horse", &parsed)
        .is_ok());
    assert!(argon2::Argon2::default()
        .verify_password(b"correct horse\n", &parsed)
        .is_err());
    // Salted at random: the same password twice gives two strings.
    let again = String::from_utf8(hash("correct horse\n").stdout).unwrap();
    assert_ne!(again.trim_end(), phc);
    // Nothing to hash is an error, not a hash of the empty string.
    let out = hash("");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("empty"));
}

#[test]
fn a_busy_proxy_port_names_the_listener_and_exits_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let out = Command::new(BIN)
        .args(["run"])
        .env("EGRESSD_LISTEN", addr.to_string())
        .env("EGRESSD_ADMIN__LISTEN", "off")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("listener {addr} (listen)")),
        "the error does not name the listener: {text}"
    );
}

#[test]
fn an_unknown_environment_override_is_named() {
    let out = Command::new(BIN)
        .args(["validate"])
        .env("EGRESSD_REQUIRE_IDENTIY", "true")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("environment variable EGRESSD_REQUIRE_IDENTIY")
            && err.contains("did you mean EGRESSD_REQUIRE_IDENTITY?"),
        "{err}"
    );
}

/// What the kubelet puts into a pod's environment for a Service (service links), as `(name, value)`.
fn service_links(service: &str, ports: &[(&str, u16)]) -> Vec<(String, String)> {
    let s = service.to_ascii_uppercase().replace('-', "_");
    let ip = "10.96.0.5";
    let mut v = vec![
        (format!("{s}_SERVICE_HOST"), ip.to_string()),
        (format!("{s}_SERVICE_PORT"), ports[0].1.to_string()),
        (format!("{s}_PORT"), format!("tcp://{ip}:{}", ports[0].1)),
    ];
    for (name, port) in ports {
        let n = name.to_ascii_uppercase().replace('-', "_");
        v.push((format!("{s}_SERVICE_PORT_{n}"), port.to_string()));
        let base = format!("{s}_PORT_{port}_TCP");
        v.push((base.clone(), format!("tcp://{ip}:{port}")));
        v.push((format!("{base}_PROTO"), "tcp".into()));
        v.push((format!("{base}_PORT"), port.to_string()));
        v.push((format!("{base}_ADDR"), ip.into()));
    }
    v
}

/// The chart's Service is its fullname: the release name when it contains `egressd`, else
/// `<release>-egressd`. Every fullname that starts with `egressd` yields `EGRESSD_*` service links; the
/// kustomize base's Service is `egressd`. `validate`, `check` and `run` start with all of them in the
/// environment, with the Service ports the manifests give (proxy, proxy-tls, admin).
#[test]
fn kubernetes_service_link_variables_are_not_configuration() {
    let ports = [("proxy", 3128), ("proxy-tls", 3129), ("admin", 9090)];
    for release in [
        "egressd",
        "egressd-prod",
        "egressd-listen",
        "egressd-admin",
        "egressd-timeouts",
        "egressd-listen-tls",
    ] {
        let vars = service_links(release, &ports);
        let out = Command::new(BIN)
            .args(["validate"])
            .envs(vars.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{release}: {out:?}");
        let out = Command::new(BIN)
            .args(["check", "https://api.cast.ai/"])
            .envs(vars.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{release}: {out:?}");
    }
    // `run` too, with an override beside the links: it starts and serves.
    let mut child = Command::new(BIN)
        .args(["run"])
        .envs(service_links("egressd", &ports))
        .env("EGRESSD_LISTEN", "127.0.0.1:0")
        .env("EGRESSD_ADMIN__LISTEN", "off")
        .env_remove("EGRESSD_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Startup warnings may come first; the process exits (ending the lines) if it cannot start.
    let listening = lines
        .by_ref()
        .take(50)
        .map_while(Result::ok)
        .any(|l| l.contains("egressd listening"));
    child.kill().unwrap();
    let _ = child.wait();
    assert!(
        listening,
        "egressd did not start with service-link variables"
    );
}

#[test]
fn validate_refuses_broad_globs_unless_the_rule_means_it() {
    let dir = tempfile::tempdir().unwrap();
    let broad = write(
        &dir,
        "broad.yaml",
        r#"allow:
  - name: castai
    hosts: ["*cast.ai", "api.*", "*.com", "api-*.cast.ai", ".cast.ai"]
  - name: np
    no_proxy: ".co.uk,.example.com"
deny:
  - name: everything-else
    hosts: ["*"]
vendors:
  - {name: cloudcasa, params: {storage: ["*.s3.amazonaws.com"], registry: [registry.example.com]}}
"#,
    );
    let out = Command::new(BIN)
        .args(["validate", "--config", &broad])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for (path, says) in [
        ("allow[0].hosts[0]", "evilcast.ai"),
        ("allow[0].hosts[0]", "\"*.cast.ai\""),
        ("allow[0].hosts[1]", "api.evil.com"),
        ("allow[0].hosts[2]", "public suffix"),
        ("allow[1].no_proxy", "\"co.uk\""),
        ("vendors[0](cloudcasa/storage).hosts[0]", "local rule"),
        ("allow[0].hosts[0]", "broad_hosts: true"),
    ] {
        assert!(
            err.lines().any(|l| l.contains(path) && l.contains(says)),
            "{path} / {says} missing from:\n{err}"
        );
    }
    for fine in ["allow[0].hosts[3]", "allow[0].hosts[4]", "deny[0]"] {
        assert!(!err.contains(fine), "{fine} refused:\n{err}");
    }

    let meant = write(
        &dir,
        "meant.yaml",
        "allow:\n  - name: any-api\n    hosts: [\"api.*\", \"*.com\"]\n    broad_hosts: true\n",
    );
    let out = Command::new(BIN)
        .args(["validate", "--config", &meant])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
