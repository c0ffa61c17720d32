//! Post-processing of mails after the broker confirmed their publication:
//! `UID STORE` (RFC 3501 section 6.4.6), `UID MOVE` (RFC 6851), or `UID
//! COPY` with `UID EXPUNGE` (RFC 4315).

use super::capabilities::Capabilities;
use super::error::ImapError;
use super::select::{SelectFailure, classify_select, quote_mailbox};
use super::session::Session;
use super::uid_set;

/// UIDs per command, which keeps command lines short.
const BATCH: usize = 1000;

/// Action on published mails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostProcess {
    /// Nothing; the checkpoint alone keeps the mail from being published again.
    Keep,
    /// Adds `\Seen`.
    MarkSeen,
    /// Adds a keyword, such as `$Published`.
    AddKeyword(String),
    /// Moves the mails to a mailbox, given in UTF-8.
    Move(String),
    /// Sets `\Deleted` and expunges the mails, and only these.
    Delete,
}

/// One command of an action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Step {
    pub(crate) name: &'static str,
    pub(crate) line: String,
}

/// Reason that an action cannot run on a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PlanError {
    /// Neither MOVE nor UIDPLUS for a move, or no UIDPLUS for a delete.
    NoUidExpunge,
    InvalidKeyword(String),
    InvalidMailbox(String),
}

/// Returns the commands that apply `action` to the UID set `set`.
///
/// Without UIDPLUS there is no `UID EXPUNGE`, and a plain EXPUNGE would
/// also remove other mails that carry `\Deleted`, so moves without MOVE
/// and deletes are rejected.
pub(crate) fn plan(
    action: &PostProcess,
    capabilities: &Capabilities,
    set: &str,
) -> Result<Vec<Step>, PlanError> {
    let step = |name, line: String| Step { name, line };
    let delete = [
        step(
            "UID STORE",
            format!("UID STORE {set} +FLAGS.SILENT (\\Deleted)"),
        ),
        step("UID EXPUNGE", format!("UID EXPUNGE {set}")),
    ];

    let steps = match action {
        PostProcess::Keep => Vec::new(),
        PostProcess::MarkSeen => vec![step(
            "UID STORE",
            format!("UID STORE {set} +FLAGS.SILENT (\\Seen)"),
        )],
        PostProcess::AddKeyword(keyword) => {
            if !is_atom(keyword) {
                return Err(PlanError::InvalidKeyword(keyword.clone()));
            }
            let line = format!("UID STORE {set} +FLAGS.SILENT ({keyword})");
            vec![step("UID STORE", line)]
        }
        PostProcess::Move(mailbox) => {
            let quoted =
                quote_mailbox(mailbox).map_err(|_| PlanError::InvalidMailbox(mailbox.clone()))?;
            if capabilities.r#move() {
                vec![step("UID MOVE", format!("UID MOVE {set} {quoted}"))]
            } else if capabilities.uidplus() {
                let mut steps = vec![step("UID COPY", format!("UID COPY {set} {quoted}"))];
                steps.extend(delete);
                steps
            } else {
                return Err(PlanError::NoUidExpunge);
            }
        }
        PostProcess::Delete => match capabilities.uidplus() {
            true => delete.to_vec(),
            false => return Err(PlanError::NoUidExpunge),
        },
    };
    Ok(steps)
}

/// Returns whether `keyword` is an RFC 3501 `atom` that is no system flag.
fn is_atom(keyword: &str) -> bool {
    let special = |c: char| c.is_ascii_control() || " (){%*\"\\]".contains(c) || !c.is_ascii();
    !keyword.is_empty() && !keyword.contains(special)
}

impl Session {
    /// Applies `action` to the mails `uids` of the selected mailbox.
    ///
    /// # Errors
    ///
    /// [`ImapError::Unsupported`] for a move on a server with neither MOVE
    /// nor UIDPLUS, or a delete without UIDPLUS; [`ImapError::InvalidKeyword`];
    /// [`ImapError::MailboxNotFound`] for a move to a missing mailbox;
    /// [`ImapError::Command`] for other `NO` and `BAD` replies, and
    /// connection errors.
    pub async fn post_process(
        &mut self,
        uids: &[u32],
        action: &PostProcess,
    ) -> Result<(), ImapError> {
        if uids.is_empty() || *action == PostProcess::Keep {
            return Ok(());
        }
        let mailbox = self.require_selected("post-processing")?;
        let uids = uid_set::normalize(uids);

        for batch in uids.chunks(BATCH) {
            let set = uid_set::format(batch);
            let steps = plan(action, &self.capabilities, &set)
                .map_err(|error| self.plan_failed(action, error))?;
            for step in steps {
                self.run_step(&mailbox, action, &step).await?;
            }
        }

        tracing::debug!(
            server = %self.server(),
            mailbox = %mailbox,
            count = uids.len(),
            action = ?action,
            "Post-processed mails"
        );
        Ok(())
    }

