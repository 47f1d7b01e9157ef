//! Large column and index allocations: anonymous mappings advised onto transparent huge pages.
//!
//! Random gathers over a registry-sized array are dominated by page walks on 4 KiB pages; on
//! 2 MiB pages the TLB covers far more and software prefetch pays off. The machine's THP mode is
//! `madvise`, so the advice must be given before the pages are first touched.

use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::Arc;

use arrow_buffer::{ArrowNativeType, Buffer, ScalarBuffer};
use memmap2::{Advice, MmapMut};
use rayon::prelude::*;

use crate::error::{JukiError, Result};

/// A zero-initialised, huge-page-advised array of `len` values of a plain numeric type.
pub struct HugeVec<T> {
    map: MmapMut,
    len: usize,
    _t: PhantomData<T>,
}

/// Plain data for which the all-zero bit pattern is a valid value.
///
/// # Safety
/// Implement only for types made of integers (no references, no niches, no padding that matters).
pub unsafe trait Zeroable: Copy + Send + Sync + 'static {}

// SAFETY: Arrow's native types are integers and floats.
unsafe impl<T: ArrowNativeType> Zeroable for T {}

impl<T: Zeroable> HugeVec<T> {
    /// Map `len` zeroed values (an anonymous mapping is zero-filled by the kernel). A size that
    /// overflows or a mapping the kernel refuses is `ResourceExhausted`, not a panic.
    pub fn zeroed(len: usize) -> Result<Self> {
        let bytes = len
            .checked_mul(std::mem::size_of::<T>())
            .ok_or_else(|| too_large(len, std::mem::size_of::<T>()))?
            .max(1);
        let map = MmapMut::map_anon(bytes).map_err(|e| {
            JukiError::ResourceExhausted(format!("cannot allocate {bytes} bytes: {e}"))
        })?;
        // Advice is a hint: a kernel without THP still gives correct (slower) memory.
        let _ = map.advise(Advice::HugePage);
        Ok(HugeVec {
            map,
            len,
            _t: PhantomData,
        })
    }

    /// The values, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        // SAFETY: the mapping is page-aligned (so aligned for T), at least len * size_of::<T>()
        // bytes long and zero-initialised, and T: Zeroable makes zero a valid T.
        unsafe { std::slice::from_raw_parts_mut(self.map.as_mut_ptr() as *mut T, self.len) }
    }

    /// The values.
    pub fn as_slice(&self) -> &[T] {
        // SAFETY: as for `as_mut_slice`, read-only.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr() as *const T, self.len) }
    }
}

impl<T: ArrowNativeType> HugeVec<T> {
    /// Hand the memory to Arrow without copying.
    pub fn into_buffer(self) -> ScalarBuffer<T> {
        let bytes = self.len * std::mem::size_of::<T>();
        let ptr = NonNull::new(self.map.as_ptr() as *mut u8).expect("mmap never returns null");
        // SAFETY: ptr points at `bytes` initialised bytes owned by `self.map`, which the Arc keeps
        // alive (and unmoved: the mapping's address is fixed) for as long as the Buffer lives.
        let buffer = unsafe { Buffer::from_custom_allocation(ptr, bytes, Arc::new(self.map)) };
        ScalarBuffer::new(buffer, 0, self.len)
    }
}

/// Below one huge page, a mapping per buffer costs more than huge pages save.
const HUGE_THRESHOLD: usize = 2 << 20;

/// Inputs up to this many rows are worked on the calling thread. A rayon fan-out costs thread
/// wake-ups (tens of microseconds each on a busy machine), more than a small input's work, and a
/// server already answers several requests at once on its own threads.
pub const PARALLEL_MIN: usize = 1 << 16;

fn too_large(len: usize, width: usize) -> JukiError {
    JukiError::ResourceExhausted(format!(
        "cannot allocate {len} values of {width} bytes: the size overflows"
    ))
}

/// A buffer of `len` values, zeroed and then filled by `fill`: on huge pages when large, on the
/// heap when small (a single-record query result should not cost an `mmap`). Memory that cannot
/// be had is `ResourceExhausted`.
pub fn filled<T: ArrowNativeType>(
    len: usize,
    fill: impl FnOnce(&mut [T]),
) -> Result<ScalarBuffer<T>> {
    let width = std::mem::size_of::<T>();
    let bytes = len
        .checked_mul(width)
        .ok_or_else(|| too_large(len, width))?;
    if bytes < HUGE_THRESHOLD {
        let mut v = Vec::new();
        v.try_reserve_exact(len).map_err(|e| {
            JukiError::ResourceExhausted(format!("cannot allocate {bytes} bytes: {e}"))
        })?;
        v.resize(len, T::default());
        fill(&mut v);
        return Ok(v.into());
    }
    let mut h: HugeVec<T> = HugeVec::zeroed(len)?;
    fill(h.as_mut_slice());
    Ok(h.into_buffer())
}

