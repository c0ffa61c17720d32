//! SMTP submission: the transport that signs in with OAuth2 and sends,
//! with its connection pool.

pub mod transport;
