//! Transparent mode for real: a client network namespace joined to the host by a veth pair, its port-443
//! (or port-80) traffic redirected to egressd's transparent listener by an iptables REDIRECT rule on the
//! host-side veth. The client only ever dials addresses of the test's own veth; the origins listen there too.
//! Needs root (CI runs as root); without the rights to create namespaces every test here fails, loudly.

mod support;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use support::*;

/// iptables with the nftables backend (Debian's default `iptables`); `.ci/run` installs the package.
const IPTABLES: &str = "iptables-nft";
const IP6TABLES: &str = "ip6tables-nft";

/// Run a command that must succeed; its failure output goes into the panic.
fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A client namespace and a veth pair into it, on a /29 of 10.200.0.0/16 no other interface uses:
/// `.1` and `.3` on the host side (origins, egressd), `.2` in the namespace (the client); the same in IPv6 on
/// fdee:200:x::/64. Removed, with the nat rules, on drop, also when a test panics.
struct Net {
    ns: String,
    host_if: String,
    /// The subnet's third octet.
    octet: u8,
    /// (iptables binary, rule) to delete.
    rules: Mutex<Vec<(&'static str, Vec<String>)>>,
}

impl Net {
    fn new() -> Net {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let mut net = Net {
            ns: format!("egressd-test-{pid}-{n}"),
            host_if: format!("egt{}x{n}", pid % 100_000),
            octet: 0,
            rules: Mutex::new(Vec::new()),
        };
        if let Err(e) = run("ip", &["netns", "add", &net.ns]) {
            panic!(
                "\n\n*** transparent-mode tests need network namespaces, veth and iptables (run as root, as CI \
                 does); this machine cannot create them: {e} ***\n\n"
            );
        }
        net.octet = free_octet(pid as usize + n * 37);
        let client_if = format!("egt{}y{n}", pid % 100_000);
        let (host_if, ns) = (net.host_if.clone(), net.ns.clone());
        let cidr = |last: u8| format!("10.200.{}.{last}/29", net.octet);
        let cidr6 = |last: u16| format!("{}/64", net.ip6(last));
        let steps: Vec<(&str, Vec<String>)> = vec![
            (
                "ip",
                vec![
                    "link".into(),
                    "add".into(),
                    host_if.clone(),
                    "type".into(),
                    "veth".into(),
                    "peer".into(),
                    "name".into(),
                    client_if.clone(),
                    "netns".into(),
                    ns.clone(),
                ],
            ),
            ("ip", to_args(&["addr", "add", &cidr(1), "dev", &host_if])),
            ("ip", to_args(&["addr", "add", &cidr(3), "dev", &host_if])),
            ("ip", to_args(&["link", "set", &host_if, "up"])),
            (
                "ip",
                to_args(&["-n", &ns, "addr", "add", &cidr(2), "dev", &client_if]),
            ),
            ("ip", to_args(&["-n", &ns, "link", "set", &client_if, "up"])),
            ("ip", to_args(&["-n", &ns, "link", "set", "lo", "up"])),
            // nodad: usable at once, no duplicate address detection to wait for.
            (
                "ip",
                to_args(&["-6", "addr", "add", &cidr6(1), "dev", &host_if, "nodad"]),
            ),
            (
                "ip",
                to_args(&["-6", "addr", "add", &cidr6(3), "dev", &host_if, "nodad"]),
            ),
            (
                "ip",
                to_args(&[
                    "-n",
                    &ns,
                    "-6",
                    "addr",
                    "add",
                    &cidr6(2),
                    "dev",
                    &client_if,
                    "nodad",
                ]),
            ),
        ];
        for (program, args) in steps {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run(program, &args).unwrap_or_else(|e| panic!("setting up the test network: {e}"));
        }
        net
    }

    fn ip(&self, last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 200, self.octet, last)
    }

    fn ip6(&self, last: u16) -> Ipv6Addr {
        Ipv6Addr::new(0xfdee, 0x200, self.octet.into(), 0, 0, 0, 0, last)
    }

    /// The host-side address the allowed origin and egressd listen on.
    fn host(&self) -> Ipv4Addr {
        self.ip(1)
    }

    /// A second host-side address, for another origin.
    fn host2(&self) -> Ipv4Addr {
        self.ip(3)
    }

