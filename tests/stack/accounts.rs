//! `mailbridge run` with accounts that cannot sign in. A token file that
//! must not be used stops only its own account's pipelines. A refresh
//! token that the server rejects makes the account not ready and sets its
//! authorization metric to 1.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use serde_json::{Value, json};

use crate::bridge::{ACCOUNT, PATIENCE, Setup};
use crate::mailbox::{deliver, mail};
use crate::records::{amqp_messages, declare_queue};
use crate::support::{mail_address, stack, unique};

/// Name of the account whose token file is accessible by others.
const BROKEN: &str = "broken";

/// Returns the TOML of account `name` for `user`, with the stack's
/// endpoints.
fn account_toml(name: &str, user: &str) -> String {
    format!(
        r#"
[accounts.{name}]
address = "{user}"

[accounts.{name}.oauth2]
provider = "generic"
client_id = "{client_id}"
client_secret = "{client_secret}"
authorize_url = "{authorize_url}"
token_url = "{token_url}"
scopes = ["imap", "smtp"]

[accounts.{name}.imap]
host = "{imap_host}"
port = {imap_port}
tls = "implicit"
ca_file = "{ca_file}"
connect_timeout = "5s"
"#,
        client_id = stack("STACK_OAUTH_CLIENT_ID"),
        client_secret = stack("STACK_OAUTH_CLIENT_SECRET"),
        authorize_url = stack("STACK_OAUTH_AUTHORIZE_URL"),
        token_url = stack("STACK_OAUTH_TOKEN_URL"),
        imap_host = stack("STACK_IMAP_HOST"),
        imap_port = stack("STACK_IMAPS_PORT"),
        ca_file = stack("STACK_CA_FILE"),
    )
}

/// Returns the TOML of inbound pipeline `name`, which publishes the
/// mail of `account` to the RabbitMQ `queue`.
fn inbound_toml(name: &str, account: &str, queue: &str) -> String {
    format!(
        r#"
[inbound.{name}]
account = "{account}"
broker = "rabbitmq"
exchange = ""
routing_key = "{queue}"
"#
    )
}

fn component<'a>(body: &'a Value, name: &str) -> &'a Value {
    &body["components"][name]
}

fn is_ready(body: &Value, name: &str) -> bool {
    component(body, name)["ready"] == true
}

fn reason<'a>(body: &'a Value, name: &str) -> &'a str {
    component(body, name)["reason"].as_str().unwrap_or("")
}

#[tokio::test]
async fn run_isolates_account_with_open_token_file() {
    let setup = Setup::new("isolated");
    let (good_queue, bad_queue) = (unique("isolated.good"), unique("isolated.bad"));
    declare_queue(&good_queue).await;
    declare_queue(&bad_queue).await;
    let broken_user = mail_address(&unique("broken"));
    let pipelines = [
        account_toml(BROKEN, &broken_user),
        inbound_toml("good", ACCOUNT, &good_queue),
        inbound_toml("bad", BROKEN, &bad_queue),
    ]
    .concat();
    setup.prepare(&pipelines).await;
    // A valid token file that group and others may read.
    let broken_file = setup.token_file(BROKEN);
    std::fs::copy(setup.token_file(ACCOUNT), &broken_file).expect("copy token file");
    std::fs::set_permissions(&broken_file, std::fs::Permissions::from_mode(0o644))
        .expect("chmod 644");
    deliver(
        &setup.user,
        &mail("isolated-1", "Mail for the good account"),
    )
    .await;

    let _bridge = setup.start();
    let messages = amqp_messages(&good_queue, 1, PATIENCE).await;
    let (status, body) = setup
        .wait_readyz(PATIENCE, |_, body| is_ready(body, "inbound/good/INBOX"))
        .await;

    assert_eq!(messages.len(), 1, "log:\n{}", setup.log());
    assert_eq!(messages[0].document["subject"], "Mail for the good account");
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["ready"], false, "{body}");
    assert!(is_ready(&body, &format!("account/{ACCOUNT}")), "{body}");
    assert!(is_ready(&body, "inbound/good"), "{body}");
    let file = broken_file.display().to_string();
    let account_reason = reason(&body, &format!("account/{BROKEN}"));
    assert!(!is_ready(&body, &format!("account/{BROKEN}")), "{body}");
    assert!(account_reason.contains(&file), "{body}");
    assert!(
        account_reason.contains(&format!("chmod 600 {file}")),
        "{body}"
    );
    let pipeline_reason = reason(&body, "inbound/bad");
    assert!(!is_ready(&body, "inbound/bad"), "{body}");
    assert!(pipeline_reason.contains(&file), "{body}");
    assert!(
        pipeline_reason.contains(&format!("account {BROKEN}")),
        "{body}"
    );
    let failures = format!(
        r#"mailbridge_auth_failures_total{{account="{BROKEN}",protocol="oauth2",reason="permissions"}}"#
    );
    assert_eq!(setup.sample(&failures).await, Some(1.0));
    let log = setup.log();
    assert!(log.contains("Token file unusable"), "{log}");
    assert!(log.contains(&file), "{log}");
    let published = amqp_messages(&bad_queue, 1, Duration::from_secs(1)).await;
    assert!(published.is_empty(), "the broken account's pipeline ran");
}

/// Revokes every token issued to `user` at the stack's OAuth2 server.
async fn revoke_user(user: &str) {
    let reply = crate::token::control(json!({ "revoke_user": user })).await;
    assert!(reply["revoked"].as_u64() > Some(0), "{reply}");
}

/// The refresh token is rejected twice, the second time after the 30 s
/// re-check of `mailbridge run`, before the account is marked.
#[tokio::test]
async fn run_reports_rejected_refresh_token_in_sequence() {
    let setup = Setup::new("rejected");
    let queue = unique("rejected.amqp");
    declare_queue(&queue).await;
    setup
        .prepare(&inbound_toml("rejected", ACCOUNT, &queue))
        .await;
    revoke_user(&setup.user).await;

    let _bridge = setup.start();
    let account = format!("account/{ACCOUNT}");
    let wait = Duration::from_secs(90);
    let (status, body) = setup
        .wait_readyz(wait, |_, body| component(body, &account)["ready"] == false)
        .await;

    assert_eq!(status, 503, "{body}");
    let command = format!("mailbridge authorize {ACCOUNT}");
    assert!(reason(&body, &account).contains(&command), "{body}");
    let required = format!(r#"mailbridge_oauth2_authorization_required{{account="{ACCOUNT}"}}"#);
    assert_eq!(setup.sample(&required).await, Some(1.0));
    let failures = format!(
        r#"mailbridge_auth_failures_total{{account="{ACCOUNT}",protocol="oauth2",reason="invalid_grant"}}"#
    );
    assert!(setup.sample(&failures).await >= Some(1.0));
    let log = setup.log();
    assert!(log.contains("Account needs authorization"), "{log}");
    assert!(log.contains(&command), "{log}");
}
