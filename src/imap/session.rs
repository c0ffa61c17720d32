//! A signed-in IMAP session: its state, CAPABILITY, NOOP and LOGOUT (RFC
//! 3501 sections 6.1.1 to 6.1.3), and the command runner that the
//! modules for SELECT, fetching, IDLE and post-processing share.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_imap::imap_proto::{MailboxDatum, Response};
use tokio::io::AsyncWriteExt;

use super::authenticate::SignedIn;
use super::capabilities::Capabilities;
use super::connector::Settings;
use super::error::ImapError;
use super::select::is_not_connected;
use super::transport::{Activity, Transport};
use super::wire::{self, Completion, Status, Tags, WireError};
use crate::auth::{AccessToken, mechanism_name};

/// A signed-in IMAP session of one account.
///
/// A command gives up after the connector's response timeout without
/// server output, while [`Session::idle`] and [`Session::noop`] take their
/// own limits. After an error whose [`ImapError::is_transient`] is true,
/// drop the session and connect again.
#[derive(Debug)]
pub struct Session {
    pub(super) inner: async_imap::Session<Transport>,
    pub(super) settings: Arc<Settings>,
    pub(super) capabilities: Capabilities,
    pub(super) tags: Tags,
    /// UTF-8 name of the selected mailbox.
    pub(super) selected: Option<String>,
    /// Whether a SELECT succeeded on this connection, which makes the
    /// session healthy.
    pub(super) opened: bool,
    /// Whether an `EXISTS` or `RECENT` arrived during another command, so
    /// that the next IDLE returns at once instead of missing new mail.
    pub(super) changed: bool,
    pub(super) activity: Activity,
    /// The access token of the sign-in.
    pub(super) token: AccessToken,
}

impl Session {
    /// Reads the capabilities after sign-in, which servers may change.
    pub(crate) async fn start(
        settings: Arc<Settings>,
        signed_in: SignedIn,
    ) -> Result<Session, ImapError> {
        let activity = signed_in.session.get_ref().activity();
        let mut session = Session {
            inner: signed_in.session,
            settings,
            capabilities: Capabilities::default(),
            tags: signed_in.tags,
            selected: None,
            opened: false,
            changed: false,
            activity,
            token: signed_in.token,
        };
        session.capabilities = session.read_capabilities().await?;

        let settings = &session.settings;
        tracing::info!(
            account = %settings.account,
            server = %settings.label,
            mechanism = mechanism_name(signed_in.mechanism),
            tls = session.inner.get_ref().is_tls(),
            "Signed in to IMAP server"
        );
        Ok(session)
    }

    /// Returns the access token that the session signed in with, which a
    /// caller passes to [`TokenProvider::force_refresh`] after the server
    /// ended the session because that token expired.
    ///
    /// [`TokenProvider::force_refresh`]: crate::auth::TokenProvider::force_refresh
    pub(crate) fn access_token(&self) -> &AccessToken {
        &self.token
    }

    /// Returns the capabilities that the server listed after sign-in.
    pub fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    /// Returns the server as `host:port`.
    pub fn server(&self) -> &str {
        &self.settings.label
    }

    /// Returns the UTF-8 name of the selected mailbox.
    pub fn selected(&self) -> Option<&str> {
        self.selected.as_deref()
    }

    /// Returns the instant of the last server output, including IDLE
    /// keepalives such as `* OK Still here`.
    pub fn last_activity(&self) -> Instant {
        self.activity.last()
    }

    /// Returns a handle to the last server output that stays readable
    /// while the session waits in [`Session::idle`].
    pub fn activity(&self) -> Activity {
        self.activity.clone()
    }

    async fn read_capabilities(&mut self) -> Result<Capabilities, ImapError> {
        let mut capabilities = None;
        let completion = self
            .command(
                "CAPABILITY",
                None,
                "CAPABILITY",
                |response| match response {
                    Response::Capabilities(list) => {
                        capabilities = Some(Capabilities::from_list(list));
                        true
                    }
                    _ => false,
                },
            )
            .await?;

        match (completion.is_ok(), capabilities) {
            (true, Some(capabilities)) => Ok(capabilities),
            _ => Err(self.command_failed("CAPABILITY", None, &completion)),
        }
    }

