//! `[inbound.NAME]`: a pipeline that publishes new mail of IMAP mailboxes
//! to a broker, or to standard output as JSON Lines.

use std::time::Duration;

use serde::Serialize;

use super::broker::BrokerKind;
use super::reader::Table;
use super::refs::{BrokerRef, Refs};
use super::server::Protocol;
use super::values::{Invalid, MaybeEmpty, choice};

choice! {
    /// Method of noticing new mail.
    pub enum Mode {
        /// IMAP IDLE push (RFC 2177).
        Idle = "idle",
        /// A check every `poll_interval`.
        Poll = "poll",
    }
}

choice! {
    /// Action taken on a mail once the broker confirmed its publication.
    pub enum AfterPublish {
        /// Nothing; the checkpoint alone keeps the mail from being
        /// published again.
        None = "none",
        /// Adds the `\Seen` flag.
        Flag = "flag",
        /// Moves the mail to `move_to`.
        Move = "move",
        /// Deletes the mail (sets `\Deleted` and expunges it).
        Delete = "delete",
    }
}

/// An inbound pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Inbound {
    /// Account whose mailboxes are watched; it needs an `imap` table.
    /// Required.
    pub account: String,
    /// Mailboxes watched. Default: `["INBOX"]`.
    pub mailboxes: Vec<String>,
    /// Broker the documents go to. Default: none, which writes JSON Lines
    /// to standard output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker: Option<String>,
    /// Kafka topic. Required with a Kafka broker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// AMQP exchange. Default with an AMQP broker: `""`, the default
    /// exchange, which routes by queue name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exchange: Option<String>,
    /// AMQP routing key. Required with the default exchange, where it is
    /// the queue name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routing_key: Option<String>,
    /// Method of noticing new mail. Default: `idle`.
    pub mode: Mode,
    /// Time between two checks in `poll` mode. Default: 60s.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Action taken on a published mail. Default: `none`.
    pub after_publish: AfterPublish,
    /// Mailbox that `after_publish = "move"` moves mail to. Required with
    /// `move`; it must not be a watched mailbox.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub move_to: Option<String>,
}

/// Destination keys of an inbound pipeline.
#[derive(Default)]
struct Target {
    topic: Option<String>,
    exchange: Option<String>,
    routing_key: Option<String>,
}

/// Reads one `[inbound.NAME]` table.
pub(crate) fn read(mut table: Table<'_>, refs: &Refs) -> Option<Inbound> {
    let account = refs.account(&mut table, Protocol::Imap);
    let mailboxes = table.get_checked("mailboxes", |names: &Vec<String>| check_mailboxes(names));
    let mailboxes = mailboxes.unwrap_or_else(|| vec!["INBOX".to_owned()]);
    let broker = refs.broker(&mut table, false);
    let target = read_target(&mut table, &broker);
    let mode = table.get::<Mode>("mode").unwrap_or(Mode::Idle);
    let poll_interval = table.get::<Duration>("poll_interval");
    let after_publish = table
        .get::<AfterPublish>("after_publish")
        .unwrap_or(AfterPublish::None);
    let move_to = read_move_to(&mut table, after_publish, &mailboxes);
    table.finish();

    Some(Inbound {
        account: account?,
        mailboxes,
        broker: broker.name()?,
        topic: target.topic,
        exchange: target.exchange,
        routing_key: target.routing_key,
        mode,
        poll_interval: poll_interval.unwrap_or(Duration::from_secs(60)),
        after_publish,
        move_to,
    })
}

fn check_mailboxes(names: &[String]) -> Result<(), Invalid> {
    if names.is_empty() {
        return Err(
            Invalid::new("list is empty").with_fix(Some("name at least one mailbox".into()))
        );
    }
    let duplicate = names
        .iter()
        .enumerate()
        .find(|(i, name)| names[..*i].contains(name));

    match duplicate {
        Some((_, name)) => Err(Invalid::new(format!("mailbox {name:?} is listed twice"))),
        None => Ok(()),
    }
}

fn read_target(table: &mut Table<'_>, broker: &BrokerRef) -> Target {
    match (broker, broker.kind()) {
        (BrokerRef::Absent, _) => {
            let fix = "set broker, or remove it to write JSON Lines to standard output";
            for key in ["topic", "exchange", "routing_key"] {
                let invalid = Invalid::new("applies only with a broker");
                table.reject(key, invalid.with_fix(Some(fix.into())));
            }
            Target::default()
        }
        (_, Some(BrokerKind::Kafka)) => read_kafka_target(table),
        (_, Some(BrokerKind::Amqp)) => read_amqp_target(table),
        // The broker reference is invalid, so only the values are checked.
        (_, None) => Target {
            topic: table.get("topic"),
            exchange: table
                .get::<MaybeEmpty>("exchange")
                .map(|exchange| exchange.0),
            routing_key: table.get("routing_key"),
        },
    }
}

fn read_kafka_target(table: &mut Table<'_>) -> Target {
    for key in ["exchange", "routing_key"] {
        let invalid = Invalid::new("applies only to AMQP brokers");
        table.reject(key, invalid.with_fix(Some("set topic instead".into())));
    }

    Target {
        topic: table.require("topic"),
        ..Target::default()
    }
}

fn read_amqp_target(table: &mut Table<'_>) -> Target {
    let fix = "set exchange and routing_key instead";
    table.reject(
        "topic",
        Invalid::new("applies only to Kafka brokers").with_fix(Some(fix.into())),
    );
    let exchange = table
        .get::<MaybeEmpty>("exchange")
        .map_or_else(String::new, |e| e.0);
    if exchange.is_empty() {
        table.required_for(
            "routing_key",
            "by the default exchange \"\", where it is the queue name",
        );
    }

    Target {
        topic: None,
        routing_key: table.get("routing_key"),
        exchange: Some(exchange),
    }
}

fn read_move_to(
    table: &mut Table<'_>,
    after_publish: AfterPublish,
    mailboxes: &[String],
) -> Option<String> {
    if after_publish != AfterPublish::Move {
        let invalid = Invalid::new("applies only with after_publish = \"move\"");
        table.reject("move_to", invalid.with_fix(Some("remove it".into())));
        return None;
    }

    table.required_for("move_to", "by after_publish = \"move\"");
    table.get_checked("move_to", |target: &String| {
        match mailboxes.contains(target) {
            // A moved mail would show up as new in the watched mailbox again.
            true => Err(Invalid::new("is one of the watched mailboxes")),
            false => Ok(()),
        }
    })
}
