//! The one address-range type: half-open `[start, end)`.
//!
//! A real MPI stack once passed `addr + len - 1` as an *exclusive* end to
//! the ummunotify register ioctl. Every range in this project is an
//! [`AddrRange`], built only through checked constructors, and converted to
//! another convention (an inclusive last byte) in exactly one place,
//! [`AddrRange::last`].

use std::sync::OnceLock;

/// Why an [`AddrRange`] could not be built or transformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RangeError {
    /// `start + len` (or an alignment step) does not fit in 64 bits.
    #[error("address range overflows: start {start:#x}, length {len} bytes")]
    Overflow {
        /// First byte of the requested range.
        start: u64,
        /// Requested length in bytes.
        len: u64,
    },
    /// `end` is below `start`.
    #[error("address range is inverted: start {start:#x} > end {end:#x}")]
    Inverted {
        /// Requested start.
        start: u64,
        /// Requested (exclusive) end.
        end: u64,
    },
    /// The range is empty where a non-empty one is required.
    #[error("address range is empty (start {start:#x})")]
    Empty {
        /// Requested start.
        start: u64,
    },
    /// The range starts at address 0 (a NULL pointer).
    #[error("address range starts at NULL")]
    Null,
}

/// A half-open virtual address range `[start, end)`, in bytes.
///
/// Invariant: `start <= end`. Empty ranges (`start == end`) can exist but
/// never overlap anything. There is no operator overloading: every
/// transformation is a named, checked method.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AddrRange {
    start: u64,
    end: u64,
}

impl std::fmt::Debug for AddrRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{:#x}, {:#x})", self.start, self.end)
    }
}

impl std::fmt::Display for AddrRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

impl AddrRange {
    /// `[start, end)`.
    ///
    /// # Errors
    /// [`RangeError::Inverted`] when `end < start`.
    pub const fn new(start: u64, end: u64) -> Result<Self, RangeError> {
        if end < start {
            return Err(RangeError::Inverted { start, end });
        }
        Ok(Self { start, end })
    }

    /// `[start, start + len)`.
    ///
    /// # Errors
    /// [`RangeError::Overflow`] when `start + len` does not fit in 64 bits.
    pub const fn from_start_len(start: u64, len: u64) -> Result<Self, RangeError> {
        match start.checked_add(len) {
            Some(end) => Ok(Self { start, end }),
            None => Err(RangeError::Overflow { start, len }),
        }
    }

    /// The range of a buffer given as a pointer and a length in bytes,
    /// as the C API and the MPI layer receive it.
    ///
    /// # Errors
    /// [`RangeError::Null`] for a NULL pointer, [`RangeError::Empty`] for a
    /// zero length, [`RangeError::Overflow`] when the buffer would wrap.
    pub fn from_buffer(ptr: *const u8, len: usize) -> Result<Self, RangeError> {
        let start = ptr as u64;
        if start == 0 {
            return Err(RangeError::Null);
        }
        if len == 0 {
            return Err(RangeError::Empty { start });
        }
        Self::from_start_len(start, len as u64)
    }

    /// First byte of the range.
    pub const fn start(&self) -> u64 {
        self.start
    }

    /// One past the last byte of the range (exclusive end).
    pub const fn end(&self) -> u64 {
        self.end
    }

    /// The last byte of the range (inclusive), or `None` when empty.
    ///
    /// This is the *only* place the project converts to an inclusive
    /// convention (as used by e.g. interval trees in the kernel's
    /// `mmu_interval_notifier`).
    pub const fn last(&self) -> Option<u64> {
        if self.start == self.end {
            None
        } else {
            Some(self.end - 1)
        }
    }

    /// Length in bytes.
    pub const fn len(&self) -> u64 {
        self.end - self.start
    }

    /// `true` when the range holds no byte.
    pub const fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// `true` when `other` lies entirely within `self`. An empty `other`
    /// is contained when its start lies in `[start, end]`.
    pub const fn contains(&self, other: &AddrRange) -> bool {
        self.start <= other.start && other.end <= self.end
    }

    /// `true` when the address lies in `[start, end)`.
    pub const fn contains_addr(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }

    /// `true` when the two ranges share at least one byte.
    pub const fn overlaps(&self, other: &AddrRange) -> bool {
        self.start < other.end && other.start < self.end && !self.is_empty() && !other.is_empty()
    }

    /// `true` when the ranges overlap or are adjacent (`a.end == b.start`),
    /// i.e. when their union is one range.
    pub const fn touches(&self, other: &AddrRange) -> bool {
        self.start <= other.end && other.start <= self.end
    }

