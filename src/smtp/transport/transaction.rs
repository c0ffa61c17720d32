//! One mail transaction (RFC 5321 section 3.3): MAIL FROM, one RCPT TO per
//! recipient, DATA and the message.
//!
//! Recipients that the server rejects are reported and the message goes
//! to the others, so that a resend never duplicates it for those that got
//! it. An error reply to MAIL FROM, RCPT TO or DATA is followed by RSET,
//! and an error reply to the message data ends the transaction by itself,
//! so the connection stays usable either way.

use std::str::FromStr;

use lettre::Address;
use lettre::transport::smtp::commands::{Data, Mail, Rcpt, Rset};
use lettre::transport::smtp::extension::{MailBodyParameter, MailParameter};

use super::connect::{Connection, Settings, wire_error};
use super::error::SmtpError;
use super::rejection::transaction_error;
use super::reply::Reply;
use super::sender::Accepted;
use super::wire::DataError;

/// The sender and recipients of one message, checked before connecting.
#[derive(Debug, Clone)]
pub(crate) struct Envelope {
    from: String,
    sender: Option<Address>,
    recipients: Vec<(String, Address)>,
    non_ascii: bool,
}

impl Envelope {
    /// Parses the addresses. An empty `from` is the null reverse-path
    /// `<>` of delivery status notifications (RFC 5321 section 4.5.5).
    pub(crate) fn new(from: &str, recipients: &[String]) -> Result<Self, SmtpError> {
        let sender = match from.is_empty() {
            true => None,
            false => Some(parse_address(from)?),
        };
        if recipients.is_empty() {
            return Err(SmtpError::InvalidAddress {
                address: String::new(),
                reason: "the message has no recipient".to_owned(),
            });
        }
        let recipients = recipients
            .iter()
            .map(|recipient| Ok((recipient.clone(), parse_address(recipient)?)))
            .collect::<Result<Vec<_>, SmtpError>>()?;

        let non_ascii = !from.is_ascii() || recipients.iter().any(|(text, _)| !text.is_ascii());
        Ok(Self {
            from: from.to_owned(),
            sender,
            recipients,
            non_ascii,
        })
    }
}

fn parse_address(address: &str) -> Result<Address, SmtpError> {
    Address::from_str(address).map_err(|error| SmtpError::InvalidAddress {
        address: address.to_owned(),
        reason: format!("{error}; give a bare address such as bob@example.com"),
    })
}

/// Failure of a transaction, by what it leaves of the connection.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The server rejected the message, and the connection is usable.
    Rejected(SmtpError),
    /// The connection closed before the message data was complete, so
    /// nothing was delivered and another connection may send it.
    Closed(SmtpError),
    /// The connection is unusable, and resending may duplicate the message.
    Broken(SmtpError),
}

/// Runs one transaction on a signed-in connection. When the server
/// announced PIPELINING (RFC 2920), MAIL FROM, every RCPT TO and DATA go
/// out in one write and their replies are read in order. A message then
/// costs two round trips instead of three plus one per recipient.
pub(crate) async fn submit(
    connection: &mut Connection,
    settings: &Settings,
    envelope: &Envelope,
    message: &[u8],
) -> Result<Accepted, Failure> {
    let parameters = mail_parameters(connection, settings, envelope, message)?;
    let mail = Mail::new(envelope.sender.clone(), parameters).to_string();
    let rcpts: Vec<String> = envelope
        .recipients
        .iter()
        .map(|(_, address)| Rcpt::new(address.clone(), Vec::new()).to_string())
        .collect();
    let group_bytes = mail.len() + rcpts.iter().map(String::len).sum::<usize>();
    let pipelining = connection.capabilities.has("PIPELINING") && group_bytes <= MAX_GROUP_BYTES;
    let replies = match pipelining {
        true => pipelined(connection, settings, envelope, &mail, &rcpts).await?,
        false => one_by_one(connection, settings, &mail, &rcpts).await?,
    };

    if !replies.mail.is_positive() {
        end_refused_data(connection, settings, replies.data.as_ref()).await?;
        return Err(reject(connection, settings, envelope, "MAIL FROM", replies.mail).await);
    }
    let mut rejected = Vec::new();
    for ((text, _), reply) in envelope.recipients.iter().zip(replies.rcpts) {
        if !reply.is_positive() {
            rejected.push((text.clone(), reply));
        }
    }
    let reply = match replies.data {
        Some(reply) if rejected.len() < envelope.recipients.len() => reply,
        data => {
            end_refused_data(connection, settings, data.as_ref()).await?;
            let error = SmtpError::RecipientsRejected {
                server: settings.label.clone(),
                rejected,
            };
            return Err(reset(connection, settings, error).await);
        }
    };
    if reply.is_positive() && reply.code != 354 {
        // A 2xx here is the reply to some other command: the replies are out of
        // step, so nothing on this connection can be trusted.
        return Err(Failure::Broken(SmtpError::Protocol {
            server: settings.label.clone(),
            step: "the reply to DATA".to_owned(),
            detail: format!(
                "expected 354 but got {} {}, so the server sent an unrequested reply",
                reply.code,
                reply.text()
            ),
        }));
    }
    if reply.code != 354 {
        return Err(reject(connection, settings, envelope, "DATA", reply).await);
    }

    let reply = send_data(connection, settings, message).await?;
    match reply.is_positive() {
        true => Ok(accepted(reply, rejected)),
        false => Err(Failure::Rejected(transaction_error(
            &settings.label,
            "the message",
            &envelope.from,
            reply,
        ))),
    }
}

