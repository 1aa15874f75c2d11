//! `sodp-bench`: a load generator for SODP servers.
//!
//! Scenarios (see each module): `fanout`, `writes`, `conns`, `roundtrip`,
//! for the protocol extensions `patterns`, `cas`, `keyspace`, and `sends`,
//! the kernel's part of a fanout measured without any server.
//! Every run is bounded in count and time, prints one JSON line of results
//! on stdout and a human summary on stderr, and exits non-zero when the run
//! was not clean (missing, duplicated or out-of-order deltas, failed calls,
//! a failed liveness check). With `--server-pid` the server's CPU time and
//! RSS are read from /proc around the measured phase.
//!
//! The generator runs on one thread (tokio current-thread runtime) so that
//! on a 2-core machine it can be pinned to the core the server is not on.

mod clock;
mod conns;
mod extensions;
mod fanout;
mod procfs;
mod rawws;
mod report;
mod roundtrip;
mod scan;
mod sends;
mod stats;
mod wire;
mod writes;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "sodp-bench",
    version,
    about = "Load generator for SODP servers (loopback benchmarks)"
)]
struct Cli {
    /// Server URL (ws:// or sodp://).
    #[arg(long, global = true, default_value = "ws://127.0.0.1:7777")]
    url: String,
    /// Server process id: read its CPU time and RSS from /proc.
    #[arg(long, global = true)]
    server_pid: Option<u32>,
    /// Upper bound on the measured phase, in seconds.
    #[arg(long, global = true, default_value_t = 300.0)]
    timeout: f64,
    /// Connections opened concurrently while setting up.
    #[arg(long, global = true, default_value_t = 200)]
    connect_concurrency: usize,
    /// A JWT every connection authenticates with, for a server run with
    /// auth (e.g. `--jwt-secret`): the authenticated sessions' path.
    #[arg(long, global = true, env = "SODP_BENCH_TOKEN")]
    token: Option<String>,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// N subscribers watch one key; one writer patches it W times.
    Fanout {
        /// Subscribers.
        #[arg(long, default_value_t = 100)]
        subs: usize,
        /// Writes.
        #[arg(long, default_value_t = 1000)]
        writes: usize,
        /// Writes per second (open loop); omit for closed loop.
        #[arg(long)]
        rate: Option<f64>,
        /// Closed loop: writes in flight (acked and delivered to all = done).
        #[arg(long, default_value_t = 8)]
        window: usize,
        /// Give up after this many seconds without progress.
        #[arg(long, default_value_t = 5.0)]
        stall: f64,
        /// The writer's server (default: `--url`); another node of a
        /// cluster measures delivery across nodes.
        #[arg(long)]
        writer_url: Option<String>,
    },
    /// C connections pipeline set/patch over K keys for S seconds.
    Writes {
        #[command(flatten)]
        load: WriteLoad,
    },
    /// N watching connections held for S seconds, then a liveness write.
    Conns {
        #[arg(long, default_value_t = 1000)]
        count: usize,
        /// Seconds to hold the connections.
        #[arg(long, default_value_t = 5.0)]
        hold: f64,
        /// Seconds to wait after closing before the last RSS reading.
        #[arg(long, default_value_t = 2.0)]
        settle: f64,
    },
    /// Sequential set → own RESULT and own DELTA, N times.
    Roundtrip {
        #[arg(long, default_value_t = 2000)]
        count: usize,
    },
    /// The `writes` load with pattern subscriptions registered.
    Patterns {
        #[command(flatten)]
        load: WriteLoad,
        /// Connections watching a pattern every written key matches.
        #[arg(long, default_value_t = 1)]
        pattern_subs: usize,
        /// Patterns registered that match none of the written keys.
        #[arg(long, default_value_t = 10000)]
        idle_patterns: usize,
    },
    /// Compare-and-set loops on one counter (`if_version`, re-read on 409).
    Cas {
        #[arg(long, default_value_t = 4)]
        conns: usize,
        /// Seconds.
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
    },
    /// No server: N loopback connections, one send each per round — the
    /// kernel's share of a fanout of N (a lower bound for any server).
    Sends {
        /// Connections (the fanout's subscribers).
        #[arg(long, default_value_t = 100)]
        conns: usize,
        /// Rounds (the fanout's writes).
        #[arg(long, default_value_t = 1000)]
        rounds: usize,
        /// Rounds per second.
        #[arg(long, default_value_t = 500.0)]
        rate: f64,
        /// Bytes per message (a DELTA's size; at least 8).
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// CPU for the sending thread (where the server would run).
        #[arg(long)]
        sender_cpu: Option<usize>,
        /// CPU for the reading thread (where the generator would run).
        #[arg(long)]
        reader_cpu: Option<usize>,
    },
    /// K keys written (optionally with a TTL): RSS per key, CPU while idle.
    Keyspace {
        #[arg(long, default_value_t = 100000)]
        keys: usize,
        /// `ttl_ms` on every write (omit: no TTL).
        #[arg(long)]
        ttl_ms: Option<u64>,
        /// Seconds to stay idle after loading (CPU is measured then).
        #[arg(long, default_value_t = 5.0)]
        idle: f64,
    },
}

