//! The new-mail latency section of BENCHMARKS.md, from `latency.json`.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use crate::report::{number, read, thousands};

/// Margin over the server's p99 notification latency that mailbridge's
/// p99 may add, in milliseconds.
const TARGET_MARGIN_MS: f64 = 50.0;

/// Writes the section when the run measured latency.
pub fn section(page: &mut String, dir: &Path) -> Result<(), String> {
    if !dir.join("latency.json").exists() {
        return Ok(());
    }
    let latency = read(dir, "latency")?;
    let server = &latency["server"];
    let bridge = &latency["mailbridge"];
    let quantile = |value: &Value, key: &str| number(value, key);

    let _ = writeln!(page, "## New-mail latency with IDLE\n");
    let _ = writeln!(
        page,
        "{} mails of {:.0} bytes appended one at a time to the INBOX of a \
         fresh user, each after a wait drawn uniformly from {:.0} to {:.0} ms \
         (xorshift64, seed {:.0}), while `mailbridge run` watched the \
         mailbox over IDLE with a Kafka pipeline and a minimal IDLE client \
         watched it too. Latencies run from the tagged OK of each APPEND.\n",
        thousands(number(&latency, "mails")?),
        number(&latency, "mail_bytes")?,
        number(&latency, "min_interval_ms")?,
        number(&latency, "max_interval_ms")?,
        number(&latency, "seed")?,
    );
    let _ = writeln!(
        page,
        "| Latency until | p50 ms | p99 ms | Mean ms | Max ms | p50 / p99 ratio to the server |\n\
         | --- | ---: | ---: | ---: | ---: | ---: |"
    );
    let _ = writeln!(
        page,
        "| Server limit: the untagged EXISTS reaches the IDLE client | {:.0} | {:.0} | {:.0} | {:.0} | |",
        quantile(server, "p50_ms")?,
        quantile(server, "p99_ms")?,
        quantile(server, "mean_ms")?,
        quantile(server, "max_ms")?,
    );
    let (server_p50, server_p99) = (quantile(server, "p50_ms")?, quantile(server, "p99_ms")?);
    let (bridge_p50, bridge_p99) = (quantile(bridge, "p50_ms")?, quantile(bridge, "p99_ms")?);
    let _ = writeln!(
        page,
        "| **mailbridge run: a Kafka consumer receives the document** | {bridge_p50:.0} | {bridge_p99:.0} | {:.0} | {:.0} | **{} / {}** |\n",
        quantile(bridge, "mean_ms")?,
        quantile(bridge, "max_ms")?,
        ratio(bridge_p50, server_p50),
        ratio(bridge_p99, server_p99),
    );

    let bound = server_p99 + TARGET_MARGIN_MS;
    let verdict = if bridge_p99 <= bound {
        format!("so it meets the target by {:.0} ms", bound - bridge_p99)
    } else {
        format!("so it misses the target by {:.0} ms", bridge_p99 - bound)
    };
    let _ = writeln!(
        page,
        "- mailbridge's p99 of {bridge_p99:.0} ms is {} the server's p99 + \
         {TARGET_MARGIN_MS:.0} ms ({bound:.0} ms), {verdict}.",
        if bridge_p99 <= bound {
            "within"
        } else {
            "above"
        },
    );
    let _ = writeln!(
        page,
        "- Where the time goes: after the EXISTS, mailbridge adds {:.0} ms \
         at the median. Its {:.0} fetch cycles (UID SEARCH, UID FETCH, \
         publish, checkpoint; `mailbridge_imap_poll_duration_seconds`) took \
         {:.1} ms on average, of which {:.1} ms went to publishing until \
         Kafka confirmed (`mailbridge_publish_duration_seconds`). mailbridge \
         used {:.2} CPU seconds in the {:.1} s of appending.\n",
        bridge_p50 - server_p50,
        number(&latency, "poll_cycles")?,
        number(&latency, "poll_cycle_mean_ms")?,
        number(&latency, "publish_mean_ms")?,
        number(&latency, "cpu_seconds")?,
        number(&latency, "appending_seconds")?,
    );
    Ok(())
}

/// Formats mailbridge's figure divided by the server's, or "n/a" when the
/// server's figure is not positive.
fn ratio(bridge: f64, server: f64) -> String {
    if server > 0.0 {
        format!("{:.2}", bridge / server)
    } else {
        "n/a".into()
    }
}

pub const METHOD: &str = "- New-mail latency: mailbridge watches the INBOX of a new user with
  `start_from = \"new\"` and a Kafka pipeline. Once its `/readyz` answers
  200 and one more second has passed, a minimal IDLE client (implicit
  TLS, XOAUTH2, SELECT, IDLE) starts on the same mailbox, and a third
  connection appends the mails one at a time. Each latency starts at the
  tagged OK of the mail's APPEND. mailbridge's ends when a Kafka consumer
  assigned to every partition receives the document whose `message_id`
  is the mail's Message-ID. The server's ends when the IDLE client reads
  the first untagged EXISTS whose number includes the mail. p50 and p99
  are nearest-rank percentiles. The target is a mailbridge p99 within the
  server's p99 + 50 ms.
";
