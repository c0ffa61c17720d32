//! The send request shown in README is one that mailbridge accepts.

use mailbridge::mail::outbound::{Limits, parse};

#[test]
fn readme_send_request_is_valid() {
    let readme = include_str!("../README.md");
    let section = readme
        .split("## Outbound: send requests to SMTP")
        .nth(1)
        .expect("README has the outbound section");
    let example = section
        .split("```json\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("the section shows a JSON request");

    let request = parse(example.as_bytes(), &Limits::default());

    let request = request.unwrap_or_else(|rejection| panic!("{rejection}"));
    assert_eq!(request.id(), Some("ticket-4711-reply-1"));
    assert_eq!(request.recipients().len(), 2);
}
