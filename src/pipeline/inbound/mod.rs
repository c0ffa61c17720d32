//! The watch of one (pipeline, mailbox): connect, select, catch up in
//! batches (fetch, publish, wait for the broker's confirmation,
//! post-process, checkpoint), then wait for new mail with IDLE or a
//! timer, and reconnect with backoff after any failure.
//!
//! The order inside a batch is the delivery guarantee: nothing is
//! post-processed or checkpointed before the broker confirmed it, so a
//! crash repeats mail (with the same document `id`) and never loses it.

mod batch;
mod documents;
mod error;
mod plan;
mod position;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use super::assign::SharedCheckpoints;
use super::backoff::Backoff;
use super::checkpoint::{Checkpoint, CheckpointStore};
use crate::auth::{AccessToken, TokenProvider};
use crate::broker::Publisher;
use crate::config::{Inbound, Mode, is_special_use};
use crate::imap::{Connector, IdleEvent, ImapError, Session};
use crate::mail::DocumentOptions;
use crate::telemetry::{InboundMetrics, Readiness};

pub use error::WatchError;

/// First delay after a failed session, and the largest one.
const RECONNECT_BASE: Duration = Duration::from_secs(1);
const RECONNECT_CAP: Duration = Duration::from_secs(5 * 60);

/// Pause before a session renewed for a fresh token signs in again, so
/// that a token whose refresh point has already passed cannot make the
/// watch reconnect in a tight loop.
const RENEW_PAUSE: Duration = Duration::from_secs(1);

/// Delays between attempts to save a checkpoint that could not be written.
const CHECKPOINT_RETRY_BASE: Duration = Duration::from_millis(500);
const CHECKPOINT_RETRY_CAP: Duration = Duration::from_secs(30);

/// Time a sign-in may take before the mailbox counts as not ready.
const SIGN_IN_GRACE: Duration = Duration::from_secs(5);

/// Everything a mailbox watch shares with the rest of its pipeline.
#[derive(Clone)]
pub struct Shared {
    /// Name of the inbound pipeline.
    pub pipeline: String,
    /// The pipeline's settings.
    pub settings: Arc<Inbound>,
    pub connector: Connector,
    pub tokens: TokenProvider,
    pub publisher: Publisher,
    pub metrics: InboundMetrics,
    pub readiness: Readiness,
    /// Becomes true when the process stops.
    pub shutdown: watch::Receiver<bool>,
    /// Sender of a fatal error to the runner, which then stops the process.
    pub fatal: mpsc::UnboundedSender<WatchError>,
    /// Broker store of the checkpoints, which other replicas read, besides
    /// the state directory; set with `coordination = "broker"`.
    pub shared_checkpoints: Option<SharedCheckpoints>,
}

/// The watch of one mailbox.
pub struct MailboxWatch {
    shared: Shared,
    mailbox: String,
    checkpoints: CheckpointStore,
    options: DocumentOptions,
    /// Keys of the published mail while `skip_known` applies, read from
    /// the checkpoint files once rather than for every batch.
    known: Option<HashSet<String>>,
    /// Whether the warning that the server lacks IDLE was logged.
    warned_no_idle: bool,
    /// Mailbox that `move` moves mail to in the current session, with a
    /// special-use attribute resolved to the mailbox carrying it.
    move_to: Option<String>,
    /// The access token of the last sign-in.
    signed_in_with: Option<AccessToken>,
    /// Whether a batch was checkpointed since the last failure, which
    /// makes the next reconnect start again from the shortest delay.
    progressed: bool,
}

/// Reason a session ended without an error.
enum Exit {
    /// The process stops.
    Shutdown,
    /// The process stops while an IDLE command runs, which only DONE
    /// ends: the connection is closed without LOGOUT.
    ShutdownInIdle,
    /// The access token is about to be refreshed: sign in again.
    Renew,
}

impl MailboxWatch {
    /// Prepares the watch of `mailbox` (UTF-8), whose checkpoints live
    /// under the state directory `state`.
    pub fn new(shared: Shared, mailbox: &str, state: &std::path::Path) -> Self {
        let settings = &shared.settings;
        let checkpoints = CheckpointStore::new(state, &shared.pipeline, &settings.account, mailbox);
        let options = DocumentOptions {
            attachment_bytes: settings.attachment_bytes,
            raw_bytes: settings.raw_bytes,
            max_message_bytes: settings.max_message_bytes,
        };
        Self {
            shared,
            mailbox: mailbox.to_owned(),
            checkpoints,
            options,
            known: None,
            warned_no_idle: false,
            move_to: None,
            signed_in_with: None,
            progressed: false,
        }
    }

