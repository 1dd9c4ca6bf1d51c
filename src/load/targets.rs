//! Proxies the harness starts itself: egressd (the release binary with a generated config), Squid,
//! Smokescreen and g3proxy (each with an equivalent allowlist) and egressd with a Squid of its own as its
//! parent proxy, each on a free loopback port with its files in the run's temporary directory. The
//! configurations are plain text built by the `*_config` functions; the `start_*` functions write them and
//! spawn the process.

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

/// The status a proxy answers a refused CONNECT with, unless it says otherwise (egressd, Squid, g3proxy).
pub const FORBIDDEN: u16 = 403;

/// Smokescreen's status for a CONNECT its ACL refuses ("407 Request rejected by proxy").
pub const SMOKESCREEN_DENIED: u16 = 407;

/// A proxy process the harness started; stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Launched {
    pub addr: SocketAddr,
    pub pid: u32,
    pub version: Option<String>,
    /// The status of its answer to a CONNECT its allowlist refuses.
    pub deny_status: u16,
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
    let mut child = spawn_logged(
        Command::new(bin)
            .args(["run", "--config"])
            .arg(&config)
            .env_remove("EGRESSD_LOG"),
        bin,
        &log,
    )?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_ready(&mut child, addr, &log).await?;
    Ok(Launched {
        addr,
        pid: child.id(),
        version: version(bin, "--version", |s| {
            s.split_whitespace().nth(1).map(str::to_string)
        }),
        deny_status: FORBIDDEN,
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
    // A service name of its own: Squid names its shared memory after it, so two Squids (the `squid` target and
    // the parent of `egressd-via-squid`) and segments left by a Squid killed earlier do not collide.
    let mut child = spawn_logged(
        Command::new(&bin)
            .args(["-N", "-n", &format!("egressdload{port}"), "-f"])
            .arg(&conf),
        &bin,
        &log,
    )?;
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
        deny_status: FORBIDDEN,
        child,
        parent: None,
    })
}

/// The peer proxies built from source (`../shared/tools/peers.sh` builds both): which flag and environment
/// variable name their binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Smokescreen,
    G3proxy,
}

impl Peer {
    pub fn name(self) -> &'static str {
        match self {
            Peer::Smokescreen => "smokescreen",
            Peer::G3proxy => "g3proxy",
        }
    }

    pub fn flag(self) -> &'static str {
        match self {
            Peer::Smokescreen => "--smokescreen-bin",
            Peer::G3proxy => "--g3proxy-bin",
        }
    }

    pub fn env(self) -> &'static str {
        match self {
            Peer::Smokescreen => "EGRESSD_LOAD_SMOKESCREEN",
            Peer::G3proxy => "EGRESSD_LOAD_G3PROXY",
        }
    }

    /// The binary to use: the flag's, else the environment variable's (an empty one counts as unset).
    pub fn bin(self, flag: Option<PathBuf>, env: Option<std::ffi::OsString>) -> Option<PathBuf> {
        flag.or_else(|| env.filter(|v| !v.is_empty()).map(PathBuf::from))
    }

    /// `bin` if it is a file, else why the target is unavailable and how to get it.
    pub fn check_bin(self, bin: Option<&Path>) -> Result<PathBuf, String> {
        let how = format!(
            "build it with ../shared/tools/peers.sh (it builds Smokescreen and g3proxy from source; see its \
             header) and give its path with {} PATH or {}=PATH",
            self.flag(),
            self.env()
        );
        match bin {
            None => Err(format!("no {} binary given: {how}", self.name())),
            Some(b) if !b.is_file() => Err(format!("{} not found: {how}", b.display())),
            Some(b) => Ok(b.to_path_buf()),
        }
    }
}

/// Smokescreen's egress ACL: the origin's name is the only allowed domain. Clients without a TLS client
/// certificate have no role, so the rule is the `default` one (`allow_missing_role` in [`smokescreen_config`]).
pub fn smokescreen_acl(origin: &Origin) -> String {
    format!(
        "---\n\
         version: v1\n\
         services: []\n\
         default:\n  name: load-origin\n  project: egressd-load\n  action: enforce\n  \
         allowed_domains:\n    - {name}\n",
        name = origin.name,
    )
}

/// Smokescreen's configuration file. Smokescreen has no per-domain ports and refuses loopback destinations;
/// `allow_addresses` excepts 127.0.0.1 on the origin's two ports only, so together with the ACL it allows the
/// origin's name on those ports. Names are resolved by `dns` (the harness's responder), and its log (one
/// JSON line per decision) goes to stderr, which the launcher sends to a file.
pub fn smokescreen_config(port: u16, origin: &Origin, dns: SocketAddr, acl: &Path) -> String {
    format!(
        "ip: 127.0.0.1\n\
         port: {port}\n\
         acl_file: {acl}\n\
         allow_missing_role: true\n\
         allow_addresses:\n  - \"127.0.0.1:{echo}\"\n  - \"127.0.0.1:{bulk}\"\n\
         resolver_addresses:\n  - \"{dns}\"\n\
         exit_timeout: 1s\n",
        acl = acl.display(),
        echo = origin.echo.port(),
        bulk = origin.bulk.port(),
    )
}

