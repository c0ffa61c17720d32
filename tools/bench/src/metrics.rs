//! Readiness and Prometheus metrics of the measured `mailbridge run`.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::process::Measured;

/// Returns the body of GET `path` from the HTTP server at `address`, or
/// None when the server does not respond with 200.
pub async fn get(address: &str, path: &str) -> Option<String> {
    let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await.ok()?;
    let reply = String::from_utf8_lossy(&reply);
    let (head, body) = reply.split_once("\r\n\r\n")?;
    let status: u16 = head.split_whitespace().nth(1)?.parse().ok()?;
    (status == 200).then(|| body.to_string())
}

/// Waits until `/readyz` of the measured process returns 200, failing when
/// the process exits or `timeout` passes.
pub async fn wait_ready(
    measured: &mut Measured,
    address: &str,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        measured.sample()?;
        if get(address, "/readyz").await.is_some() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "http://{address}/readyz did not answer 200 within {} s",
                timeout.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sum and count of a histogram, added over all its series.
#[derive(Clone, Copy, Default)]
pub struct Histogram {
    pub sum: f64,
    pub count: f64,
}

impl Histogram {
    /// Reads `NAME_sum` and `NAME_count` from a Prometheus text exposition.
    pub fn read(exposition: &str, name: &str) -> Self {
        Self {
            sum: series_total(exposition, &format!("{name}_sum")),
            count: series_total(exposition, &format!("{name}_count")),
        }
    }

    /// Mean of one observation, or 0 without observations.
    pub fn mean(self) -> f64 {
        if self.count > 0.0 {
            self.sum / self.count
        } else {
            0.0
        }
    }
}

/// Adds the values of every series of the metric `name`.
pub fn series_total(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_adds_series() {
        let exposition = "# TYPE x histogram\n\
            x_bucket{le=\"1\"} 3\n\
            x_sum{pipeline=\"a\"} 1.5\n\
            x_count{pipeline=\"a\"} 3\n\
            x_sum{pipeline=\"b\"} 0.5\n\
            x_count{pipeline=\"b\"} 1\n\
            x_summary_sum 9\n";
        let histogram = Histogram::read(exposition, "x");
        assert_eq!(histogram.sum, 2.0);
        assert_eq!(histogram.count, 4.0);
        assert_eq!(histogram.mean(), 0.5);
    }
}
