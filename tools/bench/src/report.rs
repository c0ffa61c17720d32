//! BENCHMARKS.md from the JSON results that `scripts/bench` stores in a run
//! directory: `{set}-seed.json`, `{set}-fetch.json`, `{set}-{broker}.json`
//! and `{set}-{broker}-limit.json` for each mail set, `{set}-peer.json`
//! when the peer ran on it, `idle.json`, `tokens.json`, and the load
//! averages in `load-start` and `load-end`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::Value;

/// Ratio of mailbridge's rate to the slower limit that the backfill aims at.
const TARGET_RATIO: f64 = 0.8;

#[derive(Args)]
pub struct ReportArgs {
    /// Directory of the run's JSON results.
    #[arg(long)]
    dir: PathBuf,
    /// Page to write.
    #[arg(long)]
    pub output: PathBuf,
    /// Command line that produced the results, shown on the page.
    #[arg(long)]
    command: String,
    /// Date of the run, shown on the page.
    #[arg(long)]
    date: String,
    /// Label of the Cargo profile mailbridge was built with.
    #[arg(long, default_value = "release")]
    profile: String,
}

/// Mail sets in the order the page shows them, with their headings and
/// the short names of the resource table.
const SETS: [(&str, &str, &str); 2] = [
    ("plain", "Plain mails of about 5 KB", "mails of 5 KB"),
    (
        "attachments",
        "Mails with a 1 MB attachment",
        "mails with a 1 MB attachment",
    ),
];

const BROKERS: [(&str, &str); 2] = [("kafka", "Kafka"), ("amqp", "RabbitMQ")];

pub fn write(args: &ReportArgs) -> Result<(), String> {
    let mut page = String::new();
    header(&mut page, args)?;
    for (set, title, _) in SETS {
        if args.dir.join(format!("{set}-seed.json")).exists() {
            backfill_section(&mut page, &args.dir, set, title)?;
        }
    }
    crate::report_latency::section(&mut page, &args.dir)?;
    crate::report_outbound::section(&mut page, &args.dir)?;
    resources_section(&mut page, &args.dir)?;
    if args.dir.join("tokens.json").exists() {
        tokens_section(&mut page, &args.dir)?;
    }
    crate::profile::caps_section(&mut page, &args.dir)?;
    crate::profile::profile_section(&mut page, &args.dir)?;
    let peer_measured = SETS
        .iter()
        .any(|(set, _, _)| args.dir.join(format!("{set}-peer.json")).exists());
    if !peer_measured {
        page.push_str(NOT_MEASURED);
    }
    page.push_str(METHOD);
    if peer_measured {
        page.push_str(crate::report_peer::METHOD);
    }
    page.push_str(crate::report_latency::METHOD);
    page.push_str(crate::report_outbound::METHOD);
    std::fs::write(&args.output, page)
        .map_err(|err| format!("failed to write {}: {err}", args.output.display()))
}

fn header(page: &mut String, args: &ReportArgs) -> Result<(), String> {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("MemTotal:"))
                .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or("unknown".into(), |kilobytes| {
            format!("{:.1} GiB", kilobytes as f64 / 1024.0 / 1024.0)
        });
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or("unknown".into(), |text| text.trim().to_string());
    let rustc = std::process::Command::new("rustc")
        .arg("--version")
        .output()
        .ok()
        .map_or("unknown".into(), |output| {
            String::from_utf8_lossy(&output.stdout).trim().to_string()
        });
    let load_start = read_load(&args.dir.join("load-start"));
    let load_end = read_load(&args.dir.join("load-end"));

    let _ = writeln!(page, "# Benchmarks\n");
    let _ = writeln!(
        page,
        "Written by `{}` on {}, with mailbridge built in the `{}` profile, \
         against the local stack of `scripts/stack up` (Dovecot, the Kafka \
         mock broker, RabbitMQ, all on 127.0.0.1). Every limit below was \
         measured in the same run as the figure it is compared with.\n",
        args.command, args.date, args.profile
    );
    let _ = writeln!(page, "| Machine | |\n| --- | --- |");
    let _ = writeln!(page, "| CPU cores (nproc) | {cores} |");
    let _ = writeln!(page, "| Memory | {memory} |");
    let _ = writeln!(page, "| Kernel | {kernel} |");
    let _ = writeln!(page, "| rustc | {rustc} |");
    let _ = writeln!(
        page,
        "| Load average (1 min) at start / end | {} / {} |\n",
        format_load(load_start),
        format_load(load_end)
    );
    let busiest = load_start.unwrap_or(0.0).max(load_end.unwrap_or(0.0));
    if cores > 0 && busiest > cores as f64 / 2.0 {
        let _ = writeln!(
            page,
            "**The machine was busy during this run** (load average up to \
             {busiest:.1} on {cores} cores): \
             absolute rates are lower and noisier than on an idle machine. \
             Ratios vary between runs too, because the load changes while \
             a run goes from one step to the next. Repeat the run before \
             drawing conclusions from one figure.\n"
        );
    }
    Ok(())
}