    fn subnet(&self) -> String {
        format!("10.200.{}.0/29", self.octet)
    }

    /// Redirect TCP to `port` arriving on the host-side veth to `to` (egressd's transparent port).
    fn redirect(&self, port: u16, to: u16) {
        let target = ["REDIRECT", "--to-ports", &to.to_string()].map(String::from);
        self.nat_rule(IPTABLES, self.prerouting(port, &target));
    }

    /// [`Net::redirect`] for IPv6, as DNAT to `to`: ip6tables REDIRECT picks whichever global address the
    /// interface lists first, which need not be the one egressd listens on here.
    fn redirect6(&self, port: u16, to: SocketAddr) {
        let target = ["DNAT", "--to-destination", &to.to_string()].map(String::from);
        self.nat_rule(IP6TABLES, self.prerouting(port, &target));
    }

    /// A PREROUTING rule for TCP to `port` arriving on the host-side veth, jumping to `target`.
    fn prerouting(&self, port: u16, target: &[String]) -> Vec<String> {
        let mut rule = to_args(&[
            "PREROUTING",
            "-i",
            &self.host_if,
            "-p",
            "tcp",
            "--dport",
            &port.to_string(),
            "-j",
        ]);
        rule.extend_from_slice(target);
        rule
    }

    /// Add a rule to the nat table, removed on drop.
    fn nat_rule(&self, iptables: &'static str, rule: Vec<String>) {
        let mut args = vec!["-w", "-t", "nat", "-A"];
        args.extend(rule.iter().map(String::as_str));
        run(iptables, &args).unwrap_or_else(|e| {
            panic!("adding a nat rule (needs root and the iptables package): {e}")
        });
        self.rules.lock().unwrap().push((iptables, rule));
    }

    /// curl inside the client namespace.
    async fn curl(&self, args: &[&str]) -> CurlOut {
        curl_in(&["ip", "netns", "exec", &self.ns], args, &[]).await
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let mut problems = Vec::new();
        for (iptables, rule) in self.rules.lock().map(|r| r.clone()).unwrap_or_default() {
            let mut args = vec!["-w", "-t", "nat", "-D"];
            args.extend(rule.iter().map(String::as_str));
            problems.extend(run(iptables, &args).err());
        }
        if self.octet != 0 {
            // Deleting one end removes the pair.
            problems.extend(run("ip", &["link", "del", &self.host_if]).err());
        }
        problems.extend(run("ip", &["netns", "del", &self.ns]).err());
        for p in problems {
            eprintln!("cleaning up the test network: {p}");
        }
    }
}

fn to_args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// A third octet for 10.200.x.0/29 that no interface uses yet, starting from `seed`.
fn free_octet(seed: usize) -> u8 {
    let out = Command::new("ip")
        .args(["-4", "-o", "addr", "show"])
        .output()
        .expect("ip must be installed");
    let used = String::from_utf8_lossy(&out.stdout).into_owned();
    (0..250)
        .map(|i| ((seed + i) % 250 + 1) as u8)
        .find(|o| !used.contains(&format!(" 10.200.{o}.")))
        .expect("a free 10.200.x.0/29 test subnet")
}

fn decisions_for(proxy: &TestProxy, kind: &str) -> Vec<serde_json::Value> {
    proxy
        .log
        .events("decision")
        .into_iter()
        .filter(|d| d["kind"] == kind)
        .collect()
}

