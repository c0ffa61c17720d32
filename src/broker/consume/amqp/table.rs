//! The headers table of an AMQP message as a list of names and bytes, the
//! shape Kafka headers have, so that callers read both alike.

use lapin::types::{AMQPValue, FieldTable};

/// Returns the table's entries in name order. Strings and byte arrays
/// keep their bytes, numbers, booleans and timestamps become their decimal
/// text, and a void value becomes empty.
///
/// NOTE: nested arrays and tables (such as RabbitMQ's `x-death`) and
/// decimal values have no single byte form, so they are left out.
pub(super) fn header_list(table: &FieldTable) -> Vec<(String, Vec<u8>)> {
    table
        .inner()
        .iter()
        .filter_map(|(name, value)| Some((name.to_string(), value_bytes(value)?)))
        .collect()
}

fn value_bytes(value: &AMQPValue) -> Option<Vec<u8>> {
    let text = match value {
        AMQPValue::LongString(text) => return Some(text.as_bytes().to_vec()),
        AMQPValue::ShortString(text) => return Some(text.as_str().as_bytes().to_vec()),
        AMQPValue::ByteArray(bytes) => return Some(bytes.as_slice().to_vec()),
        AMQPValue::Void => return Some(Vec::new()),
        AMQPValue::Boolean(value) => value.to_string(),
        AMQPValue::ShortShortInt(value) => value.to_string(),
        AMQPValue::ShortShortUInt(value) => value.to_string(),
        AMQPValue::ShortInt(value) => value.to_string(),
        AMQPValue::ShortUInt(value) => value.to_string(),
        AMQPValue::LongInt(value) => value.to_string(),
        AMQPValue::LongUInt(value) => value.to_string(),
        AMQPValue::LongLongInt(value) => value.to_string(),
        AMQPValue::Float(value) => value.to_string(),
        AMQPValue::Double(value) => value.to_string(),
        AMQPValue::Timestamp(value) => value.to_string(),
        AMQPValue::DecimalValue(_) | AMQPValue::FieldArray(_) | AMQPValue::FieldTable(_) => {
            return None;
        }
    };

    Some(text.into_bytes())
}

#[cfg(test)]
mod tests {
    use lapin::types::{ByteArray, FieldArray, LongString, ShortString};

    use super::*;

    fn table(entries: Vec<(&str, AMQPValue)>) -> FieldTable {
        let mut table = FieldTable::default();
        for (name, value) in entries {
            table.insert(ShortString::from(name), value);
        }
        table
    }

    #[test]
    fn strings_and_bytes_keep_their_bytes() {
        let headers = header_list(&table(vec![
            (
                "reason",
                AMQPValue::LongString(LongString::from("invalid_address")),
            ),
            ("raw", AMQPValue::ByteArray(ByteArray::from(vec![0u8, 255]))),
            ("short", AMQPValue::ShortString(ShortString::from("s"))),
        ]));

        assert_eq!(
            headers,
            vec![
                ("raw".to_owned(), vec![0, 255]),
                ("reason".to_owned(), b"invalid_address".to_vec()),
                ("short".to_owned(), b"s".to_vec()),
            ]
        );
    }

    #[test]
    fn numbers_become_decimal_text() {
        let headers = header_list(&table(vec![
            ("attempt", AMQPValue::LongInt(-3)),
            ("permanent", AMQPValue::Boolean(true)),
            ("sent_at", AMQPValue::Timestamp(1_700_000_000)),
        ]));

        assert_eq!(headers[0], ("attempt".to_owned(), b"-3".to_vec()));
        assert_eq!(headers[1], ("permanent".to_owned(), b"true".to_vec()));
        assert_eq!(headers[2], ("sent_at".to_owned(), b"1700000000".to_vec()));
    }

    #[test]
    fn nested_values_are_left_out() {
        let headers = header_list(&table(vec![
            ("x-death", AMQPValue::FieldArray(FieldArray::default())),
            ("nested", AMQPValue::FieldTable(FieldTable::default())),
            ("kept", AMQPValue::Void),
        ]));

        assert_eq!(headers, vec![("kept".to_owned(), Vec::new())]);
    }
}
