//! Unit tests of the header fields: dates, address lists, message ids
//! and decoded header values.

use super::*;
use crate::mail::{DocumentOptions, FetchedMail, build};

fn doc(raw: &[u8]) -> InboundMail {
    let fetched = FetchedMail {
        account: "support",
        mailbox: "INBOX",
        uidvalidity: 1,
        uid: 1,
        flags: Vec::new(),
        received_at: None,
        size: None,
        raw,
    };
    build(&fetched, &DocumentOptions::default())
}

fn codes(doc: &InboundMail) -> Vec<WarningCode> {
    doc.warnings.iter().map(|warning| warning.code).collect()
}

fn date_of(value: &str) -> InboundMail {
    doc(format!("Date: {value}\r\nMessage-ID: <d@example.test>\r\n\r\nx\r\n").as_bytes())
}

fn address(name: Option<&str>, address: &str) -> Address {
    Address {
        name: name.map(str::to_owned),
        address: address.to_owned(),
    }
}

#[test]
fn date_converts_offset_to_utc() {
    let doc = date_of("Thu, 6 Oct 2022 12:27:13 +0200 (GMT+02:00)");

    assert_eq!(doc.date.as_deref(), Some("2022-10-06T10:27:13Z"));
    assert!(doc.warnings.is_empty(), "{:?}", doc.warnings);
}

#[test]
fn date_with_negative_half_hour_offset() {
    let doc = date_of("Sun, 31 Dec 2023 23:45:00 -0330");

    assert_eq!(doc.date.as_deref(), Some("2024-01-01T03:15:00Z"));
}

#[test]
fn date_obsolete_form_is_read() {
    let doc = date_of("6 Oct 22 12:27 EST");

    assert_eq!(doc.date.as_deref(), Some("2022-10-06T17:27:00Z"));
    assert!(doc.warnings.is_empty(), "{:?}", doc.warnings);
}

#[test]
fn date_out_of_range_is_null() {
    for value in [
        "Mon, 32 Jan 2024 10:00:00 +0000",
        "Mon, 1 Jan 2024 25:00:00 +0000",
    ] {
        let doc = date_of(value);

        assert_eq!(doc.date, None, "{value}");
        assert_eq!(codes(&doc), [WarningCode::DateInvalid], "{value}");
    }
}

#[test]
fn folded_message_id_is_unfolded() {
    let doc = doc(b"Message-ID:\r\n <abc\r\n def@example.test>\r\nSubject: x\r\n\r\nx\r\n");

    let id = doc.message_id.expect("message id");
    assert!(!id.contains(['\r', '\n']), "{id:?}");
    assert!(
        id.starts_with("abc") && id.ends_with("def@example.test"),
        "{id:?}"
    );
}

#[test]
fn date_before_1900_is_null() {
    for value in [
        "Mon, 01 Jan 0000 00:00:00 -2359",
        "Mon, 01 Jan 0099 00:00:00 +0000",
        "Fri, 31 Dec 1899 23:59:59 +0000",
    ] {
        let doc = date_of(value);

        assert_eq!(doc.date, None, "{value}");
        assert_eq!(codes(&doc), [WarningCode::DateInvalid], "{value}");
    }
}

#[test]
fn date_two_digit_year_still_read() {
    let doc = date_of("Sat, 1 Jan 00 00:00:00 +0000");

    assert_eq!(doc.date.as_deref(), Some("2000-01-01T00:00:00Z"));
}

#[test]
fn date_garbage_is_null_never_epoch() {
    for value in ["", "0", "garbage", "Thu, 01 Jan 1970", "(only a comment)"] {
        let doc = date_of(value);

        assert_eq!(doc.date, None, "{value:?}");
        assert_eq!(codes(&doc), [WarningCode::DateInvalid], "{value:?}");
    }
}

#[test]
fn date_missing_is_null() {
    let doc = doc(b"Subject: no date\r\nMessage-ID: <m@example.test>\r\n\r\nx\r\n");

    assert_eq!(doc.date, None);
    assert_eq!(codes(&doc), [WarningCode::DateMissing]);
}

#[test]
fn parsed_date_rejects_invalid_fields() {
    let valid = mail_parser::DateTime {
        year: 2024,
        month: 2,
        day: 29,
        hour: 23,
        minute: 59,
        second: 59,
        tz_before_gmt: true,
        tz_hour: 1,
        tz_minute: 0,
    };
    let not_leap = mail_parser::DateTime {
        year: 2023,
        ..valid
    };

    assert_eq!(parsed_date(&valid).as_deref(), Some("2024-03-01T00:59:59Z"));
    assert_eq!(parsed_date(&not_leap), None);
}

