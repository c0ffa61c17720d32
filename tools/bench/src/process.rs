//! The measured process: start, resource samples from /proc, and stop.

use std::fs::File;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::groups::{GroupCpu, ProcStat};

/// A started command whose standard output and error go to a log file.
pub struct Measured {
    child: Child,
    pid: u32,
    /// Largest VmHWM seen, in bytes.
    pub peak_rss_bytes: u64,
}

/// Resident memory and CPU time of a process at one moment.
pub struct Sample {
    pub rss_bytes: u64,
    pub peak_rss_bytes: u64,
    pub cpu_seconds: f64,
}

impl Measured {
    pub fn start(command: &[String], log: &Path) -> Result<Self, String> {
        let (program, args) = command
            .split_first()
            .ok_or("no command to measure: give it after --")?;
        let log_file = File::create(log)
            .map_err(|err| format!("failed to create {}: {err}", log.display()))?;
        let stdout = log_file
            .try_clone()
            .map_err(|err| format!("failed to open {}: {err}", log.display()))?;
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .map_err(|err| format!("failed to start {program}: {err}"))?;
        let pid = child.id().ok_or("the measured process exited at once")?;
        Ok(Self {
            child,
            pid,
            peak_rss_bytes: 0,
        })
    }

    /// Returns the process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Reads the process's memory and CPU time, and fails when it exited.
    pub fn sample(&mut self) -> Result<Sample, String> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Err(format!("the measured process exited early with {status}"));
        }
        let sample = read_sample(self.pid)?;
        self.peak_rss_bytes = self.peak_rss_bytes.max(sample.peak_rss_bytes);
        Ok(sample)
    }

    /// Reads the process's memory and CPU time like `sample`, or returns its
    /// exit code once it has exited, for commands that end by themselves.
    pub fn sample_or_exit(&mut self) -> Result<Result<Sample, i32>, String> {
        match self.child.try_wait() {
            Ok(Some(status)) => return Ok(Err(status.code().unwrap_or(-1))),
            Ok(None) => {}
            Err(err) => return Err(format!("failed to check process {}: {err}", self.pid)),
        }
        let sample = read_sample(self.pid)?;
        self.peak_rss_bytes = self.peak_rss_bytes.max(sample.peak_rss_bytes);
        Ok(Ok(sample))
    }

    /// Waits up to `limit` for the process to exit by itself and returns its
    /// exit code. A process still running after `limit` is killed, and the
    /// call fails.
    pub async fn wait(mut self, limit: Duration) -> Result<i32, String> {
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(Ok(status)) => Ok(status.code().unwrap_or(-1)),
            Ok(Err(err)) => Err(format!("failed to wait for process {}: {err}", self.pid)),
            Err(_) => {
                let _ = self.child.kill().await;
                Err(format!(
                    "process {} did not exit within {limit:?} and was killed",
                    self.pid
                ))
            }
        }
    }

    /// Sends SIGTERM and waits up to `grace` for the exit; returns the exit
    /// code, or fails when the process had to be killed.
    pub async fn stop(mut self, grace: Duration) -> Result<i32, String> {
        let pid = libc::pid_t::try_from(self.pid).map_err(|err| err.to_string())?;
        // SAFETY: kill(2) takes plain integers, and `pid` is our own child,
        // which has not been reaped yet, so the id names no other process.
        if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
            return Err(format!(
                "failed to send SIGTERM to {pid}: {}",
                std::io::Error::last_os_error()
            ));
        }
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(Ok(status)) => Ok(status.code().unwrap_or(-1)),
            Ok(Err(err)) => Err(format!("failed to wait for process {pid}: {err}")),
            Err(_) => {
                let _ = self.child.kill().await;
                Err(format!(
                    "process {pid} did not exit within {grace:?} of SIGTERM and was killed"
                ))
            }
        }
    }
}

/// CPU time and largest resident memory of the children that this process
/// has waited for, with the children that those waited for in turn.
pub struct ChildrenUsage {
    pub cpu_seconds: f64,
    /// Largest peak RSS of any one of those processes, in bytes.
    pub max_rss_bytes: u64,
}

/// Reads getrusage(RUSAGE_CHILDREN). After a measured command has exited
/// and been waited for, this covers it and every process it waited for,
/// such as the delivery commands that fetchmail starts for each mail.
pub fn children_usage() -> Result<ChildrenUsage, String> {
    let usage = rusage(libc::RUSAGE_CHILDREN)?;
    Ok(ChildrenUsage {
        cpu_seconds: cpu_of(&usage),
        // Linux reports ru_maxrss in kilobytes.
        max_rss_bytes: u64::try_from(usage.ru_maxrss).unwrap_or(0) * 1024,
    })
}

