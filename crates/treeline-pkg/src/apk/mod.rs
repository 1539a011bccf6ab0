//! Alpine's apk v2: packages, APKINDEX, signing keys, versions and dependency atoms.
//!
//! - [`package::ApkPackage`] opens a `.apk` file, finds its three gzip members, reads the
//!   signature and control members, checks signatures and `datahash`, and walks the data
//!   tar entry by entry ([`package::DataWalk`]).
//! - [`index::ApkIndex`] reads and verifies `APKINDEX.tar.gz` into
//!   [`PackageMeta`](crate::model::PackageMeta) records.
//! - [`keys::Keys`] holds the trusted public keys, named by file name as apk does.
//! - [`atom`] parses dependency atoms (`so:libc.musl-x86_64.so.1`, `!vlan`, `foo>=1.2`).
//!
//! Hashes and signatures cover the **compressed** bytes of the gzip members, so nothing
//! here ever recompresses a package.

mod archive;
pub mod atom;
pub mod index;
pub mod keys;
pub mod package;
pub mod version;

use std::path::PathBuf;

pub use atom::{ParsedAtom, Relations};
pub use index::ApkIndex;
pub use keys::Keys;
pub use package::{
    ApkPackage, Checksum, DataEntry, DataWalk, EntryKind, PkgInfo, Script, ScriptKind, Signature,
    SignatureAlgorithm,
};

/// Errors reading Alpine packages, indexes and keys; each names the file and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("{path}: {error}", path = path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// The file is not an apk v2 package or index at all.
    #[error("{path}: not an apk v2 file: {reason}", path = path.display())]
    NotApk {
        /// The file.
        path: PathBuf,
        /// What was found instead.
        reason: String,
    },
    /// A gzip member does not decompress.
    #[error("{path}: bad gzip data in the {member} member: {error}", path = path.display())]
    BadGzip {
        /// The file.
        path: PathBuf,
        /// Which member: `signature`, `control`, `data` or `index`.
        member: &'static str,
        /// What the decompressor said.
        error: std::io::Error,
    },
    /// The file ends too early.
    #[error("{path}: truncated: {what}", path = path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// What was cut short.
        what: String,
    },
    /// The archive layout or a tar header breaks the format rules.
    #[error("{path}: {what}", path = path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// `.PKGINFO` lacks a field apk requires.
    #[error("{path}: .PKGINFO has no {field}", path = path.display())]
    MissingField {
        /// The file.
        path: PathBuf,
        /// The missing key (`pkgname`, `pkgver`, `arch`).
        field: &'static str,
    },
    /// A `.PKGINFO` field has a value apk would refuse.
    #[error("{path}: .PKGINFO {field} = {value:?}: {reason}", path = path.display())]
    InvalidField {
        /// The file.
        path: PathBuf,
        /// The key.
        field: String,
        /// The value as read.
        value: String,
        /// Why it is refused.
        reason: String,
    },
    /// Verification was asked for but the file carries no signature.
    #[error("{path}: not signed", path = path.display())]
    Unsigned {
        /// The file.
        path: PathBuf,
    },
    /// Every signature names a key that is not trusted (looked up by file name).
    #[error("{path}: UNTRUSTED signature: no trusted key named {}", keys.join(", "), path = path.display())]
    UntrustedKey {
        /// The file.
        path: PathBuf,
        /// The key names the signatures refer to.
        keys: Vec<String>,
    },
    /// A signature from a trusted key does not match the signed bytes.
    #[error("{path}: BAD signature by key {key}", path = path.display())]
    BadSignature {
        /// The file.
        path: PathBuf,
        /// The key that was tried.
        key: String,
    },
    /// The data member's SHA-256 differs from `.PKGINFO`'s `datahash`.
    #[error("{path}: datahash mismatch: .PKGINFO says {expected}, data member has {actual}", path = path.display())]
    DatahashMismatch {
        /// The file.
        path: PathBuf,
        /// `datahash` from `.PKGINFO`.
        expected: String,
        /// SHA-256 of the data member as found.
        actual: String,
    },
    /// The package identity differs from the one expected (an index `C:` line).
    #[error("{path}: identity {actual} differs from the expected {expected}", path = path.display())]
    IdentityMismatch {
        /// The file.
        path: PathBuf,
        /// The identity expected by the caller.
        expected: String,
        /// The identity computed from the file.
        actual: String,
    },
    /// A data entry's content (or symlink target) does not match its pax checksum.
    #[error("{path}: {entry}: checksum mismatch: archive says {expected}, content has {actual}", path = path.display())]
    ChecksumMismatch {
        /// The package file.
        path: PathBuf,
        /// The entry's path in the data tar.
        entry: String,
        /// The checksum recorded in the pax header.
        expected: String,
        /// The checksum of what was read.
        actual: String,
    },
    /// A data entry that could escape the target root or is not allowed in a package.
    #[error("{path}: refusing entry {entry:?}: {reason}", path = path.display())]
    HostileEntry {
        /// The package file.
        path: PathBuf,
        /// The entry name as found in the tar.
        entry: String,
        /// Why it is refused.
        reason: String,
    },
    /// A dependency atom that does not parse.
    #[error("bad dependency atom {atom:?}: {reason}")]
    BadAtom {
        /// The atom text.
        atom: String,
        /// What is wrong.
        reason: String,
    },
    /// A malformed line in an APKINDEX.
    #[error("{path}: line {line}: {what}", path = path.display())]
    IndexLine {
        /// The index file.
        path: PathBuf,
        /// 1-based line number in the APKINDEX text.
        line: usize,
        /// What is wrong.
        what: String,
    },
    /// A key file or keys directory that cannot be used.
    #[error("{path}: {what}", path = path.display())]
    Key {
        /// The key file or directory.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
}

