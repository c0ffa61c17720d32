//! Catching up with a mailbox in batches, in the order that makes the
//! delivery guarantee: fetch, publish, wait for the broker's confirmation,
//! post-process, remember the published keys, save the checkpoint.

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime};

use tracing::{debug, error, warn};

use super::{MailboxWatch, WatchError};
use crate::broker::{PublishError, Record};
use crate::config::AfterPublish;
use crate::imap::{Fetched, PostProcess, Session};
use crate::mail::{
    self, DocumentOptions, FetchedMail, INBOUND_SCHEMA, InboundMail, Warning, WarningCode,
};
use crate::pipeline::backoff::Backoff;
use crate::pipeline::checkpoint::{Checkpoint, Filter};

/// Delays between attempts to publish a batch the broker did not confirm.
const PUBLISH_RETRY_BASE: Duration = Duration::from_millis(500);
const PUBLISH_RETRY_CAP: Duration = Duration::from_secs(60);

/// The documents of one fetched batch.
struct Documents {
    records: Vec<Record>,
    keys: Vec<String>,
    received: Vec<SystemTime>,
    /// Mails the parser failed on, whose document holds only metadata.
    unparsed: Vec<u32>,
}

impl MailboxWatch {
    /// Publishes every mail above the checkpoint, batch by batch.
    ///
    /// Each batch is one fetch cycle, timed from its own start, and the
    /// first batch after a search includes the search. A catch-up that finds no
    /// new mail records one empty cycle, so that a quiet mailbox still
    /// shows a recent successful cycle after every wait.
    pub(super) async fn catch_up(
        &mut self,
        session: &mut Session,
        position: &mut Checkpoint,
    ) -> Result<(), WatchError> {
        let mut recorded = false;
        loop {
            let mut started = Instant::now();
            let uids = self.pending(session, position).await?;
            if uids.is_empty() {
                if !recorded {
                    self.record_cycle(started, 0);
                }
                return Ok(());
            }
            let batch_size = self.shared.settings.batch_size.get();
            for chunk in uids.chunks(batch_size) {
                self.batch(session, position, chunk).await?;
                self.record_cycle(started, chunk.len());
                recorded = true;
                started = Instant::now();
                if self.stopping() {
                    return Err(WatchError::Shutdown);
                }
            }
        }
    }

    fn record_cycle(&self, started: Instant, fetched: usize) {
        let (account, mailbox) = (self.account(), self.mailbox.as_str());
        self.shared
            .metrics
            .record_cycle(account, mailbox, started.elapsed(), fetched);
    }

    /// Returns the UIDs above the checkpoint, without those the filter skips.
    async fn pending(
        &self,
        session: &mut Session,
        position: &mut Checkpoint,
    ) -> Result<Vec<u32>, WatchError> {
        let mut uids = session.uids_after(position.last_uid).await?;
        if let Some(Filter::Seen { through }) = position.filter {
            let unseen: HashSet<u32> = session.uids_unseen().await?.into_iter().collect();
            uids.retain(|uid| *uid > through || unseen.contains(uid));
        }
        Ok(uids)
    }

    /// Runs one batch: fetch, publish, post-process, checkpoint.
    async fn batch(
        &mut self,
        session: &mut Session,
        position: &mut Checkpoint,
        uids: &[u32],
    ) -> Result<(), WatchError> {
        // A mail past max_message_bytes is published with its header
        // fields only, so its body is not fetched either.
        let max_bytes = self.options.max_message_bytes;
        let fetched = session.fetch_up_to(uids, max_bytes).await?;
        self.load_known(position)?;
        let documents = self.documents(&fetched, position.uidvalidity, self.known.as_ref());
        debug!(
            mailbox = %self.mailbox, fetched = fetched.len(),
            publishing = documents.records.len(), "Fetched batch"
        );

        let published = Instant::now();
        self.publish_until_confirmed(session, &documents.records)
            .await?;
        let pipeline = &self.shared.pipeline;
        let confirmed = documents.records.len();
        if confirmed > 0 {
            self.shared.metrics.record_published(
                pipeline,
                published.elapsed(),
                confirmed,
                &documents.received,
            );
        }

        let processed = self.keep_unparsed(uids, &documents.unparsed);
        session
            .post_process(&processed, &self.post_process())
            .await?;
        self.checkpoints.remember(&documents.keys)?;
        if let Some(known) = &mut self.known {
            known.extend(documents.keys.iter().cloned());
        }
        position.last_uid = uids.iter().copied().max().unwrap_or(position.last_uid);
        if position
            .filter
            .is_some_and(|filter| filter.through() <= position.last_uid)
        {
            position.filter = None;
            self.known = None;
        }

        self.save(*position)
    }

