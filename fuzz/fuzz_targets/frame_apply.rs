//! Frame decoding + delta application on arbitrary bytes must never panic,
//! overflow the stack or allocate by a claimed length.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sodp_proto::fuzzing::frame_and_apply(data);
});
