//! The Grafana dashboard and the Prometheus alert rules under `monitoring/`
//! query only metrics that mailbridge registers, and together they cover
//! every metric that README's tables list.
//!
//! The rule file is read as text, not as YAML: it keeps every `expr` on one
//! line, and each rule's keys are on lines of their own.

use std::collections::{BTreeMap, BTreeSet};

use prometheus::{IntGauge, Registry};
use serde_json::Value;

use mailbridge::telemetry::{InboundMetrics, Metrics, OutboundMetrics, Readiness, process};

const DASHBOARD: &str = include_str!("../monitoring/grafana-dashboard.json");
const ALERTS: &str = include_str!("../monitoring/alerts.yml");
const README: &str = include_str!("../README.md");

/// Metrics from README's tables that neither the dashboard nor the rules
/// need to show, each with the reason in a comment.
const NOT_MONITORED: &[&str] = &[];

/// Process metrics that the dashboard must chart, beyond README's tables.
const PROCESS_METRICS: &[&str] = &[
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_open_fds",
];

/// Labels that Prometheus adds to every scraped series, and the bucket
/// bound of a histogram.
const SCRAPE_LABELS: &[&str] = &["job", "instance", "le"];

/// Suffixes of the series that one histogram exposes.
const HISTOGRAM_SUFFIXES: &[&str] = &["_bucket", "_sum", "_count"];

/// Returns a registry with every collector that `mailbridge run` registers.
fn product_registry() -> Registry {
    let registry = Registry::new();
    Metrics::new(&registry).expect("register the sign-in metrics");
    InboundMetrics::new(&registry).expect("register the inbound metrics");
    OutboundMetrics::new(&registry).expect("register the outbound metrics");
    process::register(&registry).expect("register the process metrics");
    Readiness::registered(&registry).expect("register the readiness gauge");
    registry
}

/// Reports whether `registry` contains a metric named `name`.
///
/// A vector without children is left out of `gather()`, and `Registry`
/// does not list its descriptors. So the check registers a probe gauge
/// named `name`: the registry rejects it with `AlreadyReg` exactly when a
/// registered descriptor has the same name and no constant labels, which
/// is true of every mailbridge and process metric.
fn is_registered(registry: &Registry, name: &str) -> bool {
    let probe = IntGauge::new(name, "probe").expect("a valid metric name");
    match registry.register(Box::new(probe.clone())) {
        Err(prometheus::Error::AlreadyReg) => true,
        Ok(()) => {
            registry
                .unregister(Box::new(probe))
                .expect("unregister the probe");
            false
        }
        Err(error) => panic!("probe of {name} failed: {error}"),
    }
}

/// Returns the metric a series name belongs to: `name` itself when it is
/// registered, else the histogram of a `_bucket`, `_sum` or `_count`
/// series.
fn metric_of(registry: &Registry, series: &str) -> Option<String> {
    if is_registered(registry, series) {
        return Some(series.to_owned());
    }
    HISTOGRAM_SUFFIXES
        .iter()
        .filter_map(|suffix| series.strip_suffix(suffix))
        .find(|base| is_registered(registry, base))
        .map(str::to_owned)
}

/// Returns every `mailbridge_*` and `process_*` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let is_name_char = |c: char| c.is_ascii_alphanumeric() || c == '_';

    for prefix in ["mailbridge_", "process_"] {
        for (start, _) in text.match_indices(prefix) {
            let before = text[..start].chars().next_back();
            if before.is_some_and(is_name_char) {
                continue;
            }
            let rest = &text[start..];
            let end = rest.find(|c| !is_name_char(c)).unwrap_or(rest.len());
            names.insert(rest[..end].to_owned());
        }
    }
    names
}

/// Returns the PromQL queries of the dashboard: panel targets and the
/// queries of template variables.
fn dashboard_queries(dashboard: &Value) -> Vec<String> {
    let mut queries = Vec::new();
    let panels = dashboard["panels"].as_array().expect("a panels array");
    for panel in panels {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("a target has an expr");
            queries.push(expr.to_owned());
        }
    }

    let variables = dashboard["templating"]["list"].as_array();
    for variable in variables.expect("a templating list") {
        if variable["type"] == "query" {
            let query = variable["query"]["query"].as_str();
            queries.push(query.expect("a query variable has a query").to_owned());
        }
    }
    queries
}

