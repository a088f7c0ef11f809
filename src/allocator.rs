//! The heap allocator's own account of memory, so that the live heap can be told apart from
//! resident memory the allocator keeps (freed pages not yet returned, fragmentation).
//!
//! With the default `jemalloc` feature metrics-bridge allocates through jemalloc (the binary
//! sets it as the global allocator) and [`AllocatorStats::read`] returns jemalloc's
//! statistics; built with `--no-default-features` (the system allocator, for heaptrack) or
//! when jemalloc is linked but not the allocator in use, it returns `None`.

/// jemalloc's figures, in bytes, as of the moment they were read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllocatorStats {
    /// Bytes in live allocations: what the program holds.
    pub allocated: u64,
    /// Bytes in pages that hold live allocations (`allocated` plus the free space within them).
    pub active: u64,
    /// Bytes of physical memory jemalloc has mapped: active pages, dirty freed pages not yet
    /// purged, and its metadata. The part of the process's RSS the allocator answers for.
    pub resident: u64,
    /// Bytes of virtual memory kept mapped but returned to the kernel (not resident).
    pub retained: u64,
    /// Bytes of jemalloc's own bookkeeping.
    pub metadata: u64,
}

impl AllocatorStats {
    /// jemalloc's current statistics (refreshed first: jemalloc caches them per epoch), or
    /// `None` without the `jemalloc` feature or when jemalloc does not serve this process's
    /// allocations (it is linked into every build with the feature, tests and kube-sim too).
    #[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
    pub fn read() -> Option<Self> {
        use tikv_jemalloc_ctl::{epoch, stats};
        epoch::advance().ok()?;
        let s = Self {
            allocated: stats::allocated::read().ok()? as u64,
            active: stats::active::read().ok()? as u64,
            resident: stats::resident::read().ok()? as u64,
            retained: stats::retained::read().ok()? as u64,
            metadata: stats::metadata::read().ok()? as u64,
        };
        // Nothing allocated: jemalloc is linked but another allocator serves the process.
        (s.allocated > 0).then_some(s)
    }

    /// Always `None`: built without jemalloc.
    #[cfg(not(all(feature = "jemalloc", not(target_env = "msvc"))))]
    pub fn read() -> Option<Self> {
        None
    }
}
