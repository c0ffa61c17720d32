//! The SMTP steps after the connection probe: the token, then EHLO and
//! AUTH (RFC 4954) through [`Sender::sign_in_only`], which sends no mail.

use super::probe::{self, Dialect};
use super::{Steps, diagnosis, token};
use crate::config::Config;
use crate::smtp::transport::{PoolSettings, Sender};

/// Runs every SMTP step of `account`, stopping at the first failure.
pub(crate) async fn check(config: &Config, account: &str, steps: &mut Steps<'_>) {
    let settings = &config.accounts[account];
    let server = settings
        .smtp
        .as_ref()
        .expect("the plan checks the smtp table");
    if !probe::run(server, Dialect::Smtp, steps).await {
        return;
    }
    let Some(provider) = token::provider(config, account, steps) else {
        return;
    };
    let Some(claims) = token::obtain(&provider, account, steps).await else {
        return;
    };
    let user = claims.and_then(|claims| claims.user);

    let signed_in = match Sender::new(account, settings, provider, None, PoolSettings::default()) {
        Ok(sender) => sender.sign_in_only().await,
        Err(err) => Err(err),
    };
    match signed_in {
        Ok((mechanisms, size)) => {
            let size = size.map_or("no limit".to_owned(), |bytes| format!("{bytes} bytes"));
            let detail = format!("AUTH {}, SIZE {size}", mechanisms.join(" "));
            steps.pass("ehlo", detail);
            steps.pass("login", format!("AUTH accepted for {}", settings.address));
        }
        Err(err) => {
            let kind = match err.enhanced() {
                Some("5.7.139") => "smtp_auth_disabled",
                _ => err.kind(),
            };
            let fix = diagnosis::sign_in(kind, account, &settings.address, user.as_deref());
            steps.fail("login", err.to_string(), fix);
        }
    }
}
