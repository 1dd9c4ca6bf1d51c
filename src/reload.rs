//! Configuration reload: SIGHUP (see [`crate::run`]) or a change to the configuration file or a file it names
//! → load and compile → swap in for new connections. A configuration that does not load or compile leaves the
//! one in force serving, and the error is logged and counted (`egressd_config_reloads_total{result="error"}`).
//!
//! The watcher watches the directories, not the files: editors replace files by renaming, and Kubernetes
//! updates a mounted ConfigMap by swapping its `..data` symlink, which no watch on the file itself sees.
//!
//! Only a settled file is reloaded: a writer that truncates and rewrites in place (`cat > egressd.yaml`, editors
//! without atomic save, configuration tools) exposes a prefix that may well be valid YAML, and a prefix cut
//! before `deny:` is more open than the file being written. So a reload follows only events that end a write —
//! the writer closed the file (`IN_CLOSE_WRITE`), a file was renamed into place (`IN_MOVED_TO`: atomic saves and
//! the ConfigMap swap) or a symlink was created — never a quiet period, which a slow writer can outlast.
//! Events that close together are one change, and a reload happens only when the content of a watched file
//! actually changed. A reload that drops deny rules or client groups is logged as a warning naming them.

use crate::config::{self, ConfigErrors, Settings};
use crate::telemetry::metrics::Metrics;
use notify::{RecursiveMode, Watcher};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Settling events closer together than this are one change (a ConfigMap swap writes several).
const DEBOUNCE: Duration = Duration::from_millis(100);

/// The content of each watched file (`None` where it cannot be read): what "changed" is judged on.
type Snapshot = Vec<(PathBuf, Option<Vec<u8>>)>;

/// The configuration in force that a [`Reloader`] replaces (the proxy's live state implements it): reloading
/// needs nothing else of the proxy.
pub trait InForce: Send + Sync + 'static {
    /// The files the configuration in force reads besides itself.
    fn files(&self) -> Vec<PathBuf>;
    /// The names of its deny rules and client groups.
    fn guard_names(&self) -> (Vec<Arc<str>>, Vec<String>);
    /// Where reloads are counted.
    fn metrics(&self) -> Arc<Metrics>;
    /// Put `settings` in force.
    fn replace(&self, settings: Settings);
}

/// Reloads a running proxy's configuration. Clones share what was last loaded, so a change already applied
/// (through the API or SIGHUP) is not applied again by the watcher.
#[derive(Clone)]
pub struct Reloader {
    live: Arc<dyn InForce>,
    path: Option<PathBuf>,
    loaded: Arc<Mutex<Snapshot>>,
}

impl Reloader {
    pub(crate) fn new(live: Arc<dyn InForce>, path: Option<PathBuf>) -> Self {
        let r = Reloader {
            live,
            path,
            loaded: Arc::default(),
        };
        *r.loaded() = snapshot(&r.files());
        r
    }

    fn loaded(&self) -> std::sync::MutexGuard<'_, Snapshot> {
        self.loaded.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The configuration file reloads read (`None`: the embedded default with environment overrides).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Load the configuration again (file, the files it names, environment) and put it in force.
    pub fn reload(&self) -> Result<(), ConfigErrors> {
        *self.loaded() = snapshot(&self.files());
        let r = self.apply(config::load(self.path.as_deref()));
        // The new configuration may name other files (a new certificate path).
        *self.loaded() = snapshot(&self.files());
        r
    }

    /// Put an already loaded configuration in force, or count and log why it could not be loaded. The
    /// configuration in force keeps serving on error.
    pub fn apply(&self, loaded: Result<Settings, ConfigErrors>) -> Result<(), ConfigErrors> {
        let metrics = self.live.metrics();
        match loaded {
            Ok(settings) => {
                let rules = settings.runtime.policy.rule_count();
                let (dropped_deny, dropped_groups) =
                    dropped(self.live.guard_names(), &settings.runtime.policy);
                if !dropped_deny.is_empty() || !dropped_groups.is_empty() {
                    tracing::warn!(
                        deny_rules_removed = ?dropped_deny,
                        client_groups_removed = ?dropped_groups,
                        "the reloaded configuration drops deny rules or client groups; if that was not meant, \
                         restore them (a file cut short by its writer is not reloaded)"
                    );
                }
                self.live.replace(settings);
                metrics.config_loaded(true);
                tracing::info!(rules, "configuration reloaded");
                Ok(())
            }
            Err(e) => {
                metrics.config_loaded(false);
                tracing::error!(
                    errors = %e,
                    "configuration reload failed; the previous configuration stays in force"
                );
                Err(e)
            }
        }
    }

    /// The files whose change means a reload: the configuration file and the files it names.
    fn files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = self.path.iter().cloned().collect();
        files.extend(self.live.files());
        files
    }
}

/// The directories holding `files` (watched instead of the files: see the module comment).
fn directories(files: &[PathBuf]) -> BTreeSet<PathBuf> {
    files
        .iter()
        .map(|f| match f.parent() {
            // A directory (of `include:` fragments) is watched itself.
            _ if f.is_dir() => f.clone(),
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        })
        .collect()
}

/// The deny rules and client groups of `old` that `new` no longer has.
fn dropped(
    (old_deny, old_groups): (Vec<Arc<str>>, Vec<String>),
    new: &crate::policy::Policy,
) -> (Vec<String>, Vec<String>) {
    let (new_deny, new_groups) = new.guard_names();
    (
        old_deny
            .iter()
            .filter(|n| !new_deny.contains(n))
            .map(|n| n.to_string())
            .collect(),
        old_groups
            .into_iter()
            .filter(|n| !new_groups.contains(n))
            .collect(),
    )
}

