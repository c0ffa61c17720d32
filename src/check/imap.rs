//! The IMAP steps after the connection probe: the capabilities before
//! sign-in (RFC 3501 section 6.1.1), the token, AUTHENTICATE through
//! [`Connector`], the extensions after sign-in and a SELECT of every
//! mailbox that an inbound pipeline reads for the account.

use super::probe::{self, Dialect};
use super::token::{self, Claims};
use super::{Steps, diagnosis};
use crate::config::Config;
use crate::imap::{Capabilities, Connector, ImapError, Session};

/// Runs every IMAP step of `account`, stopping at the first failure.
pub(crate) async fn check(config: &Config, account: &str, steps: &mut Steps<'_>) {
    let settings = &config.accounts[account];
    let server = settings
        .imap
        .as_ref()
        .expect("the plan checks the imap table");
    if !probe::run(server, Dialect::Imap, steps).await {
        return;
    }
    let Some(provider) = token::provider(config, account, steps) else {
        return;
    };
    let connector = match Connector::new(account, settings, provider.clone(), None) {
        Ok(connector) => connector,
        Err(err) => return fail(steps, "capabilities", err, account, &settings.address, None),
    };
    match connector.open().await {
        Ok(greeted) if mechanisms_offered(&greeted.capabilities) => {
            steps.pass("capabilities", before_sign_in(&greeted.capabilities));
        }
        Ok(greeted) => {
            let detail = before_sign_in(&greeted.capabilities);
            let fix = "the server offers neither AUTH=XOAUTH2 nor AUTH=OAUTHBEARER, so it \
                       cannot accept OAuth2 tokens";
            return steps.fail("capabilities", detail, fix.to_owned());
        }
        Err(err) => return fail(steps, "capabilities", err, account, &settings.address, None),
    }

    let Some(claims) = token::obtain(&provider, account, steps).await else {
        return;
    };
    let user = claims.and_then(|claims: Claims| claims.user);
    let fail = |steps: &mut Steps<'_>, step, err| {
        fail(
            steps,
            step,
            err,
            account,
            &settings.address,
            user.as_deref(),
        );
    };

    let mut session = match connector.connect().await {
        Ok(session) => session,
        Err(err) => return fail(steps, "login", err),
    };
    steps.pass("login", format!("signed in as {}", settings.address));
    steps.pass("extensions", after_sign_in(session.capabilities()));

    if let Err(err) = select_all(config, account, &mut session, steps).await {
        fail(steps, "select", err);
    }
    session.logout().await;
}

/// Selects each configured mailbox of `account`, recording a step for
/// each. Stops at the first failure, which the caller records.
async fn select_all(
    config: &Config,
    account: &str,
    session: &mut Session,
    steps: &mut Steps<'_>,
) -> Result<(), ImapError> {
    let mailboxes: Vec<(&String, &String)> = config
        .inbound
        .iter()
        .filter(|(_, pipeline)| pipeline.account == account)
        .flat_map(|(name, pipeline)| pipeline.mailboxes.iter().map(move |m| (name, m)))
        .collect();
    if mailboxes.is_empty() {
        steps.pass(
            "select",
            "no inbound pipeline reads a mailbox of this account",
        );
    }

    for (pipeline, mailbox) in mailboxes {
        let selected = session.select(mailbox).await?;
        let detail = format!(
            "{mailbox:?} of [inbound.{pipeline}]: {} messages",
            selected.exists
        );
        steps.pass("select", detail);
    }
    Ok(())
}

/// Records a failed step of `err` with its diagnosis.
fn fail(
    steps: &mut Steps<'_>,
    step: &'static str,
    err: ImapError,
    account: &str,
    address: &str,
    token_user: Option<&str>,
) {
    let fix = diagnosis::sign_in(err.kind(), account, address, token_user);
    steps.fail(step, err.to_string(), fix);
}

fn mechanisms_offered(capabilities: &Capabilities) -> bool {
    capabilities.has("AUTH=XOAUTH2") || capabilities.has("AUTH=OAUTHBEARER")
}

fn before_sign_in(capabilities: &Capabilities) -> String {
    listing(
        capabilities,
        &["AUTH=XOAUTH2", "AUTH=OAUTHBEARER", "SASL-IR"],
    )
}

fn after_sign_in(capabilities: &Capabilities) -> String {
    listing(capabilities, &["IDLE", "MOVE", "UIDPLUS", "CONDSTORE"])
}

/// Returns `NAME yes` or `NAME no` for each of `names`.
fn listing(capabilities: &Capabilities, names: &[&str]) -> String {
    let items: Vec<String> = names
        .iter()
        .map(|name| match capabilities.has(name) {
            true => format!("{name} yes"),
            false => format!("{name} no"),
        })
        .collect();
    items.join(", ")
}
