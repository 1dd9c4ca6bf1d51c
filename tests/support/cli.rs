//! The egressd binary run as a command, as a user or a CI job runs it: exit code and output, with stdin given
//! or closed; and the input files those commands read.

use flate2::write::GzEncoder;
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_egressd");

pub struct Out {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// `egressd ARGS`, with `stdin` written to it (closed when `None`) and no `EGRESSD_VENDORS` from the
/// environment the tests run in.
pub fn egressd(args: &[&str], stdin: Option<&[u8]>) -> Out {
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("EGRESSD_VENDORS")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `egressd audit ARGS` with stdin closed.
pub fn audit(args: &[&str]) -> Out {
    let mut all = vec!["audit"];
    all.extend_from_slice(args);
    egressd(&all, None)
}

/// `egressd audit ARGS`, which must exit 0: its stdout.
pub fn audit_ok(args: &[&str]) -> String {
    let out = audit(args);
    assert_eq!(out.code, Some(0), "audit {args:?} failed:\n{}", out.stderr);
    out.stdout
}

/// `egressd audit --format json ARGS`, which must exit 0: its report.
pub fn audit_json(args: &[&str]) -> Value {
    let mut all = vec!["--format", "json"];
    all.extend_from_slice(args);
    let text = audit_ok(&all);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
}

pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

pub fn write_gzip(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    let mut gz = GzEncoder::new(
        std::fs::File::create(&p).unwrap(),
        flate2::Compression::fast(),
    );
    gz.write_all(text.as_bytes()).unwrap();
    gz.finish().unwrap();
    p
}
