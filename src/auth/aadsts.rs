//! Microsoft identity platform error codes (`AADSTS` followed by digits),
//! found in `error_codes` or in `error_description` of a token-endpoint
//! error, and a one-line hint for the codes that have a known fix.

/// One known code and what it means for the connector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hint {
    /// The number after `AADSTS`.
    pub code: u32,
    /// Cause, and the fix where it is specific, in one lowercase line that
    /// follows "AADSTS<code> means".
    pub text: &'static str,
    /// Whether the code marks a transient outage, whatever the `error`
    /// field contains.
    pub transient: bool,
}

const fn hint(code: u32, text: &'static str) -> Hint {
    Hint {
        code,
        text,
        transient: false,
    }
}

/// Known codes, with meanings taken from the error descriptions that the
/// Microsoft identity platform returns.
const HINTS: &[Hint] = &[
    hint(
        700082,
        "the refresh token expired because it was not used for too long",
    ),
    hint(50076, "multi-factor authentication is required"),
    hint(
        50079,
        "the user must register for multi-factor authentication",
    ),
    hint(
        65001,
        "the user or an administrator has not consented to the app's permissions, \
         so grant consent before signing in again",
    ),
    hint(
        7000215,
        "the client secret is invalid, so set client_secret to the secret's value, not its ID",
    ),
    hint(
        70011,
        "a requested scope is invalid, so use the https://outlook.office.com/ scopes",
    ),
    hint(
        700025,
        "the app registration is a public client, which must not send a client secret, \
         so remove client_secret",
    ),
    hint(
        50173,
        "the grant was revoked, for example after a password change",
    ),
    hint(
        70043,
        "the refresh token expired or was revoked by a conditional access sign-in \
         frequency policy",
    ),
    hint(
        54005,
        "the authorization code was already redeemed, and a code works only once",
    ),
    Hint {
        code: 90033,
        text: "the Microsoft identity platform reported a transient error",
        transient: true,
    },
];

/// Collects the codes from the `error_codes` numbers and from every
/// `AADSTS<digits>` in the description, first occurrence first, without
/// repeats.
pub fn codes(error_codes: &[u32], description: Option<&str>) -> Vec<u32> {
    let mut codes: Vec<u32> = Vec::new();
    let from_text = description.map(codes_in_text).unwrap_or_default();
    for code in error_codes.iter().copied().chain(from_text) {
        if !codes.contains(&code) {
            codes.push(code);
        }
    }
    codes
}

/// Returns the hint of the first code that has one.
pub fn first_hint(codes: &[u32]) -> Option<&'static Hint> {
    codes
        .iter()
        .find_map(|code| HINTS.iter().find(|hint| hint.code == *code))
}

fn codes_in_text(text: &str) -> Vec<u32> {
    text.match_indices("AADSTS")
        .filter_map(|(start, prefix)| {
            let rest = &text[start + prefix.len()..];
            let end = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            rest[..end].parse().ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_from_description() {
        let text = "AADSTS70043: refresh token expired. Trace ID: 00000000";

        assert_eq!(codes(&[], Some(text)), [70043]);
    }

    #[test]
    fn codes_merged_without_repeats() {
        let text = "AADSTS700025: public client; see also AADSTS7000215";

        assert_eq!(codes(&[700025], Some(text)), [700025, 7000215]);
    }

    #[test]
    fn prefix_without_digits_ignored() {
        assert_eq!(
            codes(&[], Some("AADSTS: no number, AADSTSx")),
            Vec::<u32>::new()
        );
    }

    #[test]
    fn prefix_at_end_ignored() {
        assert_eq!(codes(&[], Some("trailing AADSTS")), Vec::<u32>::new());
    }

    #[test]
    fn every_required_code_has_hint() {
        let required = [
            700082, 50076, 50079, 65001, 7000215, 70011, 700025, 50173, 70043, 54005, 90033,
        ];

        for code in required {
            let hint = first_hint(&[code]);
            assert!(hint.is_some(), "AADSTS{code} has no hint");
        }
    }

    #[test]
    fn hints_are_one_lowercase_line() {
        for hint in HINTS {
            assert!(!hint.text.contains('\n'), "AADSTS{}", hint.code);
            assert!(
                hint.text.starts_with(char::is_lowercase),
                "AADSTS{}",
                hint.code
            );
        }
    }

    #[test]
    fn only_90033_transient() {
        let transient: Vec<u32> = HINTS
            .iter()
            .filter(|h| h.transient)
            .map(|h| h.code)
            .collect();

        assert_eq!(transient, [90033]);
    }

    #[test]
    fn public_client_hint_says_remove_secret() {
        let hint = first_hint(&[700025]).unwrap();

        assert!(hint.text.contains("remove client_secret"), "{}", hint.text);
    }

    #[test]
    fn unknown_code_skipped_for_known() {
        let hint = first_hint(&[12345, 54005]).unwrap();

        assert_eq!(hint.code, 54005);
    }

    #[test]
    fn unknown_code_has_no_hint() {
        assert_eq!(first_hint(&[12345]), None);
    }
}
