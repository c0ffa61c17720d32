//! Where a mailbox watch starts after SELECT: from its checkpoint, from
//! `start_from` on the first watch, or from the start of the new UID
//! space after a UIDVALIDITY change.

use tracing::{info, warn};

use super::{MailboxWatch, WatchError};
use crate::broker::Record;
use crate::config::{StartFrom, UidvalidityChange};
use crate::imap::{Selected, Session};
use crate::mail::{MAILBOX_RESET_SCHEMA, MailboxReset};
use crate::pipeline::checkpoint::{Checkpoint, Filter};

impl MailboxWatch {
    /// Returns the checkpoint to go on from, saving a new one when there
    /// was none or when the UIDVALIDITY changed.
    pub(super) async fn position(
        &mut self,
        session: &mut Session,
        selected: &Selected,
    ) -> Result<Checkpoint, WatchError> {
        match self.checkpoints.load()? {
            Some(checkpoint) if checkpoint.uidvalidity == selected.uidvalidity => {
                // The broker may not have this replica's checkpoint yet, as
                // after coordination was turned on; the next owner reads it.
                if self.shared.shared_checkpoints.is_some() {
                    self.save(checkpoint).await?;
                }
                Ok(checkpoint)
            }
            Some(old) => self.reset(session, old, selected).await,
            None => self.first_watch(session, selected).await,
        }
    }

    /// Applies `start_from` to a mailbox without checkpoint.
    async fn first_watch(
        &mut self,
        session: &mut Session,
        selected: &Selected,
    ) -> Result<Checkpoint, WatchError> {
        let start_from = self.shared.settings.start_from;
        let highest = session.uids_after(0).await?.last().copied().unwrap_or(0);
        let (last_uid, filter) = match start_from {
            StartFrom::All => (0, None),
            StartFrom::New => (highest, None),
            StartFrom::Unseen => (0, Some(Filter::Seen { through: highest })),
        };
        let checkpoint = Checkpoint {
            uidvalidity: selected.uidvalidity,
            last_uid,
            filter: filter.filter(|filter| filter.through() > 0),
        };
        info!(
            pipeline = %self.shared.pipeline, mailbox = %self.mailbox,
            start_from = ?start_from, uidvalidity = selected.uidvalidity, last_uid,
            "First watch of mailbox"
        );
        self.save(checkpoint).await?;

        Ok(checkpoint)
    }

    /// Handles a UIDVALIDITY change: the old UIDs mean nothing in the new
    /// UID space, so the watch starts over at UID 0 and, with
    /// `skip_known`, skips mail it published before. The `mailbox_reset`
    /// event is confirmed before the new checkpoint is saved, so a crash
    /// repeats the event rather than losing it.
    async fn reset(
        &mut self,
        session: &mut Session,
        old: Checkpoint,
        selected: &Selected,
    ) -> Result<Checkpoint, WatchError> {
        let policy = self.shared.settings.on_uidvalidity_change;
        warn!(
            pipeline = %self.shared.pipeline, account = %self.account(), mailbox = %self.mailbox,
            previous_uidvalidity = old.uidvalidity, uidvalidity = selected.uidvalidity,
            policy = ?policy,
            "Mailbox UIDVALIDITY changed; starting over in the new UID space"
        );
        self.shared
            .metrics
            .record_reset(self.account(), &self.mailbox);
        let event = MailboxReset::new(
            self.account(),
            &self.mailbox,
            old.uidvalidity,
            selected.uidvalidity,
            chrono::Utc::now(),
            policy_name(policy),
        );
        let record = Record {
            key: event.id.clone(),
            payload: event.to_json(),
            schema: MAILBOX_RESET_SCHEMA,
        };
        self.publish_until_confirmed(session, &[record]).await?;

        let highest = session.uids_after(0).await?.last().copied().unwrap_or(0);
        let filter = match policy {
            UidvalidityChange::SkipKnown if highest > 0 => Some(Filter::Known { through: highest }),
            _ => None,
        };
        let checkpoint = Checkpoint {
            uidvalidity: selected.uidvalidity,
            last_uid: 0,
            filter,
        };
        self.save(checkpoint).await?;

        Ok(checkpoint)
    }
}

fn policy_name(policy: UidvalidityChange) -> &'static str {
    match policy {
        UidvalidityChange::SkipKnown => "skip_known",
        UidvalidityChange::Republish => "republish",
    }
}
