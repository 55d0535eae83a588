//! What one `munmap` of 64 KiB costs under each invalidation design, side
//! by side in one run (docs/ARCHITECTURE.md, "Synchronous invalidation
//! without the module"). Not a test and not in CI:
//!
//! ```text
//! cargo run --release -p umn --example munmap_cost [ROUNDS] [ITERS]
//! ```
//!
//! Each mode runs in a child process of its own (patching libc and a
//! seccomp filter are both irreversible), the modes interleaved round by
//! round so that the load of a shared machine falls on all alike; the
//! child maps 64 KiB, touches every page, registers it (untimed) and times
//! the `munmap` alone; it prints the median. Modes:
//!
//! - `none`: no source;
//! - `uffd`: `Source::Uffd`, the range registered (the VMA is uffd-WP
//!   registered, so the munmap waits for the monitor to read its event);
//! - `patch`: `Source::Patch`, the range registered;
//! - `seccomp`: a *prototype* of the other design: a `SECCOMP_RET_USER_NOTIF`
//!   filter on `munmap`; a monitor thread receives the notification, bumps
//!   a counter (the invalidation stand-in), performs the munmap itself with
//!   a magic value in the unused sixth argument register (which the filter
//!   lets through) and answers with its result.

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use umn::{AddrRange, Cookie, Event, Notifier, Source};

