//! The outbound throughput section of BENCHMARKS.md, from
//! `outbound-limit-1.json`, `outbound-limit-n.json`, `outbound-kafka.json`,
//! `outbound-amqp.json` and the `outbound-*-delivered.json` counts.

use std::fmt::Write as _;
use std::path::Path;

use crate::report::{Cpu, SATURATED, number, read, shown, thousands};

/// Ratio of mailbridge's rate to the SMTP limit at the same concurrency
/// that outbound aims at.
const TARGET_RATIO: f64 = 0.8;

const PIPELINES: [(&str, &str); 2] = [("kafka", "Kafka"), ("amqp", "RabbitMQ")];

/// Writes the section when the run measured outbound throughput.
pub fn section(page: &mut String, dir: &Path) -> Result<(), String> {
    if !dir.join("outbound-limit-n.json").exists() {
        return Ok(());
    }
    let single = read(dir, "outbound-limit-1")?;
    let parallel = read(dir, "outbound-limit-n")?;
    let connections = number(&parallel, "connections")?;
    let first = read(dir, &format!("outbound-{}", PIPELINES[0].0))?;

    let _ = writeln!(page, "## Outbound throughput to postfix\n");
    let _ = writeln!(
        page,
        "{} send requests of {:.0} bytes of JSON each (a text of {:.0} bytes \
         to one recipient), through outbound pipelines with `max_in_flight = \
         {connections:.0}`, to the stack's postfix on 127.0.0.1 (submission \
         with STARTTLS, AUTH XOAUTH2). The limits send as many messages of \
         {:.0} bytes, with the same text, over one and over {connections:.0} \
         connections.\n",
        thousands(number(&first, "requests")?),
        number(&first, "request_bytes")?,
        number(&first, "text_bytes")?,
        number(&parallel, "message_bytes")?,
    );
    let _ = writeln!(
        page,
        "| Measurement | Mails | Seconds | Mails/s | Ratio to the limit at {connections:.0} connections |\n\
         | --- | ---: | ---: | ---: | ---: |"
    );
    for limit in [&single, &parallel] {
        let mails = number(limit, "mails")?;
        let seconds = number(limit, "seconds")?;
        let _ = writeln!(
            page,
            "| SMTP limit: minimal client, {:.0} connection{} | {} | {seconds:.2} | {:.0} | |",
            number(limit, "connections")?,
            if number(limit, "connections")? == 1.0 {
                ""
            } else {
                "s"
            },
            thousands(mails),
            mails / seconds,
        );
    }
    let limit_rate = number(&parallel, "mails")? / number(&parallel, "seconds")?;
    // Mean time of one mail on one connection of the limit, comparable to
    // mailbridge's mean send attempt.
    let limit_mail_ms =
        number(&parallel, "seconds")? * connections * 1000.0 / number(&parallel, "mails")?.max(1.0);

    let limit_cpu = Cpu::read(&parallel, number(&parallel, "mails")?, 0.0)?;
    let mut verdicts = Vec::new();
    let mut saturated = limit_cpu.busy >= SATURATED;
    for (pipeline, name) in PIPELINES {
        let run = read(dir, &format!("outbound-{pipeline}"))?;
        let mails = number(&run, "requests")?;
        let seconds = number(&run, "seconds")?;
        let rate = mails / seconds;
        let ratio = rate / limit_rate;
        let _ = writeln!(
            page,
            "| **mailbridge run from {name}** | {} | {seconds:.2} | {rate:.0} | **{}** |",
            thousands(mails),
            shown(ratio),
        );
        let verdict = if ratio >= TARGET_RATIO {
            "meets"
        } else {
            "misses"
        };
        let sends = number(&run, "sends")?;
        let send_ms = number(&run, "send_mean_ms")?;
        let mailbridge_cpu = number(&run, "cpu_seconds")?;
        let cpu = Cpu::read(&run, mails, mailbridge_cpu)?;
        saturated &= cpu.busy >= SATURATED;
        // Seconds × places / requests is the mean time a request held a
        // place, assuming the places were never idle for want of requests.
        let slot_ms = seconds * connections * 1000.0 / mails.max(1.0);
        let per_request_ms = send_ms * sends / mails.max(1.0);
        let ceiling =
            if ratio < TARGET_RATIO && cpu.busy >= SATURATED && limit_cpu.busy >= SATURATED {
                cpu.ceiling_text(&limit_cpu, "the limit")
            } else {
                String::new()
            };
        verdicts.push(format!(
            "- {name}: {} of the limit at {connections:.0} connections \
             ({limit_rate:.0} mails/s), so this {verdict} the target of \
             {TARGET_RATIO}. A request held one of the {connections:.0} places \
             for sending {slot_ms:.1} ms on average, against {limit_mail_ms:.1} ms \
             per mail on one connection of the limit; its SMTP send attempts \
             took {per_request_ms:.1} ms of that (`mailbridge_smtp_send_duration_seconds`, \
             {sends:.0} attempts), and the rest went to receiving the request \
             and building the message. The status event and the commit or \
             acknowledgement follow after the place is free. The cores were \
             {:.0} % busy, against {:.0} % during the limit. Per 1,000 mails \
             mailbridge took {:.2} core-seconds, `mailbridge-bench` (producing \
             the requests, reading the status events) {:.2}, and the rest of \
             the machine {:.2}{}. During the limit the rest took {:.2}{}. \
             Producing the requests took {:.2} s.{ceiling}",
            shown(ratio),
            cpu.busy * 100.0,
            limit_cpu.busy * 100.0,
            cpu.mailbridge,
            cpu.bench,
            cpu.others,
            cpu.split_text(Some("the mail servers, the broker, any other process")),
            limit_cpu.others,
            limit_cpu.split_text(None),
            number(&run, "produced_seconds")?,
        ));
    }
    if saturated {
        verdicts.push(format!(
            "- In every step the cores were at least {:.0} % busy, so the \
             mail server could not go faster for want of processor time: \
             what mailbridge and the broker take during a step is taken from \
             postfix, which the limit's client leaves almost alone. On a machine where the mail server has cores of its own, \
             as with Microsoft 365 or Gmail, that share does not slow it down.",
            SATURATED * 100.0
        ));
    }
    let _ = writeln!(page, "\n{}", verdicts.join("\n"));

    let mut counts = Vec::new();
    let mut waits = Vec::new();
    for step in ["limit-1", "limit-n", "kafka", "amqp"] {
        let delivered = read(dir, &format!("outbound-{step}-delivered"))?;
        counts.push(thousands(number(&delivered, "messages")?));
        waits.push(format!("{:.1}", number(&delivered, "wait_seconds")?));
    }
    let _ = writeln!(
        page,
        "- Postfix delivered every mail once released from the hold queue: \
         the recipient mailboxes of the four steps, in the order of the \
         table, contain {} mails, delivered {} s after the release.\n",
        counts.join(", "),
        waits.join(", ")
    );
    Ok(())
}

