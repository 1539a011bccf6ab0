//! apk's version ordering, exactly as apk-tools 2.14 implements it.
//!
//! A version is read as a chain of tokens (`number{.number}…{letter}{_suffix{number}}…{-rN}`).
//! The kind of each token depends on the kind of the one before, and the comparison walks both
//! chains side by side until a value or a kind differs. Versions apk would reject are still
//! ordered, the way apk 2.14 orders them (it never refuses to compare), so that a solver fed a
//! foreign index agrees with apk even on garbage.
//!
//! ```
//! use std::cmp::Ordering;
//! use treeline_pkg::apk::version::{compare, fuzzy_match, is_valid};
//!
//! assert_eq!(compare("1.2.3_rc1-r0", "1.2.3-r0"), Ordering::Less);
//! assert_eq!(compare("1.2", "1.2.0"), Ordering::Less);
//! assert!(fuzzy_match("1.6.5-r2", "1.6"));
//! assert!(!is_valid("1.2~abc"));
//! ```
//!
//! Nothing here allocates: a comparison is one pass over the two byte strings.

use std::cmp::Ordering;

/// Compares two apk versions as `apk version -t` does.
pub fn compare(a: &str, b: &str) -> Ordering {
    compare_tokens(a, b, false)
}

/// apk's `~` operator: whether `version` matches the fuzzy constraint `~prefix`.
///
/// As in apk 2.14, the two are equal as far as both go: every token present in both must be
/// the same, and whichever is longer may go on with anything (`1.6.5-r2 ~ 1.6`, but also
/// `1.6 ~ 1.6.5`). Components are compared whole, so `1.60` does not match `1.6`.
pub fn fuzzy_match(version: &str, prefix: &str) -> bool {
    compare_tokens(version, prefix, true) == Ordering::Equal
}

/// Whether `version` is a valid apk version, as `apk version -c` (apk 2.14) decides.
///
/// apk 2.14 is lenient in places (`a1`, `1.`, the empty string and `1_p-r1-r2` pass) and strict in
/// others (`1a.2`, `1.2~abc` and upper-case letters fail); this follows it exactly.
pub fn is_valid(version: &str) -> bool {
    let mut tokens = Tokens::new(version);
    while !tokens.kind.is_terminal() {
        tokens.take();
    }
    tokens.kind == Kind::End
}

/// What the next token of a version is. The declaration order is apk's own ranking: it decides
/// which transitions are allowed and, when one version runs out before the other, which side
/// is greater (the one whose next token ranks lower).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// Not a version any more; its value is -1.
    Invalid,
    /// A number after `.`: a leading zero makes it sort before any number without one.
    DigitOrZero,
    /// A plain number.
    Digit,
    /// One lower-case letter after a number.
    Letter,
    /// `_alpha`, `_beta`, `_pre`, `_rc`, `_cvs`, `_svn`, `_git`, `_hg`, `_p`.
    Suffix,
    /// The number after a suffix.
    SuffixNumber,
    /// The number after `-r`.
    Revision,
    /// Nothing left.
    End,
}

impl Kind {
    fn is_terminal(self) -> bool {
        matches!(self, Kind::End | Kind::Invalid)
    }
}

/// Numbers of this many digits or more make a version invalid (apk keeps values in an i64).
const MAX_DIGITS: usize = 18;

/// Pre-release suffixes, lowest first; they sort before the bare version.
const PRE_SUFFIXES: [&[u8]; 4] = [b"alpha", b"beta", b"pre", b"rc"];
/// Post-release suffixes, lowest first; they sort after the bare version.
const POST_SUFFIXES: [&[u8]; 5] = [b"cvs", b"svn", b"git", b"hg", b"p"];

/// A cursor over the tokens of one version.
struct Tokens<'a> {
    rest: &'a [u8],
    /// The kind of the token at the front of `rest`.
    kind: Kind,
}

impl<'a> Tokens<'a> {
    fn new(version: &'a str) -> Self {
        Tokens {
            rest: version.as_bytes(),
            kind: Kind::Digit,
        }
    }

