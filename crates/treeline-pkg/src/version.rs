//! Version comparison for both families, and matching a version against a constraint.

use std::cmp::Ordering;

use crate::model::{Family, VersionOp, VersionReq};

/// Compares two versions the way `apk version -t` or `dpkg --compare-versions` does.
pub fn compare(family: Family, a: &str, b: &str) -> Ordering {
    match family {
        Family::Apk => crate::apk::version::compare(a, b),
        Family::Deb => crate::deb::version::compare(a, b),
    }
}

impl VersionReq {
    /// Whether `version` satisfies this constraint. [`VersionOp::Identity`] never matches a
    /// version (it names a package identity; the caller compares identities).
    pub fn matches(&self, family: Family, version: &str) -> bool {
        let ord = compare(family, version, &self.version);
        match self.op {
            VersionOp::Lt => ord == Ordering::Less,
            VersionOp::Le => ord != Ordering::Greater,
            VersionOp::Eq => ord == Ordering::Equal,
            VersionOp::Ge => ord != Ordering::Less,
            VersionOp::Gt => ord == Ordering::Greater,
            VersionOp::Fuzzy => match family {
                Family::Apk => crate::apk::version::fuzzy_match(version, &self.version),
                Family::Deb => ord == Ordering::Equal,
            },
            VersionOp::Identity => false,
        }
    }
}