/// The replies to the commands before the message data. `data` is `None`
/// when DATA was not sent.
struct Replies {
    mail: Reply,
    rcpts: Vec<Reply>,
    data: Option<Reply>,
}

/// Largest group of commands written at once. Replies are read only after
/// the whole group went out. A group that filled the socket buffers while
/// the server's replies filled the other direction would stall both
/// sides, so a larger envelope is sent one command at a time.
const MAX_GROUP_BYTES: usize = 16 * 1024;

/// Sends MAIL FROM, the RCPT TO commands and DATA at once and reads their
/// replies.
async fn pipelined(
    connection: &mut Connection,
    settings: &Settings,
    envelope: &Envelope,
    mail: &str,
    rcpts: &[String],
) -> Result<Replies, Failure> {
    let mut group = String::from(mail);
    for rcpt in rcpts {
        group.push_str(rcpt);
    }
    group.push_str(&Data.to_string());
    connection
        .send_group(settings, &group, "MAIL FROM, RCPT TO and DATA")
        .await
        .map_err(lost)?;

    let mail = reply(connection, settings, "the reply to MAIL FROM").await?;
    let mut replies = Vec::with_capacity(rcpts.len());
    for _ in rcpts {
        match reply(connection, settings, "the reply to RCPT TO").await {
            Ok(rcpt) => replies.push(rcpt),
            Err(failure) => return Err(refusal_first(settings, envelope, &mail, &[], failure)),
        }
    }
    match reply(connection, settings, "the reply to DATA").await {
        Ok(data) => Ok(Replies {
            mail,
            rcpts: replies,
            data: Some(data),
        }),
        Err(failure) => Err(refusal_first(settings, envelope, &mail, &replies, failure)),
    }
}

/// Chooses what to report when the connection failed while the replies
/// of a group were read. A server that refused the sender or every
/// recipient and then closed the connection ended the transaction
/// itself, so that refusal is the error, not the closed connection,
/// which would pass for a stale pooled one and be tried again.
fn refusal_first(
    settings: &Settings,
    envelope: &Envelope,
    mail: &Reply,
    rcpts: &[Reply],
    failure: Failure,
) -> Failure {
    if !mail.is_positive() {
        let error = transaction_error(&settings.label, "MAIL FROM", &envelope.from, mail.clone());
        return Failure::Broken(error);
    }
    if !rcpts.is_empty()
        && rcpts.len() == envelope.recipients.len()
        && !rcpts.iter().any(Reply::is_positive)
    {
        let rejected = envelope
            .recipients
            .iter()
            .zip(rcpts)
            .map(|((text, _), reply)| (text.clone(), reply.clone()))
            .collect();
        return Failure::Broken(SmtpError::RecipientsRejected {
            server: settings.label.clone(),
            rejected,
        });
    }
    failure
}

/// Sends MAIL FROM, the RCPT TO commands and DATA one after another,
/// each after the reply to the one before, and stops at a refusal that
/// makes the rest pointless.
async fn one_by_one(
    connection: &mut Connection,
    settings: &Settings,
    mail: &str,
    rcpts: &[String],
) -> Result<Replies, Failure> {
    let mail = command(connection, settings, mail, "the reply to MAIL FROM").await?;
    let mut replies = Replies {
        mail,
        rcpts: Vec::with_capacity(rcpts.len()),
        data: None,
    };
    if !replies.mail.is_positive() {
        return Ok(replies);
    }
    for rcpt in rcpts {
        let reply = command(connection, settings, rcpt, "the reply to RCPT TO").await?;
        replies.rcpts.push(reply);
    }
    if replies.rcpts.iter().any(Reply::is_positive) {
        let data = command(connection, settings, &Data.to_string(), "the reply to DATA").await?;
        replies.data = Some(data);
    }
    Ok(replies)
}

