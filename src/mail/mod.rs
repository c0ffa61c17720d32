//! The documents mailbridge reads and writes: the inbound mail document
//! that every fetched IMAP mail becomes, the event published when a
//! mailbox's UIDVALIDITY changes, the outbound send request with its
//! validation ([`outbound`]) and its status event ([`status`]). Plain data
//! and pure functions that import nothing else of mailbridge.
//!
//! [`build`] parses the fetched bytes with `mail-parser` and maps them to
//! an [`InboundMail`]. It never fails: a part that does not follow RFC
//! 5322 and MIME is read as well as possible and reported in `warnings`.

mod build;
mod charset;
mod deferred;
mod document;
mod headers;
pub mod outbound;
mod parts;
mod reset;
pub mod status;

use sha2::{Digest, Sha256};

pub use build::{DocumentOptions, FetchedMail, build, build_both_ways};
pub use document::{Address, Attachment, Header, InboundMail, Warning, WarningCode};
pub use outbound::{OUTBOUND_SCHEMA, OutboundMail};
pub use reset::MailboxReset;
pub use status::{OutboundStatus, STATUS_SCHEMA};

/// Schema name of [`InboundMail`], sent as a Kafka header and as the AMQP
/// `type` property.
pub const INBOUND_SCHEMA: &str = "mailbridge.inbound-mail.v1";

/// Schema name of [`MailboxReset`], sent like [`INBOUND_SCHEMA`].
pub const MAILBOX_RESET_SCHEMA: &str = "mailbridge.mailbox-reset.v1";

/// Returns the stable id of a mail: the lowercase hex SHA-256 of the
/// account, the mailbox, UIDVALIDITY and UID. The same mail always gets
/// the same id, so consumers can drop the repeats that at-least-once
/// delivery allows.
pub fn document_id(account: &str, mailbox: &str, uidvalidity: u32, uid: u32) -> String {
    fields_digest(
        "mailbridge.mail-id",
        &[account, mailbox],
        &[uidvalidity, uid],
    )
}

/// Hashes a tag and fields in a form where no two field lists share an
/// encoding: each string is preceded by its length as a 64-bit
/// big-endian integer, and numbers are 32-bit big-endian.
fn fields_digest(tag: &str, strings: &[&str], numbers: &[u32]) -> String {
    let mut hasher = Sha256::new();
    for field in std::iter::once(&tag).chain(strings) {
        hasher.update((field.len() as u64).to_be_bytes());
        hasher.update(field.as_bytes());
    }
    for number in numbers {
        hasher.update(number.to_be_bytes());
    }

    hex(&hasher.finalize())
}

/// Lowercase hex SHA-256 of `bytes`.
fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_id_is_stable() {
        let id = document_id("support", "INBOX", 1_720_000_000, 57);

        assert_eq!(id, document_id("support", "INBOX", 1_720_000_000, 57));
        assert_eq!(id.len(), 64);
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
    }

    #[test]
    fn document_id_changes_with_each_field() {
        let id = document_id("support", "INBOX", 7, 57);

        assert_ne!(id, document_id("sales", "INBOX", 7, 57));
        assert_ne!(id, document_id("support", "Archive", 7, 57));
        assert_ne!(id, document_id("support", "INBOX", 8, 57));
        assert_ne!(id, document_id("support", "INBOX", 7, 58));
    }

    #[test]
    fn document_id_keeps_fields_apart() {
        // Without length prefixes both would hash "abc".
        assert_ne!(document_id("a", "bc", 1, 2), document_id("ab", "c", 1, 2));
        assert_ne!(document_id("", "x", 1, 2), document_id("x", "", 1, 2));
        // UIDVALIDITY and UID must not swap.
        assert_ne!(document_id("a", "b", 1, 2), document_id("a", "b", 2, 1));
    }

    #[test]
    fn hex_writes_two_lowercase_digits_per_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa0, 0xff, 0x5c]), "000fa0ff5c");
        assert_eq!(hex(&[]), "");
    }

    #[test]
    fn sha256_hex_of_known_input() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
