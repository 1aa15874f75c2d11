//! Command-line syntax (clap derive). Nothing here does I/O.

use std::time::Duration;

use clap::{Parser, Subcommand};

const EXIT_CODES: &str = "\
Exit codes: 0 success · 1 the server refused (failed call, denied watch) · \
2 bad usage or bad JSON · 3 cannot connect / connection lost / timeout · \
4 authentication failed · 5 protocol error.

JSON arguments are JSON texts: strings need their quotes ('\"text\"'). \
Pass - to read the JSON from standard input.";

/// Watch and write SODP state keys from a shell.
#[derive(Debug, Parser)]
#[command(name = "sodp", version, after_help = EXIT_CODES)]
pub struct Cli {
    /// Server URL (ws://, wss://, sodp://, sodps://).
    #[arg(
        long,
        global = true,
        env = "SODP_URL",
        default_value = "ws://127.0.0.1:7777"
    )]
    pub url: String,

    /// JWT for servers that require authentication.
    #[arg(long, global = true, env = "SODP_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// CA certificates (PEM) to trust for wss:// instead of the public
    /// roots: a private CA or a self-signed server.
    #[arg(long, global = true, env = "SODP_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<std::path::PathBuf>,

    /// Seconds to wait for the connection and for each call's result.
    #[arg(long, global = true, default_value_t = 10.0, value_parser = parse_seconds)]
    pub timeout: f64,

    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    pub fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout)
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print one JSON line per update of each KEY until interrupted:
    /// {"key","version","source","value"}.
    Watch {
        /// Keys to watch (e.g. game.player).
        #[arg(required = true, value_name = "KEY")]
        keys: Vec<String>,
        /// For changes, print the raw delta ops ({"key","version","source","ops"})
        /// instead of the whole value.
        #[arg(long)]
        ops: bool,
    },
    /// Print the current value of KEY as JSON and exit.
    Get { key: String },
    /// Replace the value of KEY.
    Set {
        key: String,
        /// The new value (JSON).
        json: String,
    },
    /// Deep-merge a JSON object into the value of KEY.
    Patch {
        key: String,
        /// The partial value (a JSON object).
        json: String,
    },
    /// Set one location of KEY by JSON Pointer (e.g. /position/x).
    SetIn {
        key: String,
        /// JSON Pointer, e.g. /position/x
        path: String,
        /// The value to put there (JSON).
        json: String,
    },
    /// Remove KEY.
    Delete { key: String },
    /// Set PATH of KEY for as long as this command runs (Ctrl-C removes it).
    Presence {
        key: String,
        /// JSON Pointer, e.g. /alice
        path: String,
        /// The value to hold there (JSON).
        json: String,
    },
    /// Invoke a server method with JSON arguments; prints the result data.
    Call {
        /// e.g. state.set
        method: String,
        /// Arguments (a JSON object), e.g. '{"state":"k","value":1}'
        json: String,
    },
}

fn parse_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("{s:?} is not a positive number of seconds")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_subcommands_and_globals() {
        let cli = Cli::try_parse_from(["sodp", "set-in", "k", "/a/b", "1", "--url", "sodp://h:1"])
            .unwrap();
        assert_eq!(cli.url, "sodp://h:1");
        assert!(matches!(cli.command, Command::SetIn { ref path, .. } if path == "/a/b"));
        let cli = Cli::try_parse_from(["sodp", "watch", "a", "b", "--ops"]).unwrap();
        assert!(matches!(cli.command, Command::Watch { ref keys, ops: true } if keys.len() == 2));
        assert!(Cli::try_parse_from(["sodp", "watch"]).is_err());
        assert!(Cli::try_parse_from(["sodp", "get", "k", "--timeout", "0"]).is_err());
    }
}
