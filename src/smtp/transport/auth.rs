//! Sign-in by AUTH with XOAUTH2 or OAUTHBEARER (RFC 4954, RFC 7628), with
//! the initial response on the command line.
//!
//! A rejected token yields an error challenge: a `334` reply with base64
//! JSON. The client sends the mechanism's error reply once and then reads
//! the final `535` or `454`, sending nothing else meanwhile. A rejection of
//! the token itself leads to one forced refresh and one more attempt on a
//! new connection.

use super::capabilities::Capabilities;
use super::connect::{self, Connection, Settings};
use super::error::SmtpError;
use super::rejection::{Rejection, classify, detail};
use super::reply::Reply;
use crate::auth::{
    AccessToken, ErrorChallenge, InitialResponse, ProviderError, error_reply_base64, mechanism_name,
};
use crate::config::Mechanism;
use crate::telemetry::Protocol;

const STEP: &str = "the reply to AUTH";

/// A rejected AUTH: its category, its description for the error, and
/// the server's final reply.
struct Rejected {
    rejection: Rejection,
    detail: String,
    reply: Reply,
}

/// Opens a connection and signs in with the account's token, refreshing
/// the token once and reconnecting after the server rejected it.
pub(crate) async fn sign_in(settings: &Settings) -> Result<Connection, SmtpError> {
    let token = access_token(settings, settings.tokens.access_token().await)?;
    let rejected = match open_and_authenticate(settings, &token, 1).await? {
        Ok(connection) => return Ok(connection),
        Err(rejected) => rejected,
    };
    if rejected.rejection != Rejection::Token {
        return Err(final_error(settings, rejected));
    }

    // One forced refresh and one more attempt, never a loop.
    let token = access_token(settings, settings.tokens.force_refresh(&token).await)?;
    match open_and_authenticate(settings, &token, 2).await? {
        Ok(connection) => Ok(connection),
        Err(rejected) if rejected.rejection == Rejection::Token => Err(SmtpError::TokenRejected {
            server: settings.label.clone(),
            account: settings.account.clone(),
            user: settings.address.clone(),
            detail: rejected.detail,
            reply: Box::new(rejected.reply),
        }),
        Err(rejected) => Err(final_error(settings, rejected)),
    }
}

/// Opens a connection and runs AUTH once. A rejected connection is closed,
/// because the retry goes to a new one.
async fn open_and_authenticate(
    settings: &Settings,
    token: &AccessToken,
    number: u32,
) -> Result<Result<Connection, Rejected>, SmtpError> {
    let mut connection = connect::open(settings).await?;
    match attempt(settings, &mut connection, token, number).await? {
        None => Ok(Ok(signed_in(settings, connection))),
        Some(rejected) => {
            connection.quit().await;
            Ok(Err(rejected))
        }
    }
}

fn signed_in(settings: &Settings, connection: Connection) -> Connection {
    tracing::debug!(
        account = %settings.account,
        server = %settings.label,
        connection = connection.id,
        "SMTP connection signed in"
    );
    connection
}

fn access_token(
    settings: &Settings,
    result: Result<AccessToken, ProviderError>,
) -> Result<AccessToken, SmtpError> {
    result.map_err(|source| SmtpError::Token {
        account: settings.account.clone(),
        source,
    })
}

fn final_error(settings: &Settings, rejected: Rejected) -> SmtpError {
    let Rejected {
        rejection,
        detail,
        reply,
    } = rejected;
    let server = settings.label.clone();
    let account = settings.account.clone();
    let reply = Box::new(reply);
    match rejection {
        Rejection::Configuration => SmtpError::AuthConfiguration {
            server,
            account,
            detail,
            reply,
        },
        Rejection::Disabled => SmtpError::AuthDisabled {
            server,
            account,
            user: settings.address.clone(),
            reply,
        },
        Rejection::Unavailable => SmtpError::AuthUnavailable { server, reply },
        Rejection::Token | Rejection::Other => SmtpError::Authenticate {
            server,
            account,
            reply,
        },
    }
}

/// Runs one AUTH exchange on `connection`. Returns the rejection, or
/// `None` after `235`.
async fn attempt(
    settings: &Settings,
    connection: &mut Connection,
    token: &AccessToken,
    number: u32,
) -> Result<Option<Rejected>, SmtpError> {
    let mechanism = choose_mechanism(settings, &connection.capabilities)?;
    let response = InitialResponse::new(mechanism, &settings.address, token).map_err(|source| {
        SmtpError::Sasl {
            account: settings.account.clone(),
            source,
        }
    })?;
    let name = mechanism_name(mechanism);
    let line = format!("AUTH {name} {}\r\n", response.to_base64().expose());
    let mut reply = connection.command(settings, &line, STEP).await?;

    let mut challenge = None;
    if reply.code == 334 {
        challenge = Some(ErrorChallenge::parse(&reply.text()));
        let answer = format!("{}\r\n", error_reply_base64(mechanism));
        reply = connection.command(settings, &answer, STEP).await?;
    }
    if reply.code == 334 {
        // A second challenge is cancelled (RFC 4954 section 4).
        reply = connection.command(settings, "*\r\n", STEP).await?;
    }
    if reply.code == 235 {
        return Ok(None);
    }

    let rejection = classify(&reply, challenge.as_ref());
    let detail = detail(challenge.as_ref(), &reply);
    record_failure(settings, mechanism, number, rejection, &detail, &reply);
    Ok(Some(Rejected {
        rejection,
        detail,
        reply,
    }))
}

fn choose_mechanism(
    settings: &Settings,
    capabilities: &Capabilities,
) -> Result<Mechanism, SmtpError> {
    let configured = settings.mechanism;
    let Some(mechanism) = capabilities.choose_mechanism(configured) else {
        return Err(SmtpError::NoMechanism {
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

fn record_failure(
    settings: &Settings,
    mechanism: Mechanism,
    attempt: u32,
    rejection: Rejection,
    detail: &str,
    reply: &Reply,
) {
    tracing::warn!(
        account = %settings.account,
        server = %settings.label,
        mechanism = mechanism_name(mechanism),
        attempt,
        smtp_code = reply.code,
        reason = rejection.reason(),
        detail,
        "SMTP sign-in rejected"
    );
    if let Some(metrics) = &settings.metrics {
        metrics.record_auth_failure(&settings.account, Protocol::Smtp, rejection.reason());
    }
}
