//! The Diagnostics IPC reply parsers on arbitrary bytes: header, generic reply (OK / error
//! with and without message), every ProcessInfo version, the environment block and the
//! ADVR_V1 advertise. A runtime (or anything listening on a socket we connect to) can send
//! anything; every outcome must be a value or a typed error.
#![no_main]

use diag::protocol::{
    self, ADVERTISE_LEN, HEADER_LEN, parse_advertise, parse_environment, parse_header, parse_process_info, parse_reply,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    if let Some(adv) = input.get(..ADVERTISE_LEN) {
        let _ = parse_advertise(adv.try_into().unwrap());
    }
    let _ = parse_environment(input);
    for id in [protocol::command::PROCESS_INFO, protocol::command::PROCESS_INFO2, protocol::command::PROCESS_INFO3] {
        let _ = parse_process_info(input, id);
    }
    let Some(head) = input.get(..HEADER_LEN) else { return };
    if let Ok(header) = parse_header(head.try_into().unwrap()) {
        // The caller reads exactly payload_len bytes; give it what there is, at most that.
        let body = &input[HEADER_LEN..];
        let body = &body[..body.len().min(header.payload_len)];
        let _ = parse_reply(header, body.to_vec());
    }
});
