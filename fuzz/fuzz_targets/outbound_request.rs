//! Bytes of an outbound send request, as consumed from Kafka or AMQP, to
//! validation and, for a request that passes, the MIME message.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/invariants/mod.rs"]
mod invariants;

fuzz_target!(|payload: &[u8]| {
    invariants::check_outbound(payload, &invariants::outbound_limits());
});
