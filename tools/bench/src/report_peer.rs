//! The peer rows of an inbound backfill section: fetchmail handing each
//! mail to `kcat`, from `{set}-peer.json`, against mailbridge's run to
//! Kafka from `{set}-kafka.json`.

use std::fmt::Write as _;
use std::path::Path;

use crate::report::{number, read, thousands};

/// Appends the peer's row to the open table of a mail set and returns the
/// line that compares mailbridge with it, or None when the set has no peer
/// result.
pub fn row(page: &mut String, dir: &Path, set: &str) -> Result<Option<String>, String> {
    if !dir.join(format!("{set}-peer.json")).exists() {
        return Ok(None);
    }
    let peer = read(dir, &format!("{set}-peer"))?;
    let mailbridge = read(dir, &format!("{set}-kafka"))?;
    let documents = number(&peer, "documents")?;
    let seconds = number(&peer, "seconds")?;
    let rate = documents / seconds;
    let mailbridge_rate = number(&mailbridge, "documents")? / number(&mailbridge, "seconds")?;
    let name = peer["peer"].as_str().unwrap_or("unknown peer");
    let _ = writeln!(
        page,
        "| Peer to Kafka: {name}, one `kcat -P` process per mail, records of {:.0} bytes on average | {} | {seconds:.2} | {rate:.0} | |",
        number(&peer, "document_bytes")?,
        thousands(documents),
    );
    Ok(Some(format!(
        "- Peer: mailbridge's run to Kafka reached {:.2} times the rate of the peer \
         ({rate:.0} mails/s). The peer used {:.2} CPU seconds, its `kcat` processes \
         included, and exited {:.2} s after its start.",
        mailbridge_rate / rate,
        number(&peer, "cpu_seconds")?,
        number(&peer, "exit_seconds")?,
    )))
}

pub const METHOD: &str = "- The peer is fetchmail without daemon mode, signed in with IMAP LOGIN
  and an access token of the stack's OAuth2 server as the password,
  because fetchmail 6.4 has no XOAUTH2 or OAUTHBEARER. The stack's Dovecot
  accepts that only for the benchmark's users. fetchmail reads the same
  INBOX over implicit TLS with `keep` and `fetchall`, and pipes each mail
  to a new `kcat -P` process with kcat's default producer settings, which
  sends it as one keyless record to a topic of its own. It is timed like
  mailbridge, until the counting consumer has seen the last distinct
  Message-ID. It runs after mailbridge's runs, with the server's cache
  as warm as theirs.
";
