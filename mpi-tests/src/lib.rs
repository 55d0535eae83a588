//! # mpi-tests — MPI programs and runners
//!
//! `c/keyed_dma.c` is an MPI program (C, Open MPI) whose ranks exchange
//! messages of 1 B to 64 MiB through the transport's keyed DMA, checked
//! byte for byte. MPI is used only to bootstrap (rank 0 creates the DMA
//! registry and a "place" file whose `(dev, inode, offset)` names each
//! rank's receive key, broadcasts the job name) and to reduce the result;
//! every payload byte moves through `regcache_transport::dma`.
//!
//! The C program calls the small test-only shim below (`rt_*`), built into
//! `libmpi_tests.a`. It is deliberately not the project's C API (which is
//! `ffi/`, a later issue): one process-global binding, integer status
//! codes, no handles. Every export catches panics.
//!
//! Run: `mpi-tests/run-keyed-dma.sh` (builds the shim, compiles with
//! `mpicc`, runs `mpirun -np 2` with `OMPI_MCA_btl=self,vader`).

use regcache_transport::dma::{Config, DmaBuffer, Receiver, Registry};
use regcache_transport::{DmaKey, Segment};
use std::ffi::{CStr, c_char, c_int};
use std::sync::Mutex;
use umn::AddrRange;

struct State {
    reg: Registry,
    place: Segment,
    place_name: String,
    reg_name: String,
    rx: Option<Receiver>,
    last: Option<u32>,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

fn guarded(f: impl FnOnce() -> Result<i64, String>) -> i64 {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            eprintln!("regcache mpi shim: {e}");
            -1
        }
        Err(_) => {
            eprintln!("regcache mpi shim: panic");
            -2
        }
    }
}

fn with_state<T>(f: impl FnOnce(&mut State) -> Result<T, String>) -> Result<T, String> {
    let mut g = STATE.lock().map_err(|_| "state poisoned".to_string())?;
    let s = g.as_mut().ok_or("rt_init not called")?;
    f(s)
}

fn key_of(s: &State, rank: c_int) -> Result<DmaKey, String> {
    let off = u64::try_from(rank).map_err(|_| "negative rank")? * 64;
    DmaKey::from_fd(s.place.raw_fd(), off).map_err(|e| e.to_string())
}

/// Create (`create != 0`, one rank) or open the job's registry
/// `<job>-dma` and place file `<job>-place`. Returns 0 or a negative code.
///
/// # Safety
/// `job` must be a valid NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rt_init(job: *const c_char, create: c_int) -> i64 {
    guarded(|| {
        if job.is_null() {
            return Err("NULL job".into());
        }
        // SAFETY: the caller passes a valid C string.
        let job = unsafe { CStr::from_ptr(job) }
            .to_str()
            .map_err(|e| e.to_string())?;
        let reg_name = format!("{job}-dma");
        let place_name = format!("{job}-place");
        let cfg = Config::default();
        let (reg, place) = if create != 0 {
            (
                Registry::create_with(&reg_name, cfg).map_err(|e| e.to_string())?,
                Segment::create(&place_name, 1 << 16).map_err(|e| e.to_string())?,
            )
        } else {
            (
                Registry::open_with(&reg_name, cfg).map_err(|e| e.to_string())?,
                Segment::open(&place_name).map_err(|e| e.to_string())?,
            )
        };
        *STATE.lock().map_err(|_| "poisoned")? = Some(State {
            reg,
            place,
            place_name,
            reg_name,
            rx: None,
            last: None,
        });
        Ok(0)
    })
}

/// Bind `[buf, buf+len)` as this rank's single receive descriptor, split
/// into `nsections` sections of unequal length.
///
/// # Safety
/// `buf` must be valid for writes of `len` bytes until `rt_fini`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rt_bind(rank: c_int, buf: *mut u8, len: usize, nsections: c_int) -> i64 {
    guarded(|| {
        with_state(|s| {
            let whole = AddrRange::from_buffer(buf, len).map_err(|e| e.to_string())?;
            let n = usize::try_from(nsections)
                .map_err(|_| "bad nsections")?
                .clamp(1, 8);
            let n = n.min(len);
            // Unequal cuts: section k ends at len*(k+1)/n + k (clamped).
            let mut secs = Vec::with_capacity(n);
            let mut at = whole.start();
            for k in 0..n {
                let end = if k + 1 == n {
                    whole.end()
                } else {
                    (whole.start() + (len as u64) * (k as u64 + 1) / n as u64 + k as u64)
                        .clamp(at + 1, whole.end() - (n - k - 1) as u64)
                };
                secs.push(AddrRange::new(at, end).map_err(|e| e.to_string())?);
                at = end;
            }
            let key = key_of(s, rank)?;
            // SAFETY: forwarded from this function's contract.
            let rx = unsafe { s.reg.bind(key, &[whole], &[DmaBuffer::new(secs)]) }
                .map_err(|e| e.to_string())?;
            s.rx = Some(rx);
            Ok(0)
        })
    })
}

