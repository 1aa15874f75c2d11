//! `sendmsg` of K segments against one `send` of the same bytes copied into
//! one buffer, on loopback TCP.
//!
//! One connection; the sender (pinned to core 0) sends `rounds` messages of
//! `segments` × `size` bytes, alternating the two ways in blocks of 1,000
//! so both see the same machine; a reader thread on core 1 drains the peer,
//! as a client would. Prints the sender thread's CPU per call for each way
//! (copying included for the gathered one).
//!
//! usage: gather-probe [segments] [size] [rounds]
use std::io::{IoSlice, Read};
use std::net::{TcpListener, TcpStream};

fn thread_cpu_ns() -> f64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid out-pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 * 1e9 + t.tv_nsec as f64
}

fn pin(core: usize) {
    // SAFETY: a zeroed cpu_set_t is an empty set; the calls only read it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().unwrap()).collect();
    let segments = *args.first().unwrap_or(&7);
    let size = *args.get(1).unwrap_or(&60);
    let rounds = *args.get(2).unwrap_or(&200_000);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    server.set_nodelay(true).unwrap();
    std::thread::spawn(move || {
        pin(1);
        let mut buf = vec![0u8; 1 << 16];
        while client.read(&mut buf).is_ok_and(|n| n > 0) {}
    });
    pin(0);
    let socket = socket2::SockRef::from(&server);
    let messages: Vec<Vec<u8>> = (0..segments).map(|i| vec![i as u8; size]).collect();
    let slices: Vec<IoSlice<'_>> = messages.iter().map(|m| IoSlice::new(m)).collect();
    let mut gathered = Vec::with_capacity(segments * size);
    let (mut vectored_ns, mut gathered_ns) = (0.0, 0.0);
    for block in 0..rounds / 1000 {
        let t0 = thread_cpu_ns();
        for _ in 0..1000 {
            if block % 2 == 0 {
                socket.send_vectored(&slices).unwrap();
            } else {
                gathered.clear();
                for m in &messages {
                    gathered.extend_from_slice(m);
                }
                socket.send(&gathered).unwrap();
            }
        }
        let spent = thread_cpu_ns() - t0;
        if block % 2 == 0 {
            vectored_ns += spent;
        } else {
            gathered_ns += spent;
        }
    }
    let per = |ns: f64| ns / (rounds / 2) as f64;
    println!(
        "{segments} segments of {size} B: sendmsg {:.0} ns per call, gathered send {:.0} ns (ratio {:.3})",
        per(vectored_ns),
        per(gathered_ns),
        gathered_ns / vectored_ns
    );
}