fn backfill_section(page: &mut String, dir: &Path, set: &str, title: &str) -> Result<(), String> {
    let seed = read(dir, &format!("{set}-seed"))?;
    let fetch = read(dir, &format!("{set}-fetch"))?;
    let mails = number(&seed, "mails")?;
    let mail_bytes = number(&seed, "bytes")? / mails.max(1.0);
    let batch = number(&fetch, "batch")?;

    let _ = writeln!(page, "## Inbound backfill: {title}\n");
    let _ = writeln!(
        page,
        "{} mails of {:.1} KB on average in one fresh mailbox, seeded in \
         {:.2} s ({:.0} mails/s) by {}. `batch_size` {batch:.0}.\n",
        thousands(mails),
        mail_bytes / 1024.0,
        number(&seed, "seconds")?,
        mails / number(&seed, "seconds")?,
        text(&seed, "method")
    );
    let imap_seconds = number(&fetch, "seconds")?;
    let imap_rate = mails / imap_seconds;
    let _ = writeln!(
        page,
        "| Measurement | Documents | Seconds | Mails/s | Ratio to the slower limit |\n\
         | --- | ---: | ---: | ---: | ---: |"
    );
    let _ = writeln!(
        page,
        "| IMAP limit: `UID FETCH first:last (UID BODY.PEEK[])`, {batch:.0} UIDs per command, TLS, XOAUTH2 | {} | {imap_seconds:.2} | {imap_rate:.0} | |",
        thousands(mails)
    );
    let mut verdicts = Vec::new();
    for (broker, name) in BROKERS {
        let run = read(dir, &format!("{set}-{broker}"))?;
        let limit = read(dir, &format!("{set}-{broker}-limit"))?;
        let limit_seconds = number(&limit, "seconds")?;
        let limit_rate = number(&limit, "documents")? / limit_seconds;
        let run_seconds = number(&run, "seconds")?;
        let run_rate = number(&run, "documents")? / run_seconds;
        let slower = imap_rate.min(limit_rate);
        let ratio = run_rate / slower;
        let _ = writeln!(
            page,
            "| {name} limit: minimal producer, {} documents of {:.0} bytes, {} | {} | {limit_seconds:.2} | {limit_rate:.0} | |",
            thousands(number(&limit, "documents")?),
            number(&limit, "document_bytes")?,
            broker_settings(broker),
            thousands(number(&limit, "documents")?),
        );
        let _ = writeln!(
            page,
            "| **mailbridge run to {name}**, documents of {:.0} bytes on average | {} | {run_seconds:.2} | {run_rate:.0} | **{}** |",
            number(&run, "document_bytes")?,
            thousands(number(&run, "documents")?),
            shown(ratio),
        );
        let slower_name = if imap_rate <= limit_rate {
            "IMAP"
        } else {
            name
        };
        let verdict = if ratio >= TARGET_RATIO {
            "meets"
        } else {
            "misses"
        };
        let mailbridge_cpu = number(&run, "cpu_seconds")?;
        let cpu = Cpu::read(&run, number(&run, "documents")?, mailbridge_cpu)?;
        let imap_cpu = Cpu::read(&fetch, mails, 0.0)?;
        let broker_cpu = Cpu::read(&limit, number(&limit, "documents")?, 0.0).ok();
        let first = number(&run, "first_seconds")?;
        let documents = number(&run, "documents")?;
        let steady = (documents - 1.0).max(0.0) / (run_seconds - first).max(f64::MIN_POSITIVE);
        let steady_ratio = steady / slower;
        let mut verdict = format!(
            "- {name}: {} of the slower limit ({slower_name}, {slower:.0} mails/s), \
             so this {verdict} the target of {TARGET_RATIO}. The first document arrived \
             {first:.2} s after the start (start, sign-in, connections, first batch); from \
             there the rest came at {steady:.0} mails/s, {steady_ratio:.2} of the slower \
             limit. mailbridge used {mailbridge_cpu:.2} CPU \
             seconds in these {run_seconds:.2} s. The cores were {:.0} % busy, against {:.0} % \
             during the IMAP limit. Per 1,000 mails mailbridge took {:.3} core-seconds, \
             `mailbridge-bench` (counting the documents) {:.3}, and the rest of the machine \
             {:.3}{}. During the IMAP limit the rest took {:.2}{} and the limit's client {:.2}.",
            shown(ratio),
            cpu.busy * 100.0,
            imap_cpu.busy * 100.0,
            cpu.mailbridge,
            cpu.bench,
            cpu.others,
            cpu.split_text(Some("Dovecot, the broker, any other process")),
            imap_cpu.others,
            imap_cpu.split_text(None),
            imap_cpu.bench,
        );
        if let Some(broker_cpu) = &broker_cpu {
            let _ = write!(
                verdict,
                " During the {name} limit the cores were {:.0} % busy. The rest of \
                 the machine took {:.2} core-seconds per 1,000 documents{}, and \
                 the producer {:.2}.",
                broker_cpu.busy * 100.0,
                broker_cpu.others,
                broker_cpu.split_text(None),
                broker_cpu.bench,
            );
        }
        verdict.push_str(&batch_text(
            &run["batches"],
            name,
            documents,
            limit_seconds * 1000.0 / number(&limit, "documents")?.max(1.0),
            imap_seconds * 1000.0 / mails.max(1.0),
        ));
        if ratio < TARGET_RATIO {
            let cores = std::thread::available_parallelism().map_or(0, usize::from);
            verdict.push_str(&cpu.full_cores_text(cores, slower));
            if cpu.busy >= SATURATED {
                let _ = write!(
                    verdict,
                    " With the cores at least {:.0} % busy, processor time set the pace: \
                     per 1,000 mails, mailbridge took {:.2} core-seconds more than the \
                     IMAP limit's client, for parsing, decoding, hashing and publishing \
                     (see the profile), and that time was not left to the servers.",
                    SATURATED * 100.0,
                    (cpu.mailbridge - imap_cpu.bench).max(0.0),
                );
            }
            verdict.push_str(&cpu.ceiling_text(&imap_cpu, "the IMAP limit"));
        }
        verdicts.push(verdict);
    }
    if let Some(verdict) = crate::report_peer::row(page, dir, set)? {
        verdicts.push(verdict);
    }
    let _ = writeln!(page, "\n{}\n", verdicts.join("\n"));
    Ok(())
}

