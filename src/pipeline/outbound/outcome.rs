//! What happens once a request's fate is decided: a status event, and
//! for a failure the original payload on the dead-letter target with the
//! reason in its headers. A request is finished only after these records
//! were confirmed.

use std::time::Duration;

use tracing::{error, warn};

use super::Shared;
use super::send::reply_of;
use crate::broker::{Delivery, Headers};
use crate::broker::{Publisher, Record};
use crate::mail::outbound::Rejection;
use crate::mail::status::{
    OutboundStatus, RejectedRecipient, STATUS_SCHEMA, SmtpReply, StatusKind,
};
use crate::pipeline::backoff::Backoff;
use crate::smtp::transport::{Accepted, SmtpError};

/// Schema name of a dead-letter record: the original request.
const DEAD_LETTER_SCHEMA: &str = "mailbridge.outbound-mail.v1";

/// The fate of one request.
#[derive(Debug)]
pub enum Outcome {
    /// The server accepted the mail.
    Sent(OutboundStatus),
    /// The request goes to the dead-letter target.
    Failed(OutboundStatus),
    /// The process stopped before the request was decided.
    Interrupted,
}

impl Outcome {
    fn status(kind: StatusKind, id: Option<String>, message_id: Option<String>) -> OutboundStatus {
        OutboundStatus {
            status: kind,
            id,
            pipeline: String::new(),
            message_id,
            at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            attempts: 0,
            smtp: None,
            reason: None,
            permanent: false,
            detail: None,
            rejected_recipients: Vec::new(),
        }
    }

    pub(super) fn sent(
        id: Option<String>,
        message_id: String,
        accepted: Accepted,
        attempts: u32,
    ) -> Self {
        let mut status = Self::status(StatusKind::Sent, id, Some(message_id));
        status.attempts = attempts;
        status.smtp = Some(SmtpReply {
            code: accepted.code,
            enhanced: accepted.enhanced.clone(),
            text: accepted.text.clone(),
        });
        status.rejected_recipients = accepted
            .rejected_recipients
            .iter()
            .map(|(address, reply)| RejectedRecipient {
                address: address.clone(),
                reply: SmtpReply {
                    code: reply.code,
                    enhanced: reply.enhanced.clone(),
                    text: reply.text(),
                },
            })
            .collect();
        Self::Sent(status)
    }

    /// Returns the outcome of a request that failed validation or could not
    /// be built.
    pub(super) fn invalid(
        id: Option<String>,
        message_id: Option<String>,
        rejection: &Rejection,
    ) -> Self {
        let mut status = Self::status(StatusKind::Failed, id, message_id);
        status.reason = Some(rejection.reason.as_str().to_owned());
        status.permanent = true;
        status.detail = Some(rejection.to_string());
        Self::Failed(status)
    }

    /// Returns the outcome of a request the server rejected, or that kept
    /// failing transiently.
    pub(super) fn failed(
        id: Option<String>,
        message_id: Option<String>,
        err: &SmtpError,
        attempts: u32,
    ) -> Self {
        let mut status = Self::status(StatusKind::Failed, id, message_id);
        status.attempts = attempts;
        status.smtp = reply_of(err);
        status.reason = Some(err.kind().to_owned());
        status.permanent = !err.is_transient();
        let detail = match err.hint() {
            Some(hint) => format!("{err}; {hint}"),
            None => err.to_string(),
        };
        status.detail = Some(detail);
        Self::Failed(status)
    }
}

/// Publishes the records of `outcome`. `Ok(true)` when the request may be
/// finished, `Ok(false)` when it must go back to the broker.
pub(super) async fn record(
    shared: &Shared,
    delivery: &Delivery,
    outcome: Outcome,
) -> Result<bool, ()> {
    let mut status = match outcome {
        Outcome::Interrupted => return Ok(false),
        Outcome::Sent(status) | Outcome::Failed(status) => status,
    };
    status.pipeline = shared.pipeline.clone();
    if status.status == StatusKind::Failed {
        let Some(dead_letter) = &shared.dead_letter else {
            return Err(());
        };
        let record = dead_letter_record(shared, delivery, &status);
        if !publish_until_confirmed(shared, dead_letter, &[record]).await {
            return Ok(false);
        }
        let reason = status.reason.as_deref().unwrap_or("unknown");
        shared.metrics.record_dead_letter(&shared.pipeline, reason);
        error!(
            pipeline = %shared.pipeline, id = ?status.id, reason, permanent = status.permanent,
            detail = status.detail.as_deref().unwrap_or(""), position = %delivery.position,
            "Request dead-lettered"
        );
    }
    if let Some(target) = &shared.status {
        let record = Record {
            key: status.id.clone().unwrap_or_default(),
            payload: status.to_json(),
            schema: STATUS_SCHEMA,
        };
        // A status event that cannot be published must not make a sent
        // mail go out again, so the request is finished regardless.
        if !publish_until_confirmed(shared, target, &[(record, Headers(Vec::new()))]).await {
            warn!(pipeline = %shared.pipeline, id = ?status.id, "Status event not published before shutdown");
        }
    }
    Ok(true)
}

fn dead_letter_record(
    shared: &Shared,
    delivery: &Delivery,
    status: &OutboundStatus,
) -> (Record, Headers) {
    let smtp = status.smtp.as_ref();
    let mut headers = vec![
        (
            "mailbridge-reason".to_owned(),
            status.reason.clone().unwrap_or_default(),
        ),
        (
            "mailbridge-detail".to_owned(),
            status.detail.clone().unwrap_or_default(),
        ),
        (
            "mailbridge-permanent".to_owned(),
            status.permanent.to_string(),
        ),
        (
            "mailbridge-attempts".to_owned(),
            status.attempts.to_string(),
        ),
        ("mailbridge-pipeline".to_owned(), shared.pipeline.clone()),
    ];
    if let Some(reply) = smtp {
        headers.push(("mailbridge-smtp-code".to_owned(), reply.code.to_string()));
        if let Some(enhanced) = &reply.enhanced {
            headers.push(("mailbridge-smtp-enhanced".to_owned(), enhanced.clone()));
        }
    }
    let key = delivery
        .key
        .clone()
        .or_else(|| status.id.clone())
        .unwrap_or_default();
    let record = Record {
        key,
        payload: delivery.payload.clone(),
        schema: DEAD_LETTER_SCHEMA,
    };
    (record, Headers(headers))
}

/// Publishes until confirmed; false when the process stopped first.
async fn publish_until_confirmed(
    shared: &Shared,
    target: &Publisher,
    records: &[(Record, Headers)],
) -> bool {
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(60));
    loop {
        let err = match target.publish_with_headers(records).await {
            Ok(()) => return true,
            Err(err) => err,
        };
        let delay = backoff.next_delay();
        warn!(
            pipeline = %shared.pipeline, error = %err, error_type = err.kind(),
            retry_in_ms = delay.as_millis() as u64,
            "Failed to publish a dead-letter or status record; retrying"
        );
        let mut shutdown = shared.shutdown.clone();
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = shutdown.wait_for(|stop| *stop) => return false,
        }
    }
}