#[test]
fn groups_are_flattened() {
    let doc = doc(
        b"To: Team: a@example.test, \"Doe, Jo\" <jo@example.test>;, b@example.test\r\n\
        Cc: undisclosed-recipients:;\r\n\r\nx\r\n",
    );

    let expected = [
        address(None, "a@example.test"),
        address(Some("Doe, Jo"), "jo@example.test"),
        address(None, "b@example.test"),
    ];
    assert_eq!(doc.to, expected);
    assert_eq!(doc.cc, []);
    assert!(!codes(&doc).contains(&WarningCode::AddressInvalid));
}

#[test]
fn empty_display_name_is_null() {
    let doc = doc(b"From: \"\" <a@example.test>\r\nReply-To: =?utf-8?q?Zo=C3=AB?= <z@example.test>\r\n\r\nx\r\n");

    assert_eq!(doc.from, [address(None, "a@example.test")]);
    assert_eq!(doc.reply_to, [address(Some("Zoë"), "z@example.test")]);
}

#[test]
fn entry_without_address_is_left_out() {
    let doc = doc(b"To: Nobody Example, ok@example.test\r\n\r\nx\r\n");

    assert_eq!(doc.to, [address(None, "ok@example.test")]);
    assert!(codes(&doc).contains(&WarningCode::AddressInvalid));
}

#[test]
fn repeated_address_fields_are_joined() {
    let doc = doc(b"To: a@example.test\r\nTo: b@example.test\r\n\r\nx\r\n");

    let expected = [
        address(None, "a@example.test"),
        address(None, "b@example.test"),
    ];
    assert_eq!(doc.to, expected);
}

#[test]
fn message_ids_lose_angle_brackets() {
    let doc = doc(
        b"Message-ID: <m1@example.test>\r\nIn-Reply-To: <p1@example.test> <p2@example.test>\r\n\
        References: <r1@example.test>\r\n <r2@example.test>\r\n\r\nx\r\n",
    );

    assert_eq!(doc.message_id.as_deref(), Some("m1@example.test"));
    assert_eq!(doc.in_reply_to.as_deref(), Some("p1@example.test"));
    assert_eq!(doc.references, ["r1@example.test", "r2@example.test"]);
}

#[test]
fn empty_message_id_is_null() {
    let doc =
        doc(b"Message-ID: <>\r\nIn-Reply-To:\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\nx\r\n");

    assert_eq!(doc.message_id, None);
    assert_eq!(doc.in_reply_to, None);
    assert_eq!(codes(&doc), [WarningCode::MessageIdMissing]);
}

#[test]
fn missing_message_id_is_null() {
    let doc = doc(b"Subject: x\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\nx\r\n");

    assert_eq!(doc.message_id, None);
    assert_eq!(codes(&doc), [WarningCode::MessageIdMissing]);
}

#[test]
fn header_values_are_unfolded_and_decoded() {
    let doc = doc(b"SUBJECT: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n from =?iso-8859-1?q?K=F6ln?=\r\nX-Empty:\r\n\r\nx\r\n");

    assert_eq!(doc.headers[0].name, "SUBJECT");
    assert_eq!(doc.headers[0].value, "Grüße from Köln");
    assert_eq!(doc.headers[1].name, "X-Empty");
    assert_eq!(doc.headers[1].value, "");
    assert_eq!(doc.subject.as_deref(), Some("Grüße from Köln"));
}

#[test]
fn content_disposition_parameters_are_decoded() {
    let doc = doc(b"Content-Disposition: attachment;\r\n filename*0*=utf-8''Gr%C3%BC;\r\n filename*1=\"ne Liste.txt\"\r\n\r\nx\r\n");

    assert_eq!(
        doc.headers[0].value,
        "attachment; filename=\"Grüne Liste.txt\""
    );
}

#[test]
fn quote_if_needed_keeps_tokens() {
    assert_eq!(quote_if_needed("plain-token_1.0"), "plain-token_1.0");
    assert_eq!(quote_if_needed("a b"), "\"a b\"");
    assert_eq!(quote_if_needed("say \"hi\"\\"), "\"say \\\"hi\\\"\\\\\"");
    assert_eq!(quote_if_needed(""), "\"\"");
}

#[test]
fn raw_gbk_filename_uses_body_charset() {
    let (name, _, _) = encoding_rs::GBK.encode("报告.txt");
    let (body, _, _) = encoding_rs::GBK.encode("正文");
    let mut raw = b"Subject: files\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\
        Content-Type: text/plain; charset=gbk\r\n\r\n"
        .to_vec();
    raw.extend_from_slice(&body);
    raw.extend_from_slice(b"\r\n--b\r\nContent-Type: application/octet-stream\r\n");
    raw.extend_from_slice(b"Content-Disposition: attachment; filename=\"");
    raw.extend_from_slice(&name);
    raw.extend_from_slice(b"\"\r\n\r\ndata\r\n--b--\r\n");

    let doc = doc(&raw);

    assert_eq!(doc.text.as_deref(), Some("正文"));
    assert_eq!(doc.attachments[0].filename.as_deref(), Some("报告.txt"));
    assert!(codes(&doc).contains(&WarningCode::HeaderCharsetGuessed));
}
