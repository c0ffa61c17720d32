//! Catching up with a mailbox in batches, in the order that makes the
//! delivery guarantee: fetch, publish, wait for the broker's confirmation,
//! post-process, remember the published keys, save the checkpoint.

use std::collections::HashSet;
use std::pin::Pin;
use std::time::{Duration, Instant};

use tracing::{debug, error, warn};

use super::documents::{Builder, Documents};
use super::plan::{Batch, Limits, Planner};
use super::{MailboxWatch, WatchError};
use crate::broker::{PublishError, Publisher, Record};
use crate::config::AfterPublish;
use crate::imap::{Fetched, ImapError, PostProcess, Session};
use crate::pipeline::backoff::Backoff;
use crate::pipeline::checkpoint::{Checkpoint, Filter};

/// Delays between attempts to publish a batch the broker did not confirm.
const PUBLISH_RETRY_BASE: Duration = Duration::from_millis(500);
const PUBLISH_RETRY_CAP: Duration = Duration::from_secs(60);

impl MailboxWatch {
    /// Publishes every mail above the checkpoint, batch by batch.
    ///
    /// Each batch is one fetch cycle, timed from the end of the previous
    /// one, and the first batch after a search includes the search. A
    /// catch-up that finds no new mail records one empty cycle, so that a
    /// quiet mailbox still shows a recent successful cycle after every
    /// wait.
    pub(super) async fn catch_up(
        &mut self,
        session: &mut Session,
        position: &mut Checkpoint,
    ) -> Result<(), WatchError> {
        let mut recorded = false;
        loop {
            let started = Instant::now();
            let uids = self.pending(session, position).await?;
            if uids.is_empty() {
                if !recorded {
                    self.record_cycle(started);
                }
                return Ok(());
            }
            self.publish_pending(session, position, &uids, started)
                .await?;
            recorded = true;
        }
    }

    /// Publishes the mails `uids` in batches. The next batch is fetched,
    /// and built unless known keys apply, while the broker confirms the
    /// current one, so the IMAP server, the parser and the broker work at
    /// the same time. A batch is still post-processed
    /// and checkpointed only after the broker confirmed it, in UID order.
    async fn publish_pending(
        &mut self,
        session: &mut Session,
        position: &mut Checkpoint,
        uids: &[u32],
        mut started: Instant,
    ) -> Result<(), WatchError> {
        let mut planner = Planner::new(uids, self.limits());
        let Some(mut batch) = planner.next_batch(session).await? else {
            return Ok(());
        };
        let uidvalidity = position.uidvalidity;
        self.load_known(position)?;
        let builder = self.known.is_none().then(|| self.builder());
        let (mut current, took, count) = fetch_ahead(session, &batch, builder, uidvalidity).await?;
        self.record_fetch(took, count);
        let keep = self.post_process() == PostProcess::Keep;
        loop {
            self.load_known(position)?;
            let next = planner.next_batch(session).await?;
            // Without known keys to leave out, the next batch does not
            // depend on this one, so it is also built while the broker
            // confirms this one.
            let builder = self.known.is_none().then(|| self.builder());
            let published = match current {
                Ahead::Fetched(fetched) => self.build_and_publish(fetched, uidvalidity),
                Ahead::Built(documents) => self.publish_built(documents),
            };
            // With `keep`, a batch that the broker confirmed at the first
            // attempt needs no session to complete, so its checkpoint is
            // written while the next batch is still being fetched.
            let publishing = async {
                let published = published.await?;
                if !keep || published.first_attempt.is_err() {
                    return Ok(Some(published));
                }
                self.known = published.known;
                self.finish(None, position, &batch, published.documents, published.took)
                    .await?;
                Ok::<_, WatchError>(None)
            };
            let prefetch = async {
                match next.as_ref() {
                    Some(next) => fetch_ahead(session, next, builder, uidvalidity)
                        .await
                        .map(Some),
                    None => Ok(None),
                }
            };
            let (published, prefetched): (_, Result<_, WatchError>) =
                tokio::join!(publishing, prefetch);
            let mut published = published?;
            if let Some(published) = &mut published {
                self.known = published.known.take();
            }
            let prefetched = match prefetched {
                Ok(Some((ahead, took, count))) => {
                    self.record_fetch(took, count);
                    Some(ahead)
                }
                Ok(None) => None,
                Err(err) => {
                    // The session is gone. With `keep`, a batch that the
                    // broker confirmed at the first attempt was checkpointed
                    // above already. With other post-processing, such a
                    // batch is checkpointed here only if that still works.
                    // Any other batch is published again after the reconnect.
                    if let Some(published) = published
                        && published.first_attempt.is_ok()
                    {
                        let finished = self
                            .finish(
                                Some(session),
                                position,
                                &batch,
                                published.documents,
                                published.took,
                            )
                            .await;
                        if let Err(finish_err) = finished {
                            debug!(mailbox = %self.mailbox, error = %finish_err, "Batch not checkpointed after the failed fetch");
                        }
                    }
                    return Err(err);
                }
            };
            if let Some(published) = published {
                let documents = published.documents;
                let retried = published.first_attempt.is_err();
                self.confirm(session, &documents.records, published.first_attempt)
                    .await?;
                let took = match retried {
                    true => published.started.elapsed(),
                    false => published.took,
                };
                self.finish(Some(session), position, &batch, documents, took)
                    .await?;
            }

            self.record_cycle(started);
            started = Instant::now();
            if self.stopping() {
                return Err(WatchError::Shutdown);
            }
            match (next, prefetched) {
                (Some(next), Some(ahead)) => (batch, current) = (next, ahead),
                _ => return Ok(()),
            }
        }
    }

