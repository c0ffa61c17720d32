//! Processor time of the stack's servers, per process group, from
//! /proc/PID/stat.
//!
//! A group is a root process and all its descendants. Its time is the sum,
//! over its live members, of their own utime + stime and of the cutime +
//! cstime of the children they have reaped, so a member that exits and is
//! reaped by another member still counts. The difference between two scans
//! is the group's time during a step.

use std::collections::HashMap;
use std::path::Path;

use crate::process::clock_ticks_per_second;

/// A process group of the local stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    Dovecot,
    Postfix,
    /// RabbitMQ and the Kafka mock broker.
    Broker,
    Oauth2,
}

/// Every group, in the order of `GroupCpu::seconds` and of the page.
pub const GROUPS: [Group; 4] = [Group::Dovecot, Group::Postfix, Group::Broker, Group::Oauth2];

impl Group {
    /// Returns the key of the group in a result file.
    pub fn key(self) -> &'static str {
        match self {
            Group::Dovecot => "dovecot",
            Group::Postfix => "postfix",
            Group::Broker => "broker",
            Group::Oauth2 => "oauth2",
        }
    }

    fn index(self) -> usize {
        GROUPS
            .iter()
            .position(|group| *group == self)
            .expect("GROUPS lists every group")
    }
}

/// Pid files that `scripts/stack` writes under STACK_DIR, with the command
/// name (`comm`, at most 15 bytes) that the recorded process must have. The
/// name check skips a stale pid file whose pid now belongs to another
/// process.
const PID_FILES: [(Group, &str, &str); 4] = [
    (Group::Dovecot, "dovecot/run/master.pid", "dovecot"),
    (Group::Postfix, "postfix/queue/pid/master.pid", "master"),
    (Group::Broker, "run/kafka.pid", "mailbridge-kafk"),
    (Group::Oauth2, "run/oauth2.pid", "node"),
];

/// Command names of group roots that are found without a pid file.
/// RabbitMQ may run as a system service that the stack did not start, so
/// its Erlang VM is found by name. epmd, the Erlang port mapper, maps the
/// VM's node names to ports.
// NOTE: every Erlang VM on the machine counts as the broker, not only the
// RabbitMQ node that the stack uses.
const ROOT_NAMES: [(Group, &str); 2] = [(Group::Broker, "beam.smp"), (Group::Broker, "epmd")];

/// The fields of one /proc/PID/stat line that the grouping needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: u32,
    pub parent: u32,
    /// Command name, without the brackets.
    pub comm: String,
    /// utime + stime, in clock ticks.
    pub own_ticks: u64,
    /// cutime + cstime: the time of reaped children, in clock ticks.
    pub children_ticks: u64,
}

impl ProcStat {
    /// Parses a /proc/PID/stat line.
    pub fn parse(line: &str) -> Result<ProcStat, String> {
        let invalid = || format!("invalid /proc stat line: {line:?}");

        // The command name may contain spaces and brackets, so it runs from
        // the first opening bracket to the last closing one.
        let open = line.find('(').ok_or_else(invalid)?;
        let close = line.rfind(')').ok_or_else(invalid)?;
        if close < open {
            return Err(invalid());
        }
        let pid = line[..open].trim().parse().map_err(|_| invalid())?;

        // Fields after the name: state (field 3 of proc(5)) at index 0,
        // ppid (4) at 1, utime, stime, cutime and cstime (14 to 17) at 11
        // to 14.
        let fields: Vec<&str> = line[close + 1..].split_whitespace().collect();
        let field = |index: usize| -> Result<u64, String> {
            fields
                .get(index)
                .and_then(|value| value.parse().ok())
                .ok_or_else(invalid)
        };
        let parent = u32::try_from(field(1)?).map_err(|_| invalid())?;

        // proc(5) gives cutime and cstime as signed numbers, so a negative
        // value counts as 0.
        let signed = |index: usize| -> Result<u64, String> {
            let value: i64 = fields
                .get(index)
                .and_then(|value| value.parse().ok())
                .ok_or_else(invalid)?;
            Ok(u64::try_from(value).unwrap_or(0))
        };

        Ok(ProcStat {
            pid,
            parent,
            comm: line[open + 1..close].to_string(),
            own_ticks: field(11)? + field(12)?,
            children_ticks: signed(13)? + signed(14)?,
        })
    }
}

/// Processor time of each group, in seconds, indexed like `GROUPS`. A group
/// whose root process was not found is `None`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GroupCpu {
    pub seconds: [Option<f64>; 4],
}

impl GroupCpu {
    /// Scans /proc and sums the processor time of each group. Without
    /// STACK_DIR, only the groups found by command name count.
    pub fn now() -> Result<GroupCpu, String> {
        let processes = scan_proc()?;
        let stack_dir = std::env::var_os("STACK_DIR");
        let pid_files = read_pid_files(stack_dir.as_deref().map(Path::new));
        let roots = find_roots(&processes, &pid_files);
        let ticks = group_ticks(&processes, &roots);
        let per_second = clock_ticks_per_second();
        let mut cpu = GroupCpu::default();
        for (slot, ticks) in cpu.seconds.iter_mut().zip(ticks) {
            *slot = ticks.map(|ticks| ticks as f64 / per_second);
        }
        Ok(cpu)
    }