/// Calls getrusage for `who`: RUSAGE_SELF or RUSAGE_CHILDREN.
fn rusage(who: libc::c_int) -> Result<libc::rusage, String> {
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes only into the struct it is given.
    if unsafe { libc::getrusage(who, &mut usage) } != 0 {
        return Err(format!(
            "getrusage failed: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(usage)
}

/// Returns user plus system time of `usage`, in seconds.
fn cpu_of(usage: &libc::rusage) -> f64 {
    let seconds = |time: libc::timeval| time.tv_sec as f64 + time.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// Processor time of the whole machine and of this process, to tell how
/// busy the cores were during a step and who kept them busy.
#[derive(Debug, Clone, Copy)]
pub struct MachineCpu {
    /// Core-seconds spent on anything but idling and waiting for I/O.
    pub busy_seconds: f64,
    /// Core-seconds that passed: elapsed time times the cores.
    pub total_seconds: f64,
    /// CPU seconds of this process (user + system).
    pub own_seconds: f64,
    /// CPU seconds of the stack's servers, per process group.
    pub groups: GroupCpu,
}

impl MachineCpu {
    /// Reads the first line of /proc/stat, this process's usage and the
    /// processor time of the stack's process groups.
    pub fn now() -> Result<MachineCpu, String> {
        let stat = std::fs::read_to_string("/proc/stat")
            .map_err(|err| format!("failed to read /proc/stat: {err}"))?;
        let (busy, total) = machine_ticks(&stat)?;
        let ticks = clock_ticks_per_second();
        Ok(MachineCpu {
            busy_seconds: busy as f64 / ticks,
            total_seconds: total as f64 / ticks,
            own_seconds: own_cpu_seconds()?,
            groups: GroupCpu::now()?,
        })
    }

    /// Returns the busy and total core-seconds, this process's part and the
    /// groups' parts, for a result file.
    pub fn to_json(self) -> serde_json::Value {
        serde_json::json!({
            "busy_seconds": self.busy_seconds,
            "total_seconds": self.total_seconds,
            "bench_seconds": self.own_seconds,
            "groups": self.groups.to_json(),
        })
    }

    /// Returns the usage between `earlier` and this reading.
    pub fn since(&self, earlier: &MachineCpu) -> MachineCpu {
        MachineCpu {
            busy_seconds: self.busy_seconds - earlier.busy_seconds,
            total_seconds: self.total_seconds - earlier.total_seconds,
            own_seconds: self.own_seconds - earlier.own_seconds,
            groups: self.groups.since(&earlier.groups),
        }
    }
}

/// Returns the busy and total ticks of the `cpu` line of /proc/stat:
/// user, nice, system, idle, iowait, irq, softirq, steal. Guest time is
/// already part of user time.
fn machine_ticks(stat: &str) -> Result<(u64, u64), String> {
    let line = stat
        .lines()
        .find(|line| line.starts_with("cpu "))
        .ok_or("no cpu line in /proc/stat")?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|value| {
            value
                .parse()
                .map_err(|_| format!("unexpected /proc/stat line: {line}"))
        })
        .collect::<Result<_, _>>()?;
    if fields.len() < 8 {
        return Err(format!("unexpected /proc/stat line: {line}"));
    }
    let total: u64 = fields.iter().sum();
    let waiting = fields[3] + fields[4];
    Ok((total - waiting, total))
}

fn own_cpu_seconds() -> Result<f64, String> {
    rusage(libc::RUSAGE_SELF).map(|usage| cpu_of(&usage))
}

fn read_sample(pid: u32) -> Result<Sample, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|err| format!("failed to read /proc/{pid}/status: {err}"))?;
    let kilobytes = |field: &str| -> u64 {
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|value| value.parse().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|err| format!("failed to read /proc/{pid}/stat: {err}"))?;
    Ok(Sample {
        rss_bytes: kilobytes("VmRSS:") * 1024,
        peak_rss_bytes: kilobytes("VmHWM:") * 1024,
        cpu_seconds: cpu_seconds(&stat)?,
    })
}

/// Returns utime + stime of a /proc/PID/stat line, in seconds.
fn cpu_seconds(stat: &str) -> Result<f64, String> {
    let ticks = ProcStat::parse(stat)?.own_ticks;
    Ok(ticks as f64 / clock_ticks_per_second())
}

pub(crate) fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_ticks_leave_out_idle_and_iowait() {
        let stat = "cpu  100 5 50 800 40 3 2 0 7 0\ncpu0 50 2 25 400 20 1 1 0 3 0\n";
        assert_eq!(machine_ticks(stat).unwrap(), (160, 1000));
        assert!(machine_ticks("intr 1 2 3\n").is_err());
    }

    #[test]
    fn cpu_seconds_skips_command_name() {
        let stat = "42 (a b) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0";
        let ticks = clock_ticks_per_second();
        let seconds = cpu_seconds(stat).unwrap();
        assert!((seconds - 300.0 / ticks).abs() < 1e-9);
    }
}