pub const METHOD: &str = "- Outbound throughput: each step sends to a new recipient of the
  stack's domain whose address ends in `-hold`, so postfix puts every
  accepted mail in its hold queue (stack/postfix/main.cf.in). After the
  step, `postsuper -H` and `postqueue -f` release that recipient's mails and
  postfix delivers them to Dovecot over LMTP. Without the hold, delivery
  runs seconds behind acceptance, by an amount that depends on the
  sending rate, so a faster step would leave more of its delivery work
  to the next one. With it, every step times acceptance alone. mailbridge's
  pipeline reads the requests from a new topic or queue. Once `/readyz`
  answers 200, which for Kafka means the consumer group has assigned the
  partitions, every request is produced at once, and the time runs from
  the first request to the moment a consumer in `mailbridge-bench`
  receives the `sent` status event of the last one. A `failed` event
  fails the run. The Kafka pipeline's broker sets `fetch.wait.max.ms` to
  10 ms: the mock broker holds a fetch on a caught-up partition for the
  whole wait, 500 ms by default, where Kafka answers once a record
  arrives, so the first requests would wait for it. The limits use a minimal SMTP client in
  `mailbridge-bench`: STARTTLS, AUTH XOAUTH2 with an initial response,
  then MAIL FROM, RCPT TO and DATA for one message after another,
  without pipelining. Each connection takes the next message until all
  are accepted, timed from the first connect to the last 250 reply after
  the data. The connection count N is the pipelines' `max_in_flight`.
  Each step then waits until the recipient's INBOX contains every mail.
  Busy cores come from the `cpu` line of /proc/stat (everything but idle
  and iowait) over the timed part of the step, and the processor time of
  `mailbridge-bench` from getrusage; the rest of the machine (the mail
  servers, the broker, any other process) is what remains after
  mailbridge's and the tool's share, split into process groups as for
  the backfill.
";
