//! How much does batching sends through io_uring save against one `send`
//! per message, on loopback TCP, for a fanout of small frames?
//!
//! `conns` loopback connections; the sender (pinned to core 0) sends one
//! 60-byte message to each, `rounds` times, three ways: a non-blocking
//! `send` per message (what sodp-server and the floor do), io_uring with
//! one `io_uring_enter` per round, and the same with registered files (no
//! file lookup per send). A reader thread on core 1 drains the clients, as
//! the load generator would. Prints the sender thread's CPU per send.
//!
//! usage: uring-probe [conns] [rounds]
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;

use io_uring::{opcode, types, IoUring};

fn cpu() -> (f64, f64) {
    let mut r: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut r) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 * 1e6 + tv.tv_usec as f64;
    (t(r.ru_utime), t(r.ru_stime))
}

fn pin(core: usize) {
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn main() {
    pin(0);
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().unwrap()).collect();
    let conns = *args.first().unwrap_or(&1000);
    let rounds = *args.get(1).unwrap_or(&300);
    // A second thread, as in any tokio server: the fd table is shared.
    std::thread::spawn(|| std::thread::park());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut clients = Vec::new();
    let mut servers = Vec::new();
    for _ in 0..conns {
        clients.push(TcpStream::connect(addr).unwrap());
        let (s, _) = listener.accept().unwrap();
        s.set_nodelay(true).unwrap();
        s.set_nonblocking(true).unwrap();
        servers.push(s);
    }
    // A reader on another thread drains the clients (the generator).
    for c in &clients {
        c.set_nonblocking(true).unwrap();
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        let mut clients: Vec<_> = clients.iter().map(|c| c.try_clone().unwrap()).collect();
        std::thread::spawn(move || {
            pin(1);
            let mut buf = [0u8; 65536];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for c in clients.iter_mut() {
                    let _ = c.read(&mut buf);
                }
            }
        })
    };
    let msg = [0x82u8; 60];
    let fds: Vec<i32> = servers.iter().map(|s| s.as_raw_fd()).collect();
    let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;

    let measure = |name: &str, f: &mut dyn FnMut()| {
        let (u0, s0) = cpu();
        let t0 = std::time::Instant::now();
        f();
        let (u1, s1) = cpu();
        let n = (conns * rounds) as f64;
        println!(
            "{name:<28} wall {:>6.2} µs/send  (sender thread CPU: user {:.2}, sys {:.2})",
            t0.elapsed().as_secs_f64() * 1e6 / n,
            (u1 - u0) / n,
            (s1 - s0) / n
        );
    };

    for _ in 0..2 {
        measure("send() per message", &mut || {
            for _ in 0..rounds {
                for &fd in &fds {
                    let r = unsafe { libc::send(fd, msg.as_ptr().cast(), msg.len(), flags) };
                    assert_eq!(r, msg.len() as isize);
                }
            }
        });
        for registered in [false, true] {
            let mut ring = IoUring::new(4096).unwrap();
            if registered {
                ring.submitter().register_files(&fds).unwrap();
            }
            let name = if registered {
                "io_uring, registered files"
            } else {
                "io_uring, one enter/round"
            };
            measure(name, &mut || {
                for _ in 0..rounds {
                    for (i, &fd) in fds.iter().enumerate() {
                        let (ptr, len) = (msg.as_ptr(), msg.len() as u32);
                        let send = if registered {
                            opcode::Send::new(types::Fixed(i as u32), ptr, len)
                        } else {
                            opcode::Send::new(types::Fd(fd), ptr, len)
                        };
                        let e = send.flags(flags).build().user_data(i as u64);
                        unsafe { ring.submission().push(&e).unwrap() };
                    }
                    ring.submit_and_wait(fds.len()).unwrap();
                    for c in ring.completion() {
                        assert_eq!(c.result(), msg.len() as i32);
                    }
                }
            });
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    reader.join().unwrap();
}