    /// The bytes in both ranges, or `None` when they do not overlap.
    pub fn intersection(&self, other: &AddrRange) -> Option<AddrRange> {
        let start = self.start.max(other.start);
        let end = self.end.min(other.end);
        (start < end).then_some(AddrRange { start, end })
    }

    /// The smallest range covering both.
    pub fn hull(&self, other: &AddrRange) -> AddrRange {
        AddrRange {
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }

    /// Widen the range outward to multiples of `align` (a power of two):
    /// start rounded down, end rounded up.
    ///
    /// # Errors
    /// [`RangeError::Overflow`] when rounding the end up passes 2⁶⁴.
    ///
    /// `align` must be a power of two (checked in debug builds; a
    /// programming error, not input).
    #[inline]
    pub fn align_out(&self, align: u64) -> Result<AddrRange, RangeError> {
        debug_assert!(align.is_power_of_two(), "alignment must be a power of two");
        let mask = align - 1;
        let start = self.start & !mask;
        let end = match self.end.checked_add(mask) {
            Some(e) => e & !mask,
            None => {
                return Err(RangeError::Overflow {
                    start: self.start,
                    len: self.len(),
                });
            }
        };
        Ok(AddrRange { start, end })
    }

    /// Widen to page boundaries with the system page size ([`page_size`]).
    ///
    /// # Errors
    /// As [`AddrRange::align_out`].
    pub fn page_align(&self) -> Result<AddrRange, RangeError> {
        self.align_out(page_size())
    }

    /// `true` when both ends are multiples of `align` (a power of two).
    pub const fn is_aligned(&self, align: u64) -> bool {
        (self.start | self.end) & (align - 1) == 0
    }
}

/// The system page size in bytes, from `sysconf(_SC_PAGESIZE)`, read once.
pub fn page_size() -> u64 {
    static PAGE: OnceLock<u64> = OnceLock::new();
    *PAGE.get_or_init(|| {
        // SAFETY: sysconf has no memory-safety preconditions.
        let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if v > 0 && (v as u64).is_power_of_two() {
            v as u64
        } else {
            4096
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn constructors_check_overflow_and_inversion() {
        assert_eq!(
            AddrRange::from_start_len(u64::MAX, 2),
            Err(RangeError::Overflow {
                start: u64::MAX,
                len: 2
            })
        );
        assert_eq!(
            AddrRange::new(10, 5),
            Err(RangeError::Inverted { start: 10, end: 5 })
        );
        assert_eq!(
            AddrRange::from_buffer(std::ptr::null(), 8),
            Err(RangeError::Null)
        );
        assert_eq!(
            AddrRange::from_buffer(0x1000 as *const u8, 0),
            Err(RangeError::Empty { start: 0x1000 })
        );
        let r = AddrRange::from_start_len(0x1000, 0x10).unwrap();
        assert_eq!(
            (r.start(), r.end(), r.len(), r.last()),
            (0x1000, 0x1010, 0x10, Some(0x100f))
        );
        assert_eq!(AddrRange::new(7, 7).unwrap().last(), None);
    }

    #[test]
    fn align_out_rounds_outward_and_detects_overflow() {
        let r = AddrRange::new(0x1001, 0x2001)
            .unwrap()
            .align_out(0x1000)
            .unwrap();
        assert_eq!(r, AddrRange::new(0x1000, 0x3000).unwrap());
        assert!(
            AddrRange::new(0, u64::MAX)
                .unwrap()
                .align_out(0x1000)
                .is_err()
        );
        assert!(page_size().is_power_of_two());
    }

    proptest! {
        #[test]
        fn predicates_match_byte_sets(a in 0u64..64, al in 0u64..16, b in 0u64..64, bl in 0u64..16) {
            let x = AddrRange::from_start_len(a, al).unwrap();
            let y = AddrRange::from_start_len(b, bl).unwrap();
            let xs: std::collections::BTreeSet<u64> = (x.start()..x.end()).collect();
            let ys: std::collections::BTreeSet<u64> = (y.start()..y.end()).collect();
            prop_assert_eq!(x.overlaps(&y), !xs.is_disjoint(&ys));
            let inter: Vec<u64> = xs.intersection(&ys).copied().collect();
            let got: Vec<u64> = x.intersection(&y).map(|r| (r.start()..r.end()).collect()).unwrap_or_default();
            prop_assert_eq!(inter, got);
            if !y.is_empty() {
                prop_assert_eq!(x.contains(&y), ys.is_subset(&xs));
            }
            let aligned = x.align_out(8).unwrap();
            prop_assert!(aligned.contains(&x) && aligned.is_aligned(8));
            prop_assert!(aligned.len() < x.len() + 16);
        }
    }
}
