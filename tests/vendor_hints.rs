//! Refusals of hosts an embedded vendor profile lists: the decision line's detail names the profile the
//! configuration does not use, `egressd check` prints the same detail, and `egressd audit --suggest` proposes
//! the profile (with placeholders for its required parameters) instead of host rules.

mod support;

use egressd::target::parse_authority;
use std::path::Path;
use std::process::{Command, Stdio};
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_egressd");

/// castai-us in use, and a local rule for one castai-eu host on a loopback origin (so that an allowed
/// request stays on this machine).
fn config(origin_port: u16) -> String {
    format!(
        "vendors: [castai-us]\n\
         vendors_disable: [castai-us/helm]\n\
         destinations:\n  allow_cidrs: [\"127.0.0.1/32\"]\n\
         dns:\n  hosts:\n    grpc.eu.cast.ai: [\"127.0.0.1\"]\n\
         allow:\n  - {{name: eu-grpc-local, hosts: [grpc.eu.cast.ai], ports: [{origin_port}]}}\n"
    )
}

fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .env_remove("EGRESSD_VENDORS")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

const NO_RULE: &str = "no allow rule matches this host and port";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_name_the_profile_to_add_and_check_prints_the_same() {
    let origin = http_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("egressd.yaml");
    std::fs::write(&cfg, config(origin.port())).unwrap();
    let proxy = start_proxy_file(&cfg).await;

    let refused = [
        (
            "api.eu.cast.ai:443",
            format!("{NO_RULE}; listed by profile castai-eu (api); add it to vendors"),
        ),
        (
            "agent.cloudcasa.io:443",
            format!(
                "{NO_RULE}; listed by profile cloudcasa (agent); add it to vendors (it needs params: storage)"
            ),
        ),
        (
            "api.cloudcasa.io:443",
            format!(
                "{NO_RULE}; listed by profiles cloudcasa (api), cloudcasa-ui (web); add the one for these \
                 agents to vendors"
            ),
        ),
        // Not a profile's host; a profile's host on a port it does not list; a host the profile in use
        // lists (its entry is disabled): no hint.
        ("unlisted.example:443", NO_RULE.to_string()),
        ("api.eu.cast.ai:8443", NO_RULE.to_string()),
        ("castai.github.io:443", NO_RULE.to_string()),
    ];
    for (authority, _) in &refused {
        let resp = connect(proxy.addr, authority).await;
        assert_eq!(status(&resp), 403, "{authority}: {resp}");
    }
    // Allowed: no detail at all.
    let allowed = format!("grpc.eu.cast.ai:{}", origin.port());
    let resp = raw(
        proxy.addr,
        format!(
            "GET http://{allowed}/ HTTP/1.1\r\nHost: grpc.eu.cast.ai\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(status(&resp), 200, "{resp}");

    let lines = proxy.log.wait_events("decision", refused.len() + 1).await;
    for (authority, detail) in &refused {
        let (host, port) = authority.rsplit_once(':').unwrap();
        let port: u16 = port.parse().unwrap();
        let line = lines
            .iter()
            .find(|l| l["host"] == host && l["port"] == port)
            .unwrap_or_else(|| panic!("no line for {authority}"));
        assert_eq!(line["reason"], "denied_no_rule", "{line}");
        assert_eq!(line["detail"], detail.as_str(), "{authority}");

        // `egressd check` decides with the same verdict: the same detail, as the line's last field.
        let (code, out, err) = run(&["check", "--config", path_str(&cfg), authority]);
        assert_eq!(code, Some(1), "{authority}: {out}{err}");
        assert_eq!(
            out.trim_end().rsplit('\t').next(),
            Some(detail.as_str()),
            "{out}"
        );
    }
    let ok = lines
        .iter()
        .find(|l| l["host"] == "grpc.eu.cast.ai")
        .unwrap();
    assert_eq!(
        (&ok["decision"], &ok["detail"]),
        (&"allow".into(), &serde_json::Value::Null),
        "{ok}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suggest_proposes_the_profiles_and_the_pasted_snippet_allows_what_was_refused() {
    let proxy = start_proxy("vendors: [castai-us]\n").await;
    let refused = [
        "api.eu.cast.ai:443",
        "grpc.eu.cast.ai:443",
        "agent.cloudcasa.io:443",
        "logs.vendor.test:443",
    ];
    for authority in refused {
        assert_eq!(status(&connect(proxy.addr, authority).await), 403);
    }
    let lines = proxy.log.wait_events("decision", refused.len()).await;
    let log: String = lines.iter().map(|v| format!("{v}\n")).collect();
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("egressd.log");
    std::fs::write(&log_path, log).unwrap();
    let cfg = dir.path().join("egressd.yaml");
    std::fs::write(&cfg, "vendors: [castai-us]\n").unwrap();

    let (code, snippet, err) = run(&[
        "audit",
        "--suggest",
        "--config",
        path_str(&cfg),
        path_str(&log_path),
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        snippet.contains(
            "vendors:\n  # castai-eu: api.eu.cast.ai:443 (api), grpc.eu.cast.ai:443 (grpc)\n"
        ),
        "{snippet}"
    );
    assert!(
        snippet.contains("  - castai-eu\n  # cloudcasa: agent.cloudcasa.io:443 (agent)\n"),
        "{snippet}"
    );
    assert!(
        snippet.contains(
            "  # replace <storage>: `egressd vendors show cloudcasa` says what each parameter is\n  \
             - {name: cloudcasa, params: {storage: [\"<storage>\"]}}\n"
        ),
        "{snippet}"
    );
    // The host no profile lists keeps its host rule; the profile in use is not proposed again.
    assert!(
        snippet.contains("hosts: [\"logs.vendor.test\"]"),
        "{snippet}"
    );
    assert_eq!(snippet.matches("hosts: [").count(), 1, "{snippet}");
    assert!(!snippet.contains("- castai-us"), "{snippet}");

    // Pasted as it is, the placeholder does not compile; filled in, every refused destination is allowed.
    let items: String = snippet
        .lines()
        .filter(|l| l.starts_with("  - ") && !l.starts_with("  - name:"))
        .map(|l| format!("{l}\n"))
        .collect();
    let rules: String = snippet
        .lines()
        .skip_while(|l| !l.starts_with("allow:"))
        .map(|l| format!("{l}\n"))
        .collect();
    let pasted = format!("vendors:\n  - castai-us\n{items}{rules}");
    let err = egressd::config::from_yaml_str(&pasted).expect_err("placeholder left in");
    assert!(err.to_string().contains("<storage>"), "{err}");
    let filled = pasted.replace("<storage>", "backups.example.com");
    let settings =
        egressd::config::from_yaml_str(&filled).unwrap_or_else(|e| panic!("{e}\n---\n{filled}"));
    for authority in refused {
        let target = parse_authority(authority, None).unwrap();
        assert!(
            settings.runtime.policy.decide(&target).allowed,
            "{authority} still refused by\n{filled}"
        );
    }

    // Without --config, nothing is known to be in use: the same proposals.
    let (code, without, err) = run(&["audit", "--suggest", path_str(&log_path)]);
    assert_eq!(code, Some(0), "{err}");
    assert!(without.contains("  - castai-eu\n"), "{without}");
}
