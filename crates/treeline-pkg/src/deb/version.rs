//! dpkg's version ordering (Debian policy §5.6.12), without allocating.
//!
//! A version is `[epoch:]upstream[-revision]`: the epoch is a number before the first colon,
//! the revision follows the last hyphen. Epochs compare as numbers; upstream and revision
//! compare by alternating runs of non-digits (where `~` sorts before everything, even the end
//! of the string, and letters sort before other characters) and digits (compared as numbers
//! of any length).
//!
//! ```
//! use std::cmp::Ordering;
//! use treeline_pkg::deb::version::{compare, is_valid};
//!
//! assert_eq!(compare("1.0~rc1-1", "1.0-1"), Ordering::Less);
//! assert_eq!(compare("1:0.1", "2.0"), Ordering::Greater);
//! assert_eq!(compare("1.0", "1.0-0"), Ordering::Equal);
//! assert!(!is_valid("1.0-"));
//! ```
//!
//! The `debversion` crate orders the same way, but parses each side with a regular expression
//! into owned strings on every comparison, which is too slow for a solver (see the report in
//! the integration tests); this walks the two byte strings once.

use std::cmp::Ordering;

/// Compares two Debian versions as `dpkg --compare-versions` does.
///
/// Versions dpkg would refuse ([`is_valid`] is false) are still given a consistent order, but
/// dpkg itself would report an error for them instead of an answer.
pub fn compare(a: &str, b: &str) -> Ordering {
    if a == b {
        return Ordering::Equal;
    }
    let a = Parts::split(a);
    let b = Parts::split(b);
    compare_numbers(a.epoch, b.epoch)
        .then_with(|| compare_fragment(a.upstream, b.upstream))
        .then_with(|| compare_fragment(a.revision, b.revision))
}

/// Whether dpkg accepts `version` without an error or a warning: a numeric epoch (at most
/// `i32::MAX`) before the first colon if there is one, a non-empty upstream version starting with a
/// digit and made of letters, digits and `.+~-:` (a colon only after an epoch), and a
/// non-empty revision of letters, digits and `.+~` if there is a hyphen. Blanks around the
/// version are ignored, as dpkg does.
pub fn is_valid(version: &str) -> bool {
    let trimmed = trim_blanks(version.as_bytes());
    if trimmed.is_empty() || trimmed.iter().any(|&c| is_blank(c)) {
        return false;
    }
    let rest = match trimmed.iter().position(|&c| c == b':') {
        Some(colon) => {
            let (epoch, after) = trimmed.split_at(colon);
            if !is_valid_epoch(epoch) {
                return false;
            }
            after.get(1..).unwrap_or_default()
        }
        None => trimmed,
    };
    let (upstream, revision) = match rest.iter().rposition(|&c| c == b'-') {
        Some(hyphen) => (
            rest.get(..hyphen).unwrap_or_default(),
            Some(rest.get(hyphen + 1..).unwrap_or_default()),
        ),
        None => (rest, None),
    };
    let upstream_ok = upstream.first().is_some_and(u8::is_ascii_digit)
        && upstream
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || b".-+~:".contains(&c));
    let revision_ok = revision.is_none_or(|revision| {
        !revision.is_empty()
            && revision
                .iter()
                .all(|&c| c.is_ascii_alphanumeric() || b".+~".contains(&c))
    });
    upstream_ok && revision_ok
}

/// The three parts of a version, borrowed from it.
struct Parts<'a> {
    epoch: &'a [u8],
    upstream: &'a [u8],
    revision: &'a [u8],
}

