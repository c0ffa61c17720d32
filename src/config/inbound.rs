//! `[inbound.NAME]`: a pipeline that publishes new mail of IMAP mailboxes
//! to a broker, or to standard output as JSON Lines.

use std::num::{NonZeroU32, NonZeroU64, NonZeroUsize};
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
        /// IMAP IDLE push (RFC 2177), or a check every `poll_interval`
        /// on a server that does not offer IDLE.
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
        Keep = "keep",
        /// Adds the `\Seen` flag.
        MarkSeen = "mark_seen",
        /// Adds the IMAP keyword `keyword`.
        AddKeyword = "add_keyword",
        /// Moves the mail to `move_to`.
        Move = "move",
        /// Deletes the mail (sets `\Deleted` and expunges it).
        Delete = "delete",
    }
}

choice! {
    /// Mail a mailbox's first watch publishes, when it has no checkpoint.
    pub enum StartFrom {
        /// Every mail already in the mailbox, then new mail.
        All = "all",
        /// Mail without the `\Seen` flag, then new mail.
        Unseen = "unseen",
        /// Only mail that arrives after the start.
        New = "new",
    }
}

choice! {
    /// Policy for a UIDVALIDITY change, which makes the stored UIDs
    /// meaningless (the mailbox was recreated or restored).
    pub enum UidvalidityChange {
        /// Publishes only mail whose Message-ID (or content hash, without
        /// one) was not published from this mailbox before.
        SkipKnown = "skip_known",
        /// Publishes every mail of the mailbox again; consumers drop
        /// repeats by `message_id` or `content_sha256`.
        Republish = "republish",
    }
}

