//! SHA-256 object names and object types.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

use crate::error::Error;

/// A SHA-256 checksum naming an object (or, for commitmeta, its commit).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Checksum(pub [u8; 32]);

impl Checksum {
    /// Checksum of a byte slice.
    pub fn of(data: &[u8]) -> Self {
        Checksum(Sha256::digest(data).into())
    }

    /// From 32 raw bytes as stored inside objects.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(b).ok().map(Checksum)
    }

    /// Lowercase hex, 64 characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// OSTree's "modified base64" (standard alphabet, `/` as `_`, no padding), used for
    /// static delta paths.
    pub fn to_modified_base64(&self) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+_";
        let mut out = String::with_capacity(43);
        for chunk in self.0.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            let chars = chunk.len() + 1;
            for i in 0..chars {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }
}

impl Checksum {
    /// Parse OSTree's modified base64 (43 characters) back into a checksum.
    pub fn from_modified_base64(s: &str) -> Option<Self> {
        if s.len() != 43 {
            return None;
        }
        let value = |c: u8| -> Option<u32> {
            Some(match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'+' => 62,
                b'_' => 63,
                _ => return None,
            } as u32)
        };
        let mut out = Vec::with_capacity(33);
        for chunk in s.as_bytes().chunks(4) {
            let mut n = 0u32;
            for (i, &c) in chunk.iter().enumerate() {
                n |= value(c)? << (18 - 6 * i);
            }
            let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
            out.extend_from_slice(&bytes[..chunk.len() - 1]);
        }
        Checksum::from_bytes(&out)
    }
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Checksum({})", self.to_hex())
    }
}

impl FromStr for Checksum {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let valid = s.len() == 64 && s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
        if !valid {
            return Err(Error::InvalidChecksum(s.to_owned()));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| Error::InvalidChecksum(s.to_owned()))?;
        Ok(Checksum(out))
    }
}

/// The kinds of object a repository holds.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub enum ObjectType {
    /// File content plus its header (`.file`, `.filez` in archive repos).
    File,
    /// A directory listing.
    DirTree,
    /// A directory's ownership, mode and xattrs.
    DirMeta,
    /// A commit.
    Commit,
    /// Marker left where a commit was deleted.
    TombstoneCommit,
    /// Detached commit metadata (signatures), named by its commit.
    CommitMeta,
}

impl ObjectType {
    /// The number OSTree uses for this type in deltas and `ostree.sizes`.
    pub fn code(self) -> u8 {
        match self {
            ObjectType::File => 1,
            ObjectType::DirTree => 2,
            ObjectType::DirMeta => 3,
            ObjectType::Commit => 4,
            ObjectType::TombstoneCommit => 5,
            ObjectType::CommitMeta => 6,
        }
    }

    /// From OSTree's numeric code.
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => ObjectType::File,
            2 => ObjectType::DirTree,
            3 => ObjectType::DirMeta,
            4 => ObjectType::Commit,
            5 => ObjectType::TombstoneCommit,
            6 => ObjectType::CommitMeta,
            _ => return None,
        })
    }

    /// The name OSTree prints (`file`, `dirtree`, ...).
    pub fn name(self) -> &'static str {
        match self {
            ObjectType::File => "file",
            ObjectType::DirTree => "dirtree",
            ObjectType::DirMeta => "dirmeta",
            ObjectType::Commit => "commit",
            ObjectType::TombstoneCommit => "tombstone-commit",
            ObjectType::CommitMeta => "commitmeta",
        }
    }

    /// Parse the printed name or a loose-object file extension.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "file" | "filez" => ObjectType::File,
            "dirtree" => ObjectType::DirTree,
            "dirmeta" => ObjectType::DirMeta,
            "commit" => ObjectType::Commit,
            "tombstone-commit" => ObjectType::TombstoneCommit,
            "commitmeta" => ObjectType::CommitMeta,
            _ => return None,
        })
    }

    /// True for the object types whose bytes are a GVariant (everything but files).
    pub fn is_meta(self) -> bool {
        self != ObjectType::File
    }
}

impl fmt::Display for ObjectType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An object's full name: its checksum and type.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct ObjectName {
    /// The checksum.
    pub checksum: Checksum,
    /// The type.
    pub objtype: ObjectType,
}

impl ObjectName {
    /// Build a name.
    pub fn new(checksum: Checksum, objtype: ObjectType) -> Self {
        ObjectName { checksum, objtype }
    }
}

impl fmt::Display for ObjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.checksum, self.objtype)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_hex_roundtrip_and_rejects_uppercase() {
        let c = Checksum::of(b"");
        let hex = c.to_hex();
        assert_eq!(hex.parse::<Checksum>().unwrap(), c);
        assert!(hex.to_uppercase().parse::<Checksum>().is_err());
        assert!("abc".parse::<Checksum>().is_err());
    }

    #[test]
    fn modified_base64_has_43_chars_and_no_slash() {
        let c = Checksum([0xff; 32]);
        let s = c.to_modified_base64();
        assert_eq!(s.len(), 43);
        assert!(s.starts_with("____"));
        let z = Checksum([0; 32]).to_modified_base64();
        assert_eq!(z, "A".repeat(43));
        let c = Checksum::of(b"x");
        assert_eq!(
            Checksum::from_modified_base64(&c.to_modified_base64()),
            Some(c)
        );
        assert_eq!(Checksum::from_modified_base64("short"), None);
    }
}
