//! `egressd check` and the running proxy give the same verdict: random configurations (allow and deny rules
//! with ports, paths, report mode and client scopes; client groups by address, by credentials and in report
//! mode; global report mode and require_identity), random targets and random client addresses. For each,
//! the line the proxy writes for a real request from that address must say what `check` says: decision,
//! reason and rule.

mod support;

use egressd::check::check;
use egressd::policy::verdict::Client;
use egressd::policy::Credentials;
use egressd::proxy::dial::Dialer;
use proptest::prelude::*;
use std::net::{IpAddr, SocketAddr};
use support::{http_origin, read_response, start_proxy};
use tokio::io::AsyncWriteExt;

const HOSTS: [&str; 4] = ["a.test", "b.test", "c.w.test", "d.w.test"];
const PATTERNS: [&str; 5] = ["a.test", "b.test", "*.w.test", "c.w.test", ".w.test"];

#[derive(Debug, Clone)]
struct Rule {
    deny: bool,
    hosts: Vec<usize>,
    /// Which of the two origin ports (none: any port).
    ports: Option<usize>,
    paths: bool,
    report: bool,
    /// Scoped to the address group, the credential group, or nobody in particular.
    scope: Option<usize>,
}

#[derive(Debug, Clone)]
struct Case {
    rules: Vec<Rule>,
    report_all: bool,
    require_identity: bool,
    report_group: bool,
    /// Target host (an index into HOSTS, or the metadata address), port index, CONNECT or GET with a path.
    host: usize,
    port: usize,
    connect: bool,
    path_ok: bool,
    /// 127.0.0.1 (no group), .2 (the address group) or .3 (the report-mode group).
    source: u8,
}

fn rule() -> impl Strategy<Value = Rule> {
    (
        any::<bool>(),
        proptest::sample::subsequence((0..PATTERNS.len()).collect::<Vec<_>>(), 1..3),
        proptest::option::of(0..2usize),
        any::<bool>(),
        proptest::bool::weighted(0.25),
        proptest::option::weighted(0.3, 0..2usize),
    )
        .prop_map(|(deny, hosts, ports, paths, report, scope)| Rule {
            deny: deny && !paths,
            hosts,
            ports,
            paths,
            report,
            scope,
        })
}

fn case() -> impl Strategy<Value = Case> {
    (
        proptest::collection::vec(rule(), 0..5),
        proptest::bool::weighted(0.15),
        proptest::bool::weighted(0.15),
        proptest::bool::weighted(0.3),
        0..=HOSTS.len(),
        0..2usize,
        any::<bool>(),
        any::<bool>(),
        1..=3u8,
    )
        .prop_map(
            |(
                rules,
                report_all,
                require_identity,
                report_group,
                host,
                port,
                connect,
                path_ok,
                source,
            )| {
                Case {
                    rules,
                    report_all,
                    require_identity,
                    report_group,
                    host,
                    port,
                    connect,
                    path_ok,
                    source,
                }
            },
        )
}

fn yaml(c: &Case, ports: [u16; 2]) -> String {
    let mut y = String::from("dns:\n  hosts:\n");
    for h in HOSTS {
        y.push_str(&format!("    {h}: [127.0.0.1]\n"));
    }
    y.push_str("destinations:\n  allow_cidrs: [127.0.0.0/8]\n");
    if c.report_all {
        y.push_str("mode: report\n");
    }
    if c.require_identity {
        y.push_str("require_identity: true\n");
    }
    // The token is sha256("test"); no request sends it, so the group can only make a 407.
    y.push_str(
        "clients:\n  - name: office\n    cidrs: [127.0.0.2/32]\n  - name: robots\n    token_sha256: \
         [\"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"]\n",
    );
    y.push_str("  - name: trial\n    cidrs: [127.0.0.3/32]\n");
    if c.report_group {
        y.push_str("    mode: report\n");
    }
    let (mut allow, mut deny) = (String::new(), String::new());
    for (i, r) in c.rules.iter().enumerate() {
        let hosts: Vec<String> = r
            .hosts
            .iter()
            .map(|&h| format!("\"{}\"", PATTERNS[h]))
            .collect();
        let mut line = format!("  - name: r{i}\n    hosts: [{}]\n", hosts.join(", "));
        if let Some(p) = r.ports {
            line.push_str(&format!("    ports: [{}]\n", ports[p]));
        }
        if r.paths {
            line.push_str("    paths: [\"/ok/\"]\n");
        }
        if r.report {
            line.push_str("    mode: report\n");
        }
        if let Some(s) = r.scope {
            line.push_str(&format!("    clients: [{}]\n", ["office", "robots"][s]));
        }
        if r.deny {
            deny.push_str(&line);
        } else {
            allow.push_str(&line);
        }
    }
    if !allow.is_empty() {
        y.push_str(&format!("allow:\n{allow}"));
    }
    if !deny.is_empty() {
        y.push_str(&format!("deny:\n{deny}"));
    }
    y
}

/// Send the case's request from its source address; returns once the proxy answered.
async fn request(proxy: SocketAddr, source: IpAddr, c: &Case, authority: &str) {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(source, 0)).unwrap();
    let mut s = sock.connect(proxy).await.unwrap();
    let head = if c.connect {
        format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n")
    } else {
        let path = if c.path_ok { "/ok/x" } else { "/other" };
        format!("GET http://{authority}{path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n")
    };
    s.write_all(head.as_bytes()).await.unwrap();
    // The answer (for an allowed CONNECT, the 200; closing then ends the tunnel unused).
    let _ = read_response(&mut s).await;
}

async fn agree(c: Case) -> Result<(), TestCaseError> {
    let origins = [http_origin().await, http_origin().await];
    let ports = [origins[0].port(), origins[1].port()];
    let y = yaml(&c, ports);
    let proxy = start_proxy(&y).await;
    let host = HOSTS.get(c.host).copied().unwrap_or("169.254.169.254");
    let authority = format!("{host}:{}", ports[c.port]);
    let source: IpAddr = format!("127.0.0.{}", c.source).parse().unwrap();
    request(proxy.addr, source, &c, &authority).await;
    let line = proxy.log.decision_for(host).await;

    let settings = egressd::config::from_yaml_str(&format!("listen: 127.0.0.1:0\n{y}")).unwrap();
    let dialer = Dialer::new(&settings.listeners, &settings.runtime);
    let client = Client::identify(
        &settings.runtime.policy,
        source,
        Credentials::None,
        &[],
        Default::default(),
    );
    let arg = if c.connect {
        authority.clone()
    } else {
        format!(
            "http://{authority}{}",
            if c.path_ok { "/ok/x" } else { "/other" }
        )
    };
    let r = check(&settings, Some(&dialer), &client, &arg).await;
    let said = (
        r.decision.to_string(),
        r.reason.to_string(),
        r.rule.clone().unwrap_or_default(),
    );
    let logged = (
        line["decision"].as_str().unwrap_or_default().to_string(),
        line["reason"].as_str().unwrap_or_default().to_string(),
        line["rule"].as_str().unwrap_or_default().to_string(),
    );
    prop_assert_eq!(
        said,
        logged,
        "config:\n{}\nrequest {} from {}",
        y,
        arg,
        source
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn check_says_what_the_proxy_logs(c in case()) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(agree(c))?;
    }
}