/// Ends the message data at once when a server invited it with 354 after
/// refusing the sender or every recipient, so that the connection is back
/// in step. Nothing is delivered, because
/// the transaction has no valid recipient.
async fn end_refused_data(
    connection: &mut Connection,
    settings: &Settings,
    data: Option<&Reply>,
) -> Result<(), Failure> {
    if data.is_none_or(|reply| reply.code != 354) {
        return Ok(());
    }
    connection
        .send_group(settings, ".\r\n", "the end of an empty message")
        .await
        .map_err(lost)?;
    reply(connection, settings, "the reply to an empty message")
        .await
        .map(drop)
}

/// Returns the MAIL FROM parameters that the message needs, or the
/// failure when the server lacks an extension for it or announced a
/// smaller SIZE.
fn mail_parameters(
    connection: &Connection,
    settings: &Settings,
    envelope: &Envelope,
    message: &[u8],
) -> Result<Vec<MailParameter>, Failure> {
    let capabilities = &connection.capabilities;
    let server = settings.label.clone();
    if let Some(limit) = capabilities.max_message_bytes()
        && message.len() as u64 > limit
    {
        let size = message.len();
        return Err(Failure::Rejected(SmtpError::MessageTooLarge {
            server,
            size,
            limit,
        }));
    }

    let mut parameters = Vec::new();
    let unsupported = |feature, reason| {
        Failure::Rejected(SmtpError::Unsupported {
            server: server.clone(),
            feature,
            reason,
        })
    };
    if envelope.non_ascii {
        if !capabilities.has("SMTPUTF8") {
            return Err(unsupported(
                "SMTPUTF8",
                "the non-ASCII envelope addresses need",
            ));
        }
        parameters.push(MailParameter::SmtpUtfEight);
    }
    if !message.is_ascii() {
        if !capabilities.has("8BITMIME") {
            return Err(unsupported("8BITMIME", "the message's 8-bit content needs"));
        }
        parameters.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }
    Ok(parameters)
}

/// Sends the message and reads the reply to its end. Only a failure
/// after the end line went out is ambiguous.
async fn send_data(
    connection: &mut Connection,
    settings: &Settings,
    message: &[u8],
) -> Result<Reply, Failure> {
    let step = "the message data";
    let sent = connection
        .wire()
        .send_data(message, settings.timeouts.data_end)
        .await;
    let ambiguous = |detail: String| {
        Failure::Broken(SmtpError::Ambiguous {
            server: settings.label.clone(),
            detail,
        })
    };
    match sent {
        Ok(()) => {}
        Err(DataError::Content(error)) => return Err(lost(wire_error(settings, step, error))),
        Err(DataError::End(error)) => {
            return Err(ambiguous(wire_error(settings, step, error).to_string()));
        }
    }

    let reply = connection.wire().reply(settings.timeouts.data_end).await;
    let reply = reply.map_err(|error| {
        ambiguous(wire_error(settings, "the reply to the message", error).to_string())
    })?;
    match reply.code {
        // The server did not take the message and closes the connection.
        421 => Err(Failure::Closed(SmtpError::ConnectionClosed {
            server: settings.label.clone(),
            step: "the reply to the message".to_owned(),
            reply: Some(Box::new(reply)),
        })),
        _ => Ok(reply),
    }
}

fn accepted(reply: Reply, rejected_recipients: Vec<(String, Reply)>) -> Accepted {
    Accepted {
        code: reply.code,
        text: reply.text(),
        enhanced: reply.enhanced,
        rejected_recipients,
    }
}

/// Reads the reply to a command that was sent with others.
async fn reply(
    connection: &mut Connection,
    settings: &Settings,
    step: &str,
) -> Result<Reply, Failure> {
    connection.reply(settings, step).await.map_err(lost)
}

/// Sends one command of the transaction.
async fn command(
    connection: &mut Connection,
    settings: &Settings,
    line: &str,
    step: &str,
) -> Result<Reply, Failure> {
    connection.command(settings, line, step).await.map_err(lost)
}

/// Classifies a failed command: a closed connection allows a resend on
/// another one, a timeout or an unreadable reply does not.
fn lost(error: SmtpError) -> Failure {
    match error {
        SmtpError::ConnectionClosed { .. } | SmtpError::Io { .. } => Failure::Closed(error),
        other => Failure::Broken(other),
    }
}

/// Resets the transaction after an error reply to `command`.
async fn reject(
    connection: &mut Connection,
    settings: &Settings,
    envelope: &Envelope,
    command: &'static str,
    reply: Reply,
) -> Failure {
    let error = transaction_error(&settings.label, command, &envelope.from, reply);
    reset(connection, settings, error).await
}

/// Sends RSET so that the connection can carry the next message. The
/// connection counts as broken when RSET fails.
async fn reset(connection: &mut Connection, settings: &Settings, error: SmtpError) -> Failure {
    let reply = connection
        .command(settings, &Rset.to_string(), "the reply to RSET")
        .await;
    match reply {
        Ok(reply) if reply.is_positive() => Failure::Rejected(error),
        _ => Failure::Broken(error),
    }
}
