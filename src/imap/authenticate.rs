//! Sign-in by `AUTHENTICATE` with XOAUTH2 or OAUTHBEARER (RFC 3501
//! section 6.2.2, RFC 7628), with the initial response on the command
//! line when the server offers SASL-IR (RFC 4959).
//!
//! A rejected token yields an error challenge: a `+` continuation with
//! base64 JSON. The client sends the mechanism's error reply once and then
//! reads the tagged `NO`, sending nothing else meanwhile. A rejection of
//! the token itself leads to one forced refresh and one more attempt, on
//! the same connection while it stays open.

use async_imap::error::{Error as LibraryError, ParseError};
use async_imap::imap_proto::Response;
use async_imap::{Authenticator, Client};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::connector::{Connector, Greeted, Settings};
use super::error::ImapError;
use super::rejection::{Rejection, classify, detail, reply_text};
use super::transport::{SASL_PLACEHOLDER, SASL_PLACEHOLDER_RAW, Transport};
use super::wire::{self, Tags};
use crate::auth::{
    AccessToken, ErrorChallenge, InitialResponse, ProviderError, error_reply, error_reply_base64,
    mechanism_name,
};
use crate::config::Mechanism;
use crate::telemetry::Protocol;

/// A signed-in session and the tags used so far on its connection.
pub(crate) struct SignedIn {
    pub(crate) session: async_imap::Session<Transport>,
    pub(crate) tags: Tags,
    pub(crate) mechanism: Mechanism,
    /// The access token the server accepted.
    pub(crate) token: AccessToken,
}

/// Outcome of one AUTHENTICATE.
enum Attempt {
    SignedIn(async_imap::Session<Transport>, Mechanism),
    Rejected {
        rejection: Rejection,
        detail: String,
        /// The connection, still usable for another attempt.
        client: Client<Transport>,
    },
    /// The connection broke or timed out during the exchange.
    Lost(ImapError),
}

/// Signs in on `greeted`, refreshing the token once after a rejection.
pub(crate) async fn sign_in(
    connector: &Connector,
    greeted: Greeted,
) -> Result<SignedIn, ImapError> {
    let settings = connector.settings();
    let Greeted {
        client,
        capabilities,
        tags,
    } = greeted;
    let token = access_token(settings, settings.tokens.access_token().await)?;

    let client = match attempt(settings, client, &capabilities, &token, 1).await? {
        Attempt::SignedIn(session, mechanism) => {
            return Ok(signed_in(session, tags, mechanism, token));
        }
        Attempt::Rejected {
            rejection: Rejection::Token,
            client,
            ..
        } => client,
        Attempt::Rejected {
            rejection, detail, ..
        } => return Err(final_error(settings, rejection, detail)),
        Attempt::Lost(error) => return Err(error),
    };

    // One forced refresh and one more attempt, never a loop.
    let token = access_token(settings, settings.tokens.force_refresh(&token).await)?;
    let (outcome, tags) = match attempt(settings, client, &capabilities, &token, 2).await? {
        Attempt::Lost(error) => reattempt(connector, &token, error).await?,
        outcome => (outcome, tags),
    };
    match outcome {
        Attempt::SignedIn(session, mechanism) => Ok(signed_in(session, tags, mechanism, token)),
        Attempt::Rejected {
            rejection: Rejection::Token,
            detail,
            ..
        } => Err(ImapError::TokenRejected {
            server: settings.label.clone(),
            account: settings.account.clone(),
            user: settings.address.clone(),
            detail,
        }),
        Attempt::Rejected {
            rejection, detail, ..
        } => Err(final_error(settings, rejection, detail)),
        Attempt::Lost(error) => Err(error),
    }
}

/// Runs the second attempt on a new connection, because the server closed
/// the first one after its rejection.
async fn reattempt(
    connector: &Connector,
    token: &AccessToken,
    error: ImapError,
) -> Result<(Attempt, Tags), ImapError> {
    let settings = connector.settings();
    tracing::debug!(
        account = %settings.account,
        server = %settings.label,
        error = %error,
        "Connection closed after the rejected sign-in, reconnecting"
    );
    let fresh = connector.open().await?;

    let outcome = attempt(settings, fresh.client, &fresh.capabilities, token, 2).await?;
    Ok((outcome, fresh.tags))
}

fn signed_in(
    session: async_imap::Session<Transport>,
    tags: Tags,
    mechanism: Mechanism,
    token: AccessToken,
) -> SignedIn {
    SignedIn {
        session,
        tags,
        mechanism,
        token,
    }
}

