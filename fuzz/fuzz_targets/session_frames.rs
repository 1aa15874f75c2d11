//! The session state machine under arbitrary scripts of frames, CALLs,
//! AUTH with hostile claims signed by the server's key, timers and session
//! ends. See `sodp_server::fuzzing` for the script format.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sodp_server::fuzzing::session_frames(data);
});