fn resources_section(page: &mut String, dir: &Path) -> Result<(), String> {
    let _ = writeln!(page, "## Resources\n");
    let _ = writeln!(page, "| Measurement | Value |\n| --- | --- |");
    for (set, _, label) in SETS {
        if !dir.join(format!("{set}-seed.json")).exists() {
            continue;
        }
        for (broker, name) in BROKERS {
            let run = read(dir, &format!("{set}-{broker}"))?;
            let documents = number(&run, "documents")?;
            let _ = writeln!(
                page,
                "| Peak RSS (VmHWM), backfill of {} {label} to {name} | {:.1} MiB |",
                thousands(documents),
                number(&run, "peak_rss_bytes")? / 1024.0 / 1024.0
            );
            let _ = writeln!(
                page,
                "| CPU seconds (user + system) per 1,000 mails, same backfill | {:.2} |",
                number(&run, "cpu_seconds")? * 1000.0 / documents.max(1.0)
            );
        }
    }
    if let Ok(idle) = read(dir, "idle") {
        let _ = writeln!(
            page,
            "| RSS (VmRSS) idle with {:.0} mailboxes watched over IDLE, Kafka pipeline, {:.0} s after `/readyz` answered 200 | {:.1} MiB |",
            number(&idle, "mailboxes")?,
            number(&idle, "settle_seconds")?,
            number(&idle, "rss_bytes")? / 1024.0 / 1024.0
        );
    }
    page.push('\n');
    Ok(())
}

