//! Vendor profiles through `check`: every endpoint of every profile is allowed, look-alikes and neighbours of
//! the fallback IPs are denied, and the embedded default config (castai-us) allows the CAST AI US endpoints.

use egressd::check::check;
use egressd::config::from_yaml_str;
use egressd::vendors::{self, ParamValue};
use std::collections::BTreeMap;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_egressd");

/// Parameters that satisfy every profile, in config and in expansion form.
fn params(profile: &str) -> (&'static str, BTreeMap<String, ParamValue>) {
    let mut m = BTreeMap::new();
    let yaml = match profile {
        "cloudcasa" => {
            m.insert(
                "storage".into(),
                ParamValue::Many(vec!["s3.us-east-1.amazonaws.com".into()]),
            );
            m.insert(
                "registry".into(),
                ParamValue::Many(vec!["registry.example.com".into()]),
            );
            "{name: cloudcasa, params: {storage: [s3.us-east-1.amazonaws.com], registry: [registry.example.com]}}"
        }
        "cloudcasa-self-hosted" => {
            m.insert(
                "server".into(),
                ParamValue::One("cc.example.internal".into()),
            );
            m.insert(
                "storage".into(),
                ParamValue::Many(vec!["minio.example.internal".into()]),
            );
            m.insert(
                "registry".into(),
                ParamValue::Many(vec!["registry.example.internal".into()]),
            );
            "{name: cloudcasa-self-hosted, params: {server: cc.example.internal, storage: [minio.example.internal], registry: [registry.example.internal]}}"
        }
        _ => "",
    };
    (yaml, m)
}

const LOOK_ALIKES: &[&str] = &[
    "api.cast.ai.evil.com:443",
    "evilcast.ai:443",
    "cast.ai.attacker.net:443",
    "agent.cloudcasa.io.evil.com:443",
    "cast.ai:443",
    "evil.cast.ai:443",
    "cloudcasa.io:443",
    "evilcloudcasa.io:443",
    "104.16.81.55:443",
    "104.16.81.57:443",
    "104.16.82.55:443",
    "104.16.82.57:443",
    "[::ffff:104.16.81.57]:443",
    "storage.googleapis.com.evil.com:443",
    "api.cast.ai:80",
    "agent.cloudcasa.io:8443",
];

#[tokio::test]
async fn every_profile_allows_its_endpoints_and_denies_look_alikes() {
    for profile in vendors::all() {
        let (item, map) = params(&profile.name);
        let item = if item.is_empty() {
            profile.name.as_str()
        } else {
            item
        };
        let settings = from_yaml_str(&format!("vendors:\n  - {item}\n"))
            .unwrap_or_else(|e| panic!("{}: {e}", profile.name));
        let endpoints = profile.expand(&map).unwrap();
        assert!(!endpoints.is_empty());
        for e in &endpoints {
            for h in &e.hosts {
                for port in &e.ports {
                    let authority = if h.contains(':') {
                        format!("[{h}]:{port}")
                    } else {
                        format!("{h}:{port}")
                    };
                    let r = check(&settings, None, &Default::default(), &authority).await;
                    assert!(r.allowed(), "{}: {authority} denied: {r:?}", profile.name);
                    assert!(
                        r.rule
                            .as_deref()
                            .unwrap()
                            .starts_with(&format!("{}/", profile.name)),
                        "{r:?}"
                    );
                }
            }
        }
        for bad in LOOK_ALIKES {
            let r = check(&settings, None, &Default::default(), bad).await;
            assert!(!r.allowed(), "{}: {bad} allowed: {r:?}", profile.name);
        }
    }
}

#[tokio::test]
async fn default_config_allows_the_castai_us_endpoints() {
    let settings = egressd::config::load(None).unwrap();
    for t in [
        "api.cast.ai:443",
        "grpc.cast.ai:443",
        "api-grpc.cast.ai:443",
        "kvisor.prod-master.cast.ai:443",
        "us-docker.pkg.dev:443",
        "castai.github.io:443",
        "objects.githubusercontent.com:443",
        "https://storage.googleapis.com/castai-node-components/x",
        "104.16.81.56:443",
        "104.16.82.56:443",
    ] {
        let r = check(&settings, None, &Default::default(), t).await;
        assert!(r.allowed(), "{t}: {r:?}");
        assert!(
            r.rule.as_deref().unwrap().starts_with("castai-us/"),
            "{r:?}"
        );
    }
    for t in LOOK_ALIKES
        .iter()
        .chain(&["api.eu.cast.ai:443", "agent.cloudcasa.io:443"])
    {
        assert!(
            !check(&settings, None, &Default::default(), t)
                .await
                .allowed(),
            "{t}"
        );
    }
}