/// g3proxy's configuration: an `http_proxy` server that accepts only the origin's name
/// (`dst_host_filter_set`) and its two ports (`dst_port_filter`); a `direct_fixed` escaper that maps the name
/// to 127.0.0.1 (`resolve_redirection`, the equivalent of egressd's `dns.hosts`) and excepts 127.0.0.1/32
/// from its default refusal of loopback (`egress_network_filter`); a hickory resolver pointed at `dns` for
/// any other name. Task logs (one line per request) go to stdout, which the launcher sends to a file. Quitting
/// does not wait for tunnels to end.
pub fn g3proxy_config(port: u16, origin: &Origin, dns: SocketAddr) -> String {
    format!(
        "---\n\
         runtime:\n  server_offline_delay: 0s\n  task_wait_delay: 0s\n  task_wait_timeout: 1s\n  \
         task_quit_timeout: 1s\n\
         log: stdout\n\
         server:\n  - name: load\n    type: http_proxy\n    escaper: default\n    \
         listen:\n      address: \"127.0.0.1:{port}\"\n    \
         dst_host_filter_set:\n      exact_match:\n        - {name}\n    \
         dst_port_filter:\n      - {echo}\n      - {bulk}\n\
         resolver:\n  - name: default\n    type: hickory\n    server: {dns_ip}\n    server_port: {dns_port}\n\
         escaper:\n  - name: default\n    type: direct_fixed\n    resolver: default\n    \
         resolve_strategy: IPv4Only\n    \
         resolve_redirection:\n      - exact: {name}\n        to: [\"127.0.0.1\"]\n    \
         egress_network_filter:\n      default: allow\n      allow:\n        - 127.0.0.1/32\n",
        name = origin.name,
        echo = origin.echo.port(),
        bulk = origin.bulk.port(),
        dns_ip = dns.ip(),
        dns_port = dns.port(),
    )
}

/// The commit stamp `peers.sh` leaves next to the Smokescreen binary (`smokescreen.built`), shortened; Smokescreen
/// itself has no version flag.
pub fn smokescreen_version(stamp: &str) -> Option<String> {
    let commit = stamp.split_whitespace().next()?;
    commit
        .chars()
        .all(|c| c.is_ascii_hexdigit())
        .then(|| commit.chars().take(7).collect())
}

/// Spawn `cmd` with stdin closed and stdout and stderr to `log`.
fn spawn_logged(cmd: &mut Command, bin: &Path, log: &Path) -> Result<Child, String> {
    let out = std::fs::File::create(log).map_err(|e| e.to_string())?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))
}

/// Start `smokescreen --config-file <dir>/smokescreen/smokescreen.yaml`, resolving through `dns`; its log
/// goes to `smokescreen.log` there.
pub async fn start_smokescreen(
    bin: Option<&Path>,
    dir: &Path,
    origin: &Origin,
    dns: SocketAddr,
) -> Result<Launched, String> {
    let bin = Peer::Smokescreen.check_bin(bin)?;
    let dir = dir.join("smokescreen");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let acl = dir.join("acl.yaml");
    std::fs::write(&acl, smokescreen_acl(origin)).map_err(|e| e.to_string())?;
    let port = free_port().map_err(|e| e.to_string())?;
    let conf = dir.join("smokescreen.yaml");
    std::fs::write(&conf, smokescreen_config(port, origin, dns, &acl))
        .map_err(|e| e.to_string())?;
    let log = dir.join("smokescreen.log");
    let mut child = spawn_logged(
        Command::new(&bin).arg("--config-file").arg(&conf),
        &bin,
        &log,
    )?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_ready(&mut child, addr, &log).await?;
    let stamp = bin
        .parent()
        .map(|d| d.join("smokescreen.built"))
        .and_then(|p| std::fs::read_to_string(p).ok());
    Ok(Launched {
        addr,
        pid: child.id(),
        version: Some(
            stamp
                .as_deref()
                .and_then(smokescreen_version)
                .unwrap_or_else(|| "unknown".into()),
        ),
        deny_status: SMOKESCREEN_DENIED,
        child,
        parent: None,
    })
}

/// Start `g3proxy -c <dir>/g3proxy/g3proxy.yaml -C <dir>/g3proxy/control` (foreground); its output goes to
/// `g3proxy.log` there.
pub async fn start_g3proxy(
    bin: Option<&Path>,
    dir: &Path,
    origin: &Origin,
    dns: SocketAddr,
) -> Result<Launched, String> {
    let bin = Peer::G3proxy.check_bin(bin)?;
    let dir = dir.join("g3proxy");
    let control = dir.join("control");
    std::fs::create_dir_all(&control).map_err(|e| e.to_string())?;
    let port = free_port().map_err(|e| e.to_string())?;
    let conf = dir.join("g3proxy.yaml");
    std::fs::write(&conf, g3proxy_config(port, origin, dns)).map_err(|e| e.to_string())?;
    let log = dir.join("g3proxy.log");
    let mut child = spawn_logged(
        Command::new(&bin)
            .arg("-c")
            .arg(&conf)
            .arg("-C")
            .arg(&control),
        &bin,
        &log,
    )?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_ready(&mut child, addr, &log).await?;
    Ok(Launched {
        addr,
        pid: child.id(),
        version: version(&bin, "--version", |s| {
            s.split_whitespace().nth(1).map(str::to_string)
        }),
        deny_status: FORBIDDEN,
        child,
        parent: None,
    })
}

#[cfg(test)]
#[path = "targets_tests.rs"]
mod tests;
