//! Checks across pipelines: an inbound pipeline must not publish where an
//! outbound pipeline on the same broker consumes, or the outbound pipeline
//! would read received mail as send requests, and two coordinated inbound
//! pipelines on one broker must not share a coordination group, or each
//! would watch only some of their mailboxes.

use super::inbound::Inbound;
use super::outbound::Outbound;
use super::reader::Table;
use super::values::Invalid;

/// Records a problem for each inbound pipeline that publishes to the topic
/// or queue of an outbound pipeline on the same broker. Pipelines that
/// failed to read are skipped, because their problems are already recorded.
///
/// NOTE: Brokers are compared by name, so two broker tables for the same
/// cluster are not caught. A named AMQP exchange routes by bindings that
/// the configuration does not contain, so only the default exchange `""`,
/// which routes by queue name, is checked.
pub(crate) fn check(
    root: &Table<'_>,
    inbound: &[(String, Option<Inbound>)],
    outbound: &[(String, Option<Outbound>)],
) {
    check_groups(root, inbound);
    for (inbound_name, publisher) in inbound {
        let Some(publisher) = publisher else { continue };
        for (outbound_name, consumer) in outbound {
            let Some(consumer) = consumer else { continue };
            if let Some(key) = conflicting_key(publisher, consumer) {
                report(root, inbound_name, key, outbound_name);
            }
        }
    }
}

/// Names the key of `inbound` that targets the topic or queue that
/// `outbound` consumes, if there is one.
fn conflicting_key(inbound: &Inbound, outbound: &Outbound) -> Option<&'static str> {
    if inbound.broker.as_ref() != Some(&outbound.broker) {
        return None;
    }
    if inbound.topic.is_some() && inbound.topic == outbound.topic {
        return Some("topic");
    }

    let default_exchange = inbound.exchange.as_deref() == Some("");
    let same_queue = inbound.routing_key.is_some() && inbound.routing_key == outbound.queue;
    (default_exchange && same_queue).then_some("routing_key")
}

fn report(root: &Table<'_>, inbound_name: &str, key: &str, outbound_name: &str) {
    let path = ["inbound", inbound_name, key];
    let Some(value) = root.value_at(&path) else {
        return;
    };
    let (target, fix) = match key {
        "topic" => ("topic", "publish to another topic"),
        _ => ("queue", "route to another queue"),
    };

    let reason = format!(
        "is the request {target} of outbound pipeline `{outbound_name}` on the same broker"
    );
    let fix = format!("{fix}, or the outbound pipeline reads received mail as send requests");
    let path = path.map(str::to_owned);
    let invalid = Invalid::new(reason).with_fix(Some(fix));
    root.cx().reject(&path, value, true, invalid);
}

/// Records a problem for each coordinated inbound pipeline whose
/// coordination group an earlier one on the same broker already uses.
fn check_groups(root: &Table<'_>, inbound: &[(String, Option<Inbound>)]) {
    let read: Vec<(&String, &Inbound)> = inbound
        .iter()
        .filter_map(|(name, pipeline)| Some((name, pipeline.as_ref()?)))
        .filter(|(_, pipeline)| pipeline.coordinated())
        .collect();
    for (index, (name, pipeline)) in read.iter().enumerate() {
        let earlier = read[..index].iter().find(|(_, other)| {
            other.broker == pipeline.broker
                && other.coordination_group == pipeline.coordination_group
        });
        let Some((other_name, _)) = earlier else {
            continue;
        };
        let group = pipeline.coordination_group.as_deref().unwrap_or_default();
        let (key, value) = match root.value_at(&["inbound", name, "coordination_group"]) {
            Some(value) => ("coordination_group", value),
            None => match root.value_at(&["inbound", name, "coordination"]) {
                Some(value) => ("coordination", value),
                None => continue,
            },
        };
        let reason = format!(
            "coordination group {group:?} is also used by inbound pipeline `{other_name}` on the \
             same broker, so the two would share out each other's mailboxes"
        );
        let fix = "give each pipeline its own coordination_group".to_owned();
        let path = ["inbound", name.as_str(), key].map(str::to_owned);
        root.cx()
            .reject(&path, value, true, Invalid::new(reason).with_fix(Some(fix)));
    }
}
