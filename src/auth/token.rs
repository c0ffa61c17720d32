//! Access and refresh tokens. A holder of either can sign in as the
//! account, so both types write [`REDACTED`] in `Debug` and `Display`.
//! They implement no `Serialize`, and the token store writes the values
//! through its own private file format.

use std::fmt;

use crate::config::REDACTED;

/// Defines a string newtype that redacts itself when formatted.
macro_rules! redacted_token {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq)]
        pub struct $name(String);

        impl $name {
            /// Wraps a token value.
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }

            /// Returns the token itself, for the code that sends it to a
            /// server or writes it to the token store. Never log or print it.
            pub fn expose(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({REDACTED})", stringify!($name))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(REDACTED)
            }
        }
    };
}

redacted_token! {
    /// OAuth2 access token (RFC 6749 section 1.4), sent as the bearer token
    /// in SASL XOAUTH2 and OAUTHBEARER.
    AccessToken
}

redacted_token! {
    /// OAuth2 refresh token (RFC 6749 section 1.5). Providers such as
    /// Microsoft rotate it on every refresh, so the newest one must be
    /// stored before the access token that came with it is used.
    RefreshToken
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_token_debug_redacts() {
        let token = AccessToken::new("ya29.FAKE-ACCESS-TOKEN-0001");

        assert_eq!(format!("{token:?}"), format!("AccessToken({REDACTED})"));
    }

    #[test]
    fn access_token_display_redacts() {
        let token = AccessToken::new("ya29.FAKE-ACCESS-TOKEN-0001");

        assert_eq!(token.to_string(), REDACTED);
    }

    #[test]
    fn refresh_token_debug_redacts() {
        let token = RefreshToken::new("RT-ALICE-1");

        assert_eq!(format!("{token:?}"), format!("RefreshToken({REDACTED})"));
        assert_eq!(format!("{token:#?}"), format!("RefreshToken({REDACTED})"));
    }

    #[test]
    fn refresh_token_display_redacts() {
        assert_eq!(RefreshToken::new("RT-ALICE-1").to_string(), REDACTED);
    }

    #[test]
    fn redacted_inside_structures() {
        let pair = (
            Some(AccessToken::new("AT-1")),
            vec![RefreshToken::new("RT-1")],
        );

        let printed = format!("{pair:?}");

        assert!(!printed.contains("AT-1"), "{printed}");
        assert!(!printed.contains("RT-1"), "{printed}");
    }

    #[test]
    fn expose_returns_value() {
        assert_eq!(AccessToken::new("AT-1").expose(), "AT-1");
        assert_eq!(RefreshToken::new("RT-1").expose(), "RT-1");
    }
}
