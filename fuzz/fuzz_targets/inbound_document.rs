//! Raw mail bytes, as IMAP FETCH returns them, to the JSON document
//! that the inbound pipeline publishes. The input is built twice: whole,
//! with attachment and raw-message caps, and as a message over
//! `max_message_bytes`, of which only the header section is read.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/invariants/mod.rs"]
mod invariants;

fuzz_target!(|raw: &[u8]| {
    invariants::check_inbound(raw, &invariants::inbound_options());
    invariants::check_inbound(raw, &invariants::header_only_options());
});