const LEN: usize = 64 << 10;
const MODES: [&str; 4] = ["none", "uffd", "patch", "seccomp"];
const MAGIC: u64 = 0x554d_4e21; // "UMN!"

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--mode") {
        let iters = args[3].parse().unwrap_or(2000);
        println!("{}", child(&args[2], iters));
        return;
    }
    let rounds: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(5);
    let iters: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(2000);
    let me = std::env::current_exe().unwrap();
    let mut per: Vec<Vec<f64>> = vec![Vec::new(); MODES.len()];
    for _ in 0..rounds {
        for (i, m) in MODES.iter().enumerate() {
            let out = Command::new(&me)
                .args(["--mode", m, &iters.to_string()])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            match text.trim().parse::<f64>() {
                Ok(ns) => per[i].push(ns),
                Err(_) => eprintln!(
                    "{m}: no result ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                ),
            }
        }
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let base = med(&mut per[0].clone());
    println!(
        "munmap of 64 KiB (touched), median of per-process medians, {rounds} rounds x {iters}:"
    );
    for (i, m) in MODES.iter().enumerate() {
        let v = med(&mut per[i]);
        println!("  {m:8} {v:9.0} ns  {:5.2}x none", v / base);
    }
}

fn map() -> *mut libc::c_void {
    // SAFETY: a fresh private anonymous mapping.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            LEN,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    // SAFETY: our mapping, LEN bytes.
    unsafe { std::ptr::write_bytes(p.cast::<u8>(), 1, LEN) };
    p
}

fn child(mode: &str, iters: usize) -> f64 {
    let n = match mode {
        "uffd" => Some(Notifier::open(Source::Uffd).unwrap()),
        "patch" => Some(Notifier::open(Source::Patch).unwrap()),
        "seccomp" => {
            seccomp::install();
            None
        }
        _ => None,
    };
    let mut ev = [Event::default(); 64];
    let mut t = Vec::with_capacity(iters);
    for i in 0..iters + iters / 10 {
        let p = map();
        if let Some(n) = &n {
            n.register(AddrRange::from_buffer(p.cast(), LEN).unwrap(), Cookie(1))
                .unwrap();
        }
        let s = Instant::now();
        // SAFETY: our mapping.
        let rc = unsafe { libc::munmap(p, LEN) };
        let d = s.elapsed().as_nanos() as f64;
        assert_eq!(rc, 0);
        if let Some(n) = &n {
            while n.read(&mut ev).unwrap() == ev.len() {}
            let _ = n.unregister(Cookie(1));
        }
        if i >= iters / 10 {
            t.push(d);
        }
    }
    if mode == "seccomp" {
        // Every timed munmap went through the monitor.
        assert!(seccomp::INVALIDATIONS.load(Ordering::SeqCst) as usize >= iters);
    }
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

/// The seccomp user-notification prototype (design (b)).
mod seccomp {
    use super::*;

    const SECCOMP_SET_MODE_FILTER: libc::c_long = 1;
    const SECCOMP_FILTER_FLAG_NEW_LISTENER: libc::c_long = 1 << 3;
    const SECCOMP_RET_USER_NOTIF: u32 = 0x7fc0_0000;
    const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
    /// `_IOWR('!', 0, struct seccomp_notif)` (80 bytes).
    const NOTIF_RECV: libc::c_ulong = 0xc050_2100;
    /// `_IOWR('!', 1, struct seccomp_notif_resp)` (24 bytes).
    const NOTIF_SEND: libc::c_ulong = 0xc018_2101;

    #[repr(C)]
    #[derive(Default)]
    struct Notif {
        id: u64,
        pid: u32,
        flags: u32,
        nr: i32,
        arch: u32,
        ip: u64,
        args: [u64; 6],
    }

    #[repr(C)]
    struct Resp {
        id: u64,
        val: i64,
        error: i32,
        flags: u32,
    }

    pub(crate) static INVALIDATIONS: AtomicU64 = AtomicU64::new(0);

    fn stmt(code: u16, k: u32) -> libc::sock_filter {
        libc::sock_filter {
            code,
            jt: 0,
            jf: 0,
            k,
        }
    }

    fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
        libc::sock_filter { code, jt, jf, k }
    }

    /// The filter on this thread (and the threads it starts later); the
    /// listener descriptor.
    fn filter() -> i32 {
        let ld = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
        let jeq = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
        let ret = (libc::BPF_RET | libc::BPF_K) as u16;
        let prog = [
            stmt(ld, 0),                              // nr
            jump(jeq, libc::SYS_munmap as u32, 0, 3), // not munmap: allow
            stmt(ld, 16 + 5 * 8),                     // args[5], low half
            jump(jeq, MAGIC as u32, 1, 0),            // the monitor's own: allow
            stmt(ret, SECCOMP_RET_USER_NOTIF),
            stmt(ret, SECCOMP_RET_ALLOW),
        ];
        let fprog = libc::sock_fprog {
            len: prog.len() as u16,
            filter: prog.as_ptr().cast_mut(),
        };
        // SAFETY: prctl and seccomp with valid arguments; the filter
        // program outlives the call (the kernel copies it).
        let fd = unsafe {
            assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
            libc::syscall(
                libc::SYS_seccomp,
                SECCOMP_SET_MODE_FILTER,
                SECCOMP_FILTER_FLAG_NEW_LISTENER,
                &fprog as *const libc::sock_fprog,
            )
        };
        assert!(fd >= 0, "seccomp: {}", std::io::Error::last_os_error());
        fd as i32
    }

    /// Filter munmap whose sixth argument is not MAGIC to the listener.
    ///
    /// The monitor thread is started *before* the filter and the filter is
    /// installed without TSYNC, so the monitor is not filtered at all: a
    /// first version that started it after the filter hung at once — the
    /// new thread's first `malloc` creates an arena, and glibc's
    /// `new_heap` trims its aligned reservation with an internal `munmap`
    /// that carries no magic, so the monitor waited for itself. A real
    /// source needs TSYNC (threads that exist already), so its monitor is
    /// filtered too and must never reach libc's `munmap` indirectly.
    pub(crate) fn install() {
        let (tx, rx) = std::sync::mpsc::channel::<i32>();
        std::thread::spawn(move || {
            let fd = rx.recv().unwrap();
            loop {
                let mut n = Notif::default();
                // SAFETY: NOTIF_RECV fills a zeroed struct seccomp_notif.
                if unsafe { libc::ioctl(fd, NOTIF_RECV, &mut n as *mut Notif) } != 0 {
                    continue;
                }
                INVALIDATIONS.fetch_add(1, Ordering::SeqCst);
                // SAFETY: the target's munmap, performed in the same
                // address space, marked as ours.
                let r = unsafe {
                    libc::syscall(libc::SYS_munmap, n.args[0], n.args[1], 0, 0, 0, MAGIC)
                };
                let error = if r < 0 {
                    // SAFETY: this thread's errno.
                    -unsafe { *libc::__errno_location() }
                } else {
                    0
                };
                let mut resp = Resp {
                    id: n.id,
                    val: if r < 0 { 0 } else { r },
                    error,
                    flags: 0,
                };
                // SAFETY: NOTIF_SEND reads a struct seccomp_notif_resp.
                unsafe { libc::ioctl(fd, NOTIF_SEND, &mut resp as *mut Resp) };
            }
        });
        // Let the monitor finish starting (its arena, its TLS) first.
        std::thread::sleep(std::time::Duration::from_millis(20));
        tx.send(filter()).unwrap();
    }
}