/// Returns the values of `key:` in the rule file, one per line, with
/// surrounding quotes removed.
fn rule_values(key: &str) -> Vec<String> {
    let prefix = format!("{key}:");
    ALERTS
        .lines()
        .map(str::trim_start)
        .map(|line| line.strip_prefix("- ").unwrap_or(line))
        .filter_map(|line| line.strip_prefix(&prefix))
        .map(|value| value.trim().trim_matches('"').to_owned())
        .collect()
}

/// Returns the queries of the rule file.
fn rule_queries() -> Vec<String> {
    rule_values("expr")
}

/// Returns the metric names in README's metric tables.
fn readme_metrics() -> BTreeSet<String> {
    README
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|cell| cell.split('`').next())
        .filter(|name| name.starts_with("mailbridge_"))
        .map(str::to_owned)
        .collect()
}

/// Returns the labels that README's tables give each metric. A metric in
/// two tables gets the labels of both.
fn readme_labels() -> BTreeMap<String, BTreeSet<String>> {
    let mut labels: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let rows = README.lines().filter_map(|line| line.strip_prefix("| `"));

    for row in rows.filter(|row| row.starts_with("mailbridge_")) {
        let mut cells = row.split('|');
        let name = cells
            .next()
            .unwrap_or_default()
            .trim()
            .trim_end_matches('`');
        let listed = cells.next().unwrap_or_default().split(',');
        let names = listed.map(|label| label.split('=').next().unwrap_or_default().trim());
        let entry = labels.entry(name.to_owned()).or_default();
        entry.extend(names.filter(|label| !label.is_empty()).map(str::to_owned));
    }
    labels
}

/// Returns the label names that `query` groups by or matches on.
fn query_labels(query: &str) -> BTreeSet<String> {
    let mut labels = BTreeSet::new();
    let lists = ["by (", "without ("].into_iter().flat_map(|opening| {
        query
            .match_indices(opening)
            .map(move |(start, _)| &query[start + opening.len()..])
    });
    for list in lists {
        let inner = list.split(')').next().unwrap_or_default();
        labels.extend(inner.split(',').map(|label| label.trim().to_owned()));
    }

    for selector in query.split('{').skip(1) {
        let inner = selector.split('}').next().unwrap_or_default();
        for matcher in inner.split(',') {
            let name = matcher.split(['=', '!']).next().unwrap_or_default();
            labels.insert(name.trim().to_owned());
        }
    }
    labels.retain(|label| !label.is_empty());
    labels
}

fn parse_dashboard() -> Value {
    serde_json::from_str(DASHBOARD).expect("the dashboard is valid JSON")
}

/// Returns the names in `queries` that are no registered metric.
fn unknown_names(registry: &Registry, queries: &[String]) -> Vec<String> {
    let series = queries.iter().flat_map(|query| metric_names(query));
    let unique: BTreeSet<String> = series.collect();
    unique
        .into_iter()
        .filter(|name| metric_of(registry, name).is_none())
        .collect()
}

/// Returns the registered metrics that `queries` use.
fn used_metrics(registry: &Registry, queries: &[String]) -> BTreeSet<String> {
    let series = queries.iter().flat_map(|query| metric_names(query));
    series
        .filter_map(|name| metric_of(registry, &name))
        .collect()
}

#[test]
fn dashboard_metrics_registered() {
    let registry = product_registry();
    let queries = dashboard_queries(&parse_dashboard());

    let unknown = unknown_names(&registry, &queries);

    assert!(!queries.is_empty(), "the dashboard has no queries");
    assert!(unknown.is_empty(), "unknown metrics: {unknown:?}");
}

#[test]
fn alert_metrics_registered() {
    let registry = product_registry();
    let queries = rule_queries();
    let mentioned = vec![ALERTS.to_owned()];

    let unknown = unknown_names(&registry, &queries);
    let unknown_in_text = unknown_names(&registry, &mentioned);

    assert!(!queries.is_empty(), "the rule file has no expr lines");
    assert!(unknown.is_empty(), "unknown metrics: {unknown:?}");
    assert!(
        unknown_in_text.is_empty(),
        "unknown metrics in annotations: {unknown_in_text:?}"
    );
}

#[test]
fn probe_rejects_unknown_metric() {
    let registry = product_registry();

    assert!(is_registered(&registry, "mailbridge_imap_connected"));
    assert!(!is_registered(&registry, "mailbridge_imap_connectd"));
    assert_eq!(
        metric_of(&registry, "mailbridge_smtp_send_duration_seconds_bucket").as_deref(),
        Some("mailbridge_smtp_send_duration_seconds")
    );
    assert_eq!(metric_of(&registry, "mailbridge_smtp_sent_bucket"), None);
}

