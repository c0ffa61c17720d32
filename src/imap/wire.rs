//! Tagged commands and server responses over async-imap's connection.
//!
//! async-imap 0.11.3 parses responses well, but its command helpers end a
//! `SEARCH`, `CAPABILITY` or `NOOP` without error when the connection
//! closes, and some ignore a tagged `NO`. So every command except
//! AUTHENTICATE goes through [`run`], which reads until its own tagged
//! completion and reports a closed connection or `BYE` as errors.
//! Commands are written straight to the transport, so they bypass
//! async-imap's trace log.

use std::io;
use std::time::{Duration, Instant};

use async_imap::imap_proto::{self, Response, ResponseCode};
use tokio::io::AsyncWriteExt;

use super::error::ImapError;
use super::transport::{Activity, Transport};

/// async-imap's connection, which both its client and session wrap.
pub(crate) type Connection = async_imap::Connection<Transport>;

/// Status of a tagged completion (RFC 3501 section 7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    Ok,
    No,
    Bad,
}

impl Status {
    /// Converts imap-proto's status; `PREAUTH` and `BYE` are never tagged,
    /// so they count as `BAD`.
    fn of(status: &imap_proto::Status) -> Self {
        match status {
            imap_proto::Status::Ok => Self::Ok,
            imap_proto::Status::No => Self::No,
            _ => Self::Bad,
        }
    }
}

/// The tagged status line that completes a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Completion {
    pub(crate) status: Status,
    /// Response code in upper case without brackets, such as `TRYCREATE`.
    pub(crate) code: Option<String>,
    /// Human-readable text after the code.
    pub(crate) text: String,
}

impl Completion {
    pub(crate) fn is_ok(&self) -> bool {
        self.status == Status::Ok
    }

    /// Returns the status line as the server wrote it, without the tag.
    pub(crate) fn describe(&self) -> String {
        describe(self.status, self.code.as_deref(), &self.text)
    }
}

/// Failure below the level of a command's meaning.
#[derive(Debug)]
pub(crate) enum WireError {
    /// Reading or writing failed, or a response could not be parsed.
    Io(io::Error),
    /// The connection closed without `BYE`.
    Closed,
    /// The server sent `BYE` with this text.
    Bye(String),
    /// Nothing arrived for the response timeout.
    Silent(Duration),
}

impl WireError {
    /// Converts the failure into the session error for `step`, such as
    /// "the reply to SELECT".
    pub(crate) fn into_imap(self, server: &str, step: &str) -> ImapError {
        let server = server.to_owned();
        let step = step.to_owned();
        match self {
            Self::Io(source) => ImapError::Io {
                server,
                step,
                source,
            },
            Self::Closed => ImapError::ConnectionLost { server, step },
            Self::Bye(text) => ImapError::Bye { server, text },
            Self::Silent(after) => ImapError::Timeout {
                server,
                step,
                after,
            },
        }
    }
}

/// Outcome of waiting for the next response.
pub(crate) enum Read<R> {
    /// Result of the caller's closure for the response.
    Response(R),
    /// Nothing arrived for the given silence.
    Silent,
    /// The deadline passed while output kept arriving or none was due.
    Deadline,
}

/// Generator of command tags. async-imap's own tags, used only for
/// AUTHENTICATE, start with `A`, so these start with `M`.
#[derive(Debug, Default)]
pub(crate) struct Tags(u32);

impl Tags {
    pub(crate) fn next_tag(&mut self) -> String {
        self.0 = self.0.wrapping_add(1);
        format!("M{:04}", self.0)
    }
}

/// Writes `line` and CRLF, then flushes.
pub(crate) async fn send(conn: &mut Connection, line: &str) -> Result<(), WireError> {
    let stream = conn.get_mut();
    let written = async {
        stream.write_all(line.as_bytes()).await?;
        stream.write_all(b"\r\n").await?;
        stream.flush().await
    };

    written.await.map_err(WireError::Io)
}

