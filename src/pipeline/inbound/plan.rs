//! Division of a mailbox's pending mail into batches bounded by a count
//! (`batch_size`) and by the sum of the mails' sizes (`max_batch_bytes`).
//! The memory of a batch then follows the configuration, not the size of
//! the mail in the mailbox.

use std::collections::VecDeque;

use crate::imap::{ImapError, MailSize, Session};

/// Smallest number of UIDs whose sizes one `UID FETCH (UID RFC822.SIZE)`
/// requests, so that a backfill needs one size command per thousand mails
/// rather than one per batch, while the sizes in memory stay few.
const SIZE_WINDOW: usize = 1000;

/// One batch of mail to fetch, publish and checkpoint together.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct Batch {
    /// Every UID of the batch, sorted.
    pub(super) uids: Vec<u32>,
    /// UIDs fetched with their whole body.
    pub(super) whole: Vec<u32>,
    /// UIDs above `max_message_bytes`, fetched with their header section
    /// only.
    pub(super) headers: Vec<u32>,
    /// Sum of the RFC822.SIZE of the mails in `whole` and `headers`.
    pub(super) bytes: u64,
}

/// Limits of one batch.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// Largest number of mails.
    pub(super) batch_size: usize,
    /// Largest sum of the sizes of the mails fetched whole, unless a single
    /// mail is larger.
    pub(super) max_batch_bytes: u64,
    /// Size above which a mail is fetched with its header section only.
    pub(super) max_message_bytes: u64,
}

/// Splits `sizes`, sorted by UID, into batches in UID order. A batch ends
/// when it contains `batch_size` mails or when the next mail would take the
/// sum of sizes past `max_batch_bytes`. A mail larger than that cap forms a
/// batch of its own.
///
/// A mail without RFC822.SIZE is fetched whole in a batch of its own,
/// because its size is unknown. A mail fetched by header counts with its
/// whole size, because its header section may be nearly all of it.
///
/// NOTE: RFC822.SIZE counts the message with CRLF line ends, which is the
/// form Dovecot sends; a server whose size is an estimate can make a batch
/// exceed the cap by that error.
pub(super) fn plan(sizes: &[MailSize], limits: Limits) -> Vec<Batch> {
    let mut batches = Vec::new();
    let mut current = Batch::default();
    for mail in sizes {
        let (bytes, header_only) = match mail.size {
            Some(size) if u64::from(size) > limits.max_message_bytes => (u64::from(size), true),
            Some(size) => (u64::from(size), false),
            None => (u64::MAX, false),
        };
        let full = current.uids.len() >= limits.batch_size
            || current.bytes.saturating_add(bytes) > limits.max_batch_bytes;
        if full && !current.uids.is_empty() {
            batches.push(std::mem::take(&mut current));
        }

        current.uids.push(mail.uid);
        match header_only {
            true => current.headers.push(mail.uid),
            false => current.whole.push(mail.uid),
        }
        current.bytes = current.bytes.saturating_add(bytes);
    }
    if !current.uids.is_empty() {
        batches.push(current);
    }

    batches
}

/// Batches of the UIDs above a checkpoint, planned from their sizes a
/// window at a time.
pub(super) struct Planner<'a> {
    pending: &'a [u32],
    planned: VecDeque<Batch>,
    limits: Limits,
}

impl<'a> Planner<'a> {
    /// Plans the batches of `pending`, sorted UIDs, within `limits`.
    pub(super) fn new(pending: &'a [u32], limits: Limits) -> Self {
        Self {
            pending,
            planned: VecDeque::new(),
            limits,
        }
    }

