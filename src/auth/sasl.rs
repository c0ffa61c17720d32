//! Client side of the SASL mechanisms XOAUTH2 and OAUTHBEARER: the initial
//! client response and the reply to an error challenge. IMAP
//! (`AUTHENTICATE`, RFC 3501) and SMTP (`AUTH`, RFC 4954) carry the same
//! bytes, base64-encoded on one line. In the formats below `^A` is the byte
//! 0x01.
//!
//! - XOAUTH2, defined by Google and also used by Microsoft:
//!   `user=USER^Aauth=Bearer TOKEN^A^A`.
//! - OAUTHBEARER, RFC 7628 section 3.1: `n,a=USER,^Aauth=Bearer TOKEN^A^A`.
//!
//! OAUTHBEARER is sent without the optional `host` and `port` pairs. RFC
//! 7628 requires them only for token types with keyed message digests,
//! not for bearer tokens, and section 3.2 makes a server that receives
//! them check them against its own name and port. A client that connects
//! through an alias, an IP address or a tunnel could then be rejected with
//! a valid token. Dovecot 2.3 skips key/value pairs it does not use.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::token::AccessToken;
use crate::config::{Mechanism, Secret};

/// Separator between the key/value pairs of both mechanisms.
const SEPARATOR: char = '\x01';

/// Errors of [`InitialResponse::new`]. Neither variant contains the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    /// The SASL user is not a mail address, or contains a byte that would
    /// break the message framing.
    #[error(
        "invalid SASL user {user:?}: {reason}; set the account address to the \
         mailbox address, such as support@example.com"
    )]
    InvalidUser { user: String, reason: &'static str },
    /// The access token contains characters outside the RFC 6750 `b64token`
    /// set, so it cannot be sent as `auth=Bearer TOKEN`.
    #[error(
        "invalid access token for SASL: {reason}; the token endpoint returned \
         a token that is not an RFC 6750 bearer token"
    )]
    InvalidToken { reason: &'static str },
}

impl SaslError {
    /// Short name of the error, for metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::InvalidUser { .. } => "invalid_user",
            Self::InvalidToken { .. } => "invalid_token",
        }
    }

    /// Always false: the same user and token fail the same way again.
    pub fn is_transient(&self) -> bool {
        false
    }
}

/// Returns the mechanism name as IMAP and SMTP write it.
pub fn mechanism_name(mechanism: Mechanism) -> &'static str {
    match mechanism {
        Mechanism::Xoauth2 => "XOAUTH2",
        Mechanism::Oauthbearer => "OAUTHBEARER",
    }
}

/// Initial client response of XOAUTH2 or OAUTHBEARER. It contains the access
/// token, so `Debug` shows only the mechanism and the length.
#[derive(Clone, PartialEq, Eq)]
pub struct InitialResponse {
    mechanism: Mechanism,
    bytes: Vec<u8>,
}

impl InitialResponse {
    /// Builds the initial response that signs in `user`, the address of
    /// the mailbox, with `token`.
    ///
    /// # Errors
    ///
    /// [`SaslError::InvalidUser`] for a user without `@` or with a control
    /// character or whitespace, such as a display name. For OAUTHBEARER,
    /// `,` and `=` are escaped as RFC 5801 requires, not rejected.
    /// [`SaslError::InvalidToken`] for a token outside the RFC 6750
    /// `b64token` characters.
    pub fn new(mechanism: Mechanism, user: &str, token: &AccessToken) -> Result<Self, SaslError> {
        check_user(user)?;
        check_token(token.expose())?;

        let text = match mechanism {
            Mechanism::Xoauth2 => format!("user={user}{SEPARATOR}"),
            Mechanism::Oauthbearer => format!("n,a={},{SEPARATOR}", escape_saslname(user)),
        };
        let text = format!("{text}auth=Bearer {}{SEPARATOR}{SEPARATOR}", token.expose());
        Ok(Self {
            mechanism,
            bytes: text.into_bytes(),
        })
    }

    /// Mechanism this response belongs to.
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// Returns the raw bytes, for a SASL library that base64-encodes them
    /// itself, as async-imap's `Authenticator` does. Never log them.
    pub fn expose_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Returns the bytes base64-encoded (RFC 4648 standard alphabet with
    /// padding) on one line without line breaks, for writing after
    /// `AUTHENTICATE XOAUTH2 ` or `AUTH XOAUTH2 `. Never encode it again.
    pub fn to_base64(&self) -> Secret {
        Secret::new(STANDARD.encode(&self.bytes))
    }
}

impl std::fmt::Debug for InitialResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InitialResponse")
            .field("mechanism", &self.mechanism)
            .field("len", &self.bytes.len())
            .finish_non_exhaustive()
    }
}