/// Sends `tag command` and passes every untagged response to `untagged`
/// until the command's tagged completion arrives.
pub(crate) async fn run(
    conn: &mut Connection,
    tag: &str,
    command: &str,
    timeout: Duration,
    mut untagged: impl FnMut(&Response<'_>),
) -> Result<Completion, WireError> {
    send(conn, &format!("{tag} {command}")).await?;

    loop {
        let completion = next(conn, timeout, |response| {
            let completion = completion_of(response, tag);
            if completion.is_none() {
                untagged(response);
            }
            completion
        })
        .await?;
        if let Some(completion) = completion {
            return Ok(completion);
        }
    }
}

/// Reads the next response and returns what `handle` makes of it, failing
/// after `timeout` without any bytes from the server. A response that
/// keeps arriving, such as a large message literal, does not time out.
pub(crate) async fn next<R>(
    conn: &mut Connection,
    timeout: Duration,
    handle: impl FnOnce(&Response<'_>) -> R,
) -> Result<R, WireError> {
    match read_until(conn, timeout, None, handle).await? {
        Read::Response(result) => Ok(result),
        Read::Silent | Read::Deadline => Err(WireError::Silent(timeout)),
    }
}

/// Waits for the next response until the server has been silent for
/// `silence`, counted from the last output or the start of the wait,
/// whichever is later, or until `deadline`, and returns what `handle`
/// makes of it.
/// `BYE` is returned as an error.
pub(crate) async fn read_until<R>(
    conn: &mut Connection,
    silence: Duration,
    deadline: Option<Instant>,
    handle: impl FnOnce(&Response<'_>) -> R,
) -> Result<Read<R>, WireError> {
    let activity: Activity = conn.get_ref().activity();
    let started = Instant::now();
    // Silence counts from the last output, but never from before the wait.
    let silent_at = || activity.last().max(started) + silence;
    let read = conn.read_response();
    tokio::pin!(read);

    loop {
        let wake = deadline.map_or(silent_at(), |deadline| deadline.min(silent_at()));
        let result = tokio::select! {
            result = &mut read => result,
            () = tokio::time::sleep_until(wake.into()) => {
                let now = Instant::now();
                if silent_at() <= now {
                    return Ok(Read::Silent);
                }
                if deadline.is_some_and(|deadline| deadline <= now) {
                    return Ok(Read::Deadline);
                }
                continue;
            }
        };

        let response = result.map_err(WireError::Io)?.ok_or(WireError::Closed)?;
        return match bye_text(response.parsed()) {
            Some(text) => Err(WireError::Bye(text)),
            None => Ok(Read::Response(handle(response.parsed()))),
        };
    }
}

fn bye_text(response: &Response<'_>) -> Option<String> {
    let Response::Data {
        status: imap_proto::Status::Bye,
        code,
        information,
    } = response
    else {
        return None;
    };

    let (code, text) = split_code(code.as_ref(), information.as_deref());
    Some(with_code(code.as_deref(), &text))
}

/// Returns the completion when `response` is the tagged reply to `tag`.
pub(crate) fn completion_of(response: &Response<'_>, tag: &str) -> Option<Completion> {
    match response {
        Response::Done { tag: done_tag, .. } if done_tag.0 == tag => any_completion(response),
        _ => None,
    }
}

/// Returns the completion of any tagged response.
pub(crate) fn any_completion(response: &Response<'_>) -> Option<Completion> {
    let Response::Done {
        status,
        code,
        information,
        ..
    } = response
    else {
        return None;
    };

    let (code, text) = split_code(code.as_ref(), information.as_deref());
    Some(Completion {
        status: Status::of(status),
        code,
        text,
    })
}

/// Returns the response code and text of a status response. imap-proto
/// parses only the RFC 3501 codes; others, such as RFC 5530's
/// `AUTHENTICATIONFAILED`, stay at the start of the text.
pub(crate) fn split_code(
    code: Option<&ResponseCode<'_>>,
    information: Option<&str>,
) -> (Option<String>, String) {
    let text = information.unwrap_or_default().trim();
    if let Some(name) = code.and_then(known_code_name) {
        return (Some(name.to_owned()), text.to_owned());
    }
    let Some((inside, rest)) = text.strip_prefix('[').and_then(|rest| rest.split_once(']')) else {
        return (None, text.to_owned());
    };

    let name = inside.split(' ').next().unwrap_or_default();
    (Some(name.to_ascii_uppercase()), rest.trim().to_owned())
}

fn known_code_name(code: &ResponseCode<'_>) -> Option<&'static str> {
    let name = match code {
        ResponseCode::Alert => "ALERT",
        ResponseCode::BadCharset(_) => "BADCHARSET",
        ResponseCode::Capabilities(_) => "CAPABILITY",
        ResponseCode::Parse => "PARSE",
        ResponseCode::PermanentFlags(_) => "PERMANENTFLAGS",
        ResponseCode::ReadOnly => "READ-ONLY",
        ResponseCode::ReadWrite => "READ-WRITE",
        ResponseCode::TryCreate => "TRYCREATE",
        ResponseCode::UidNext(_) => "UIDNEXT",
        ResponseCode::UidValidity(_) => "UIDVALIDITY",
        ResponseCode::Unseen(_) => "UNSEEN",
        ResponseCode::AppendUid(..) => "APPENDUID",
        ResponseCode::CopyUid(..) => "COPYUID",
        ResponseCode::UidNotSticky => "UIDNOTSTICKY",
        ResponseCode::HighestModSeq(_) => "HIGHESTMODSEQ",
        ResponseCode::MetadataLongEntries(_) => "METADATA LONGENTRIES",
        ResponseCode::MetadataMaxSize(_) => "METADATA MAXSIZE",
        ResponseCode::MetadataTooMany => "METADATA TOOMANY",
        ResponseCode::MetadataNoPrivate => "METADATA NOPRIVATE",
        _ => return None,
    };
    Some(name)
}

/// Describes an untagged response for a message, such as an unexpected
/// greeting: `PREAUTH text` for a status response, else its parsed form.
pub(crate) fn describe_response(response: &Response<'_>) -> String {
    let Response::Data {
        status,
        code,
        information,
    } = response
    else {
        return format!("{response:?}").chars().take(200).collect();
    };
    let (code, text) = split_code(code.as_ref(), information.as_deref());
    let status = match status {
        imap_proto::Status::Ok => "OK",
        imap_proto::Status::No => "NO",
        imap_proto::Status::Bad => "BAD",
        imap_proto::Status::PreAuth => "PREAUTH",
        imap_proto::Status::Bye => "BYE",
    };

    format!("{status} {}", with_code(code.as_deref(), &text))
}

/// Writes a response code before its text, as in `[TRYCREATE] text`.
pub(crate) fn with_code(code: Option<&str>, text: &str) -> String {
    match code {
        Some(code) => format!("[{code}] {text}"),
        None => text.to_owned(),
    }
}

fn describe(status: Status, code: Option<&str>, text: &str) -> String {
    let status = match status {
        Status::Ok => "OK",
        Status::No => "NO",
        Status::Bad => "BAD",
    };
    format!("{status} {}", with_code(code, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_code_split_from_text() {
        let (code, text) = split_code(None, Some("[AUTHENTICATIONFAILED] Authentication failed."));

        assert_eq!(code.as_deref(), Some("AUTHENTICATIONFAILED"));
        assert_eq!(text, "Authentication failed.");
    }

    #[test]
    fn known_code_named() {
        let (code, text) = split_code(
            Some(&ResponseCode::TryCreate),
            Some("Mailbox doesn't exist"),
        );

        assert_eq!(code.as_deref(), Some("TRYCREATE"));
        assert_eq!(text, "Mailbox doesn't exist");
    }

    #[test]
    fn text_without_code() {
        let (code, text) = split_code(None, Some("User is authenticated but not connected."));

        assert_eq!(code, None);
        assert_eq!(text, "User is authenticated but not connected.");
    }

    #[test]
    fn code_with_arguments_keeps_name() {
        let (code, _) = split_code(None, Some("[NOPERM x y] denied"));

        assert_eq!(code.as_deref(), Some("NOPERM"));
    }

    #[test]
    fn completion_described() {
        let completion = Completion {
            status: Status::No,
            code: Some("NONEXISTENT".into()),
            text: "Mailbox doesn't exist: X".into(),
        };

        assert_eq!(
            completion.describe(),
            "NO [NONEXISTENT] Mailbox doesn't exist: X"
        );
    }

    #[test]
    fn tags_increase() {
        let mut tags = Tags::default();

        assert_eq!(tags.next_tag(), "M0001");
        assert_eq!(tags.next_tag(), "M0002");
    }
}
