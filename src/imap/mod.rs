//! IMAP sessions with OAuth2 sign-in, mailbox names, fetching, IDLE and
//! post-processing.