/// The last decision line, once `n` of `kind` have been written.
async fn nth_decision(proxy: &TestProxy, kind: &str, n: usize) -> serde_json::Value {
    for _ in 0..500 {
        let d = decisions_for(proxy, kind);
        if d.len() >= n {
            return d[n - 1].clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!(
        "expected {n} {kind} decision lines, got {:?}",
        proxy.log.lines()
    );
}

fn transparent_yaml(net: &Net, key: &str, port: u16, trust: bool) -> String {
    format!(
        r#"
{key}: {host}:0
trust_original_dst: {trust}
allow:
  - name: allowed
    hosts: ["allowed.test"]
    ports: [{port}]
destinations:
  allow_cidrs: ["{subnet}"]
dns:
  hosts:
    allowed.test: ["{host}"]
    denied.test: ["{host2}"]
"#,
        host = net.host(),
        host2 = net.host2(),
        subnet = net.subnet(),
    )
}

#[tokio::test]
async fn redirected_tls_reaches_the_allowed_origin_and_nothing_else() {
    let net = Net::new();
    let allowed = tls_origin_at(SocketAddr::from((net.host(), 443)), &["allowed.test"]).await;
    // The other origin would also serve allowed.test: only egressd's checks keep the client away from it.
    let other = tls_origin_at(
        SocketAddr::from((net.host2(), 443)),
        &["denied.test", "allowed.test"],
    )
    .await;
    let proxy = start_proxy(&transparent_yaml(&net, "listen_transparent", 443, false)).await;
    let listener = proxy.transparent_addr.expect("listen_transparent is set");
    net.redirect(443, listener.port());
    let (host, host2) = (net.host().to_string(), net.host2().to_string());
    let allowed_ca = allowed.ca_pem.display().to_string();
    let other_ca = other.ca_pem.display().to_string();

    // Allowed name at one of its addresses: through to the origin.
    let ok = net
        .curl(&[
            "--cacert",
            &allowed_ca,
            "--resolve",
            &format!("allowed.test:443:{host}"),
            "https://allowed.test/",
        ])
        .await;
    assert_eq!(ok.code, 0, "allowed request failed: {}", ok.stderr);
    assert_eq!(ok.stdout, "hello from tls origin");
    let d = nth_decision(&proxy, "transparent", 1).await;
    assert_eq!(d["decision"], "allow", "{d}");
    assert_eq!(d["reason"], "allowed");
    assert_eq!(d["rule"], "allowed");
    assert_eq!(d["sni"], "allowed.test");
    assert_eq!(d["host"], "allowed.test");
    assert_eq!(d["port"], 443);
    assert_eq!(d["original_dst"], format!("{host}:443"));
    assert_eq!(d["upstream_addr"], format!("{host}:443"));
    assert_eq!(
        d["client_addr"].as_str().unwrap().split(':').next(),
        Some(net.ip(2).to_string().as_str())
    );
    let close = proxy.log.wait_events("close", 1).await;
    assert_eq!(close[0]["kind"], "transparent");
    assert!(close[0]["bytes_down"].as_u64().unwrap() > 0, "{}", close[0]);

    // A name no rule allows: refused, the origin never sees a connection.
    let denied = net
        .curl(&[
            "--cacert",
            &other_ca,
            "--resolve",
            &format!("denied.test:443:{host2}"),
            "https://denied.test/",
        ])
        .await;
    assert_ne!(denied.code, 0, "denied name got through: {}", denied.stdout);
    let d = nth_decision(&proxy, "transparent", 2).await;
    assert_eq!(d["decision"], "deny", "{d}");
    assert_eq!(d["reason"], "denied_no_rule");
    assert_eq!(d["sni"], "denied.test");
    assert_eq!(d["original_dst"], format!("{host2}:443"));

    // An allowed name, but the client dialled an address that name does not resolve to.
    let fronted = net
        .curl(&[
            "--cacert",
            &other_ca,
            "--resolve",
            &format!("allowed.test:443:{host2}"),
            "https://allowed.test/",
        ])
        .await;
    assert_ne!(
        fronted.code, 0,
        "mismatched address got through: {}",
        fronted.stdout
    );
    let d = nth_decision(&proxy, "transparent", 3).await;
    assert_eq!(d["decision"], "deny", "{d}");
    assert_eq!(d["reason"], "denied_original_dst_mismatch");
    assert_eq!(d["resolved_addrs"][0], host);
    assert_eq!(d["original_dst"], format!("{host2}:443"));
    assert_eq!(
        other.accepted.load(Ordering::SeqCst),
        0,
        "the origin at {host2} must not have been dialled"
    );

    // No SNI (an IP-literal URL): nothing to judge the connection by.
    let no_sni = net.curl(&["-k", &format!("https://{host}/")]).await;
    assert_ne!(no_sni.code, 0, "{}", no_sni.stdout);
    let d = nth_decision(&proxy, "transparent", 4).await;
    assert_eq!(d["reason"], "denied_sni_missing", "{d}");

    // Straight to the transparent port, not redirected: its original destination is egressd itself.
    let direct = net
        .curl(&[
            "--cacert",
            &allowed_ca,
            "--resolve",
            &format!("allowed.test:{}:{host}", listener.port()),
            &format!("https://allowed.test:{}/", listener.port()),
        ])
        .await;
    assert_ne!(direct.code, 0, "{}", direct.stdout);
    let d = nth_decision(&proxy, "transparent", 5).await;
    assert_eq!(d["reason"], "denied_original_dst_loop", "{d}");
    assert_eq!(allowed.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn trust_original_dst_skips_the_address_check() {
    let net = Net::new();
    let other = tls_origin_at(SocketAddr::from((net.host2(), 443)), &["allowed.test"]).await;
    let proxy = start_proxy(&transparent_yaml(&net, "listen_transparent", 443, true)).await;
    net.redirect(443, proxy.transparent_addr.unwrap().port());
    let host2 = net.host2().to_string();
    let ca = other.ca_pem.display().to_string();

    let ok = net
        .curl(&[
            "--cacert",
            &ca,
            "--resolve",
            &format!("allowed.test:443:{host2}"),
            "https://allowed.test/",
        ])
        .await;
    assert_eq!(
        ok.code, 0,
        "trusted original destination refused: {}",
        ok.stderr
    );
    assert_eq!(ok.stdout, "hello from tls origin");
    let d = nth_decision(&proxy, "transparent", 1).await;
    assert_eq!(d["decision"], "allow", "{d}");
    assert_eq!(d["upstream_addr"], format!("{host2}:443"));
    assert_eq!(
        d["resolved_addrs"].as_array().map(Vec::len),
        Some(0),
        "nothing is resolved when the original destination is trusted"
    );

    // The name is still judged by the policy.
    let denied = net
        .curl(&[
            "-k",
            "--resolve",
            &format!("denied.test:443:{host2}"),
            "https://denied.test/",
        ])
        .await;
    assert_ne!(denied.code, 0);
    let d = nth_decision(&proxy, "transparent", 2).await;
    assert_eq!(d["reason"], "denied_no_rule", "{d}");
    assert_eq!(other.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn redirected_http_is_judged_by_its_host_header() {
    let net = Net::new();
    http_origin_at(SocketAddr::from((net.host(), 80))).await;
    http_origin_at(SocketAddr::from((net.host2(), 80))).await;
    let proxy = start_proxy(&transparent_yaml(
        &net,
        "listen_transparent_http",
        80,
        false,
    ))
    .await;
    net.redirect(80, proxy.transparent_http_addr.unwrap().port());
    let (host, host2) = (net.host().to_string(), net.host2().to_string());

    let ok = net
        .curl(&[
            "-i",
            "--resolve",
            &format!("allowed.test:80:{host}"),
            "http://allowed.test/some/path?q=1",
        ])
        .await;
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    assert_eq!(status(&ok.stdout), 200, "{}", ok.stdout);
    assert!(ok.stdout.contains("GET /some/path?q=1\n"), "{}", ok.stdout);
    assert!(ok.stdout.contains("host: allowed.test\n"), "{}", ok.stdout);
    let d = nth_decision(&proxy, "transparent_http", 1).await;
    assert_eq!(d["decision"], "allow", "{d}");
    assert_eq!(d["method"], "GET");
    assert_eq!(d["original_dst"], format!("{host}:80"));
    assert_eq!(d["upstream_addr"], format!("{host}:80"));

    let cases = [
        ("denied.test", host2.as_str(), "denied_no_rule"),
        (
            "allowed.test",
            host2.as_str(),
            "denied_original_dst_mismatch",
        ),
    ];
    for (i, (name, addr, reason)) in cases.into_iter().enumerate() {
        let r = net
            .curl(&[
                "-i",
                "--resolve",
                &format!("{name}:80:{addr}"),
                &format!("http://{name}/"),
            ])
            .await;
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert_eq!(status(&r.stdout), 403, "{name} at {addr}: {}", r.stdout);
        assert_eq!(header(&r.stdout, "x-egressd-reason"), Some(reason));
        let d = nth_decision(&proxy, "transparent_http", i + 2).await;
        assert_eq!(d["reason"], reason, "{d}");
        assert_eq!(d["original_dst"], format!("{addr}:80"));
    }

    // Two requests on one kept-alive connection: the second names another host and is judged on its own.
    let resolve = format!("allowed.test:80:{host}");
    let r = net
        .curl(&[
            "-i",
            "--resolve",
            &resolve,
            "http://allowed.test/first",
            "--next",
            "-i",
            "--resolve",
            &resolve,
            "-H",
            "Host: denied.test",
            "http://allowed.test/second",
        ])
        .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("GET /first\n"), "{}", r.stdout);
    assert!(!r.stdout.contains("GET /second"), "{}", r.stdout);
    assert!(
        r.stdout.contains("X-Egressd-Reason: denied_no_rule")
            || r.stdout.contains("x-egressd-reason: denied_no_rule"),
        "{}",
        r.stdout
    );
    let first = nth_decision(&proxy, "transparent_http", 4).await;
    let second = nth_decision(&proxy, "transparent_http", 5).await;
    assert_eq!(first["decision"], "allow", "{first}");
    assert_eq!(second["reason"], "denied_no_rule", "{second}");
    assert_eq!(second["host"], "denied.test");
    assert_eq!(first["conn_id"], second["conn_id"], "one connection");
    assert_eq!(second["request"], 2);
}

#[tokio::test]
async fn egressd_own_traffic_redirected_back_is_refused() {
    own_traffic_redirected_back_is_refused(None).await;
}

/// The README's advice for IPv6: a `[::]` transparent listener. IPv4 clients arrive v4-mapped there, and
/// egressd's own redirected connection must still be recognised as its own.
#[tokio::test]
async fn egressd_own_traffic_redirected_back_to_a_dual_stack_listener_is_refused() {
    own_traffic_redirected_back_is_refused(Some("[::]:0")).await;
}

async fn own_traffic_redirected_back_is_refused(listen: Option<&str>) {
    let net = Net::new();
    let (host, host2) = (net.host().to_string(), net.host2().to_string());
    let mut yaml = transparent_yaml(&net, "listen_transparent", 443, false).replace(
        &format!("allowed.test: [\"{host}\"]"),
        &format!("allowed.test: [\"{host2}\"]"),
    );
    if let Some(listen) = listen {
        yaml = yaml.replace(
            &format!("listen_transparent: {host}:0"),
            &format!("listen_transparent: \"{listen}\""),
        );
    }
    let proxy = start_proxy(&yaml).await;
    let listener = proxy.transparent_addr.unwrap();
    net.redirect(443, listener.port());
    // A redirect that also catches egressd's own upstream connection to the test's second address.
    net.nat_rule(
        IPTABLES,
        to_args(&[
            "OUTPUT",
            "-d",
            &host2,
            "-p",
            "tcp",
            "--dport",
            "443",
            "-j",
            "DNAT",
            "--to-destination",
            &format!("{host}:{}", listener.port()),
        ]),
    );

    let looped = net
        .curl(&[
            "-k",
            "--resolve",
            &format!("allowed.test:443:{host2}"),
            "https://allowed.test/",
        ])
        .await;
    assert_ne!(looped.code, 0, "{}", looped.stdout);
    // In connection order: the client's decision line is written once the upstream (the looped connection,
    // refused at once) has answered, so it may come second.
    nth_decision(&proxy, "transparent", 2).await;
    let mut lines = decisions_for(&proxy, "transparent");
    lines.sort_by_key(|d| d["conn_id"].as_u64());
    let (first, second) = (&lines[0], &lines[1]);
    assert_eq!(first["decision"], "allow", "{first}");
    assert_eq!(
        first["client_addr"].as_str().unwrap().split(':').next(),
        Some(net.ip(2).to_string().as_str())
    );
    assert_eq!(second["reason"], "denied_original_dst_loop", "{second}");
    assert_eq!(second["original_dst"], format!("{host2}:443"));
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(
        decisions_for(&proxy, "transparent").len(),
        2,
        "the loop stops at the first round: {:?}",
        proxy.log.lines()
    );
}

#[tokio::test]
async fn redirected_tls_over_ipv6() {
    let net = Net::new();
    let (host, host3) = (net.ip6(1), net.ip6(3));
    let allowed = tls_origin_at(SocketAddr::from((host, 443)), &["allowed.test"]).await;
    let other = tls_origin_at(SocketAddr::from((host3, 443)), &["allowed.test"]).await;
    let proxy = start_proxy(&format!(
        r#"
listen_transparent: "[{host}]:0"
allow:
  - name: allowed
    hosts: ["allowed.test"]
destinations:
  allow_cidrs: ["{subnet}/64"]
dns:
  hosts:
    allowed.test: ["{host}"]
"#,
        subnet = net.ip6(0)
    ))
    .await;
    net.redirect6(443, proxy.transparent_addr.unwrap());
    let ca = allowed.ca_pem.display().to_string();

    let ok = net
        .curl(&[
            "--cacert",
            &ca,
            "--resolve",
            &format!("allowed.test:443:[{host}]"),
            "https://allowed.test/",
        ])
        .await;
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    assert_eq!(ok.stdout, "hello from tls origin");
    let d = nth_decision(&proxy, "transparent", 1).await;
    assert_eq!(d["decision"], "allow", "{d}");
    assert_eq!(d["original_dst"], format!("[{host}]:443"));

    let other_ca = other.ca_pem.display().to_string();
    let mismatch = net
        .curl(&[
            "--cacert",
            &other_ca,
            "--resolve",
            &format!("allowed.test:443:[{host3}]"),
            "https://allowed.test/",
        ])
        .await;
    assert_ne!(mismatch.code, 0, "{}", mismatch.stdout);
    let d = nth_decision(&proxy, "transparent", 2).await;
    assert_eq!(d["reason"], "denied_original_dst_mismatch", "{d}");
    assert_eq!(d["original_dst"], format!("[{host3}]:443"));
    assert_eq!(other.accepted.load(Ordering::SeqCst), 0);
}

/// Run `f` on a thread of its own that has joined the network namespace `ns`.
fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap();
        use std::os::fd::AsRawFd;
        // SAFETY: setns on an open namespace file changes only this thread's network namespace.
        let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

#[tokio::test]
async fn a_second_hello_after_a_retry_is_judged_on_redirected_tls() {
    use support::retry::{retry_exchange, retry_origin_at, SERVED};
    let net = Net::new();
    let origin = retry_origin_at(SocketAddr::from((net.host(), 443))).await;
    let proxy = start_proxy(&transparent_yaml(&net, "listen_transparent", 443, false)).await;
    net.redirect(443, proxy.transparent_addr.unwrap().port());
    let host = net.host();
    let exchange = |second: &'static str| {
        let ns = net.ns.clone();
        tokio::task::spawn_blocking(move || {
            in_ns(&ns, move || {
                let mut s = std::net::TcpStream::connect((host, 443)).unwrap();
                retry_exchange(&mut s, "allowed.test", Some(second), &[]).unwrap()
            })
        })
    };

    assert_eq!(exchange("allowed.test").await.unwrap(), SERVED);
    let d = nth_decision(&proxy, "transparent", 1).await;
    assert_eq!(d["decision"], "allow", "{d}");

    let fronted = exchange("evil.test").await.unwrap();
    assert!(fronted.is_empty(), "the origin answered the fronted hello");
    let d = nth_decision(&proxy, "transparent", 2).await;
    assert_eq!(d["decision"], "deny", "{d}");
    assert_eq!(d["reason"], "denied_sni_mismatch", "{d}");
    assert_eq!(d["sni"], "allowed.test", "{d}");
    let seen = origin.seen.lock().unwrap().clone();
    assert!(
        !seen.contains(&Some("evil.test".to_string())),
        "the second hello reached the origin: {seen:?}"
    );
}

#[tokio::test]
async fn redirected_http_forwards_only_the_name_it_judged_and_checks_framing() {
    let net = Net::new();
    http_origin_at(SocketAddr::from((net.host(), 80))).await;
    let proxy = start_proxy(&transparent_yaml(
        &net,
        "listen_transparent_http",
        80,
        false,
    ))
    .await;
    net.redirect(80, proxy.transparent_http_addr.unwrap().port());
    let host = net.host();
    let send = |request: &'static str| {
        let ns = net.ns.clone();
        tokio::task::spawn_blocking(move || {
            in_ns(&ns, move || {
                use std::io::{Read, Write};
                let mut s = std::net::TcpStream::connect((host, 80)).unwrap();
                s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
                    .unwrap();
                s.write_all(request.as_bytes()).unwrap();
                let mut resp = Vec::new();
                let _ = s.read_to_end(&mut resp);
                String::from_utf8_lossy(&resp).into_owned()
            })
        })
    };

    let refused = [
        "GET http://allowed.test/x HTTP/1.1\r\nHost: evil.test\r\nConnection: close\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: allowed.test\r\nHost: evil.test\r\nConnection: close\r\n\r\n",
        "POST /x HTTP/1.1\r\nHost: allowed.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\
         Connection: close\r\n\r\n0\r\n\r\n",
    ];
    for (i, request) in refused.into_iter().enumerate() {
        let resp = send(request).await.unwrap();
        assert_eq!(status(&resp), 400, "{request:?}: {resp}");
        assert_eq!(header(&resp, "x-egressd-reason"), Some("bad_request"));
        assert!(!resp.contains("x-origin"), "reached the origin: {resp}");
        let d = nth_decision(&proxy, "transparent_http", i + 1).await;
        assert_eq!(d["reason"], "bad_request", "{d}");
    }
    // Authority and Host agree: forwarded, with the judged name as Host.
    let resp = send(
        "GET http://allowed.test/ok HTTP/1.1\r\nHost: ALLOWED.test\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(status(&resp), 200, "{resp}");
    assert!(resp.contains("host: allowed.test\n"), "{resp}");
    let d = nth_decision(&proxy, "transparent_http", 4).await;
    assert_eq!(d["decision"], "allow", "{d}");
}

/// With a parent proxy (Squid on loopback), a redirected TLS connection goes to it as a CONNECT to the name its
/// hello gave, and a redirected HTTP request in absolute form with the name of its Host header.
#[tokio::test]
async fn redirected_connections_go_through_the_parent_by_name() {
    let net = Net::new();
    let tls = tls_origin_at(SocketAddr::from((net.host(), 443)), &["allowed.test"]).await;
    http_origin_at(SocketAddr::from((net.host(), 80))).await;
    let squid =
        support::squid::Squid::start_with_hosts("", &format!("{} allowed.test", net.host())).await;
    let yaml = format!(
        r#"
listen_transparent: {host}:0
listen_transparent_http: {host}:0
parents:
  - {{name: corp, url: "http://127.0.0.1:{squid}"}}
allow:
  - name: allowed
    hosts: ["allowed.test"]
    ports: [80, 443]
destinations:
  allow_cidrs: ["{subnet}"]
dns:
  hosts:
    allowed.test: ["{host}"]
"#,
        host = net.host(),
        squid = squid.port,
        subnet = net.subnet(),
    );
    let proxy = start_proxy(&yaml).await;
    net.redirect(443, proxy.transparent_addr.unwrap().port());
    net.redirect(80, proxy.transparent_http_addr.unwrap().port());
    let host = net.host().to_string();

    let ok = net
        .curl(&[
            "--cacert",
            &tls.ca_pem.display().to_string(),
            "--resolve",
            &format!("allowed.test:443:{host}"),
            "https://allowed.test/",
        ])
        .await;
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    assert_eq!(ok.stdout, "hello from tls origin");
    let d = nth_decision(&proxy, "transparent", 1).await;
    assert_eq!(d["via"], "corp", "{d}");
    assert_eq!(d["parent_status"], serde_json::json!(["corp=200"]));
    assert_eq!(d["original_dst"], format!("{host}:443"));
    assert_eq!(d["upstream_addr"], format!("127.0.0.1:{}", squid.port));
    squid.wait_logged("CONNECT allowed.test:443").await;

    let ok = net
        .curl(&[
            "--resolve",
            &format!("allowed.test:80:{host}"),
            "http://allowed.test/through?parent=1",
        ])
        .await;
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    assert!(
        ok.stdout.contains("GET /through?parent=1\n"),
        "{}",
        ok.stdout
    );
    let d = nth_decision(&proxy, "transparent_http", 1).await;
    assert_eq!(d["via"], "corp", "{d}");
    assert_eq!(d["parent_status"], serde_json::json!(["corp=relayed"]));
    squid.wait_logged("GET http://allowed.test/through").await;
}
