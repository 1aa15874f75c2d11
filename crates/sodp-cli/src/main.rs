//! The `sodp` binary; everything lives in the library (see `lib.rs`).

fn main() -> std::process::ExitCode {
    sodp_cli::main()
}