/// Share of a token's lifetime after which mailbridge requests a new one:
/// it refreshes when a tenth of the lifetime remains (at most 5 minutes).
const REFRESH_AT: f64 = 0.9;

fn tokens_section(page: &mut String, dir: &Path) -> Result<(), String> {
    let tokens = read(dir, "tokens")?;
    let lifetime = number(&tokens, "lifetime_seconds")?;
    let seconds = number(&tokens, "seconds")?;
    let kicks = number(&tokens, "kicks")?;
    let requests = number(&tokens, "server_refreshes")?;
    let lifetimes = seconds / lifetime;
    // Maximum requests of a client that requests a token at REFRESH_AT of
    // the lifetime, and only when a sign-in needs one.
    let allowed = (seconds / (lifetime * REFRESH_AT)).ceil();

    let _ = writeln!(page, "## Token requests\n");
    let _ = writeln!(page, "| Measurement | Value |\n| --- | --- |");
    let rows = [
        (
            "Access token lifetime set at the OAuth2 server".to_owned(),
            format!("{lifetime:.0} s"),
        ),
        (
            "IMAP sessions of the one account (one per watched mailbox)".to_owned(),
            format!("{:.0}", number(&tokens, "mailboxes")?),
        ),
        ("Measured time".to_owned(), format!("{seconds:.0} s")),
        (
            "Times every session was ended with `doveadm kick`".to_owned(),
            format!("{kicks:.0}"),
        ),
        (
            "Times `doveadm kick` found no session, three tries 200 ms apart".to_owned(),
            format!("{:.0}", tokens["missed_kicks"].as_f64().unwrap_or(0.0)),
        ),
        (
            "Sessions opened again, each with a new sign-in (`mailbridge_imap_reconnects_total`)"
                .to_owned(),
            format!("{:.0}", number(&tokens, "reconnects")?),
        ),
        (
            "Token requests counted by the OAuth2 server (refresh-token grant)".to_owned(),
            format!("{requests:.0}"),
        ),
        (
            "Token requests counted by mailbridge (`mailbridge_oauth2_token_refreshes_total`)"
                .to_owned(),
            format!("{:.0}", number(&tokens, "mailbridge_requests")?),
        ),
        (
            "Token requests per hour at this lifetime".to_owned(),
            format!("{:.0}", requests * 3600.0 / seconds.max(1.0)),
        ),
        (
            "Token requests per token lifetime".to_owned(),
            format!("{:.2}", requests / lifetimes.max(f64::MIN_POSITIVE)),
        ),
    ];
    for (name, value) in rows {
        let _ = writeln!(page, "| {name} | {value} |");
    }

    let verdict = if requests <= allowed {
        "meets"
    } else {
        "misses"
    };
    let _ = writeln!(
        page,
        "\nThe target is one token request per token lifetime per account, \
         whatever the number of connections. mailbridge requests a token when \
         a tenth of its lifetime remains, so {seconds:.0} s of {lifetime:.0} s \
         tokens need at most {allowed:.0} requests; {requests:.0} were sent, \
         which {verdict} the target. At the usual lifetime of one hour this is \
         one request about every 54 minutes per account.\n"
    );
    Ok(())
}

fn broker_settings(broker: &str) -> &'static str {
    match broker {
        "kafka" => "idempotence on, `acks=all`",
        _ => "persistent, `mandatory`, publisher confirms",
    }
}

const NOT_MEASURED: &str = "## Not yet measured

- A peer: fetchmail pulling the same mailbox and handing each mail to `kcat`.

