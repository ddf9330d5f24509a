//! The `schedule` trigger's cron parser (`api::Cron`) on arbitrary text: a policy is written by
//! a tenant, and the sidecar and the operator's validation both parse it. Every outcome must be a
//! value or a typed error; what parses must find its next time (or none) without panicking, and
//! that time must come after the instant asked about and on a whole minute.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((&at, text)) = input.split_first() else { return };
    let Ok(text) = std::str::from_utf8(text) else { return };
    let Ok(cron) = api::Cron::parse(text) else { return };
    // An instant from the first byte: 1970 to about 2106, in steps of ~194 days.
    let now = u64::from(at) * 16_777_216;
    if let Some(next) = cron.next_after(now) {
        assert!(next > now && next % 60 == 0, "{text:?} after {now}: {next}");
    }
});