choice! {
    /// Sharing of the pipeline's mailboxes among replicas of mailbridge.
    pub enum Coordination {
        /// This process watches every mailbox and keeps the checkpoints in
        /// its state directory.
        None = "none",
        /// Replicas share the mailboxes through the pipeline's broker: a
        /// Kafka consumer group, or one RabbitMQ single-active-consumer
        /// queue per mailbox. Each mailbox has one watcher at a time, and
        /// the checkpoints live in the broker.
        Broker = "broker",
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
    /// Longest time one IDLE command lasts before it is renewed; RFC 2177
    /// asks clients to renew within 29 minutes. Default: 25m.
    #[serde(with = "humantime_serde")]
    pub idle_interval: Duration,
    /// Longest silence from the server, during IDLE or a command, before
    /// the connection is checked and, without an answer, reconnected.
    /// Default: 5m.
    #[serde(with = "humantime_serde")]
    pub liveness_timeout: Duration,
    /// Mail published by a mailbox's first watch. Default: `all`.
    pub start_from: StartFrom,
    /// Largest number of mails fetched, published and acknowledged
    /// together. Default: 100.
    pub batch_size: NonZeroUsize,
    /// Action taken on a published mail. Default: `keep`.
    pub after_publish: AfterPublish,
    /// Mailbox that `after_publish = "move"` moves mail to, or a
    /// special-use attribute of RFC 6154 such as `\Archive`, which each
    /// session resolves to the mailbox that carries it. Required with
    /// `move`; it must not be a watched mailbox.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub move_to: Option<String>,
    /// IMAP keyword that `after_publish = "add_keyword"` sets. Default:
    /// `$MailbridgePublished`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keyword: Option<String>,
    /// Policy for a UIDVALIDITY change. Default: `skip_known`.
    pub on_uidvalidity_change: UidvalidityChange,
    /// Largest attachment, in bytes, whose content is included as base64.
    /// Default: 0, which includes no attachment content.
    pub attachment_bytes: u64,
    /// Largest mail, in bytes, whose raw form is included as base64.
    /// Default: 0, which never includes it.
    pub raw_bytes: u64,
    /// Size in bytes past which only a mail's metadata is published, with
    /// `truncated = true`. Default: 26214400 (25 MiB).
    pub max_message_bytes: u64,
    /// Largest sum of RFC822.SIZE, in bytes, of the mails fetched in one
    /// batch. A single mail above it, up to `max_message_bytes`, is fetched
    /// in a batch of its own. Default: 33554432 (32 MiB).
    pub max_batch_bytes: NonZeroU64,
    /// Whether the queue named by `routing_key` is declared (durable) on
    /// the default AMQP exchange at start. Default: false.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub declare: bool,
    /// Sharing of the mailboxes among replicas. Default: `none`.
    pub coordination: Coordination,
    /// Name of the Kafka consumer group, and prefix of the coordination
    /// topics or queues, with `coordination = "broker"`. Default:
    /// `mailbridge-inbound-NAME`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coordination_group: Option<String>,
    /// Partitions of the Kafka assignment topic when mailbridge creates
    /// it. Default: 60.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coordination_partitions: Option<NonZeroU32>,
}

impl Inbound {
    /// Returns whether replicas share the mailboxes.
    pub fn coordinated(&self) -> bool {
        self.coordination == Coordination::Broker
    }
}

/// Default of `coordination_partitions`.
pub const DEFAULT_COORDINATION_PARTITIONS: NonZeroU32 = NonZeroU32::new(60).unwrap();

/// Default of `coordination_group` for pipeline `name`.
pub fn default_coordination_group(name: &str) -> String {
    format!("mailbridge-inbound-{name}")
}

/// Longest Kafka topic name (Kafka's own limit).
const TOPIC_NAME_MAX: usize = 249;
/// Longest AMQP queue name in bytes (AMQP 0-9-1 short string).
const QUEUE_NAME_MAX: usize = 255;
/// Maximum length of a suffix added to the group: `.checkpoints`,
/// `.checkpoint.`.
const GROUP_SUFFIX_MAX: usize = ".checkpoint.".len();

/// Default of `max_batch_bytes`: 32 MiB.
const DEFAULT_MAX_BATCH_BYTES: NonZeroU64 = NonZeroU64::new(32 * 1024 * 1024).unwrap();

/// Default of `keyword`.
pub const DEFAULT_KEYWORD: &str = "$MailbridgePublished";

/// Special-use attributes of RFC 6154 that `move_to` may name instead of
/// a mailbox.
pub const SPECIAL_USES: [&str; 7] = [
    "\\All",
    "\\Archive",
    "\\Drafts",
    "\\Flagged",
    "\\Junk",
    "\\Sent",
    "\\Trash",
];

/// Returns whether `move_to` names a special-use attribute rather than a
/// mailbox: the value starts with `\`.
pub fn is_special_use(move_to: &str) -> bool {
    move_to.starts_with('\\')
}

/// Destination keys of an inbound pipeline.
#[derive(Default)]
struct Target {
    topic: Option<String>,
    exchange: Option<String>,
    routing_key: Option<String>,
}

/// Reads one `[inbound.NAME]` table.
pub(crate) fn read(mut table: Table<'_>, name: &str, refs: &Refs) -> Option<Inbound> {
    let account = refs.account(&mut table, Protocol::Imap);
    let mailboxes = table
        .get::<Vec<String>>("mailboxes")
        .map(|names| names.iter().map(|name| canonical_mailbox(name)).collect());
    let mailboxes = table.check("mailboxes", mailboxes, |names: &Vec<String>| {
        check_mailboxes(names)
    });
    let mailboxes = mailboxes.unwrap_or_else(|| vec!["INBOX".to_owned()]);
    let broker = refs.broker(&mut table, false);
    let target = read_target(&mut table, &broker);
    let mode = table.get::<Mode>("mode").unwrap_or(Mode::Idle);
    let poll_interval = table.get::<Duration>("poll_interval");
    let idle_interval = table.get_checked("idle_interval", check_idle_interval);
    let liveness_timeout = table.get::<Duration>("liveness_timeout");
    let start_from = table.get::<StartFrom>("start_from");
    let batch_size = table.get::<NonZeroUsize>("batch_size");
    let after_publish = read_after_publish(&mut table, &broker);
    let move_to = read_move_to(&mut table, after_publish, &mailboxes);
    let keyword = read_keyword(&mut table, after_publish);
    let on_change = table.get::<UidvalidityChange>("on_uidvalidity_change");
    let sizes = read_sizes(&mut table);
    let max_batch_bytes = table.get::<NonZeroU64>("max_batch_bytes");
    let declare = read_declare(&mut table, &broker, target.exchange.as_deref());
    let coordination = read_coordination(&mut table, name, &broker, &mailboxes);
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
        idle_interval: idle_interval.unwrap_or(Duration::from_secs(25 * 60)),
        liveness_timeout: liveness_timeout.unwrap_or(Duration::from_secs(5 * 60)),
        start_from: start_from.unwrap_or(StartFrom::All),
        batch_size: batch_size.unwrap_or(NonZeroUsize::new(100).unwrap()),
        after_publish,
        move_to,
        keyword,
        on_uidvalidity_change: on_change.unwrap_or(UidvalidityChange::SkipKnown),
        attachment_bytes: sizes[0].unwrap_or(0),
        raw_bytes: sizes[1].unwrap_or(0),
        max_message_bytes: sizes[2].unwrap_or(25 * 1024 * 1024),
        max_batch_bytes: max_batch_bytes.unwrap_or(DEFAULT_MAX_BATCH_BYTES),
        declare,
        coordination: coordination.mode,
        coordination_group: coordination.group,
        coordination_partitions: coordination.partitions,
    })
}

