//! Inbound and outbound loops that join a source to a sink and own the
//! acknowledge-after-success order.
pub mod backoff;
pub mod checkpoint;
