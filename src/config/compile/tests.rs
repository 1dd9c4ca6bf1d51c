use crate::config::{from_yaml_str, DEFAULT_CONFIG};
use crate::reason::Reason;

#[test]
fn embedded_default_compiles() {
    let s = from_yaml_str(DEFAULT_CONFIG).unwrap();
    assert_eq!(s.listeners.listen.to_string(), "127.0.0.1:3128");
    assert!(s.runtime.policy.rule_count() > 0);
}

#[test]
fn a_no_proxy_port_pin_must_be_one_of_the_rule_ports() {
    let rule = |ports: &str| {
        from_yaml_str(&format!(
            "allow:\n  - name: internal\n    no_proxy: \"api.internal:8443,10.0.0.0/8\"\n{ports}"
        ))
    };
    let err = rule("").unwrap_err().to_string();
    assert!(
        err.contains("allow[0].no_proxy") && err.contains("pinned to port 8443"),
        "{err}"
    );
    assert!(rule("    ports: [443, 8443]\n").is_ok());
}

#[test]
fn every_error_reported_with_its_path() {
    let yaml = r#"
listen: "nowhere"
mode: loud
allow:
  - name: a
    hosts: ["api.cast.ai:443", "10.0.0.0/40"]
    ports: [0, "9-1", 70000]
  - name: a
    hosts: []
  - name: b
    no_proxy: "*,192.168.0.0/16a"
destinations:
  allow_cidrs: ["10.0.0.0/8", "nope"]
dns:
  hosts:
    api.cast.ai: ["127.0.0.1", "localhost"]
  servers: ["x"]
timeouts: {header: 10q, connect: 0s}
limits: {max_connections: 0, max_connections_per_client: 0, max_header_bytes: 10}
"#;
    let errs = from_yaml_str(yaml).unwrap_err().0;
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    for want in [
        "listen",
        "mode",
        "allow[0].hosts[0]",
        "allow[0].hosts[1]",
        "allow[0].ports[0]",
        "allow[0].ports[1]",
        "allow[0].ports[2]",
        "allow[1].name",
        "allow[1].hosts",
        "allow[2].no_proxy",
        "destinations.allow_cidrs[1]",
        "dns.hosts.\"api.cast.ai\"[1]",
        "dns.servers[0]",
        "timeouts.header",
        "timeouts.connect",
        "limits.max_connections",
        "limits.max_connections_per_client",
        "limits.max_header_bytes",
    ] {
        assert!(
            paths.contains(&want),
            "missing error at {want}; got {paths:?}"
        );
    }
    // The offending value is quoted in the message.
    assert!(
        errs.iter().any(|e| e.message.contains("\"nope\"")),
        "{errs:?}"
    );
}

#[test]
fn unknown_keys_rejected() {
    let err = from_yaml_str("allow: []\nlisten_addr: 1.2.3.4:5\n").unwrap_err();
    assert!(err.to_string().contains("listen_addr"), "{err}");
    let err = from_yaml_str("allow:\n  - name: x\n    hosts: [a.b]\n    port: [1]\n").unwrap_err();
    assert!(err.to_string().contains("port"), "{err}");
}

#[test]
fn defaults() {
    let s = from_yaml_str("allow: []").unwrap();
    assert_eq!(s.runtime.timeouts.header.as_secs(), 10);
    assert_eq!(s.runtime.timeouts.connect.as_secs(), 10);
    assert_eq!(s.runtime.timeouts.idle.as_secs(), 900);
    assert_eq!(s.runtime.timeouts.dns.as_secs(), 5);
    assert_eq!(s.runtime.limits.max_connections, 10_000);
    assert_eq!(s.runtime.limits.max_connections_per_client, 1000);
    assert_eq!(s.runtime.limits.max_header_bytes, 32768);
    assert_eq!(s.runtime.mode, super::Mode::Enforce);
    assert_eq!(s.listeners.admin, Some("127.0.0.1:9090".parse().unwrap()));
    assert_eq!(s.runtime.shutdown_grace.as_secs(), 30);
}

