//! Resident memory of a process and all its descendants, from /proc (Linux).

use std::io;
use std::path::Path;

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

/// Summed `VmRSS` of `pid` and every process descended from it, in bytes.
pub fn tree_rss(pid: u32) -> io::Result<u64> {
    let proc_root = Path::new("/proc");
    let status = std::fs::read_to_string(proc_root.join(pid.to_string()).join("status"))?;
    let mut total = parse_vm_rss(&status)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no VmRSS"))?;
    for child in descendants(pid, &process_pairs(proc_root)?) {
        if let Ok(s) = std::fs::read_to_string(proc_root.join(child.to_string()).join("status")) {
            total += parse_vm_rss(&s).unwrap_or(0);
        }
    }
    Ok(total)
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