";

const METHOD: &str = "## Method

- Each mail set goes into the INBOX of a new user, so no run sees another
  run's mail, and mailbridge starts without a checkpoint (`start_from =
  \"all\"`) in a state directory of its own, signed in beforehand with the
  authorization-code grant.
- A mailbridge time runs from the start of the `mailbridge run` process to
  the moment a consumer in `mailbridge-bench` has seen the last distinct
  document id (the Kafka record key or the AMQP `message_id`). The consumer
  is assigned to every partition, or consuming the queue, before
  mailbridge starts. Startup, sign-in and broker connection are included.
- The IMAP limit signs in, selects the mailbox, runs `UID SEARCH ALL` and
  fetches every body with `UID FETCH first:last (UID BODY.PEEK[])` in
  commands of `batch_size` UIDs, timed from the TCP connect to the last
  byte, without parsing or publishing.
- Busy cores come from the `cpu` line of /proc/stat (everything but idle
  and iowait) while a step runs, the processor time of `mailbridge-bench`
  from getrusage and mailbridge's from /proc/PID/stat; the rest of the
  machine is what remains.
- The rest of the machine is split into process groups. A group is a
  root process and all its descendants: Dovecot and postfix from their
  master's pid file, the broker from every `beam.smp` and `epmd` process
  (RabbitMQ) and the Kafka mock broker's pid file, and the OAuth2 server
  from its pid file. /proc/PID/stat of every process is read at the
  start and at the end of a step. A group's time is utime + stime of its
  members plus cutime + cstime, the time of the children they reaped, so
  short-lived processes such as imap or smtpd count too. A member that
  exits during a step and is reaped outside its group loses its time to
  \"other\". Other is the remainder: kernel threads, interrupts and every
  process outside the groups. It is 0 when the groups' clock ticks add
  up to slightly more than the remainder of /proc/stat.
- The broker limits send as many JSON documents of mailbridge's mean
  document size, with mailbridge's producer settings, in batches of
  `batch_size` whose confirmations are awaited before the next batch (as
  mailbridge must before it checkpoints). The producer connects before
  the time starts (the Kafka one reads the topic's metadata twice, as
  mailbridge does, so that it has its producer id), and the time runs
  until the same consumer has counted the last document.
- Token requests: one account watches 10 mailboxes, one IMAP session
  each, while the OAuth2 server issues access tokens of a short lifetime.
  Every few seconds `doveadm kick` ends all 10 sessions, so each one signs
  in again. The OAuth2 server's counter of refresh-token grants is read
  once every session is up and again at the end, after every session is
  back; the stack's other clients send none meanwhile.
- Peak RSS is the largest VmHWM of `/proc/PID/status`, sampled every
  50 ms and once more when the last document arrived. CPU time is utime +
  stime of `/proc/PID/stat` at that moment.
";

pub fn read(dir: &Path, name: &str) -> Result<Value, String> {
    let file = dir.join(format!("{name}.json"));
    let text = std::fs::read_to_string(&file)
        .map_err(|err| format!("failed to read {}: {err}", file.display()))?;
    serde_json::from_str(&text).map_err(|err| format!("invalid JSON in {}: {err}", file.display()))
}

/// Share of busy cores from which a step counts as limited by processor
/// time.
pub const SATURATED: f64 = 0.8;

/// Formats a ratio to a target with two decimals, cut off rather than
/// rounded, so that a ratio just below the target never shows as the
/// target.
pub fn shown(ratio: f64) -> String {
    format!("{:.2}", (ratio * 100.0 + 1e-9).floor() / 100.0)
}

