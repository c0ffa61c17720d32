//! No secret in any output. Every pipeline kind and command runs at
//! debug level with distinctive secret values. Neither the values nor
//! their base64 forms (HTTP Basic, the XOAUTH2 and OAUTHBEARER strings)
//! may appear in standard output or standard error, `/metrics`,
//! `/readyz`, `config` or `check` output, or an error message.
//!
//! The failing paths are a wrong client secret, a token endpoint where
//! nothing listens, token endpoints that quote the whole request in their
//! error response, and an AMQP URL with a wrong password.

use std::process::Output;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::bridge::{ACCOUNT, PATIENCE, Setup, free_port};
use crate::mailbox::{deliver, mail, wait_for_mails};
use crate::records::{
    amqp_messages, create_topic, declare_queue, kafka_records, produce, publish_to_queue,
};
use crate::support::{http, mail_address, stack, unique};

/// Client secret of the account whose secret the token endpoint rejects.
const WRONG_SECRET: &str = "wrong-client-secret-Qz7vK2";
/// Client secret of the account whose token endpoint does not listen.
const UNREACHABLE_SECRET: &str = "unreachable-secret-Hw4pN8";
/// Client secret of the account whose token endpoint quotes the request.
const QUOTED_SECRET: &str = "quoted-secret-Rt5mX1";
/// Password of the AMQP broker that RabbitMQ rejects.
const AMQP_PASSWORD: &str = "amqp-password-Lc9sD3";
/// Kafka SASL password, given as a property that the broker never uses.
const KAFKA_PASSWORD: &str = "kafka-password-Vb6jF0";
/// Length of the padding claim of the signed-in account's tokens, so that
/// they are as long as Microsoft's.
const TOKEN_PADDING: u32 = 600;

/// Accounts that fail to get a token, and brokers that fail to connect,
/// each with an inbound pipeline so that `run` uses it.
fn failing_parts(endpoints: &[(&str, &str, String)], queue: &str) -> String {
    let account = |name: &str, secret: &str, token_url: &str| {
        format!(
            r#"
[accounts.{name}]
address = "{address}"

[accounts.{name}.oauth2]
provider = "generic"
grant = "client_credentials"
client_id = "{client_id}"
client_secret = "{secret}"
token_url = "{token_url}"
scopes = ["imap", "smtp"]

[accounts.{name}.imap]
host = "{host}"
port = {port}
tls = "implicit"
ca_file = "{ca_file}"
connect_timeout = "5s"

[inbound.{name}]
account = "{name}"
"#,
            address = mail_address(&unique(name)),
            client_id = stack("STACK_OAUTH_CLIENT_ID"),
            host = stack("STACK_IMAP_HOST"),
            port = stack("STACK_IMAPS_PORT"),
            ca_file = stack("STACK_CA_FILE"),
        )
    };
    let url = stack("STACK_AMQP_URL").replace("guest:guest@", &format!("guest:{AMQP_PASSWORD}@"));
    let accounts: Vec<String> = endpoints
        .iter()
        .map(|(name, secret, token_url)| account(name, secret, token_url))
        .collect();
    format!(
        r#"{}
[brokers.rejected]
kind = "amqp"
url = "{url}"

[inbound.rejected-broker]
account = "{ACCOUNT}"
broker = "rejected"
exchange = ""
routing_key = "{queue}"
"#,
        accounts.concat()
    )
}

/// The working pipelines: the INBOX to Kafka and RabbitMQ, and send
/// requests from both.
struct Targets {
    inbound_topic: String,
    inbound_queue: String,
    requests_topic: String,
    requests_queue: String,
}

impl Targets {
    async fn new() -> Self {
        let name = |role: &str| unique(&format!("secrets.{role}"));
        let targets = Self {
            inbound_topic: name("inbound"),
            inbound_queue: name("inbound"),
            requests_topic: name("requests"),
            requests_queue: name("requests"),
        };
        let dead_topic = format!("{}.dead", targets.requests_topic);
        for topic in [&targets.inbound_topic, &targets.requests_topic, &dead_topic] {
            create_topic(topic).await;
        }
        let dead_queue = format!("{}.dead", targets.requests_queue);
        for queue in [&targets.inbound_queue, &targets.requests_queue, &dead_queue] {
            declare_queue(queue).await;
        }
        targets
    }

    fn pipelines(&self) -> String {
        format!(
            r#"
[inbound.kafka]
account = "{ACCOUNT}"
broker = "kafka"
topic = "{inbound_topic}"

[inbound.rabbitmq]
account = "{ACCOUNT}"
broker = "rabbitmq"
exchange = ""
routing_key = "{inbound_queue}"

[outbound.kafka]
account = "{ACCOUNT}"
broker = "kafka"
topic = "{requests_topic}"
group_id = "{requests_topic}"
dead_letter = "{requests_topic}.dead"

[outbound.rabbitmq]
account = "{ACCOUNT}"
broker = "rabbitmq"
queue = "{requests_queue}"
dead_letter = "{requests_queue}.dead"
"#,
            inbound_topic = self.inbound_topic,
            inbound_queue = self.inbound_queue,
            requests_topic = self.requests_topic,
            requests_queue = self.requests_queue,
        )
    }
}

