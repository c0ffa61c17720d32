use super::*;

const SERVER: &str = "smtp.example.test:587";

fn boxed(code: u16, enhanced: &str, text: &str) -> Box<Reply> {
    Box::new(reply(code, enhanced, text))
}

fn reply(code: u16, enhanced: &str, text: &str) -> Reply {
    Reply {
        code,
        enhanced: Some(enhanced.to_owned()).filter(|code| !code.is_empty()),
        lines: vec![text.to_owned()],
    }
}

#[test]
fn auth_disabled_is_permanent_with_command() {
    let error = SmtpError::AuthDisabled {
        server: SERVER.into(),
        account: "noreply".into(),
        user: "noreply@example.test".into(),
        reply: boxed(535, "5.7.139", "Authentication unsuccessful"),
    };

    assert_eq!(error.kind(), "smtp_auth_disabled");
    assert!(error.is_permanent());
    assert!(error.affects_account());
    assert_eq!(error.code(), Some(535));
    assert_eq!(error.enhanced(), Some("5.7.139"));
    assert!(
        error
            .hint()
            .unwrap()
            .contains("SmtpClientAuthenticationDisabled $false")
    );
    let text = error.to_string();
    assert!(text.contains("-Identity noreply@example.test"), "{text}");
}

#[test]
fn token_rejected_hint_names_user_and_command() {
    let error = SmtpError::TokenRejected {
        server: SERVER.into(),
        account: "support".into(),
        user: "support@example.test".into(),
        detail: r#"status "401""#.into(),
        reply: boxed(535, "5.7.3", "Authentication unsuccessful"),
    };

    let hint = error.hint().unwrap();
    assert!(
        hint.contains("token's user must match the account address"),
        "{hint}"
    );
    assert!(hint.contains("mailbridge authorize"), "{hint}");
    assert!(error.to_string().contains("mailbridge authorize support"));
    assert_eq!(error.kind(), "token_rejected");
    assert!(!error.is_transient());
}

#[test]
fn send_as_denied_concerns_message_only() {
    let error = SmtpError::SendAsDenied {
        server: SERVER.into(),
        from: "ceo@example.test".into(),
        reply: boxed(554, "5.2.252", "SendAsDenied"),
    };

    assert!(error.is_permanent());
    assert!(!error.affects_account());
    assert_eq!(error.enhanced(), Some("5.2.252"));
}

#[test]
fn transient_kinds() {
    let transient = [
        SmtpError::ConcurrencyLimit {
            server: SERVER.into(),
            reply: boxed(432, "4.3.2", "sender thread limit exceeded"),
        },
        SmtpError::ConnectionClosed {
            server: SERVER.into(),
            step: "the reply to RSET".into(),
            reply: Some(boxed(421, "4.4.2", "timeout exceeded")),
        },
        SmtpError::Ambiguous {
            server: SERVER.into(),
            detail: "connection closed".into(),
        },
        SmtpError::Rejected {
            server: SERVER.into(),
            command: "DATA",
            reply: boxed(451, "4.7.0", "Temporary server error"),
        },
    ];

    for error in transient {
        assert!(error.is_transient(), "{error}");
        assert!(!error.affects_account(), "{error}");
    }
}

#[test]
fn starttls_refusal_transient_only_for_4xx() {
    let refused = |code| SmtpError::TlsRequiredUnavailable {
        server: SERVER.into(),
        problem: TlsProblem::Refused,
        detail: "refused".into(),
        reply: Some(boxed(code, "", "TLS not available")),
    };
    let missing = SmtpError::TlsRequiredUnavailable {
        server: SERVER.into(),
        problem: TlsProblem::NotOffered,
        detail: "offered: AUTH".into(),
        reply: None,
    };

    assert!(refused(454).is_transient());
    assert!(!refused(502).is_transient());
    assert!(!missing.is_transient());
    assert!(missing.affects_account());
    assert_eq!(missing.kind(), "tls_required_unavailable");
    assert!(
        missing.to_string().contains("tls = \"implicit\""),
        "{missing}"
    );
}

#[test]
fn recipients_rejected_transient_when_all_4xx() {
    let rejected = |codes: &[u16]| SmtpError::RecipientsRejected {
        server: SERVER.into(),
        rejected: codes
            .iter()
            .map(|code| ("bob@example.test".to_owned(), reply(*code, "", "no")))
            .collect(),
    };

    assert!(rejected(&[450, 451]).is_transient());
    assert!(rejected(&[450, 550]).is_permanent());
    assert_eq!(rejected(&[550]).code(), Some(550));
    assert!(
        rejected(&[550])
            .to_string()
            .contains("bob@example.test (550 no)")
    );
}

#[test]
fn connection_closed_without_reply() {
    let error = SmtpError::ConnectionClosed {
        server: SERVER.into(),
        step: "the reply to MAIL FROM".into(),
        reply: None,
    };

    assert!(error.to_string().ends_with("without a reply"), "{error}");
    assert_eq!(error.code(), None);
}

#[test]
fn no_mechanism_lists_offered() {
    let error = SmtpError::NoMechanism {
        server: SERVER.into(),
        offered: vec!["PLAIN".into(), "LOGIN".into()],
    };

    assert!(error.to_string().contains("offered: PLAIN, LOGIN"));
    assert!(error.hint().is_some());
}