    /// Consumes the token at the front, returns its value, and sets `kind` to what follows.
    fn take(&mut self) -> i64 {
        if self.rest.is_empty() {
            self.kind = Kind::End;
            return 0;
        }
        let mut forced_next = None;
        let (value, len) = match self.kind {
            Kind::DigitOrZero if self.rest.first() == Some(&b'0') => {
                // A run of n zeros is worth -(n-1); its last zero stays to be read again as
                // the start of a plain number, so `.05` reads as (0, 5) and `.005` as (-1, 5).
                let zeros = self.rest.iter().take_while(|&&c| c == b'0').count();
                forced_next = Some(Kind::Digit);
                (-(zeros as i64 - 1), zeros - 1)
            }
            Kind::DigitOrZero | Kind::Digit | Kind::SuffixNumber | Kind::Revision => {
                let (mut value, mut digits) = (0i64, 0usize);
                for &c in self.rest.iter().take_while(|c| c.is_ascii_digit()) {
                    digits += 1;
                    if digits >= MAX_DIGITS {
                        return self.invalid();
                    }
                    value = value * 10 + i64::from(c - b'0');
                }
                (value, digits)
            }
            Kind::Letter => match self.rest.first() {
                Some(&c) => (i64::from(c), 1),
                None => return self.invalid(),
            },
            Kind::Suffix => match suffix_rank(self.rest) {
                Some(found) => found,
                None => return self.invalid(),
            },
            Kind::Invalid | Kind::End => return self.invalid(),
        };
        self.rest = self.rest.get(len..).unwrap_or_default();
        self.kind = if self.rest.is_empty() {
            Kind::End
        } else if let Some(kind) = forced_next {
            kind
        } else {
            self.after(self.kind)
        };
        value
    }

    fn invalid(&mut self) -> i64 {
        self.kind = Kind::Invalid;
        -1
    }

    /// Reads the separator (if any) that starts the token following one of kind `previous`,
    /// and says what that token is.
    fn after(&mut self, previous: Kind) -> Kind {
        let Some(&c) = self.rest.first() else {
            return Kind::End;
        };
        // A NUL ends a C string, which is where apk stops reading.
        if c == 0 {
            return Kind::End;
        }
        // Letters and numbers follow each other without a separator.
        let glued = match previous {
            Kind::Digit | Kind::DigitOrZero if c.is_ascii_lowercase() => Some(Kind::Letter),
            Kind::Letter if c.is_ascii_digit() => Some(Kind::Digit),
            Kind::Suffix if c.is_ascii_digit() => Some(Kind::SuffixNumber),
            _ => None,
        };
        if let Some(kind) = glued {
            return kind;
        }
        let (next, separator_len) = match (c, self.rest.get(1)) {
            (b'.', _) => (Kind::DigitOrZero, 1),
            (b'_', _) => (Kind::Suffix, 1),
            (b'-', Some(b'r')) => (Kind::Revision, 2),
            _ => (Kind::Invalid, 1),
        };
        self.rest = self.rest.get(separator_len..).unwrap_or_default();
        // Tokens only move forward through the grammar, except for these three steps back:
        // another `.number` after a number, another `_suffix` after a suffix number, and a
        // number after a letter.
        let allowed_back = matches!(
            (next, previous),
            (Kind::DigitOrZero, Kind::Digit)
                | (Kind::Suffix, Kind::SuffixNumber)
                | (Kind::Digit, Kind::Letter)
        );
        if next < previous && !allowed_back {
            Kind::Invalid
        } else {
            next
        }
    }
}

/// The value of the suffix name at the start of `rest` (negative for pre-release ones) and
/// its length; names match as prefixes, earlier names first, as in apk.
fn suffix_rank(rest: &[u8]) -> Option<(i64, usize)> {
    let pre = PRE_SUFFIXES
        .iter()
        .zip(-(PRE_SUFFIXES.len() as i64)..)
        .find(|(name, _)| rest.starts_with(name));
    let post = || {
        POST_SUFFIXES
            .iter()
            .zip(0i64..)
            .find(|(name, _)| rest.starts_with(name))
    };
    pre.or_else(post).map(|(name, rank)| (rank, name.len()))
}

