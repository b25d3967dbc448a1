//! CPU time and peak memory of the benchmark's processes, read from `/proc`: what the hub,
//! kube-apiserver and etcd spent on a phase, whatever else the machine was doing meanwhile.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::{Cluster, Error};

/// Clock ticks per second of `/proc/<pid>/stat` times (`getconf CLK_TCK`, 100 if that fails).
pub fn clock_ticks() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|t| *t > 0)
            .unwrap_or(100)
    })
}

/// `utime + stime` in clock ticks from the text of `/proc/<pid>/stat`.
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may hold spaces: count fields after it.
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Field 3 (state) is fields[0]; utime and stime are fields 14 and 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// CPU seconds (user + system, all threads) process `pid` has used so far.
pub fn cpu_seconds(pid: u32) -> Result<f64, Error> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(path.clone(), e))?;
    let ticks =
        parse_stat_ticks(&text).ok_or_else(|| Error::Other(format!("unreadable {path}")))?;
    Ok(ticks as f64 / clock_ticks() as f64)
}

/// A number field of the text of `/proc/<pid>/status` (`field` with its colon: `VmHWM:`,
/// `VmRSS:`, `Threads:`; memory fields are in KiB).
pub fn parse_status_number(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// `VmHWM` (peak resident set) in KiB from the text of `/proc/<pid>/status`.
pub fn parse_vm_hwm_kib(status: &str) -> Option<u64> {
    parse_status_number(status, "VmHWM:")
}

/// A number field of process `pid`'s `/proc/<pid>/status` ([`parse_status_number`]).
pub fn status_number(pid: u32, field: &str) -> Result<u64, Error> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(path.clone(), e))?;
    parse_status_number(&text, field).ok_or_else(|| Error::Other(format!("no {field} in {path}")))
}

/// Peak resident memory of process `pid` so far, in KiB.
pub fn vm_hwm_kib(pid: u32) -> Result<u64, Error> {
    status_number(pid, "VmHWM:")
}

/// Busy CPU seconds of the whole machine, all cores, from the `cpu` line of `/proc/stat`
/// (user, nice, system, irq, softirq and steal; guest time is inside user).
pub fn parse_machine_busy_ticks(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal …
    Some(v.first()? + v.get(1)? + v.get(2)? + v.get(5)? + v.get(6)? + v.get(7).unwrap_or(&0))
}

/// Busy CPU seconds of the whole machine so far.
pub fn machine_busy_seconds() -> Result<f64, Error> {
    let text =
        std::fs::read_to_string("/proc/stat").map_err(|e| Error::io("/proc/stat".into(), e))?;
    let ticks = parse_machine_busy_ticks(&text)
        .ok_or_else(|| Error::Other("unreadable /proc/stat".into()))?;
    Ok(ticks as f64 / clock_ticks() as f64)
}

/// The entry of a [`CpuSample`] for the benchmark's own process (its clients, watches, replay).
pub const BENCH: &str = "gpufed-bench";
/// The entry of a [`CpuSample`] for the whole machine, every process on it.
pub const MACHINE: &str = "machine";

/// CPU seconds of every process of a cluster at one moment, by component name, with the
/// benchmark's own ([`BENCH`]) and the whole machine's ([`MACHINE`]), so that what other
/// processes on the machine took meanwhile shows.
#[derive(Clone, Debug, Default)]
pub struct CpuSample(BTreeMap<String, f64>);

impl CpuSample {
    /// Reads every running component of `cluster`, this process and the machine.
    pub fn take(cluster: &Cluster) -> Result<CpuSample, Error> {
        let mut out = BTreeMap::new();
        for (name, pid) in cluster.pids() {
            out.insert(name, cpu_seconds(pid)?);
        }
        out.insert(BENCH.into(), cpu_seconds(std::process::id())?);
        out.insert(MACHINE.into(), machine_busy_seconds()?);
        Ok(CpuSample(out))
    }

    /// CPU each component used from `before` to this sample (components in both).
    pub fn since(&self, before: &CpuSample) -> Vec<CpuUse> {
        self.0
            .iter()
            .filter_map(|(name, after)| {
                let was = before.0.get(name)?;
                Some(CpuUse {
                    component: name.clone(),
                    secs: (after - was).max(0.0),
                })
            })
            .collect()
    }
}

/// CPU one component used over a phase.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CpuUse {
    /// Component (`kube-apiserver`, `etcd`, the hub's process name, …).
    pub component: String,
    /// CPU seconds, user + system.
    pub secs: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_read_after_a_command_name_with_spaces_and_parentheses() {
        let stat = "4242 (kube api) (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 1234 567 0 0 20 0 12 0 99 0 0";
        assert_eq!(parse_stat_ticks(stat), Some(1234 + 567));
        assert_eq!(parse_stat_ticks("1 (short) S 1"), None);
    }

    #[test]
    fn machine_busy_time_leaves_out_idle_and_iowait() {
        let stat = "cpu  100 5 50 1000 20 3 2 1 0 0\ncpu0 50 2 25 500 10 1 1 0 0 0\n";
        assert_eq!(
            parse_machine_busy_ticks(stat),
            Some(100 + 5 + 50 + 3 + 2 + 1)
        );
    }

    #[test]
    fn peak_memory_is_read_from_vm_hwm() {
        let status = "Name:\tgpufed-operator\nVmPeak:\t  900000 kB\nVmHWM:\t   54321 kB\nVmRSS:\t   50000 kB\n";
        assert_eq!(parse_vm_hwm_kib(status), Some(54321));
        assert_eq!(parse_status_number(status, "VmRSS:"), Some(50000));
        assert_eq!(parse_status_number(status, "Threads:"), None);
    }

    #[test]
    fn this_process_has_used_some_cpu_and_memory() {
        let me = std::process::id();
        assert!(cpu_seconds(me).unwrap() >= 0.0);
        assert!(vm_hwm_kib(me).unwrap() > 0);
    }
}