/// Processor time of one step, in core-seconds per 1,000 mails, and the
/// share of the machine's cores that were busy.
pub struct Cpu {
    pub busy: f64,
    pub mailbridge: f64,
    pub bench: f64,
    /// Everything else: the mail servers, the broker, other processes.
    pub others: f64,
    /// The measured part of `others` per process group, with the group's
    /// name on the page. Empty for results written before groups were
    /// measured.
    pub groups: Vec<(&'static str, f64)>,
}

/// Describes where a backfill's batches of `documents` in all spent their
/// time. Next to it comes the time the broker limit and the IMAP limit took
/// for as many mails (`limit_ms` and `imap_ms` per mail). Results without
/// batch times give an empty string.
fn batch_text(batches: &Value, name: &str, documents: f64, limit_ms: f64, imap_ms: f64) -> String {
    let (Some(count), Some(cycle_ms), Some(publish_ms)) = (
        batches["count"].as_f64(),
        batches["cycle_ms"].as_f64(),
        batches["publish_ms"].as_f64(),
    ) else {
        return String::new();
    };
    let per_batch = documents / count.max(1.0);
    let rest_ms = (cycle_ms - publish_ms).max(0.0);
    let meanwhile = match (batches["fetch_ms"].as_f64(), batches["build_ms"].as_f64()) {
        (Some(fetch_ms), Some(build_ms)) => format!(
            "Meanwhile the next batch was fetched, in {fetch_ms:.1} ms on average \
             (`mailbridge_imap_fetch_duration_seconds`), and built, in {build_ms:.1} ms \
             (`mailbridge_build_duration_seconds`)"
        ),
        _ => "The next batch is fetched and built in that time".to_owned(),
    };
    let imap_batch_ms = imap_ms * per_batch;
    let mut text = format!(
        " Its {count:.0} batches of {per_batch:.0} mails on average took {cycle_ms:.1} ms each \
         (`mailbridge_imap_poll_duration_seconds`). Of that, {publish_ms:.1} ms ran from the \
         start of a batch's publication until {name} had confirmed it \
         (`mailbridge_publish_duration_seconds`). {meanwhile}; the other {rest_ms:.1} ms of a \
         batch went to waiting for it after the confirmation and to the checkpoint. For as \
         many mails, the {name} limit took {:.1} ms and the IMAP limit {imap_batch_ms:.1} ms.",
        limit_ms * per_batch,
    );
    // The build time counts only the work on the mails, on one thread.
    if let Some(build_ms) = batches["build_ms"].as_f64()
        && build_ms > imap_batch_ms
    {
        let _ = write!(
            text,
            " Building a batch took longer on its one thread than the IMAP limit took to \
             fetch as many mails, so the build alone caps this step at {} of the IMAP limit.",
            shown(imap_batch_ms / build_ms)
        );
    }
    text
}

/// Group keys of the result files with their names on the page.
const GROUP_NAMES: [(&str, &str); 4] = [
    ("dovecot", "Dovecot"),
    ("postfix", "postfix"),
    ("broker", "the broker"),
    ("oauth2", "the OAuth2 server"),
];

impl Cpu {
    pub fn read(
        step: &serde_json::Value,
        mails: f64,
        mailbridge_seconds: f64,
    ) -> Result<Cpu, String> {
        let machine = &step["machine"];
        let busy = number(machine, "busy_seconds")?;
        let total = number(machine, "total_seconds")?;
        let bench = number(machine, "bench_seconds")?;
        let per_thousand = 1000.0 / mails.max(1.0);
        let groups = GROUP_NAMES
            .iter()
            .filter_map(|(key, name)| {
                let seconds = machine["groups"][key].as_f64()?;
                Some((*name, seconds * per_thousand))
            })
            .collect();
        Ok(Cpu {
            busy: busy / total.max(f64::MIN_POSITIVE),
            mailbridge: mailbridge_seconds * per_thousand,
            bench: bench * per_thousand,
            others: (busy - bench - mailbridge_seconds).max(0.0) * per_thousand,
            groups,
        })
    }

    /// Core-seconds per 1,000 mails of every process together.
    pub fn total(&self) -> f64 {
        self.mailbridge + self.bench + self.others
    }

