//! IDLE (RFC 2177) with a re-IDLE interval and a liveness check.
//!
//! Servers may end an IDLE after 30 minutes (RFC 2177 section 3), so the
//! caller re-IDLEs well before that. Any server output, including
//! keepalives such as Dovecot's `* OK Still here`, resets the liveness
//! timer. When nothing arrives for the liveness time, DONE must get its
//! tagged OK within the DONE timeout, or the connection counts as dead:
//! a half-open TCP connection otherwise looks idle forever.

use std::time::{Duration, Instant};

use async_imap::imap_proto::{MailboxDatum, Response};

use super::error::ImapError;
use super::session::Session;
use super::wire::{self, Completion, Read};

/// Why [`Session::idle`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleEvent {
    /// The mailbox changed (`EXISTS`, `EXPUNGE`, `FETCH` or `RECENT`).
    Changed,
    /// The re-IDLE time passed, or the liveness check succeeded, and the
    /// server confirmed DONE, so the caller should IDLE again.
    Timeout,
}

/// Meaning of one response during IDLE.
enum Event {
    /// The tagged completion of the IDLE command.
    Completed(Completion),
    Continue,
    Change,
    Other,
}

impl Event {
    fn of(response: &Response<'_>, tag: &str) -> Self {
        if let Some(completion) = wire::completion_of(response, tag) {
            return Self::Completed(completion);
        }
        match response {
            Response::Continue { .. } => Self::Continue,
            other if is_change(other) => Self::Change,
            _ => Self::Other,
        }
    }
}

/// End of the wait inside IDLE.
enum Wait {
    Changed,
    Deadline,
    Silent,
    /// The server completed IDLE by itself.
    Ended(Completion),
}

impl Session {
    /// Waits in IDLE on the selected mailbox for a change, at most
    /// `reidle_after`. `liveness` is the longest server silence before
    /// DONE checks the connection. An `EXISTS` that arrived during an
    /// earlier command returns [`IdleEvent::Changed`] at once.
    ///
    /// # Errors
    ///
    /// [`ImapError::Unsupported`] when the server does not offer IDLE,
    /// [`ImapError::DeadConnection`] when DONE gets no reply in time,
    /// [`ImapError::Bye`] when the server ends the session, and other
    /// connection errors.
    pub async fn idle(
        &mut self,
        reidle_after: Duration,
        liveness: Duration,
    ) -> Result<IdleEvent, ImapError> {
        if !self.capabilities.idle() {
            return Err(ImapError::Unsupported {
                server: self.server().to_owned(),
                feature: "IDLE (RFC 2177)",
                fix: "set mode = \"poll\" in the inbound pipeline",
            });
        }
        let mailbox = self.require_selected("IDLE")?;
        if std::mem::take(&mut self.changed) {
            return Ok(IdleEvent::Changed);
        }

        let tag = self.tags.next_tag();
        wire::send(&mut self.inner, &format!("{tag} IDLE"))
            .await
            .map_err(|error| self.wire_failed("IDLE", Some(&mailbox), error))?;
        let changed_early = self.await_continuation(&tag, &mailbox).await?;

        let wait = match changed_early {
            true => Wait::Changed,
            false => self.wait(&tag, &mailbox, reidle_after, liveness).await?,
        };
        self.finish(&tag, &mailbox, wait).await
    }

    /// Reads up to the `+` continuation. Returns whether a change arrived
    /// before it.
    async fn await_continuation(&mut self, tag: &str, mailbox: &str) -> Result<bool, ImapError> {
        let timeout = self.settings.timeouts.response;
        let mut changed = false;
        loop {
            let event = wire::next(&mut self.inner, timeout, |response| {
                Event::of(response, tag)
            });
            let event = match event.await {
                Ok(event) => event,
                Err(wire::WireError::Silent(_)) => return Err(self.dead()),
                Err(error) => return Err(self.wire_failed("IDLE", Some(mailbox), error)),
            };
            match event {
                Event::Completed(completion) => {
                    return Err(self.command_failed("IDLE", Some(mailbox), &completion));
                }
                Event::Continue => return Ok(changed),
                Event::Change => changed = true,
                Event::Other => {}
            }
        }
    }

