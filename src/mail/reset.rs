//! The event published when a mailbox's UIDVALIDITY changed, so that
//! consumers know that the UIDs they saw before no longer name the same
//! mails (RFC 9051). Schema: `schemas/mailbox-reset.v1.json`.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use super::fields_digest;

/// A UIDVALIDITY change seen on one mailbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailboxReset {
    /// Stable event id: the same change seen again gets the same id.
    pub id: String,
    /// Name of the configured account.
    pub account: String,
    /// Mailbox name in UTF-8.
    pub mailbox: String,
    /// UIDVALIDITY stored in the checkpoint.
    pub previous_uidvalidity: u32,
    /// UIDVALIDITY that the server now reports.
    pub uidvalidity: u32,
    /// When the change was detected, in UTC as RFC 3339.
    pub detected_at: String,
    /// Name of the configured policy that handles the change.
    pub policy: String,
}

impl MailboxReset {
    /// Describes a change from `previous_uidvalidity` to `uidvalidity`
    /// detected at `detected_at` and handled by `policy`.
    pub fn new(
        account: &str,
        mailbox: &str,
        previous_uidvalidity: u32,
        uidvalidity: u32,
        detected_at: DateTime<Utc>,
        policy: &str,
    ) -> Self {
        let id = fields_digest(
            "mailbridge.mailbox-reset",
            &[account, mailbox],
            &[previous_uidvalidity, uidvalidity],
        );

        Self {
            id,
            account: account.to_owned(),
            mailbox: mailbox.to_owned(),
            previous_uidvalidity,
            uidvalidity,
            detected_at: detected_at.to_rfc3339_opts(SecondsFormat::Secs, true),
            policy: policy.to_owned(),
        }
    }

    /// Serializes the event as compact UTF-8 JSON.
    pub fn to_json(&self) -> Vec<u8> {
        // serde_json fails only on map keys that are not strings or on a
        // failing `Serialize` impl, and this type has neither.
        serde_json::to_vec(self).expect("mailbox reset event serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detected_at() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2024-07-12T03:30:20+02:00")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn reset_formats_time_in_utc() {
        let reset = MailboxReset::new("support", "INBOX", 1, 2, detected_at(), "republish");

        assert_eq!(reset.detected_at, "2024-07-12T01:30:20Z");
        assert_eq!(reset.previous_uidvalidity, 1);
        assert_eq!(reset.uidvalidity, 2);
        assert_eq!(reset.policy, "republish");
    }

    #[test]
    fn reset_id_is_stable_per_change() {
        let first = MailboxReset::new("support", "INBOX", 1, 2, detected_at(), "republish");
        let again = MailboxReset::new("support", "INBOX", 1, 2, Utc::now(), "republish");
        let other = MailboxReset::new("support", "INBOX", 2, 3, detected_at(), "republish");

        assert_eq!(first.id, again.id);
        assert_ne!(first.id, other.id);
        assert_ne!(
            first.id,
            super::super::document_id("support", "INBOX", 1, 2)
        );
    }

    #[test]
    fn reset_json_round_trips() {
        let reset = MailboxReset::new("support", "Entwürfe", 1, 2, detected_at(), "republish");

        let parsed: MailboxReset = serde_json::from_slice(&reset.to_json()).unwrap();

        assert_eq!(parsed, reset);
    }
}
