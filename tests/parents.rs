//! Through a real parent proxy: Squid from Debian on loopback, with its own configuration, hosts file and
//! access log in a temp dir (and stunnel from Debian in front of it as a TLS parent); curl and Python as the
//! clients, CONNECT and plain HTTP.

mod support;
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::squid::Squid;
use support::*;

const NAME: &str = "api.test.example";

/// `ports`: one port, or several as `"1, 2"`.
fn yaml(parents: &str, ports: impl std::fmt::Display, extra: &str) -> String {
    format!(
        r#"
{parents}
allow:
  - name: origin
    hosts: ["{NAME}", "blocked.test.example", "only-parent.test.example"]
    ports: [{ports}]
destinations:
  allow_cidrs: ["127.0.0.0/8"]
dns:
  hosts_file: "off"
  hosts:
    {NAME}: ["127.0.0.1"]
    blocked.test.example: ["127.0.0.1"]
{extra}
"#
    )
}

fn one_parent(squid: &Squid) -> String {
    format!(
        "parents:\n  - {{name: corp, url: \"http://127.0.0.1:{}\"}}\n",
        squid.port
    )
}

async fn curl_via(proxy: &TestProxy, origin: &TlsOrigin, host: &str) -> CurlOut {
    let url = format!("https://{host}:{}/", origin.addr.port());
    curl(
        &["--cacert", origin.ca_pem.to_str().unwrap(), &url],
        &[("HTTPS_PROXY", &proxy.url())],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_connect_goes_through_the_parent_by_name_and_refused_ones_never_reach_it() {
    let squid = Squid::start("", &[NAME]).await;
    let origin = tls_origin(&[NAME]).await;
    let port = origin.addr.port();
    let proxy = start_proxy(&yaml(&one_parent(&squid), port, "")).await;

    let out = curl_via(&proxy, &origin, NAME).await;
    assert_eq!(out.code, 0, "curl failed: {}", out.stderr);
    assert_eq!(out.stdout, "hello from tls origin");
    let log = squid.wait_logged(&format!("CONNECT {NAME}:{port}")).await;
    assert!(
        !log.contains("CONNECT 127.0.0.1"),
        "the parent got the name: {log}"
    );
    let d = proxy.log.decision_for(NAME).await;
    assert_eq!(d["decision"], "allow", "{d}");
    assert_eq!(d["via"], "corp");
    assert_eq!(d["parent_status"], serde_json::json!(["corp=200"]));
    assert_eq!(d["resolve"], "local");
    assert_eq!(d["resolved_addrs"], serde_json::json!(["127.0.0.1"]));
    assert_eq!(d["upstream_addr"], format!("127.0.0.1:{}", squid.port));
    assert_eq!(
        d["sni"], NAME,
        "the hello is judged as in a direct tunnel: {d}"
    );

    // Refused by policy: the parent never hears of it.
    let resp = connect(proxy.addr, &format!("denied.test.example:{port}")).await;
    assert_eq!(status(&resp), 403, "{resp}");
    assert_eq!(header(&resp, "x-egressd-reason"), Some("denied_no_rule"));
    let d = proxy.log.decision_for("denied.test.example").await;
    assert!(
        d.get("via").is_none() && d.get("parent_status").is_none(),
        "{d}"
    );
    // A closed tunnel is logged at once; give Squid the time it would take anyway.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !squid.access_log().contains("denied.test.example"),
        "{}",
        squid.access_log()
    );
    // One CONNECT in all (the other line is the readiness probe's empty connection).
    assert_eq!(
        squid.access_log().matches(" CONNECT ").count(),
        1,
        "{}",
        squid.access_log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parents_403_is_a_502_parent_refused() {
    let squid = Squid::start(
        "acl blocked dstdomain blocked.test.example\nhttp_access deny blocked",
        &[NAME, "blocked.test.example"],
    )
    .await;
    let origin = tls_origin(&[NAME]).await;
    let port = origin.addr.port();
    let proxy = start_proxy(&yaml(&one_parent(&squid), port, "")).await;
    let resp = connect(proxy.addr, &format!("blocked.test.example:{port}")).await;
    assert_eq!(status(&resp), 502, "{resp}");
    assert_eq!(header(&resp, "x-egressd-reason"), Some("parent_refused"));
    assert!(resp.contains("403 Forbidden"), "{resp}");
    let d = proxy.log.decision_for("blocked.test.example").await;
    assert_eq!(d["reason"], "parent_refused");
    assert!(
        d["detail"]
            .as_str()
            .unwrap()
            .contains("parent corp answered 403"),
        "{d}"
    );
    assert_eq!(d["parent_status"], serde_json::json!(["corp=403"]));
    squid.wait_logged("CONNECT blocked.test.example").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_go_to_the_parent_and_its_407_never_reaches_the_client() {
    let squid_dir = tempfile::tempdir().unwrap();
    let htpasswd = squid_dir.path().join("htpasswd");
    let hash = std::process::Command::new("openssl")
        .args(["passwd", "-apr1", "s3cret"])
        .output()
        .unwrap();
    assert!(hash.status.success());
    std::fs::write(
        &htpasswd,
        format!("corpuser:{}", String::from_utf8_lossy(&hash.stdout)),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(squid_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&htpasswd, std::fs::Permissions::from_mode(0o644)).unwrap();
    let helper = Path::new("/usr/lib/squid/basic_ncsa_auth");
    assert!(helper.exists(), "Debian's squid ships {}", helper.display());
    let squid = Squid::start(
        &format!(
            "auth_param basic program {} {}\nauth_param basic realm corp\nacl authed proxy_auth REQUIRED\nhttp_access deny !authed",
            helper.display(),
            htpasswd.display()
        ),
        &[NAME],
    )
    .await;
    let origin = tls_origin(&[NAME]).await;
    let port = origin.addr.port();
    let creds = squid_dir.path().join("parent-credentials");
    std::fs::write(&creds, "corpuser:s3cret\n").unwrap();
    let parents = format!(
        "parents:\n  - {{name: corp, url: \"http://127.0.0.1:{}\", credentials_file: {}}}\n",
        squid.port,
        creds.display()
    );
    let proxy = start_proxy(&yaml(&parents, port, "")).await;
    let out = curl_via(&proxy, &origin, NAME).await;
    assert_eq!(out.code, 0, "curl failed: {}", out.stderr);
    assert_eq!(out.stdout, "hello from tls origin");
    let log = squid
        .wait_logged(&format!("CONNECT {NAME}:{port} corpuser"))
        .await;
    let lines = proxy.log.lines();
    assert!(
        !lines
            .iter()
            .any(|l| l.to_string().contains("s3cret")
                || l.to_string().contains("Y29ycHVzZXI6czNjcmV0")),
        "credentials never logged"
    );

    // Wrong credentials: the parent's 407 becomes a 502 without its challenge.
    std::fs::write(&creds, "corpuser:wrong\n").unwrap();
    let parents = format!(
        "parents:\n  - {{name: corp, url: \"http://127.0.0.1:{}\", credentials_file: {}}}\n",
        squid.port,
        creds.display()
    );
    let proxy = start_proxy(&yaml(&parents, port, "")).await;
    let resp = connect(proxy.addr, &format!("{NAME}:{port}")).await;
    assert_eq!(status(&resp), 502, "{resp}\n{log}");
    assert_eq!(header(&resp, "x-egressd-reason"), Some("parent_refused"));
    assert!(resp.contains("407"), "{resp}");
    assert!(header(&resp, "proxy-authenticate").is_none(), "{resp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_that_is_down_is_skipped_and_all_down_is_parent_unreachable() {
    let squid = Squid::start("", &[NAME]).await;
    let origin = tls_origin(&[NAME]).await;
    let port = origin.addr.port();
    let dead = closed_port().await;
    let parents = format!(
        "parents:\n  - {{name: dead, url: \"http://127.0.0.1:{dead}\"}}\n  - {{name: corp, url: \"http://127.0.0.1:{}\"}}\n",
        squid.port
    );
    let proxy = start_proxy(&yaml(&parents, port, "via: [dead, corp]")).await;
    for (i, first) in ["dead=refused", "dead=skipped"].into_iter().enumerate() {
        let out = curl_via(&proxy, &origin, NAME).await;
        assert_eq!(out.code, 0, "curl failed: {}", out.stderr);
        let d = &proxy.log.wait_events("decision", i + 1).await[i];
        assert_eq!(d["via"], "corp", "{d}");
        assert_eq!(d["parent_status"], serde_json::json!([first, "corp=200"]));
    }

    let dead2 = closed_port().await;
    let parents = format!(
        "parents:\n  - {{name: a, url: \"http://127.0.0.1:{dead}\"}}\n  - {{name: b, url: \"http://127.0.0.1:{dead2}\"}}\n"
    );
    let proxy = start_proxy(&yaml(&parents, port, "")).await;
    let resp = connect(proxy.addr, &format!("{NAME}:{port}")).await;
    assert_eq!(status(&resp), 502, "{resp}");
    assert_eq!(
        header(&resp, "x-egressd-reason"),
        Some("parent_unreachable")
    );
    let d = proxy.log.decision_for(NAME).await;
    assert_eq!(d["reason"], "parent_unreachable");
    assert_eq!(d["via"], "a,b");
    assert_eq!(
        d["parent_status"],
        serde_json::json!(["a=refused", "b=refused"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolve_parent_leaves_names_to_the_parent() {
    let squid = Squid::start("", &["only-parent.test.example"]).await;
    let origin = tls_origin(&["only-parent.test.example"]).await;
    let port = origin.addr.port();
    let parents = format!(
        "parents:\n  - {{name: corp, url: \"http://127.0.0.1:{}\", resolve: parent}}\n",
        squid.port
    );
    let proxy = start_proxy(&yaml(&parents, port, "")).await;
    let out = curl_via(&proxy, &origin, "only-parent.test.example").await;
    assert_eq!(out.code, 0, "curl failed: {}", out.stderr);
    assert_eq!(out.stdout, "hello from tls origin");
    let d = proxy.log.decision_for("only-parent.test.example").await;
    assert_eq!(d["resolve"], "parent", "{d}");
    assert_eq!(d["resolved_addrs"], serde_json::json!([]));
    squid
        .wait_logged(&format!("CONNECT only-parent.test.example:{port}"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_or_bypass_entry_can_go_direct() {
    let origin = tls_origin(&[NAME]).await;
    let port = origin.addr.port();
    let dead = closed_port().await;
    let parents = format!("parents:\n  - {{name: corp, url: \"http://127.0.0.1:{dead}\"}}\n");
    let proxy = start_proxy(&yaml(&parents, port, "parents_bypass: [\".test.example\"]")).await;
    let out = curl_via(&proxy, &origin, NAME).await;
    assert_eq!(out.code, 0, "curl failed: {}", out.stderr);
    let d = proxy.log.decision_for(NAME).await;
    assert_eq!(d["via"], "direct", "{d}");
    assert!(d.get("parent_status").is_none(), "{d}");
}

#[test]
fn check_prints_the_route_as_a_trailing_field() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("egressd.yaml");
    std::fs::write(
        &cfg,
        "parents:\n  - {name: corp, url: \"http://127.0.0.1:3128\"}\n  - {name: backup, url: \"http://127.0.0.1:3129\"}\nallow:\n  - {name: a, hosts: [a.example]}\n  - {name: m, hosts: [mirror.example], via: direct}\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_egressd"))
        .args(["check", "--config"])
        .arg(&cfg)
        .args(["a.example:443", "mirror.example:443", "evil.example:443"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("a.example:443\tallow\trule=a\treason=allowed\tvia=corp,backup\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("mirror.example:443\tallow\trule=m\treason=allowed\tvia=direct\n"),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("evil.example:443\tdeny") && !l.contains("via=")),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_that_does_not_accept_in_time_is_504_parent_timeout() {
    let (_listener, port, _filled) = silent_listener().await;
    let origin = tls_origin(&[NAME]).await;
    let parents = format!(
        "parents:\n  - {{name: slow, url: \"http://127.0.0.1:{port}\", connect_timeout: 300ms}}\n"
    );
    let proxy = start_proxy(&yaml(&parents, origin.addr.port(), "")).await;
    let resp = connect(proxy.addr, &format!("{NAME}:{}", origin.addr.port())).await;
    assert_eq!(status(&resp), 504, "{resp}");
    assert_eq!(header(&resp, "x-egressd-reason"), Some("parent_timeout"));
    let d = proxy.log.decision_for(NAME).await;
    assert_eq!(d["parent_status"], serde_json::json!(["slow=timeout"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_resolving_to_a_special_address_never_reaches_the_parent() {
    let squid = Squid::start("", &[NAME, "meta.test.example"]).await;
    let parents = one_parent(&squid);
    let yaml = format!(
        "{parents}allow:\n  - {{name: origin, hosts: [meta.test.example]}}\ndns:\n  hosts_file: \"off\"\n  hosts:\n    meta.test.example: [\"169.254.169.254\"]\n"
    );
    let proxy = start_proxy(&yaml).await;
    let resp = connect(proxy.addr, "meta.test.example:443").await;
    assert_eq!(status(&resp), 403, "{resp}");
    assert_eq!(
        header(&resp, "x-egressd-reason"),
        Some("denied_private_address")
    );
    let d = proxy.log.decision_for("meta.test.example").await;
    assert_eq!(d["resolve"], "local", "{d}");
    assert_eq!(d["denied_addr"], "169.254.169.254");
    assert!(d.get("parent_status").is_none(), "no parent was asked: {d}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !squid.access_log().contains("meta.test.example"),
        "{}",
        squid.access_log()
    );
}

/// curl with `args` and egressd as its `http_proxy`.
async fn curl_http(proxy: &TestProxy, args: &[&str]) -> CurlOut {
    curl(args, &[("http_proxy", &proxy.url())]).await
}

/// Two plain-HTTP requests with curl on one kept-alive connection to egressd.
async fn curl_http_twice(proxy: &TestProxy, origin: std::net::SocketAddr) -> CurlOut {
    let port = origin.port();
    curl_http(
        proxy,
        &[
            "-sS",
            &format!("http://{NAME}:{port}/one"),
            &format!("http://{NAME}:{port}/two"),
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_goes_to_the_parent_in_absolute_form_over_kept_alive_connections() {
    let squid = Squid::start("", &[NAME]).await;
    let origin = http_origin().await;
    let port = origin.port();
    let proxy = start_proxy(&yaml(&one_parent(&squid), port, "")).await;

    let out = curl_http_twice(&proxy, origin).await;
    assert_eq!(out.code, 0, "curl failed: {}", out.stderr);
    // The origin got both, from Squid (which adds its Via).
    assert!(out.stdout.contains("GET /one\n"), "{}", out.stdout);
    assert!(out.stdout.contains("GET /two\n"), "{}", out.stdout);
    assert!(
        out.stdout.contains("via: 1.1 egressd-test"),
        "{}",
        out.stdout
    );
    let log = squid
        .wait_logged(&format!("GET http://{NAME}:{port}/two"))
        .await;
    assert!(
        log.contains(&format!("GET http://{NAME}:{port}/one")),
        "absolute form with the name: {log}"
    );
    let lines = proxy.log.wait_events("decision", 2).await;
    for d in &lines {
        assert_eq!(d["decision"], "allow", "{d}");
        assert_eq!(d["via"], "corp", "{d}");
        assert_eq!(d["parent_status"], serde_json::json!(["corp=relayed"]));
        assert_eq!(d["resolve"], "local", "{d}");
        assert_eq!(d["resolved_addrs"], serde_json::json!(["127.0.0.1"]));
        assert_eq!(d["upstream_addr"], format!("127.0.0.1:{}", squid.port));
    }
    assert!(lines[0]["connect_ms"].is_number(), "{}", lines[0]);
    // Connections to the parent are pooled: once the first one is idle again, a later request (here from a new
    // client connection) takes it without a new connect. The second request above may or may not have found it
    // idle yet: the HTTP client dials a new connection when none is idle at that moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let out = curl_http(&proxy, &["-sS", &format!("http://{NAME}:{port}/three")]).await;
    assert_eq!(out.code, 0, "curl failed: {}", out.stderr);
    let lines = proxy.log.wait_events("decision", 3).await;
    assert_eq!(lines[2]["via"], "corp", "{}", lines[2]);
    assert!(lines[2]["connect_ms"].is_null(), "{}", lines[2]);
    let relayed = proxy
        .metric(r#"egressd_parent_attempts_total{parent="corp",result="relayed"}"#)
        .await;
    assert_eq!(relayed, 3.0);
    let allowed = proxy
        .metric(r#"egressd_decisions_total{decision="allow",reason="allowed",rule="origin",vendor="",client_group="",via="corp"}"#)
        .await;
    assert_eq!(allowed, 3.0);

    // Refused by policy, and a name that resolves to a special-purpose address: neither reaches the parent.
    let out = curl_http(&proxy, &["-sS", "-i", "http://denied.test.example/"]).await;
    assert!(out.stdout.starts_with("HTTP/1.1 403"), "{}", out.stdout);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !squid.access_log().contains("denied.test.example"),
        "{}",
        squid.access_log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_through_a_parent_with_credentials_and_its_407() {
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    let hash = std::process::Command::new("openssl")
        .args(["passwd", "-apr1", "s3cret"])
        .output()
        .unwrap();
    std::fs::write(
        &htpasswd,
        format!("corpuser:{}", String::from_utf8_lossy(&hash.stdout)),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&htpasswd, std::fs::Permissions::from_mode(0o644)).unwrap();
    let squid = Squid::start(
        &format!(
            "auth_param basic program /usr/lib/squid/basic_ncsa_auth {}\nauth_param basic realm corp\nacl authed proxy_auth REQUIRED\nhttp_access deny !authed",
            htpasswd.display()
        ),
        &[NAME],
    )
    .await;
    let origin = http_origin().await;
    let creds = dir.path().join("parent-credentials");
    let parents = format!(
        "parents:\n  - {{name: corp, url: \"http://127.0.0.1:{}\", credentials_file: {}}}\n",
        squid.port,
        creds.display()
    );
    std::fs::write(&creds, "corpuser:s3cret\n").unwrap();
    let proxy = start_proxy(&yaml(&parents, origin.port(), "")).await;
    // The client's own Proxy-Authorization is egressd's (hop-by-hop), never the parent's.
    let out = curl_http(
        &proxy,
        &[
            "-sS",
            "--proxy-user",
            "agent:agentpass",
            &format!("http://{NAME}:{}/x", origin.port()),
        ],
    )
    .await;
    assert!(out.stdout.contains("GET /x\n"), "{}", out.stdout);
    assert!(
        !out.stdout.contains("proxy-authorization"),
        "{}",
        out.stdout
    );
    squid
        .wait_logged(&format!("GET http://{NAME}:{}/x corpuser", origin.port()))
        .await;

    std::fs::write(&creds, "corpuser:wrong\n").unwrap();
    let proxy = start_proxy(&yaml(&parents, origin.port(), "")).await;
    let out = curl_http(
        &proxy,
        &["-sS", "-i", &format!("http://{NAME}:{}/y", origin.port())],
    )
    .await;
    assert!(out.stdout.starts_with("HTTP/1.1 502"), "{}", out.stdout);
    assert!(
        out.stdout.contains("x-egressd-reason: parent_refused"),
        "{}",
        out.stdout
    );
    assert!(
        !out.stdout
            .to_ascii_lowercase()
            .contains("proxy-authenticate"),
        "the parent's challenge stays with egressd: {}",
        out.stdout
    );
    let d = proxy.log.decision_for(NAME).await;
    assert_eq!(d["reason"], "parent_refused", "{d}");
    assert_eq!(d["parent_status"], serde_json::json!(["corp=407"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_skips_a_parent_that_is_down_with_its_body_intact() {
    let squid = Squid::start("", &[NAME]).await;
    let origin = http_origin().await;
    let dead = closed_port().await;
    let parents = format!(
        "parents:\n  - {{name: dead, url: \"http://127.0.0.1:{dead}\"}}\n  - {{name: corp, url: \"http://127.0.0.1:{}\"}}\n",
        squid.port
    );
    let proxy = start_proxy(&yaml(&parents, origin.port(), "")).await;
    let out = curl_http(
        &proxy,
        &[
            "-sS",
            "--data-binary",
            "0123456789",
            &format!("http://{NAME}:{}/upload", origin.port()),
        ],
    )
    .await;
    assert!(out.stdout.contains("POST /upload\n"), "{}", out.stdout);
    assert!(out.stdout.contains("body-length: 10\n"), "{}", out.stdout);
    let d = proxy.log.decision_for(NAME).await;
    assert_eq!(d["via"], "corp", "{d}");
    assert_eq!(
        d["parent_status"],
        serde_json::json!(["dead=refused", "corp=relayed"])
    );
    assert_eq!(
        proxy
            .metric(r#"egressd_parent_attempts_total{parent="dead",result="refused"}"#)
            .await,
        1.0
    );
}

/// stunnel from Debian on 127.0.0.1 in front of `squid`: a TLS parent, its certificate for 127.0.0.1 issued
/// by the CA in `ca_pem`. Stopped when dropped.
struct Stunnel {
    port: u16,
    ca_pem: PathBuf,
    _dir: tempfile::TempDir,
    child: std::process::Child,
}

impl Stunnel {
    async fn start(squid: &Squid) -> Stunnel {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
        std::fs::write(d.join("cert.pem"), cert.cert.pem()).unwrap();
        std::fs::write(d.join("key.pem"), cert.key_pair.serialize_pem()).unwrap();
        let port = closed_port().await;
        std::fs::write(
            d.join("stunnel.conf"),
            format!(
                "foreground = yes\npid =\n[parent]\naccept = 127.0.0.1:{port}\nconnect = 127.0.0.1:{}\ncert = {d}/cert.pem\nkey = {d}/key.pem\n",
                squid.port,
                d = d.display()
            ),
        )
        .unwrap();
        let program = ["/usr/bin/stunnel4", "/usr/bin/stunnel"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or("stunnel4");
        let child = std::process::Command::new(program)
            .arg(d.join("stunnel.conf"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("stunnel must be installed (apt-get install stunnel4)");
        let stunnel = Stunnel {
            port,
            ca_pem: d.join("cert.pem"),
            _dir: dir,
            child,
        };
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return stunnel;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("stunnel did not listen on {port}");
    }
}

impl Drop for Stunnel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_parent_carries_connect_and_plain_http_and_a_wrong_ca_is_refused() {
    let squid = Squid::start("", &[NAME]).await;
    let stunnel = Stunnel::start(&squid).await;
    let origin = tls_origin(&[NAME]).await;
    let plain = http_origin().await;
    let ports = format!("{}, {}", origin.addr.port(), plain.port());
    let parents = format!(
        "parents:\n  - {{name: corp-tls, url: \"https://127.0.0.1:{}\", ca: {}}}\n",
        stunnel.port,
        stunnel.ca_pem.display()
    );
    let proxy = start_proxy(&yaml(&parents, &ports, "")).await;
    let out = curl_via(&proxy, &origin, NAME).await;
    assert_eq!(out.code, 0, "curl failed: {}", out.stderr);
    assert_eq!(out.stdout, "hello from tls origin");
    squid
        .wait_logged(&format!("CONNECT {NAME}:{}", origin.addr.port()))
        .await;
    let out = curl_http(
        &proxy,
        &["-sS", &format!("http://{NAME}:{}/over-tls", plain.port())],
    )
    .await;
    assert!(out.stdout.contains("GET /over-tls\n"), "{}", out.stdout);
    let lines = proxy.log.wait_events("decision", 2).await;
    for d in &lines {
        assert_eq!(d["via"], "corp-tls", "{d}");
        assert_eq!(d["upstream_addr"], format!("127.0.0.1:{}", stunnel.port));
    }
    assert_eq!(
        lines[0]["parent_status"],
        serde_json::json!(["corp-tls=200"])
    );
    assert_eq!(
        lines[1]["parent_status"],
        serde_json::json!(["corp-tls=relayed"])
    );

    // A parent whose certificate the configured CA did not issue is not spoken to.
    let other_ca = origin.ca_pem.display();
    let parents = format!(
        "parents:\n  - {{name: corp-tls, url: \"https://127.0.0.1:{}\", ca: {other_ca}}}\n",
        stunnel.port
    );
    let proxy = start_proxy(&yaml(&parents, &ports, "")).await;
    let resp = connect(proxy.addr, &format!("{NAME}:{}", origin.addr.port())).await;
    assert_eq!(status(&resp), 502, "{resp}");
    assert_eq!(
        header(&resp, "x-egressd-reason"),
        Some("parent_unreachable")
    );
    let d = proxy.log.decision_for(NAME).await;
    assert_eq!(
        d["parent_status"],
        serde_json::json!(["corp-tls=tls_error"])
    );
    assert!(
        d["detail"].as_str().unwrap().contains("certificate"),
        "the detail says what failed: {d}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_clients_reach_https_and_http_through_the_chain() {
    let squid = Squid::start("", &[NAME]).await;
    let origin = tls_origin(&[NAME]).await;
    let plain = http_origin().await;
    let ports = format!("{}, {}", origin.addr.port(), plain.port());
    let proxy = start_proxy(&yaml(&one_parent(&squid), &ports, "")).await;
    let script = format!(
        r#"
import ssl, urllib.request
ctx = ssl.create_default_context(cafile={ca:?})
opener = urllib.request.build_opener(
    urllib.request.ProxyHandler({{"http": {proxy:?}, "https": {proxy:?}}}),
    urllib.request.HTTPSHandler(context=ctx),
)
print(opener.open("https://{NAME}:{tls}/").read().decode())
print(opener.open("http://{NAME}:{plain}/py").read().decode().splitlines()[0])
"#,
        ca = origin.ca_pem.display().to_string(),
        proxy = proxy.url(),
        tls = origin.addr.port(),
        plain = plain.port(),
    );
    let out = tokio::process::Command::new("python3")
        .args(["-c", &script])
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .env_remove("no_proxy")
        .output()
        .await
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout, "hello from tls origin\nGET /py\n");
    squid
        .wait_logged(&format!("GET http://{NAME}:{}/py", plain.port()))
        .await;
    squid
        .wait_logged(&format!("CONNECT {NAME}:{}", origin.addr.port()))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_over_ipv6_and_an_ipv6_literal_target() {
    let squid = Squid::start("", &[NAME]).await;
    let origin = tls_origin_at("[::1]:0".parse().unwrap(), &["::1"]).await;
    let port = origin.addr.port();
    let yaml = format!(
        "parents:\n  - {{name: corp6, url: \"http://[::1]:{}\"}}\nallow:\n  - {{name: v6, hosts: [\"::1\"], ports: [{port}]}}\ndestinations:\n  allow_cidrs: [\"::1/128\"]\n",
        squid.port
    );
    let proxy = start_proxy(&yaml).await;
    let out = curl(
        &[
            "--cacert",
            origin.ca_pem.to_str().unwrap(),
            &format!("https://[::1]:{port}/"),
        ],
        &[("HTTPS_PROXY", &proxy.url())],
    )
    .await;
    assert_eq!(out.code, 0, "curl failed: {}", out.stderr);
    assert_eq!(out.stdout, "hello from tls origin");
    let d = proxy.log.decision_for("::1").await;
    assert_eq!(d["via"], "corp6", "{d}");
    assert_eq!(d["upstream_addr"], format!("[::1]:{}", squid.port));
    assert_eq!(d["resolved_addrs"], serde_json::json!(["::1"]));
    squid.wait_logged(&format!("CONNECT [::1]:{port}")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_down_before_a_reload_is_still_passed_over_after_it() {
    let squid = Squid::start("", &[NAME]).await;
    let origin = tls_origin(&[NAME]).await;
    let port = origin.addr.port();
    let dead = closed_port().await;
    let parents = format!(
        "parents:\n  - {{name: dead, url: \"http://127.0.0.1:{dead}\"}}\n  - {{name: corp, url: \"http://127.0.0.1:{}\"}}\n",
        squid.port
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("egressd.yaml");
    let text = format!(
        "listen: 127.0.0.1:0\nadmin: {{listen: 127.0.0.1:0}}\n{}",
        yaml(&parents, port, "")
    );
    std::fs::write(&path, &text).unwrap();
    let proxy = start_proxy_file(&path).await;
    let out = curl_via(&proxy, &origin, NAME).await;
    assert_eq!(out.code, 0, "curl failed: {}", out.stderr);
    std::fs::write(&path, format!("{text}\n# reloaded\n")).unwrap();
    proxy.reloader.reload().expect("valid configuration");
    let out = curl_via(&proxy, &origin, NAME).await;
    assert_eq!(out.code, 0, "curl failed: {}", out.stderr);
    let lines = proxy.log.wait_events("decision", 2).await;
    assert_eq!(
        lines[0]["parent_status"],
        serde_json::json!(["dead=refused", "corp=200"])
    );
    assert_eq!(
        lines[1]["parent_status"],
        serde_json::json!(["dead=skipped", "corp=200"]),
        "the reload kept what it knew of the parents"
    );
}
