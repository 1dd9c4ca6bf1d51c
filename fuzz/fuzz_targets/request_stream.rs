#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| egressd::fuzzing::request_stream(data));
