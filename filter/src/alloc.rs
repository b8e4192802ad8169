//! Free lists by size class in front of the C library's allocator, for the module's heap.
//!
//! A request allocates and frees a few dozen small blocks (header and audit strings, vectors of
//! edits), the same sizes every time. wasi-libc's dlmalloc does it well in general, but in V8
//! its bins, boundary tags and the two Rust shims around it took about a tenth of the module's
//! time. A block of up to [`MAX_SMALL`] bytes is rounded up to a multiple of [`GRAIN`] and, once
//! freed, kept on the free list of its size for the next allocation of that size: the steady
//! state is a pop and a push. Larger or over-aligned blocks go to the backing allocator.
//!
//! Freed small blocks never go back to the backing allocator, so the heap holds, per size, the
//! most blocks ever live at once: the working set of the caches and one request's blocks.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::UnsafeCell;
use std::ptr;

/// Sizes are rounded up to this, and small blocks aligned to it.
pub const GRAIN: usize = 16;
/// The largest block kept on a free list.
pub const MAX_SMALL: usize = 512;
const CLASSES: usize = MAX_SMALL / GRAIN;

/// The free lists (each block's first word links to the next) over a backing allocator.
pub struct SizeClasses<B> {
    backing: B,
    free: UnsafeCell<[*mut u8; CLASSES]>,
}

// SAFETY: wasm32-wasip1 modules run on one thread (no shared memory, no atomics), so the free
// lists are never touched from two threads. Native builds do not use it as a global allocator.
#[cfg(target_arch = "wasm32")]
unsafe impl<B: Sync> Sync for SizeClasses<B> {}

impl<B> SizeClasses<B> {
    pub const fn new(backing: B) -> SizeClasses<B> {
        SizeClasses { backing, free: UnsafeCell::new([ptr::null_mut(); CLASSES]) }
    }
}

/// The free list of a layout (index into the lists), or `None` for the backing allocator.
fn class(layout: Layout) -> Option<usize> {
    (layout.size() <= MAX_SMALL && layout.align() <= GRAIN).then(|| layout.size().max(1).div_ceil(GRAIN) - 1)
}

/// The layout a small block of `class` really has at the backing allocator.
fn class_layout(class: usize) -> Layout {
    // SAFETY: GRAIN is a power of two, and a multiple of it up to MAX_SMALL cannot overflow.
    unsafe { Layout::from_size_align_unchecked((class + 1) * GRAIN, GRAIN) }
}

unsafe impl<B: GlobalAlloc> GlobalAlloc for SizeClasses<B> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(c) = class(layout) else {
            // SAFETY: the caller's layout is valid and non-zero in size.
            return unsafe { self.backing.alloc(layout) };
        };
        // SAFETY: one thread (see the Sync impl); `c` is in bounds.
        let head = unsafe { &mut (*self.free.get())[c] };
        if head.is_null() {
            // SAFETY: class layouts are valid and non-zero.
            return unsafe { self.backing.alloc(class_layout(c)) };
        }
        let block = *head;
        // SAFETY: a block on the list is GRAIN-aligned and at least GRAIN bytes, its first word
        // written by dealloc.
        *head = unsafe { block.cast::<*mut u8>().read() };
        block
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        let Some(c) = class(layout) else {
            // SAFETY: blocks of that layout came from the backing allocator.
            return unsafe { self.backing.dealloc(block, layout) };
        };
        // SAFETY: one thread; the block is ours (alloc gave it for this layout's class), GRAIN-
        // aligned and at least GRAIN bytes, so its first word can hold the link.
        unsafe {
            let head = &mut (*self.free.get())[c];
            block.cast::<*mut u8>().write(*head);
            *head = block;
        }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: GlobalAlloc's contract: new_size with the old alignment is a valid layout.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (class(layout), class(new_layout)) {
            // Still the same block size: nothing moves.
            (Some(old), Some(new)) if old == new => block,
            // SAFETY: both blocks came from the backing allocator with these layouts.
            (None, None) => unsafe { self.backing.realloc(block, layout, new_size) },
            _ => {
                // SAFETY: the caller's layouts are valid; the copy stays within both blocks.
                unsafe {
                    let moved = self.alloc(new_layout);
                    if !moved.is_null() {
                        ptr::copy_nonoverlapping(block, moved, layout.size().min(new_size));
                        self.dealloc(block, layout);
                    }
                    moved
                }
            }
        }
    }
}

/// The module's heap. Every allocation site calls one of three functions taking the layout's
/// size and alignment, as the standard library's shims take them: inlined there, the free-list
/// code cost 65 KB of Wasm, and a method taking the heap's address one more argument at each of
/// thousands of sites.
#[cfg(target_arch = "wasm32")]
mod heap {
    use super::SizeClasses;
    use std::alloc::{GlobalAlloc, Layout, System};

    static LISTS: SizeClasses<System> = SizeClasses::new(System);

    // SAFETY (all three): the standard library passes a valid layout's size and alignment, and
    // blocks it gave out with the layout they were asked for.
    #[inline(never)]
    unsafe fn alloc(size: usize, align: usize) -> *mut u8 {
        unsafe { LISTS.alloc(Layout::from_size_align_unchecked(size, align)) }
    }

    #[inline(never)]
    unsafe fn dealloc(block: *mut u8, size: usize, align: usize) {
        unsafe { LISTS.dealloc(block, Layout::from_size_align_unchecked(size, align)) }
    }

    #[inline(never)]
    unsafe fn realloc(block: *mut u8, size: usize, align: usize, new_size: usize) -> *mut u8 {
        unsafe { LISTS.realloc(block, Layout::from_size_align_unchecked(size, align), new_size) }
    }

