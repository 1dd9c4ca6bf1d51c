//! Proxies the harness starts itself: egressd (the release binary with a generated config), Squid (with an
//! equivalent allowlist) and egressd with a Squid of its own as its parent proxy, each on a free loopback port
//! with its files in the run's temporary directory.

use super::origin::Origin;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free port on 127.0.0.1 (bound and released; the proxy binds it right after).
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The egressd configuration: the origin's name mapped to 127.0.0.1 and allowed on its two ports; no admin
/// listener (its fixed default port could clash with another running proxy) and a short shutdown grace. Every
/// load connection comes from 127.0.0.1: the per-client limit is the global one. With `parent`, every allowed
/// tunnel goes through that proxy (egressd still resolves and checks the name first, as by default).
pub fn egressd_config(
    port: u16,
    origin: &Origin,
    max_connections: usize,
    parent: Option<SocketAddr>,
) -> String {
    let parents = parent
        .map(|p| format!("parents:\n  - {{name: squid, url: \"http://{p}\"}}\n"))
        .unwrap_or_default();
    format!(
        "{parents}listen: 127.0.0.1:{port}\n\
         allow:\n  - name: load-origin\n    hosts: [\"{name}\"]\n    ports: [{echo}, {bulk}]\n\
         destinations:\n  allow_cidrs: [\"127.0.0.1/32\"]\n\
         dns:\n  hosts: {{\"{name}\": [\"127.0.0.1\"]}}\n\
         limits:\n  max_connections: {max_connections}\n  max_connections_per_client: {max_connections}\n\
         admin:\n  listen: \"off\"\n\
         shutdown:\n  grace: 1s\n",
        name = origin.name,
        echo = origin.echo.port(),
        bulk = origin.bulk.port(),
    )
}

/// A Squid configuration with the same allowlist: CONNECT to the origin's name on its two ports, everything
/// else denied, no cache, the name resolved from a hosts file, every file in `dir`.
pub fn squid_config(port: u16, origin: &Origin, dir: &Path, max_fds: u64) -> String {
    let d = dir.display();
    format!(
        "http_port 127.0.0.1:{port}\n\
         acl load_origin dstdomain {name}\n\
         acl load_ports port {echo} {bulk}\n\
         acl CONNECT method CONNECT\n\
         http_access allow CONNECT load_origin load_ports\n\
         http_access deny all\n\
         hosts_file {d}/hosts\n\
         cache deny all\n\
         cache_mem 0 MB\n\
         access_log stdio:{d}/access.log\n\
         cache_log {d}/cache.log\n\
         cache_store_log none\n\
         netdb_filename none\n\
         pid_filename {d}/squid.pid\n\
         coredump_dir {d}\n\
         max_filedescriptors {max_fds}\n\
         shutdown_lifetime 1 seconds\n",
        name = origin.name,
        echo = origin.echo.port(),
        bulk = origin.bulk.port(),
    )
}

/// A proxy process the harness started; stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Launched {
    pub addr: SocketAddr,
    pub pid: u32,
    pub version: Option<String>,
    child: Child,
    /// The parent proxy this one was started with, stopped after it.
    parent: Option<Box<Launched>>,
}

impl Launched {
    pub fn stop(&mut self) {
        self.stop_own();
        if let Some(parent) = self.parent.as_mut() {
            parent.stop();
        }
    }

    fn stop_own(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped yet.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        self.stop();
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" / ")
}

/// Wait until `addr` accepts connections, or the process exits (an error naming `log`'s last lines).
async fn wait_ready(child: &mut Child, addr: SocketAddr, log: &Path) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("exited with {status}: {}", tail(log)));
        }
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("not listening on {addr} after 15s: {}", tail(log)));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn version(bin: &Path, arg: &str, parse: fn(&str) -> Option<String>) -> Option<String> {
    let out = Command::new(bin).arg(arg).output().ok()?;
    parse(&String::from_utf8_lossy(&out.stdout))
}

/// Start `bin run --config <dir>/conf/egressd.yaml`; its log lines go to `<dir>/egressd.log`. With `parent`
/// (a proxy already started), egressd sends its tunnels through it and owns it from then on.
pub async fn start_egressd(
    bin: &Path,
    dir: &Path,
    origin: &Origin,
    max_connections: usize,
    parent: Option<Launched>,
) -> Result<Launched, String> {
    if !bin.is_file() {
        return Err(format!(
            "{} not found (build it: cargo build --release --features load)",
            bin.display()
        ));
    }
    let port = free_port().map_err(|e| e.to_string())?;
    // The configuration in a directory of its own: egressd watches the directories of its files, and log
    // lines written next to them would wake the watcher at every write.
    let conf_dir = dir.join("conf");
    std::fs::create_dir_all(&conf_dir).map_err(|e| e.to_string())?;
    let config = conf_dir.join("egressd.yaml");
    let parent_addr = parent.as_ref().map(|p| p.addr);
    std::fs::write(
        &config,
        egressd_config(port, origin, max_connections, parent_addr),
    )
    .map_err(|e| e.to_string())?;
    let log = dir.join("egressd.log");
    let out = std::fs::File::create(&log).map_err(|e| e.to_string())?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let mut child = Command::new(bin)
        .args(["run", "--config"])
        .arg(&config)
        .env_remove("EGRESSD_LOG")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_ready(&mut child, addr, &log).await?;
    Ok(Launched {
        addr,
        pid: child.id(),
        version: version(bin, "--version", |s| {
            s.split_whitespace().nth(1).map(str::to_string)
        }),
        child,
        parent: parent.map(Box::new),
    })
}

/// Where `name` is on PATH (or `name` itself when it holds a slash).
pub fn which(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        return Path::new(name).is_file().then(|| PathBuf::from(name));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Start `squid -N -f <dir>/squid/squid.conf` (foreground, no daemon).
pub async fn start_squid(
    bin: &str,
    dir: &Path,
    origin: &Origin,
    max_fds: u64,
) -> Result<Launched, String> {
    let bin = which(bin)
        .ok_or_else(|| format!("{bin} is not installed (Debian: apt-get install squid)"))?;
    let dir = dir.join("squid");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    // Squid started as root switches to its own user, which must be able to write its logs here.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777));
    }
    std::fs::write(dir.join("hosts"), format!("127.0.0.1 {}\n", origin.name))
        .map_err(|e| e.to_string())?;
    let port = free_port().map_err(|e| e.to_string())?;
    let conf = dir.join("squid.conf");
    std::fs::write(&conf, squid_config(port, origin, &dir, max_fds)).map_err(|e| e.to_string())?;
    let log = dir.join("squid.out");
    let out = std::fs::File::create(&log).map_err(|e| e.to_string())?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    // A service name of its own: Squid names its shared memory after it, so two Squids (the `squid` target and
    // the parent of `egressd-via-squid`) and segments left by a Squid killed earlier do not collide.
    let mut child = Command::new(&bin)
        .args(["-N", "-n", &format!("egressdload{port}"), "-f"])
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    if let Err(e) = wait_ready(&mut child, addr, &log).await {
        return Err(format!("{e} (cache.log: {})", tail(&dir.join("cache.log"))));
    }
    Ok(Launched {
        addr,
        pid: child.id(),
        version: version(&bin, "-v", |s| {
            s.lines()
                .next()?
                .rsplit_once("Version ")
                .map(|(_, v)| v.trim().to_string())
        }),
        child,
        parent: None,
    })
}