/// The coordination keys of a pipeline.
struct CoordinationKeys {
    mode: Coordination,
    group: Option<String>,
    partitions: Option<NonZeroU32>,
}

/// Reads `coordination`, `coordination_group` and
/// `coordination_partitions`. The group must make valid topic names on
/// Kafka and queue names of at most 255 bytes with every mailbox on AMQP.
fn read_coordination(
    table: &mut Table<'_>,
    name: &str,
    broker: &BrokerRef,
    mailboxes: &[String],
) -> CoordinationKeys {
    let mode = table
        .get::<Coordination>("coordination")
        .unwrap_or(Coordination::None);
    let kind = broker.kind();
    if mode == Coordination::Broker && matches!(broker, BrokerRef::Absent) {
        let invalid = Invalid::new("needs a broker, whose group or queues the replicas share");
        let fix = "set broker, or remove coordination to watch every mailbox in this process";
        table.reject("coordination", invalid.with_fix(Some(fix.into())));
    }
    if mode != Coordination::Broker {
        for key in ["coordination_group", "coordination_partitions"] {
            let invalid = Invalid::new("applies only with coordination = \"broker\"");
            table.reject(key, invalid.with_fix(Some("remove it".into())));
        }
        return CoordinationKeys {
            mode,
            group: None,
            partitions: None,
        };
    }
    if kind == Some(BrokerKind::Amqp) && table.contains("coordination_partitions") {
        let invalid = Invalid::new("applies only to Kafka brokers");
        let fix = "remove it: RabbitMQ has one lease queue per mailbox";
        table.reject(
            "coordination_partitions",
            invalid.with_fix(Some(fix.into())),
        );
    }
    let partitions = table.get::<NonZeroU32>("coordination_partitions");
    let group = table.get::<String>("coordination_group");
    let checked = group
        .clone()
        .unwrap_or_else(|| default_coordination_group(name));
    if let Err(invalid) = check_group(&checked, kind, mailboxes) {
        match group.is_some() {
            true => table.reject("coordination_group", invalid),
            false => {
                let fix = invalid.fix.clone().unwrap_or_default();
                let fix = format!("set coordination_group: {fix}");
                let invalid = Invalid::new(format!(
                    "the default coordination_group {checked:?} {}",
                    invalid.reason
                ))
                .with_fix(Some(fix));
                table.reject("coordination", invalid);
            }
        }
    }

    CoordinationKeys {
        mode,
        group: Some(checked),
        partitions: Some(partitions.unwrap_or(DEFAULT_COORDINATION_PARTITIONS)),
    }
}

fn check_group(group: &str, kind: Option<BrokerKind>, mailboxes: &[String]) -> Result<(), Invalid> {
    let legal = |c: char| c.is_ascii_alphanumeric() || "._-".contains(c);
    if group.is_empty() {
        return Err(Invalid::new("is empty").with_fix(Some("name the group".into())));
    }
    if let Some(c) = group.chars().find(|c| !legal(*c)) {
        return Err(Invalid::new(format!(
            "contains {c:?}, which a Kafka topic name cannot hold"
        ))
        .with_fix(Some("use letters, digits, `.`, `_` and `-`".into())));
    }
    if kind == Some(BrokerKind::Amqp) {
        let longest = mailboxes.iter().max_by_key(|mailbox| mailbox.len());
        if let Some(mailbox) = longest {
            let queue = group.len() + GROUP_SUFFIX_MAX + mailbox.len();
            if queue > QUEUE_NAME_MAX {
                return Err(Invalid::new(format!(
                    "makes the queue name {group}.checkpoint.{mailbox} {queue} bytes long, \
                     over the {QUEUE_NAME_MAX} bytes AMQP allows"
                ))
                .with_fix(Some(
                    "choose a shorter coordination_group, or watch that mailbox in a \
                     pipeline without coordination"
                        .into(),
                )));
            }
        }
    }
    let longest = TOPIC_NAME_MAX - GROUP_SUFFIX_MAX;
    match group.len() > longest {
        true => Err(Invalid::new(format!(
            "is {} bytes long; the topic or queue names made from it allow {longest}",
            group.len()
        ))
        .with_fix(Some("choose a shorter name".into()))),
        false => Ok(()),
    }
}

