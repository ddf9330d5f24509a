//! The parent's reading of the DAC worker's answer (`clrdump::answer`): the worker ran a DAC on
//! a dump that may both be hostile, so its bytes are untrusted. Parsing must never panic nor
//! allocate what a length field merely claims, and what it accepts must be within the bounds
//! `validate` promises.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((confinement, snapshot)) = clrdump::answer::parse_answer(data) {
        // Accepted answers pass validation again and say which layers held.
        clrdump::answer::validate(&snapshot).expect("parse_answer validates");
        let _ = confinement.summary();
        let _ = confinement.warnings();
        assert!(snapshot.threads.len() <= 1 << 16);
        assert!(snapshot.warnings.iter().all(|w| w.len() <= 64 << 10));
    }
});