fn access_token(
    settings: &Settings,
    result: Result<AccessToken, ProviderError>,
) -> Result<AccessToken, ImapError> {
    result.map_err(|source| ImapError::Token {
        account: settings.account.clone(),
        source,
    })
}

fn final_error(settings: &Settings, rejection: Rejection, detail: String) -> ImapError {
    let server = settings.label.clone();
    let account = settings.account.clone();
    match rejection {
        Rejection::Configuration => ImapError::AuthConfiguration {
            server,
            account,
            detail,
        },
        Rejection::Unavailable => ImapError::AuthUnavailable {
            server,
            text: detail,
        },
        Rejection::Token | Rejection::Other => ImapError::Authenticate {
            server,
            account,
            text: detail,
        },
    }
}

/// Runs one AUTHENTICATE exchange.
async fn attempt(
    settings: &Settings,
    mut client: Client<Transport>,
    capabilities: &super::Capabilities,
    token: &AccessToken,
    number: u32,
) -> Result<Attempt, ImapError> {
    let mechanism = choose_mechanism(settings, capabilities)?;
    let response = InitialResponse::new(mechanism, &settings.address, token).map_err(|source| {
        ImapError::Sasl {
            account: settings.account.clone(),
            source,
        }
    })?;
    client.get_mut().set_sasl_response(response.to_base64());

    let name = mechanism_name(mechanism);
    let with_initial_response = capabilities.sasl_ir();
    let command = match with_initial_response {
        true => format!("{name} {SASL_PLACEHOLDER}"),
        false => name.to_owned(),
    };
    let mut exchange = Exchange {
        mechanism,
        response_sent: with_initial_response,
        challenge: None,
    };
    let timeout = settings.timeouts.response;
    let authenticated = tokio::time::timeout(timeout, client.authenticate(command, &mut exchange));

    let outcome = match authenticated.await {
        Err(_) => Attempt::Lost(ImapError::Timeout {
            server: settings.label.clone(),
            step: "the reply to AUTHENTICATE".to_owned(),
            after: timeout,
        }),
        Ok(Ok(session)) => Attempt::SignedIn(session, mechanism),
        Ok(Err((error, client))) => settle(settings, error, client, exchange).await,
    };
    if let Attempt::Rejected {
        rejection, detail, ..
    } = &outcome
    {
        record_failure(settings, mechanism, number, *rejection, detail);
    }
    Ok(outcome)
}

fn choose_mechanism(
    settings: &Settings,
    capabilities: &super::Capabilities,
) -> Result<Mechanism, ImapError> {
    let configured = settings.mechanism;
    let Some(mechanism) = capabilities.choose_mechanism(configured) else {
        return Err(ImapError::NoMechanism {
            server: settings.label.clone(),
            offered: capabilities.mechanisms().to_vec(),
        });
    };
    if mechanism != configured {
        tracing::info!(
            account = %settings.account,
            server = %settings.label,
            configured = mechanism_name(configured),
            used = mechanism_name(mechanism),
            "Server does not offer the configured SASL mechanism, using the other one"
        );
    }

    Ok(mechanism)
}

/// Turns async-imap's error of a failed exchange into an attempt outcome.
async fn settle(
    settings: &Settings,
    error: LibraryError,
    client: Client<Transport>,
    exchange: Exchange,
) -> Attempt {
    let step = "the reply to AUTHENTICATE".to_owned();
    let server = settings.label.clone();
    let (bad, raw) = match error {
        LibraryError::No(raw) => (false, raw),
        LibraryError::Bad(raw) => (true, raw),
        LibraryError::Parse(ParseError::Authentication(text, _)) => {
            return answer_unreadable(settings, client, exchange, text).await;
        }
        LibraryError::ConnectionLost => {
            return Attempt::Lost(ImapError::ConnectionLost { server, step });
        }
        LibraryError::Io(source) => {
            return Attempt::Lost(ImapError::Io {
                server,
                step,
                source,
            });
        }
        other => {
            let detail = other.to_string();
            return Attempt::Lost(ImapError::Protocol {
                server,
                step,
                detail,
            });
        }
    };

    let (code, text) = wire::split_code(None, Some(&reply_text(&raw)));
    let status = if bad { "BAD" } else { "NO" };
    let reply = format!("{status} {}", wire::with_code(code.as_deref(), &text));
    let challenge = exchange.challenge.as_ref();
    Attempt::Rejected {
        rejection: classify(bad, code.as_deref(), challenge),
        detail: detail(challenge, &reply),
        client,
    }
}

/// A response while AUTHENTICATE runs.
enum Reply {
    Completed(wire::Completion),
    Challenge,
    Other,
}

