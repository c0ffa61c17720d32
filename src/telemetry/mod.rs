//! Prometheus metrics of mailbridge. Handles are registered once on a
//! [`prometheus::Registry`] that the caller owns and are passed to the
//! components that record them; nothing is registered on the default
//! registry.
//!
//! - [`metrics`] defines the metric handles and one recording method per
//!   event.

pub mod metrics;

pub use metrics::{Metrics, Protocol};