    async fn run_step(
        &mut self,
        mailbox: &str,
        action: &PostProcess,
        step: &Step,
    ) -> Result<(), ImapError> {
        let completion = self
            .command(step.name, Some(mailbox), &step.line, |_| false)
            .await?;
        if completion.is_ok() {
            return Ok(());
        }

        // A missing target mailbox gets `NO [TRYCREATE]` (RFC 3501 section 6.4.7).
        if let PostProcess::Move(target) = action
            && matches!(step.name, "UID MOVE" | "UID COPY")
            && classify_select(&completion) == SelectFailure::NotFound
        {
            return Err(ImapError::MailboxNotFound {
                server: self.server().to_owned(),
                mailbox: target.clone(),
                text: completion.describe(),
            });
        }
        Err(self.command_failed(step.name, Some(mailbox), &completion))
    }

    fn plan_failed(&self, action: &PostProcess, error: PlanError) -> ImapError {
        let server = self.server().to_owned();
        match error {
            PlanError::InvalidKeyword(keyword) => ImapError::InvalidKeyword { keyword },
            PlanError::InvalidMailbox(mailbox) => ImapError::InvalidMailbox {
                mailbox,
                reason: "the name is empty".to_owned(),
            },
            PlanError::NoUidExpunge => ImapError::Unsupported {
                server,
                feature: match action {
                    PostProcess::Move(_) => {
                        "MOVE or UIDPLUS, needed to move only the published mails"
                    }
                    _ => "UIDPLUS, needed to delete only the published mails",
                },
                fix: "a plain EXPUNGE could remove other mails marked \\Deleted, so use \
                      after_publish = \"flag\" or \"none\" with this server",
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use async_imap::imap_proto::types::Capability;

    use super::*;

    fn capabilities(names: &[&'static str]) -> Capabilities {
        let list: Vec<Capability<'_>> = names
            .iter()
            .map(|name| Capability::Atom(Cow::Borrowed(*name)))
            .collect();
        Capabilities::from_list(&list)
    }

    fn lines(steps: Vec<Step>) -> Vec<String> {
        steps.into_iter().map(|step| step.line).collect()
    }

    #[test]
    fn mark_seen_is_silent_store() {
        let steps = plan(&PostProcess::MarkSeen, &capabilities(&[]), "1:3").unwrap();

        assert_eq!(lines(steps), ["UID STORE 1:3 +FLAGS.SILENT (\\Seen)"]);
    }

    #[test]
    fn keyword_stored() {
        let action = PostProcess::AddKeyword("$Published".into());

        let steps = plan(&action, &capabilities(&[]), "5").unwrap();

        assert_eq!(lines(steps), ["UID STORE 5 +FLAGS.SILENT ($Published)"]);
    }

    #[test]
    fn invalid_keywords_rejected() {
        for keyword in ["", "two words", "a)b", "\\Seen", "x\r\ny", "ü", "a]"] {
            let action = PostProcess::AddKeyword(keyword.into());
            let error = plan(&action, &capabilities(&[]), "1").unwrap_err();
            assert_eq!(
                error,
                PlanError::InvalidKeyword(keyword.into()),
                "{keyword:?}"
            );
        }
    }

    #[test]
    fn move_uses_move_when_offered() {
        let action = PostProcess::Move("Entwürfe".into());

        let steps = plan(&action, &capabilities(&["MOVE", "UIDPLUS"]), "1:2").unwrap();

        assert_eq!(lines(steps), ["UID MOVE 1:2 \"Entw&APw-rfe\""]);
    }

    #[test]
    fn move_without_move_copies_and_expunges_by_uid() {
        let action = PostProcess::Move("Archive".into());

        let steps = plan(&action, &capabilities(&["UIDPLUS"]), "4,6").unwrap();

        assert_eq!(
            lines(steps),
            [
                "UID COPY 4,6 \"Archive\"",
                "UID STORE 4,6 +FLAGS.SILENT (\\Deleted)",
                "UID EXPUNGE 4,6",
            ]
        );
    }

    #[test]
    fn move_without_move_or_uidplus_rejected() {
        let action = PostProcess::Move("Archive".into());

        let error = plan(&action, &capabilities(&["IDLE"]), "1").unwrap_err();

        assert_eq!(error, PlanError::NoUidExpunge);
    }

    #[test]
    fn delete_needs_uidplus() {
        let steps = plan(&PostProcess::Delete, &capabilities(&["UIDPLUS"]), "9").unwrap();
        let error = plan(&PostProcess::Delete, &capabilities(&["MOVE"]), "9").unwrap_err();

        assert_eq!(
            lines(steps),
            ["UID STORE 9 +FLAGS.SILENT (\\Deleted)", "UID EXPUNGE 9"]
        );
        assert_eq!(error, PlanError::NoUidExpunge);
    }

    #[test]
    fn keep_sends_nothing() {
        assert!(
            plan(&PostProcess::Keep, &capabilities(&[]), "1")
                .unwrap()
                .is_empty()
        );
    }
}
