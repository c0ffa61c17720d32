//! The server's capabilities (RFC 3501 section 7.2.1) and the SASL
//! mechanism chosen from them.

use std::collections::BTreeSet;

use async_imap::imap_proto::types::Capability;

use crate::auth::mechanism_name;
use crate::config::Mechanism;

/// Capabilities that a server listed, by name in upper case.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    names: BTreeSet<String>,
    mechanisms: Vec<String>,
}

impl Capabilities {
    /// Collects the capabilities of a `CAPABILITY` reply or response code.
    pub(crate) fn from_list(list: &[Capability<'_>]) -> Self {
        let mut capabilities = Self::default();
        for capability in list {
            match capability {
                Capability::Imap4rev1 => capabilities.insert("IMAP4REV1"),
                Capability::Auth(mechanism) => capabilities.insert_mechanism(mechanism),
                Capability::Atom(name) => match strip_auth_prefix(name) {
                    Some(mechanism) => capabilities.insert_mechanism(mechanism),
                    None => capabilities.insert(name),
                },
            }
        }

        capabilities
    }

    fn insert(&mut self, name: &str) {
        self.names.insert(name.to_ascii_uppercase());
    }

    fn insert_mechanism(&mut self, mechanism: &str) {
        let mechanism = mechanism.to_ascii_uppercase();
        self.insert(&format!("AUTH={mechanism}"));
        if !self.mechanisms.contains(&mechanism) {
            self.mechanisms.push(mechanism);
        }
    }

    /// Returns whether the server listed `name`, such as `IDLE` or
    /// `AUTH=XOAUTH2`, compared without regard to case.
    pub fn has(&self, name: &str) -> bool {
        self.names.contains(&name.to_ascii_uppercase())
    }

    /// `IDLE` (RFC 2177).
    pub fn idle(&self) -> bool {
        self.has("IDLE")
    }

    /// `MOVE` (RFC 6851).
    pub fn r#move(&self) -> bool {
        self.has("MOVE")
    }

    /// `UIDPLUS` (RFC 4315), which adds `UID EXPUNGE`.
    pub fn uidplus(&self) -> bool {
        self.has("UIDPLUS")
    }

    /// `CONDSTORE` (RFC 7162).
    pub fn condstore(&self) -> bool {
        self.has("CONDSTORE")
    }

    /// `UTF8=ACCEPT` (RFC 6855).
    pub fn utf8_accept(&self) -> bool {
        self.has("UTF8=ACCEPT")
    }

    /// `SASL-IR` (RFC 4959): the initial response may follow
    /// `AUTHENTICATE` on the same line.
    pub fn sasl_ir(&self) -> bool {
        self.has("SASL-IR")
    }

    /// `STARTTLS` (RFC 3501 section 6.2.1).
    pub fn starttls(&self) -> bool {
        self.has("STARTTLS")
    }

    /// SASL mechanisms of the `AUTH=` capabilities, in upper case and in
    /// the server's order.
    pub fn mechanisms(&self) -> &[String] {
        &self.mechanisms
    }

    /// Returns whether the server offers `mechanism`.
    pub fn offers(&self, mechanism: Mechanism) -> bool {
        let name = mechanism_name(mechanism);
        self.mechanisms.iter().any(|offered| offered == name)
    }

    /// Chooses the SASL mechanism: the configured one when the server
    /// offers it, else the other OAuth2 mechanism, which carries the same
    /// bearer token. Returns `None` when the server offers neither.
    pub fn choose_mechanism(&self, configured: Mechanism) -> Option<Mechanism> {
        let other = match configured {
            Mechanism::Xoauth2 => Mechanism::Oauthbearer,
            Mechanism::Oauthbearer => Mechanism::Xoauth2,
        };

        [configured, other]
            .into_iter()
            .find(|mechanism| self.offers(*mechanism))
    }
}

/// Returns the mechanism of an `AUTH=` atom, in any case.
fn strip_auth_prefix(name: &str) -> Option<&str> {
    let prefix = name.get(..5)?;
    prefix.eq_ignore_ascii_case("AUTH=").then(|| &name[5..])
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    fn parse(line: &str) -> Capabilities {
        let list: Vec<Capability<'_>> = line
            .split(' ')
            .map(|name| match name {
                "IMAP4rev1" => Capability::Imap4rev1,
                _ => match name.strip_prefix("AUTH=") {
                    Some(mechanism) => Capability::Auth(Cow::Borrowed(mechanism)),
                    None => Capability::Atom(Cow::Borrowed(name)),
                },
            })
            .collect();
        Capabilities::from_list(&list)
    }

    #[test]
    fn gmail_capabilities() {
        let capabilities = parse(
            "IMAP4rev1 UNSELECT IDLE NAMESPACE QUOTA ID XLIST CHILDREN X-GM-EXT-1 XYZZY \
             SASL-IR AUTH=XOAUTH2 AUTH=PLAIN AUTH=PLAIN-CLIENTTOKEN AUTH=OAUTHBEARER",
        );

        assert!(capabilities.idle());
        assert!(capabilities.sasl_ir());
        assert!(!capabilities.r#move());
        assert!(!capabilities.uidplus());
        assert!(capabilities.has("imap4rev1"));
        assert_eq!(
            capabilities.mechanisms(),
            ["XOAUTH2", "PLAIN", "PLAIN-CLIENTTOKEN", "OAUTHBEARER"]
        );
    }

    #[test]
    fn names_compared_without_case() {
        let capabilities = parse("IMAP4rev1 Move uidplus utf8=accept CONDSTORE auth=xoauth2");

        assert!(capabilities.r#move());
        assert!(capabilities.uidplus());
        assert!(capabilities.utf8_accept());
        assert!(capabilities.condstore());
        assert!(capabilities.offers(Mechanism::Xoauth2));
    }

    #[test]
    fn configured_mechanism_preferred() {
        let capabilities = parse("IMAP4rev1 AUTH=XOAUTH2 AUTH=OAUTHBEARER");

        assert_eq!(
            capabilities.choose_mechanism(Mechanism::Oauthbearer),
            Some(Mechanism::Oauthbearer)
        );
        assert_eq!(
            capabilities.choose_mechanism(Mechanism::Xoauth2),
            Some(Mechanism::Xoauth2)
        );
    }

    #[test]
    fn oauthbearer_when_xoauth2_missing() {
        let capabilities = parse("IMAP4rev1 AUTH=PLAIN AUTH=OAUTHBEARER");

        assert_eq!(
            capabilities.choose_mechanism(Mechanism::Xoauth2),
            Some(Mechanism::Oauthbearer)
        );
    }

    #[test]
    fn no_oauth2_mechanism() {
        let capabilities = parse("IMAP4rev1 STARTTLS AUTH=PLAIN LOGINDISABLED");

        assert_eq!(capabilities.choose_mechanism(Mechanism::Xoauth2), None);
        assert!(capabilities.starttls());
    }
}
