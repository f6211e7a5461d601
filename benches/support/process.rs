//! CPU time of a process from `/proc/<pid>/stat` (utime + stime, every thread).

use std::sync::OnceLock;

/// CPU seconds (user + system) that `pid` (this process when `None`) has used so far.
pub fn cpu_seconds(pid: Option<u32>) -> f64 {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    // The command name (field 2) may hold spaces; fields after its `)` are plain.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or_else(|| panic!("{path}: no command name"));
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line; `after` starts at field 3.
    let ticks = |i: usize| -> u64 {
        fields
            .get(i - 3)
            .and_then(|f| f.parse().ok())
            .unwrap_or_else(|| panic!("{path}: field {i} is not a number"))
    };
    (ticks(14) + ticks(15)) as f64 / clock_ticks()
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on every Linux quotad targets).
fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}
