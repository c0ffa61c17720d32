//! A validated send request: what [`super::parse`] returns and the MIME
//! builder reads. Every value in it can go into a header line as it is.

use super::Limits;
use super::address::{Mailbox, mailbox};
use super::attachment::{DecodedAttachment, decode_all};
use super::document::{Header, OutboundMail};
use super::headers::extra_headers;
use super::rejection::{RejectReason, Rejection};
use super::syntax::{message_id as message_id_of, referenced_id, single_line};

/// Maximum `id` length, in characters. It is echoed in status events and
/// dead-letter headers, which brokers keep small.
const MAX_ID: usize = 256;

/// A send request that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    id: Option<String>,
    from: Option<Mailbox>,
    to: Vec<Mailbox>,
    cc: Vec<Mailbox>,
    reply_to: Vec<Mailbox>,
    recipients: Vec<String>,
    subject: Option<String>,
    text: Option<String>,
    html: Option<String>,
    message_id: Option<String>,
    in_reply_to: Option<String>,
    references: Vec<String>,
    headers: Vec<Header>,
    attachments: Vec<DecodedAttachment>,
}

impl Request {
    /// Validates a deserialized document. Fields are checked in document
    /// order and the first problem is returned.
    pub fn validate(mail: &OutboundMail, limits: &Limits) -> Result<Self, Rejection> {
        let id = id(mail.id.as_deref())?;
        let from = mail
            .from
            .as_ref()
            .map(|from| mailbox("from", from))
            .transpose()?;
        let to = mailboxes("to", &mail.to)?;
        let cc = mailboxes("cc", &mail.cc)?;
        let bcc = mailboxes("bcc", &mail.bcc)?;
        let reply_to = mailboxes("reply_to", &mail.reply_to)?;
        let recipients = envelope_recipients([&to, &cc, &bcc]);
        if recipients.is_empty() {
            return Err(Rejection::at(
                RejectReason::NoRecipient,
                "to",
                "no recipient: give at least one address in to, cc or bcc",
            ));
        }

        let subject = line("subject", mail.subject.as_deref())?;
        let message_id = mail.message_id.as_deref();
        let message_id = message_id
            .map(|raw| message_id_of("message_id", raw))
            .transpose()?;
        let (in_reply_to, references) = threading(mail)?;
        let headers = extra_headers(&mail.headers)?;
        let attachments = decode_all(&mail.attachments, mail.html.is_some(), limits)?;

        Ok(Self {
            id,
            from,
            to,
            cc,
            reply_to,
            recipients,
            subject,
            text: mail.text.clone(),
            html: mail.html.clone(),
            message_id,
            in_reply_to,
            references,
            headers,
            attachments,
        })
    }

    /// Returns the caller's idempotency key.
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// Returns every envelope recipient, To then Cc then Bcc, each address
    /// once, with ASCII domains.
    pub fn recipients(&self) -> &[String] {
        &self.recipients
    }

    /// Returns the address of the request's own `from`; `None` means the
    /// account address is the sender.
    pub fn from_address(&self) -> Option<&str> {
        self.from.as_ref().map(Mailbox::address)
    }

    /// Returns the author mailbox of the request.
    pub fn from(&self) -> Option<&Mailbox> {
        self.from.as_ref()
    }

    /// Returns the `To` mailboxes.
    pub fn to(&self) -> &[Mailbox] {
        &self.to
    }

    /// Returns the `Cc` mailboxes.
    pub fn cc(&self) -> &[Mailbox] {
        &self.cc
    }

    /// Returns the `Reply-To` mailboxes.
    pub fn reply_to(&self) -> &[Mailbox] {
        &self.reply_to
    }

    /// Returns the subject line.
    pub fn subject(&self) -> Option<&str> {
        self.subject.as_deref()
    }

    /// Returns the plain-text body.
    pub fn text(&self) -> Option<&str> {
        self.text.as_deref()
    }

    /// Returns the HTML body.
    pub fn html(&self) -> Option<&str> {
        self.html.as_deref()
    }

    /// Returns the Message-ID given by the request, without angle brackets.
    pub fn message_id(&self) -> Option<&str> {
        self.message_id.as_deref()
    }

    /// Returns the `In-Reply-To` msg-id without angle brackets.
    pub fn in_reply_to(&self) -> Option<&str> {
        self.in_reply_to.as_deref()
    }

    /// Returns the `References` msg-ids without angle brackets, oldest
    /// first.
    pub fn references(&self) -> &[String] {
        &self.references
    }

    /// Returns the extra header fields in document order.
    pub fn headers(&self) -> &[Header] {
        &self.headers
    }

    /// Returns the attachments and inline parts in document order.
    pub fn attachments(&self) -> &[DecodedAttachment] {
        &self.attachments
    }
}

fn mailboxes(field: &str, list: &[super::Address]) -> Result<Vec<Mailbox>, Rejection> {
    list.iter()
        .enumerate()
        .map(|(index, address)| mailbox(&format!("{field}[{index}]"), address))
        .collect()
}

/// Joins the recipient lists, dropping repeated addresses. The local part
/// is compared as written because RFC 5321 lets the receiver decide
/// whether its case matters; the domain is already lowercase.
fn envelope_recipients(lists: [&[Mailbox]; 3]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for mailbox in lists.into_iter().flatten() {
        if !out.iter().any(|known| known == mailbox.address()) {
            out.push(mailbox.address().to_owned());
        }
    }

    out
}

pub(super) fn id(raw: Option<&str>) -> Result<Option<String>, Rejection> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    single_line("id", raw)?;
    if raw.is_empty() || raw.chars().count() > MAX_ID {
        return Err(Rejection::at(
            RejectReason::InvalidField,
            "id",
            format!("must have 1 to {MAX_ID} characters"),
        ));
    }

    Ok(Some(raw.to_owned()))
}

fn line(field: &str, value: Option<&str>) -> Result<Option<String>, Rejection> {
    if let Some(value) = value {
        single_line(field, value)?;
    }

    Ok(value.map(str::to_owned))
}

/// Resolves `In-Reply-To` and `References`. `reply_to_id` stands for the
/// message replied to, so it fills both when they are not given.
fn threading(mail: &OutboundMail) -> Result<(Option<String>, Vec<String>), Rejection> {
    let check =
        |field: &str, raw: Option<&str>| raw.map(|raw| referenced_id(field, raw)).transpose();
    let in_reply_to = check("in_reply_to", mail.in_reply_to.as_deref())?;
    let reply_to_id = check("reply_to_id", mail.reply_to_id.as_deref())?;
    let mut references = mail
        .references
        .iter()
        .enumerate()
        .map(|(index, raw)| referenced_id(&format!("references[{index}]"), raw))
        .collect::<Result<Vec<_>, _>>()?;

    let Some(parent) = reply_to_id else {
        return Ok((in_reply_to, references));
    };
    if in_reply_to.as_ref().is_some_and(|given| *given != parent) {
        return Err(Rejection::at(
            RejectReason::InvalidField,
            "reply_to_id",
            "names a different message than in_reply_to; give only one of them",
        ));
    }
    if references.is_empty() {
        references.push(parent.clone());
    }

    Ok((Some(parent), references))
}