#[test]
fn admin_listener_and_grace() {
    let s = from_yaml_str("admin: {listen: off}\nshutdown: {grace: 5s}\n").unwrap();
    assert_eq!(s.listeners.admin, None);
    assert_eq!(s.runtime.shutdown_grace.as_secs(), 5);
    let err =
        from_yaml_str("listen: 127.0.0.1:3128\nadmin: {listen: 127.0.0.1:3128}\n").unwrap_err();
    assert!(err.to_string().contains("admin.listen"), "{err}");
    // A wildcard address takes the port on every address of its family, so these collide too.
    for (proxy, admin) in [
        ("127.0.0.1:3128", "0.0.0.0:3128"),
        ("[::]:3128", "127.0.0.1:3128"),
    ] {
        let err = from_yaml_str(&format!(
            "listen: \"{proxy}\"\nadmin: {{listen: \"{admin}\"}}\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("admin.listen") && err.contains("shares its port"),
            "{err}"
        );
    }
    let err = from_yaml_str("listen: 127.0.0.1:3128\nlisten_tls: \"0.0.0.0:3128\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("listen_tls: 0.0.0.0:3128 shares its port with listen"),
        "{err}"
    );
    let ok = from_yaml_str("listen: 127.0.0.1:3128\nadmin: {listen: \"127.0.0.2:3128\"}\n");
    assert!(ok.is_ok(), "different addresses may share a port number");
    let err = from_yaml_str("admin: {listen: nine}\nshutdown: {grace: 0s}\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("admin.listen") && err.contains("shutdown.grace"),
        "{err}"
    );
}

#[test]
fn rule_and_profile_mode() {
    let s = from_yaml_str(
        "deny:\n  - name: trial\n    hosts: [\"a.test\"]\n    mode: report\n\
             allow:\n  - name: a\n    hosts: [\"a.test\"]\n\
             vendors: [{name: castai-us, mode: report}]\n",
    )
    .unwrap();
    let d = decide(&s, "a.test:443");
    assert!(d.report && !d.allowed, "{d:?}");
    assert_eq!(d.rule.as_deref(), Some("trial"));
    let d = decide(&s, "api.cast.ai:8443");
    assert!(d.report, "{d:?}");
    assert_eq!(d.rule.as_deref(), Some("castai-us/api"));
    let err = from_yaml_str(
        "allow:\n  - name: a\n    hosts: [\"a.test\"]\n    mode: audit\n\
             vendors: [{name: castai-us, mode: loud}]\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("allow[0].mode"), "{err}");
    assert!(err.contains("vendors[0]") && err.contains("loud"), "{err}");
}

#[test]
fn rules_and_profiles_scoped_to_client_groups() {
    let s = from_yaml_str(
        r#"
clients:
  - {name: castai-agents, cidrs: ["10.1.0.0/16"]}
  - {name: cloudcasa-agents, cidrs: ["10.2.0.0/16", "10.9.9.9"]}
vendors:
  - {name: castai-us, clients: [castai-agents]}
allow:
  - name: shared
    hosts: [shared.example]
deny:
  - name: no-shared-for-cloudcasa
    hosts: [shared.example]
    clients: [cloudcasa-agents]
"#,
    )
    .unwrap();
    let as_client = |ip: &str, authority: &str| {
        let id = s.runtime.policy.clients.identify(ip.parse().unwrap());
        let t = crate::target::parse_authority(authority, None).unwrap();
        s.runtime.policy.decide_request(&t, None, &id)
    };
    assert!(as_client("10.1.0.5", "api.cast.ai:443").allowed);
    let d = as_client("10.2.0.5", "api.cast.ai:443");
    assert_eq!((d.allowed, d.reason), (false, Reason::DeniedNoRule));
    assert!(!as_client("192.0.2.1", "api.cast.ai:443").allowed);
    assert!(as_client("10.1.0.5", "shared.example:443").allowed);
    assert!(as_client("192.0.2.1", "shared.example:443").allowed);
    let d = as_client("10.9.9.9", "shared.example:443");
    assert_eq!(d.rule.as_deref(), Some("no-shared-for-cloudcasa"));
    assert!(!d.allowed);
}

#[test]
fn require_identity_refuses_unidentified_clients() {
    let s = from_yaml_str(
        "clients: [{name: a, cidrs: [\"127.0.0.2/32\"]}]\nrequire_identity: true\n\
             allow: [{name: open, hosts: [open.example]}]\n",
    )
    .unwrap();
    let id = s
        .runtime
        .policy
        .clients
        .identify("127.0.0.2".parse().unwrap());
    let t = crate::target::parse_authority("open.example:443", None).unwrap();
    assert!(s.runtime.policy.decide_request(&t, None, &id).allowed);
    let d = s.runtime.policy.decide(&t);
    assert_eq!((d.allowed, d.reason), (false, Reason::DeniedNoIdentity));
}

#[test]
fn client_group_errors_name_the_key() {
    let err = from_yaml_str(
            r#"
require_identity: true
clients:
  - {name: "bad name", cidrs: ["10.0.0.0/8"]}
  - {name: a, cidrs: ["10.0.0.0/33"]}
  - {name: a, cidrs: ["10.0.0.0/8"]}
  - {name: b}
  - {name: c, certs: ["spiffe://a/*/b"], users: [{user: bob, argon2: "plain"}], token_sha256: ["12"]}
tls: {client_auth: sometimes}
allow:
  - {name: r, hosts: [x.example], clients: [nosuch]}
vendors:
  - {name: castai-us, clients: [7]}
"#,
        )
        .unwrap_err()
        .to_string();
    for want in [
        "clients[0].name",
        "clients[1].cidrs[0]",
        "clients[2].name: \"a\" is defined twice",
        "clients[3].cidrs",
        "clients[4].certs[0]",
        "clients[4].certs: certificate names need tls.client_ca",
        "clients[4].users[0]: the argon2 hash of user \"bob\"",
        "clients[4].token_sha256[0]",
        "tls.client_ca: client certificates are asked for on listen_tls only",
        "allow[0].clients[0]: \"nosuch\" is not a client group",
        "vendors[0]: clients: 7",
    ] {
        assert!(err.contains(want), "missing {want:?} in\n{err}");
    }
    let err = from_yaml_str("require_identity: true\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("require_identity"), "{err}");
}

#[test]
fn dotted_host_keys_survive() {
    let s = from_yaml_str("dns:\n  hosts:\n    API.cast.ai: [\"127.0.0.1\", \"::1\"]\n").unwrap();
    assert_eq!(s.runtime.dns.hosts["api.cast.ai"].len(), 2);
}

fn decide(s: &super::Settings, authority: &str) -> crate::policy::Decision {
    s.runtime
        .policy
        .decide(&crate::target::parse_authority(authority, None).unwrap())
}

#[test]
fn vendor_profiles_become_named_rules() {
    let s = from_yaml_str(
            "vendors:\n  - castai-us\n  - name: cloudcasa\n    params:\n      storage: [\"s3.us-east-1.amazonaws.com\"]\n",
        )
        .unwrap();
    let rule = |a: &str| decide(&s, a).rule.map(|r| r.to_string());
    assert_eq!(rule("api.cast.ai:443").as_deref(), Some("castai-us/api"));
    assert_eq!(rule("grpc.cast.ai:443").as_deref(), Some("castai-us/grpc"));
    assert_eq!(
        rule("agent.cloudcasa.io:443").as_deref(),
        Some("cloudcasa/agent")
    );
    assert_eq!(
        rule("s3.us-east-1.amazonaws.com:443").as_deref(),
        Some("cloudcasa/storage")
    );
    assert_eq!(
        decide(&s, "grpc.cast.ai:443").idle,
        Some(crate::policy::IdleOverride::Never)
    );
    assert_eq!(decide(&s, "api.cast.ai:443").idle, None);
    // The storage paths are enforced for plain HTTP only, and that is said at startup.
    assert_eq!(s.runtime.warnings.len(), 2, "{:?}", s.runtime.warnings);
    assert!(s.runtime.warnings[0].contains("castai-us/node-components"));
    assert!(s.runtime.warnings[0].contains("TLS interception"));
}

#[test]
fn a_deny_rule_only_credentialed_clients_are_in_is_warned_about() {
    let token = "0".repeat(64);
    let s = from_yaml_str(&format!(
        r#"
clients:
  - {{name: tokens, token_sha256: ["{token}"]}}
  - {{name: nodes, cidrs: ["10.0.0.0/8"]}}
deny:
  - {{name: escapable, hosts: [a.example], clients: [tokens]}}
  - {{name: bound, hosts: [b.example], clients: [tokens, nodes]}}
  - {{name: everyone, hosts: [c.example]}}
"#
    ))
    .unwrap();
    assert_eq!(s.runtime.warnings.len(), 1, "{:?}", s.runtime.warnings);
    assert!(
        s.runtime.warnings[0].starts_with("deny rule escapable:"),
        "{:?}",
        s.runtime.warnings
    );
    assert!(s.runtime.warnings[0].contains("[tokens]"));
}

#[test]
fn local_rules_extend_and_override_profiles() {
    let s = from_yaml_str(
        r#"
vendors: [castai-us]
vendors_disable: ["castai-us/helm"]
allow:
  - name: castai-api-long
    hosts: [api.cast.ai]
    idle_timeout: 2h
  - name: extra
    hosts: [extra.example]
deny:
  - name: no-kvisor
    hosts: [api-grpc.cast.ai]
"#,
    )
    .unwrap();
    let d = decide(&s, "api.cast.ai:443");
    assert_eq!(d.rule.as_deref(), Some("castai-api-long"));
    assert_eq!(
        d.idle,
        Some(crate::policy::IdleOverride::After(
            std::time::Duration::from_secs(7200)
        ))
    );
    assert!(decide(&s, "extra.example:443").allowed);
    assert!(!decide(&s, "castai.github.io:443").allowed, "disabled");
    let d = decide(&s, "api-grpc.cast.ai:443");
    assert_eq!((d.allowed, d.rule.as_deref()), (false, Some("no-kvisor")));
    assert!(decide(&s, "kvisor.prod-master.cast.ai:443").allowed);
}

#[test]
fn vendor_errors_name_the_profile_and_parameter() {
    let errs = from_yaml_str(
        r#"
vendors:
  - castai-us
  - cloudcasa
  - nosuch
  - castai-us
  - {name: cloudcasa-self-hosted, params: {storage: []}, extra: 1}
  - {name: cloudcasa-ui, params: {storage: [a]}}
  - 42
vendors_disable: ["castai-us/nope"]
allow:
  - name: p
    hosts: [h.example]
    paths: ["nope", "/ok/"]
    idle_timeout: 0s
  - name: q
    hosts: [h.example]
    idle_timeout: soonish
deny:
  - name: d
    hosts: [h.example]
    paths: ["/x/"]
"#,
    )
    .unwrap_err()
    .0;
    let text: Vec<String> = errs
        .iter()
        .map(|e| format!("{}: {}", e.path, e.message))
        .collect();
    let all = text.join("\n");
    for want in [
        "vendors[1].params: vendor profile cloudcasa needs parameter \"storage\"",
        "vendors[2]: \"nosuch\" is not a vendor profile; available: castai-us",
        "vendors[3]: \"castai-us\" is listed twice",
        "vendors[4]: unknown key \"extra\"",
        "vendors[5].params: vendor profile cloudcasa-ui has no parameter \"storage\"",
        "vendors[6]: 42 is neither",
        "vendors_disable[0]: \"castai-us/nope\"",
        "allow[0].paths[0]: \"nope\" must be a path prefix",
        "allow[0].idle_timeout: \"0s\" must be greater than zero",
        "allow[1].idle_timeout: \"soonish\" is not a duration",
        "deny[0].paths: paths apply only to allow rules",
    ] {
        assert!(all.contains(want), "missing {want:?} in\n{all}");
    }
}

#[test]
fn self_hosted_needs_its_server_and_has_no_saas_endpoints() {
    let errs =
        from_yaml_str("vendors:\n  - {name: cloudcasa-self-hosted, params: {storage: []}}\n")
            .unwrap_err();
    assert!(
        errs.to_string().contains("needs parameter \"server\""),
        "{errs}"
    );
    let s = from_yaml_str(
            "vendors:\n  - {name: cloudcasa-self-hosted, params: {server: cc.example.internal, storage: [minio.example.internal]}}\n",
        )
        .unwrap();
    assert_eq!(
        decide(&s, "cc.example.internal:443").rule.as_deref(),
        Some("cloudcasa-self-hosted/server")
    );
    assert!(decide(&s, "minio.example.internal:443").allowed);
    assert!(!decide(&s, "agent.cloudcasa.io:443").allowed);
    assert!(!decide(&s, "api.cloudcasa.io:443").allowed);
}