/// Returns the raw client response to a server's error challenge.
///
/// XOAUTH2 servers expect an empty response and then send the final
/// failure. OAUTHBEARER requires a single 0x01 byte (RFC 7628 section
/// 3.2.3). Dovecot 2.3.19 and postfix, through Dovecot's SASL, then end
/// the exchange with a failure, as the stack's integration tests check.
pub fn error_reply(mechanism: Mechanism) -> &'static [u8] {
    match mechanism {
        Mechanism::Xoauth2 => b"",
        Mechanism::Oauthbearer => b"\x01",
    }
}

/// Returns [`error_reply`] base64-encoded: an empty line for XOAUTH2 and
/// `AQ==` for OAUTHBEARER.
pub fn error_reply_base64(mechanism: Mechanism) -> &'static str {
    match mechanism {
        Mechanism::Xoauth2 => "",
        Mechanism::Oauthbearer => "AQ==",
    }
}

fn check_user(user: &str) -> Result<(), SaslError> {
    let reason = if user.contains(|c: char| c.is_control()) {
        Some("contains a control character such as CR, LF or 0x01")
    } else if user.contains(char::is_whitespace) {
        Some("contains whitespace, as a display name does")
    } else if !is_address(user) {
        Some("expected a mail address with a local part, `@` and a domain")
    } else {
        None
    };

    match reason {
        Some(reason) => Err(SaslError::InvalidUser {
            user: user.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

fn is_address(user: &str) -> bool {
    user.rsplit_once('@')
        .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty())
}

/// Checks the RFC 6750 syntax
/// `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn check_token(token: &str) -> Result<(), SaslError> {
    let body = token.trim_end_matches('=');
    let reason = if body.is_empty() {
        Some("the token is empty")
    } else if !body.chars().all(is_b64token_char) {
        Some("the token contains a character outside A-Z a-z 0-9 - . _ ~ + / =")
    } else {
        None
    };

    match reason {
        Some(reason) => Err(SaslError::InvalidToken { reason }),
        None => Ok(()),
    }
}

fn is_b64token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~' | '+' | '/')
}

/// Escapes a GS2 `saslname` (RFC 5801 section 4): `,` becomes `=2C` and
/// `=` becomes `=3D`. Dovecot 2.3 reverses exactly these two escapes.
fn escape_saslname(user: &str) -> String {
    user.replace('=', "=3D").replace(',', "=2C")
}

#[cfg(test)]
mod tests {
    use super::*;

    const USER: &str = "alice@example.test";
    const TOKEN: &str = "ya29.FAKE-ACCESS-TOKEN-0001";

    fn response(mechanism: Mechanism, user: &str) -> Result<InitialResponse, SaslError> {
        InitialResponse::new(mechanism, user, &AccessToken::new(TOKEN))
    }

    #[test]
    fn xoauth2_golden_bytes() {
        let response = response(Mechanism::Xoauth2, USER).unwrap();

        let expected =
            b"user=alice@example.test\x01auth=Bearer ya29.FAKE-ACCESS-TOKEN-0001\x01\x01";
        assert_eq!(response.expose_bytes(), expected);
    }

    #[test]
    fn xoauth2_golden_base64() {
        let response = response(Mechanism::Xoauth2, USER).unwrap();

        let expected = "dXNlcj1hbGljZUBleGFtcGxlLnRlc3QBYXV0aD1CZWFyZXIgeWEyOS5GQUtFLUFDQ0VTUy1UT0tFTi0wMDAxAQE=";
        assert_eq!(response.to_base64().expose(), expected);
    }

    #[test]
    fn oauthbearer_golden_bytes() {
        let response = response(Mechanism::Oauthbearer, USER).unwrap();

        let expected =
            b"n,a=alice@example.test,\x01auth=Bearer ya29.FAKE-ACCESS-TOKEN-0001\x01\x01";
        assert_eq!(response.expose_bytes(), expected);
    }

    #[test]
    fn oauthbearer_golden_base64() {
        let response = response(Mechanism::Oauthbearer, USER).unwrap();

        let expected = "bixhPWFsaWNlQGV4YW1wbGUudGVzdCwBYXV0aD1CZWFyZXIgeWEyOS5GQUtFLUFDQ0VTUy1UT0tFTi0wMDAxAQE=";
        assert_eq!(response.to_base64().expose(), expected);
    }

    #[test]
    fn base64_is_one_line_and_encoded_once() {
        // A 3 KB token, like Microsoft's, must not be wrapped at 76 columns.
        let long_token = AccessToken::new("A".repeat(3000));
        let response = InitialResponse::new(Mechanism::Xoauth2, USER, &long_token).unwrap();
        let encoded = response.to_base64();

        assert!(!encoded.expose().contains(['\r', '\n']));
        let decoded = STANDARD.decode(encoded.expose()).unwrap();
        assert_eq!(decoded, response.expose_bytes());
        assert!(decoded.starts_with(b"user="), "encoded twice");
    }

    #[test]
    fn oauthbearer_escapes_comma_and_equals() {
        let response = response(Mechanism::Oauthbearer, "a=b,c@example.test").unwrap();

        assert!(
            response
                .expose_bytes()
                .starts_with(b"n,a=a=3Db=2Cc@example.test,\x01")
        );
    }

    #[test]
    fn xoauth2_keeps_comma_and_equals() {
        let response = response(Mechanism::Xoauth2, "a=b,c@example.test").unwrap();

        assert!(
            response
                .expose_bytes()
                .starts_with(b"user=a=b,c@example.test\x01")
        );
    }

    #[test]
    fn user_without_at_rejected() {
        for mechanism in [Mechanism::Xoauth2, Mechanism::Oauthbearer] {
            for user in ["", "alice", "@example.test", "alice@"] {
                let error = response(mechanism, user).unwrap_err();
                assert_eq!(error.kind(), "invalid_user", "{user:?}");
            }
        }
    }

    #[test]
    fn display_name_rejected() {
        let error = response(Mechanism::Xoauth2, "Alice Example").unwrap_err();

        assert!(error.to_string().contains("whitespace"), "{error}");
    }

    #[test]
    fn framing_bytes_in_user_rejected() {
        for user in [
            "alice@example.test\r\n",
            "ali\x01ce@example.test",
            "a\0@example.test",
        ] {
            for mechanism in [Mechanism::Xoauth2, Mechanism::Oauthbearer] {
                let error = response(mechanism, user).unwrap_err();
                assert!(error.to_string().contains("control character"), "{error}");
            }
        }
    }

    #[test]
    fn invalid_user_error_names_fix() {
        let error = response(Mechanism::Xoauth2, "alice").unwrap_err();

        let text = error.to_string();
        assert!(text.contains("\"alice\""), "{text}");
        assert!(text.contains("set the account address"), "{text}");
    }

    #[test]
    fn token_outside_b64token_rejected() {
        for token in ["", "===", "abc def", "abc\x01", "abc\r\n", "ab=c", "tökén"] {
            let result = InitialResponse::new(Mechanism::Xoauth2, USER, &AccessToken::new(token));
            let error = result.unwrap_err();
            assert_eq!(error.kind(), "invalid_token", "{token:?}");
        }
    }

    #[test]
    fn token_error_hides_token() {
        let token = AccessToken::new("SECRET-PART with space");
        let error = InitialResponse::new(Mechanism::Xoauth2, USER, &token).unwrap_err();

        assert!(!error.to_string().contains("SECRET-PART"));
        assert!(!format!("{error:?}").contains("SECRET-PART"));
    }

    #[test]
    fn token_with_padding_accepted() {
        let token = AccessToken::new("dGVzdA==");

        assert!(InitialResponse::new(Mechanism::Oauthbearer, USER, &token).is_ok());
    }

    #[test]
    fn debug_hides_token() {
        let response = response(Mechanism::Xoauth2, USER).unwrap();

        let printed = format!("{response:?}");
        assert!(!printed.contains("FAKE-ACCESS-TOKEN"), "{printed}");
        assert!(!printed.contains("dXNlcj1"), "{printed}");
    }

    #[test]
    fn error_reply_per_mechanism() {
        assert_eq!(error_reply(Mechanism::Xoauth2), b"");
        assert_eq!(error_reply(Mechanism::Oauthbearer), b"\x01");
    }

    #[test]
    fn error_reply_base64_matches_raw() {
        for mechanism in [Mechanism::Xoauth2, Mechanism::Oauthbearer] {
            let encoded = STANDARD.encode(error_reply(mechanism));
            assert_eq!(encoded, error_reply_base64(mechanism));
        }
    }

    #[test]
    fn mechanism_names() {
        assert_eq!(mechanism_name(Mechanism::Xoauth2), "XOAUTH2");
        assert_eq!(mechanism_name(Mechanism::Oauthbearer), "OAUTHBEARER");
    }
}
