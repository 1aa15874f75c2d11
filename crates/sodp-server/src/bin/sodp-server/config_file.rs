//! `--config sodp.toml`: every option of the command line, as a TOML file.
//!
//! Keys are the long flag names, with `_` or `-` (`max_memory = 1000000`,
//! `data_dir = "/var/lib/sodp"`). The file's values become the options'
//! defaults, so the precedence is flags > `SODP_*` variables > file >
//! built-in defaults. An unknown key is an error that names it; so is a
//! value of a type no option takes (tables). `--print-config` shows the
//! effective configuration, each option with where its value came from,
//! secrets redacted.

use std::collections::BTreeSet;
use std::ffi::OsString;

use clap::parser::ValueSource;
use clap::{ArgMatches, Command};

/// Never printed: the keys, and the Redis URL (it may carry a password).
const SECRETS: [&str; 4] = [
    "jwt_secret",
    "jwt_public_key",
    "jwt_es256_public_key",
    "redis_url",
];

/// Options that make no sense in a file.
const NOT_IN_FILE: [&str; 4] = ["config", "print_config", "help", "version"];

/// The path given by `--config PATH`, `--config=PATH` or `SODP_CONFIG`.
fn config_path(argv: &[OsString]) -> Option<String> {
    let mut args = argv
        .iter()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned());
    while let Some(arg) = args.next() {
        if arg == "--config" {
            return args.next();
        }
        if let Some(path) = arg.strip_prefix("--config=") {
            return Some(path.to_owned());
        }
    }
    std::env::var("SODP_CONFIG").ok().filter(|p| !p.is_empty())
}

/// A TOML value as the command line would spell it.
fn as_arg(value: &toml::Value) -> Option<String> {
    Some(match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Array(items) => items
            .iter()
            .map(as_arg)
            .collect::<Option<Vec<_>>>()?
            .join(","),
        toml::Value::Datetime(_) | toml::Value::Table(_) => return None,
    })
}

/// Applies the config file (if any) to `cmd` as defaults. Returns the
/// command and the options the file set.
pub fn apply(mut cmd: Command, argv: &[OsString]) -> Result<(Command, BTreeSet<String>), String> {
    let Some(path) = config_path(argv) else {
        return Ok((cmd, BTreeSet::new()));
    };
    let text = std::fs::read_to_string(&path).map_err(|e| format!("config file {path}: {e}"))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| format!("config file {path}: {e}"))?;
    let known: BTreeSet<String> = cmd
        .get_arguments()
        .filter(|a| !a.is_positional())
        .map(|a| a.get_id().to_string())
        .filter(|id| !NOT_IN_FILE.contains(&id.as_str()))
        .collect();
    let mut unknown = Vec::new();
    let mut set = BTreeSet::new();
    for (key, value) in &table {
        let id = key.replace('-', "_");
        if !known.contains(&id) {
            unknown.push(key.clone());
            continue;
        }
        let Some(text) = as_arg(value) else {
            return Err(format!(
                "config file {path}: {key}: expected a string, number, boolean or list"
            ));
        };
        // Defaults live as long as the command (the whole run).
        let text: &'static str = Box::leak(text.into_boxed_str());
        cmd = cmd.mut_arg(id.as_str(), |a| a.default_value(text));
        set.insert(id);
    }
    if !unknown.is_empty() {
        return Err(format!(
            "config file {path}: unknown option{} {} (options are the long flag names, e.g. max_memory)",
            if unknown.len() > 1 { "s" } else { "" },
            unknown.join(", ")
        ));
    }
    Ok((cmd, set))
}

/// The effective configuration, one `name = value  # source` line per
/// option, secrets redacted.
pub fn render(matches: &ArgMatches, cmd: &Command, from_file: &BTreeSet<String>) -> String {
    let mut out = String::new();
    for arg in cmd.get_arguments() {
        let id = arg.get_id().as_str();
        if arg.is_positional() || NOT_IN_FILE.contains(&id) {
            continue;
        }
        let Some(raw) = matches.get_raw(id) else {
            continue;
        };
        let value: Vec<String> = raw.map(|v| v.to_string_lossy().into_owned()).collect();
        let value = if SECRETS.contains(&id) {
            "\"<redacted>\"".to_owned()
        } else {
            format!("{:?}", value.join(","))
        };
        let source = match matches.value_source(id) {
            Some(ValueSource::CommandLine) => "flag",
            Some(ValueSource::EnvVariable) => "environment",
            Some(ValueSource::DefaultValue) if from_file.contains(id) => "config file",
            _ => "default",
        };
        out.push_str(&format!("{id} = {value}  # {source}\n"));
    }
    out
}