    struct Heap;

    unsafe impl GlobalAlloc for Heap {
        #[inline(always)]
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            unsafe { alloc(layout.size(), layout.align()) }
        }
        #[inline(always)]
        unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
            unsafe { dealloc(block, layout.size(), layout.align()) }
        }
        #[inline(always)]
        unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            unsafe { realloc(block, layout.size(), layout.align(), new_size) }
        }
    }

    #[global_allocator]
    static HEAP: Heap = Heap;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::System;
    use std::cell::Cell;
    use std::collections::HashMap;

    /// The system allocator, counting what reaches it.
    #[derive(Default)]
    struct Counted {
        allocs: Cell<usize>,
        frees: Cell<usize>,
    }

    unsafe impl GlobalAlloc for Counted {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            self.allocs.set(self.allocs.get() + 1);
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
            self.frees.set(self.frees.get() + 1);
            unsafe { System.dealloc(block, layout) }
        }
    }

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn sizes_map_to_classes_of_one_grain_each() {
        assert_eq!(class(layout(1, 1)), Some(0));
        assert_eq!(class(layout(16, 8)), Some(0));
        assert_eq!(class(layout(17, 1)), Some(1));
        assert_eq!(class(layout(MAX_SMALL, 16)), Some(CLASSES - 1));
        assert_eq!(class(layout(MAX_SMALL + 1, 1)), None);
        assert_eq!(class(layout(64, 32)), None, "over-aligned blocks go to the backing allocator");
        for c in 0..CLASSES {
            assert_eq!(class(class_layout(c)), Some(c));
        }
    }

    #[test]
    fn a_freed_small_block_is_the_next_of_its_class_and_never_goes_back() {
        let heap = SizeClasses::new(Counted::default());
        unsafe {
            let a = heap.alloc(layout(40, 8));
            heap.dealloc(a, layout(40, 8));
            // Another size of the same class (33..=48 bytes) gets the same block.
            assert_eq!(heap.alloc(layout(33, 1)), a);
            assert_eq!((heap.backing.allocs.get(), heap.backing.frees.get()), (1, 0));
            let big = heap.alloc(layout(4096, 8));
            heap.dealloc(big, layout(4096, 8));
            assert_eq!((heap.backing.allocs.get(), heap.backing.frees.get()), (2, 1));
            heap.dealloc(a, layout(33, 1));
        }
    }

    #[test]
    fn realloc_keeps_the_block_within_its_class_and_moves_the_bytes_across() {
        let heap = SizeClasses::new(Counted::default());
        unsafe {
            let a = heap.alloc(layout(20, 1));
            for i in 0..20 {
                a.add(i).write(i as u8);
            }
            assert_eq!(heap.realloc(a, layout(20, 1), 32), a, "20 and 32 bytes share a class");
            let b = heap.realloc(a, layout(32, 1), 1000);
            assert_ne!(b, a);
            assert_eq!(std::slice::from_raw_parts(b, 20), (0..20).collect::<Vec<u8>>().as_slice());
            let c = heap.realloc(b, layout(1000, 1), 10);
            assert_eq!(std::slice::from_raw_parts(c, 10), (0..10).collect::<Vec<u8>>().as_slice());
            heap.dealloc(c, layout(10, 1));
        }
    }

    /// Live blocks never overlap and keep what was written into them, over a long random mix of
    /// sizes, alignments, frees and reallocations.
    #[test]
    fn random_use_keeps_live_blocks_apart_and_intact() {
        let heap = SizeClasses::new(System);
        let mut live: HashMap<usize, (Layout, u8)> = HashMap::new();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let fill = |block: *mut u8, l: Layout, tag: u8| unsafe { ptr::write_bytes(block, tag, l.size()) };
        let intact = |block: usize, l: Layout, tag: u8| unsafe {
            std::slice::from_raw_parts(block as *const u8, l.size()).iter().all(|&b| b == tag)
        };
        for step in 0..20_000u32 {
            let r = next();
            if live.len() < 64 && r % 3 != 0 || live.is_empty() {
                let size = 1 + (next() % 700) as usize;
                let align = [1, 2, 4, 8, 16, 32][(next() % 6) as usize];
                let l = layout(size, align);
                let block = unsafe { heap.alloc(l) };
                assert!(!block.is_null() && (block as usize).is_multiple_of(align));
                let tag = step as u8;
                fill(block, l, tag);
                assert!(live.insert(block as usize, (l, tag)).is_none(), "a live block handed out twice");
            } else {
                let (&block, &(l, tag)) = live.iter().nth((r % live.len() as u64) as usize).unwrap();
                assert!(intact(block, l, tag), "a live block was overwritten");
                live.remove(&block);
                if r % 2 == 0 {
                    unsafe { heap.dealloc(block as *mut u8, l) };
                } else {
                    let size = 1 + (next() % 700) as usize;
                    let moved = unsafe { heap.realloc(block as *mut u8, l, size) };
                    let nl = layout(size, l.align());
                    let kept = l.size().min(size);
                    assert!(unsafe { std::slice::from_raw_parts(moved, kept) }.iter().all(|&b| b == tag));
                    fill(moved, nl, tag);
                    live.insert(moved as usize, (nl, tag));
                }
            }
            // No two live blocks overlap.
            if step % 500 == 0 {
                let mut spans: Vec<(usize, usize)> = live.iter().map(|(&b, (l, _))| (b, b + l.size())).collect();
                spans.sort();
                assert!(spans.windows(2).all(|w| w[0].1 <= w[1].0));
            }
        }
        for (block, (l, _)) in live {
            unsafe { heap.dealloc(block as *mut u8, l) };
        }
    }
}
