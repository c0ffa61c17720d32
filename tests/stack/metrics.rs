//! `/metrics` of a real `mailbridge run` on the stack, against the names
//! that the Grafana dashboard and the alert rules query, and `mailbridge
//! health` against a running bridge and a closed port.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};

use crate::bridge::{Setup, free_port};
use crate::records::declare_queue;
use crate::support::unique;

const DASHBOARD: &str = include_str!("../../monitoring/grafana-dashboard.json");
const ALERTS: &str = include_str!("../../monitoring/alerts.yml");

/// Metric families whose every label set contains an error kind, which
/// is not known before the first error, so a fresh process does not
/// export them.
const FIRST_EVENT_ONLY: &[&str] = &[
    // `reason` is the kind of the error that ended a session.
    "mailbridge_imap_reconnects_total",
    // `reason` is the kind of the failed sign-in or token request.
    "mailbridge_auth_failures_total",
    // `reason` is why the request could not be sent.
    "mailbridge_dead_lettered_total",
];

/// Declares the queues and returns the tables of an inbound pipeline to
/// standard output and an outbound pipeline on RabbitMQ, both of the
/// signed-in account.
async fn pipelines() -> String {
    let requests = unique("metrics.requests");
    let dead = unique("metrics.dead");
    declare_queue(&requests).await;
    declare_queue(&dead).await;
    format!(
        "[inbound.lines]\naccount = \"watched\"\nmailboxes = [\"INBOX\"]\n\n\
         [outbound.replies]\naccount = \"watched\"\nbroker = \"rabbitmq\"\n\
         queue = \"{requests}\"\ndead_letter = \"{dead}\"\n"
    )
}

/// Returns every `mailbridge_*` and `process_*` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let is_name_char = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut names = BTreeSet::new();

    for prefix in ["mailbridge_", "process_"] {
        for (start, _) in text.match_indices(prefix) {
            if text[..start].chars().next_back().is_some_and(is_name_char) {
                continue;
            }
            let rest = &text[start..];
            let end = rest.find(|c| !is_name_char(c)).unwrap_or(rest.len());
            names.insert(rest[..end].to_owned());
        }
    }
    names
}

/// Returns the series names of a scrape in the Prometheus text format.
fn scraped_names(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn run_metrics_cover_monitoring() {
    let setup = Setup::new("metrics");
    setup.prepare(&pipelines().await).await;
    let bridge = setup.start();
    setup.wait_ready().await;

    let scrape = setup.metrics().await;
    let scraped = scraped_names(&scrape);
    let mut queried = metric_names(DASHBOARD);
    queried.extend(metric_names(ALERTS));
    let missing: Vec<&String> = queried
        .iter()
        .filter(|name| !scraped.contains(*name))
        .filter(|name| !FIRST_EVENT_ONLY.contains(&name.as_str()))
        .collect();

    assert!(queried.len() >= 25, "only {queried:?}");
    assert!(missing.is_empty(), "not in /metrics: {missing:?}\n{scrape}");
    for sample in [
        r#"mailbridge_ready{component="outbound/replies"} 1"#,
        r#"mailbridge_ready{component="inbound/lines/INBOX"} 1"#,
        r#"mailbridge_ready{component="account/watched"} 1"#,
        r#"mailbridge_smtp_sent_total{pipeline="replies",result="success"} 0"#,
        r#"mailbridge_outbound_retries_total{pipeline="replies"} 0"#,
        r#"mailbridge_imap_messages_fetched_total{account="watched",mailbox="INBOX"} 0"#,
    ] {
        assert!(scrape.contains(sample), "no `{sample}` in:\n{scrape}");
    }
    bridge.stop().await;
}

/// Runs `mailbridge health` with the configuration of `setup` and
/// `[metrics] listen` set to `listen`. Returns the exit status, standard
/// output and standard error.
fn health(setup: &Setup, listen: &str) -> (Option<i32>, String, String) {
    let config = setup
        .state()
        .parent()
        .expect("state has a parent")
        .join("mailbridge.toml");
    let output = Command::new(env!("CARGO_BIN_EXE_mailbridge"))
        .arg("--config")
        .arg(config)
        .arg("health")
        .env("MAILBRIDGE_METRICS__LISTEN", listen)
        .env_remove("MAILBRIDGE_CONFIG")
        .stdin(Stdio::null())
        .output()
        .expect("run mailbridge health");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn health_ok_while_running() {
    let setup = Setup::new("health-ok");
    setup.prepare("").await;
    let bridge = setup.start();
    setup.wait_ready().await;
    let wildcard = format!("0.0.0.0:{}", setup.metrics_port());

    let (status, stdout, stderr) = health(&setup, &wildcard);

    assert_eq!(status, Some(0), "{stdout}{stderr}");
    let url = format!("http://127.0.0.1:{}/healthz", setup.metrics_port());
    assert_eq!(stdout.trim(), format!("ok: GET {url} returned 200"));
    bridge.stop().await;
}

#[tokio::test]
async fn health_fails_on_closed_port() {
    let setup = Setup::new("health-closed");
    setup.prepare("").await;
    let closed = format!("127.0.0.1:{}", free_port());

    let (status, stdout, stderr) = health(&setup, &closed);

    assert_eq!(status, Some(1), "{stdout}{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains(&format!("GET http://{closed}/healthz failed")),
        "{stderr}"
    );
    assert!(stderr.contains("[metrics] listen"), "{stderr}");
}
