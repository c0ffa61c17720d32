//! Reads the documents mailbridge published, for the demo and for manual
//! checks: `tap kafka BOOTSTRAP TOPIC COUNT` or `tap amqp URL QUEUE COUNT`.
//! It prints one line per document (`--json` prints the documents
//! themselves) and exits once COUNT arrived, or with status 1 after
//! `--timeout` seconds (default 60). `tap send BOOTSTRAP TOPIC KEY` sends
//! standard input as one Kafka record, such as a send request.

use std::process::ExitCode;
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions};
use lapin::types::FieldTable;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Message};
use serde_json::Value;

struct Args {
    kind: String,
    address: String,
    source: String,
    count: usize,
    json: bool,
    timeout: Duration,
}

fn parse_args() -> Option<Args> {
    let mut positional = Vec::new();
    let (mut json, mut timeout) = (false, Duration::from_secs(60));
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--json" => json = true,
            "--timeout" => timeout = Duration::from_secs(args.next()?.parse().ok()?),
            _ => positional.push(arg),
        }
    }
    let [kind, address, source, count] = <[String; 4]>::try_from(positional).ok()?;

    Some(Args {
        kind,
        address,
        source,
        count: count.parse().ok()?,
        json,
        timeout,
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().map(String::as_str) == Some("send") {
        return send(&argv[1..]).await;
    }
    let Some(args) = parse_args() else {
        eprintln!(
            "usage: tap kafka|amqp BOOTSTRAP|URL TOPIC|QUEUE COUNT [--json] [--timeout SECONDS]"
        );
        return ExitCode::from(64);
    };
    let read = async {
        match args.kind.as_str() {
            "kafka" => read_kafka(&args).await,
            "amqp" => read_amqp(&args).await,
            other => Err(format!("unknown broker kind {other:?}: use kafka or amqp")),
        }
    };

    match tokio::time::timeout(args.timeout, read).await {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(err)) => {
            eprintln!("tap: {err}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!(
                "tap: fewer than {} documents after {:?}",
                args.count, args.timeout
            );
            ExitCode::FAILURE
        }
    }
}

/// Sends standard input to a Kafka topic and waits for the confirmation.
async fn send(args: &[String]) -> ExitCode {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    use std::io::Read;

    let [bootstrap, topic, key] = args else {
        eprintln!("usage: tap send BOOTSTRAP TOPIC KEY < payload");
        return ExitCode::from(64);
    };
    let mut payload = Vec::new();
    if let Err(err) = std::io::stdin().read_to_end(&mut payload) {
        eprintln!("tap: failed to read standard input: {err}");
        return ExitCode::FAILURE;
    }
    let producer: FutureProducer = match ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .create()
    {
        Ok(producer) => producer,
        Err(err) => {
            eprintln!("tap: failed to create the Kafka producer: {err}");
            return ExitCode::FAILURE;
        }
    };
    let record = FutureRecord::to(topic).key(key).payload(&payload);
    match producer.send(record, Duration::from_secs(30)).await {
        Ok(delivery) => {
            println!(
                "sent to {topic} partition {} offset {}",
                delivery.partition, delivery.offset
            );
            ExitCode::SUCCESS
        }
        Err((err, _)) => {
            eprintln!("tap: failed to send to {topic}: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn read_kafka(args: &Args) -> Result<(), String> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &args.address)
        .set("group.id", format!("tap-{}", std::process::id()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|err| format!("failed to create the Kafka consumer: {err}"))?;
    consumer
        .subscribe(&[&args.source])
        .map_err(|err| format!("failed to subscribe to {}: {err}", args.source))?;
    for index in 1..=args.count {
        let message = consumer
            .recv()
            .await
            .map_err(|err| format!("failed to read from {}: {err}", args.source))?;
        let where_ = format!(
            "partition {} offset {}",
            message.partition(),
            message.offset()
        );
        show(args, index, &where_, message.payload().unwrap_or_default());
    }
    Ok(())
}

async fn read_amqp(args: &Args) -> Result<(), String> {
    let connection = lapin::Connection::connect(&args.address, Default::default())
        .await
        .map_err(|err| format!("failed to connect to AMQP: {err}"))?;
    let channel = connection
        .create_channel()
        .await
        .map_err(|err| format!("failed to open a channel: {err}"))?;
    let mut consumer = channel
        .basic_consume(
            &args.source,
            "tap",
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|err| format!("failed to consume from {}: {err}", args.source))?;
    for index in 1..=args.count {
        let delivery = consumer
            .next()
            .await
            .ok_or("the consumer was cancelled")?
            .map_err(|err| format!("failed to read from {}: {err}", args.source))?;
        let where_ = format!("delivery tag {}", delivery.delivery_tag);
        show(args, index, &where_, &delivery.data);
        delivery
            .ack(BasicAckOptions::default())
            .await
            .map_err(|err| format!("failed to ack: {err}"))?;
    }
    Ok(())
}

fn show(args: &Args, index: usize, where_: &str, payload: &[u8]) {
    if args.json {
        println!("{}", String::from_utf8_lossy(payload));
        return;
    }
    let Ok(document) = serde_json::from_slice::<Value>(payload) else {
        println!("{index:>3} {where_}: not JSON ({} bytes)", payload.len());
        return;
    };
    let text = |key: &str| document[key].as_str().unwrap_or("-").to_owned();
    let from = document["from"][0]["address"].as_str().unwrap_or("-");
    let attachments = document["attachments"].as_array().map_or(0, Vec::len);
    let warnings = document["warnings"].as_array().map_or(0, Vec::len);
    println!(
        "{index:>3} {where_}: uid {} from {from} subject {:?} attachments {attachments} warnings {warnings}",
        document["uid"],
        text("subject"),
    );
}