impl<'a> Parts<'a> {
    fn split(version: &'a str) -> Self {
        let version = trim_blanks(version.as_bytes());
        let (epoch, rest) = match version.iter().position(|&c| c == b':') {
            Some(colon) => (
                version.get(..colon).unwrap_or_default(),
                version.get(colon + 1..).unwrap_or_default(),
            ),
            None => (&b""[..], version),
        };
        let (upstream, revision) = match rest.iter().rposition(|&c| c == b'-') {
            Some(hyphen) => (
                rest.get(..hyphen).unwrap_or_default(),
                rest.get(hyphen + 1..).unwrap_or_default(),
            ),
            None => (rest, &b""[..]),
        };
        Parts {
            epoch: epoch_digits(epoch),
            upstream,
            revision,
        }
    }
}

/// The digits of an epoch as dpkg reads it (`strtol`: leading white space and a `+` are
/// skipped). An epoch dpkg would reject reads as whatever digits it starts with.
fn epoch_digits(epoch: &[u8]) -> &[u8] {
    let start = epoch
        .iter()
        .position(|&c| !is_c_space(c))
        .unwrap_or(epoch.len());
    let epoch = epoch.get(start..).unwrap_or_default();
    let epoch = epoch.strip_prefix(b"+").unwrap_or(epoch);
    let digits = epoch.iter().take_while(|c| c.is_ascii_digit()).count();
    epoch.get(..digits).unwrap_or_default()
}

