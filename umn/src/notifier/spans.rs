//! The VMA spans registered with the process's uffd (the hub's, shared by
//! every `Uffd` notifier: `hub.rs`).
//!
//! userfaultfd registers whole VMAs, not byte ranges, and
//! `UFFDIO_REGISTER` costs a system call and a page-table walk, so
//! `Notifier::register` (through `Hub::register`) registers each VMA under
//! a new registration once,
//! remembers it here as a *span*, and later registrations inside a known
//! span cost no system call.
//!
//! A span is the VMA as it was when registered. Spans are disjoint: a new
//! span first carves out whatever it overlaps. The memory under a span can
//! change behind our back, so an UNMAP or REMAP event (and the hooks'
//! events, which stand for changes uffd does not report) carves the
//! affected part out: the next `register` there finds no span and issues
//! `UFFDIO_REGISTER` again for whatever is mapped then. REMOVE (madvise
//! DONTNEED) leaves the VMA in place and carves nothing. On ring overflow
//! the notifier forgets every span (it no longer knows what changed); the
//! spans are shared, so that costs every notifier a `UFFDIO_REGISTER` per
//! VMA again, never a missed event.
//!
//! Each span counts the live cookies overlapping it. Idle spans (0
//! cookies) stay registered all the same: `UFFDIO_UNREGISTER` walks page
//! tables (25–32 ms per GiB measured) and the memory is usually about to
//! be unmapped anyway. So the count is bookkeeping only: nothing decides
//! on it.
//!
//! The spans live in an [`IntervalIndex`] with unique starts (they are
//! disjoint). Its scan bound is the longest VMA ever registered (until the
//! spans are all gone), so with a large heap VMA registered, a query scans
//! every span starting within that length below it. A map specialised for
//! disjoint spans could walk back from the query's end and stop at the
//! first span ending before the query; the shared index scans the window
//! instead, which costs a few spans more per query at most, as a process
//! has one span per VMA it registered memory in.

use crate::interval::IntervalIndex;
use crate::range::AddrRange;

/// VMA spans registered with the process's uffd, each with its count of
/// live cookies (of every notifier) overlapping it.
#[derive(Debug, Default)]
pub(super) struct Spans {
    map: IntervalIndex<u32>,
}

impl Spans {
    /// The end of the span containing `addr`, if one does.
    pub(super) fn covering(&self, addr: u64) -> Option<u64> {
        let byte = AddrRange::from_start_len(addr, 1).ok()?;
        self.map
            .covering(byte)
            .next()
            .map(|(span, (), _)| span.end())
    }

    /// Drop the part of every span that lies in `r`, keeping the pieces
    /// before and after it (with their cookie counts).
    pub(super) fn carve(&mut self, r: AddrRange) {
        let hit: Vec<(AddrRange, u32)> = self
            .map
            .overlapping(r)
            .map(|(span, (), &refs)| (span, refs))
            .collect();
        for (span, refs) in hit {
            self.map.remove(span.start(), ());
            for piece in [(span.start(), r.start()), (r.end(), span.end())] {
                if let Some(piece) = AddrRange::new(piece.0, piece.1)
                    .ok()
                    .filter(|p| !p.is_empty())
                {
                    self.map.insert(piece, (), refs);
                }
            }
        }
    }

    /// Record a freshly registered VMA, replacing what it overlaps.
    pub(super) fn insert(&mut self, vma: AddrRange) {
        self.carve(vma);
        self.map.insert(vma, (), 0);
    }

    /// Count a cookie registered (`up`) or unregistered over `r` in every
    /// span it overlaps.
    pub(super) fn adjust(&mut self, r: AddrRange, up: bool) {
        let hit: Vec<u64> = self
            .map
            .overlapping(r)
            .map(|(span, ..)| span.start())
            .collect();
        for start in hit {
            if let Some((_, refs)) = self.map.get_mut(start, ()) {
                *refs = if up {
                    refs.saturating_add(1)
                } else {
                    refs.saturating_sub(1)
                };
            }
        }
    }

    /// Forget every span.
    pub(super) fn clear(&mut self) {
        *self = Self::default();
    }

    /// How many spans.
    pub(super) fn len(&self) -> usize {
        self.map.len()
    }
}