    /// Returns the time between `earlier` and this scan. A group counts only
    /// when both scans found it.
    pub fn since(&self, earlier: &GroupCpu) -> GroupCpu {
        let mut cpu = GroupCpu::default();
        for (index, slot) in cpu.seconds.iter_mut().enumerate() {
            if let (Some(end), Some(start)) = (self.seconds[index], earlier.seconds[index]) {
                // A member that exits during the step and is reaped outside
                // the group (by init, or after its root exited) takes its
                // time with it, which can make the difference negative.
                // NOTE: such a step undercounts the group, and the lost time
                // shows up under "other".
                *slot = Some((end - start).max(0.0));
            }
        }
        cpu
    }

    /// Returns the found groups as an object of seconds by group key.
    pub fn to_json(self) -> serde_json::Value {
        let mut groups = serde_json::Map::new();
        for (group, seconds) in GROUPS.iter().zip(self.seconds) {
            if let Some(seconds) = seconds {
                groups.insert(group.key().to_string(), seconds.into());
            }
        }
        serde_json::Value::Object(groups)
    }
}

/// Reads /proc/PID/stat of every process. Processes that exit during the
/// scan are skipped.
fn scan_proc() -> Result<HashMap<u32, ProcStat>, String> {
    let entries =
        std::fs::read_dir("/proc").map_err(|err| format!("failed to read /proc: {err}"))?;
    let mut processes = HashMap::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(line) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if let Ok(stat) = ProcStat::parse(&line) {
            processes.insert(stat.pid, stat);
        }
    }
    Ok(processes)
}

/// Returns the pid recorded in each of the stack's pid files that exists.
fn read_pid_files(stack_dir: Option<&Path>) -> Vec<(Group, &'static str, u32)> {
    let Some(stack_dir) = stack_dir else {
        return Vec::new();
    };
    PID_FILES
        .iter()
        .filter_map(|(group, file, comm)| {
            let text = std::fs::read_to_string(stack_dir.join(file)).ok()?;
            let pid = text.lines().next()?.trim().parse().ok()?;
            Some((*group, *comm, pid))
        })
        .collect()
}

/// Returns the root processes of the groups: the pids of the pid files whose
/// process has the expected command name, and the processes named in
/// `ROOT_NAMES`.
fn find_roots(
    processes: &HashMap<u32, ProcStat>,
    pid_files: &[(Group, &str, u32)],
) -> HashMap<u32, Group> {
    let mut roots = HashMap::new();
    for (group, comm, pid) in pid_files {
        if processes.get(pid).is_some_and(|stat| stat.comm == *comm) {
            roots.insert(*pid, *group);
        }
    }
    for stat in processes.values() {
        if let Some((group, _)) = ROOT_NAMES.iter().find(|(_, name)| stat.comm == *name) {
            roots.insert(stat.pid, *group);
        }
    }
    roots
}

/// Returns the group of `pid`: that of the nearest ancestor, or the process
/// itself, that is a root.
fn group_of(
    pid: u32,
    processes: &HashMap<u32, ProcStat>,
    roots: &HashMap<u32, Group>,
) -> Option<Group> {
    let mut current = pid;
    // Each process is read at its own moment, so a pid reused during the
    // scan can close a loop of parents. The bound ends such a walk.
    for _ in 0..processes.len().min(4096) {
        if let Some(group) = roots.get(&current) {
            return Some(*group);
        }
        let parent = processes.get(&current)?.parent;
        if parent == 0 || parent == current {
            return None;
        }
        current = parent;
    }
    None
}