/// An epoch dpkg accepts: optional white space and sign, then digits, not negative, at most
/// `i32::MAX` (dpkg keeps it in an int).
fn is_valid_epoch(epoch: &[u8]) -> bool {
    let start = epoch
        .iter()
        .position(|&c| !is_c_space(c))
        .unwrap_or(epoch.len());
    let epoch = epoch.get(start..).unwrap_or_default();
    let (negative, digits) = match epoch.first() {
        Some(b'-') => (true, epoch.get(1..).unwrap_or_default()),
        Some(b'+') => (false, epoch.get(1..).unwrap_or_default()),
        _ => (false, epoch),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let significant = strip_zeros(digits);
    if negative {
        // `-0` is zero to strtol, and dpkg only refuses epochs below zero.
        return significant.is_empty();
    }
    compare_numbers(significant, b"2147483647") != Ordering::Greater
}

/// White space as C's `isspace` knows it (what `strtol` skips).
fn is_c_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// dpkg trims spaces and tabs around a version, nothing else.
fn is_blank(c: u8) -> bool {
    c == b' ' || c == b'\t'
}

fn trim_blanks(version: &[u8]) -> &[u8] {
    let start = version
        .iter()
        .position(|&c| !is_blank(c))
        .unwrap_or(version.len());
    let end = version
        .iter()
        .rposition(|&c| !is_blank(c))
        .map_or(start, |last| last + 1);
    version.get(start..end).unwrap_or_default()
}

fn strip_zeros(digits: &[u8]) -> &[u8] {
    let zeros = digits.iter().take_while(|&&c| c == b'0').count();
    digits.get(zeros..).unwrap_or_default()
}

/// Compares two runs of ASCII digits as numbers of any length (an empty run is zero).
fn compare_numbers(a: &[u8], b: &[u8]) -> Ordering {
    let a = strip_zeros(a);
    let b = strip_zeros(b);
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// Where a character of a non-digit run sorts: `~` before the end of the run, the end (or a
/// digit, which ends the run) next, then letters, then everything else.
fn weight(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(b'~') => -1,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        // dpkg reads bytes as signed chars, so bytes above 0x7f land between the letters and
        // the ASCII punctuation.
        Some(c) if c > 0x7f => i32::from(c),
        Some(c) => i32::from(c) + 256,
    }
}

/// Compares an upstream version or a revision: non-digit runs by [`weight`], digit runs as
/// numbers, alternately.
fn compare_fragment(a: &[u8], b: &[u8]) -> Ordering {
    let non_digit = |c: &&u8| !c.is_ascii_digit();
    let digit = |c: &&u8| c.is_ascii_digit();
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        loop {
            let left = a.get(i).filter(non_digit).copied();
            let right = b.get(j).filter(non_digit).copied();
            if left.is_none() && right.is_none() {
                break;
            }
            let order = weight(left).cmp(&weight(right));
            if order != Ordering::Equal {
                return order;
            }
            // Equal weights: both sides hold a character (only a missing one weighs 0).
            i += 1;
            j += 1;
        }
        while a.get(i) == Some(&b'0') {
            i += 1;
        }
        while b.get(j) == Some(&b'0') {
            j += 1;
        }
        // Without leading zeros, the longer digit run is the greater number; at equal
        // length, the first differing digit decides.
        let mut first_difference = Ordering::Equal;
        loop {
            match (a.get(i).filter(digit), b.get(j).filter(digit)) {
                (Some(x), Some(y)) => {
                    if first_difference == Ordering::Equal {
                        first_difference = x.cmp(y);
                    }
                    i += 1;
                    j += 1;
                }
                (Some(_), None) => return Ordering::Greater,
                (None, Some(_)) => return Ordering::Less,
                (None, None) => break,
            }
        }
        if first_difference != Ordering::Equal {
            return first_difference;
        }
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_order(a: &str, b: &str, expected: Ordering) {
        assert_eq!(compare(a, b), expected, "{a} vs {b}");
        assert_eq!(compare(b, a), expected.reverse(), "{b} vs {a}");
    }

    #[test]
    fn tilde_sorts_before_everything_even_the_end() {
        assert_order("1.0~rc1", "1.0", Ordering::Less);
        assert_order("1.0~~", "1.0~", Ordering::Less);
        assert_order("1.0~~a", "1.0~~", Ordering::Greater);
        assert_order("1.0~", "1.0", Ordering::Less);
        assert_order("1.0~rc1-1", "1.0-1", Ordering::Less);
    }

    #[test]
    fn letters_sort_before_other_characters() {
        assert_order("1.0a", "1.0+", Ordering::Less);
        assert_order("1.0a", "1.0.", Ordering::Less);
        assert_order("1.0+", "1.0.", Ordering::Less);
        assert_order("1.0", "1.0a", Ordering::Less);
        assert_order("1.0Z", "1.0a", Ordering::Less);
    }

    #[test]
    fn numbers_compare_numerically_of_any_length() {
        assert_order("1.10", "1.9", Ordering::Greater);
        assert_order("1.010", "1.10", Ordering::Equal);
        assert_order(
            "1.123456789012345678901234567890",
            "1.123456789012345678901234567891",
            Ordering::Less,
        );
    }

    #[test]
    fn epoch_and_revision() {
        assert_order("1:0.1", "2.0", Ordering::Greater);
        assert_order("0:1.0", "1.0", Ordering::Equal);
        assert_order("1.0", "1.0-0", Ordering::Equal);
        assert_order("1.0-1", "1.0-1.1", Ordering::Less);
        assert_order("1.0-1-2", "1.0-1-1", Ordering::Greater);
        assert_order("10:1", "9:2", Ordering::Greater);
        assert_order("2.36-9+deb12u4", "2.36-9+deb12u10", Ordering::Less);
        assert_order("1.0-1~bpo12+1", "1.0-1", Ordering::Less);
    }

    #[test]
    fn validity_follows_dpkg() {
        for valid in [
            "1",
            "1.0-1",
            "1:2.3~rc1-4+deb12u1",
            "0:1",
            "1:2:3",
            " 1.0 ",
            "1.0-1-1",
        ] {
            assert!(is_valid(valid), "{valid}");
        }
        for invalid in [
            "",
            " ",
            "1.0-",
            "a1.0",
            "1.0 1",
            ":1",
            "a:1",
            "-1:1",
            "1:",
            "1.0_1",
            "1.0-1_1",
            "2147483648:1",
            "1.2:3",
        ] {
            assert!(!is_valid(invalid), "{invalid:?}");
        }
        assert!(is_valid("2147483647:1"));
    }
}
