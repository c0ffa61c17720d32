use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;

const ACCOUNT: &str = "support";

/// Secrets of the requests that produced the bodies below; no error text
/// may contain them.
const REQUEST_SECRETS: &[&str] = &[
    "RT-ALICE-1",
    "CODE-XYZ",
    "NOT-ALLOWED",
    "RT-BOB-1",
    "RT-1",
    "AT-0003",
    "RT-4",
];

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn error(status: u16, retry_after: Option<&str>, body: &str) -> OAuth2Error {
    OAuth2Error::from_parts(ACCOUNT, status, retry_after, body.as_bytes(), now())
}

fn assert_no_secrets(error: &OAuth2Error) {
    let texts = [error.to_string(), format!("{error:?}")];
    for text in texts {
        for secret in REQUEST_SECRETS {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }
}

const SIGN_IN_FREQUENCY: &str = r#"{"error":"invalid_grant","error_description":"AADSTS70043: refresh token expired or invalid because of sign-in frequency checks (conditional access). Trace ID: 00000000-0000-0000-0000-0000000000a1","error_codes":[70043],"suberror":"token_expired"}"#;

#[test]
fn sign_in_frequency_needs_authorization() {
    let error = error(400, None, SIGN_IN_FREQUENCY);

    assert_eq!(error.classification(), Classification::InvalidGrant);
    assert_eq!(error.kind(), "invalid_grant");
    assert!(error.needs_authorization());
    assert!(!error.is_transient());
    assert_no_secrets(&error);
}

#[test]
fn sign_in_frequency_fields_parsed() {
    let response = error(400, None, SIGN_IN_FREQUENCY)
        .response()
        .cloned()
        .unwrap();

    let description = "AADSTS70043: refresh token expired or invalid because of sign-in \
                       frequency checks (conditional access).";
    assert_eq!(response.description.as_deref(), Some(description));
    assert_eq!(response.codes, [70043]);
    assert_eq!(response.suberror.as_deref(), Some("token_expired"));
}

#[test]
fn sign_in_frequency_display_names_command() {
    let text = error(400, None, SIGN_IN_FREQUENCY).to_string();

    let start =
        "token request for account support failed with invalid_grant (HTTP 400): AADSTS70043";
    assert!(text.starts_with(start), "{text}");
    assert!(text.contains("sign-in frequency policy"), "{text}");
    assert!(
        text.ends_with("run `mailbridge authorize support` to sign in again"),
        "{text}"
    );
    assert!(!text.contains("Trace ID"), "{text}");
}

#[test]
fn code_redeemed_twice() {
    let body = r#"{"error":"invalid_grant","error_description":"AADSTS54005: OAuth2 authorization code was already redeemed. Trace ID: 00000000-0000-0000-0000-0000000000b1","error_codes":[54005]}"#;

    let error = error(400, None, body);

    assert!(error.needs_authorization());
    assert_eq!(error.hint().unwrap().code, 54005);
    assert!(error.to_string().contains("already redeemed"), "{error}");
    assert_no_secrets(&error);
}

#[test]
fn public_client_sent_secret() {
    let body = r#"{"error":"invalid_client","error_description":"AADSTS700025: Client is public so neither 'client_assertion' nor 'client_secret' should be presented. Trace ID: 00000000-0000-0000-0000-0000000000c1","error_codes":[700025]}"#;

    let error = error(401, None, body);

    assert_eq!(error.kind(), "invalid_client");
    assert!(!error.needs_authorization());
    assert!(!error.is_transient());
    let text = error.to_string();
    assert!(text.contains("remove client_secret"), "{text}");
    assert!(
        text.contains("check accounts.support.oauth2.client_id"),
        "{text}"
    );
    assert_no_secrets(&error);
}

#[test]
fn transient_outage_with_retry_after() {
    let body = r#"{"error":"temporarily_unavailable","error_description":"AADSTS90033: A transient error has occurred. Please try again.","error_codes":[90033]}"#;

    let error = error(503, Some("30"), body);

    assert!(error.is_transient());
    assert!(!error.needs_authorization());
    assert_eq!(error.kind(), "transient");
    assert_eq!(error.retry_after(), Some(Duration::from_secs(30)));
    assert!(error.to_string().ends_with("retry after 30s"), "{error}");
}

#[test]
fn aadsts_90033_transient_on_400() {
    let body = r#"{"error":"invalid_request","error_codes":[90033]}"#;

    assert!(error(400, None, body).is_transient());
}

#[test]
fn refresh_token_expired_by_inactivity() {
    let body = r#"{"error":"invalid_grant","error_description":"AADSTS700082: The refresh token has expired due to inactivity. Trace ID: 00000000-0000-0000-0000-0000000000d1","error_codes":[700082]}"#;

    let error = error(400, None, body);

    assert!(error.needs_authorization());
    assert!(
        error.to_string().contains("not used for too long"),
        "{error}"
    );
    assert_no_secrets(&error);
}

#[test]
fn token_response_with_bad_shape_hides_tokens() {
    // A 200 whose token response failed to parse, for example because
    // token_type is missing. The body contains issued tokens, so it is
    // never quoted.
    let body = r#"{"access_token":"AT-0003","refresh_token":"RT-4"}"#;

    let error = error(200, None, body);

    assert_eq!(error.kind(), "invalid_response");
    assert!(!error.is_transient());
    assert!(
        error.to_string().contains("not a valid token response"),
        "{error}"
    );
    assert_no_secrets(&error);
}

#[test]
fn garbage_200_is_invalid_response() {
    let error = error(200, None, "<html>captive portal</html>");

    assert_eq!(error.kind(), "invalid_response");
    let text = error.to_string();
    assert!(text.contains("the body is not JSON"), "{text}");
    assert!(!text.contains("captive"), "{text}");
    assert!(
        text.ends_with("check accounts.support.oauth2.token_url"),
        "{text}"
    );
}

#[test]
fn garbage_502_is_transient_with_excerpt() {
    let error = error(502, None, "<html>\r\n<h1>Bad Gateway</h1></html>");

    assert!(error.is_transient());
    assert!(error.to_string().contains("Bad Gateway"), "{error}");
    assert!(!error.to_string().contains('\n'), "{error}");
}

#[test]
fn garbage_404_is_invalid_response() {
    let error = error(404, None, "Not Found");

    assert_eq!(error.kind(), "invalid_response");
    assert!(
        error
            .to_string()
            .contains("failed with an unexpected response (HTTP 404)"),
        "{error}"
    );
}

#[test]
fn empty_400_is_invalid_response() {
    let error = error(400, None, "");

    assert_eq!(error.kind(), "invalid_response");
    assert!(error.to_string().contains("the body is empty"), "{error}");
}

#[test]
fn error_field_of_wrong_type_is_invalid_response() {
    let error = error(400, None, r#"{"error":42}"#);

    assert_eq!(error.kind(), "invalid_response");
    assert!(
        error.to_string().contains("no string `error` field"),
        "{error}"
    );
}

#[test]
fn error_codes_of_wrong_type_tolerated() {
    let body = r#"{"error":"invalid_grant","error_codes":"70043","suberror":7}"#;

    let response = error(400, None, body).response().cloned().unwrap();

    assert_eq!(response.codes, Vec::<u32>::new());
    assert_eq!(response.suberror, None);
}

#[test]
fn long_body_excerpt_truncated() {
    let body = "x".repeat(10_000);

    let text = error(500, None, &body).to_string();

    assert!(text.len() < 1_000, "{} bytes", text.len());
    assert!(text.contains('…'));
}

#[test]
fn multiline_description_keeps_first_line() {
    let body = r#"{"error":"invalid_scope","error_description":"AADSTS70011: The provided value for scope is not valid.\r\nTrace ID: 1\r\nCorrelation ID: 2"}"#;

    let error = error(400, None, body);

    assert_eq!(error.kind(), "invalid_scope");
    let description = error.response().unwrap().description.clone().unwrap();
    assert_eq!(
        description,
        "AADSTS70011: The provided value for scope is not valid."
    );
    assert!(
        error
            .to_string()
            .contains("check accounts.support.oauth2.scopes"),
        "{error}"
    );
}

#[test]
fn mfa_and_consent_codes_need_authorization() {
    for code in [50076, 50079, 65001, 50173] {
        let body = format!(r#"{{"error":"invalid_grant","error_codes":[{code}]}}"#);
        let error = error(400, None, &body);
        assert!(error.needs_authorization(), "AADSTS{code}");
        assert_eq!(error.hint().unwrap().code, code);
    }
}

#[test]
fn invalid_client_secret_hint() {
    let body = r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided."}"#;

    let error = error(401, None, body);

    assert_eq!(error.hint().unwrap().code, 7000215);
    assert!(error.to_string().contains("not its ID"), "{error}");
}

#[test]
fn rfc_codes_classified() {
    let cases = [
        ("invalid_request", Classification::InvalidRequest),
        ("unauthorized_client", Classification::UnauthorizedClient),
        (
            "unsupported_grant_type",
            Classification::UnsupportedGrantType,
        ),
        ("access_denied", Classification::AccessDenied),
        ("expired_token", Classification::ExpiredToken),
        ("interaction_required", Classification::InteractionRequired),
        ("consent_required", Classification::InteractionRequired),
        ("server_error", Classification::Transient),
        ("slow_down", Classification::Transient),
        ("authorization_pending", Classification::Transient),
        ("made_up_error", Classification::Unknown),
    ];

    for (code, expected) in cases {
        let body = format!(r#"{{"error":"{code}"}}"#);
        assert_eq!(error(400, None, &body).classification(), expected, "{code}");
    }
}

#[test]
fn status_429_is_transient() {
    let error = error(429, Some("120"), r#"{"error":"invalid_request"}"#);

    assert!(error.is_transient());
    assert_eq!(error.retry_after(), Some(Duration::from_secs(120)));
}

#[test]
fn retry_after_http_date() {
    // 1_700_000_060 seconds after the epoch, 60 s after now().
    let date = "Tue, 14 Nov 2023 22:14:20 GMT";

    let error = error(503, Some(date), "");

    assert_eq!(error.retry_after(), Some(Duration::from_secs(60)));
}

#[test]
fn retry_after_past_date_is_zero() {
    let error = error(503, Some("Sun, 06 Nov 1994 08:49:37 GMT"), "");

    assert_eq!(error.retry_after(), Some(Duration::ZERO));
}

#[test]
fn retry_after_invalid_ignored() {
    assert_eq!(error(503, Some("soon"), "").retry_after(), None);
    assert_eq!(error(503, Some("-5"), "").retry_after(), None);
}

#[test]
fn from_response_reads_status_and_header() {
    let response = oauth2::http::Response::builder()
        .status(503)
        .header("Retry-After", "7")
        .body(br#"{"error":"temporarily_unavailable"}"#.to_vec())
        .unwrap();

    let error = OAuth2Error::from_response(ACCOUNT, &response, now());

    assert_eq!(error.status(), Some(503));
    assert_eq!(error.retry_after(), Some(Duration::from_secs(7)));
    assert!(error.is_transient());
}

#[test]
fn transport_timeout_is_transient() {
    let error = OAuth2Error::transport(ACCOUNT, true, "operation timed out after 30s");

    assert!(error.is_transient());
    assert_eq!(error.status(), None);
    assert!(
        error.to_string().contains("support timed out: operation"),
        "{error}"
    );
    assert!(std::error::Error::source(&error).is_some());
}

#[test]
fn transport_connect_failure_is_transient() {
    let error = OAuth2Error::transport(ACCOUNT, false, "connection refused");

    assert_eq!(error.kind(), "transient");
    assert!(
        error
            .to_string()
            .contains("failed to reach the token endpoint"),
        "{error}"
    );
    assert!(
        error.to_string().ends_with("retry later with backoff"),
        "{error}"
    );
}

#[test]
fn display_is_lowercase_first() {
    let text = error(400, None, SIGN_IN_FREQUENCY).to_string();

    assert!(text.starts_with(char::is_lowercase), "{text}");
}

#[test]
fn excerpt_cuts_on_char_boundary() {
    assert_eq!(excerpt("ääää", 2), "ää…");
    assert_eq!(excerpt("ab", 2), "ab");
}