/// Sums own and reaped children's ticks per group, indexed like `GROUPS`.
/// A group without a root is `None`.
fn group_ticks(
    processes: &HashMap<u32, ProcStat>,
    roots: &HashMap<u32, Group>,
) -> [Option<u64>; 4] {
    let mut ticks = [None; 4];
    for group in roots.values() {
        ticks[group.index()] = Some(0);
    }
    for stat in processes.values() {
        if let Some(group) = group_of(stat.pid, processes, roots) {
            let sum = ticks[group.index()].get_or_insert(0);
            *sum += stat.own_ticks + stat.children_ticks;
        }
    }
    ticks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(pid: u32, parent: u32, comm: &str, own_ticks: u64, children_ticks: u64) -> ProcStat {
        ProcStat {
            pid,
            parent,
            comm: comm.to_string(),
            own_ticks,
            children_ticks,
        }
    }

    fn table(processes: Vec<ProcStat>) -> HashMap<u32, ProcStat> {
        processes.into_iter().map(|stat| (stat.pid, stat)).collect()
    }

    #[test]
    fn parse_keeps_brackets_and_spaces_in_name() {
        let line = "4242 (a (b) c) d) S 17 4242 4242 0 -1 4194560 100 0 0 0 \
                    250 50 30 20 20 0 1 0 12345 0 0";
        let stat = ProcStat::parse(line).unwrap();
        assert_eq!(stat.pid, 4242);
        assert_eq!(stat.comm, "a (b) c) d");
        assert_eq!(stat.parent, 17);
        assert_eq!(stat.own_ticks, 300);
        assert_eq!(stat.children_ticks, 50);
    }

    #[test]
    fn parse_rejects_short_or_broken_lines() {
        assert!(ProcStat::parse("12 (sh) S 1 12 12 0 -1 0 0 0 0 0 5").is_err());
        assert!(ProcStat::parse("12 sh S 1").is_err());
        assert!(ProcStat::parse(") 12 (sh S 1").is_err());
        assert!(ProcStat::parse("x (sh) S 1 1 1 0 -1 0 0 0 0 0 1 2 3 4").is_err());
    }

    #[test]
    fn parse_treats_negative_children_time_as_zero() {
        let line = "7 (sh) S 1 7 7 0 -1 0 0 0 0 0 4 6 -3 2";
        let stat = ProcStat::parse(line).unwrap();
        assert_eq!(stat.own_ticks, 10);
        assert_eq!(stat.children_ticks, 2);
    }

    #[test]
    fn group_of_walks_parents_to_root() {
        let processes = table(vec![
            process(1, 0, "init", 0, 0),
            process(100, 1, "dovecot", 1, 0),
            process(101, 100, "imap-login", 1, 0),
            process(102, 101, "imap", 1, 0),
            process(200, 1, "mailbridge", 1, 0),
        ]);
        let roots = HashMap::from([(100, Group::Dovecot)]);
        assert_eq!(group_of(100, &processes, &roots), Some(Group::Dovecot));
        assert_eq!(group_of(102, &processes, &roots), Some(Group::Dovecot));
        assert_eq!(group_of(200, &processes, &roots), None);
        assert_eq!(group_of(1, &processes, &roots), None);
        assert_eq!(group_of(999, &processes, &roots), None);
    }

    #[test]
    fn group_of_stops_on_parent_loop() {
        let processes = table(vec![process(5, 6, "a", 0, 0), process(6, 5, "b", 0, 0)]);
        assert_eq!(group_of(5, &processes, &HashMap::new()), None);
    }

    #[test]
    fn roots_need_matching_command_name() {
        let processes = table(vec![
            process(1, 0, "init", 0, 0),
            process(10, 1, "dovecot", 0, 0),
            process(20, 1, "bash", 0, 0),
            process(30, 1, "beam.smp", 0, 0),
        ]);
        let pid_files = [
            (Group::Dovecot, "dovecot", 10),
            (Group::Postfix, "master", 20),
            (Group::Oauth2, "node", 40),
        ];
        let roots = find_roots(&processes, &pid_files);
        assert_eq!(roots.get(&10), Some(&Group::Dovecot));
        assert_eq!(roots.get(&20), None, "a stale pid file names bash");
        assert_eq!(roots.get(&30), Some(&Group::Broker));
        assert_eq!(roots.len(), 2);
    }

    #[test]
    fn group_ticks_sum_own_and_reaped_time() {
        let processes = table(vec![
            process(1, 0, "init", 1000, 5000),
            process(10, 1, "master", 5, 40),
            process(11, 10, "smtpd", 7, 0),
            process(12, 10, "qmgr", 3, 2),
            process(30, 1, "beam.smp", 50, 0),
            process(31, 30, "erl_child_setup", 1, 0),
            process(99, 1, "other", 500, 0),
        ]);
        let roots = HashMap::from([(10, Group::Postfix), (30, Group::Broker)]);
        let ticks = group_ticks(&processes, &roots);
        assert_eq!(ticks[Group::Postfix.index()], Some(57));
        assert_eq!(ticks[Group::Broker.index()], Some(51));
        assert_eq!(ticks[Group::Dovecot.index()], None);
        assert_eq!(ticks[Group::Oauth2.index()], None);
    }

    #[test]
    fn since_clamps_and_needs_both_scans() {
        let start = GroupCpu {
            seconds: [Some(1.0), Some(5.0), None, Some(2.0)],
        };
        let end = GroupCpu {
            seconds: [Some(3.5), Some(4.0), Some(9.0), None],
        };
        let step = end.since(&start);
        assert_eq!(step.seconds, [Some(2.5), Some(0.0), None, None]);
        let json = step.to_json();
        assert_eq!(json["dovecot"], 2.5);
        assert_eq!(json["postfix"], 0.0);
        assert!(json.get("broker").is_none());
        assert!(json.get("oauth2").is_none());
    }
}
