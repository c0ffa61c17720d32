//! SELECT (RFC 3501 section 6.3.1) and UID SEARCH (section 6.4.4) of a
//! mailbox given in UTF-8.

use async_imap::imap_proto::{MailboxDatum, Response, ResponseCode, Status as DataStatus};

use super::error::ImapError;
use super::mailbox_name;
use super::session::Session;
use super::wire::{Completion, Status};

/// A mailbox opened by [`Session::select`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Selected {
    /// `UIDVALIDITY`: UIDs from an earlier value mean nothing now.
    pub uidvalidity: u32,
    /// `UIDNEXT`, the UID that the next mail will get, when the server sent it.
    pub uidnext: Option<u32>,
    /// Number of mails in the mailbox (`EXISTS`).
    pub exists: u32,
}

/// Data of SELECT's untagged responses.
#[derive(Default)]
struct SelectData {
    uidvalidity: Option<u32>,
    uidnext: Option<u32>,
    exists: u32,
}

impl SelectData {
    /// Stores what `response` reports. Returns false for other responses.
    fn take(&mut self, response: &Response<'_>) -> bool {
        match response {
            Response::MailboxData(MailboxDatum::Exists(count)) => self.exists = *count,
            Response::Data {
                status: DataStatus::Ok,
                code: Some(ResponseCode::UidValidity(value)),
                ..
            } => self.uidvalidity = Some(*value),
            Response::Data {
                status: DataStatus::Ok,
                code: Some(ResponseCode::UidNext(value)),
                ..
            } => self.uidnext = Some(*value),
            _ => return false,
        }
        true
    }
}

impl Session {
    /// Opens `mailbox`, given in UTF-8 as configured, after encoding it in
    /// modified UTF-7. The first successful SELECT makes the session healthy.
    ///
    /// # Errors
    ///
    /// [`ImapError::MailboxNotFound`] when the mailbox does not exist,
    /// [`ImapError::MailboxAccessDenied`] for Microsoft 365's "User is
    /// authenticated but not connected" and for a `BYE` before the first
    /// successful SELECT, [`ImapError::NoUidValidity`] when the server sent
    /// no UIDVALIDITY, and connection errors.
    pub async fn select(&mut self, mailbox: &str) -> Result<Selected, ImapError> {
        let quoted = quote_mailbox(mailbox)?;
        self.selected = None;

        let mut data = SelectData::default();
        let command = format!("SELECT {quoted}");
        let completion = self
            .command("SELECT", Some(mailbox), &command, |response| {
                data.take(response)
            })
            .await?;
        if !completion.is_ok() {
            return Err(self.select_failed(mailbox, &completion));
        }

        let uidvalidity = data.uidvalidity.ok_or_else(|| ImapError::NoUidValidity {
            server: self.settings.label.clone(),
            mailbox: mailbox.to_owned(),
        })?;
        self.selected = Some(mailbox.to_owned());
        self.opened = true;
        self.changed = false;
        Ok(Selected {
            uidvalidity,
            uidnext: data.uidnext,
            exists: data.exists,
        })
    }

    /// Creates `mailbox` (UTF-8) unless it exists, so that mail can be
    /// moved there. RFC 5530's `ALREADYEXISTS` code counts as success.
    ///
    /// # Errors
    ///
    /// [`ImapError::Command`] when the server refuses for another reason,
    /// and connection errors.
    pub async fn create_if_missing(&mut self, mailbox: &str) -> Result<(), ImapError> {
        let quoted = quote_mailbox(mailbox)?;
        let command = format!("CREATE {quoted}");
        let completion = self
            .command("CREATE", Some(mailbox), &command, |_| false)
            .await?;
        if completion.is_ok() || completion.code.as_deref() == Some("ALREADYEXISTS") {
            return Ok(());
        }

        Err(ImapError::Command {
            server: self.settings.label.clone(),
            command: "CREATE",
            mailbox: Some(mailbox.to_owned()),
            bad: completion.status == Status::Bad,
            text: completion.describe(),
        })
    }

    /// Returns the UIDs above `uid` in the selected mailbox, in ascending
    /// order. `UID SEARCH UID n+1:*` also matches the last mail when every
    /// UID is below `n+1`, because `*` stands for the largest UID in use, so
    /// the result is filtered.
    ///
    /// # Errors
    ///
    /// [`ImapError::NotSelected`] before SELECT, [`ImapError::Command`] for
    /// a `NO` or `BAD`, and connection errors.
    pub async fn uids_after(&mut self, uid: u32) -> Result<Vec<u32>, ImapError> {
        let Some(first) = uid.checked_add(1) else {
            return Ok(Vec::new());
        };
        let mut uids = self.search(&format!("UID {first}:*")).await?;

        uids.retain(|found| *found > uid);
        Ok(uids)
    }

    /// Returns the UIDs of mails without `\Seen` in the selected mailbox,
    /// in ascending order.
    ///
    /// # Errors
    ///
    /// As for [`Session::uids_after`].
    pub async fn uids_unseen(&mut self) -> Result<Vec<u32>, ImapError> {
        self.search("UNSEEN").await
    }