/// The `writes` load (also under `patterns`).
#[derive(clap::Args, Debug)]
struct WriteLoad {
    #[arg(long, default_value_t = 32)]
    conns: usize,
    #[arg(long, default_value_t = 32)]
    keys: usize,
    /// Seconds.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// CALLs in flight per connection (closed loop).
    #[arg(long, default_value_t = 16)]
    window: usize,
    /// Writes per second in total across the connections (open loop, the
    /// window is not used); omit for closed loop.
    #[arg(long)]
    rate: Option<f64>,
}

impl WriteLoad {
    fn params(&self, timeout: f64) -> writes::Params {
        writes::Params {
            conns: self.conns,
            keys: self.keys,
            duration: Duration::from_secs_f64(self.duration.min(timeout)),
            window: self.window,
            rate: self.rate,
            drain: Duration::from_secs(10),
        }
    }
}

/// Refuses a run that would need more descriptors than the process may
/// open (`n` sockets, plus a margin for the writer, stdio and the like).
fn fits_fd_limit(n: usize, what: &str, fd_limit: u64) -> Result<(), wire::Error> {
    if n.saturating_add(16) > fd_limit as usize {
        return Err(format!("{n} {what} need more than the fd limit {fd_limit}").into());
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(token) = cli.token.clone() {
        wire::use_token(token);
    }
    let fd_limit = procfs::raise_nofile_limit();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sodp-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let timeout = Duration::from_secs_f64(cli.timeout.max(0.001));
    let url = cli.url.clone();
    let pid = cli.server_pid;
    let result = runtime.block_on(async {
        let work = async {
            match cli.scenario {
                Scenario::Fanout {
                    subs,
                    writes,
                    rate,
                    window,
                    stall,
                    writer_url,
                } => {
                    fits_fd_limit(subs, "subscribers", fd_limit)?;
                    let p = fanout::Params {
                        subs,
                        writes,
                        rate,
                        window: window.max(1),
                        stall: Duration::from_secs_f64(stall),
                        timeout,
                        connect_concurrency: cli.connect_concurrency,
                        writer_url,
                    };
                    fanout::run(&url, pid, &p).await
                }
                Scenario::Writes { load } => {
                    writes::run(&url, pid, &load.params(cli.timeout)).await
                }
                Scenario::Conns {
                    count,
                    hold,
                    settle,
                } => {
                    fits_fd_limit(count, "connections", fd_limit)?;
                    let p = conns::Params {
                        count,
                        hold: Duration::from_secs_f64(hold.min(cli.timeout)),
                        settle: Duration::from_secs_f64(settle),
                        liveness_timeout: Duration::from_secs(30),
                        connect_concurrency: cli.connect_concurrency,
                    };
                    conns::run(&url, pid, &p).await
                }
                Scenario::Patterns {
                    load,
                    pattern_subs,
                    idle_patterns,
                } => {
                    let p = load.params(cli.timeout);
                    extensions::patterns(&url, pid, &p, pattern_subs, idle_patterns).await
                }
                Scenario::Cas { conns, duration } => {
                    let duration = Duration::from_secs_f64(duration.min(cli.timeout));
                    extensions::cas(&url, pid, conns, duration).await
                }
                Scenario::Keyspace { keys, ttl_ms, idle } => match pid {
                    None => Err("keyspace needs --server-pid".into()),
                    Some(pid) => {
                        let idle = Duration::from_secs_f64(idle);
                        extensions::keyspace(&url, pid, keys, ttl_ms, idle).await
                    }
                },
                Scenario::Sends {
                    conns,
                    rounds,
                    rate,
                    size,
                    sender_cpu,
                    reader_cpu,
                } => {
                    // Both ends of every pair are this process's.
                    fits_fd_limit(2 * conns, "sockets", fd_limit)?;
                    let p = sends::Params {
                        conns,
                        rounds,
                        rate,
                        size,
                        sender_cpu,
                        reader_cpu,
                    };
                    sends::run(&p)
                }
                Scenario::Roundtrip { count } => {
                    let p = roundtrip::Params {
                        count,
                        timeout: Duration::from_secs(10),
                    };
                    roundtrip::run(&url, pid, &p).await
                }
            }
        };
        // Setup is bounded too: the measured phase plus a generous margin.
        match tokio::time::timeout(timeout + Duration::from_secs(120), work).await {
            Ok(r) => r,
            Err(_) => Err("timed out".into()),
        }
    });
    match result {
        Ok(report) => {
            report.print();
            if report.json.get("ok").and_then(|v| v.as_bool()) == Some(true) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            }
        }
        Err(e) => {
            eprintln!("sodp-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
