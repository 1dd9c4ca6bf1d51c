//! Replays every seed of every fuzz corpus (fuzz/corpus/<target>/) through the same checks the fuzz targets
//! run (`egressd::fuzzing`), so each entry, crash reproducers included, is checked on every test run without
//! the nightly fuzzing toolchain.

use std::path::{Path, PathBuf};

/// A fuzz target's check: panics when the input makes its parser misbehave.
type Check = fn(&[u8]);

const TARGETS: [(&str, Check); 8] = [
    ("request_head", egressd::fuzzing::request_head),
    ("request_stream", egressd::fuzzing::request_stream),
    ("server_answer", egressd::fuzzing::server_answer),
    ("proxy_header", egressd::fuzzing::proxy_header),
    ("normalize_target", egressd::fuzzing::normalize_target),
    ("client_hello", egressd::fuzzing::client_hello),
    ("no_proxy", egressd::fuzzing::no_proxy),
    ("config", egressd::fuzzing::config),
];

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

#[test]
fn every_corpus_entry_passes_its_target() {
    for (target, check) in TARGETS {
        let dir = corpus_dir(target);
        let seeds = files(&dir);
        assert!(!seeds.is_empty(), "{} has no seeds", dir.display());
        for path in seeds {
            let data = std::fs::read(&path).unwrap();
            let r = std::panic::catch_unwind(|| check(&data));
            assert!(r.is_ok(), "{target}: {} fails its check", path.display());
        }
    }
}

#[test]
fn every_corpus_directory_has_a_target() {
    // A directory nobody replays would silently stop being checked.
    for entry in
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus")).unwrap()
    {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(
            TARGETS.iter().any(|(t, _)| *t == name),
            "fuzz/corpus/{name} has no replay target"
        );
    }
}

#[test]
fn seeds_reach_the_interesting_outcomes() {
    // The seeds are meant to cover what matters, not just to not crash: the captured ClientHellos parse with
    // and without SNI, and the request heads reach CONNECT, forwarding and refusals.
    use egressd::wire::client_hello::{peek_client_hello, Peek};
    use egressd::wire::request_head::{classify, Request};
    let hellos: Vec<Peek> = files(&corpus_dir("client_hello"))
        .iter()
        .map(|p| peek_client_hello(&std::fs::read(p).unwrap()))
        .collect();
    assert!(hellos
        .iter()
        .any(|p| matches!(p, Peek::Complete(i) if i.sni.is_some())));
    assert!(hellos
        .iter()
        .any(|p| matches!(p, Peek::Complete(i) if i.sni.is_none())));
    let heads: Vec<_> = files(&corpus_dir("request_head"))
        .iter()
        .map(|p| classify(&std::fs::read(p).unwrap()))
        .collect();
    assert!(heads
        .iter()
        .any(|h| matches!(h, Ok(Some(Request::Connect { .. })))));
    assert!(heads
        .iter()
        .any(|h| matches!(h, Ok(Some(Request::Forward)))));
    assert!(heads.iter().any(|h| matches!(h, Ok(None))));
    assert!(heads.iter().any(|h| h.is_err()));
}
