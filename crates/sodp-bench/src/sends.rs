//! `sends`: what the kernel alone costs for a fanout — no server at all.
//!
//! N loopback TCP connections. One thread (pinned to `--sender-cpu`, where
//! a server would run) sends an S-byte message to every connection R times
//! a second, one `send` per connection per round: the least any server
//! must do to deliver one DELTA to N subscribers that each take their own
//! frame. Another thread (pinned to `--reader-cpu`, where the load
//! generator runs) drains the connections through epoll, as the
//! generator's subscribers do.
//!
//! Reported like a fanout, with the sending thread in the server's place:
//! its CPU per send over the send loops (`CLOCK_THREAD_CPUTIME_ID` around
//! each round, not the sleep between; split into user space and system as
//! the whole run's `getrusage(RUSAGE_THREAD)` is)
//! under `server.*_per_delivery`, and the delivery latency from the start
//! of a round to the reader's `recv` of that connection's message (and per
//! round, to the last connection's: `all_delivered_latency`). Neither
//! includes a writer's CALL reaching a server, parsing or encoding, so both
//! are lower bounds for any server's CPU per delivery and delivery latency
//! at the same load on this machine — `bench/compare` runs this beside
//! every open-loop fanout point to show which ratios are reachable at all.

use std::io::{self, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::clock::now_ns;
use crate::procfs::round;
use crate::report::{per_second, Report};
use crate::stats::summarize;
use crate::wire::Error;

/// Parameters of a sends run.
#[derive(Debug, Clone)]
pub struct Params {
    pub conns: usize,
    pub rounds: usize,
    /// Rounds per second.
    pub rate: f64,
    /// Bytes per message (at least the 8-byte timestamp).
    pub size: usize,
    pub sender_cpu: Option<usize>,
    pub reader_cpu: Option<usize>,
}

/// CPU time of the calling thread: (user, system), in nanoseconds.
fn thread_cpu_ns() -> (u64, u64) {
    // SAFETY: getrusage fills the struct it is given; zeroed is a valid
    // `rusage` (plain integers).
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to an `rusage` owned by this frame.
    if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) } != 0 {
        return (0, 0);
    }
    let ns = |tv: libc::timeval| tv.tv_sec as u64 * 1_000_000_000 + tv.tv_usec as u64 * 1_000;
    (ns(ru.ru_utime), ns(ru.ru_stime))
}

/// CPU time of the calling thread in nanoseconds, exact (the scheduler's
/// own count, `CLOCK_THREAD_CPUTIME_ID`) — `getrusage` moves in clock
/// ticks, far coarser than one round's sends.
fn thread_cpu_exact_ns() -> u64 {
    // SAFETY: a zeroed `timespec` is valid; clock_gettime writes it.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a `timespec` owned by this frame.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Pins the calling thread to one CPU (no-op for `None`).
fn pin(cpu: Option<usize>) -> io::Result<()> {
    let Some(cpu) = cpu else { return Ok(()) };
    // SAFETY: `cpu_set_t` is a plain bit set; zeroed is the empty set, and
    // CPU_SET only writes inside it (the index is checked first).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if cpu >= 8 * std::mem::size_of::<libc::cpu_set_t>() {
            return Err(io::Error::other(format!("cpu {cpu} out of range")));
        }
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Connected pairs: (the sending end, the reading end, non-blocking).
fn pairs(n: usize) -> io::Result<Vec<(TcpStream, TcpStream)>> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let reader = TcpStream::connect(addr)?;
        let (sender, _) = listener.accept()?;
        sender.set_nodelay(true)?;
        reader.set_nodelay(true)?;
        reader.set_nonblocking(true)?;
        out.push((sender, reader));
    }
    Ok(out)
}

/// What the reader saw: a latency per message, per round the latency of
/// its last message (when every connection had it), and whether all arrived.
struct Received {
    latencies: Vec<u64>,
    all_delivered: Vec<u64>,
    complete: bool,
}

/// Drains every reading end until `expected` messages per connection have
/// arrived or `deadline` passes.
fn read_all(
    readers: Vec<TcpStream>,
    size: usize,
    expected: usize,
    deadline: Instant,
) -> io::Result<Received> {
    // SAFETY: plain system calls on descriptors owned by `readers`, which
    // outlive the epoll instance (closed at the end of this function).
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        return Err(io::Error::last_os_error());
    }
    let fds: Vec<RawFd> = readers.iter().map(|r| r.as_raw_fd()).collect();
    for (i, fd) in fds.iter().enumerate() {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: i as u64,
        };
        // SAFETY: as above; `ev` is a valid event for the call's duration.
        if unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, *fd, &mut ev) } != 0 {
            let e = io::Error::last_os_error();
            // SAFETY: `ep` is ours and not used after this.
            unsafe { libc::close(ep) };
            return Err(e);
        }
    }
    let mut partial: Vec<Vec<u8>> = vec![Vec::with_capacity(size); fds.len()];
    let mut counts = vec![0usize; fds.len()];
    let mut remaining = fds.len() * expected;
    let mut latencies = Vec::with_capacity(remaining);
    // A connection's k-th message is round k's.
    let mut round_last = vec![0u64; expected];
    let mut buf = vec![0u8; 64 * 1024];
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    while remaining > 0 && Instant::now() < deadline {
        // SAFETY: `events` has room for the 256 events asked for.
        let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), 256, 100) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            // SAFETY: as above.
            unsafe { libc::close(ep) };
            return Err(e);
        }
        for ev in &events[..n as usize] {
            let i = ev.u64 as usize;
            // SAFETY: `buf` is valid for writes of its length.
            let got = unsafe { libc::recv(fds[i], buf.as_mut_ptr().cast(), buf.len(), 0) };
            if got <= 0 {
                continue;
            }
            let now = now_ns();
            let carry = &mut partial[i];
            carry.extend_from_slice(&buf[..got as usize]);
            let whole = carry.len() / size * size;
            for msg in carry[..whole].chunks_exact(size) {
                let mut stamp = [0u8; 8];
                stamp.copy_from_slice(&msg[..8]);
                let latency = now.saturating_sub(u64::from_le_bytes(stamp));
                latencies.push(latency);
                if let Some(last) = round_last.get_mut(counts[i]) {
                    *last = (*last).max(latency);
                }
                counts[i] += 1;
                remaining = remaining.saturating_sub(1);
            }
            carry.drain(..whole);
        }
    }
    // SAFETY: as above.
    unsafe { libc::close(ep) };
    drop(readers);
    let rounds_done = counts.iter().copied().min().unwrap_or(0).min(expected);
    round_last.truncate(rounds_done);
    Ok(Received {
        latencies,
        all_delivered: round_last,
        complete: counts.iter().all(|&c| c == expected),
    })
}

