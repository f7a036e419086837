//! The process's allocator: a bump arena in front of the system allocator.
//!
//! One exec is one short request that allocates a few hundred small blocks and exits. musl's
//! malloc puts each size class in pages of its own and maps and unmaps them as it goes, so those
//! blocks cost a dozen `mmap`/`munmap` calls and as many page faults; from an arena they fill a
//! few consecutive pages. Measured on the request path: 0.03–0.05 ms less per exec, 8–12 %
//! (docs/benchmarks.md). mimalloc was measured too: its start-up alone costs more than a whole
//! request. Freed blocks are only taken back when they are the last one handed out, so long
//! runs (the kube client, `podcidr status` over a big store) spill over to the system
//! allocator once the arena is used up, and behave as they would without it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// `N` bytes handed out in order, then the system allocator.
#[repr(C, align(4096))]
pub struct Arena<const N: usize> {
    bytes: UnsafeCell<[u8; N]>,
    /// Offset of the first free byte.
    top: AtomicUsize,
}

// SAFETY: `top` is only moved with compare-exchange, so each byte range is handed out once.
unsafe impl<const N: usize> Sync for Arena<N> {}

impl<const N: usize> Default for Arena<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Arena<N> {
    pub const fn new() -> Self {
        Arena { bytes: UnsafeCell::new([0; N]), top: AtomicUsize::new(0) }
    }

    fn base(&self) -> usize {
        self.bytes.get() as usize
    }

    fn owns(&self, ptr: *mut u8) -> bool {
        (self.base()..self.base() + N).contains(&(ptr as usize))
    }

    /// Moves `top` from `from` to `to` if nobody moved it meanwhile.
    fn bump(&self, from: usize, to: usize) -> bool {
        self.top.compare_exchange(from, to, Ordering::AcqRel, Ordering::Relaxed).is_ok()
    }
}

// SAFETY: blocks come from disjoint ranges of `bytes` (or from `System`), aligned as asked;
// a block is given back to whichever of the two it came from.
unsafe impl<const N: usize> GlobalAlloc for Arena<N> {
    // One copy, not one inlined at every allocation site of the binary.
    #[inline(never)]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let mut top = self.top.load(Ordering::Relaxed);
        loop {
            let start = (self.base() + top).next_multiple_of(layout.align()) - self.base();
            let end = start.saturating_add(layout.size());
            if end > N {
                // SAFETY: forwarded as is.
                return unsafe { System.alloc(layout) };
            }
            if self.bump(top, end) {
                // SAFETY: `start..end` lies inside `bytes`.
                return unsafe { (self.bytes.get() as *mut u8).add(start) };
            }
            top = self.top.load(Ordering::Relaxed);
        }
    }

    // One copy, not one inlined at every allocation site of the binary.
    #[inline(never)]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if !self.owns(ptr) {
            // SAFETY: it came from System.alloc with this layout.
            return unsafe { System.dealloc(ptr, layout) };
        }
        // The last block handed out is taken back (buffers that grow and are dropped).
        let start = ptr as usize - self.base();
        self.bump(start + layout.size(), start);
    }

    // One copy, not one inlined at every allocation site of the binary.
    #[inline(never)]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if self.owns(ptr) {
            // The last block grows or shrinks where it is.
            let start = ptr as usize - self.base();
            let end = start.saturating_add(new_size);
            if end <= N && self.bump(start + layout.size(), end) {
                return ptr;
            }
        } else {
            // SAFETY: it came from System.alloc with this layout.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // SAFETY: the contract of GlobalAlloc::realloc, as its default implementation does.
        unsafe {
            let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
            let new = self.alloc(new_layout);
            if !new.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn blocks_are_aligned_disjoint_and_spill_over_when_full() {
        let arena = Box::new(Arena::<256>::new());
        unsafe {
            let a = arena.alloc(layout(3, 1));
            let b = arena.alloc(layout(8, 8));
            assert!(arena.owns(a) && arena.owns(b));
            assert_eq!(b as usize % 8, 0);
            assert!(b as usize >= a as usize + 3);
            let big = arena.alloc(layout(1024, 8));
            assert!(!big.is_null() && !arena.owns(big), "a block bigger than what is left comes from System");
            big.write_bytes(7, 1024);
            arena.dealloc(big, layout(1024, 8));
            arena.dealloc(b, layout(8, 8));
            arena.dealloc(a, layout(3, 1));
        }
    }

    #[test]
    fn the_last_block_is_taken_back_and_grows_in_place() {
        let arena = Box::new(Arena::<4096>::new());
        unsafe {
            let a = arena.alloc(layout(16, 8));
            arena.dealloc(a, layout(16, 8));
            assert_eq!(arena.alloc(layout(16, 8)), a, "the freed last block is handed out again");
            a.write_bytes(1, 16);
            let grown = arena.realloc(a, layout(16, 8), 64);
            assert_eq!(grown, a);
            let b = arena.alloc(layout(8, 8));
            assert_eq!(b as usize, a as usize + 64);
            // No longer the last block: it moves, keeping its bytes.
            let moved = arena.realloc(a, layout(64, 8), 128);
            assert_ne!(moved, a);
            assert!(std::slice::from_raw_parts(moved, 16).iter().all(|&x| x == 1));
            // Moving out of the arena keeps them too.
            let out = arena.realloc(moved, layout(128, 8), 8192);
            assert!(!arena.owns(out));
            assert!(std::slice::from_raw_parts(out, 16).iter().all(|&x| x == 1));
            arena.dealloc(out, layout(8192, 8));
        }
    }

    #[test]
    fn threads_never_get_the_same_block() {
        let arena = std::sync::Arc::new(Arena::<{ 1 << 16 }>::new());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let arena = arena.clone();
                std::thread::spawn(move || {
                    (0..500).map(|_| unsafe { arena.alloc(layout(24, 8)) } as usize).collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<usize> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n);
        assert!(all.windows(2).all(|w| w[1] - w[0] >= 24 || !arena.owns(w[0] as *mut u8)));
    }
}