/// Replies to a challenge that async-imap could not decode, which ends
/// its exchange, and reads the tagged reply.
async fn answer_unreadable(
    settings: &Settings,
    mut client: Client<Transport>,
    mut exchange: Exchange,
    text: String,
) -> Attempt {
    exchange.challenge = Some(ErrorChallenge::parse(&text));
    let timeout = settings.timeouts.response;
    let step = "the reply to AUTHENTICATE";
    let lost = |error: wire::WireError| Attempt::Lost(error.into_imap(&settings.label, step));
    if let Err(error) = wire::send(&mut client, error_reply_base64(exchange.mechanism)).await {
        return lost(error);
    }

    loop {
        let reply = wire::next(&mut client, timeout, |response| match response {
            Response::Continue { .. } => Reply::Challenge,
            other => wire::any_completion(other).map_or(Reply::Other, Reply::Completed),
        });
        let completion = match reply.await {
            Ok(Reply::Completed(completion)) => completion,
            // A second challenge is cancelled (RFC 3501 section 6.2.2).
            Ok(Reply::Challenge) => match wire::send(&mut client, "*").await {
                Ok(()) => continue,
                Err(error) => return lost(error),
            },
            Ok(Reply::Other) => continue,
            Err(error) => return lost(error),
        };

        let bad = completion.status != wire::Status::No;
        let challenge = exchange.challenge.as_ref();
        return Attempt::Rejected {
            rejection: classify(bad, completion.code.as_deref(), challenge),
            detail: detail(challenge, &completion.describe()),
            client,
        };
    }
}

fn record_failure(
    settings: &Settings,
    mechanism: Mechanism,
    attempt: u32,
    rejection: Rejection,
    detail: &str,
) {
    tracing::warn!(
        account = %settings.account,
        server = %settings.label,
        mechanism = mechanism_name(mechanism),
        attempt,
        reason = rejection.reason(),
        detail,
        "IMAP sign-in rejected"
    );
    if let Some(metrics) = &settings.metrics {
        metrics.record_auth_failure(&settings.account, Protocol::Imap, rejection.reason());
    }
}

/// async-imap's side of the SASL exchange. It never contains the initial
/// response, only a placeholder that the transport replaces.
struct Exchange {
    mechanism: Mechanism,
    /// Whether the initial response went out, on the command line or after
    /// the first empty continuation.
    response_sent: bool,
    /// The first error challenge.
    challenge: Option<ErrorChallenge>,
}

impl Authenticator for &mut Exchange {
    type Response = Vec<u8>;

    fn process(&mut self, challenge: &[u8]) -> Vec<u8> {
        if !self.response_sent {
            self.response_sent = true;
            return SASL_PLACEHOLDER_RAW.to_vec();
        }

        // async-imap passes the decoded challenge, but the parser expects
        // the base64 text from the wire.
        if self.challenge.is_none() {
            self.challenge = Some(ErrorChallenge::parse(&STANDARD.encode(challenge)));
        }
        // NOTE: a server that challenges again gets the error reply again,
        // not the `*` cancel, because async-imap base64-encodes every reply.
        // The response timeout ends such an exchange.
        error_reply(self.mechanism).to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `{"status":"401","schemes":"bearer","scope":"mail"}`, Dovecot's challenge.
    const DOVECOT_401: &str =
        "eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIiwic2NvcGUiOiJtYWlsIn0=";

    #[test]
    fn exchange_sends_placeholder_then_error_reply() {
        let mut exchange = Exchange {
            mechanism: Mechanism::Oauthbearer,
            response_sent: false,
            challenge: None,
        };
        let mut authenticator = &mut exchange;

        let first = authenticator.process(b"");
        let challenge = STANDARD.decode(DOVECOT_401).unwrap();
        let second = authenticator.process(&challenge);

        assert_eq!(first, SASL_PLACEHOLDER_RAW);
        assert_eq!(second, b"\x01");
        let challenge = exchange.challenge.unwrap();
        assert_eq!(challenge.status.as_deref(), Some("401"));
        assert_eq!(challenge.scope.as_deref(), Some("mail"));
    }

    #[test]
    fn exchange_after_initial_response_answers_challenge() {
        let mut exchange = Exchange {
            mechanism: Mechanism::Xoauth2,
            response_sent: true,
            challenge: None,
        };
        let mut authenticator = &mut exchange;

        let reply = authenticator.process(&STANDARD.decode(DOVECOT_401).unwrap());

        assert_eq!(reply, b"");
        assert!(exchange.challenge.is_some());
    }
}
