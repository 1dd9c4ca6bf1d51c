//! The open-file limit: every proxied connection costs two descriptors (client and upstream), so the default
//! soft limit of 1024 would cap egressd far below `limits.max_connections`.

use rlimit::Resource;

/// Raise the soft descriptor limit to the hard one, and the hard one to the kernel's `fs.nr_open` where the
/// process may (root, CAP_SYS_RESOURCE). Returns the soft limit now in force.
pub fn raise() -> u64 {
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    if let (Some(nr_open), Ok((_, hard))) = (nr_open, Resource::NOFILE.get()) {
        let want = nr_open.min(1 << 20);
        if want > hard {
            // Fails without privilege; the hard limit then stays as it is.
            let _ = Resource::NOFILE.set(want, want);
        }
    }
    rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024)
}

/// A warning when `limit` descriptors cannot hold `max_connections` proxied connections.
pub fn shortfall(limit: u64, max_connections: usize) -> Option<String> {
    // Two per connection, plus listeners, DNS sockets, log and config files.
    let needed = 2 * max_connections as u64 + 64;
    (limit < needed).then(|| {
        format!(
            "the open-file limit is {limit}, but limits.max_connections = {max_connections} needs about {needed}; \
             raise the limit (ulimit -n, LimitNOFILE=) or lower limits.max_connections"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raise_reaches_at_least_the_old_soft_limit() {
        let (soft, _) = Resource::NOFILE.get().unwrap();
        assert!(raise() >= soft);
        let (now, hard) = Resource::NOFILE.get().unwrap();
        assert_eq!(now, hard, "the soft limit is raised to the hard one");
    }

    #[test]
    fn shortfall_only_when_too_low() {
        assert!(shortfall(1024, 10_000).unwrap().contains("20064"));
        assert!(shortfall(1 << 20, 10_000).is_none());
    }
}
