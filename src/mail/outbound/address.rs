//! Mailboxes of a send request: an optional display name and an RFC 5322
//! addr-spec whose domain is converted to ASCII with IDNA (RFC 5891), so
//! both the SMTP envelope and the header carry a plain ASCII address.

use super::document::Address;
use super::rejection::{RejectReason, Rejection, preview};
use super::syntax::{is_dot_atom_text, single_line};

/// Maximum local part length, in octets (RFC 5321 section 4.5.3.1.1).
const MAX_LOCAL_PART: usize = 64;

/// Maximum address length, in octets: a 256-octet path minus its angle brackets
/// (RFC 5321 section 4.5.3.1.3).
const MAX_ADDRESS: usize = 254;

/// A checked mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    name: Option<String>,
    address: String,
}

impl Mailbox {
    /// Checks a bare address, such as the account address that becomes
    /// the sender when a request has no `from`. `field` names where the
    /// address came from in a rejection.
    pub fn from_address(field: &str, address: &str) -> Result<Self, Rejection> {
        Ok(Self {
            name: None,
            address: addr_spec(field, address)?,
        })
    }

    /// Returns the display name in UTF-8; `None` when absent or empty.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Returns the addr-spec with an ASCII domain, e.g.
    /// `bob@xn--mnchen-3ya.test`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Returns the part before the last `@`.
    pub fn local_part(&self) -> &str {
        self.split().0
    }

    /// Returns the ASCII domain after the last `@`.
    pub fn domain(&self) -> &str {
        self.split().1
    }

    fn split(&self) -> (&str, &str) {
        // addr_spec only builds addresses that contain an '@'.
        self.address.rsplit_once('@').unwrap_or((&self.address, ""))
    }
}

/// Checks the address at `field`, e.g. `to[0]`.
pub(super) fn mailbox(field: &str, address: &Address) -> Result<Mailbox, Rejection> {
    let name = match &address.name {
        Some(name) => {
            single_line(&format!("{field}.name"), name)?;
            Some(name.trim().to_owned()).filter(|name| !name.is_empty())
        }
        None => None,
    };

    Ok(Mailbox {
        name,
        address: addr_spec(&format!("{field}.address"), &address.address)?,
    })
}

/// Checks an addr-spec and returns it with the domain in ASCII.
///
/// The local part must be a dot-atom of ASCII characters: non-ASCII local
/// parts need SMTPUTF8 (RFC 6531), which mailbridge does not use, and
/// quoted local parts are rare enough that receivers often mishandle
/// them. Address literals such as `[192.0.2.1]` are rejected as well.
fn addr_spec(field: &str, raw: &str) -> Result<String, Rejection> {
    single_line(field, raw)?;

    let trimmed = raw.trim();
    let invalid = |why: &str| {
        Rejection::at(
            RejectReason::InvalidAddress,
            field,
            format!("{} is not a valid address: {why}", preview(raw)),
        )
    };
    if trimmed.contains(['<', '>']) {
        return Err(invalid(
            "angle brackets: give the bare address, and a display name in `name`",
        ));
    }
    let (local, domain) = trimmed
        .rsplit_once('@')
        .ok_or_else(|| invalid("missing '@'"))?;

    local_part(local).map_err(invalid)?;
    let domain = ascii_domain(domain).map_err(invalid)?;
    let address = format!("{local}@{domain}");
    if address.len() > MAX_ADDRESS {
        return Err(invalid(&format!("longer than {MAX_ADDRESS} characters")));
    }

    Ok(address)
}

fn local_part(local: &str) -> Result<(), &'static str> {
    if local.is_empty() {
        return Err("empty local part");
    }
    if !local.is_ascii() {
        return Err("non-ASCII local part needs SMTPUTF8, which is not supported");
    }
    if local.len() > MAX_LOCAL_PART {
        return Err("local part longer than 64 characters");
    }
    if !is_dot_atom_text(local) {
        return Err("local part is not a dot-atom (RFC 5322 section 3.4.1)");
    }

    Ok(())
}