    /// Reads the keys of the mail this mailbox published, once, while
    /// `skip_known` applies after a UIDVALIDITY change.
    fn load_known(&mut self, position: &Checkpoint) -> Result<(), WatchError> {
        let applies = matches!(position.filter, Some(Filter::Known { .. }));
        if applies && self.known.is_none() {
            self.known = Some(self.checkpoints.known()?);
        }

        Ok(())
    }

    fn documents(
        &self,
        fetched: &[Fetched],
        uidvalidity: u32,
        known: Option<&HashSet<String>>,
    ) -> Documents {
        let mut documents = Documents {
            records: Vec::with_capacity(fetched.len()),
            keys: Vec::with_capacity(fetched.len()),
            received: Vec::with_capacity(fetched.len()),
            unparsed: Vec::new(),
        };
        for mail in fetched {
            let document = self.document(mail, uidvalidity);
            if document.has_warning(WarningCode::ParsePanic) {
                documents.unparsed.push(mail.uid);
            }
            let key = dedupe_key(&document);
            if known.is_some_and(|known| known.contains(&key)) {
                debug!(mailbox = %self.mailbox, uid = mail.uid, "Skipping mail published before the UIDVALIDITY change");
                continue;
            }
            if let Some(at) = mail.internal_date {
                documents.received.push(at.into());
            }
            documents.records.push(Record {
                key: document.id.clone(),
                payload: self.payload(mail, uidvalidity, &document),
                schema: INBOUND_SCHEMA,
            });
            documents.keys.push(key);
        }
        documents
    }

    /// Returns the document's JSON, or the JSON of its metadata alone when
    /// the whole document is larger than one broker record may be, which
    /// would otherwise stop the mailbox at this mail.
    fn payload(&self, fetched: &Fetched, uidvalidity: u32, document: &InboundMail) -> Vec<u8> {
        let payload = document.to_json();
        let Some(limit) = self.shared.publisher.max_payload_bytes() else {
            return payload;
        };
        if payload.len() <= limit {
            return payload;
        }
        warn!(
            pipeline = %self.shared.pipeline, mailbox = %self.mailbox, uid = fetched.uid,
            document_bytes = payload.len(), limit_bytes = limit,
            "Document larger than the broker's record limit; publishing its metadata only"
        );
        let options = DocumentOptions {
            max_message_bytes: 0,
            ..self.options.clone()
        };
        let mut truncated = mail::build(&self.fetched_mail(fetched, uidvalidity), &options);
        let reason = format!(
            "the document of {} bytes exceeds the broker's record limit of {limit} bytes \
             (message.max.bytes)",
            payload.len()
        );
        truncated
            .warnings
            .push(Warning::new(WarningCode::MessageTruncated, reason));
        truncated.to_json()
    }

    fn fetched_mail<'a>(&'a self, fetched: &'a Fetched, uidvalidity: u32) -> FetchedMail<'a> {
        FetchedMail {
            account: self.account(),
            mailbox: &self.mailbox,
            uidvalidity,
            uid: fetched.uid,
            flags: fetched.flags.clone(),
            received_at: fetched.internal_date,
            size: fetched.size,
            raw: &fetched.body,
        }
    }