    /// Describes the highest rate that the step's processor time per mail
    /// allows with all `cores` busy, leaving out `mailbridge-bench`, as a
    /// share of `slower_rate` in mails a second. Returns an empty string
    /// when the core count is unknown.
    pub fn full_cores_text(&self, cores: usize, slower_rate: f64) -> String {
        let per_thousand = self.mailbridge + self.others;
        if cores == 0 || per_thousand <= 0.0 {
            return String::new();
        }
        let rate = cores as f64 * 1000.0 / per_thousand;
        format!(
            " Processor time alone bounds this step: without `mailbridge-bench`, it took \
             {per_thousand:.3} core-seconds per 1,000 mails, so even with all {cores} cores \
             busy all the time it could move at most {rate:.0} mails/s, {} of the slower limit.",
            shown(rate / slower_rate),
        )
    }

    /// Says how close to `limit` the processor time per mail lets a step
    /// come when the cores are as busy in both: the limit's core-seconds
    /// per mail over this step's.
    pub fn ceiling_text(&self, limit: &Cpu, limit_name: &str) -> String {
        let ceiling = limit.total() / self.total().max(f64::MIN_POSITIVE);
        // Plain mails take hundredths of a core-second per 1,000.
        let decimals = if self.total() < 1.0 { 3 } else { 2 };
        format!(
            " In all, the run took {:.decimals$} core-seconds per 1,000 mails and {limit_name} \
             {:.decimals$}, so with the cores as busy as during {limit_name}, the run could \
             reach at most {ceiling:.2} of it.",
            self.total(),
            limit.total(),
        )
    }

    /// Returns the split of `others` into groups, in brackets after a
    /// space, when it was measured. Otherwise returns `unmeasured` in
    /// brackets, or nothing when it is `None`.
    pub fn split_text(&self, unmeasured: Option<&str>) -> String {
        if self.groups.is_empty() {
            return unmeasured.map_or(String::new(), |text| format!(" ({text})"));
        }
        let mut parts: Vec<String> = self
            .groups
            .iter()
            // A group that rounds to 0.00 is left out to keep the sentence
            // short.
            .filter(|(_, value)| *value >= 0.005)
            .map(|(name, value)| format!("{name} {value:.2}"))
            .collect();
        parts.push(format!("other {:.2}", self.other()));
        format!(" ({})", parts.join(", "))
    }

    /// Returns the part of `others` outside the groups: kernel threads,
    /// interrupts and processes of no group. It is 0 when the groups'
    /// ticks add up to more than the /proc/stat remainder.
    pub fn other(&self) -> f64 {
        let grouped: f64 = self.groups.iter().map(|(_, value)| value).sum();
        (self.others - grouped).max(0.0)
    }
}

pub fn number(value: &Value, key: &str) -> Result<f64, String> {
    value[key]
        .as_f64()
        .ok_or_else(|| format!("missing number {key:?} in a result file"))
}

fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key].as_str().unwrap_or("unknown method")
}