    async fn search(&mut self, criteria: &str) -> Result<Vec<u32>, ImapError> {
        let mailbox = self.require_selected("UID SEARCH")?;
        let mut uids = Vec::new();
        let command = format!("UID SEARCH {criteria}");
        let completion = self
            .command(
                "UID SEARCH",
                Some(&mailbox),
                &command,
                |response| match response {
                    Response::MailboxData(MailboxDatum::Search(found)) => {
                        uids.extend_from_slice(found);
                        true
                    }
                    _ => false,
                },
            )
            .await?;
        if !completion.is_ok() {
            return Err(self.command_failed("UID SEARCH", Some(&mailbox), &completion));
        }

        uids.sort_unstable();
        uids.dedup();
        Ok(uids)
    }

    fn select_failed(&self, mailbox: &str, completion: &Completion) -> ImapError {
        let server = self.settings.label.clone();
        let mailbox = mailbox.to_owned();
        let text = completion.describe();
        match classify_select(completion) {
            SelectFailure::AccessDenied => self.access_denied(Some(&mailbox), text),
            SelectFailure::NotFound => ImapError::MailboxNotFound {
                server,
                mailbox,
                text,
            },
            SelectFailure::Other => ImapError::Select {
                server,
                mailbox,
                text,
            },
        }
    }
}

/// Encodes a UTF-8 mailbox name and quotes it (RFC 3501 section 4.3).
pub(super) fn quote_mailbox(mailbox: &str) -> Result<String, ImapError> {
    if mailbox.is_empty() {
        return Err(ImapError::InvalidMailbox {
            mailbox: mailbox.to_owned(),
            reason: "the name is empty".to_owned(),
        });
    }
    // Modified UTF-7 contains only printable ASCII, so no CR or LF.
    let encoded = mailbox_name::encode(mailbox);
    let escaped = encoded.replace('\\', "\\\\").replace('"', "\\\"");

    Ok(format!("\"{escaped}\""))
}

/// Cause of a failed SELECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SelectFailure {
    AccessDenied,
    NotFound,
    Other,
}

/// Classifies a failed SELECT by its status, response code and text.
pub(super) fn classify_select(completion: &Completion) -> SelectFailure {
    if is_not_connected(completion) {
        return SelectFailure::AccessDenied;
    }
    let text = completion.text.to_ascii_lowercase();
    let missing_code = matches!(
        completion.code.as_deref(),
        Some("NONEXISTENT" | "TRYCREATE")
    );
    let missing_text = [
        "doesn't exist",
        "does not exist",
        "not found",
        "unknown mailbox",
        "no such",
    ]
    .iter()
    .any(|phrase| text.contains(phrase));

    match completion.status == Status::No && (missing_code || missing_text) {
        true => SelectFailure::NotFound,
        false => SelectFailure::Other,
    }
}

/// Microsoft 365's reply, as `BAD` or `NO`, when the signed-in identity
/// cannot open the mailbox.
pub(super) fn is_not_connected(completion: &Completion) -> bool {
    let text = completion.text.to_ascii_lowercase();
    completion.status != Status::Ok && text.contains("authenticated but not connected")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn completion(status: Status, code: Option<&str>, text: &str) -> Completion {
        Completion {
            status,
            code: code.map(str::to_owned),
            text: text.to_owned(),
        }
    }

    #[test]
    fn microsoft_not_connected_is_access_denied() {
        let text = "User is authenticated but not connected.";

        assert_eq!(
            classify_select(&completion(Status::Bad, None, text)),
            SelectFailure::AccessDenied
        );
        assert_eq!(
            classify_select(&completion(Status::No, None, text)),
            SelectFailure::AccessDenied
        );
    }

    #[test]
    fn dovecot_nonexistent_is_not_found() {
        let reply = completion(Status::No, Some("NONEXISTENT"), "Mailbox doesn't exist: X");

        assert_eq!(classify_select(&reply), SelectFailure::NotFound);
    }

    #[test]
    fn missing_mailbox_text_is_not_found() {
        for text in ["Folder not found", "Unknown Mailbox: X", "No such mailbox"] {
            let reply = completion(Status::No, None, text);
            assert_eq!(classify_select(&reply), SelectFailure::NotFound, "{text}");
        }
    }

    #[test]
    fn other_select_failure() {
        let reply = completion(Status::No, Some("SERVERBUG"), "Internal error");

        assert_eq!(classify_select(&reply), SelectFailure::Other);
    }

    #[test]
    fn mailbox_quoted_after_encoding() {
        assert_eq!(
            quote_mailbox("Entwürfe & Belege").unwrap(),
            "\"Entw&APw-rfe &- Belege\""
        );
        assert_eq!(quote_mailbox("a\"b\\c").unwrap(), "\"a\\\"b\\\\c\"");
    }

    #[test]
    fn empty_mailbox_rejected() {
        assert_eq!(quote_mailbox("").unwrap_err().kind(), "invalid_mailbox");
    }

    #[test]
    fn line_break_in_mailbox_encoded() {
        let quoted = quote_mailbox("a\r\nb").unwrap();

        assert!(!quoted.contains(['\r', '\n']), "{quoted}");
    }
}
