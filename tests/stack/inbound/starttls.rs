//! `mailbridge run` against an IMAP server that does not offer STARTTLS,
//! with `tls = "starttls"`: the server never receives AUTHENTICATE, LOGIN
//! or the token, and `/readyz` names the missing STARTTLS.

use std::time::Duration;

use crate::bridge::{ACCOUNT, PATIENCE, Setup};
use crate::support::{FakeImap, step};

#[tokio::test]
async fn inbound_without_starttls_sends_no_token() {
    // The greeting lists no capabilities, so each connection sends
    // CAPABILITY. The reply offers sign-in without TLS and no STARTTLS.
    let capability = || {
        step(
            "CAPABILITY",
            &[
                "* CAPABILITY IMAP4rev1 SASL-IR AUTH=XOAUTH2 AUTH=OAUTHBEARER AUTH=PLAIN",
                "{tag} OK done",
            ],
        )
    };
    let fake = FakeImap::start("* OK fake ready", (0..50).map(|_| capability()).collect()).await;
    let mut setup = Setup::new("inbound-no-starttls");
    setup.imap_port = fake.port;
    setup.imap_tls = "starttls";
    let pipeline = "[inbound.stripped]\naccount = \"watched\"\n";
    setup.prepare(pipeline).await;

    let bridge = setup.start();
    let (status, body) = setup
        .wait_readyz(PATIENCE, |_, body| body.to_string().contains("STARTTLS"))
        .await;
    // A retry or two more, each of which must stop at the same point.
    tokio::time::sleep(Duration::from_secs(3)).await;
    bridge.stop().await;

    assert_eq!(status, 503, "{body}");
    let received = fake.received();
    assert!(!received.is_empty(), "the bridge never connected");
    for line in &received {
        let command = line.split_whitespace().nth(1).unwrap_or_default();
        assert!(
            command.eq_ignore_ascii_case("CAPABILITY"),
            "sent {line:?} to a server without STARTTLS: {received:?}"
        );
    }
    let text = fake.received_text();
    let tokens: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(setup.token_file(ACCOUNT)).expect("token file"),
    )
    .expect("token file is JSON");
    let access_token = tokens["access_token"].as_str().expect("access token");
    assert!(!text.contains(access_token), "the token was sent");
    setup.assert_log_has_no_token();
}