    fn account(&self) -> &str {
        &self.shared.settings.account
    }

    fn component(&self) -> String {
        format!("inbound/{}/{}", self.shared.pipeline, self.mailbox)
    }

    /// Runs until shutdown. Failures are logged, counted and retried,
    /// except a fatal one, which is sent to the runner to stop the process.
    pub async fn run(mut self) {
        let mut backoff = Backoff::new(RECONNECT_BASE, RECONNECT_CAP);
        self.shared
            .readiness
            .not_ready(&self.component(), "connecting");
        loop {
            let result = self.session(&mut backoff).await;
            self.set_connected(false);
            match result {
                Ok(Exit::Shutdown | Exit::ShutdownInIdle) => break,
                Ok(Exit::Renew) => {
                    info!(
                        pipeline = %self.shared.pipeline, mailbox = %self.mailbox,
                        "Access token due for refresh; signing in again"
                    );

                    self.sleep(RENEW_PAUSE).await;
                }
                Err(WatchError::Shutdown) => break,
                Err(err) if err.is_fatal() => {
                    let _ = self.shared.fatal.send(err);
                    break;
                }
                Err(err) => {
                    self.refresh_expired_token(&err).await;
                    // A session that checkpointed mail worked, so its
                    // failure starts a new series of delays.
                    if std::mem::take(&mut self.progressed) {
                        backoff.reset();
                    }
                    self.failed(&err, &mut backoff).await;
                }
            }
            if self.stopping() {
                break;
            }
        }
        info!(pipeline = %self.shared.pipeline, mailbox = %self.mailbox, "Mailbox watch stopped");
    }

    async fn failed(&mut self, err: &WatchError, backoff: &mut Backoff) {
        let (account, mailbox) = (self.account().to_owned(), self.mailbox.clone());
        self.shared
            .metrics
            .record_reconnect(&account, &mailbox, err.kind());
        self.shared
            .readiness
            .not_ready(&self.component(), err.to_string());
        let delay = backoff.next_delay();
        warn!(
            pipeline = %self.shared.pipeline, account = %account, mailbox = %mailbox,
            error = %err, error_type = err.kind(), attempt = backoff.attempts(),
            retry_in_ms = delay.as_millis() as u64,
            "Mailbox watch failed; reconnecting"
        );
        self.sleep(delay).await;
    }

    /// Refreshes the access token once when the server ended the session
    /// because that token expired. Without it the next sign-in would
    /// present the same token, which still looks valid by its
    /// `expires_in`, and be rejected first.
    async fn refresh_expired_token(&mut self, err: &WatchError) {
        let WatchError::Imap(imap) = err else {
            return;
        };
        if !imap.is_token_expired() {
            return;
        }
        let Some(expired) = self.signed_in_with.take() else {
            return;
        };
        let (account, mailbox) = (self.account().to_owned(), self.mailbox.clone());
        info!(
            pipeline = %self.shared.pipeline, account = %account, mailbox = %mailbox,
            "Server ended the session because the access token expired; refreshing it"
        );
        if let Err(error) = self.shared.tokens.force_refresh(&expired).await {
            warn!(
                pipeline = %self.shared.pipeline, account = %account, mailbox = %mailbox,
                error = %error, error_type = error.kind(),
                "Access token refresh after an expired session failed; the next sign-in retries it"
            );
        }
    }

    /// Runs one IMAP session: sign in, select, then alternate between
    /// catching up and waiting.
    async fn session(&mut self, backoff: &mut Backoff) -> Result<Exit, WatchError> {
        let mut session = self.connect().await?;
        self.signed_in_with = Some(session.access_token().clone());
        self.move_to = self.move_target(&mut session).await?;
        let selected = session.select(&self.mailbox).await?;
        let mut position = self.position(&mut session, &selected).await?;
        self.set_connected(true);
        self.shared.readiness.ready(&self.component());
        info!(
            pipeline = %self.shared.pipeline, account = %self.account(), mailbox = %self.mailbox,
            uidvalidity = position.uidvalidity, last_uid = position.last_uid,
            "Watching mailbox"
        );

        loop {
            self.catch_up(&mut session, &mut position).await?;
            backoff.reset();
            let Some(exit) = self.wait(&mut session).await? else {
                continue;
            };
            if !matches!(exit, Exit::ShutdownInIdle) {
                session.logout().await;
            }
            return Ok(exit);
        }
    }

