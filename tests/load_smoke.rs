//! The load harness in smoke mode against direct and egressd, so it cannot rot.
//!
//! The harness needs the `load` feature (rustls, rcgen, ... as optional dependencies), which a plain
//! `cargo test` does not enable. So this test builds it with `cargo build --features load --bin
//! egressd-load` (debug profile, same target directory: only the egressd crate is compiled again with the
//! feature), then runs it with `--smoke` against the egressd binary cargo built for this test run.

use egressd::load::report::{Report, TargetResult};
use std::path::PathBuf;
use std::process::Command;

fn build_harness() -> PathBuf {
    let cargo = option_env!("CARGO").unwrap_or("cargo");
    let out = Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "build",
            "--locked",
            "--features",
            "load",
            "--bin",
            "egressd-load",
            "--message-format",
            "json-render-diagnostics",
        ])
        .output()
        .expect("cargo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "building the harness failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["reason"] == "compiler-artifact" && v["target"]["name"] == "egressd-load")
        .find_map(|v| v["executable"].as_str().map(PathBuf::from))
        .expect("cargo reports the egressd-load executable")
}

fn assert_clean(t: &TargetResult, proxied: bool) {
    let name = &t.name;
    assert!(
        t.unavailable.is_none(),
        "{name} unavailable: {:?}",
        t.unavailable
    );
    assert_eq!(t.error_count(), 0, "{name} had errors: {t:#?}");
    let tunnels = t.tunnels.as_ref().expect("tunnel rate ran");
    assert!(
        tunnels.ok > 0 && tunnels.per_sec > 0.0,
        "{name}: {tunnels:?}"
    );
    assert!(tunnels.latency.as_ref().is_some_and(|l| l.p50_us > 0.0));
    let single = t.single.as_ref().expect("single-client latency ran");
    assert!(single.ok > 0 && single.latency.as_ref().is_some_and(|l| l.p99_us > 0.0));
    // Download and upload, one and eight tunnels at once, each moving all of --bulk-mib.
    let cases: Vec<String> = t.bulk.iter().map(|b| b.case.to_string()).collect();
    assert_eq!(
        cases,
        [
            "download, 1 stream",
            "upload, 1 stream",
            "download, 8 streams",
            "upload, 8 streams"
        ],
        "{name}"
    );
    for bulk in &t.bulk {
        assert!(
            bulk.bytes == 32 << 20 && bulk.mb_per_sec > 0.0,
            "{name}: {bulk:?}"
        );
    }
    if proxied {
        let deny = t.deny.as_ref().expect("deny rate ran");
        assert!(deny.ok > 0 && deny.per_sec > 0.0, "{name}: {deny:?}");
        // The harness launched the proxy, so it can read the proxy's CPU time.
        assert!(
            tunnels.proxy_cpu_us_per_op.is_some_and(|us| us > 0.0),
            "{name}: {tunnels:?}"
        );
        assert!(deny.proxy_cpu_us_per_op.is_some(), "{name}: {deny:?}");
        assert!(
            t.bulk.iter().all(|b| b.proxy_cpu_ms_per_gb.is_some()),
            "{name}: {:?}",
            t.bulk
        );
        let idle = t.idle.as_ref().expect("idle tunnels ran");
        assert_eq!((idle.opened, idle.requested), (50, 50), "{name}: {idle:?}");
        assert!(
            idle.baseline_rss_bytes.is_some_and(|b| b > 0),
            "{name}: {idle:?}"
        );
        assert!(
            idle.loaded_rss_bytes.is_some_and(|b| b > 0),
            "{name}: {idle:?}"
        );
        assert!(idle.rss_per_tunnel_bytes.is_some(), "{name}: {idle:?}");
        assert!(t.pid.is_some() && t.proxy_addr.is_some());
    } else {
        assert!(t.deny.is_none() && t.idle.is_none());
        assert!(tunnels.proxy_cpu_us_per_op.is_none());
        assert!(t.bulk.iter().all(|b| b.proxy_cpu_ms_per_gb.is_none()));
    }
}

#[test]
fn smoke_run_against_direct_egressd_and_egressd_behind_squid() {
    let harness = build_harness();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("load.json");
    let out = Command::new(&harness)
        .args([
            "--smoke",
            "--targets",
            "direct,egressd,egressd-via-squid",
            "--egressd-bin",
        ])
        .arg(env!("CARGO_BIN_EXE_egressd"))
        .arg("--json")
        .arg(&json)
        .output()
        .expect("the harness runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "harness failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("| direct |"), "{stdout}");
    let row = format!("| egressd ({}) |", env!("CARGO_PKG_VERSION"));
    assert!(stdout.contains(&row), "{stdout}");
    assert!(
        stdout.contains("| target | proxy CPU per tunnel |"),
        "{stdout}"
    );
    assert!(
        stdout.contains("| target | MB/s download, 1 stream | vs direct |"),
        "{stdout}"
    );

    let report: Report = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(report.run.smoke);
    let names: Vec<&str> = report.targets.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["direct", "egressd", "egressd-via-squid"]);
    assert_clean(&report.targets[0], false);
    assert_clean(&report.targets[1], true);
    // Squid (installed by .ci/run) as egressd's parent: every tunnel went through both.
    assert_clean(&report.targets[2], true);
}
