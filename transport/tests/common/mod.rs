//! Cross-process test plumbing: the test binary re-executes itself with
//! `RC_ROLE=<role>` running only the `child_dispatch` test; parent and
//! child talk through stdin/stdout lines prefixed with `@@ `.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

pub struct Peer {
    pub child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

pub fn spawn(role: &str, env: &[(&str, String)]) -> Peer {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "child_dispatch",
        "--include-ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("RC_ROLE", role)
    .stdin(Stdio::piped())
    .stdout(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn child");
    let stdin = child.stdin.take().unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    Peer {
        child,
        stdin,
        stdout,
    }
}

impl Peer {
    /// Next `@@ ` line (without the prefix); panics on EOF.
    pub fn line(&mut self) -> String {
        loop {
            let mut l = String::new();
            let n = self.stdout.read_line(&mut l).unwrap();
            assert!(n > 0, "child exited early");
            // libtest prints "test child_dispatch ... " without a newline
            // before the first line of ours.
            if let Some(at) = l.find("@@ ") {
                return l[at + 3..].trim_end().to_owned();
            }
        }
    }

    pub fn expect(&mut self, prefix: &str) -> String {
        let l = self.line();
        assert!(l.starts_with(prefix), "expected {prefix:?}, got {l:?}");
        l
    }

    pub fn say(&mut self, s: &str) {
        writeln!(self.stdin, "{s}").unwrap();
        self.stdin.flush().unwrap();
    }

    pub fn finish(mut self) {
        drop(self.stdin);
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut self.stdout, &mut rest);
        let st = self.child.wait().unwrap();
        assert!(st.success(), "child failed: {st}\n{rest}");
    }
}

/// Child side: print a protocol line.
pub fn tell(s: &str) {
    println!("@@ {s}");
    std::io::stdout().flush().unwrap();
}

/// Child side: read one line from the parent.
pub fn hear() -> String {
    let mut l = String::new();
    std::io::stdin().read_line(&mut l).unwrap();
    l.trim_end().to_owned()
}

pub fn env(k: &str) -> String {
    std::env::var(k).unwrap_or_else(|_| panic!("missing {k}"))
}

/// The test pattern: byte `i` of message `seed`.
pub fn pat(seed: u64, i: u64) -> u8 {
    (i.wrapping_mul(31) ^ seed.wrapping_mul(0x9e37_79b9) ^ (i >> 8)) as u8
}

pub fn fill(seed: u64, buf: &mut [u8], base: u64) {
    for (k, b) in buf.iter_mut().enumerate() {
        *b = pat(seed, base + k as u64);
    }
}

pub fn unique(name: &str) -> String {
    format!("rc-test-{}-{name}", std::process::id())
}
