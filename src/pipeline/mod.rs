//! Inbound and outbound loops that join a source to a sink and own the
//! acknowledge-after-success order.
//!
//! - [`inbound`] watches one mailbox and publishes its mail in batches.
//! - [`outbound`] consumes send requests and submits them over SMTP.
//! - [`runner`] builds every pipeline of the configuration and drains
//!   them on shutdown.
//! - [`assign`] shares an inbound pipeline's mailboxes among replicas.
//! - [`checkpoint`] keeps each mailbox's position in the state directory.
//! - [`backoff`] spaces out retries.

pub mod assign;
pub mod backoff;
pub mod checkpoint;
pub mod inbound;
pub mod outbound;
pub mod runner;
