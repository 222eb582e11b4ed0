#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| agent_supervisor::fuzzing::copy_data(data));