    /// Builds the documents of `fetched` on a blocking thread, which frees
    /// the raw mail, and publishes them once. The known keys move to that
    /// thread and back.
    fn build_and_publish(&mut self, fetched: Vec<Fetched>, uidvalidity: u32) -> PublishFuture {
        let builder = self.builder();
        let known = self.known.take();
        let publisher = self.shared.publisher.clone();
        Box::pin(async move {
            let (documents, known) = build(builder, fetched, uidvalidity, known).await?;
            Ok(publish_once(&publisher, documents, known).await)
        })
    }

    /// Publishes documents built ahead, once.
    fn publish_built(&self, documents: Documents) -> PublishFuture {
        let publisher = self.shared.publisher.clone();
        Box::pin(async move { Ok(publish_once(&publisher, documents, None).await) })
    }

    fn builder(&self) -> Builder {
        Builder {
            pipeline: self.shared.pipeline.clone(),
            account: self.account().to_owned(),
            mailbox: self.mailbox.clone(),
            options: self.options.clone(),
            max_payload_bytes: self.shared.publisher.max_payload_bytes(),
        }
    }

    fn limits(&self) -> Limits {
        let settings = &self.shared.settings;
        Limits {
            batch_size: settings.batch_size.get(),
            max_batch_bytes: settings.max_batch_bytes.get(),
            max_message_bytes: self.options.max_message_bytes,
        }
    }

    fn record_fetch(&self, took: Duration, fetched: usize) {
        let (account, mailbox) = (self.account(), self.mailbox.as_str());
        self.shared
            .metrics
            .record_fetch(account, mailbox, took, fetched);
    }

