//! Mailbox names in IMAP's modified UTF-7 (RFC 3501 section 5.1.3).
//!
//! Printable US-ASCII other than `&` is written as itself, and `&` is written
//! `&-`. Any other run of characters is UTF-16 (astral characters as
//! surrogate pairs), base64-encoded with `,` in place of `/` and without
//! padding, between `&` and `-`. Configuration gives names in UTF-8, and
//! they are encoded here before they go into `SELECT`, `MOVE` or `COPY`.

use base64::Engine as _;
use base64::alphabet::Alphabet;
use base64::engine::general_purpose::GeneralPurpose;
use base64::engine::{DecodePaddingMode, GeneralPurposeConfig};

/// The modified base64 of RFC 3501: `,` replaces `/`, and there is no padding.
const MODIFIED_BASE64: GeneralPurpose = GeneralPurpose::new(
    &match Alphabet::new("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,") {
        Ok(alphabet) => alphabet,
        Err(_) => panic!("the modified base64 alphabet has 64 distinct characters"),
    },
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(true),
);

/// Failure to decode a modified UTF-7 mailbox name. Each variant carries
/// the `name` as received.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MailboxNameError {
    /// A byte outside printable US-ASCII, which modified UTF-7 never contains.
    #[error(
        "invalid modified UTF-7 mailbox name {name:?}: raw character {character:?} outside printable ASCII"
    )]
    RawCharacter {
        name: String,
        /// The first such character.
        character: char,
    },
    /// A `&` without the `-` that ends its base64 run.
    #[error("invalid modified UTF-7 mailbox name {name:?}: `&` without a closing `-`")]
    Unterminated { name: String },
    /// A base64 run that is not valid modified base64 of UTF-16.
    #[error("invalid modified UTF-7 mailbox name {name:?}: `&{run}-` is not base64 of UTF-16")]
    InvalidRun {
        name: String,
        /// The text between `&` and `-`.
        run: String,
    },
}

impl MailboxNameError {
    /// Short stable name, for metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::RawCharacter { .. } => "raw_character",
            Self::Unterminated { .. } => "unterminated",
            Self::InvalidRun { .. } => "invalid_run",
        }
    }

    /// Always false: the same name fails the same way again.
    pub fn is_transient(&self) -> bool {
        false
    }
}

/// Encodes a UTF-8 mailbox name, such as `Entwürfe`, into modified UTF-7,
/// such as `Entw&APw-rfe`. Encoding an already encoded name encodes it a
/// second time (`&` becomes `&-`), so pass only the names users wrote.
pub fn encode(utf8: &str) -> String {
    let mut encoded = String::with_capacity(utf8.len());
    let mut run: Vec<u16> = Vec::new();
    for character in utf8.chars() {
        if is_direct(character) {
            flush_run(&mut encoded, &mut run);
            encoded.push(character);
            if character == '&' {
                encoded.push('-');
            }
        } else {
            let mut units = [0u16; 2];
            run.extend_from_slice(character.encode_utf16(&mut units));
        }
    }
    flush_run(&mut encoded, &mut run);

    encoded
}

/// Decodes a modified UTF-7 mailbox name, as a server lists it, into UTF-8.
///
/// # Errors
///
/// [`MailboxNameError`] for a raw non-ASCII or control character, a `&`
/// run without its closing `-`, or a run that is not base64 of UTF-16.
pub fn decode(modified_utf7: &str) -> Result<String, MailboxNameError> {
    let name = modified_utf7;
    let mut decoded = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(character) = rest.chars().next() {
        if !(' '..='~').contains(&character) {
            let name = name.to_owned();
            return Err(MailboxNameError::RawCharacter { name, character });
        }
        if character != '&' {
            decoded.push(character);
            rest = &rest[1..];
            continue;
        }

        let Some(end) = rest.find('-') else {
            let name = name.to_owned();
            return Err(MailboxNameError::Unterminated { name });
        };
        decoded.push_str(&decode_run(name, &rest[1..end])?);
        rest = &rest[end + 1..];
    }

    Ok(decoded)
}

/// Returns whether `character` is written as itself (or as `&-` for `&`).
fn is_direct(character: char) -> bool {
    (' '..='~').contains(&character)
}

fn flush_run(encoded: &mut String, run: &mut Vec<u16>) {
    if run.is_empty() {
        return;
    }
    let bytes: Vec<u8> = run.iter().flat_map(|unit| unit.to_be_bytes()).collect();
    encoded.push('&');
    encoded.push_str(&MODIFIED_BASE64.encode(bytes));
    encoded.push('-');
    run.clear();
}

