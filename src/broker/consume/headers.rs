//! Extra headers on published records. The outbound pipeline's
//! dead-letter and status records carry the reason and the outcome in
//! them, next to the unchanged payload.

use crate::broker::Record;

/// Extra headers of one record, as name and value, in order. The Kafka
/// publisher adds them as record headers after `schema` and
/// `content-type`, and the AMQP publisher as entries of the message's
/// headers table, where a later entry with the same name replaces an
/// earlier one. AMQP limits a header name to 255 bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<(String, String)>);

/// A record to publish and the extra headers that go with it.
pub(in crate::broker) trait Outgoing: Sync {
    /// Returns the record.
    fn record(&self) -> &Record;

    /// Returns the extra headers, none for a plain record.
    fn headers(&self) -> &[(String, String)];
}

impl Outgoing for Record {
    fn record(&self) -> &Record {
        self
    }

    fn headers(&self) -> &[(String, String)] {
        &[]
    }
}

impl Outgoing for (Record, Headers) {
    fn record(&self) -> &Record {
        &self.0
    }

    fn headers(&self) -> &[(String, String)] {
        &self.1.0
    }
}
