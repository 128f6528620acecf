//! Allocator settings, applied once at start (glibc builds only; the static musl build's
//! allocator already returns freed memory).
//!
//! glibc's defaults suit throughput, not a small resident set: up to 8 arenas per core (each
//! worker thread grows its own heap, and freed memory stays in it) and a mmap threshold that
//! rises after the first large free, so later payload buffers come from heaps that are never
//! trimmed. The agent's threads are few and mostly idle, so one arena and a fixed threshold
//! (buffers of 64 KiB or more are mapped and given back when freed) keep RSS near the live data.

/// Applies the settings; a no-op on other C libraries.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before other threads start.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 10);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 10);
    }
}

/// Gives freed heap memory back to the system after a large payload (glibc keeps it otherwise;
/// a no-op elsewhere).
pub fn release() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages of the heaps to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}
