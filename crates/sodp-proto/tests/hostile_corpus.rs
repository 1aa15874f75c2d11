//! Runs the fuzz target's body over the seeded corpus in
//! `fuzz/corpus/frame_apply/` (hostile depths, claimed lengths, bad ops), so
//! every test run exercises what the fuzzer starts from.

#[test]
fn seeded_corpus_never_panics() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/corpus/frame_apply");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).expect("corpus directory") {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        sodp_proto::fuzzing::frame_and_apply(&data);
        n += 1;
    }
    assert!(n >= 20, "corpus has only {n} files");
}
