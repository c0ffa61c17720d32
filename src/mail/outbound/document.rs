//! Serde types of the outbound document, `schemas/outbound-mail.v1.json`.
//! They take the members and JSON types that the schema describes. The
//! rules on content, such as one-line values and address syntax, are
//! checked when a [`super::Request`] is made from them.

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

/// One send request as a pipeline puts it on a topic or queue.
///
/// Lists may be absent or `null`, which both mean empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundMail {
    /// The caller's idempotency key, echoed in status events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Author mailbox; the account address when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Address>,
    /// `To` recipients.
    #[serde(
        default,
        deserialize_with = "list",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub to: Vec<Address>,
    /// `Cc` recipients.
    #[serde(
        default,
        deserialize_with = "list",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub cc: Vec<Address>,
    /// Blind recipients: in the SMTP envelope only, never in a header.
    #[serde(
        default,
        deserialize_with = "list",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub bcc: Vec<Address>,
    /// `Reply-To` mailboxes.
    #[serde(
        default,
        deserialize_with = "list",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub reply_to: Vec<Address>,
    /// Subject line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Plain-text body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// HTML body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    /// Message-ID to use, with or without angle brackets; generated when
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// Message-ID of the message this one replies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_reply_to: Option<String>,
    /// Message-IDs of the thread, oldest first.
    #[serde(
        default,
        deserialize_with = "list",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub references: Vec<String>,
    /// `message_id` of an inbound document to reply to. Sets
    /// `In-Reply-To`, and `References` too when `references` is empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to_id: Option<String>,
    /// Extra header fields in document order: a JSON object of name to
    /// value, or a list of `{name, value}` objects.
    #[serde(
        default,
        deserialize_with = "headers",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub headers: Vec<Header>,
    /// Files to attach, and inline parts referred to from the HTML.
    #[serde(
        default,
        deserialize_with = "object_list",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub attachments: Vec<Attachment>,
}

/// A mailbox: a JSON object `{name?, address}`, or a string holding only
/// the address. A string is never read as `Name <address>`, so a display
/// name can only come from `name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Address {
    /// Display name in UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// RFC 5322 addr-spec; the domain may be internationalized.
    pub address: String,
}

/// The object form of [`Address`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddressObject {
    #[serde(default)]
    name: Option<String>,
    address: String,
}

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(AddressVisitor)
    }
}

struct AddressVisitor;

impl<'de> Visitor<'de> for AddressVisitor {
    type Value = Address;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an address string or an object with `address` and an optional `name`")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
        Ok(Address {
            name: None,
            address: value.to_owned(),
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let object = AddressObject::deserialize(MapAccessDeserializer::new(map))?;

        Ok(Address {
            name: object.name,
            address: object.address,
        })
    }
}

/// An extra header field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// Field name, e.g. `X-Ticket`.
    pub name: String,
    /// Field value in UTF-8, on one line.
    pub value: String,
}

/// A file to attach. With `content_id` it is an inline part of the HTML
/// body, which refers to it as `cid:<content_id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attachment {
    /// File name shown to the recipient.
    pub filename: String,
    /// MIME type; `application/octet-stream` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// Content in standard base64; whitespace is ignored.
    pub content_base64: String,
    /// Content-ID, with or without angle brackets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_id: Option<String>,
}

/// Reads a list that may be `null`.
fn list<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(deserializer)?.unwrap_or_default())
}

/// Reads a list of objects that may be `null`.
fn object_list<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    let list: Option<Vec<Object<T>>> = Option::deserialize(deserializer)?;

    Ok(list
        .unwrap_or_default()
        .into_iter()
        .map(|item| item.0)
        .collect())
}

/// A `T` read from a JSON object only. Derived struct impls also accept
/// an array of the field values in order, which the schema rejects.
pub(super) struct Object<T>(pub(super) T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ObjectVisitor(PhantomData))
    }
}

struct ObjectVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
    type Value = Object<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map)).map(Object)
    }
}

/// Reads `headers` from an object or a list, keeping document order and
/// repeated names so that validation can reject the repeats.
fn headers<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<Header>, D::Error> {
    deserializer.deserialize_any(HeadersVisitor)
}

struct HeadersVisitor;

impl<'de> Visitor<'de> for HeadersVisitor {
    type Value = Vec<Header>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object of header names to string values, or a list of {name, value}")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some((name, value)) = map.next_entry::<String, String>()? {
            out.push(Header { name, value });
        }

        Ok(out)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(Object(header)) = seq.next_element::<Object<Header>>()? {
            out.push(header);
        }

        Ok(out)
    }
}
