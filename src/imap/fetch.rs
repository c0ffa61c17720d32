//! `UID FETCH` of messages (RFC 3501 section 6.4.5) with `BODY.PEEK[]`,
//! or `BODY.PEEK[HEADER]` for a message larger than a limit, which both
//! leave `\Seen` unchanged.

use std::collections::BTreeMap;

use async_imap::imap_proto::{AttributeValue, MessageSection, Response, SectionPath};
use chrono::{DateTime, FixedOffset};

use super::error::ImapError;
use super::session::Session;
use super::uid_set;

/// UIDs per `UID FETCH` command, which keeps command lines short.
const FETCH_BATCH: usize = 500;

/// The data items fetched for each mail.
const FETCH_ITEMS: &str = "(UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[])";

/// The data items fetched for a mail larger than the caller's limit: the
/// header section (RFC 3501 section 6.4.5, `HEADER`) instead of the whole.
const HEADER_ITEMS: &str = "(UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[HEADER])";

/// The data item that gives the size of each mail before it is fetched.
const SIZE_ITEMS: &str = "(UID RFC822.SIZE)";

/// The `date-time` format of INTERNALDATE, such as `17-Jul-1996 02:44:25 -0700`.
const INTERNALDATE_FORMAT: &str = "%d-%b-%Y %H:%M:%S %z";

/// One fetched mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// UID in the selected mailbox.
    pub uid: u32,
    /// Flags and keywords as the server wrote them, such as `\Seen` or
    /// `$Forwarded`.
    pub flags: Vec<String>,
    /// INTERNALDATE: when the server received the mail. `None` when the
    /// server sent none or an unreadable one.
    pub internal_date: Option<DateTime<FixedOffset>>,
    /// RFC822.SIZE in bytes, when the server sent it.
    pub size: Option<u32>,
    /// The raw message (RFC 5322), or only its header section, up to and
    /// including the empty line, when `header_only` is set.
    pub body: Vec<u8>,
    /// Whether `body` is the header section alone, because `size` was
    /// larger than the limit given to [`Session::fetch_up_to`].
    pub header_only: bool,
}

/// The size of one mail, from `UID FETCH (UID RFC822.SIZE)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailSize {
    /// UID in the selected mailbox.
    pub uid: u32,
    /// RFC822.SIZE in bytes, when the server sent it.
    pub size: Option<u32>,
}

/// Items of one FETCH response. A server may split a mail over several.
#[derive(Default)]
struct Items {
    flags: Option<Vec<String>>,
    internal_date: Option<Option<DateTime<FixedOffset>>>,
    size: Option<u32>,
    body: Option<Vec<u8>>,
    header_only: bool,
}

impl Items {
    fn parse(attributes: &[AttributeValue<'_>]) -> (Option<u32>, Self) {
        let mut uid = None;
        let mut items = Self::default();
        for attribute in attributes {
            match attribute {
                AttributeValue::Uid(value) => uid = Some(*value),
                AttributeValue::Flags(flags) => {
                    items.flags = Some(flags.iter().map(|flag| flag.to_string()).collect());
                }
                AttributeValue::InternalDate(date) => {
                    items.internal_date = Some(parse_internal_date(date));
                }
                AttributeValue::Rfc822Size(size) => items.size = Some(*size),
                AttributeValue::BodySection {
                    section: None,
                    data: Some(data),
                    ..
                }
                | AttributeValue::Rfc822(Some(data)) => items.body = Some(data.to_vec()),
                AttributeValue::BodySection {
                    section: Some(SectionPath::Full(MessageSection::Header)),
                    data: Some(data),
                    ..
                } => {
                    items.body = Some(data.to_vec());
                    items.header_only = true;
                }
                _ => {}
            }
        }
        (uid, items)
    }

    fn merge(&mut self, later: Items) {
        self.flags = later.flags.or(self.flags.take());
        self.internal_date = later.internal_date.or(self.internal_date.take());
        self.size = later.size.or(self.size);
        if later.body.is_some() {
            self.header_only = later.header_only;
        }
        self.body = later.body.or(self.body.take());
    }

    fn into_fetched(self, uid: u32) -> Option<Fetched> {
        Some(Fetched {
            uid,
            flags: self.flags.unwrap_or_default(),
            internal_date: self.internal_date.flatten(),
            size: self.size,
            body: self.body?,
            header_only: self.header_only,
        })
    }
}

/// Parses an INTERNALDATE, whose day of month may be space-padded.
fn parse_internal_date(text: &str) -> Option<DateTime<FixedOffset>> {
    DateTime::parse_from_str(text.trim(), INTERNALDATE_FORMAT).ok()
}

impl Session {
    /// Fetches the mails `uids` of the selected mailbox, sorted by UID.
    /// `BODY.PEEK[]` leaves `\Seen` as it was. UIDs that no longer exist,
    /// for example because another client expunged them, are missing from
    /// the result.
    ///
    /// # Errors
    ///
    /// [`ImapError::NotSelected`] before SELECT, [`ImapError::Command`] for
    /// a `NO` or `BAD`, and connection errors.
    pub async fn fetch(&mut self, uids: &[u32]) -> Result<Vec<Fetched>, ImapError> {
        self.fetch_up_to(uids, u64::MAX).await
    }