    /// Opens a session. A sign-in that takes longer than [`SIGN_IN_GRACE`],
    /// as when the token endpoint hangs, marks the mailbox not ready,
    /// because no mail is watched meanwhile. A quick renewal does not.
    async fn connect(&self) -> Result<Session, WatchError> {
        let connecting = self.shared.connector.connect();
        tokio::pin!(connecting);
        tokio::select! {
            result = &mut connecting => return Ok(result?),
            () = tokio::time::sleep(SIGN_IN_GRACE) => {}
        }
        let reason = format!(
            "signing in to the IMAP server has taken more than {} s",
            SIGN_IN_GRACE.as_secs()
        );
        self.shared.readiness.not_ready(&self.component(), reason);
        Ok(connecting.await?)
    }

    /// Returns the mailbox that `move` moves mail to: the configured one,
    /// created unless it exists, or the one that carries the configured
    /// special-use attribute, which is never created.
    async fn move_target(&self, session: &mut Session) -> Result<Option<String>, WatchError> {
        let settings = &self.shared.settings;
        let Some(target) = &settings.move_to else {
            return Ok(None);
        };
        if !is_special_use(target) {
            // A missing target would fail every batch after its publication.
            session.create_if_missing(target).await?;
            return Ok(Some(target.clone()));
        }

        let found = session.find_special_use("move_to", target).await?;
        if settings.mailboxes.contains(&found) {
            // A moved mail would show up as new in the watched mailbox again.
            return Err(ImapError::Config {
                account: settings.account.clone(),
                reason: format!(
                    "move_to = \"{target}\" names mailbox {found:?}, which pipeline {} \
                     watches; set move_to to another mailbox",
                    self.shared.pipeline
                ),
            }
            .into());
        }
        info!(
            pipeline = %self.shared.pipeline, mailbox = %self.mailbox,
            special_use = %target, move_to = %found,
            "Found the mailbox that move_to names by its special use"
        );
        Ok(Some(found))
    }