    fn record_cycle(&self, started: Instant) {
        let (account, mailbox) = (self.account(), self.mailbox.as_str());
        self.shared
            .metrics
            .record_cycle(account, mailbox, started.elapsed());
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

    /// Completes a batch whose documents the broker confirmed `took` after
    /// the start of their publication: post-processes it with `session`,
    /// remembers the published keys and saves the checkpoint. Without a
    /// session, as with `keep` while the session fetches the next batch,
    /// the mail stays as it is.
    async fn finish(
        &mut self,
        session: Option<&mut Session>,
        position: &mut Checkpoint,
        batch: &Batch,
        documents: Documents,
        took: Duration,
    ) -> Result<(), WatchError> {
        self.record_batch(&documents, took);
        if let Some(session) = session {
            let processed = self.keep_unparsed(&batch.uids, &documents.unparsed);
            session
                .post_process(&processed, &self.post_process())
                .await?;
        }
        self.commit_batch(position, batch, documents).await
    }

    fn record_batch(&self, documents: &Documents, took: Duration) {
        let pipeline = &self.shared.pipeline;
        self.shared
            .metrics
            .record_build(pipeline, documents.built_in);
        let confirmed = documents.records.len();
        if confirmed > 0 {
            self.shared
                .metrics
                .record_published(pipeline, took, confirmed, &documents.received);
        }
    }

    /// Remembers the published keys of a post-processed batch and saves the
    /// checkpoint after it.
    async fn commit_batch(
        &mut self,
        position: &mut Checkpoint,
        batch: &Batch,
        documents: Documents,
    ) -> Result<(), WatchError> {
        let mut next = *position;
        next.last_uid = batch.uids.last().copied().unwrap_or(next.last_uid);
        let passed = next
            .filter
            .is_some_and(|filter| filter.through() <= next.last_uid);
        if passed {
            next.filter = None;
        }
        // Known keys grow only with keys that were written.
        let keys_for_known = (self.known.is_some() && !passed).then(|| documents.keys.clone());

        self.commit(documents.keys, next).await?;
        *position = next;
        self.progressed = true;
        if passed {
            self.known = None;
        } else if let (Some(known), Some(keys)) = (&mut self.known, keys_for_known) {
            known.extend(keys);
        }
        Ok(())
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
        let first_attempt = self.shared.publisher.publish(records).await;
        self.confirm(session, records, first_attempt).await
    }

    /// Publishes `records` again until the broker confirms them all, when
    /// `first_attempt`, the result of their first publication, failed.
    async fn confirm(
        &self,
        session: &mut Session,
        records: &[Record],
        first_attempt: Result<(), PublishError>,
    ) -> Result<(), WatchError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut backoff = Backoff::new(PUBLISH_RETRY_BASE, PUBLISH_RETRY_CAP);
        let mut attempt = first_attempt;
        loop {
            let err = match attempt {
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
            self.wait_to_retry(err.to_string(), delay).await?;
            session.noop(self.shared.settings.liveness_timeout).await?;
            attempt = self.shared.publisher.publish(records).await;
        }
    }
}

/// A batch's documents after their first publication.
struct Published {
    documents: Documents,
    /// The known keys, handed back from the blocking thread.
    known: Option<HashSet<String>>,
    first_attempt: Result<(), PublishError>,
    /// Start of the first publication.
    started: Instant,
    /// Time from the start of the first publication to its outcome.
    took: Duration,
}

/// A batch's first publication, boxed so that a batch built ahead and one
/// built now take the same path.
type PublishFuture = Pin<Box<dyn Future<Output = Result<Published, WatchError>> + Send>>;

/// Publishes `documents` once and keeps the outcome for the confirmation.
async fn publish_once(
    publisher: &Publisher,
    documents: Documents,
    known: Option<HashSet<String>>,
) -> Published {
    let started = Instant::now();
    let first_attempt = publisher.publish(&documents.records).await;
    Published {
        documents,
        known,
        first_attempt,
        started,
        took: started.elapsed(),
    }
}

/// A batch fetched before its publication, and built too when it did not
/// depend on the batch before it.
enum Ahead {
    Fetched(Vec<Fetched>),
    Built(Documents),
}

/// Builds the documents of `fetched` on a blocking thread, which frees the
/// raw mail, leaving out the mails whose keys are in `known`, which moves
/// to that thread and back.
async fn build(
    builder: Builder,
    fetched: Vec<Fetched>,
    uidvalidity: u32,
    known: Option<HashSet<String>>,
) -> Result<(Documents, Option<HashSet<String>>), WatchError> {
    let built = tokio::task::spawn_blocking(move || {
        let documents = builder.documents(&fetched, uidvalidity, known.as_ref());
        debug!(
            mailbox = %builder.mailbox, fetched = fetched.len(),
            publishing = documents.records.len(), "Built the documents of a batch"
        );
        (documents, known)
    });
    joined(built).await
}

/// Fetches `batch`, and builds it too when a `builder` is given, which
/// means that no known keys apply. Returns it with the fetch's duration and
/// the number of mails fetched.
async fn fetch_ahead(
    session: &mut Session,
    batch: &Batch,
    builder: Option<Builder>,
    uidvalidity: u32,
) -> Result<(Ahead, Duration, usize), WatchError> {
    match builder {
        Some(builder) => {
            let (documents, took, count) =
                fetch_and_build(session, batch, builder, uidvalidity).await?;
            Ok((Ahead::Built(documents), took, count))
        }
        None => {
            let (fetched, took) = fetch(session, batch).await?;
            let count = fetched.len();
            Ok((Ahead::Fetched(fetched), took, count))
        }
    }
}

/// Bytes of mail handed to the building thread at a time. A group saves
/// the thread a wake-up per mail: in perf samples of a backfill of 5 KB
/// mails, the kernel's task switch fell from 16 % to 11 % of mailbridge's
/// processor time. A mail of this size or more still goes alone as soon
/// as it has arrived.
const HAND_OVER_BYTES: usize = 64 * 1024;

/// Fetches the mails of `batch` and builds their documents on a blocking
/// thread as they arrive, so that parsing does not wait for the last mail.
/// Returns the documents, how long the fetch took and how many mails it
/// gave.
async fn fetch_and_build(
    session: &mut Session,
    batch: &Batch,
    builder: Builder,
    uidvalidity: u32,
) -> Result<(Documents, Duration, usize), WatchError> {
    let (sender, groups) = std::sync::mpsc::channel::<Vec<Fetched>>();
    let building = tokio::task::spawn_blocking(move || {
        builder.documents_as_fetched(groups.into_iter().flatten(), uidvalidity)
    });
    let started = Instant::now();
    let mut group = Vec::new();
    let mut group_bytes = 0;
    let fetched = session
        .fetch_split_each(&batch.whole, &batch.headers, |mail| {
            group_bytes += mail.body.len();
            group.push(mail);
            if group_bytes >= HAND_OVER_BYTES {
                group_bytes = 0;
                // The thread only stops early when the runtime shuts down.
                let _ = sender.send(std::mem::take(&mut group));
            }
        })
        .await;
    let took = started.elapsed();
    if !group.is_empty() {
        let _ = sender.send(group);
    }
    // The thread's receiver ends here, whether the fetch succeeded or not.
    drop(sender);
    let count = fetched?;
    Ok((joined(building).await?, took, count))
}

/// Waits for a blocking thread's result, and passes its panic on.
async fn joined<T>(thread: tokio::task::JoinHandle<T>) -> Result<T, WatchError> {
    match thread.await {
        Ok(result) => Ok(result),
        Err(err) => match err.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            // The runtime is shutting down.
            Err(_) => Err(WatchError::Shutdown),
        },
    }
}

/// Fetches the mails of `batch`, and returns them with the fetch's duration.
async fn fetch(
    session: &mut Session,
    batch: &Batch,
) -> Result<(Vec<Fetched>, Duration), ImapError> {
    let started = Instant::now();
    let fetched = session.fetch_split(&batch.whole, &batch.headers).await?;
    Ok((fetched, started.elapsed()))
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