    /// Fetches the mails `uids` as [`Session::fetch`] does, except that a
    /// mail whose RFC822.SIZE is above `max_bytes` comes with its header
    /// section only, so that its body never enters memory. The sizes take
    /// one more command first, unless `max_bytes` is at least `u32::MAX`,
    /// the largest RFC822.SIZE that RFC 3501 allows (a `number`).
    ///
    /// # Errors
    ///
    /// As for [`Session::fetch`].
    pub async fn fetch_up_to(
        &mut self,
        uids: &[u32],
        max_bytes: u64,
    ) -> Result<Vec<Fetched>, ImapError> {
        let wanted = uid_set::normalize(uids);
        let (whole, headers) = match max_bytes >= u64::from(u32::MAX) {
            true => (wanted, Vec::new()),
            false => split_by_size(&self.sizes(&wanted).await?, max_bytes),
        };

        self.fetch_split(&whole, &headers).await
    }

    /// Returns the RFC822.SIZE of each of `uids`, sorted by UID. A UID that
    /// no longer exists is missing, and one whose size the server did not
    /// send has `None`.
    ///
    /// # Errors
    ///
    /// As for [`Session::fetch`].
    pub async fn sizes(&mut self, uids: &[u32]) -> Result<Vec<MailSize>, ImapError> {
        let mailbox = self.require_selected("UID FETCH")?;
        let wanted = uid_set::normalize(uids);
        let sizes = self.fetch_items(&mailbox, &wanted, SIZE_ITEMS).await?;

        Ok(sizes
            .into_iter()
            .map(|(uid, items)| MailSize {
                uid,
                size: items.size,
            })
            .collect())
    }

    /// Fetches the mails `whole` with their whole body and the mails
    /// `headers` with their header section only, sorted by UID, without a
    /// size command first.
    ///
    /// # Errors
    ///
    /// As for [`Session::fetch`].
    pub async fn fetch_split(
        &mut self,
        whole: &[u32],
        headers: &[u32],
    ) -> Result<Vec<Fetched>, ImapError> {
        let mailbox = self.require_selected("UID FETCH")?;
        let (whole, headers) = (uid_set::normalize(whole), uid_set::normalize(headers));
        let mut fetched = self.fetch_items(&mailbox, &whole, FETCH_ITEMS).await?;
        fetched.append(&mut self.fetch_items(&mailbox, &headers, HEADER_ITEMS).await?);
        let mails: Vec<Fetched> = fetched
            .into_iter()
            .filter_map(|(uid, items)| items.into_fetched(uid))
            .collect();
        tracing::debug!(
            server = %self.server(),
            mailbox = %mailbox,
            requested = whole.len() + headers.len(),
            fetched = mails.len(),
            header_only = headers.len(),
            "Fetched mails"
        );
        Ok(mails)
    }