impl Error {
    /// Recovers the error behind a failed `read` of a [`DataEntry`](package::DataEntry): a checksum
    /// mismatch, truncation or bad gzip comes back as itself, anything else as
    /// [`Error::Io`] on `path`.
    pub fn from_read_error(path: &std::path::Path, error: std::io::Error) -> Error {
        if error.get_ref().is_some_and(|e| e.is::<Error>()) {
            if let Some(inner) = error.into_inner()
                && let Ok(apk) = inner.downcast::<Error>()
            {
                return *apk;
            }
            return Error::Io {
                path: path.to_path_buf(),
                error: std::io::Error::other("unreadable entry"),
            };
        }
        Error::Io {
            path: path.to_path_buf(),
            error,
        }
    }
}

/// Shorthand for results of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// apk's text form of a SHA-1 identity or file checksum: `Q1` + standard base64.
pub fn q1_encode(sha1: &[u8; 20]) -> String {
    use base64::Engine as _;
    format!(
        "Q1{}",
        base64::engine::general_purpose::STANDARD.encode(sha1)
    )
}

/// Decodes a `Q1…` (base64) or `X1…` (hex) SHA-1 text form; `None` when it is neither.
pub fn q1_decode(text: &str) -> Option<[u8; 20]> {
    use base64::Engine as _;
    let bytes = if let Some(b64) = text.strip_prefix("Q1") {
        base64::engine::general_purpose::STANDARD.decode(b64).ok()?
    } else if let Some(hex_text) = text.strip_prefix("X1") {
        hex::decode(hex_text).ok()?
    } else {
        return None;
    };
    bytes.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q1_round_trips_and_rejects_other_forms() {
        let digest = [7u8; 20];
        let text = q1_encode(&digest);
        assert_eq!(text.len(), 30);
        assert_eq!(q1_decode(&text), Some(digest));
        assert_eq!(
            q1_decode(&format!("X1{}", hex::encode(digest))),
            Some(digest)
        );
        assert_eq!(q1_decode("Q1AAAA"), None);
        assert_eq!(q1_decode("d41d8cd98f00b204e9800998ecf8427e"), None);
    }
}