    fn document(&self, fetched: &Fetched, uidvalidity: u32) -> InboundMail {
        mail::build(&self.fetched_mail(fetched, uidvalidity), &self.options)
    }

    /// Returns the UIDs to post-process. With `delete`, a mail whose
    /// document lacks its content because the parser failed stays in the
    /// mailbox, where it is the only full copy.
    fn keep_unparsed(&self, uids: &[u32], unparsed: &[u32]) -> Vec<u32> {
        if self.shared.settings.after_publish != AfterPublish::Delete || unparsed.is_empty() {
            return uids.to_vec();
        }
        for uid in unparsed {
            error!(
                pipeline = %self.shared.pipeline, mailbox = %self.mailbox, uid,
                "Mail could not be parsed; published its metadata and kept it instead of deleting it"
            );
        }
        uids.iter()
            .copied()
            .filter(|uid| !unparsed.contains(uid))
            .collect()
    }

    fn post_process(&self) -> PostProcess {
        let settings = &self.shared.settings;
        match settings.after_publish {
            AfterPublish::Keep => PostProcess::Keep,
            AfterPublish::MarkSeen => PostProcess::MarkSeen,
            AfterPublish::AddKeyword => {
                let keyword = settings
                    .keyword
                    .as_deref()
                    .unwrap_or(crate::config::DEFAULT_KEYWORD);
                PostProcess::AddKeyword(keyword.to_owned())
            }
            AfterPublish::Move => PostProcess::Move(self.move_to.clone().unwrap_or_default()),
            AfterPublish::Delete => PostProcess::Delete,
        }
    }

    /// Publishes `records` until the broker confirms them all, keeping the
    /// IMAP session alive between attempts. Nothing after this step runs
    /// while the broker is unreachable, so nothing is acknowledged early.
    /// A closed sink ends the attempts with [`WatchError::SinkClosed`].
    pub(super) async fn publish_until_confirmed(
        &self,
        session: &mut Session,
        records: &[Record],
    ) -> Result<(), WatchError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut backoff = Backoff::new(PUBLISH_RETRY_BASE, PUBLISH_RETRY_CAP);
        loop {
            let err = match self.shared.publisher.publish(records).await {
                Ok(()) if backoff.attempts() == 0 => return Ok(()),
                Ok(()) => {
                    self.shared.readiness.ready(&self.component());
                    return Ok(());
                }
                Err(err) => err,
            };
            let pipeline = &self.shared.pipeline;
            self.shared
                .metrics
                .record_publish_failure(pipeline, err.kind(), records.len());
            if sink_closed(&err) {
                return Err(WatchError::SinkClosed(err));
            }
            let delay = backoff.next_delay();
            warn!(
                pipeline = %pipeline, mailbox = %self.mailbox, error = %err,
                error_type = err.kind(), attempt = backoff.attempts(),
                retry_in_ms = delay.as_millis() as u64,
                "Broker did not confirm the batch; retrying before anything is acknowledged"
            );
            self.shared
                .readiness
                .not_ready(&self.component(), err.to_string());
            self.sleep(delay).await;
            if self.stopping() {
                return Err(WatchError::Shutdown);
            }
            session.noop(self.shared.settings.liveness_timeout).await?;
        }
    }
}

/// Tells whether `err` means that the sink is closed for good. Only a
/// permanent write error of standard output (a broken pipe) is: a broker's
/// permanent errors, such as a missing queue, end when an operator fixes
/// the broker, so those batches are retried.
fn sink_closed(err: &PublishError) -> bool {
    matches!(
        err,
        PublishError::Write {
            transient: false,
            ..
        }
    )
}

/// Returns the key that recognises a mail across UIDVALIDITY changes: its
/// Message-ID, or its content hash when it has none.
fn dedupe_key(document: &InboundMail) -> String {
    match &document.message_id {
        Some(message_id) => message_id.clone(),
        None => format!("sha256:{}", document.content_sha256),
    }
}
