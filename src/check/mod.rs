//! `mailbridge check`: a step-by-step diagnosis of the IMAP and SMTP
//! endpoints of accounts. Each endpoint runs name resolution, TCP, TLS,
//! the certificate chain, STARTTLS, capabilities, the token and the
//! sign-in in order, and stops at its first failed step, which carries a
//! diagnosis.
//!
//! - [`probe`] resolves, connects and inspects TLS on a connection of its
//!   own that never carries a token.
//! - [`token`] obtains a token and decodes the claims of a JWT.
//! - [`imap`] and [`smtp`] sign in with the product's connector and sender.
//! - [`report`] prints the steps as text lines or one JSON object.

mod certificate;
mod diagnosis;
mod imap;
mod probe;
pub mod report;
mod smtp;
mod token;

use serde::Serialize;

pub use certificate::{Anchor, AnchorSource};

use crate::config::Config;

/// Failure to start a check, before any step ran.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The account is not in `[accounts]`.
    #[error("unknown account {0:?}; add [accounts.{0}] to the configuration")]
    UnknownAccount(String),
    /// A protocol was selected for an account without its table.
    #[error("account {account} has no [accounts.{account}.{protocol}] table")]
    MissingTable {
        /// Name of the account.
        account: String,
        /// `imap` or `smtp`.
        protocol: &'static str,
    },
}

impl CheckError {
    /// Short label of the error.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::UnknownAccount(_) => "unknown_account",
            Self::MissingTable { .. } => "missing_table",
        }
    }

    /// Always false: the configuration must change first.
    pub fn is_transient(&self) -> bool {
        false
    }

    /// Returns true for a wrong command line (exit 64), false for invalid
    /// configuration (exit 78).
    pub fn is_usage(&self) -> bool {
        matches!(self, Self::UnknownAccount(_))
    }
}

/// Selection of the accounts and protocols to check.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// One account, or every configured account.
    pub account: Option<String>,
    /// Check IMAP. With neither flag set, both protocols that the account
    /// configures are checked.
    pub imap: bool,
    /// Check SMTP.
    pub smtp: bool,
}

/// One step of one endpoint.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// Name of the account.
    pub account: String,
    /// `imap` or `smtp`.
    pub protocol: &'static str,
    /// Short name of the step, such as `tcp` or `login`.
    pub step: &'static str,
    /// Whether the step passed.
    pub ok: bool,
    /// Finding of the step, or the reason that it failed.
    pub detail: String,
    /// The likely cause and fix of a failed step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diagnosis: Option<String>,
    /// The root that anchors the verified chain of a passed certificate
    /// step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anchor: Option<Anchor>,
}

/// The steps of one endpoint, in order, as they are recorded.
pub(crate) struct Steps<'a> {
    account: &'a str,
    protocol: &'static str,
    sink: &'a mut dyn FnMut(Step),
    failed: bool,
}

impl Steps<'_> {
    /// Records a passed step.
    pub(crate) fn pass(&mut self, step: &'static str, detail: impl Into<String>) {
        self.record(step, true, detail.into(), None);
    }

    /// Records a failed step with its diagnosis.
    pub(crate) fn fail(&mut self, step: &'static str, detail: impl Into<String>, fix: String) {
        self.failed = true;
        self.record(step, false, detail.into(), Some(fix));
    }

    /// Records a passed certificate step with the chain's anchor.
    pub(crate) fn pass_certificate(&mut self, detail: String, anchor: Option<Anchor>) {
        let mut step = self.step("certificate", true, detail, None);
        step.anchor = anchor;
        (self.sink)(step);
    }

    fn record(&mut self, step: &'static str, ok: bool, detail: String, fix: Option<String>) {
        let step = self.step(step, ok, detail, fix);
        (self.sink)(step);
    }

    fn step(&self, step: &'static str, ok: bool, detail: String, fix: Option<String>) -> Step {
        Step {
            account: self.account.to_owned(),
            protocol: self.protocol,
            step,
            ok,
            detail,
            diagnosis: fix,
            anchor: None,
        }
    }
}

/// Runs the selected checks, passing each step to `sink` as soon as it
/// ends. Returns whether every step passed.
///
/// # Errors
///
/// [`CheckError`] for an unknown account or a selected protocol that the
/// account does not configure; no step runs then.
pub async fn run(
    config: &Config,
    options: &Options,
    sink: &mut dyn FnMut(Step),
) -> Result<bool, CheckError> {
    let plan = plan(config, options)?;
    let mut passed = true;

    for (account, protocol) in plan {
        let mut steps = Steps {
            account: &account,
            protocol,
            sink: &mut *sink,
            failed: false,
        };
        match protocol {
            "imap" => imap::check(config, &account, &mut steps).await,
            _ => smtp::check(config, &account, &mut steps).await,
        }
        passed &= !steps.failed;
    }

    Ok(passed)
}

/// Returns the account and protocol pairs to check, in order.
fn plan(config: &Config, options: &Options) -> Result<Vec<(String, &'static str)>, CheckError> {
    let names: Vec<String> = match &options.account {
        Some(name) if !config.accounts.contains_key(name) => {
            return Err(CheckError::UnknownAccount(name.clone()));
        }
        Some(name) => vec![name.clone()],
        None => config.accounts.keys().cloned().collect(),
    };
    let explicit = options.imap || options.smtp;
    let mut plan = Vec::new();

    for name in names {
        let account = &config.accounts[&name];
        let tables = [
            ("imap", options.imap, account.imap.is_some()),
            ("smtp", options.smtp, account.smtp.is_some()),
        ];
        for (protocol, selected, configured) in tables {
            if selected && !configured && options.account.is_some() {
                return Err(CheckError::MissingTable {
                    account: name.clone(),
                    protocol,
                });
            }
            if configured && (selected || !explicit) {
                plan.push((name.clone(), protocol));
            }
        }
    }

    Ok(plan)
}
