//! Prometheus metrics, the HTTP endpoint and logging of mailbridge.
//! Handles are registered once on a [`prometheus::Registry`] that the
//! caller owns and are passed to the components that record them; nothing
//! is registered on the default registry.
//!
//! - [`metrics`] defines the OAuth2 and sign-in metric handles and one
//!   recording method per event; [`inbound`] and [`outbound`] those of
//!   the pipelines.
//! - `token_age` computes the refresh token ages at each scrape.
//! - [`process`] registers the `process_*` metrics of the running
//!   process.
//! - [`http`] serves `/metrics`, `/healthz` and `/readyz`, and
//!   [`health`] requests `/healthz` for `mailbridge health`.
//! - [`logging`] installs the tracing subscriber, and [`rate_limit`]
//!   drops repeated warnings and errors.

pub mod health;
pub mod http;
pub mod inbound;
pub mod logging;
pub mod metrics;
pub mod outbound;
pub mod process;
pub mod rate_limit;
mod token_age;

pub use http::Readiness;
pub use inbound::InboundMetrics;
pub use metrics::{Metrics, Protocol};
pub use outbound::OutboundMetrics;
