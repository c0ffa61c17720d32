//! SMTP submission: [`mime`] builds the message of a validated send
//! request with lettre, and [`transport`] signs in with OAuth2 and sends
//! it over a pool of connections.

pub mod mime;
pub mod transport;
