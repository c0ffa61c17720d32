//! Broker records built from a fetched batch. The builder owns copies of
//! the few settings it needs, so that a batch can be parsed on a blocking
//! thread while the IMAP session fetches the next one.

use std::collections::HashSet;
use std::num::NonZeroUsize;
use std::panic;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use tracing::{debug, warn};

use crate::broker::Record;
use crate::imap::Fetched;
use crate::mail::{
    self, DocumentOptions, FetchedMail, INBOUND_SCHEMA, InboundMail, Warning, WarningCode,
};

/// Fetched bytes that make it worth building on one more thread. Below
/// this a thread costs more than it saves; a batch of mails with
/// attachments of a few megabytes is built on every core.
const BYTES_PER_THREAD: usize = 1024 * 1024;

/// The documents of one fetched batch.
#[derive(Default)]
pub(super) struct Documents {
    pub(super) records: Vec<Record>,
    /// Keys that recognise the published mails across UIDVALIDITY changes.
    pub(super) keys: Vec<String>,
    /// INTERNALDATE of each published mail that has one.
    pub(super) received: Vec<SystemTime>,
    /// Mails the parser failed on, whose document holds only metadata.
    pub(super) unparsed: Vec<u32>,
    /// Time the documents took to build.
    pub(super) built_in: Duration,
}

/// Settings of a mailbox watch that building documents needs.
#[derive(Clone)]
pub(super) struct Builder {
    pub(super) pipeline: String,
    pub(super) account: String,
    pub(super) mailbox: String,
    pub(super) options: DocumentOptions,
    /// Largest record the broker takes, when it has a limit.
    pub(super) max_payload_bytes: Option<usize>,
}

impl Builder {
    /// Builds the records of `fetched`, leaving out mail whose key is in
    /// `known`.
    pub(super) fn documents(
        &self,
        fetched: &[Fetched],
        uidvalidity: u32,
        known: Option<&HashSet<String>>,
    ) -> Documents {
        let started = Instant::now();
        let mut documents = Documents {
            records: Vec::with_capacity(fetched.len()),
            keys: Vec::with_capacity(fetched.len()),
            received: Vec::with_capacity(fetched.len()),
            unparsed: Vec::new(),
            built_in: Duration::ZERO,
        };
        for (mail, document) in fetched.iter().zip(self.parse_all(fetched, uidvalidity)) {
            self.add(&mut documents, mail, &document, uidvalidity, known);
        }
        documents.built_in = started.elapsed();
        documents
    }

    /// Builds the documents of `mails`, each as the iterator yields it, such
    /// as from a channel while the fetch goes on, and returns them in UID
    /// order.
    /// The build time counts the work on each mail, not the waits between.
    pub(super) fn documents_as_fetched(
        &self,
        mails: impl IntoIterator<Item = Fetched>,
        uidvalidity: u32,
    ) -> Documents {
        let mut documents = Documents::default();
        let mut uids = Vec::new();
        for mail in mails {
            let started = Instant::now();
            let document = self.document(&mail, uidvalidity);
            if self.add(&mut documents, &mail, &document, uidvalidity, None) {
                uids.push(mail.uid);
            }
            documents.built_in += started.elapsed();
        }
        if !uids.is_sorted() {
            let mut order: Vec<(u32, Record)> = uids.into_iter().zip(documents.records).collect();
            order.sort_by_key(|(uid, _)| *uid);
            documents.records = order.into_iter().map(|(_, record)| record).collect();
        }
        documents
    }

    /// Adds the record of `mail`, whose document is `document`, unless its
    /// key is in `known`. Returns whether it added one.
    fn add(
        &self,
        documents: &mut Documents,
        mail: &Fetched,
        document: &InboundMail,
        uidvalidity: u32,
        known: Option<&HashSet<String>>,
    ) -> bool {
        if document.has_warning(WarningCode::ParsePanic) {
            documents.unparsed.push(mail.uid);
        }
        let key = dedupe_key(document);
        if known.is_some_and(|known| known.contains(&key)) {
            debug!(mailbox = %self.mailbox, uid = mail.uid, "Skipping mail published before the UIDVALIDITY change");
            return false;
        }
        if let Some(at) = mail.internal_date {
            documents.received.push(at.into());
        }
        documents.records.push(Record {
            key: document.id.clone(),
            payload: self.payload(mail, uidvalidity, document),
            schema: INBOUND_SCHEMA,
        });
        documents.keys.push(key);
        true
    }

