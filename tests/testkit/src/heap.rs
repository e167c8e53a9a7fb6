//! A global allocator for tests that measure heap bytes: the system
//! allocator, counting the bytes live that the threads which asked for it
//! ([`count_this_thread`]) allocated. A test binary installs it with
//! `#[global_allocator] static A: prefork_testkit::heap::Counting = Counting;`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicIsize, Ordering};

/// The system allocator, counting.
pub struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

thread_local! {
    /// Set on the threads whose allocations are counted.
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

/// Counts (or stops counting) what the calling thread allocates and frees.
pub fn count_this_thread(on: bool) {
    COUNTED.with(|c| c.set(on));
}

/// The bytes live that counted threads allocated: compare two readings.
pub fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

fn counted() -> bool {
    // A thread being torn down has no flag left: not counted.
    COUNTED.try_with(Cell::get).unwrap_or(false)
}

// SAFETY: every call goes to the system allocator as it came; the counter
// only observes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if counted() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if counted() {
            LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        }
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if counted() {
            LIVE.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        System.realloc(ptr, layout, new_size)
    }
}