#[test]
fn check_command_with_the_default_config() {
    let out = Command::new(BIN)
        .args([
            "check",
            "api.cast.ai:443",
            "grpc.cast.ai:443",
            "104.16.82.56:443",
        ])
        .env_remove("EGRESSD_LISTEN")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("rule=castai-us/grpc"), "{stdout}");

    let mut args = vec!["check"];
    args.extend(LOOK_ALIKES.iter().copied());
    let out = Command::new(BIN).args(&args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert_eq!(
        stdout.lines().filter(|l| l.contains("\tdeny\t")).count(),
        LOOK_ALIKES.len(),
        "{stdout}"
    );
}

/// The profiles say what the vendor documents say, and where egressd's own judgement or limits come in.
#[tokio::test]
async fn profiles_state_their_judgements_limits_and_left_out_requirements() {
    for name in ["castai-us", "castai-eu"] {
        let p = vendors::find(name).unwrap();
        let note = &p.agents.as_ref().unwrap().note;
        // CAST AI's example writes https://: right with egressd's TLS listener, wrong with the plain one.
        assert!(!note.contains("must be http://"), "{name}: {note}");
        assert!(note.contains("listen_tls"), "{name}: {note}");
        assert!(note.contains("do not go through egressd"), "{name}: {note}");
        for e in p.entries.iter().filter(|e| e.idle_timeout.is_some()) {
            assert!(
                e.purpose.contains("egressd's judgement"),
                "{name}/{}: the documents give no idle timeout; say whose choice it is",
                e.name
            );
        }
        // Over CONNECT these rules open whole hosts: the profile says so and how to scope them.
        for rule in ["registry", "node-components"] {
            let e = p.entries.iter().find(|e| e.name == rule).unwrap();
            assert!(
                e.purpose.contains("clients:"),
                "{name}/{rule}: {}",
                e.purpose
            );
        }
        let left: Vec<&str> = p.left_out.iter().map(|l| l.what.as_str()).collect();
        assert!(
            left.iter().any(|w| w.contains("15017")) && left.iter().any(|w| w.contains("webhooks")),
            "{name}: inbound requirements listed as left out: {left:?}"
        );
    }
    for name in ["cloudcasa", "cloudcasa-self-hosted"] {
        let p = vendors::find(name).unwrap();
        assert!(
            p.params
                .iter()
                .any(|s| s.name == "registry" && !s.required && s.list),
            "{name}: optional registry parameter"
        );
        assert!(
            p.left_out
                .iter()
                .any(|l| l.what.contains("Helm chart repository")),
            "{name}: the Helm repository is left out, with why"
        );
        let note = &p.agents.as_ref().unwrap().note;
        assert!(
            note.contains("kubectl delete namespace cloudcasa-io")
                && note.contains("NetworkPolicy"),
            "{name}: the documented upgrade deletes the proxy settings: {note}"
        );
        // S3: SDKs use virtual-hosted addresses (BUCKET.s3.REGION.amazonaws.com) by default.
        let storage = p.params.iter().find(|s| s.name == "storage").unwrap();
        assert!(
            storage
                .description
                .contains("BUCKET.s3.REGION.amazonaws.com"),
            "{name}: {}",
            storage.description
        );
    }
    // A virtual-hosted bucket name limits the rule to that bucket.
    let settings = from_yaml_str(
        "vendors:\n  - {name: cloudcasa, params: {storage: [my-backups.s3.us-east-1.amazonaws.com]}}\n",
    )
    .unwrap();
    let ok = check(
        &settings,
        None,
        &Default::default(),
        "my-backups.s3.us-east-1.amazonaws.com:443",
    )
    .await;
    assert_eq!(ok.rule.as_deref(), Some("cloudcasa/storage"), "{ok:?}");
    for other in [
        "other.s3.us-east-1.amazonaws.com:443",
        "s3.us-east-1.amazonaws.com:443",
    ] {
        assert!(
            !check(&settings, None, &Default::default(), other)
                .await
                .allowed(),
            "{other}"
        );
    }
}

#[test]
fn vendors_show_prints_what_is_left_out() {
    let out = Command::new(BIN)
        .args(["vendors", "show", "cloudcasa"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("left out (documented, but not an allow rule here)"),
        "{stdout}"
    );
    assert!(stdout.contains("NFS backup storage"), "{stdout}");
    assert!(
        stdout.contains("source: CloudCasa, \"Network Connectivity\", https://docs.cloudcasa.io/help/reference-network.html"),
        "{stdout}"
    );
    assert!(!stdout.contains(".txt"), "{stdout}");
}
