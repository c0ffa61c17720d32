//! The status event of an outbound request (`schemas/outbound-status.v1.json`):
//! one per request, when the pipeline has a status target.

use serde::{Deserialize, Serialize};

/// Name of the status event schema, sent as the Kafka `schema` header and
/// the AMQP `type` property.
pub const STATUS_SCHEMA: &str = "mailbridge.outbound-status.v1";

/// Final outcome of a send request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusKind {
    /// The SMTP server accepted the mail.
    Sent,
    /// The request went to the dead-letter target.
    Failed,
}

/// An SMTP reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmtpReply {
    /// Three-digit reply code.
    pub code: u16,
    /// Enhanced status code of RFC 3463, such as `2.0.0`.
    pub enhanced: Option<String>,
    /// Text of the reply, lines joined by a space.
    pub text: String,
}

/// A recipient the server refused while it accepted others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedRecipient {
    /// The envelope address.
    pub address: String,
    /// The server's reply to its RCPT TO.
    pub reply: SmtpReply,
}

/// One status event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboundStatus {
    /// `sent` or `failed`.
    pub status: StatusKind,
    /// The request's `id`, when it had one.
    pub id: Option<String>,
    /// Name of the outbound pipeline.
    pub pipeline: String,
    /// Message-ID of the mail, with angle brackets; null when the request
    /// failed before the message was built.
    pub message_id: Option<String>,
    /// When the outcome was decided, RFC 3339 in UTC.
    pub at: String,
    /// Send attempts made.
    pub attempts: u32,
    /// The server's final reply, when there was one.
    pub smtp: Option<SmtpReply>,
    /// Error kind of a failure, such as `invalid_header_value`.
    pub reason: Option<String>,
    /// Whether a failure would fail again without a change.
    pub permanent: bool,
    /// Human-readable description of a failure.
    pub detail: Option<String>,
    /// Recipients refused while the mail went to the others.
    pub rejected_recipients: Vec<RejectedRecipient>,
}

impl OutboundStatus {
    /// Returns the event as JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a status event serializes")
    }
}