/// Does `event` end a write, so the file it names is whole? See the module comment.
fn settles(event: &notify::Event) -> bool {
    use notify::event::{AccessKind, AccessMode, CreateKind, EventKind, ModifyKind, RenameMode};
    match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Modify(ModifyKind::Name(
            RenameMode::To | RenameMode::Both | RenameMode::Any,
        )) => true,
        // A symlink is complete when it appears (`ln -sf`); a new regular file is not (writes follow).
        EventKind::Create(CreateKind::File | CreateKind::Any | CreateKind::Other) => {
            event.paths.iter().any(|p| {
                p.symlink_metadata()
                    .is_ok_and(|m| m.file_type().is_symlink())
            })
        }
        _ => false,
    }
}

/// A file's bytes, or a directory's sorted listing (so a file added to an `include:` directory is a change).
fn contents(f: &std::path::Path) -> Option<Vec<u8>> {
    if !f.is_dir() {
        return std::fs::read(f).ok();
    }
    let mut names: Vec<_> = std::fs::read_dir(f)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    names.sort();
    Some(names.join(std::ffi::OsStr::new("\n")).into_encoded_bytes())
}

fn snapshot(files: &[PathBuf]) -> Snapshot {
    files.iter().map(|f| (f.clone(), contents(f))).collect()
}

/// Watch the configuration file and the files it names; reload on change until `stop` fires.
pub fn watch(reloader: Reloader, stop: CancellationToken) -> notify::Result<()> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.as_ref().is_ok_and(settles) {
            let _ = tx.send(());
        }
    })?;
    let mut dirs = directories(&reloader.files());
    for d in &dirs {
        watcher.watch(d, RecursiveMode::NonRecursive)?;
    }
    tokio::spawn(async move {
        loop {
            tokio::select! {
                e = rx.recv() => if e.is_none() { return },
                _ = stop.cancelled() => return,
            }
            tokio::time::sleep(DEBOUNCE).await;
            while rx.try_recv().is_ok() {}
            let files = reloader.files();
            if snapshot(&files) == *reloader.loaded() {
                continue;
            }
            tracing::info!("configuration files changed; reloading");
            // Errors are logged and counted by the reloader; the configuration in force keeps serving.
            let _ = reloader.reload();
            // Follow the files the configuration now names.
            let new_dirs = directories(&reloader.files());
            for d in dirs.difference(&new_dirs) {
                let _ = watcher.unwatch(d);
            }
            for d in new_dirs.difference(&dirs) {
                if let Err(e) = watcher.watch(d, RecursiveMode::NonRecursive) {
                    tracing::warn!(dir = %d.display(), error = %e, "cannot watch a directory of the configuration");
                }
            }
            dirs = new_dirs;
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reloads_that_drop_deny_rules_or_client_groups_are_named() {
        let old = config::from_yaml_str(
            "clients: [{name: agents, cidrs: [10.0.0.0/8]}, {name: ci, cidrs: [10.1.0.0/16]}]\n\
             deny: [{name: no-b, hosts: [b.test]}, {name: no-c, hosts: [c.test]}]\n\
             allow: [{name: a, hosts: [a.test]}]\n",
        )
        .unwrap();
        let new = config::from_yaml_str(
            "clients: [{name: agents, cidrs: [10.0.0.0/8]}]\n\
             deny: [{name: no-c, hosts: [c.test]}]\n",
        )
        .unwrap();
        assert_eq!(
            dropped(old.runtime.policy.guard_names(), &new.runtime.policy),
            (vec!["no-b".to_string()], vec!["ci".to_string()])
        );
        assert_eq!(
            dropped(new.runtime.policy.guard_names(), &old.runtime.policy),
            (vec![], vec![])
        );
    }

    #[test]
    fn only_events_that_end_a_write_settle_a_file() {
        use notify::event::{
            AccessKind, AccessMode, CreateKind, DataChange, EventKind, ModifyKind, RenameMode,
        };
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("egressd.yaml");
        std::fs::write(&file, "x").unwrap();
        let link = dir.path().join("link.yaml");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let ev = |kind, path: &Path| notify::Event::new(kind).add_path(path.to_path_buf());
        let settled = [
            ev(
                EventKind::Access(AccessKind::Close(AccessMode::Write)),
                &file,
            ),
            ev(EventKind::Modify(ModifyKind::Name(RenameMode::To)), &file),
            ev(EventKind::Modify(ModifyKind::Name(RenameMode::Both)), &file),
            ev(EventKind::Create(CreateKind::File), &link),
        ];
        for e in &settled {
            assert!(settles(e), "{e:?}");
        }
        let unsettled = [
            ev(EventKind::Modify(ModifyKind::Data(DataChange::Any)), &file),
            ev(EventKind::Create(CreateKind::File), &file),
            ev(EventKind::Modify(ModifyKind::Name(RenameMode::From)), &file),
            ev(
                EventKind::Access(AccessKind::Open(AccessMode::Write)),
                &file,
            ),
        ];
        for e in &unsettled {
            assert!(!settles(e), "{e:?}");
        }
    }

    #[test]
    fn directories_of_files() {
        let d = directories(&[
            PathBuf::from("/etc/egressd/config.yaml"),
            PathBuf::from("/etc/egressd/tls.crt"),
            PathBuf::from("/etc/tls/key.pem"),
            PathBuf::from("local.yaml"),
        ]);
        let want: BTreeSet<PathBuf> = ["/etc/egressd", "/etc/tls", "."]
            .into_iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(d, want);
    }
}
