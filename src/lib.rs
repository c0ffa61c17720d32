//! mailbridge connects mailboxes to message brokers. Inbound, it publishes
//! each new IMAP mail as a JSON document to Kafka or AMQP; outbound, it
//! consumes JSON send requests and submits them over SMTP. Both sides sign
//! in with OAuth2 (SASL XOAUTH2 or OAUTHBEARER).
//!
//! - [`config`] loads the TOML file and the `MAILBRIDGE_` environment
//!   variables, validates them and keeps secrets out of its output.
//! - [`auth`] builds SASL XOAUTH2 and OAUTHBEARER responses, resolves
//!   provider endpoints and scopes, classifies token errors and stores tokens.
//! - [`mail`] holds the serde types of the inbound and outbound documents.
//! - [`imap`] signs in to IMAP servers, fetches, idles and post-processes.
//! - [`smtp`] builds the MIME message of a send request and submits it
//!   over SMTP with OAuth2 sign-in.
//! - [`broker`] publishes to Kafka, AMQP or standard output.
//! - [`check`] diagnoses the connection, TLS, token and sign-in of accounts.
//! - [`pipeline`] joins a mailbox watcher to a publisher and acknowledges
//!   a mail only after the broker confirmed it.
//! - [`state`] writes the files of the state directory atomically.
//! - [`tls`] builds TLS client settings from platform roots and `ca_file`.
//! - [`telemetry`] registers the Prometheus metrics on a registry that the
//!   caller owns and records them.

#![forbid(unsafe_code)]

pub mod auth;
pub mod broker;
pub mod check;
pub mod config;
pub mod imap;
pub mod mail;
pub mod pipeline;
pub mod smtp;
pub mod state;
pub mod telemetry;
pub mod tls;