/// `rt_send` result: the receiver had no free descriptor (try again).
pub const RT_BUSY: i64 = -3;

/// Send `[buf, buf+len)` to `dest` rank's key, as `npieces` source pieces.
/// Returns the bytes copied, [`RT_BUSY`], or another negative code.
///
/// # Safety
/// `buf` must be valid for reads of `len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rt_send(dest: c_int, buf: *const u8, len: usize, npieces: c_int) -> i64 {
    guarded(|| {
        let (reg, key) = with_state(|s| Ok((s.reg.clone(), key_of(s, dest)?)))?;
        if buf.is_null() {
            return Err("NULL buffer".into());
        }
        // SAFETY: the caller guarantees `len` readable bytes.
        let data = unsafe { std::slice::from_raw_parts(buf, len) };
        let n = usize::try_from(npieces)
            .map_err(|_| "bad npieces")?
            .clamp(1, 64)
            .min(len.max(1));
        let mut pieces = Vec::with_capacity(n);
        let mut at = 0;
        for k in 0..n {
            let end = if k + 1 == n {
                len
            } else {
                (len * (k + 1) / n).max(at)
            };
            pieces.push(&data[at..end]);
            at = end;
        }
        match reg.send(key, &pieces) {
            Ok(r) => Ok(i64::try_from(r.copied).unwrap_or(i64::MAX)),
            Err(regcache_transport::Error::NoFreeDescriptor(_)) => Ok(RT_BUSY),
            Err(e) => Err(e.to_string()),
        }
    })
}

/// Wait up to `timeout_ms` for a delivery; returns its length in bytes
/// (the data is in the bound buffer), 0 on timeout, negative on error.
/// Call `rt_restock` once the data has been consumed.
#[unsafe(no_mangle)]
pub extern "C" fn rt_recv(timeout_ms: i64) -> i64 {
    guarded(|| {
        with_state(|s| {
            let rx = s.rx.as_mut().ok_or("rt_bind not called")?;
            let t = std::time::Duration::from_millis(u64::try_from(timeout_ms).unwrap_or(0));
            match rx.recv(Some(t)).map_err(|e| e.to_string())? {
                Some(d) => {
                    s.last = Some(d.index);
                    Ok(i64::try_from(d.len).unwrap_or(i64::MAX))
                }
                None => Ok(0),
            }
        })
    })
}

/// Hand the last delivered descriptor back to senders.
#[unsafe(no_mangle)]
pub extern "C" fn rt_restock() -> i64 {
    guarded(|| {
        with_state(|s| {
            let i = s.last.take().ok_or("nothing to restock")?;
            s.rx.as_mut()
                .ok_or("not bound")?
                .restock(i)
                .map_err(|e| e.to_string())?;
            Ok(0)
        })
    })
}

/// Copy-path counters: `out[0]` CMA sends, `out[1]` bounce sends,
/// `out[2]` CMA refusals, `out[3]` sends the receiver helped copy,
/// `out[4]` chunks this rank copied for senders as a receiver.
///
/// # Safety
/// `out` must be valid for writes of 5 `u64`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rt_stats(out: *mut u64) -> i64 {
    guarded(|| {
        if out.is_null() {
            return Err("NULL out".into());
        }
        let st = with_state(|s| Ok(s.reg.stats()))?;
        // SAFETY: the caller guarantees five writable u64.
        unsafe {
            *out = st.cma_sends;
            *out.add(1) = st.bounce_sends;
            *out.add(2) = st.cma_refusals;
            *out.add(3) = st.assisted_sends;
            *out.add(4) = st.assist_chunks;
        }
        Ok(0)
    })
}

/// Unbind and drop everything; `unlink != 0` also removes the files.
#[unsafe(no_mangle)]
pub extern "C" fn rt_fini(unlink: c_int) -> i64 {
    guarded(|| {
        let s = STATE.lock().map_err(|_| "poisoned")?.take();
        if let Some(mut s) = s {
            if let Some(rx) = s.rx.take() {
                rx.unbind().map_err(|e| e.to_string())?;
            }
            if unlink != 0 {
                let _ = Registry::unlink(&s.reg_name);
                let _ = Segment::unlink(&s.place_name);
            }
        }
        Ok(0)
    })
}