/// A buffer of `src.len() * width` values, `work(out, src)` filling each part's `width` outputs
/// per input: on all cores in parts when `src` is large, on the calling thread otherwise.
pub fn filled_from<S: Sync, T: ArrowNativeType>(
    src: &[S],
    width: usize,
    work: impl Fn(&mut [T], &[S]) + Sync,
) -> Result<ScalarBuffer<T>> {
    const PART: usize = 1 << 14;
    let len = src
        .len()
        .checked_mul(width)
        .ok_or_else(|| too_large(src.len(), width))?;
    filled(len, |out: &mut [T]| {
        if src.len() <= PARALLEL_MIN {
            work(out, src);
        } else {
            out.par_chunks_mut(PART * width)
                .zip(src.par_chunks(PART))
                .for_each(|(o, s)| work(o, s));
        }
    })
}

/// Read a whole file into huge-page-advised anonymous memory and return it as an Arrow buffer.
/// An I/O failure is `Io` naming the path; memory that cannot be had, `ResourceExhausted`.
pub fn read_file_huge(path: &std::path::Path) -> Result<Buffer> {
    use std::io::Read;
    let io = |e: std::io::Error| JukiError::Io(format!("{}: {e}", path.display()));
    let mut f = std::fs::File::open(path).map_err(io)?;
    let len = f.metadata().map_err(io)?.len();
    let len = usize::try_from(len)
        .map_err(|_| JukiError::ResourceExhausted(format!("{}: {len} bytes", path.display())))?;
    let mut v: HugeVec<u8> = HugeVec::zeroed(len)?;
    f.read_exact(v.as_mut_slice()).map_err(io)?;
    Ok(v.into_buffer().into_inner())
}

/// Memory-map a whole file read-only and return it as an Arrow buffer (zero-copy).
pub fn map_file(path: &std::path::Path) -> std::io::Result<Buffer> {
    let f = std::fs::File::open(path)?;
    // SAFETY: the snapshot files are written once, renamed into place and never modified in
    // place afterwards; a later save writes a new version directory instead.
    let map = unsafe { memmap2::Mmap::map(&f)? };
    let len = map.len();
    if len == 0 {
        return Ok(Buffer::from_vec(Vec::<u8>::new()));
    }
    let ptr = NonNull::new(map.as_ptr() as *mut u8).expect("mmap never returns null");
    // SAFETY: ptr points at `len` bytes owned by `map`, kept alive by the Arc.
    Ok(unsafe { Buffer::from_custom_allocation(ptr, len, Arc::new(map)) })
}

/// Hint the CPU to fetch the cache line holding `p` (no effect where unsupported).
#[inline(always)]
pub fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetch is a hint; it never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch(p as *const i8, std::arch::x86_64::_MM_HINT_T0);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_vec_round_trips_into_arrow() {
        let mut v: HugeVec<u64> = HugeVec::zeroed(1000).unwrap();
        for (i, x) in v.as_mut_slice().iter_mut().enumerate() {
            *x = i as u64 * 3;
        }
        let b = v.into_buffer();
        assert_eq!(b.len(), 1000);
        assert_eq!(b[999], 2997);
        let empty: HugeVec<u32> = HugeVec::zeroed(0).unwrap();
        assert_eq!(empty.into_buffer().len(), 0);
    }

    #[test]
    fn impossible_sizes_are_resource_exhausted() {
        let err = HugeVec::<u64>::zeroed(usize::MAX / 4)
            .map(|_| ())
            .expect_err("overflow");
        assert!(matches!(err, JukiError::ResourceExhausted(_)), "{err:?}");
        // 2^62 bytes: no kernel maps that much.
        let err = HugeVec::<u8>::zeroed(1 << 62)
            .map(|_| ())
            .expect_err("too large");
        assert!(matches!(err, JukiError::ResourceExhausted(_)), "{err:?}");
        let err = filled::<u64>(usize::MAX / 2, |_| {})
            .map(|_| ())
            .expect_err("overflow");
        assert!(matches!(err, JukiError::ResourceExhausted(_)), "{err:?}");
    }
}
