//! README's options table and `sodp-server --help` name the same options:
//! every flag and `SODP_*` variable of `--help` has a row, and every row
//! names only options the binary has.

use std::collections::BTreeSet;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_sodp-server");

/// The `--flags` and `SODP_*` names in `text`.
fn names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_')) {
        let flag = word.starts_with("--") && word.len() > 2 && !word[2..].starts_with('-');
        if flag || (word.starts_with("SODP_") && word.len() > 5) {
            out.insert(word.trim_end_matches('-').to_owned());
        }
    }
    out
}

#[test]
fn readme_options_table_matches_help() {
    let help = Command::new(BIN).arg("--help").output().unwrap();
    assert!(help.status.success());
    let mut from_help = names(&String::from_utf8_lossy(&help.stdout));
    from_help.remove("--help");

    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("README.md");
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with("Server options"))
        .expect("a `## Server options` section");
    let table: String = section
        .lines()
        .filter(|l| l.starts_with('|'))
        .collect::<Vec<_>>()
        .join("\n");
    let from_readme = names(&table);

    let undocumented: Vec<_> = from_help.difference(&from_readme).collect();
    let unknown: Vec<_> = from_readme.difference(&from_help).collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "README's options table is out of date: not in the table {undocumented:?}; \
         not in --help {unknown:?}"
    );
}
