//! Progress reporting for long operations; the caller decides how to show it.

/// Receives progress from a long operation. Called from many threads at once.
pub trait Progress: Sync {
    /// The operation now knows how many items it will process.
    fn set_total(&self, _items: u64) {}
    /// Items finished (files written, objects verified...), with their byte count.
    fn advance(&self, _items: u64, _bytes: u64) {}
}

/// Shows nothing.
pub struct NoProgress;

impl Progress for NoProgress {}
