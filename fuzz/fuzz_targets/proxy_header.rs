#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| egressd::fuzzing::proxy_header(data));
