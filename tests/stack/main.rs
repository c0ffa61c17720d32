//! Integration tests that prove the local server stack from Rust, with the
//! crates the product uses: the OAuth2 server, Dovecot over both TLS modes,
//! postfix submission with XOAUTH2, the Kafka-protocol broker and RabbitMQ.
//!
//! They need `scripts/stack up` and fail, never skip, when a server is
//! missing.

mod bridge;
mod mailbox;
mod records;
mod signin;
mod support;

mod accounts;
mod amqp;
mod assign_kafka;
mod authorize;
mod certificates;
mod check;
mod consume;
mod imap;
mod imap_session;
mod inbound;
mod kafka;
mod metrics;
mod oauth;
mod outbound;
mod publish;
mod secrets;
mod smtp;
mod smtp_transport;
mod token;
mod token_modes;
