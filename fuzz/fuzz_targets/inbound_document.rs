//! Raw mail bytes, as IMAP FETCH returns them, to the JSON document
//! that the inbound pipeline publishes. The input is built twice: whole,
//! with attachment and raw-message caps, and as a message over
//! `max_message_bytes`, of which only the header section is read.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/invariants/mod.rs"]
mod invariants;

// `mail::build` catches a panic of the MIME parser and falls back to the
// header section, so a caught panic must not end the run. libfuzzer-sys
// installs a hook that aborts on every panic; this one only prints it.
// A panic that escapes the target still aborts, through libfuzzer-sys's
// own catch_unwind around each input.
fuzz_target!(
    init: {
        std::panic::set_hook(Box::new(|info| eprintln!("caught or escaping panic: {info}")));
    },
    |raw: &[u8]| {
        invariants::check_inbound(raw, &invariants::inbound_options());
        invariants::check_inbound(raw, &invariants::header_only_options());
    }
);