pub fn run(p: &Params) -> Result<Report, Error> {
    if p.conns == 0 || p.rounds == 0 || !(p.rate.is_finite() && p.rate > 0.0) {
        return Err("sends needs --conns, --rounds >= 1 and --rate > 0".into());
    }
    let size = p.size.max(8);
    let (mut senders, readers): (Vec<TcpStream>, Vec<TcpStream>) =
        pairs(p.conns)?.into_iter().unzip();
    let planned = Duration::from_secs_f64(p.rounds as f64 / p.rate);
    let deadline = Instant::now() + planned + Duration::from_secs(10);
    let (rounds, reader_cpu) = (p.rounds, p.reader_cpu);
    let reader = thread::spawn(move || {
        pin(reader_cpu)?;
        read_all(readers, size, rounds, deadline)
    });
    pin(p.sender_cpu)?;
    // Let the reader reach epoll_wait before the first round.
    thread::sleep(Duration::from_millis(100));
    let mut msg = vec![0x5au8; size];
    let mut round_ns = Vec::with_capacity(p.rounds);
    // CPU is summed over the send loops alone (exact clock): the sleep
    // between rounds (a timer wake-up per round) is no part of a delivery,
    // and with one connection it would be most of what is measured. The
    // user/system split of that sum is the whole run's (`getrusage`).
    let mut cpu_ns = 0u64;
    let (user0, sys0) = thread_cpu_ns();
    let t0 = Instant::now();
    let start = now_ns();
    for r in 0..p.rounds {
        let due = t0 + Duration::from_secs_f64(r as f64 / p.rate);
        let now = Instant::now();
        if due > now {
            thread::sleep(due - now);
        }
        let cpu0 = thread_cpu_exact_ns();
        let stamp = now_ns();
        msg[..8].copy_from_slice(&stamp.to_le_bytes());
        for s in &mut senders {
            s.write_all(&msg)?;
        }
        round_ns.push(now_ns() - stamp);
        cpu_ns += thread_cpu_exact_ns().saturating_sub(cpu0);
    }
    let (user1, sys1) = thread_cpu_ns();
    let (run_user, run_sys) = (user1.saturating_sub(user0), sys1.saturating_sub(sys0));
    let user_share = if run_user + run_sys > 0 {
        run_user as f64 / (run_user + run_sys) as f64
    } else {
        0.0
    };
    let elapsed = (now_ns() - start) as f64 / 1e9;
    let received = reader.join().map_err(|_| "the reader thread panicked")??;
    drop(senders);
    let sends = (p.conns * p.rounds) as f64;
    let user = cpu_ns as f64 * user_share / 1e3;
    let sys = cpu_ns as f64 * (1.0 - user_share) / 1e3;
    let delivered = received.latencies.len() as u64;
    let mut latencies = received.latencies;
    let lat = summarize(&mut latencies);
    let rounds_lat = summarize(&mut round_ns);
    let mut all_delivered = received.all_delivered;
    let all = summarize(&mut all_delivered);
    let json = json!({
        "scenario": "sends",
        "conns": p.conns,
        "rounds": p.rounds,
        "rate": p.rate,
        "size": size,
        "elapsed_s": round(elapsed),
        "deliveries": delivered,
        "deliveries_per_s": per_second(delivered, elapsed),
        "ok": received.complete,
        "delivery_latency": lat.to_json(),
        "round_duration": rounds_lat.to_json(),
        "all_delivered_latency": all.to_json(),
        "server": {
            "cpu_us": round(user + sys),
            "cpu_us_per_delivery": round((user + sys) / sends),
            "user_cpu_us_per_delivery": round(user / sends),
            "sys_cpu_us_per_delivery": round(sys / sends),
        },
    });
    let summary = format!(
        "sends: {} connections × {} rounds at {:.0}/s, {} bytes each — {} of {} received\n  \
         sender CPU per send {:.2} µs (user {:.2}, system {:.2}); a round took {}\n  \
         delivery latency {}\n  to every conn    {}",
        p.conns,
        p.rounds,
        p.rate,
        size,
        delivered,
        sends as u64,
        (user + sys) / sends,
        user / sends,
        sys / sends,
        rounds_lat.line(),
        lat.line(),
        all.line(),
    );
    Ok(Report { json, summary })
}