    /// Fetches like [`Session::fetch_split`], but hands each mail to `each`
    /// while the fetch goes on, so that the caller can work on it before the
    /// last mail arrives. The mails fetched whole come first, then those
    /// fetched by header, each in the server's order. A mail is handed over
    /// once a response for another mail or the command's completion follows
    /// the response with its body, so that a response split in two still
    /// gives one mail. Returns the number of mails handed over.
    ///
    /// # Errors
    ///
    /// As for [`Session::fetch`]; the mails handed over before the error
    /// stay with the caller.
    pub async fn fetch_split_each(
        &mut self,
        whole: &[u32],
        headers: &[u32],
        mut each: impl FnMut(Fetched),
    ) -> Result<usize, ImapError> {
        let mailbox = self.require_selected("UID FETCH")?;
        let (whole, headers) = (uid_set::normalize(whole), uid_set::normalize(headers));
        let mut count = 0;
        let mut hand_over = |mail: Fetched| {
            count += 1;
            each(mail);
        };
        for (uids, items) in [(&whole, FETCH_ITEMS), (&headers, HEADER_ITEMS)] {
            for batch in uids.chunks(FETCH_BATCH) {
                let command = format!("UID FETCH {} {items}", uid_set::format(batch));
                let mut arriving = Arriving::default();
                let completion = self
                    .command("UID FETCH", Some(&mailbox), &command, |response| {
                        arriving.add(response, batch, &mut hand_over)
                    })
                    .await?;
                if !completion.is_ok() {
                    return Err(self.command_failed("UID FETCH", Some(&mailbox), &completion));
                }
                arriving.finish(&mut hand_over);
            }
        }
        tracing::debug!(
            server = %self.server(),
            mailbox = %mailbox,
            requested = whole.len() + headers.len(),
            fetched = count,
            header_only = headers.len(),
            "Fetched mails"
        );
        Ok(count)
    }

    /// Sends `UID FETCH` with `items` for sorted `uids`, in commands of at
    /// most [`FETCH_BATCH`] UIDs, and collects the responses by UID.
    async fn fetch_items(
        &mut self,
        mailbox: &str,
        uids: &[u32],
        items: &str,
    ) -> Result<BTreeMap<u32, Items>, ImapError> {
        let mut fetched: BTreeMap<u32, Items> = BTreeMap::new();
        for batch in uids.chunks(FETCH_BATCH) {
            let command = format!("UID FETCH {} {items}", uid_set::format(batch));
            let completion = self
                .command("UID FETCH", Some(mailbox), &command, |response| {
                    collect(response, batch, &mut fetched)
                })
                .await?;
            if !completion.is_ok() {
                return Err(self.command_failed("UID FETCH", Some(mailbox), &completion));
            }
        }

        Ok(fetched)
    }
}

/// Splits `sizes` into the UIDs to fetch whole and those above
/// `max_bytes`. A mail without RFC822.SIZE is fetched whole.
fn split_by_size(sizes: &[MailSize], max_bytes: u64) -> (Vec<u32>, Vec<u32>) {
    let too_large = |mail: &MailSize| mail.size.is_some_and(|size| u64::from(size) > max_bytes);
    let (headers, whole): (Vec<&MailSize>, Vec<&MailSize>) =
        sizes.iter().partition(|mail| too_large(mail));

    (
        whole.iter().map(|mail| mail.uid).collect(),
        headers.iter().map(|mail| mail.uid).collect(),
    )
}

/// Adds a FETCH response for one of the `batch` UIDs to `fetched`.
/// Returns false for other responses, such as another mail's flag change.
fn collect(response: &Response<'_>, batch: &[u32], fetched: &mut BTreeMap<u32, Items>) -> bool {
    let Some((uid, items)) = batch_items(response, batch) else {
        return false;
    };
    fetched.entry(uid).or_default().merge(items);
    true
}

/// Returns the UID and items of a FETCH response for one of the `batch`
/// UIDs, or `None` for any other response.
fn batch_items(response: &Response<'_>, batch: &[u32]) -> Option<(u32, Items)> {
    let Response::Fetch(_, attributes) = response else {
        return None;
    };
    let (Some(uid), items) = Items::parse(attributes) else {
        return None;
    };
    batch.binary_search(&uid).ok()?;
    Some((uid, items))
}

/// The mails of one `UID FETCH` whose responses have arrived but that were
/// not handed over yet.
#[derive(Default)]
struct Arriving {
    pending: BTreeMap<u32, Items>,
    /// Mails handed over, whose later responses are left out.
    handed_over: std::collections::BTreeSet<u32>,
}

impl Arriving {
    /// Adds a FETCH response for one of the `batch` UIDs, and hands over
    /// every mail with a body other than the response's. Returns false for
    /// other responses, such as another mail's flag change.
    fn add(&mut self, response: &Response<'_>, batch: &[u32], each: impl FnMut(Fetched)) -> bool {
        let Some((uid, items)) = batch_items(response, batch) else {
            return false;
        };
        if !self.handed_over.contains(&uid) {
            self.hand_over_all_but(Some(uid), each);
            self.pending.entry(uid).or_default().merge(items);
        }
        true
    }