    /// Waits in IDLE for a change, the deadline or too long a silence.
    async fn wait(
        &mut self,
        tag: &str,
        mailbox: &str,
        reidle_after: Duration,
        liveness: Duration,
    ) -> Result<Wait, ImapError> {
        let deadline = Instant::now() + reidle_after;
        loop {
            let read = wire::read_until(&mut self.inner, liveness, Some(deadline), |response| {
                Event::of(response, tag)
            });
            let read = read
                .await
                .map_err(|error| self.wire_failed("IDLE", Some(mailbox), error))?;
            match read {
                Read::Response(Event::Completed(completion)) => return Ok(Wait::Ended(completion)),
                Read::Response(Event::Change) => return Ok(Wait::Changed),
                Read::Response(_) => {}
                Read::Deadline => return Ok(Wait::Deadline),
                Read::Silent => return Ok(Wait::Silent),
            }
        }
    }

    /// Sends DONE and reads the tagged completion within the DONE timeout.
    async fn finish(
        &mut self,
        tag: &str,
        mailbox: &str,
        wait: Wait,
    ) -> Result<IdleEvent, ImapError> {
        if let Wait::Silent = wait {
            tracing::debug!(server = %self.server(), mailbox, "IDLE silent, checking with DONE");
        }
        let mut event = match wait {
            Wait::Changed => IdleEvent::Changed,
            Wait::Deadline | Wait::Silent => IdleEvent::Timeout,
            Wait::Ended(completion) => return self.ended(mailbox, &completion),
        };
        wire::send(&mut self.inner, "DONE")
            .await
            .map_err(|error| self.wire_failed("DONE", Some(mailbox), error))?;

        let timeout = self.settings.timeouts.done;
        let deadline = Instant::now() + timeout;
        loop {
            let read = wire::read_until(&mut self.inner, timeout, Some(deadline), |response| {
                Event::of(response, tag)
            });
            let read = read
                .await
                .map_err(|error| self.wire_failed("DONE", Some(mailbox), error))?;
            let Read::Response(event_read) = read else {
                return Err(self.dead());
            };
            match event_read {
                Event::Completed(completion) if completion.is_ok() => return Ok(event),
                Event::Completed(completion) => {
                    return Err(self.command_failed("IDLE", Some(mailbox), &completion));
                }
                Event::Change => event = IdleEvent::Changed,
                Event::Continue | Event::Other => {}
            }
        }
    }

    fn dead(&self) -> ImapError {
        ImapError::DeadConnection {
            server: self.server().to_owned(),
            silent_for: self.activity.last().elapsed(),
        }
    }

    /// Handles an IDLE that the server completed without DONE.
    fn ended(&self, mailbox: &str, completion: &Completion) -> Result<IdleEvent, ImapError> {
        match completion.is_ok() {
            true => Ok(IdleEvent::Timeout),
            false => Err(self.command_failed("IDLE", Some(mailbox), completion)),
        }
    }
}

/// Returns whether an untagged response reports a change of the mailbox.
fn is_change(response: &Response<'_>) -> bool {
    matches!(
        response,
        Response::MailboxData(MailboxDatum::Exists(_) | MailboxDatum::Recent(_))
            | Response::Expunge(_)
            | Response::Fetch(..)
            | Response::Vanished { .. }
    )
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use async_imap::imap_proto::Status;

    use super::*;

    #[test]
    fn changes_recognized() {
        let changes = [
            Response::MailboxData(MailboxDatum::Exists(4)),
            Response::MailboxData(MailboxDatum::Recent(1)),
            Response::Expunge(2),
            Response::Fetch(3, Vec::new()),
        ];

        for change in &changes {
            assert!(is_change(change), "{change:?}");
        }
    }

    #[test]
    fn keepalive_is_no_change() {
        let keepalive = Response::Data {
            status: Status::Ok,
            code: None,
            information: Some(Cow::Borrowed("Still here")),
        };

        assert!(!is_change(&keepalive));
    }
}