    /// Waits for new mail; `Some` when the session should end.
    async fn wait(&mut self, session: &mut Session) -> Result<Option<Exit>, WatchError> {
        if self.stopping() {
            return Ok(Some(Exit::Shutdown));
        }
        let Some(until_renewal) = self.until_renewal().await else {
            return Ok(Some(Exit::Renew));
        };
        let settings = Arc::clone(&self.shared.settings);
        let mut shutdown = self.shared.shutdown.clone();

        match self.wait_mode(session) {
            Mode::Idle => {
                // NOTE: Dovecot 2.3.19 sends nothing to an IDLE session whose
                // mailbox was deleted and created again, so such a reset
                // shows only at the next renewal, after up to `idle_interval`.
                let wait = settings.idle_interval.min(until_renewal);
                let event = tokio::select! {
                    event = session.idle(wait, settings.liveness_timeout) => event?,
                    _ = shutdown.wait_for(|stop| *stop) => return Ok(Some(Exit::ShutdownInIdle)),
                };
                self.record_activity(session);
                if let IdleEvent::Changed = event {
                    tracing::debug!(mailbox = %self.mailbox, "Mailbox changed");
                }
            }
            Mode::Poll => {
                let wait = settings.poll_interval.min(until_renewal);
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    _ = shutdown.wait_for(|stop| *stop) => return Ok(Some(Exit::Shutdown)),
                }
                session.noop(settings.liveness_timeout).await?;
                self.record_activity(session);
            }
        }
        Ok(None)
    }

    /// Chooses the mode to wait in: the configured one, except `poll` in
    /// place of `idle` when the server does not list IDLE among its
    /// capabilities, which is logged once per watch, not per session.
    fn wait_mode(&mut self, session: &Session) -> Mode {
        let settings = &self.shared.settings;
        if settings.mode != Mode::Idle || session.capabilities().idle() {
            return settings.mode;
        }
        if !self.warned_no_idle {
            self.warned_no_idle = true;
            warn!(
                pipeline = %self.shared.pipeline, account = %self.account(),
                mailbox = %self.mailbox, server = %session.server(),
                poll_interval_ms = settings.poll_interval.as_millis() as u64,
                "IMAP server does not support IDLE; polling every poll_interval instead"
            );
        }

        Mode::Poll
    }

    /// Returns the time left until the access token's refresh point, when
    /// the session is renewed, or `None` when that time has come. The
    /// refresh margin remains before expiry, so the new session signs in
    /// with a fresh token before a server such as Exchange Online ends the
    /// old one.
    async fn until_renewal(&self) -> Option<Duration> {
        let Some(refresh_at) = self.shared.tokens.access_token_refresh_at().await else {
            return Some(Duration::MAX);
        };
        let left = refresh_at.duration_since(SystemTime::now()).ok()?;
        Some(left).filter(|left| !left.is_zero())
    }

    fn record_activity(&self, session: &Session) {
        let at = session.activity().last_time();
        self.shared
            .metrics
            .set_last_activity(self.account(), &self.mailbox, at);
    }

    fn set_connected(&self, connected: bool) {
        self.shared
            .metrics
            .set_connected(self.account(), &self.mailbox, connected);
    }

    fn stopping(&self) -> bool {
        *self.shared.shutdown.borrow()
    }

    /// Marks the mailbox not ready for `reason` and sleeps for `delay`.
    /// Returns [`WatchError::Shutdown`] when the process stops meanwhile.
    async fn wait_to_retry(&self, reason: String, delay: Duration) -> Result<(), WatchError> {
        self.shared.readiness.not_ready(&self.component(), reason);
        self.sleep(delay).await;
        if self.stopping() {
            return Err(WatchError::Shutdown);
        }
        Ok(())
    }

    /// Sleeps for `delay`, or less when the process stops.
    async fn sleep(&self, delay: Duration) {
        let mut shutdown = self.shared.shutdown.clone();
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = shutdown.wait_for(|stop| *stop) => {}
        }
    }

    /// Saves the checkpoint in the state directory, then in the broker
    /// that replicas share, so that the broker's copy is never ahead of
    /// the published mail.
    async fn save(&self, checkpoint: Checkpoint) -> Result<(), WatchError> {
        self.commit(Vec::new(), checkpoint).await
    }

    /// Remembers the keys of a batch's published mail, then saves the
    /// checkpoint that follows the batch, as [`MailboxWatch::save`] does.
    ///
    /// A failed write, such as on a full disk, is retried here until it
    /// succeeds or the process stops, with the mailbox not ready
    /// meanwhile. Reconnecting instead would publish the confirmed batch
    /// again at every attempt.
    async fn commit(&self, keys: Vec<String>, checkpoint: Checkpoint) -> Result<(), WatchError> {
        let bytes: Arc<[u8]> = self.checkpoints.encode(checkpoint).into();
        let mut keys: Arc<[String]> = keys.into();
        let mut backoff = Backoff::new(CHECKPOINT_RETRY_BASE, CHECKPOINT_RETRY_CAP);
        while let Err(unsaved) = self.checkpoints.commit(keys.clone(), bytes.clone()).await {
            if unsaved.keys_written {
                keys = Arc::new([]);
            }
            let err = unsaved.error;
            let delay = backoff.next_delay();
            error!(
                pipeline = %self.shared.pipeline, account = %self.account(), mailbox = %self.mailbox,
                error = %err, error_type = err.kind(), attempt = backoff.attempts(),
                retry_in_ms = delay.as_millis() as u64,
                "Checkpoint not saved; retrying, and publishing no further batch until it is saved"
            );
            if let Err(stop) = self.wait_to_retry(err.to_string(), delay).await {
                warn!(
                    pipeline = %self.shared.pipeline, mailbox = %self.mailbox,
                    last_uid = checkpoint.last_uid,
                    "Stopping before the checkpoint was saved, so the batch up to this UID is published again after the restart"
                );
                return Err(stop);
            }
        }
        if backoff.attempts() > 0 {
            info!(
                pipeline = %self.shared.pipeline, mailbox = %self.mailbox,
                attempts = backoff.attempts() + 1, "Checkpoint saved after failed attempts"
            );
            self.shared.readiness.ready(&self.component());
        }
        if let Some(shared) = &self.shared.shared_checkpoints {
            shared.save(&self.mailbox, bytes.to_vec()).await?;
        }
        Ok(())
    }
}
