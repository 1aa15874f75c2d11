//! Runs the `session_frames` fuzz target's body over its seeded corpus
//! (`fuzz/corpus/session_frames/`, written by `fuzz/gen_session_corpus.py`):
//! hostile claims, frames before AUTH, sessions ending with presence held.

#[test]
fn seeded_session_scripts_keep_every_invariant() {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fuzz/corpus/session_frames"
    );
    let mut n = 0;
    for entry in std::fs::read_dir(dir).expect("corpus directory") {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        sodp_server::fuzzing::session_frames(&data);
        n += 1;
    }
    assert!(n >= 15, "corpus has only {n} files");
}