/// Starts a token endpoint on loopback that responds to every request
/// with 401 `invalid_client` and quotes the request on one line, body
/// first. The quote is the JSON error description, or with `json` false
/// a plain-text body. Returns its URL.
async fn quoting_token_endpoint(json: bool) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the token endpoint");
    let port = listener.local_addr().expect("address").port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let request = read_request(&mut stream).await;
                let (head, body) = request.split_once("\r\n\r\n").unwrap_or((&request, ""));
                let quoted = format!("{body} | {}", head.replace("\r\n", " | "));
                let (content_type, body) = match json {
                    true => {
                        let object =
                            json!({"error": "invalid_client", "error_description": quoted});
                        ("application/json", object.to_string())
                    }
                    false => ("text/plain", quoted),
                };
                let response = format!(
                    "HTTP/1.1 401 Unauthorized\r\nContent-Type: {content_type}\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    format!("http://127.0.0.1:{port}/token")
}

/// Reads an HTTP request until the client pauses. Token requests are
/// small and sent at once.
async fn read_request(stream: &mut tokio::net::TcpStream) -> String {
    let mut request = Vec::new();
    let mut buffer = [0u8; 4096];
    while let Ok(Ok(read)) =
        tokio::time::timeout(Duration::from_millis(300), stream.read(&mut buffer)).await
    {
        if read == 0 {
            break;
        }
        request.extend_from_slice(&buffer[..read]);
    }
    String::from_utf8_lossy(&request).into_owned()
}

/// Sets the padding of new access tokens at the stack's OAuth2 server.
async fn set_token_padding(length: u32) {
    let response = http()
        .post(stack("STACK_OAUTH_CONTROL_URL"))
        .json(&json!({"token_padding": length}))
        .send()
        .await
        .expect("control request");
    assert!(response.status().is_success(), "{}", response.status());
}

/// Every secret by name, with its base64 forms.
struct Secrets(Vec<(String, String)>);

impl Secrets {
    fn new() -> Self {
        Self(Vec::new())
    }

    /// Adds `value` and its standard and URL-safe base64 forms.
    fn add(&mut self, name: &str, value: &str) {
        self.0.push((name.to_owned(), value.to_owned()));
        self.0
            .push((format!("{name} in base64"), STANDARD.encode(value)));
        self.0.push((
            format!("{name} in URL-safe base64"),
            URL_SAFE_NO_PAD.encode(value),
        ));
    }

    /// Adds a client secret with its HTTP Basic credentials.
    fn add_client_secret(&mut self, name: &str, secret: &str) {
        self.add(name, secret);
        let client_id = stack("STACK_OAUTH_CLIENT_ID");
        self.add(
            &format!("{name} as HTTP Basic"),
            &format!("{client_id}:{secret}"),
        );
    }

    /// Adds the tokens of the token file and the SASL strings that carry
    /// the access token.
    fn add_tokens(&mut self, setup: &Setup) {
        let text = std::fs::read_to_string(setup.token_file(ACCOUNT)).expect("token file");
        let tokens: Value = serde_json::from_str(&text).expect("token file is JSON");
        let refresh = tokens["refresh_token"].as_str().expect("refresh token");
        let access = tokens["access_token"].as_str().expect("access token");
        self.add("refresh token", refresh);
        self.add("access token", access);
        // The signature alone, in case a token is shortened in output.
        let signature = access.rsplit('.').next().expect("JWT signature");
        self.0
            .push(("access token signature".to_owned(), signature.to_owned()));
        let user = &setup.user;
        let xoauth2 = format!("user={user}\x01auth=Bearer {access}\x01\x01");
        self.add("XOAUTH2 string", &xoauth2);
        let oauthbearer = format!("n,a={user},\x01auth=Bearer {access}\x01\x01");
        self.add("OAUTHBEARER string", &oauthbearer);
    }

    /// Fails when `text`, the output named `place`, contains a secret.
    fn assert_absent(&self, place: &str, text: &str) {
        for (name, value) in &self.0 {
            assert!(
                !text.contains(value.as_str()),
                "{place} contains the {name}:\n{text}"
            );
        }
    }

    fn assert_absent_from_output(&self, place: &str, output: &Output) {
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        self.assert_absent(&format!("standard output of {place}"), &stdout);
        self.assert_absent(&format!("standard error of {place}"), &stderr);
    }
}