    /// Hands over every mail with a body, at the command's completion.
    fn finish(&mut self, each: impl FnMut(Fetched)) {
        self.hand_over_all_but(None, each);
    }

    fn hand_over_all_but(&mut self, kept: Option<u32>, mut each: impl FnMut(Fetched)) {
        let ready: Vec<u32> = self
            .pending
            .iter()
            .filter(|(uid, items)| Some(**uid) != kept && items.body.is_some())
            .map(|(uid, _)| *uid)
            .collect();
        for uid in ready {
            let items = self.pending.remove(&uid).unwrap_or_default();
            self.handed_over.insert(uid);
            if let Some(mail) = items.into_fetched(uid) {
                each(mail);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    #[test]
    fn internal_date_parsed() {
        let date = parse_internal_date("17-Jul-1996 02:44:25 -0700").unwrap();

        assert_eq!(date.to_rfc3339(), "1996-07-17T02:44:25-07:00");
    }

    #[test]
    fn space_padded_day_parsed() {
        let date = parse_internal_date(" 7-Jul-1996 02:44:25 +0200").unwrap();

        assert_eq!(date.to_rfc3339(), "1996-07-07T02:44:25+02:00");
    }

    #[test]
    fn unreadable_internal_date_is_none() {
        assert_eq!(parse_internal_date("yesterday"), None);
    }

    fn attributes(uid: u32, body: Option<&'static [u8]>) -> Vec<AttributeValue<'static>> {
        let mut attributes = vec![
            AttributeValue::Uid(uid),
            AttributeValue::Flags(vec![Cow::Borrowed("\\Answered"), Cow::Borrowed("$Label1")]),
            AttributeValue::Rfc822Size(5),
        ];
        if let Some(body) = body {
            attributes.push(AttributeValue::BodySection {
                section: None,
                index: None,
                data: Some(Cow::Borrowed(body)),
            });
        }
        attributes
    }

    #[test]
    fn fetch_items_collected() {
        let mut fetched = BTreeMap::new();
        let response = Response::Fetch(1, attributes(7, Some(b"hello")));

        assert!(collect(&response, &[7], &mut fetched));

        let mail = fetched.remove(&7).unwrap().into_fetched(7).unwrap();
        assert_eq!(mail.flags, ["\\Answered", "$Label1"]);
        assert_eq!(mail.size, Some(5));
        assert_eq!(mail.body, b"hello");
    }

    #[test]
    fn other_mails_flag_change_ignored() {
        let mut fetched = BTreeMap::new();
        let response = Response::Fetch(3, attributes(9, None));

        assert!(!collect(&response, &[7], &mut fetched));
        assert!(fetched.is_empty());
    }

    #[test]
    fn split_response_merged() {
        let mut fetched = BTreeMap::new();
        collect(
            &Response::Fetch(1, attributes(7, Some(b"hello"))),
            &[7],
            &mut fetched,
        );
        let flags_only = vec![
            AttributeValue::Uid(7),
            AttributeValue::Flags(vec![Cow::Borrowed("\\Seen")]),
        ];
        collect(&Response::Fetch(1, flags_only), &[7], &mut fetched);

        let mail = fetched.remove(&7).unwrap().into_fetched(7).unwrap();
        assert_eq!(mail.flags, ["\\Seen"]);
        assert_eq!(mail.body, b"hello");
    }

    #[test]
    fn header_section_marked_header_only() {
        let mut fetched = BTreeMap::new();
        let mut items = attributes(7, None);
        items.push(AttributeValue::BodySection {
            section: Some(SectionPath::Full(MessageSection::Header)),
            index: None,
            data: Some(Cow::Borrowed(b"Subject: big\r\n\r\n")),
        });

        assert!(collect(&Response::Fetch(1, items), &[7], &mut fetched));

        let mail = fetched.remove(&7).unwrap().into_fetched(7).unwrap();
        assert!(mail.header_only);
        assert_eq!(mail.body, b"Subject: big\r\n\r\n");
        assert_eq!(mail.size, Some(5));
    }

    #[test]
    fn whole_body_not_header_only() {
        let mut fetched = BTreeMap::new();
        collect(
            &Response::Fetch(1, attributes(7, Some(b"hello"))),
            &[7],
            &mut fetched,
        );

        let mail = fetched.remove(&7).unwrap().into_fetched(7).unwrap();
        assert!(!mail.header_only);
    }

    /// Feeds `responses` to one fetch's [`Arriving`], and returns the UIDs
    /// handed over after each response and at the completion.
    fn hand_overs(responses: Vec<Response<'static>>) -> (Vec<Vec<u32>>, Vec<Fetched>) {
        let mut arriving = Arriving::default();
        let mut mails = Vec::new();
        let mut after_each = Vec::new();
        for response in &responses {
            let before = mails.len();
            arriving.add(response, &[7, 8, 9], |mail| mails.push(mail));
            after_each.push(mails[before..].iter().map(|mail| mail.uid).collect());
        }
        let before = mails.len();
        arriving.finish(|mail| mails.push(mail));
        after_each.push(mails[before..].iter().map(|mail| mail.uid).collect());
        (after_each, mails)
    }

    #[test]
    fn mail_handed_over_when_the_next_one_starts() {
        let (after_each, mails) = hand_overs(vec![
            Response::Fetch(1, attributes(7, Some(b"one"))),
            Response::Fetch(2, attributes(8, Some(b"two"))),
            Response::Fetch(3, attributes(9, Some(b"three"))),
        ]);

        assert_eq!(after_each, [vec![], vec![7], vec![8], vec![9]]);
        assert_eq!(mails[2].body, b"three");
    }

    #[test]
    fn split_response_handed_over_as_one_mail() {
        let flags_only = vec![
            AttributeValue::Uid(7),
            AttributeValue::Flags(vec![Cow::Borrowed("\\Seen")]),
        ];
        let (after_each, mails) = hand_overs(vec![
            Response::Fetch(1, attributes(7, Some(b"hello"))),
            Response::Fetch(1, flags_only),
            Response::Fetch(2, attributes(8, Some(b"two"))),
        ]);

        assert_eq!(after_each, [vec![], vec![], vec![7], vec![8]]);
        assert_eq!(mails[0].flags, ["\\Seen"]);
        assert_eq!(mails[0].body, b"hello");
    }

    #[test]
    fn response_after_hand_over_left_out() {
        let (after_each, mails) = hand_overs(vec![
            Response::Fetch(1, attributes(7, Some(b"one"))),
            Response::Fetch(2, attributes(8, Some(b"two"))),
            Response::Fetch(1, attributes(7, Some(b"again"))),
            Response::Fetch(5, attributes(12, Some(b"other mailbox change"))),
        ]);

        assert_eq!(after_each, [vec![], vec![7], vec![], vec![], vec![8]]);
        assert_eq!(mails.len(), 2);
        assert_eq!(mails[0].body, b"one");
    }

    #[test]
    fn mail_without_body_dropped() {
        let mut fetched = BTreeMap::new();
        collect(&Response::Fetch(1, attributes(7, None)), &[7], &mut fetched);

        assert!(fetched.remove(&7).unwrap().into_fetched(7).is_none());
    }
}
