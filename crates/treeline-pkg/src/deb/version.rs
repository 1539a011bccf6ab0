//! dpkg's version ordering (placeholder until implemented).

use std::cmp::Ordering;

/// Compares two Debian versions as `dpkg --compare-versions` does.
pub fn compare(a: &str, b: &str) -> Ordering {
    a.cmp(b)
}
