//! Who holds a shared record: a process named by its pid *and* its start
//! time, so that a pid the kernel has since handed to another process no
//! longer names the holder.
//!
//! ## Why a pid is not enough
//!
//! A pid names a process only until the process is reaped; then the kernel
//! may give the number to the next `fork` (pids wrap at
//! `/proc/sys/kernel/pid_max`). A record in shared memory that says "held
//! by pid P", checked with `kill(P, 0)`, then takes the new process for the
//! holder. For the registry lock that was a hang: a process killed inside
//! bind or unbind left its pid in the lock word, and once the pid named a
//! live process again no bind or unbind in the job could ever take the
//! lock. It was also an ABA hazard: a waiter that judged P dead could
//! clear the word after a *new* holder that happened to get pid P had
//! taken the lock.
//!
//! A pidfd (`pidfd_open(2)`) pins one process, but only for a caller that
//! opened it while that process was known to be the holder; a waiter that
//! reads the pid out of shared memory after the holder died would open a
//! pidfd on whichever process has the number now — the same race. So a
//! record names its holder by `(pid, start time)`: the start time is field
//! 22 of `/proc/<pid>/stat` (`starttime`, clock ticks since boot, proc(5)).
//! The kernel never changes it for a process, and a later process with
//! the same pid started later.
//!
//! ## The word
//!
//! [`ProcId::word`] is `(start & 0x7fff_ffff) << 32 | pid`, bit 63 clear
//! (so a descriptor's `used_len` can carry it under its claim bit, see
//! `layout`). 31 bits of ticks: two processes with the same pid alias only
//! if they started a multiple of 2³¹ ticks apart (248 days at the usual
//! 100 Hz). Start 0 means "unknown" (the holder could not read its own
//! `/proc/self/stat`): such a holder is judged by its pid alone, as every
//! holder was before.
//!
//! ## Verdicts
//!
//! A wrong "dead" would break mutual exclusion or hand a descriptor to two
//! senders; a wrong "alive" only delays. So [`ProcId::is_alive`] answers
//! "dead" only when it knows: `/proc/<pid>/stat` shows another start
//! time, or there is no such process (`kill(pid, 0)` fails with `ESRCH`).
//! When `/proc` cannot tell (not mounted, `hidepid`), it falls back to
//! `kill(pid, 0)`. A zombie counts as alive until its parent reaps it:
//! other threads of a process whose main thread exited show the same
//! zombie state and may still be running.
//!
//! The other pids in the registry (a binding's receiver, the announced
//! senders) are still checked by pid alone; a reused pid there delays a
//! reap or an unbind (bounded by `Config::unbind_wait`), it never breaks
//! an exclusion.

/// Low 31 bits of a start time: what a [`ProcId`] keeps.
const START_MASK: u64 = 0x7fff_ffff;

/// A process as `(pid, start time)`; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ProcId {
    pub(super) pid: u32,
    /// Low 31 bits of `starttime` (clock ticks since boot); 0: unknown.
    start: u32,
}

impl ProcId {
    /// This process.
    pub(super) fn me() -> Self {
        let pid = std::process::id();
        Self::of(pid, start_ticks(pid).unwrap_or(0))
    }

    /// The process `pid` that started `start_ticks` clock ticks after boot.
    pub(super) fn of(pid: u32, start_ticks: u64) -> Self {
        Self {
            pid,
            start: (start_ticks & START_MASK) as u32,
        }
    }

    /// `(start << 32) | pid`, bit 63 clear.
    pub(super) fn word(self) -> u64 {
        (u64::from(self.start) << 32) | u64::from(self.pid)
    }

    /// The process a word names (bit 63 is ignored).
    pub(super) fn from_word(w: u64) -> Self {
        Self {
            pid: w as u32,
            start: ((w >> 32) & START_MASK) as u32,
        }
    }

    /// Whether the process may still be alive (module docs, "Verdicts").
    pub(super) fn is_alive(self) -> bool {
        match start_ticks(self.pid) {
            Some(t) => self.start == 0 || (t & START_MASK) as u32 == self.start,
            None => pid_alive(self.pid),
        }
    }
}

/// `starttime` of `pid` (field 22 of `/proc/<pid>/stat`), or `None` when
/// the file cannot be read or parsed.
fn start_ticks(pid: u32) -> Option<u64> {
    if pid == 0 {
        return None;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces
    // and parentheses itself: the fields after it start after the last
    // ')', with field 3 first.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(22 - 3)?.parse().ok()
}

/// Whether `pid` names a live process (or one we may not signal), by
/// `kill(pid, 0)`: the pid-only check.
pub(super) fn pid_alive(pid: u32) -> bool {
    let Ok(p) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if p <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks existence/permission.
    let r = unsafe { libc::kill(p, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_process_is_alive_only_under_its_own_start_time() {
        let me = ProcId::me();
        assert_eq!(me.pid, std::process::id());
        assert_ne!(me.start, 0, "could not read /proc/self/stat");
        assert!(me.is_alive());
        assert_eq!(ProcId::from_word(me.word()), me);
        assert_eq!(me.word() >> 63, 0);
        // Our pid with another start time: a dead process whose pid we got.
        let earlier = ProcId {
            start: me.start.wrapping_sub(1000) & START_MASK as u32,
            ..me
        };
        assert!(!earlier.is_alive());
        // Unknown start: judged by pid alone.
        assert!(ProcId { start: 0, ..me }.is_alive());
    }

    #[test]
    fn a_reaped_child_and_impossible_pids_are_dead() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let id = ProcId::of(pid, start_ticks(pid).unwrap_or(0));
        child.wait().unwrap();
        // Reaped: gone, or its pid already names a process started later.
        assert!(!id.is_alive());
        for pid in [0, u32::MAX, i32::MAX as u32 + 1] {
            assert!(!ProcId::of(pid, 0).is_alive(), "{pid}");
        }
    }
}