#[test]
fn query_labels_exist() {
    let known = readme_labels();
    let dashboard = parse_dashboard();
    let panels = dashboard["panels"].as_array().unwrap();
    let targets = panels.iter().flat_map(|panel| panel["targets"].as_array());
    let mut queries: Vec<String> = targets
        .flatten()
        .map(|target| target["expr"].as_str().unwrap().to_owned())
        .collect();
    queries.extend(rule_queries());

    for query in &queries {
        let mut allowed: BTreeSet<String> = SCRAPE_LABELS.iter().map(|l| l.to_string()).collect();
        for name in metric_names(query) {
            let base = HISTOGRAM_SUFFIXES
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix).filter(|b| known.contains_key(*b)))
                .unwrap_or(&name);
            allowed.extend(known.get(base).into_iter().flatten().cloned());
        }

        let unknown: Vec<_> = query_labels(query)
            .into_iter()
            .filter(|l| !allowed.contains(l))
            .collect();

        assert!(
            unknown.is_empty(),
            "labels {unknown:?} unknown in `{query}`"
        );
    }
}

#[test]
fn query_labels_parsed() {
    let query = r#"sum by (pipeline, le) (rate(x_bucket{job=~"$job", result!="success"}[5m]))"#;

    let labels = query_labels(query);

    let expected = ["job", "le", "pipeline", "result"].map(str::to_owned);
    assert_eq!(labels, BTreeSet::from(expected));
}

#[test]
fn readme_metrics_registered() {
    let registry = product_registry();
    let listed = readme_metrics();

    let unknown: Vec<_> = listed
        .iter()
        .filter(|name| !is_registered(&registry, name))
        .collect();

    assert!(listed.len() >= 20, "README lists only {listed:?}");
    assert!(
        unknown.is_empty(),
        "README lists unknown metrics: {unknown:?}"
    );
}

#[test]
fn readme_metrics_monitored() {
    let registry = product_registry();
    let mut queries = dashboard_queries(&parse_dashboard());
    queries.extend(rule_queries());
    let used = used_metrics(&registry, &queries);
    let mut expected = readme_metrics();
    expected.extend(PROCESS_METRICS.iter().map(|name| name.to_string()));

    let missing: Vec<_> = expected
        .iter()
        .filter(|name| !used.contains(*name) && !NOT_MONITORED.contains(&name.as_str()))
        .collect();

    assert!(
        missing.is_empty(),
        "neither charted nor alerted on: {missing:?}"
    );
}

#[test]
fn dashboard_uses_datasource_variable() {
    let dashboard = parse_dashboard();
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    let source = variables.iter().find(|v| v["type"] == "datasource");
    let source = source.expect("a data source variable");
    let reference = format!("${{{}}}", source["name"].as_str().unwrap());

    assert_eq!(source["query"], "prometheus");
    for panel in dashboard["panels"].as_array().unwrap() {
        let title = &panel["title"];
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], reference.as_str(), "{title}");
        for target in panel["targets"].as_array().expect("targets") {
            assert_eq!(target["datasource"]["uid"], reference.as_str(), "{title}");
        }
    }
}

#[test]
fn dashboard_panels_laid_out() {
    let dashboard = parse_dashboard();
    let panels = dashboard["panels"].as_array().unwrap();
    let mut ids = BTreeSet::new();

    for panel in panels {
        let title = &panel["title"];
        let grid = &panel["gridPos"];
        let right = grid["x"].as_u64().unwrap() + grid["w"].as_u64().unwrap();
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "{title}: id repeats"
        );
        assert!(right <= 24, "{title}: wider than the 24 grid columns");
        assert!(!title.as_str().unwrap().is_empty(), "a panel has no title");
    }
}

#[test]
fn alert_rules_complete() {
    let alerts = rule_values("alert");
    let names: BTreeSet<_> = alerts.iter().collect();

    for key in ["expr", "for", "severity", "summary", "description"] {
        let values = rule_values(key);
        assert_eq!(values.len(), alerts.len(), "rules without `{key}`");
        assert!(values.iter().all(|v| !v.is_empty()), "an empty `{key}`");
    }
    assert_eq!(names.len(), alerts.len(), "alert names repeat");
    assert!(alerts.len() >= 9, "only {} rules", alerts.len());
}
