//! JSON Lines on standard output: one document per line, flushed once per
//! batch. A batch counts as confirmed when the flush returned.

use std::io;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::Mutex;

use super::PublishError;
use super::consume::Outgoing;

type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// Line writer shared by every task of the process. The lock keeps the
/// lines of one batch together.
pub(crate) struct Sink {
    out: Mutex<Writer>,
}

impl Sink {
    /// Writes to the process's standard output.
    pub(crate) fn stdout() -> Self {
        Self::new(Box::new(tokio::io::stdout()))
    }

    fn new(out: Writer) -> Self {
        Self {
            out: Mutex::new(out),
        }
    }

    /// Writes one line per record and flushes. Extra headers have no place
    /// in JSON Lines, so they are left out.
    pub(crate) async fn publish<T: Outgoing>(&self, batch: &[T]) -> Result<(), PublishError> {
        let lines = json_lines(batch);

        let mut out = self.out.lock().await;
        out.write_all(&lines).await.map_err(write_error)?;
        out.flush().await.map_err(write_error)?;

        Ok(())
    }

    /// Flushes what is buffered.
    pub(crate) async fn close(&self) {
        if let Err(err) = self.out.lock().await.flush().await {
            tracing::warn!(error = %err, "Failed to flush standard output");
        }
    }
}

/// Joins the payloads into JSON Lines. A raw line feed or carriage return
/// can only be insignificant whitespace in valid JSON, because strings
/// must escape control characters (RFC 8259 section 7), so replacing it
/// with a space keeps each document intact and on one line.
fn json_lines<T: Outgoing>(batch: &[T]) -> Vec<u8> {
    let size = batch
        .iter()
        .map(|item| item.record().payload.len() + 1)
        .sum();
    let mut lines = Vec::with_capacity(size);
    for item in batch {
        let line = item.record().payload.iter().map(|&byte| match byte {
            b'\n' | b'\r' => b' ',
            other => other,
        });
        lines.extend(line);
        lines.push(b'\n');
    }

    lines
}

fn write_error(err: io::Error) -> PublishError {
    PublishError::Write {
        reason: err.to_string(),
        transient: err.kind() != io::ErrorKind::BrokenPipe,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::Record;

    fn record(payload: &str) -> Record {
        Record {
            key: "id".into(),
            payload: payload.as_bytes().to_vec(),
            schema: "test.v1",
        }
    }

    #[tokio::test]
    async fn batch_becomes_one_line_per_record() {
        let (writer, mut reader) = tokio::io::duplex(1024);
        let sink = Sink::new(Box::new(writer));

        sink.publish(&[record(r#"{"n":1}"#), record(r#"{"n":2}"#)])
            .await
            .unwrap();
        drop(sink);
        let mut text = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut reader, &mut text)
            .await
            .unwrap();

        assert_eq!(text, "{\"n\":1}\n{\"n\":2}\n");
    }

    #[test]
    fn pretty_json_is_joined_into_one_line() {
        let lines = json_lines(&[record("{\r\n  \"text\": \"a\\nb\"\n}")]);
        let text = String::from_utf8(lines).unwrap();

        assert_eq!(text.lines().count(), 1);
        let document: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(document["text"], "a\nb");
    }

    #[tokio::test]
    async fn closed_reader_is_permanent_write_error() {
        let (writer, reader) = tokio::io::duplex(1);
        drop(reader);
        let sink = Sink::new(Box::new(writer));

        let err = sink.publish(&[record("{}")]).await.unwrap_err();

        assert_eq!(err.kind(), "write");
        assert!(!err.is_transient(), "{err}");
    }
}