    /// Returns the next batch in UID order, fetching the sizes of the next
    /// window of UIDs when the planned batches are used up, or `None` when
    /// no UID is left.
    pub(super) async fn next_batch(
        &mut self,
        session: &mut Session,
    ) -> Result<Option<Batch>, ImapError> {
        while self.planned.is_empty() && !self.pending.is_empty() {
            let window = self
                .pending
                .len()
                .min(SIZE_WINDOW.max(self.limits.batch_size));
            let (uids, rest) = self.pending.split_at(window);
            self.pending = rest;
            // UIDs expunged since the search get no size and drop out here.
            let sizes = session.sizes(uids).await?;
            self.planned = plan(&sizes, self.limits).into();
        }

        Ok(self.planned.pop_front())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        batch_size: 3,
        max_batch_bytes: 1000,
        max_message_bytes: 5000,
    };

    fn sizes(values: &[(u32, Option<u32>)]) -> Vec<MailSize> {
        values
            .iter()
            .map(|&(uid, size)| MailSize { uid, size })
            .collect()
    }

    fn uids(batches: &[Batch]) -> Vec<Vec<u32>> {
        batches.iter().map(|batch| batch.uids.clone()).collect()
    }

    #[test]
    fn small_mails_split_by_count() {
        let mails = sizes(&[(1, Some(10)), (2, Some(10)), (3, Some(10)), (4, Some(10))]);

        let batches = plan(&mails, LIMITS);

        assert_eq!(uids(&batches), [vec![1, 2, 3], vec![4]]);
        assert_eq!(batches[0].bytes, 30);
    }

    #[test]
    fn large_mails_split_by_bytes() {
        let mails = sizes(&[
            (1, Some(400)),
            (2, Some(400)),
            (3, Some(400)),
            (4, Some(100)),
        ]);

        let batches = plan(&mails, LIMITS);

        assert_eq!(uids(&batches), [vec![1, 2], vec![3, 4]]);
        assert_eq!(batches[0].bytes, 800);
        assert_eq!(batches[1].bytes, 500);
    }

    #[test]
    fn mail_above_cap_fetched_alone() {
        let mails = sizes(&[(1, Some(10)), (2, Some(3000)), (3, Some(10))]);

        let batches = plan(&mails, LIMITS);

        assert_eq!(uids(&batches), [vec![1], vec![2], vec![3]]);
        assert_eq!(batches[1].whole, [2]);
        assert!(batches[1].headers.is_empty());
    }

    #[test]
    fn mail_above_message_limit_header_only() {
        let mails = sizes(&[(1, Some(10)), (2, Some(9000)), (3, Some(10))]);

        let batches = plan(&mails, LIMITS);

        assert_eq!(uids(&batches), [vec![1], vec![2], vec![3]]);
        assert!(batches[1].whole.is_empty());
        assert_eq!(batches[1].headers, [2]);
        assert_eq!(batches[1].bytes, 9000);
    }

    #[test]
    fn header_only_mails_count_their_size() {
        let limits = Limits {
            max_message_bytes: 100,
            ..LIMITS
        };
        let mails = sizes(&[(1, Some(400)), (2, Some(400)), (3, Some(400))]);

        let batches = plan(&mails, limits);

        assert_eq!(uids(&batches), [vec![1, 2], vec![3]]);
        assert_eq!(batches[0].headers, [1, 2]);
        assert_eq!(batches[0].bytes, 800);
    }

    #[test]
    fn mail_without_size_fetched_alone() {
        let mails = sizes(&[(1, Some(10)), (2, None), (3, Some(10))]);

        let batches = plan(&mails, LIMITS);

        assert_eq!(uids(&batches), [vec![1], vec![2], vec![3]]);
        assert_eq!(batches[1].whole, [2]);
    }

    #[test]
    fn cap_reached_exactly_stays_in_batch() {
        let mails = sizes(&[(1, Some(500)), (2, Some(500)), (3, Some(1))]);

        let batches = plan(&mails, LIMITS);

        assert_eq!(uids(&batches), [vec![1, 2], vec![3]]);
    }

    #[test]
    fn no_mail_no_batch() {
        assert!(plan(&[], LIMITS).is_empty());
    }
}
