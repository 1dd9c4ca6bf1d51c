//! A vendor's own endpoint on a private address: a rule's `private_cidrs` (or a vendor item's, for the
//! profile's parameter entries) lets exactly that rule's hosts reach those addresses on its ports; every other
//! rule still refuses them, and loopback, link-local and metadata ranges are never exempted. The live test puts
//! the origin on a private address of a veth interface the test creates (needs root, as CI runs).

mod support;
use std::process::Command;
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_egressd");

/// A veth pair (both ends here) holding one private address (10.201.X.1/32) on one end, removed on drop.
struct PrivateAddress {
    name: String,
    ip: std::net::Ipv4Addr,
}

impl PrivateAddress {
    fn new() -> PrivateAddress {
        let pid = std::process::id();
        let a = PrivateAddress {
            name: format!("egpe{}", pid % 100_000),
            ip: std::net::Ipv4Addr::new(10, 201, (pid % 250) as u8, 1),
        };
        let ip = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().expect("run ip");
            assert!(
                out.status.success(),
                "\n*** `ip {}` failed (this test needs root, as CI runs): {} ***\n",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let peer = format!("{}p", a.name);
        ip(&[
            "link", "add", &a.name, "type", "veth", "peer", "name", &peer,
        ]);
        ip(&["addr", "add", &format!("{}/32", a.ip), "dev", &a.name]);
        ip(&["link", "set", &a.name, "up"]);
        ip(&["link", "set", &peer, "up"]);
        a
    }
}

impl Drop for PrivateAddress {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.name])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_reaches_its_own_private_endpoint_and_no_other_rule_does() {
    let net = PrivateAddress::new();
    let origin = http_origin_at(std::net::SocketAddr::new(net.ip.into(), 0)).await;
    let port = origin.port();
    let yaml = format!(
        r#"
allow:
  - name: minio
    hosts: ["minio.corp.example"]
    ports: [{port}]
    private_cidrs: ["{ip}/32"]
  - name: other
    hosts: ["other.corp.example"]
    ports: [{port}]
dns:
  hosts:
    minio.corp.example: ["{ip}"]
    other.corp.example: ["{ip}"]
"#,
        ip = net.ip
    );
    let proxy = start_proxy(&yaml).await;
    let resp = connect(proxy.addr, &format!("minio.corp.example:{port}")).await;
    assert_eq!(status(&resp), 200, "{resp}");
    let d = proxy.log.decision_for("minio.corp.example").await;
    assert_eq!(d["decision"], "allow", "{d}");
    assert_eq!(d["upstream_addr"], format!("{}:{port}", net.ip), "{d}");

    // The same address through another rule: refused as before.
    let resp = connect(proxy.addr, &format!("other.corp.example:{port}")).await;
    assert_eq!(status(&resp), 403, "{resp}");
    assert_eq!(
        header(&resp, "x-egressd-reason"),
        Some("denied_private_address")
    );
    let d = proxy.log.decision_for("other.corp.example").await;
    assert_eq!(d["denied_addr"], net.ip.to_string(), "{d}");
}

fn egressd(args: &[&str], config: &str) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("egressd.yaml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_resolve_applies_the_exception_of_the_rule_and_of_the_vendor_item() {
    let config = r#"
listen: "127.0.0.1:0"
allow:
  - name: minio
    hosts: ["minio.corp.example"]
    ports: [9000]
    private_cidrs: ["10.20.0.0/24"]
vendors:
  - name: cloudcasa-self-hosted
    params: {server: cloudcasa.corp.example, storage: []}
    private_cidrs: ["10.20.0.5/32"]
dns:
  hosts:
    minio.corp.example: ["10.20.0.9"]
    cloudcasa.corp.example: ["10.20.0.5"]
"#;
    let (code, out, err) = egressd(
        &[
            "check",
            "--resolve",
            "minio.corp.example:9000",
            "cloudcasa.corp.example:443",
        ],
        config,
    );
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("rule=minio"), "{out}");
    assert!(out.contains("rule=cloudcasa-self-hosted/server"), "{out}");
    // The exception does not follow the host to another port, nor a CIDR to another address.
    let config_other_ip = config.replace(
        "cloudcasa.corp.example: [\"10.20.0.5\"]",
        "cloudcasa.corp.example: [\"10.20.0.6\"]",
    );
    let (code, out, _) = egressd(
        &["check", "--resolve", "cloudcasa.corp.example:443"],
        &config_other_ip,
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("denied_private_address"), "{out}");
    let (code, out, _) = egressd(&["check", "--resolve", "minio.corp.example:443"], config);
    assert_eq!(code, Some(1), "{out}");

    // A vendor item's private_cidrs cover the rules made from its parameters, not the vendor's SaaS entries.
    let saas = r#"
vendors:
  - name: cloudcasa
    params: {storage: [minio.corp.example]}
    private_cidrs: ["10.20.0.0/24"]
dns:
  hosts:
    minio.corp.example: ["10.20.0.9"]
    agent.cloudcasa.io: ["10.20.0.7"]
"#;
    let (code, out, _) = egressd(&["check", "--resolve", "minio.corp.example:443"], saas);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("rule=cloudcasa/storage"), "{out}");
    let (code, out, _) = egressd(&["check", "--resolve", "agent.cloudcasa.io:443"], saas);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("denied_private_address"), "{out}");
}

#[test]
fn validate_refuses_bad_exceptions_and_warns_about_unexempted_parameters() {
    let (code, _, err) = egressd(
        &["validate"],
        r#"
allow:
  - {name: a, hosts: ["*.corp.example"], private_cidrs: ["10.0.0.0/8"]}
  - {name: b, hosts: ["b.corp.example"], private_cidrs: ["127.0.0.1/32"]}
  - {name: c, hosts: ["c.corp.example"], private_cidrs: ["169.254.169.254"]}
  - {name: d, hosts: ["d.corp.example"], private_cidrs: ["fd00:ec2::/32"]}
deny:
  - {name: e, hosts: ["e.corp.example"], private_cidrs: ["10.0.0.0/8"]}
"#,
    );
    assert_eq!(code, Some(2), "{err}");
    for want in [
        "allow[0].hosts[0]",
        "allow[1].private_cidrs[0]",
        "allow[2].private_cidrs[0]",
        "allow[3].private_cidrs[0]",
        "deny[0].private_cidrs",
    ] {
        assert!(err.contains(want), "{want} missing from {err}");
    }

    // A parameter naming a private address without an exception is valid, with a warning saying it will be
    // refused and how to exempt it; a loopback address can never be exempted.
    let (code, out, err) = egressd(
        &["validate"],
        r#"
vendors:
  - name: cloudcasa-self-hosted
    params: {server: 10.20.0.5, storage: ["127.0.0.1"]}
"#,
    );
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        err.contains("parameter host 10.20.0.5 is 10.20.0.5")
            && err.contains("denied_private_address")
            && err.contains("add 10.20.0.5/32 to the item's private_cidrs"),
        "{err}"
    );
    assert!(
        err.contains("127.0.0.1") && err.contains("can never be exempted"),
        "{err}"
    );
    // With the exception, no warning for it.
    let (code, _, err) = egressd(
        &["validate"],
        r#"
vendors:
  - name: cloudcasa-self-hosted
    params: {server: 10.20.0.5, storage: []}
    private_cidrs: ["10.20.0.5"]
"#,
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains("warning"), "{err}");
}
