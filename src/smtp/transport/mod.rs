//! SMTP submission (RFC 6409) with OAuth2 sign-in. [`Sender`] connects
//! with implicit TLS (RFC 8314) or mandatory STARTTLS (RFC 3207) and signs
//! in by AUTH XOAUTH2 or OAUTHBEARER (RFC 4954, RFC 7628). It sends each
//! message in one transaction (RFC 5321) and keeps signed-in connections
//! in a small pool.
//!
//! The commands are written here on a tokio stream, with lettre's command
//! and address types, rather than through lettre's `AsyncSmtpConnection`,
//! for these reasons, as of lettre 0.11.23:
//!
//! - Its `send` aborts the connection on any error reply, so it can
//!   neither deliver to the accepted recipients after a rejected RCPT TO
//!   nor keep the connection after a `554` to the message data.
//! - Its STARTTLS takes lettre's TLS parameters, not the shared rustls
//!   configuration of [`crate::tls`], and no time limit covers the
//!   handshake. A stream that was upgraded outside lettre cannot be handed
//!   to it, because lettre then waits for a new greeting.
//! - With lettre's `tracing` feature, which any crate in the build can
//!   turn on, it logs every command line, the AUTH line and its token too.
//! - It reads no OAUTHBEARER from EHLO and has no reply timeout.
//!
//! Error replies are classified by [`SmtpError::kind`]: 4xx replies,
//! network failures and replies that cannot be parsed are transient, 5xx
//! replies permanent. A connection that fails without a reply, the case
//! that lettre reports as neither transient nor permanent, is a transient
//! connection error.

mod auth;
mod capabilities;
mod connect;
mod error;
mod pool;
mod rejection;
mod reply;
mod sender;
mod transaction;
mod wire;

pub use error::{SmtpError, TlsProblem};
pub use reply::Reply;
pub use sender::{Accepted, PoolSettings, Sender, Timeouts};