/// Converts a domain to its ASCII form with UTS 46 and checks it is a
/// host name: letters, digits and hyphens in labels of 1 to 63 octets.
fn ascii_domain(domain: &str) -> Result<String, &'static str> {
    if domain.starts_with('[') {
        return Err("address literals are not accepted");
    }

    let ascii = idna::domain_to_ascii_strict(domain)
        .map_err(|_| "domain is not a valid host name (IDNA)")?;
    let valid = !ascii.is_empty()
        && ascii.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !valid {
        return Err("domain is not a valid host name");
    }

    Ok(ascii)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(name: Option<&str>, address: &str) -> Address {
        Address {
            name: name.map(str::to_owned),
            address: address.to_owned(),
        }
    }

    fn checked(address: &str) -> Result<String, Rejection> {
        addr_spec("to[0].address", address)
    }

    #[test]
    fn plain_addresses_pass() {
        assert_eq!(checked("bob@example.test").unwrap(), "bob@example.test");
        assert_eq!(checked(" bob@example.test ").unwrap(), "bob@example.test");
        assert_eq!(
            checked("o'brien+tag@mail.example.test").unwrap(),
            "o'brien+tag@mail.example.test"
        );
    }

    #[test]
    fn domain_becomes_ascii() {
        assert_eq!(
            checked("bob@München.example").unwrap(),
            "bob@xn--mnchen-3ya.example"
        );
        assert_eq!(checked("bob@EXAMPLE.Test").unwrap(), "bob@example.test");

        let mailbox = Mailbox::from_address("from", "anna@bücher.test").unwrap();
        assert_eq!(mailbox.local_part(), "anna");
        assert_eq!(mailbox.domain(), "xn--bcher-kva.test");
    }

    #[test]
    fn bad_addresses_are_invalid_address() {
        let bad = [
            "bob",
            "@example.test",
            "bob@",
            "bob@@example.test",
            "bob smith@example.test",
            "bob..smith@example.test",
            ".bob@example.test",
            "jörg@example.test",
            "\"quoted\"@example.test",
            "bob@[192.0.2.1]",
            "bob@exa mple.test",
            "bob@-example.test",
            "bob@example..test",
            "bob@under_score.test",
            "<bob@example.test>",
        ];
        for address in bad {
            let rejection = checked(address).unwrap_err();
            assert_eq!(
                rejection.reason,
                RejectReason::InvalidAddress,
                "{address:?}"
            );
            assert_eq!(rejection.field.as_deref(), Some("to[0].address"));
        }
    }

    #[test]
    fn lengths_are_capped() {
        let local = "a".repeat(65);
        assert!(checked(&format!("{local}@example.test")).is_err());

        let domain = format!("{}.test", vec!["b".repeat(60); 5].join("."));
        assert!(checked(&format!("a@{domain}")).is_err());
    }

    #[test]
    fn line_break_is_invalid_header_value() {
        let rejection = checked("bob@example.test\r\nBcc: m@attacker.test").unwrap_err();

        assert_eq!(rejection.reason, RejectReason::InvalidHeaderValue);
    }

    #[test]
    fn names_are_checked_and_trimmed() {
        let joerg = mailbox("from", &object(Some("  Müller, Jörg "), "j@example.test")).unwrap();
        assert_eq!(joerg.name(), Some("Müller, Jörg"));

        let blank = mailbox("to[0]", &object(Some(" "), "j@example.test")).unwrap();
        assert_eq!(blank.name(), None);

        let injected = mailbox("from", &object(Some("Support\nBcc: x"), "s@example.test"));
        let rejection = injected.unwrap_err();
        assert_eq!(rejection.reason, RejectReason::InvalidHeaderValue);
        assert_eq!(rejection.field.as_deref(), Some("from.name"));
    }
}
