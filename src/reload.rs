//! Configuration reload: SIGHUP (see [`crate::run`]) or a change to the configuration file or a file it names
//! → load and compile → swap in for new connections. A configuration that does not load or compile leaves the
//! one in force serving, and the error is logged and counted (`egressd_config_reloads_total{result="error"}`).
//!
//! The watcher watches the directories, not the files: editors replace files by renaming, and Kubernetes
//! updates a mounted ConfigMap by swapping its `..data` symlink, which no watch on the file itself sees. Events
//! are debounced, and a reload happens only when the content of a watched file actually changed.

use crate::config::{self, ConfigErrors, Settings};
use crate::proxy::Live;
use notify::{RecursiveMode, Watcher};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Events closer together than this are one change (an editor's write + rename, a ConfigMap swap).
const DEBOUNCE: Duration = Duration::from_millis(200);

/// The content of each watched file (`None` where it cannot be read): what "changed" is judged on.
type Snapshot = Vec<(PathBuf, Option<Vec<u8>>)>;

/// Reloads a running proxy's configuration. Clones share what was last loaded, so a change already applied
/// (through the API or SIGHUP) is not applied again by the watcher.
#[derive(Clone)]
pub struct Reloader {
    live: Arc<Live>,
    path: Option<PathBuf>,
    loaded: Arc<Mutex<Snapshot>>,
}

impl Reloader {
    pub(crate) fn new(live: Arc<Live>, path: Option<PathBuf>) -> Self {
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
        let metrics = self.live.ctx().metrics.clone();
        match loaded {
            Ok(settings) => {
                let rules = settings.policy.rule_count();
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
        files.extend(self.live.ctx().settings.files.iter().cloned());
        files
    }
}

/// The directories holding `files` (watched instead of the files: see the module comment).
fn directories(files: &[PathBuf]) -> BTreeSet<PathBuf> {
    files
        .iter()
        .map(|f| match f.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        })
        .collect()
}

fn snapshot(files: &[PathBuf]) -> Snapshot {
    files
        .iter()
        .map(|f| (f.clone(), std::fs::read(f).ok()))
        .collect()
}

/// Watch the configuration file and the files it names; reload on change until `stop` fires.
pub fn watch(reloader: Reloader, stop: CancellationToken) -> notify::Result<()> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
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
