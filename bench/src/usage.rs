//! What processes use, as Linux reports it: a process's resident set (`/proc/<pid>/status`
//! VmRSS) and CPU time (`/proc/<pid>/stat`), the kernel's TCP socket buffers (`/proc/net/sockstat`,
//! `TCP: ... mem <pages>`) and its unreclaimable slab (`/proc/meminfo`), where socket structures
//! live.

use anyhow::{Context, Result, anyhow};

/// Resident bytes of `pid`.
pub fn rss(pid: u32) -> Result<u64> {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).with_context(|| format!("pid {pid}"))?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .ok_or_else(|| anyhow!("no VmRSS for pid {pid}"))?;
    Ok(kb * 1024)
}

/// Resident bytes of all of `pids` together.
pub fn rss_sum(pids: &[u32]) -> Result<u64> {
    pids.iter().map(|p| rss(*p)).sum()
}

/// The children of `pid` (nginx's workers).
pub fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .map(|s| s.split_whitespace().filter_map(|p| p.parse().ok()).collect())
        .unwrap_or_default()
}

/// CPU seconds (user + system) `pid` has used so far; 0 when it is gone.
pub fn cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    parse_cpu_ticks(&stat).map(|t| t as f64 / clock_ticks()).unwrap_or(0.0)
}

/// CPU seconds of all of `pids` together.
pub fn cpu_secs_sum(pids: &[u32]) -> f64 {
    pids.iter().map(|p| cpu_secs(*p)).sum()
}

/// utime + stime: fields 14 and 15, counted after the `(comm)` field, which may hold spaces.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state), so fields 14 and 15 are at 11 and 12.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if n > 0 { n as f64 } else { 100.0 }
}

/// Bytes the kernel holds for TCP socket buffers, machine-wide.
pub fn tcp_socket_bytes() -> Result<u64> {
    let text = std::fs::read_to_string("/proc/net/sockstat")?;
    Ok(parse_sockstat_pages(&text).ok_or_else(|| anyhow!("no TCP mem in /proc/net/sockstat"))? * page_size())
}

/// Unreclaimable kernel slab bytes (`/proc/meminfo` SUnreclaim), machine-wide: where socket
/// structures themselves live (sockstat's `mem` counts only buffered data).
pub fn unreclaimable_slab_bytes() -> Result<u64> {
    let text = std::fs::read_to_string("/proc/meminfo")?;
    let kb = text
        .lines()
        .find_map(|l| l.strip_prefix("SUnreclaim:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .ok_or_else(|| anyhow!("no SUnreclaim in /proc/meminfo"))?;
    Ok(kb * 1024)
}

fn parse_sockstat_pages(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("TCP:"))?;
    let mut it = line.split_whitespace();
    while let Some(w) = it.next() {
        if w == "mem" {
            return it.next()?.parse().ok();
        }
    }
    None
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 { n as u64 } else { 4096 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockstat_tcp_memory_is_in_pages() {
        let text = "sockets: used 24\nTCP: inuse 5 orphan 0 tw 2 alloc 5 mem 100\nUDP: inuse 0 mem 7\n";
        assert_eq!(parse_sockstat_pages(text), Some(100));
    }

    #[test]
    fn this_process_has_a_resident_set() {
        assert!(rss(std::process::id()).unwrap() > 0);
    }

    #[test]
    fn cpu_ticks_are_read_past_a_command_name_with_spaces() {
        let stat = "42 (a b) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0";
        assert_eq!(parse_cpu_ticks(stat), Some(300));
    }
}
