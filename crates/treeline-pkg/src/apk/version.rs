//! apk's version ordering (placeholder until implemented).

use std::cmp::Ordering;

/// Compares two apk versions as `apk version -t` does.
pub fn compare(a: &str, b: &str) -> Ordering {
    a.cmp(b)
}

/// apk's `~` operator: `version` starts with `prefix` at a component boundary.
pub fn fuzzy_match(version: &str, prefix: &str) -> bool {
    version.starts_with(prefix)
}

/// Whether `version` is a valid apk version (placeholder: anything non-empty).
pub fn is_valid(version: &str) -> bool {
    !version.is_empty()
}
