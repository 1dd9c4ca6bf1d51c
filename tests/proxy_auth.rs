//! Proxy-Authorization end to end: curl --proxy-user with right, wrong and missing credentials (407 with
//! Proxy-Authenticate), Bearer tokens from a file, credentials never forwarded or logged.

mod support;
use argon2::password_hash::{PasswordHasher, SaltString};
use support::*;

/// An argon2id PHC string with small parameters, so debug builds verify it quickly.
fn argon2_hash(password: &str) -> String {
    let params = argon2::Params::new(8, 1, 1, None).unwrap();
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let salt = SaltString::encode_b64(b"egressd-test-salt").unwrap();
    a.hash_password(password.as_bytes(), &salt)
        .unwrap()
        .to_string()
}

struct Setup {
    proxy: TestProxy,
    tls: TlsOrigin,
    http: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let tls = tls_origin(&["ci.test", "robots.test", "open.test", "other.test"]).await;
    let http = http_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "# robot tokens\nrobot-token-1\n").unwrap();
    let yaml = format!(
        r#"
clients:
  - name: ci
    users: [{{user: bob, argon2: "{hash}"}}]
  - name: robots
    tokens_file: {tokens}
allow:
  - name: ci-only
    hosts: ["ci.test"]
    ports: ["1-65535"]
    clients: [ci]
  - name: robots-only
    hosts: ["robots.test"]
    ports: ["1-65535"]
    clients: [robots]
  - name: open
    hosts: ["open.test"]
    ports: ["1-65535"]
destinations:
  allow_cidrs: ["127.0.0.0/8"]
dns:
  hosts:
    ci.test: ["127.0.0.1"]
    robots.test: ["127.0.0.1"]
    open.test: ["127.0.0.1"]
    other.test: ["127.0.0.1"]
"#,
        hash = argon2_hash("right-pw"),
        tokens = tokens.display(),
    );
    Setup {
        proxy: start_proxy(&yaml).await,
        tls,
        http,
        _dir: dir,
    }
}

