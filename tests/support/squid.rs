//! Squid from Debian as a parent proxy on loopback, with its own configuration, hosts file and access log in a
//! temp dir.

use super::closed_port;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A Squid on 127.0.0.1 and [::1] at a free port; stopped when dropped.
pub struct Squid {
    pub port: u16,
    dir: tempfile::TempDir,
    child: std::process::Child,
}

impl Squid {
    /// Start Squid allowing every request except those `extra` directives deny (they come first). Its hosts
    /// file maps `names` to 127.0.0.1.
    pub async fn start(extra: &str, names: &[&str]) -> Squid {
        Squid::start_with_hosts(extra, &format!("127.0.0.1 {}", names.join(" "))).await
    }

    /// [`Squid::start`] with its own hosts file line(s).
    pub async fn start_with_hosts(extra: &str, hosts: &str) -> Squid {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // Squid run as root drops to `nobody`, which must write its logs and read the helper's files here.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::write(d.join("hosts"), format!("{hosts}\n")).unwrap();
        let port = closed_port().await;
        let user = if is_root() {
            "cache_effective_user nobody\n"
        } else {
            ""
        };
        let conf = format!(
            "http_port 127.0.0.1:{port}\nhttp_port [::1]:{port}\nvisible_hostname egressd-test\npid_filename {d}/squid.pid\n\
             cache_log {d}/cache.log\naccess_log stdio:{d}/access.log\ncache_store_log none\n\
             coredump_dir {d}\ncache deny all\nhosts_file {d}/hosts\nshutdown_lifetime 0 seconds\n{user}\
             {extra}\nhttp_access allow all\n",
            d = d.display()
        );
        std::fs::write(d.join("squid.conf"), conf).unwrap();
        // A service name of its own: Squid names its shared memory after it, so Squids side by side (and
        // ones killed earlier) do not collide.
        // /usr/sbin may be missing from a non-root PATH.
        let program = ["/usr/sbin/squid", "/usr/local/sbin/squid"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or("squid");
        let child = std::process::Command::new(program)
            .args(["-N", "-n", &format!("egressdtest{port}"), "-f"])
            .arg(d.join("squid.conf"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("squid must be installed (apt-get install squid)");
        let squid = Squid { port, dir, child };
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return squid;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "squid did not listen on {port}: {}",
            std::fs::read_to_string(squid.dir.path().join("cache.log")).unwrap_or_default()
        );
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.path("access.log")).unwrap_or_default()
    }

    /// Wait until the access log has a line containing `needle` (Squid writes it when the tunnel closes).
    pub async fn wait_logged(&self, needle: &str) -> String {
        for _ in 0..100 {
            let log = self.access_log();
            if log.contains(needle) {
                return log;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "squid's access log has no {needle:?}:\n{}",
            self.access_log()
        );
    }
}

impl Drop for Squid {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}
