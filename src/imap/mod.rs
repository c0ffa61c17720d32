//! IMAP sessions with OAuth2 sign-in, mailbox names, fetching, IDLE and
//! post-processing, built on async-imap.
//!
//! - [`Connector`] opens a connection with the account's TLS mode, signs
//!   in with XOAUTH2 or OAUTHBEARER and returns a [`Session`]. A rejected
//!   token is refreshed once and tried once more.
//! - [`Session`] selects a mailbox, searches and fetches by UID, applies a
//!   [`PostProcess`] action and waits in IDLE. It counts as healthy only
//!   after its first successful [`Session::select`].
//! - [`mailbox_name`] converts between UTF-8 names and modified UTF-7.
//! - [`Session::find_special_use`] finds the mailbox that carries a
//!   special-use attribute of RFC 6154, such as `\Trash`, with LIST.
//!
//! Mailbox names always go to the server in modified UTF-7. `UTF8=ACCEPT`
//! (RFC 6855) is not enabled even where offered, because modified UTF-7
//! works on every server.

mod authenticate;
mod capabilities;
mod connector;
mod error;
mod fetch;
mod idle;
pub mod mailbox_name;
mod post_process;
mod rejection;
mod sanitize;
mod select;
mod session;
mod special_use;
mod transport;
mod uid_set;
mod wire;

pub use capabilities::Capabilities;
pub use connector::{Connector, Timeouts};
pub use error::ImapError;
pub use fetch::{Fetched, MailSize};
pub use idle::IdleEvent;
pub use mailbox_name::MailboxNameError;
pub use post_process::PostProcess;
pub use select::Selected;
pub use session::Session;
pub use transport::Activity;
