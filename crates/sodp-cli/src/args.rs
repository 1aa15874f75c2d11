//! Command-line syntax (clap derive). Nothing here does I/O.

use std::time::Duration;

use clap::{Parser, Subcommand};

const EXIT_CODES: &str = "\
Exit codes: 0 success · 1 the server refused (failed call, denied watch, \
or an extension the server does not support) · \
2 bad usage or bad JSON · 3 cannot connect / connection lost / timeout · \
4 authentication failed · 5 protocol error · \
6 conflict: an --if-version (or a transaction op's if_version) did not match; \
the message gives the key's current version.

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
    /// {"key","version","source","value"}. A KEY may be a pattern,
    /// `game.players.*` (every key below game.players) or `*` (every key):
    /// its value is an object of full key → value.
    Watch {
        /// Keys or patterns to watch (e.g. game.player, 'game.*').
        #[arg(required = true, value_name = "KEY")]
        keys: Vec<String>,
        /// For changes, print the raw delta ops ({"key","version","source","ops"})
        /// instead of the whole value.
        #[arg(long)]
        ops: bool,
        /// Send this JSON as the WATCH `params` of every KEY (and with every
        /// RESUME after a reconnect); `-` reads it from stdin.
        #[arg(long, value_name = "JSON")]
        params: Option<String>,
    },
    /// Print the current value of KEY as JSON and exit (a one-shot
    /// state.get when the server supports it, else a watch of one update).
    Get {
        key: String,
        /// Print {"version","initialized","value"} instead of the value alone
        /// (the version to pass to --if-version).
        #[arg(long)]
        meta: bool,
    },
    /// Replace the value of KEY.
    Set {
        key: String,
        /// The new value (JSON).
        json: String,
        #[command(flatten)]
        write: WriteFlags,
    },
    /// Deep-merge a JSON object into the value of KEY.
    Patch {
        key: String,
        /// The partial value (a JSON object).
        json: String,
        #[command(flatten)]
        write: WriteFlags,
    },
    /// Set one location of KEY by JSON Pointer (e.g. /position/x).
    SetIn {
        key: String,
        /// JSON Pointer, e.g. /position/x
        path: String,
        /// The value to put there (JSON).
        json: String,
        #[command(flatten)]
        write: WriteFlags,
    },
    /// Remove KEY.
    Delete {
        key: String,
        #[command(flatten)]
        condition: ConditionFlags,
    },
    /// Set PATH of KEY for as long as this command runs (Ctrl-C removes it).
    Presence {
        key: String,
        /// JSON Pointer, e.g. /alice
        path: String,
        /// The value to hold there (JSON).
        json: String,
    },
    /// List the keys that hold a value, one per line, in byte order: all of
    /// them, or those equal to PREFIX or below it by whole segments (`game`
    /// lists game and game.x, not gameX).
    Keys {
        prefix: Option<String>,
        /// Print at most N keys.
        #[arg(long, value_name = "N")]
        limit: Option<u64>,
        /// Start after this key (the last one a previous run printed).
        #[arg(long, value_name = "KEY")]
        after: Option<String>,
    },
    /// Print the retained changes of KEY, oldest first, one JSON line each:
    /// {"version","ops"}. A note on stderr says when older changes are no
    /// longer retained.
    History {
        key: String,
        /// Only changes with a version above V.
        #[arg(long, value_name = "V")]
        since: Option<u64>,
        /// Print at most N changes.
        #[arg(long, value_name = "N")]
        limit: Option<u64>,
    },
    /// Apply several writes at once, all or nothing, under one version:
    /// JSON is an array of ops, each {"method","args"} with method
    /// state.set, state.patch, state.set_in or state.delete and its usual
    /// args (optionally "if_version", and "ttl_ms" for writes), e.g.
    /// '[{"method":"state.set","args":{"state":"a","value":1}}]'.
    /// Prints {"version":N}.
    Tx {
        /// The ops (a JSON array), or - for standard input.
        json: String,
        /// Use this idempotency key for the transaction.
        #[arg(long, value_name = "K")]
        idempotency_key: Option<String>,
    },
    /// Invoke a server method with JSON arguments; prints the result data.
    Call {
        /// e.g. state.set
        method: String,
        /// Arguments (a JSON object), e.g. '{"state":"k","value":1}'
        json: String,
    },
}

/// `--if-version` and `--idempotency-key`, for every write.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConditionFlags {
    /// Write only if KEY's current version is N (0: only if KEY holds no
    /// value); otherwise exit 6 and change nothing.
    #[arg(long, value_name = "N")]
    pub if_version: Option<u64>,
    /// Apply the write at most once for this key, even when the command is
    /// run again (the server remembers it for its idempotency window).
    #[arg(long, value_name = "K")]
    pub idempotency_key: Option<String>,
}

/// [`ConditionFlags`] plus `--ttl`, for the writes that take one.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct WriteFlags {
    #[command(flatten)]
    pub condition: ConditionFlags,
    /// Expire KEY this long after the write: 500ms, 30s, 5m, 2h, or plain
    /// seconds; 0 removes a deadline.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub ttl: Option<Duration>,
}

/// `500ms`, `1.5s`, `5m`, `2h`, or a plain number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let scale = match unit {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => f64::NAN,
    };
    match number.parse::<f64>() {
        Ok(n) if scale.is_finite() && n >= 0.0 => Duration::try_from_secs_f64(n * scale)
            .map_err(|_| format!("{s:?} is too long a duration")),
        _ => Err(format!(
            "{s:?} is not a duration like 500ms, 30s, 5m, 2h or a number of seconds"
        )),
    }
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
        assert!(
            matches!(cli.command, Command::Watch { ref keys, ops: true, params: None } if keys.len() == 2)
        );
        let cli = Cli::try_parse_from(["sodp", "watch", "a", "--params", "{}"]).unwrap();
        assert!(matches!(cli.command, Command::Watch { params: Some(ref p), .. } if p == "{}"));
        assert!(Cli::try_parse_from(["sodp", "watch"]).is_err());
        assert!(Cli::try_parse_from(["sodp", "get", "k", "--timeout", "0"]).is_err());
        let cli = Cli::try_parse_from([
            "sodp",
            "set",
            "k",
            "1",
            "--if-version",
            "4",
            "--ttl",
            "1.5s",
            "--idempotency-key",
            "x",
        ])
        .unwrap();
        let Command::Set { write, .. } = cli.command else {
            panic!("set")
        };
        assert_eq!(write.condition.if_version, Some(4));
        assert_eq!(write.ttl, Some(Duration::from_millis(1500)));
        assert_eq!(write.condition.idempotency_key.as_deref(), Some("x"));
        assert!(Cli::try_parse_from(["sodp", "delete", "k", "--ttl", "1s"]).is_err());
        assert!(Cli::try_parse_from(["sodp", "set", "k", "1", "--if-version", "-1"]).is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        for bad in ["", "ms", "5x", "-1s", "1e400"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