/// Formats a count with commas between thousands, as in 10,000.
pub fn thousands(count: f64) -> String {
    let digits = format!("{count:.0}");
    let mut grouped = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

fn read_load(file: &Path) -> Option<f64> {
    std::fs::read_to_string(file)
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn format_load(load: Option<f64>) -> String {
    load.map_or("unknown".into(), |value| format!("{value:.2}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_cores_bound_leaves_out_the_bench_tool() {
        let cpu = Cpu {
            busy: 0.5,
            mailbridge: 0.04,
            bench: 0.5,
            others: 0.04,
            groups: Vec::new(),
        };
        // 2 cores over 0.08 core-seconds per 1,000 mails: 25,000 mails/s.
        let text = cpu.full_cores_text(2, 50_000.0);
        assert!(text.contains("took 0.080 core-seconds"), "{text}");
        assert!(text.contains("at most 25000 mails/s, 0.50 of"), "{text}");
        assert_eq!(cpu.full_cores_text(0, 50_000.0), "");
    }

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(200.0), "200");
        assert_eq!(thousands(10000.0), "10,000");
        assert_eq!(thousands(1234567.0), "1,234,567");
    }

    fn step(groups: serde_json::Value) -> Value {
        serde_json::json!({
            "machine": {
                "busy_seconds": 10.0,
                "total_seconds": 40.0,
                "bench_seconds": 1.0,
                "groups": groups,
            }
        })
    }

    #[test]
    fn cpu_splits_rest_into_groups() {
        let groups = serde_json::json!({
            "dovecot": 1.5,
            "postfix": 0.001,
            "broker": 3.0,
            "oauth2": 0.5,
        });
        let cpu = Cpu::read(&step(groups), 2000.0, 2.0).unwrap();
        assert!((cpu.others - 3.5).abs() < 1e-9);
        assert!((cpu.other() - 0.9995).abs() < 1e-9);
        assert_eq!(
            cpu.split_text(Some("unused")),
            " (Dovecot 0.75, the broker 1.50, the OAuth2 server 0.25, other 1.00)"
        );
    }

    #[test]
    fn cpu_other_never_negative() {
        let groups = serde_json::json!({ "broker": 20.0 });
        let cpu = Cpu::read(&step(groups), 1000.0, 2.0).unwrap();
        assert_eq!(cpu.other(), 0.0);
        assert_eq!(cpu.split_text(None), " (the broker 20.00, other 0.00)");
    }

    #[test]
    fn cpu_without_groups_keeps_old_text() {
        let mut old = step(serde_json::Value::Null);
        old["machine"].as_object_mut().unwrap().remove("groups");
        let cpu = Cpu::read(&old, 1000.0, 2.0).unwrap();
        assert!(cpu.groups.is_empty());
        assert_eq!(cpu.split_text(Some("any process")), " (any process)");
        assert_eq!(cpu.split_text(None), "");
    }

    #[test]
    fn ceiling_compares_all_processor_time_per_mail() {
        // 10 busy seconds for 2,000 mails: 5 core-seconds per 1,000 mails,
        // against 4 for the limit.
        let run = Cpu::read(&step(serde_json::Value::Null), 2000.0, 2.0).unwrap();
        let limit = Cpu::read(&step(serde_json::Value::Null), 2500.0, 0.0).unwrap();

        assert_eq!(
            run.ceiling_text(&limit, "the limit"),
            " In all, the run took 5.00 core-seconds per 1,000 mails and the limit 4.00, \
             so with the cores as busy as during the limit, the run could reach at most 0.80 \
             of it."
        );
    }

    #[test]
    fn batch_text_needs_batch_times() {
        let times = serde_json::json!({ "count": 20.0, "cycle_ms": 184.44, "publish_ms": 171.6 });
        let text = batch_text(&times, "Kafka", 500.0, 0.25, 6.0);
        assert!(
            text.starts_with(" Its 20 batches of 25 mails on average took 184.4 ms each"),
            "{text}"
        );
        assert!(
            text.contains("the other 12.8 ms of a batch went to waiting"),
            "{text}"
        );
        assert!(
            text.contains("The next batch is fetched and built in that time"),
            "{text}"
        );
        assert!(
            text.ends_with("the Kafka limit took 6.2 ms and the IMAP limit 150.0 ms."),
            "{text}"
        );

        let slow_build = serde_json::json!({
            "count": 20.0, "cycle_ms": 116.0, "publish_ms": 1.4, "fetch_ms": 86.8, "build_ms": 100.0
        });
        let text = batch_text(&slow_build, "Kafka", 500.0, 0.03, 3.5);
        assert!(
            text.ends_with("the build alone caps this step at 0.87 of the IMAP limit."),
            "{text}"
        );

        let split = serde_json::json!({
            "count": 20.0, "cycle_ms": 10.0, "publish_ms": 4.0, "fetch_ms": 5.5, "build_ms": 2.5
        });
        let text = batch_text(&split, "RabbitMQ", 2000.0, 0.07, 0.04);
        assert!(
            text.contains(
                "fetched, in 5.5 ms on average (`mailbridge_imap_fetch_duration_seconds`), \
                 and built, in 2.5 ms"
            ),
            "{text}"
        );
        assert!(text.contains("the other 6.0 ms of a batch"), "{text}");

        assert_eq!(batch_text(&Value::Null, "Kafka", 100.0, 1.0, 1.0), "");
    }

    #[test]
    fn shown_ratio_never_rounds_up_to_the_target() {
        assert_eq!(shown(0.7990), "0.79");
        assert_eq!(shown(0.8), "0.80");
        assert_eq!(shown(1.257), "1.25");
    }
}
