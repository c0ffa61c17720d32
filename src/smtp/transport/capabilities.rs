//! The service extensions that a server lists in its EHLO reply (RFC 5321
//! section 4.1.1.1): STARTTLS (RFC 3207), AUTH (RFC 4954), SIZE (RFC
//! 1870), 8BITMIME (RFC 6152) and SMTPUTF8 (RFC 6531).

use super::reply::Reply;
use crate::auth::mechanism_name;
use crate::config::Mechanism;

/// Extensions of one EHLO reply. Keywords and mechanisms are upper case.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Capabilities {
    keywords: Vec<String>,
    mechanisms: Vec<String>,
    size: Option<u64>,
}

impl Capabilities {
    /// Reads the extensions from the lines after the first, which contains
    /// the server's name and greeting.
    pub(crate) fn from_reply(reply: &Reply) -> Self {
        let mut capabilities = Self::default();
        for line in reply.lines.iter().skip(1) {
            capabilities.add(line);
        }
        capabilities
    }

    fn add(&mut self, line: &str) {
        // `AUTH=PLAIN LOGIN` is the form of drafts before RFC 2554 that
        // some servers still send beside the standard `AUTH PLAIN LOGIN`.
        let line = line.trim();
        let (keyword, parameters) = match line.split_once([' ', '=']) {
            Some((keyword, parameters)) => (keyword, parameters),
            None => (line, ""),
        };
        let keyword = keyword.to_ascii_uppercase();
        let parameters = parameters.split_whitespace().map(str::to_ascii_uppercase);

        match keyword.as_str() {
            "AUTH" => self.mechanisms.extend(parameters),
            "SIZE" => {
                self.size = parameters
                    .into_iter()
                    .next()
                    .and_then(|size| size.parse().ok())
            }
            _ => {}
        }
        if !keyword.is_empty() && !self.keywords.contains(&keyword) {
            self.keywords.push(keyword);
        }
    }

    /// Returns whether the server lists `keyword`, given in upper case.
    pub(crate) fn has(&self, keyword: &str) -> bool {
        self.keywords.iter().any(|listed| listed == keyword)
    }

    /// Returns the extension keywords in the order listed.
    pub(crate) fn keywords(&self) -> &[String] {
        &self.keywords
    }

    /// Returns whether the server offers STARTTLS.
    pub(crate) fn starttls(&self) -> bool {
        self.has("STARTTLS")
    }

    /// Returns the SASL mechanisms of the AUTH extension.
    pub(crate) fn mechanisms(&self) -> &[String] {
        &self.mechanisms
    }

    /// Returns the maximum message size in bytes, when the server lists
    /// one. `SIZE 0` means no fixed maximum (RFC 1870 section 4).
    pub(crate) fn max_message_bytes(&self) -> Option<u64> {
        self.size.filter(|size| *size > 0)
    }

    /// Returns `configured` when the server offers it, else the other of
    /// XOAUTH2 and OAUTHBEARER when the server offers that one.
    pub(crate) fn choose_mechanism(&self, configured: Mechanism) -> Option<Mechanism> {
        let other = match configured {
            Mechanism::Xoauth2 => Mechanism::Oauthbearer,
            Mechanism::Oauthbearer => Mechanism::Xoauth2,
        };
        let offered = |mechanism| {
            let name = mechanism_name(mechanism);
            self.mechanisms.iter().any(|listed| listed == name)
        };

        [configured, other]
            .into_iter()
            .find(|mechanism| offered(*mechanism))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capabilities(lines: &[&str]) -> Capabilities {
        let reply = Reply {
            code: 250,
            enhanced: None,
            lines: lines.iter().map(|line| line.to_string()).collect(),
        };
        Capabilities::from_reply(&reply)
    }

    #[test]
    fn postfix_after_tls() {
        let listed = capabilities(&[
            "mail.example.test",
            "PIPELINING",
            "SIZE 10240000",
            "AUTH XOAUTH2 OAUTHBEARER",
            "8BITMIME",
            "SMTPUTF8",
        ]);

        assert!(!listed.starttls());
        assert!(listed.has("8BITMIME"));
        assert!(listed.has("SMTPUTF8"));
        assert_eq!(listed.max_message_bytes(), Some(10_240_000));
        assert_eq!(listed.mechanisms(), ["XOAUTH2", "OAUTHBEARER"]);
    }

    #[test]
    fn first_line_is_not_a_keyword() {
        let listed = capabilities(&["STARTTLS greets you"]);

        assert!(!listed.starttls());
    }

    #[test]
    fn starttls_in_lower_case() {
        assert!(capabilities(&["mx", "starttls"]).starttls());
    }

    #[test]
    fn old_auth_form_read() {
        let listed = capabilities(&["mx", "AUTH=login xoauth2"]);

        assert_eq!(listed.mechanisms(), ["LOGIN", "XOAUTH2"]);
    }

    #[test]
    fn size_zero_means_no_limit() {
        assert_eq!(capabilities(&["mx", "SIZE 0"]).max_message_bytes(), None);
        assert_eq!(capabilities(&["mx", "SIZE"]).max_message_bytes(), None);
    }

    #[test]
    fn configured_mechanism_preferred() {
        let listed = capabilities(&["mx", "AUTH OAUTHBEARER XOAUTH2"]);

        assert_eq!(
            listed.choose_mechanism(Mechanism::Xoauth2),
            Some(Mechanism::Xoauth2)
        );
        assert_eq!(
            listed.choose_mechanism(Mechanism::Oauthbearer),
            Some(Mechanism::Oauthbearer)
        );
    }

    #[test]
    fn other_oauth_mechanism_used() {
        let only_bearer = capabilities(&["mx", "AUTH PLAIN OAUTHBEARER"]);
        let only_xoauth2 = capabilities(&["mx", "AUTH LOGIN XOAUTH2"]);

        assert_eq!(
            only_bearer.choose_mechanism(Mechanism::Xoauth2),
            Some(Mechanism::Oauthbearer)
        );
        assert_eq!(
            only_xoauth2.choose_mechanism(Mechanism::Oauthbearer),
            Some(Mechanism::Xoauth2)
        );
    }

    #[test]
    fn no_oauth_mechanism() {
        let listed = capabilities(&["mx", "AUTH PLAIN LOGIN"]);

        assert_eq!(listed.choose_mechanism(Mechanism::Xoauth2), None);
        assert_eq!(
            capabilities(&["mx"]).choose_mechanism(Mechanism::Xoauth2),
            None
        );
    }
}
