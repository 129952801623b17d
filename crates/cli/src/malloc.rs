//! The allocator setting a long-running server needs (glibc only).
#![allow(unsafe_code)]

/// A server's large buffers (request frames of many megabytes, batch tensors) are mapped
/// and unmapped one by one instead of staying cached in the allocator. glibc raises its mmap
/// threshold each time a mapped block is freed, so after a burst of large requests every
/// worker thread's arena keeps blocks of that size; a fixed threshold turns that dynamic
/// rule off, and the server's resident memory follows what it really holds.
pub fn return_large_buffers_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before the server's
    // threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}
