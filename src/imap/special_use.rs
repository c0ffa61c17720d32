//! Mailboxes found by their special-use attribute (RFC 6154), such as
//! `\Trash` or `\Archive`, from the reply to LIST.

use async_imap::imap_proto::{MailboxDatum, NameAttribute, Response};

use super::error::ImapError;
use super::mailbox_name;
use super::session::Session;

/// One mailbox of a LIST reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Listed {
    /// Attributes with their backslash, such as `\Trash` or `\Noselect`.
    pub(super) attributes: Vec<String>,
    /// The name as the server sent it, in modified UTF-7.
    pub(super) name: String,
}

impl Listed {
    /// Returns the mailbox of a `LIST` response, or `None` for other
    /// responses.
    pub(super) fn from_response(response: &Response<'_>) -> Option<Listed> {
        let Response::MailboxData(MailboxDatum::List {
            name_attributes,
            name,
            ..
        }) = response
        else {
            return None;
        };
        Some(Listed {
            attributes: name_attributes.iter().map(attribute_name).collect(),
            name: name.to_string(),
        })
    }
}

fn attribute_name(attribute: &NameAttribute<'_>) -> String {
    let name = match attribute {
        NameAttribute::NoInferiors => "\\Noinferiors",
        NameAttribute::NoSelect => "\\Noselect",
        NameAttribute::Marked => "\\Marked",
        NameAttribute::Unmarked => "\\Unmarked",
        NameAttribute::All => "\\All",
        NameAttribute::Archive => "\\Archive",
        NameAttribute::Drafts => "\\Drafts",
        NameAttribute::Flagged => "\\Flagged",
        NameAttribute::Junk => "\\Junk",
        NameAttribute::Sent => "\\Sent",
        NameAttribute::Trash => "\\Trash",
        NameAttribute::Extension(other) => other,
        // Variants that later versions of the parser add match nothing.
        _ => "",
    };
    name.to_owned()
}

/// Returns the UTF-8 name of the first selectable mailbox in `listed` that
/// carries `attribute`, compared without regard to case. A name that is
/// not valid modified UTF-7 is used as sent.
pub(super) fn find(listed: &[Listed], attribute: &str) -> Option<String> {
    let has = |mailbox: &Listed, wanted: &str| {
        mailbox
            .attributes
            .iter()
            .any(|name| name.eq_ignore_ascii_case(wanted))
    };
    listed
        .iter()
        .find(|mailbox| has(mailbox, attribute) && !has(mailbox, "\\Noselect"))
        .map(|mailbox| mailbox_name::decode(&mailbox.name).unwrap_or_else(|_| mailbox.name.clone()))
}

impl Session {
    /// Returns the UTF-8 name of the mailbox that carries the special-use
    /// `attribute`, such as `\Trash`, which the setting `key` names. A
    /// server that offers SPECIAL-USE is asked only for mailboxes with
    /// such attributes. Other servers list every mailbox, and some of them
    /// still mark special-use mailboxes.
    ///
    /// # Errors
    ///
    /// [`ImapError::SpecialUseNotFound`] when no mailbox carries the
    /// attribute, [`ImapError::Command`] when LIST fails, and connection
    /// errors. No mailbox is ever created.
    pub async fn find_special_use(
        &mut self,
        key: &'static str,
        attribute: &str,
    ) -> Result<String, ImapError> {
        let command = match self.capabilities.has("SPECIAL-USE") {
            true => "LIST (SPECIAL-USE) \"\" \"*\"",
            false => "LIST \"\" \"*\"",
        };
        let mut listed = Vec::new();
        let completion = self
            .command(
                "LIST",
                None,
                command,
                |response| match Listed::from_response(response) {
                    Some(mailbox) => {
                        listed.push(mailbox);
                        true
                    }
                    None => false,
                },
            )
            .await?;
        if !completion.is_ok() {
            return Err(self.command_failed("LIST", None, &completion));
        }

        find(&listed, attribute).ok_or_else(|| ImapError::SpecialUseNotFound {
            server: self.settings.label.clone(),
            key,
            attribute: attribute.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use async_imap::imap_proto::parser::parse_response;

    use super::*;

    /// The LIST reply of a German Exchange mailbox with Japanese, Cyrillic
    /// and emoji folders.
    const EXCHANGE_LIST: &str = concat!(
        "* LIST (\\HasChildren) \"/\" INBOX\r\n",
        "* LIST (\\HasNoChildren) \"/\" \"INBOX/&ZeVnLIqe-\"\r\n",
        "* LIST (\\HasNoChildren \\Trash) \"/\" \"Gel&APY-schte Elemente\"\r\n",
        "* LIST (\\HasNoChildren \\Drafts) \"/\" \"Entw&APw-rfe\"\r\n",
        "* LIST (\\HasNoChildren \\Sent) \"/\" \"Gesendete Elemente\"\r\n",
        "* LIST (\\HasNoChildren) \"/\" \"Rechnungen &- Belege\"\r\n",
        "* LIST (\\HasNoChildren) \"/\" \"Projekte &2D3cwQ-\"\r\n",
        "* LIST (\\HasNoChildren) \"/\" \"&BBIERQQ+BDQETwRJBDgENQ-/&BCEERwQ1BEIEMA-\"\r\n",
    );

    fn parse(reply: &str) -> Vec<Listed> {
        let mut rest = reply.as_bytes();
        let mut listed = Vec::new();
        while !rest.is_empty() {
            let (left, response) = parse_response(rest).expect("a valid LIST response");
            listed.push(Listed::from_response(&response).expect("a LIST response"));
            rest = left;
        }
        listed
    }

    #[test]
    fn localized_special_use_mailboxes_found() {
        let listed = parse(EXCHANGE_LIST);

        assert_eq!(listed.len(), 8);
        assert_eq!(
            find(&listed, "\\Trash").as_deref(),
            Some("Gelöschte Elemente")
        );
        assert_eq!(find(&listed, "\\Drafts").as_deref(), Some("Entwürfe"));
        assert_eq!(
            find(&listed, "\\Sent").as_deref(),
            Some("Gesendete Elemente")
        );
    }

    #[test]
    fn missing_attribute_finds_nothing() {
        let listed = parse(EXCHANGE_LIST);

        for attribute in ["\\Junk", "\\Archive", "\\All", "\\Flagged"] {
            assert_eq!(find(&listed, attribute), None, "{attribute}");
        }
    }

    #[test]
    fn attribute_compared_without_case() {
        let listed = parse("* LIST (\\JUNK) \".\" \"Spam\"\r\n");

        assert_eq!(find(&listed, "\\Junk").as_deref(), Some("Spam"));
    }

    #[test]
    fn unselectable_mailbox_skipped() {
        let listed = parse(concat!(
            "* LIST (\\Noselect \\Archive) \"/\" \"Archiv\"\r\n",
            "* LIST (\\Archive) \"/\" \"Archiv/2026\"\r\n",
        ));

        assert_eq!(find(&listed, "\\Archive").as_deref(), Some("Archiv/2026"));
    }

    #[test]
    fn other_responses_ignored() {
        let (_, response) = parse_response(b"* 3 EXISTS\r\n").unwrap();

        assert_eq!(Listed::from_response(&response), None);
    }
}
