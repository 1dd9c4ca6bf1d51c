//! Resident memory and CPU time of a process and all its descendants, from /proc (Linux).

use std::io;
use std::path::Path;
use std::time::Duration;

/// `VmRSS` from the text of /proc/PID/status, in bytes.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut parts = line["VmRSS:".len()..].split_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") | None => Some(value * 1024),
        _ => None,
    }
}

/// The parent pid from the text of /proc/PID/stat. The command name (field 2) may hold spaces and
/// parentheses, so parsing starts after its last `)`.
pub fn parse_ppid(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let _state = fields.next()?;
    fields.next()?.parse().ok()
}

/// User plus system CPU time, in clock ticks, from the text of /proc/PID/stat (fields 14 and 15, counted
/// after the command name like [`parse_ppid`]).
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// All descendants of `root` given (pid, ppid) pairs, in no particular order.
pub fn descendants(root: u32, pairs: &[(u32, u32)]) -> Vec<u32> {
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for &(pid, ppid) in pairs {
            if ppid == p && pid != root && !out.contains(&pid) {
                out.push(pid);
                frontier.push(pid);
            }
        }
    }
    out
}

fn process_pairs(proc_root: &Path) -> io::Result<Vec<(u32, u32)>> {
    let mut pairs = Vec::new();
    for entry in std::fs::read_dir(proc_root)? {
        let entry = entry?;
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        // Processes may exit between listing and reading.
        if let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) {
            if let Some(ppid) = parse_ppid(&stat) {
                pairs.push((pid, ppid));
            }
        }
    }
    Ok(pairs)
}

/// Sum of `value` over `pid` and every process descended from it, where `value` reads one /proc file of a
/// process. `pid` itself must be readable; descendants that exit meanwhile count as zero.
fn tree_sum(pid: u32, file: &str, value: fn(&str) -> Option<u64>) -> io::Result<u64> {
    let proc_root = Path::new("/proc");
    let read = |p: u32| std::fs::read_to_string(proc_root.join(p.to_string()).join(file));
    let mut total = value(&read(pid)?)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("no value in {file}")))?;
    for child in descendants(pid, &process_pairs(proc_root)?) {
        if let Ok(s) = read(child) {
            total += value(&s).unwrap_or(0);
        }
    }
    Ok(total)
}

/// Summed `VmRSS` of `pid` and every process descended from it, in bytes.
pub fn tree_rss(pid: u32) -> io::Result<u64> {
    tree_sum(pid, "status", parse_vm_rss)
}

/// CPU time (user and system) used so far by `pid` and every process descended from it that is still
/// running, at the kernel's clock-tick resolution (usually 10 ms).
pub fn tree_cpu(pid: u32) -> io::Result<Duration> {
    let ticks = tree_sum(pid, "stat", parse_cpu_ticks)?;
    let per_sec = rustix::param::clock_ticks_per_second().max(1);
    Ok(Duration::from_nanos(
        (u128::from(ticks) * 1_000_000_000 / u128::from(per_sec)) as u64,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_in_bytes() {
        let s = "Name:\tsquid\nVmPeak:\t  100 kB\nVmRSS:\t   2048 kB\nThreads:\t1\n";
        assert_eq!(parse_vm_rss(s), Some(2048 * 1024));
        assert_eq!(parse_vm_rss("Name:\tkthreadd\n"), None);
    }

    #[test]
    fn ppid_after_a_command_name_with_spaces_and_parens() {
        assert_eq!(parse_ppid("42 (a b) c)) S 7 42 42 0 -1"), Some(7));
        assert_eq!(parse_ppid("1 (init) S 0 1 1"), Some(0));
        assert_eq!(parse_ppid("garbage"), None);
    }

    #[test]
    fn cpu_ticks_are_user_plus_system_time() {
        let stat = "42 (a) b) S 1 42 42 0 -1 4194560 100 0 0 0 250 31 7 9 20 0 2 0 5 0 0";
        assert_eq!(parse_cpu_ticks(stat), Some(281));
        assert_eq!(parse_cpu_ticks("42 (short) S 1 42"), None);
    }

    #[test]
    fn own_process_cpu_time_grows_with_work() {
        let before = tree_cpu(std::process::id()).unwrap();
        // Work until a clock tick of it shows, or give up after ten seconds.
        let start = std::time::Instant::now();
        let mut x = 0u64;
        let mut after = before;
        while after == before && start.elapsed() < Duration::from_secs(10) {
            for _ in 0..1_000_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
            after = tree_cpu(std::process::id()).unwrap();
        }
        assert!(after > before, "{before:?} -> {after:?}");
    }

    #[test]
    fn descendants_follow_the_tree() {
        let pairs = [(2, 1), (3, 2), (4, 3), (5, 1), (6, 9), (1, 0)];
        let mut d = descendants(2, &pairs);
        d.sort();
        assert_eq!(d, vec![3, 4]);
        assert!(descendants(6, &pairs).is_empty());
    }

    #[test]
    fn own_process_has_resident_memory() {
        let rss = tree_rss(std::process::id()).unwrap();
        assert!(rss > 0);
    }
}