#[tokio::test]
async fn secrets_absent_from_outputs_in_sequence() {
    let mut setup = Setup::new("secrets");
    setup.env = vec![
        ("MAILBRIDGE_LOG".to_owned(), "debug".to_owned()),
        (
            "MAILBRIDGE_BROKERS__KAFKA__PROPERTIES__SASL__PASSWORD".to_owned(),
            KAFKA_PASSWORD.to_owned(),
        ),
    ];
    let targets = Targets::new().await;
    let endpoints = [
        ("wrong-secret", WRONG_SECRET, stack("STACK_OAUTH_TOKEN_URL")),
        (
            "unreachable",
            UNREACHABLE_SECRET,
            format!("http://127.0.0.1:{}/token", free_port()),
        ),
        ("quoting", QUOTED_SECRET, quoting_token_endpoint(true).await),
        (
            "quoting-text",
            QUOTED_SECRET,
            quoting_token_endpoint(false).await,
        ),
    ];
    let failing: Vec<&str> = endpoints.iter().map(|(name, _, _)| *name).collect();
    let rejected_queue = unique("secrets.rejected");
    let parts = targets.pipelines() + &failing_parts(&endpoints, &rejected_queue);
    set_token_padding(TOKEN_PADDING).await;
    setup.prepare(&parts).await;
    set_token_padding(0).await;
    let mut secrets = Secrets::new();
    secrets.add_tokens(&setup);
    let recipient = mail_address(&unique("recipient"));
    deliver(&setup.user, &mail("secrets", "secrets inbound")).await;

    let bridge = setup.start();
    let kafka_documents = kafka_records(&targets.inbound_topic, 1, PATIENCE).await;
    let amqp_documents = amqp_messages(&targets.inbound_queue, 1, PATIENCE).await;
    let request = |subject: &str| {
        json!({"id": unique("secrets"), "to": [recipient], "subject": subject, "text": "hi"})
            .to_string()
    };
    produce(
        &targets.requests_topic,
        "kafka",
        request("kafka").as_bytes(),
    )
    .await;
    publish_to_queue(&targets.requests_queue, request("amqp").as_bytes()).await;
    let mails = wait_for_mails(&recipient, 2, PATIENCE).await;
    let (_, readyz) = setup
        .wait_readyz(PATIENCE, |_, body| {
            let text = body.to_string();
            let failed = |name: &str| text.contains(&format!("account {name}"));
            failing.iter().all(|name| failed(name)) && text.contains("ACCESS_REFUSED")
        })
        .await;
    let metrics = setup.metrics().await;
    let health = setup.output(&["health"]).await;
    let config = setup.output(&["config"]).await;
    let check = setup.output(&["check"]).await;
    let check_json = setup.output(&["check", "--json"]).await;
    let authorize: Vec<Output> = {
        let mut outputs = Vec::new();
        for account in &failing {
            outputs.push(setup.output(&["authorize", account]).await);
        }
        outputs
    };
    bridge.stop().await;
    // The tokens may have been refreshed while the bridge ran.
    secrets.add_tokens(&setup);
    secrets.add_client_secret("client secret", &stack("STACK_OAUTH_CLIENT_SECRET"));
    secrets.add_client_secret("wrong client secret", WRONG_SECRET);
    secrets.add_client_secret(
        "client secret of the unreachable endpoint",
        UNREACHABLE_SECRET,
    );
    secrets.add_client_secret("client secret of the quoting endpoints", QUOTED_SECRET);
    secrets.add("AMQP password", AMQP_PASSWORD);
    secrets.add("Kafka SASL password", KAFKA_PASSWORD);

    // Every pipeline ran.
    assert_eq!(kafka_documents.len(), 1, "log:\n{}", setup.log());
    assert_eq!(amqp_documents.len(), 1, "log:\n{}", setup.log());
    assert_eq!(mails.len(), 2, "log:\n{}", setup.log());
    let log = setup.log();
    assert!(log.contains(" DEBUG "), "the log is not at debug level");
    // Every failing path reached its error.
    for (account, output) in failing.iter().zip(&authorize) {
        assert_eq!(
            output.status.code(),
            Some(1),
            "authorize {account}: {output:?}"
        );
    }
    assert_eq!(health.status.code(), Some(0), "{health:?}");
    assert_eq!(config.status.code(), Some(0), "{config:?}");
    assert_eq!(check.status.code(), Some(1), "{check:?}");
    let check_text = String::from_utf8_lossy(&check.stdout);
    for account in &failing {
        let failed = format!("{account} imap FAIL token");
        assert!(check_text.contains(&failed), "{failed} in\n{check_text}");
    }

    // The quoted requests reached the log, with the secret replaced.
    assert!(log.contains("client_secret=[redacted]"), "{log}");
    secrets.assert_absent("the log of run", &log);
    secrets.assert_absent("/metrics", &metrics);
    secrets.assert_absent("/readyz", &readyz.to_string());
    secrets.assert_absent_from_output("health", &health);
    secrets.assert_absent_from_output("config", &config);
    secrets.assert_absent_from_output("check", &check);
    secrets.assert_absent_from_output("check --json", &check_json);
    for (account, output) in failing.iter().zip(&authorize) {
        secrets.assert_absent_from_output(&format!("authorize {account}"), output);
    }
}