/// The comparison behind both [`compare`] and [`fuzzy_match`]: with `fuzzy`, running out of
/// tokens on either side while all values so far are equal counts as equal.
fn compare_tokens(a: &str, b: &str, fuzzy: bool) -> Ordering {
    let mut left = Tokens::new(a);
    let mut right = Tokens::new(b);
    let (mut left_value, mut right_value) = (0i64, 0i64);
    while left.kind == right.kind && !left.kind.is_terminal() && left_value == right_value {
        left_value = left.take();
        right_value = right.take();
    }
    match left_value.cmp(&right_value) {
        Ordering::Equal => {}
        unequal => return unequal,
    }
    if left.kind == right.kind || fuzzy {
        return Ordering::Equal;
    }
    // One side goes on: it is greater unless what follows is a pre-release suffix (or a
    // suffix apk does not know, which it reads as -1 too). Peeking moves the cursor, so the
    // kinds are kept first.
    let (left_kind, right_kind) = (left.kind, right.kind);
    if left_kind == Kind::Suffix && left.take() < 0 {
        return Ordering::Less;
    }
    if right_kind == Kind::Suffix && right.take() < 0 {
        return Ordering::Greater;
    }
    // The lower-ranked next token belongs to the longer, greater version.
    right_kind.cmp(&left_kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_order(a: &str, b: &str, expected: Ordering) {
        assert_eq!(compare(a, b), expected, "{a} vs {b}");
        assert_eq!(compare(b, a), expected.reverse(), "{b} vs {a}");
    }

    #[test]
    fn pre_release_suffixes_sort_before_the_release() {
        assert_order("1.2.3_rc1-r0", "1.2.3-r0", Ordering::Less);
        assert_order("1.2.3_alpha", "1.2.3_beta", Ordering::Less);
        assert_order("1.2.3_beta", "1.2.3_pre", Ordering::Less);
        assert_order("1.2.3_pre", "1.2.3_rc", Ordering::Less);
        assert_order("1.0_rc", "1.0_rc1", Ordering::Less);
        assert_order("1.0_alpha1_beta2", "1.0_alpha1", Ordering::Less);
    }

    #[test]
    fn post_release_suffixes_sort_after_the_release() {
        assert_order("1.2.3", "1.2.3_p1", Ordering::Less);
        assert_order("1.2.3_p1", "1.2.4", Ordering::Less);
        assert_order("1.2.3_git20230101", "1.2.3", Ordering::Greater);
        assert_order("1.2.3_git20230101", "1.2.3_p1", Ordering::Less);
        assert_order("1.0_cvs", "1.0_svn", Ordering::Less);
        assert_order("1.0_hg", "1.0_git", Ordering::Greater);
        assert_order("1.0_p", "1.0", Ordering::Greater);
        assert_order("2.0_rc1", "2.0_rc1_p1", Ordering::Less);
    }

    #[test]
    fn letters_follow_numbers() {
        assert_order("1.2.3a", "1.2.3", Ordering::Greater);
        assert_order("1.2.3a", "1.2.3b", Ordering::Less);
        assert_order("1.2.3b", "1.2.4", Ordering::Less);
        assert_order("1.0", "1.0a", Ordering::Less);
    }

    #[test]
    fn more_components_sort_greater_and_numbers_compare_numerically() {
        assert_order("1.2", "1.2.0", Ordering::Less);
        assert_order("1.2.0", "1.2.0.0", Ordering::Less);
        assert_order("1.10", "1.9", Ordering::Greater);
        assert_order("0.9", "0.10", Ordering::Less);
    }

    #[test]
    fn leading_zeros_sort_low() {
        assert_order("1.05", "1.5", Ordering::Less);
        assert_order("1.005", "1.05", Ordering::Less);
        assert_order("1.010", "1.01", Ordering::Greater);
        assert_order("1.0", "1.0", Ordering::Equal);
    }

    #[test]
    fn revisions() {
        assert_order("1.2.3", "1.2.3-r0", Ordering::Less);
        assert_order("1.2.3-r10", "1.2.3-r9", Ordering::Greater);
        assert_order("1.2.4_git20230717-r4", "1.2.4-r0", Ordering::Greater);
        assert_order("1.2.4_git20230717-r4", "1.2.5-r0", Ordering::Less);
        assert_order("6.4_p20231125-r0", "6.4-r0", Ordering::Greater);
        assert_order("9.6_p1-r0", "9.6-r1", Ordering::Greater);
    }

    #[test]
    fn validity_follows_apk_2_14() {
        for valid in ["1", "1.2.3", "1.2.3a", "1.2_rc1_p2-r3", "1_p", "0.0.0"] {
            assert!(is_valid(valid), "{valid}");
        }
        for invalid in [
            "1.2~abc",
            "1a.2",
            "1.2-3",
            "1_foo",
            "1.2_rc1.3",
            "1-r1.2",
            "1A",
            "1ab",
        ] {
            assert!(!is_valid(invalid), "{invalid}");
        }
        assert!(!is_valid("1.123456789012345678"), "18-digit number");
        assert!(is_valid("1.12345678901234567"), "17-digit number");
    }

    #[test]
    fn fuzzy_matches_whole_components() {
        assert!(fuzzy_match("1.6", "1.6"));
        assert!(fuzzy_match("1.6.0_pre1", "1.6"));
        assert!(fuzzy_match("1.6.5", "1.6"));
        assert!(fuzzy_match("1.6.9_p1-r2", "1.6"));
        assert!(!fuzzy_match("1.60", "1.6"));
        assert!(!fuzzy_match("1.7", "1.6"));
        assert!(!fuzzy_match("1.5.9", "1.6"));
    }
}