    /// Sends NOOP and waits at most `timeout` for its reply, to check that
    /// the connection is alive. New mail that the reply reports makes the
    /// next [`Session::idle`] return at once.
    ///
    /// # Errors
    ///
    /// [`ImapError::DeadConnection`] when the reply does not come in time,
    /// and connection errors.
    pub async fn noop(&mut self, timeout: Duration) -> Result<(), ImapError> {
        let tag = self.tags.next_tag();
        let mut changed = false;
        let result = wire::run(&mut self.inner, &tag, "NOOP", timeout, |response| {
            changed |= is_new_mail(response);
        })
        .await;
        self.changed |= changed;

        let completion = match result {
            Ok(completion) => completion,
            Err(WireError::Silent(_)) => {
                return Err(ImapError::DeadConnection {
                    server: self.settings.label.clone(),
                    silent_for: self.activity.last().elapsed(),
                });
            }
            Err(error) => return Err(self.wire_failed("NOOP", None, error)),
        };
        match completion.is_ok() {
            true => Ok(()),
            false => Err(self.command_failed("NOOP", None, &completion)),
        }
    }

    /// Ends the session with LOGOUT, waiting at most the DONE timeout, and
    /// closes the connection. Errors are ignored, because the session ends
    /// either way.
    pub async fn logout(mut self) {
        let tag = self.tags.next_tag();
        let timeout = self.settings.timeouts.done;
        let logout = wire::run(&mut self.inner, &tag, "LOGOUT", timeout, |_| {}).await;
        // The server's `BYE` before its tagged OK is the expected reply.
        if let Err(error) = logout
            && !matches!(error, WireError::Bye(_))
        {
            tracing::debug!(server = %self.settings.label, error = ?error, "LOGOUT not confirmed");
        }

        let _ = tokio::time::timeout(timeout, self.inner.get_mut().shutdown()).await;
    }

    /// Runs `command`, passing untagged responses to `untagged`, which
    /// returns whether it used the response. Unused `EXISTS` and `RECENT`
    /// responses mark new mail for the next IDLE.
    pub(super) async fn command(
        &mut self,
        name: &'static str,
        mailbox: Option<&str>,
        command: &str,
        mut untagged: impl FnMut(&Response<'_>) -> bool,
    ) -> Result<Completion, ImapError> {
        let tag = self.tags.next_tag();
        let timeout = self.settings.timeouts.response;
        let mut changed = false;
        let result = wire::run(&mut self.inner, &tag, command, timeout, |response| {
            if !untagged(response) {
                changed |= is_new_mail(response);
            }
        })
        .await;
        self.changed |= changed;

        result.map_err(|error| self.wire_failed(name, mailbox, error))
    }

    /// Returns the selected mailbox, or [`ImapError::NotSelected`].
    pub(super) fn require_selected(&self, command: &'static str) -> Result<String, ImapError> {
        self.selected.clone().ok_or_else(|| ImapError::NotSelected {
            server: self.settings.label.clone(),
            command,
        })
    }

    /// Converts a connection failure during `command`. A `BYE` before the
    /// first successful SELECT is how Microsoft 365 ends sessions of
    /// identities that cannot open the mailbox.
    pub(super) fn wire_failed(
        &self,
        command: &str,
        mailbox: Option<&str>,
        error: WireError,
    ) -> ImapError {
        match error {
            WireError::Bye(text) if !self.opened => {
                self.access_denied(mailbox, format!("BYE {text}"))
            }
            other => other.into_imap(&self.settings.label, &format!("the reply to {command}")),
        }
    }

    pub(super) fn access_denied(&self, mailbox: Option<&str>, text: String) -> ImapError {
        let settings = &self.settings;
        ImapError::MailboxAccessDenied {
            server: settings.label.clone(),
            account: settings.account.clone(),
            user: settings.address.clone(),
            mailbox: mailbox.map(str::to_owned),
            text,
        }
    }

    /// Converts a `NO` or `BAD` completion of `command`.
    pub(super) fn command_failed(
        &self,
        command: &'static str,
        mailbox: Option<&str>,
        completion: &Completion,
    ) -> ImapError {
        if is_not_connected(completion) {
            return self.access_denied(mailbox, completion.describe());
        }
        ImapError::Command {
            server: self.settings.label.clone(),
            command,
            mailbox: mailbox.map(str::to_owned),
            bad: completion.status == Status::Bad,
            text: completion.describe(),
        }
    }
}

/// Returns whether an untagged response announces new mail.
fn is_new_mail(response: &Response<'_>) -> bool {
    matches!(
        response,
        Response::MailboxData(MailboxDatum::Exists(_) | MailboxDatum::Recent(_))
    )
}