/// Reads `after_publish`. Standard output cannot confirm delivery, since
/// a write into a pipe returns before anyone reads it, so the actions that
/// remove a mail from its mailbox need a broker. A rejected action is still
/// returned, so that `move_to` is checked against it.
fn read_after_publish(table: &mut Table<'_>, broker: &BrokerRef) -> AfterPublish {
    let action = table
        .get::<AfterPublish>("after_publish")
        .unwrap_or(AfterPublish::Keep);

    let removes = matches!(action, AfterPublish::Move | AfterPublish::Delete);
    if removes && matches!(broker, BrokerRef::Absent) {
        let invalid = Invalid::new(
            "removes mail from the mailbox, but standard output cannot confirm that \
             anyone read it",
        );
        let fix = "set broker, or use keep, mark_seen or add_keyword";
        table.reject("after_publish", invalid.with_fix(Some(fix.into())));
    }

    action
}

fn check_idle_interval(interval: &Duration) -> Result<(), Invalid> {
    match *interval > Duration::from_secs(29 * 60) {
        true => Err(
            Invalid::new("is longer than the 29 minutes RFC 2177 allows")
                .with_fix(Some("set 25m or less".into())),
        ),
        false => Ok(()),
    }
}

fn read_sizes(table: &mut Table<'_>) -> [Option<u64>; 3] {
    ["attachment_bytes", "raw_bytes", "max_message_bytes"].map(|key| table.get::<u64>(key))
}

/// Reads `keyword`, an IMAP flag keyword: an atom of RFC 3501 without `\`.
fn read_keyword(table: &mut Table<'_>, after_publish: AfterPublish) -> Option<String> {
    if after_publish != AfterPublish::AddKeyword {
        let invalid = Invalid::new("applies only with after_publish = \"add_keyword\"");
        table.reject("keyword", invalid.with_fix(Some("remove it".into())));
        return None;
    }
    let keyword = table.get_checked("keyword", |keyword: &String| check_keyword(keyword));

    Some(keyword.unwrap_or_else(|| DEFAULT_KEYWORD.to_owned()))
}

fn check_keyword(keyword: &str) -> Result<(), Invalid> {
    let special = |c: char| "(){ %*\"\\]".contains(c) || c.is_ascii_control() || !c.is_ascii();
    match keyword.chars().find(|c| special(*c)) {
        Some(c) => Err(
            Invalid::new(format!("contains {c:?}, which an IMAP keyword cannot hold"))
                .with_fix(Some("use letters, digits, `$`, `-`, `_` and `.`".into())),
        ),
        None => Ok(()),
    }
}

fn read_declare(table: &mut Table<'_>, broker: &BrokerRef, exchange: Option<&str>) -> bool {
    let applies = broker.kind() == Some(BrokerKind::Amqp) && exchange == Some("");
    if !applies && table.contains("declare") {
        let invalid = Invalid::new("applies only to AMQP pipelines on the default exchange \"\"");
        table.reject("declare", invalid.with_fix(Some("remove it".into())));
        return false;
    }

    table.get::<bool>("declare").unwrap_or(false)
}

/// Returns the name the server uses: `INBOX` is the one mailbox name that
/// IMAP compares without regard to case (RFC 3501 section 5.1), so
/// `inbox` and `Inbox` name it too.
pub(crate) fn canonical_mailbox(name: &str) -> String {
    match name.eq_ignore_ascii_case("INBOX") {
        true => "INBOX".to_owned(),
        false => name.to_owned(),
    }
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
    let target = table
        .get::<String>("move_to")
        .map(|name| match is_special_use(&name) {
            true => canonical_special_use(&name).unwrap_or(name),
            false => canonical_mailbox(&name),
        });
    table.check("move_to", target, |target: &String| {
        if is_special_use(target) {
            return check_special_use(target);
        }
        match mailboxes.contains(target) {
            // A moved mail would show up as new in the watched mailbox again.
            true => Err(Invalid::new("is one of the watched mailboxes")),
            false => Ok(()),
        }
    })
}

/// Returns the spelling of RFC 6154 for a known attribute, which servers
/// compare without regard to case.
fn canonical_special_use(name: &str) -> Option<String> {
    SPECIAL_USES
        .iter()
        .find(|known| known.eq_ignore_ascii_case(name))
        .map(|known| (*known).to_owned())
}

fn check_special_use(name: &str) -> Result<(), Invalid> {
    match SPECIAL_USES.contains(&name) {
        true => Ok(()),
        false => Err(
            Invalid::new(format!("{name} is not a special-use attribute of RFC 6154")).with_fix(
                Some(format!(
                    "use one of {}, or a mailbox name",
                    SPECIAL_USES.join(", ")
                )),
            ),
        ),
    }
}