/// Decodes the text between `&` and `-`. An empty run is a literal `&`.
fn decode_run(name: &str, run: &str) -> Result<String, MailboxNameError> {
    if run.is_empty() {
        return Ok("&".to_owned());
    }
    let invalid = || MailboxNameError::InvalidRun {
        name: name.to_owned(),
        run: run.to_owned(),
    };
    let bytes = MODIFIED_BASE64.decode(run).map_err(|_| invalid())?;
    if bytes.len() % 2 != 0 {
        return Err(invalid());
    }

    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|pair| u16::from_be_bytes([pair[0], pair[1]]))
        .collect();
    String::from_utf16(&units).map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names of a German and Japanese mailbox's `LIST` reply, as the
    /// server sends them and decoded.
    const LISTED: &[(&str, &str)] = &[
        ("INBOX", "INBOX"),
        ("INBOX/&ZeVnLIqe-", "INBOX/日本語"),
        ("Gel&APY-schte Elemente", "Gelöschte Elemente"),
        ("Entw&APw-rfe", "Entwürfe"),
        ("Gesendete Elemente", "Gesendete Elemente"),
        ("Rechnungen &- Belege", "Rechnungen & Belege"),
        ("Projekte &2D3cwQ-", "Projekte 📁"),
        (
            "&BBIERQQ+BDQETwRJBDgENQ-/&BCEERwQ1BEIEMA-",
            "Входящие/Счета",
        ),
    ];

    #[test]
    fn listed_names_decode() {
        for (wire, utf8) in LISTED {
            assert_eq!(decode(wire).as_deref(), Ok(*utf8), "{wire}");
        }
    }

    #[test]
    fn listed_names_encode() {
        for (wire, utf8) in LISTED {
            assert_eq!(encode(utf8), *wire, "{utf8}");
        }
    }

    #[test]
    fn listed_names_round_trip() {
        for (wire, _) in LISTED {
            let decoded = decode(wire).unwrap();
            assert_eq!(encode(&decoded), *wire, "{wire}");
        }
    }

    #[test]
    fn ampersand_escaped() {
        assert_eq!(encode("&"), "&-");
        assert_eq!(encode("a&&b"), "a&-&-b");
        assert_eq!(decode("&-&-").unwrap(), "&&");
    }

    #[test]
    fn astral_character_is_surrogate_pair() {
        let encoded = encode("📁");
        let run = encoded.trim_start_matches('&').trim_end_matches('-');
        let bytes = MODIFIED_BASE64.decode(run).unwrap();

        assert_eq!(bytes, [0xD8, 0x3D, 0xDC, 0xC1]);
    }

    #[test]
    fn name_of_stack_test_round_trips() {
        let name = "Entwürfe & Belege 📁";
        let encoded = encode(name);

        assert_eq!(encoded, "Entw&APw-rfe &- Belege &2D3cwQ-");
        assert_eq!(decode(&encoded).unwrap(), name);
    }

    #[test]
    fn encoded_name_encoded_again_differs() {
        // A name that a user copied from a server listing is not the
        // UTF-8 name, and encoding it once more changes it.
        assert_eq!(encode("Rechnungen &- Belege"), "Rechnungen &-- Belege");
    }

    #[test]
    fn control_characters_encoded() {
        assert_eq!(decode(&encode("a\tb")).unwrap(), "a\tb");
        assert!(!encode("a\tb").contains('\t'));
    }

    #[test]
    fn slash_in_base64_is_comma() {
        // U+FFFF encodes to `//8`, which modified base64 writes `,,8`.
        assert_eq!(encode("\u{FFFF}"), "&,,8-");
        assert_eq!(decode("&,,8-").unwrap(), "\u{FFFF}");
    }

    #[test]
    fn raw_utf8_rejected() {
        let error = decode("Entwürfe").unwrap_err();

        assert_eq!(error.kind(), "raw_character");
        assert!(error.to_string().contains("ü"), "{error}");
    }

    #[test]
    fn unterminated_run_rejected() {
        assert_eq!(decode("Entw&APw").unwrap_err().kind(), "unterminated");
    }

    #[test]
    fn invalid_runs_rejected() {
        // Standard base64 `/`, an odd byte count, and a lone surrogate.
        for wire in ["&//8-", "&AP-", "&2D0-"] {
            assert_eq!(decode(wire).unwrap_err().kind(), "invalid_run", "{wire}");
        }
    }
}
