//! One send request: validate it, build the message, and submit it with
//! retries on transient failures.

use std::time::{Duration, Instant};

use tracing::{debug, error, info, warn};

use super::{Outcome, Shared};
use crate::broker::Delivery;
use crate::mail::outbound::{self, Limits};
use crate::mail::status::SmtpReply;
use crate::pipeline::backoff::Backoff;
use crate::smtp::mime;
use crate::smtp::transport::SmtpError;

/// Delays between send attempts.
const RETRY_BASE: Duration = Duration::from_secs(1);
const RETRY_CAP: Duration = Duration::from_secs(5 * 60);

/// Decides the outcome of one request. Nothing here acknowledges it.
pub(super) async fn process(shared: &Shared, delivery: &Delivery) -> Outcome {
    let limits = Limits {
        max_attachment_bytes: shared.settings.max_attachment_bytes,
    };
    let request = match outbound::parse(&delivery.payload, &limits) {
        Ok(request) => request,
        Err(rejection) => {
            let id = outbound::lenient_id(&delivery.payload);
            return Outcome::invalid(id, None, &rejection);
        }
    };
    let id = request.id().map(str::to_owned);
    let domain = shared.address.rsplit('@').next().unwrap_or("localhost");
    let built = match mime::build(&request, &shared.address, domain) {
        Ok(built) => built,
        Err(rejection) => return Outcome::invalid(id, None, &rejection),
    };
    debug!(pipeline = %shared.pipeline, id = ?id, message_id = %built.message_id, "Sending request");

    send_with_retries(shared, id, built).await
}

async fn send_with_retries(shared: &Shared, id: Option<String>, built: mime::Built) -> Outcome {
    let max_attempts = u32::try_from(shared.settings.max_attempts.get()).unwrap_or(u32::MAX);
    let mut backoff = Backoff::new(RETRY_BASE, RETRY_CAP);
    let mut attempt = 0;
    let mut held_before = false;
    loop {
        attempt += 1;
        let started = Instant::now();
        let result = shared
            .sender
            .send(&built.envelope_from, &built.recipients, &built.bytes)
            .await;
        let pipeline = &shared.pipeline;
        let err = match result {
            Ok(accepted) => {
                shared
                    .metrics
                    .record_attempt(pipeline, "success", started.elapsed());
                record_success(shared);
                if held_before {
                    shared.health.sending(None);
                }
                info!(pipeline = %pipeline, id = ?id, message_id = %built.message_id, smtp_code = accepted.code, attempt, "Mail sent");
                return Outcome::sent(id, built.message_id, accepted, attempt);
            }
            Err(err) => err,
        };
        shared
            .metrics
            .record_attempt(pipeline, err.kind(), started.elapsed());
        // A failure of the account (TLS, sign-in, quota) is no fault of the
        // request and would fail every request alike, so the request is
        // held and retried until an operator fixes the cause, instead of
        // flooding the dead-letter target.
        if matches!(err, SmtpError::ConcurrencyLimit { .. }) {
            lower_limit(shared, &err);
        }
        let held = err.affects_account();
        held_before |= held;
        if !held && (!err.is_transient() || attempt >= max_attempts) {
            return Outcome::failed(id, Some(built.message_id), &err, attempt);
        }

        let delay = backoff.next_delay();
        shared.metrics.record_retry(pipeline);
        if held {
            hold(shared, &err, attempt, delay);
        } else {
            warn!(
                pipeline = %pipeline, id = ?id, message_id = %built.message_id, error = %err,
                error_type = err.kind(), smtp_code = err.code(), attempt,
                retry_in_ms = delay.as_millis() as u64,
                "Send failed; retrying with the same Message-ID"
            );
        }
        let mut shutdown = shared.shutdown.clone();
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = shutdown.wait_for(|stop| *stop) => return Outcome::Interrupted,
        }
    }
}

/// Lowers the account's concurrency limit after a reply reporting that the
/// server limits parallel submissions from the mailbox.
fn lower_limit(shared: &Shared, err: &SmtpError) {
    let Some(limit) = shared.limiter.lower() else {
        return;
    };
    shared.metrics.set_concurrency_limit(&shared.account, limit);
    warn!(
        pipeline = %shared.pipeline, account = %shared.account, error = %err,
        smtp_code = err.code(), limit,
        "Server limits parallel submissions; lowered the account's sends in flight"
    );
}

/// Counts a success toward raising the account's concurrency limit again.
fn record_success(shared: &Shared) {
    let Some(limit) = shared.limiter.record_success() else {
        return;
    };
    shared.metrics.set_concurrency_limit(&shared.account, limit);
    info!(
        pipeline = %shared.pipeline, account = %shared.account, limit,
        "Raised the account's sends in flight after a run of successful sends"
    );
}

/// Marks the pipeline as not ready while a failure of the account holds
/// its requests back.
fn hold(shared: &Shared, err: &SmtpError, attempt: u32, delay: Duration) {
    error!(
        pipeline = %shared.pipeline, error = %err, error_type = err.kind(),
        smtp_code = err.code(), attempt, retry_in_ms = delay.as_millis() as u64,
        "Send failed for a reason that concerns the account; holding the request until it is fixed"
    );
    let reason = format!("sending is held: {err}");
    shared.health.sending(Some(reason));
}

/// Returns the reply that caused `err`, when a reply did.
pub(super) fn reply_of(err: &SmtpError) -> Option<SmtpReply> {
    err.reply().map(|reply| SmtpReply {
        code: reply.code,
        enhanced: reply.enhanced.clone(),
        text: reply.text(),
    })
}