impl Setup {
    async fn https(&self, host: &str, extra: &[&str]) -> CurlOut {
        let url = format!("https://{host}:{}/", self.tls.addr.port());
        let proxy = self.proxy.url();
        let mut args = vec![
            "--proxy",
            &proxy,
            "--cacert",
            self.tls.ca_pem.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        args.push(&url);
        curl(&args, &[]).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_credentials_right_wrong_and_missing() {
    let s = setup().await;
    let out = s.https("ci.test", &["--proxy-user", "bob:right-pw"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "hello from tls origin");

    let out = s.https("ci.test", &["--proxy-user", "bob:wrong-pw"]).await;
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("407"), "{}", out.stderr);

    let out = s.https("ci.test", &[]).await;
    assert!(out.stderr.contains("407"), "{}", out.stderr);

    // Missing credentials where none would help: the normal 403.
    let out = s.https("other.test", &[]).await;
    assert!(out.stderr.contains("403"), "{}", out.stderr);
    // An unscoped rule needs no credentials.
    let out = s.https("open.test", &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);

    let lines = s.proxy.log.wait_events("decision", 5).await;
    assert_eq!(lines[0]["decision"], "allow");
    assert_eq!(lines[0]["user"], "bob");
    assert_eq!(lines[0]["client"], serde_json::json!(["ci"]));
    assert_eq!(lines[1]["reason"], "denied_bad_credentials");
    assert!(lines[1]["user"].is_null());
    assert_eq!(lines[2]["reason"], "proxy_auth_required");
    assert_eq!(lines[3]["reason"], "denied_no_rule");
    assert_eq!(lines[4]["rule"], "open");
    let log = serde_json::to_string(&s.proxy.log.lines()).unwrap();
    for secret in ["right-pw", "wrong-pw", "Ym9i"] {
        assert!(!log.contains(secret), "{secret} logged: {log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_407_carries_the_challenges() {
    let s = setup().await;
    let authority = format!("ci.test:{}", s.tls.addr.port());
    let resp = connect(s.proxy.addr, &authority).await;
    assert_eq!(status(&resp), 407, "{resp}");
    assert!(
        resp.contains("Proxy-Authenticate: Basic realm=\"egressd\""),
        "{resp}"
    );
    assert!(
        resp.contains("Proxy-Authenticate: Bearer realm=\"egressd\""),
        "{resp}"
    );
    assert_eq!(
        header(&resp, "x-egressd-reason"),
        Some("proxy_auth_required")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_from_a_file() {
    let s = setup().await;
    let h = [
        "--proxy-header",
        "Proxy-Authorization: Bearer robot-token-1",
    ];
    let out = s.https("robots.test", &h).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    // The robots' token is not bob's credential.
    let out = s.https("ci.test", &h).await;
    assert!(
        out.stderr.contains("407") || out.stderr.contains("403"),
        "{}",
        out.stderr
    );
    let h = [
        "--proxy-header",
        "Proxy-Authorization: Bearer robot-token-2",
    ];
    let out = s.https("robots.test", &h).await;
    assert!(out.stderr.contains("407"), "{}", out.stderr);
    let lines = s.proxy.log.wait_events("decision", 3).await;
    assert_eq!(lines[0]["client"], serde_json::json!(["robots"]));
    assert_eq!(lines[1]["reason"], "denied_no_rule");
    assert_eq!(lines[2]["reason"], "denied_bad_credentials");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_authenticates_and_never_forwards_the_header() {
    let s = setup().await;
    let url = format!("http://ci.test:{}/x", s.http.port());
    let proxy = s.proxy.url();
    let out = curl(
        &["--proxy", &proxy, "--proxy-user", "bob:right-pw", &url],
        &[],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.starts_with("GET /x"), "{}", out.stdout);
    assert!(
        !out.stdout
            .to_ascii_lowercase()
            .contains("proxy-authorization"),
        "{}",
        out.stdout
    );
    let out = curl(&["-i", "--proxy", &proxy, &url], &[]).await;
    assert!(out.stdout.starts_with("HTTP/1.1 407"), "{}", out.stdout);
    assert!(
        out.stdout
            .to_ascii_lowercase()
            .contains("proxy-authenticate: basic"),
        "{}",
        out.stdout
    );
}

/// A changed tokens file (a rotated Secret) is watched and reloaded: the new token works, the old one is
/// refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_tokens_file_is_reloaded() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "old-token\n").unwrap();
    let port = closed_port().await;
    let path = dir.path().join("egressd.yaml");
    std::fs::write(
        &path,
        format!(
            "listen: 127.0.0.1:0\nadmin: {{listen: 127.0.0.1:0}}\n\
             clients: [{{name: robots, tokens_file: {}}}]\n\
             allow: [{{name: r, hosts: [robots.test], ports: [{port}], clients: [robots]}}]\n\
             destinations: {{allow_cidrs: [127.0.0.0/8]}}\n\
             dns: {{hosts: {{robots.test: [127.0.0.1]}}}}\n",
            tokens.display()
        ),
    )
    .unwrap();
    let proxy = start_proxy_file(&path).await;
    let ask = |token: &'static str| {
        let addr = proxy.addr;
        async move {
            let req = format!(
                "CONNECT robots.test:{port} HTTP/1.1\r\nHost: robots.test\r\n\
                 Proxy-Authorization: Bearer {token}\r\n\r\n"
            );
            header(&raw(addr, req.as_bytes()).await, "x-egressd-reason").map(str::to_string)
        }
    };
    // Allowed by policy; the dial to a closed port fails, which is past the authentication.
    assert_ne!(
        ask("old-token").await.as_deref(),
        Some("denied_bad_credentials")
    );
    std::fs::write(&tokens, "new-token\n").unwrap();
    let mut rotated = false;
    for _ in 0..250 {
        if ask("old-token").await.as_deref() == Some("denied_bad_credentials") {
            rotated = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(rotated, "the old token is still accepted");
    assert_ne!(
        ask("new-token").await.as_deref(),
        Some("denied_bad_credentials")
    );
}