    /// Builds the document of each mail, in order, spread over as many
    /// threads as the cores and the batch's size allow: parsing, decoding
    /// and hashing take most of an inbound pipeline's processor time.
    fn parse_all(&self, fetched: &[Fetched], uidvalidity: u32) -> Vec<InboundMail> {
        let bytes: usize = fetched.iter().map(|mail| mail.body.len()).sum();
        let cores = thread::available_parallelism().map_or(1, NonZeroUsize::get);
        let threads = cores.min(bytes / BYTES_PER_THREAD).min(fetched.len());
        if threads <= 1 {
            return fetched
                .iter()
                .map(|mail| self.document(mail, uidvalidity))
                .collect();
        }
        let per_thread = fetched.len().div_ceil(threads);
        thread::scope(|scope| {
            let parts: Vec<_> = fetched
                .chunks(per_thread)
                .map(|part| {
                    scope.spawn(move || {
                        part.iter()
                            .map(|mail| self.document(mail, uidvalidity))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            parts
                .into_iter()
                .flat_map(|part| {
                    part.join()
                        .unwrap_or_else(|panic| panic::resume_unwind(panic))
                })
                .collect()
        })
    }

    /// Returns the document's JSON, or the JSON of its metadata alone when
    /// the whole document is larger than one broker record may be, which
    /// would otherwise stop the mailbox at this mail.
    fn payload(&self, fetched: &Fetched, uidvalidity: u32, document: &InboundMail) -> Vec<u8> {
        let payload = document.to_json();
        let Some(limit) = self.max_payload_bytes else {
            return payload;
        };
        if payload.len() <= limit {
            return payload;
        }
        warn!(
            pipeline = %self.pipeline, mailbox = %self.mailbox, uid = fetched.uid,
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
            account: &self.account,
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
}

/// Returns the key that recognises a mail across UIDVALIDITY changes: its
/// Message-ID, or its content hash when it has none.
fn dedupe_key(document: &InboundMail) -> String {
    match &document.message_id {
        Some(message_id) => message_id.clone(),
        None => format!("sha256:{}", document.content_sha256),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builder() -> Builder {
        Builder {
            pipeline: "p".to_owned(),
            account: "a".to_owned(),
            mailbox: "INBOX".to_owned(),
            options: DocumentOptions::default(),
            max_payload_bytes: None,
        }
    }

    /// Returns a mail of about `bytes` bytes whose Message-ID names `uid`.
    fn fetched(uid: u32, bytes: usize) -> Fetched {
        let line = "x".repeat(76);
        let mut body = format!(
            "From: a@example.com\r\nTo: b@example.com\r\nSubject: mail {uid}\r\n\
             Message-ID: <{uid}@example.com>\r\n\r\n"
        );
        while body.len() < bytes {
            body.push_str(&line);
            body.push_str("\r\n");
        }
        Fetched {
            uid,
            flags: Vec::new(),
            internal_date: None,
            size: None,
            body: body.into_bytes(),
            header_only: false,
        }
    }

    #[test]
    fn documents_of_large_batch_keep_order() {
        // Large enough for a thread per core, up to 8 cores.
        let batch: Vec<Fetched> = (1..=9).map(|uid| fetched(uid, BYTES_PER_THREAD)).collect();

        let documents = builder().documents(&batch, 7, None);

        let keys: Vec<String> = (1..=9).map(|uid| format!("{uid}@example.com")).collect();
        assert_eq!(documents.keys, keys);
        let ids: Vec<String> = (1..=9)
            .map(|uid| mail::document_id("a", "INBOX", 7, uid))
            .collect();
        let published: Vec<&str> = documents.records.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(published, ids);
    }

    #[test]
    fn documents_as_fetched_come_out_in_uid_order() {
        let (sender, mails) = std::sync::mpsc::channel();
        // Mails fetched by header arrive after those fetched whole.
        for uid in [1, 3, 4, 2] {
            sender.send(fetched(uid, 500)).unwrap();
        }
        drop(sender);

        let documents = builder().documents_as_fetched(mails, 7);

        let ids: Vec<String> = (1..=4)
            .map(|uid| mail::document_id("a", "INBOX", 7, uid))
            .collect();
        let published: Vec<&str> = documents.records.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(published, ids);
        assert_eq!(documents.keys.len(), 4);
        assert!(documents.built_in > Duration::ZERO);
    }

    #[test]
    fn documents_of_large_batch_skip_known() {
        let batch: Vec<Fetched> = (1..=4).map(|uid| fetched(uid, BYTES_PER_THREAD)).collect();
        let known: HashSet<String> = ["2@example.com".to_owned()].into();

        let documents = builder().documents(&batch, 7, Some(&known));

        assert_eq!(
            documents.keys,
            ["1@example.com", "3@example.com", "4@example.com"]
        );
    }
}
