//! Kafka-protocol broker for the local test stack.
//!
//! No Kafka distribution can be installed from the package registries this
//! project builds with, so the stack runs librdkafka's mock cluster: it speaks
//! the Kafka protocol over TCP to any client (produce, fetch, consumer groups
//! with committed offsets, idempotence, headers, compression). Its limits, as
//! of librdkafka 2.12: no Admin API (topics are created here, or by auto-create
//! with 4 partitions), about 5 MB kept per partition, and each group join waits
//! about 3 s.
//!
//! The cluster binds random loopback ports. So that configurations can name a
//! fixed address, a forwarder on `--listen` relays bootstrap connections to
//! the first broker; clients then reach the brokers at the addresses the
//! cluster's metadata returns. The bootstrap address is also written to a
//! file for `scripts/stack env`. A small HTTP control listener creates topics
//! and takes brokers down and up for fault tests:
//!
//! - `POST /topics/NAME?partitions=N` creates a topic (replication factor 1);
//! - `POST /brokers/ID/down` and `POST /brokers/ID/up` (`ID` -1 means all);
//! - `GET /` returns the bootstrap address.

#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;

use clap::Parser;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

#[derive(Parser)]
#[command(about = "Kafka-protocol mock broker for local tests")]
struct Args {
    /// Number of brokers in the cluster.
    #[arg(long, default_value_t = 1)]
    brokers: i32,

    /// Topic to create at start, as NAME or NAME:PARTITIONS (repeatable).
    #[arg(long = "topic")]
    topics: Vec<String>,

    /// File that receives the bootstrap address once the cluster is up.
    #[arg(long)]
    bootstrap_file: PathBuf,

    /// Fixed bootstrap address, forwarded to the first broker.
    #[arg(long, default_value = "127.0.0.1:9092")]
    listen: SocketAddr,

    /// Address of the HTTP control listener.
    #[arg(long, default_value = "127.0.0.1:9093")]
    control: SocketAddr,
}

type Cluster = MockCluster<'static, DefaultProducerContext>;

fn main() {
    let args = Args::parse();
    if let Err(message) = run(&args) {
        eprintln!("kafka-mock: {message}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), String> {
    let cluster = MockCluster::new(args.brokers)
        .map_err(|err| format!("failed to start the mock cluster: {err}"))?;
    for spec in &args.topics {
        let (name, partitions) = parse_topic(spec)?;
        create_topic(&cluster, name, partitions)?;
    }

    let listener = TcpListener::bind(args.control)
        .map_err(|err| format!("failed to bind control address {}: {err}", args.control))?;
    let brokers = cluster.bootstrap_servers();
    let first_broker = brokers.split(',').next().unwrap_or_default().to_string();
    let forwarder = TcpListener::bind(args.listen)
        .map_err(|err| format!("failed to bind bootstrap address {}: {err}", args.listen))?;
    std::thread::spawn(move || forward(forwarder, first_broker));

    let bootstrap = args.listen.to_string();
    std::fs::write(&args.bootstrap_file, format!("{bootstrap}\n"))
        .map_err(|err| format!("failed to write {}: {err}", args.bootstrap_file.display()))?;
    println!(
        "bootstrap {bootstrap} brokers {brokers} control {}",
        args.control
    );

    for stream in listener.incoming() {
        match stream {
            Ok(stream) => serve(&cluster, stream),
            Err(err) => eprintln!("kafka-mock: control accept failed: {err}"),
        }
    }
    Ok(())
}

/// Relays each connection to `target` byte for byte, in both directions.
fn forward(listener: TcpListener, target: String) {
    for client in listener.incoming() {
        let Ok(client) = client else { continue };
        let Ok(broker) = TcpStream::connect(&target) else {
            eprintln!("kafka-mock: failed to reach broker {target} for a bootstrap connection");
            continue;
        };
        let (Ok(client_copy), Ok(broker_copy)) = (client.try_clone(), broker.try_clone()) else {
            continue;
        };
        std::thread::spawn(move || relay(client, broker_copy));
        std::thread::spawn(move || relay(broker, client_copy));
    }
}

fn relay(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(std::net::Shutdown::Both);
}

fn parse_topic(spec: &str) -> Result<(&str, i32), String> {
    match spec.split_once(':') {
        None => Ok((spec, 1)),
        Some((name, count)) => count
            .parse()
            .map(|partitions| (name, partitions))
            .map_err(|_| format!("invalid partition count in --topic {spec:?}: expected NAME:N")),
    }
}

fn create_topic(cluster: &Cluster, name: &str, partitions: i32) -> Result<(), String> {
    cluster
        .create_topic(name, partitions, 1)
        .map_err(|err| format!("failed to create topic {name:?}: {err}"))
}

/// Handles one control request and closes the connection.
fn serve(cluster: &Cluster, mut stream: TcpStream) {
    let mut request_line = String::new();
    if BufReader::new(&stream)
        .read_line(&mut request_line)
        .is_err()
    {
        return;
    }
    let (status, body) = handle(cluster, &request_line);
    let reply = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(reply.as_bytes());
}

fn handle(cluster: &Cluster, request_line: &str) -> (&'static str, String) {
    let mut words = request_line.split_whitespace();
    let method = words.next().unwrap_or_default();
    let target = words.next().unwrap_or_default();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();

    let result = match (method, segments.as_slice()) {
        ("GET", [""]) => Ok(cluster.bootstrap_servers()),
        ("POST", ["topics", name]) => query_partitions(query)
            .and_then(|partitions| create_topic(cluster, name, partitions))
            .map(|()| format!("created {name}")),
        ("POST", ["brokers", id, action]) => set_broker(cluster, id, action),
        _ => {
            return (
                "404 Not Found",
                format!("unknown request {method} {target}\n"),
            );
        }
    };
    match result {
        Ok(body) => ("200 OK", format!("{body}\n")),
        Err(message) => ("400 Bad Request", format!("{message}\n")),
    }
}

fn query_partitions(query: &str) -> Result<i32, String> {
    let value = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("partitions="))
        .unwrap_or("1");
    value
        .parse()
        .map_err(|_| format!("invalid partitions={value}: expected an integer"))
}

fn set_broker(cluster: &Cluster, id: &str, action: &str) -> Result<String, String> {
    let broker: i32 = id
        .parse()
        .map_err(|_| format!("invalid broker id {id:?}: expected an integer, -1 for all"))?;
    let outcome = match action {
        "down" => cluster.broker_down(broker),
        "up" => cluster.broker_up(broker),
        _ => {
            return Err(format!(
                "unknown broker action {action:?}: expected down or up"
            ));
        }
    };
    outcome
        .map(|()| format!("broker {broker} {action}"))
        .map_err(|err| format!("failed to set broker {broker} {action}: {err}"))
}
