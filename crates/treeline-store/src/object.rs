//! The OSTree object types and their byte-exact GVariant codecs.
//!
//! Each type decodes from the bytes of a stored object and encodes back to exactly those
//! bytes; decoding re-encodes and compares, which rejects anything not in normal form.
//! Integers that OSTree pre-swaps (uid, gid, mode, timestamps, sizes) are big-endian on disk.

use gvariant::aligned_bytes::copy_to_align;
use gvariant::{Marker, Structure, gv};

use crate::checksum::Checksum;
use crate::variant::{Metadata, Value};

/// Extended attributes: (name without its trailing NUL, value), sorted by name.
pub type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// File type bits, as in `st_mode`.
pub const S_IFMT: u32 = 0o170000;
/// Directory.
pub const S_IFDIR: u32 = 0o040000;
/// Regular file.
pub const S_IFREG: u32 = 0o100000;
/// Symbolic link.
pub const S_IFLNK: u32 = 0o120000;
/// Permission, setuid, setgid and sticky bits.
const PERMISSION_BITS: u32 = 0o7777;

/// A decoding failure: which part of the object is wrong.
pub type DecodeError = String;

fn xattrs_for_encoding(x: &Xattrs) -> Vec<(Vec<u8>, &[u8])> {
    let mut out: Vec<(Vec<u8>, &[u8])> = x
        .iter()
        .map(|(n, v)| {
            let mut name = n.clone();
            name.push(0);
            (name, v.as_slice())
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

pub(crate) fn decode_xattrs<'a>(
    entries: impl Iterator<Item = (&'a [u8], &'a [u8])>,
) -> Result<Xattrs, DecodeError> {
    let mut out = Xattrs::new();
    for (name, value) in entries {
        let Some(name) = name.strip_suffix(b"\0") else {
            return Err("xattr name is not NUL-terminated".into());
        };
        if name.is_empty() || name.contains(&0) {
            return Err("xattr name is empty or contains NUL".into());
        }
        out.push((name.to_vec(), value.to_vec()));
    }
    Ok(out)
}

/// Checks a file name found in a dirtree, as ostree does, plus the empty name.
pub fn validate_filename(name: &str) -> Result<(), &'static str> {
    match name {
        "" => Err("empty name"),
        "." | ".." => Err("`.` and `..` are not allowed"),
        _ if name.contains('/') => Err("contains `/`"),
        _ if name.contains('\0') => Err("contains NUL"),
        _ => Ok(()),
    }
}

fn checksum_field(b: &[u8], what: &str) -> Result<Checksum, DecodeError> {
    Checksum::from_bytes(b).ok_or_else(|| format!("{what} is {} bytes, expected 32", b.len()))
}

fn require_normal_form(original: &[u8], reencoded: &[u8]) -> Result<(), DecodeError> {
    if original == reencoded {
        Ok(())
    } else {
        Err("not in GVariant normal form".into())
    }
}

/// A commit: `(a{sv}aya(say)sstayay)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Commit {
    /// Metadata, in stored order.
    pub metadata: Metadata,
    /// Parent commit.
    pub parent: Option<Checksum>,
    /// "Related objects": always empty in commits ostree writes; kept for exact re-encoding.
    pub related: Vec<(String, Checksum)>,
    /// Subject line.
    pub subject: String,
    /// Body.
    pub body: String,
    /// Seconds since the epoch, UTC.
    pub timestamp: u64,
    /// Root dirtree.
    pub root_tree: Checksum,
    /// Root dirmeta.
    pub root_meta: Checksum,
}

impl Commit {
    /// Encode to the object's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let meta: Vec<(&str, &Value)> = self
            .metadata
            .0
            .iter()
            .map(|(k, v)| (k.as_str(), v))
            .collect();
        let parent: &[u8] = match &self.parent {
            Some(p) => p.as_bytes(),
            None => &[],
        };
        let related: Vec<(&str, &[u8])> = self
            .related
            .iter()
            .map(|(n, c)| (n.as_str(), c.as_bytes().as_slice()))
            .collect();
        let mut out = Vec::new();
        let _ = gv!("(a{sv}aya(say)sstayay)").serialize(
            &(
                &meta,
                parent,
                &related,
                self.subject.as_str(),
                self.body.as_str(),
                self.timestamp.to_be(),
                self.root_tree.as_bytes().as_slice(),
                self.root_meta.as_bytes().as_slice(),
            ),
            &mut out,
        );
        out
    }

    /// Decode and validate the bytes of a commit object.
    pub fn from_bytes(data: &[u8]) -> Result<Self, DecodeError> {
        let buf = copy_to_align(data);
        let (meta, parent, related, subject, body, ts, tree, dmeta) =
            gv!("(a{sv}aya(say)sstayay)").cast(buf.as_ref()).to_tuple();
        let metadata = metadata_from_entries(meta.iter().map(|e| e.to_tuple()))?;
        if metadata.0.iter().any(|(k, _)| k.is_empty()) {
            return Err("empty metadata key".into());
        }
        let parent = if parent.is_empty() {
            None
        } else {
            Some(checksum_field(parent, "parent checksum")?)
        };
        let related = related
            .iter()
            .map(|r| {
                let (n, c) = r.to_tuple();
                Ok((n.to_str().to_owned(), checksum_field(c, "related object")?))
            })
            .collect::<Result<_, DecodeError>>()?;
        let commit = Commit {
            metadata,
            parent,
            related,
            subject: subject.to_str().to_owned(),
            body: body.to_str().to_owned(),
            timestamp: u64::from_be(*ts),
            root_tree: checksum_field(tree, "root dirtree checksum")?,
            root_meta: checksum_field(dmeta, "root dirmeta checksum")?,
        };
        require_normal_form(data, &commit.to_bytes())?;
        Ok(commit)
    }

    /// The `version` metadata string, if any.
    pub fn version(&self) -> Option<String> {
        self.metadata.get("version").and_then(Value::as_str)
    }

    /// SHA-256 of root dirtree ‖ root dirmeta, which `ostree log` prints as ContentChecksum.
    pub fn content_checksum(&self) -> Checksum {
        let mut b = Vec::with_capacity(64);
        b.extend_from_slice(self.root_tree.as_bytes());
        b.extend_from_slice(self.root_meta.as_bytes());
        Checksum::of(&b)
    }
}

/// Build a [`Metadata`] from decoded `{sv}` entries.
pub(crate) fn metadata_from_entries<'a>(
    entries: impl Iterator<Item = (&'a gvariant::Str, &'a gvariant::Variant)>,
) -> Result<Metadata, DecodeError> {
    let mut out = Vec::new();
    for (key, value) in entries {
        let (type_bytes, data) = value.split();
        let type_str = std::str::from_utf8(type_bytes).map_err(|_| "variant type is not UTF-8")?;
        out.push((
            key.to_str().to_owned(),
            Value {
                type_str: type_str.to_owned(),
                data: data.to_vec(),
            },
        ));
    }
    Ok(Metadata(out))
}

/// A directory listing: `(a(say)a(sayay))`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct DirTree {
    /// Files: name and content checksum, sorted by name.
    pub files: Vec<(String, Checksum)>,
    /// Subdirectories: name, dirtree and dirmeta checksums, sorted by name.
    pub dirs: Vec<(String, Checksum, Checksum)>,
}

impl DirTree {
    /// Encode to the object's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let files: Vec<(&str, &[u8])> = self
            .files
            .iter()
            .map(|(n, c)| (n.as_str(), c.as_bytes().as_slice()))
            .collect();
        let dirs: Vec<(&str, &[u8], &[u8])> = self
            .dirs
            .iter()
            .map(|(n, t, m)| (n.as_str(), t.as_bytes().as_slice(), m.as_bytes().as_slice()))
            .collect();
        let mut out = Vec::new();
        let _ = gv!("(a(say)a(sayay))").serialize(&(&files, &dirs), &mut out);
        out
    }

    /// Decode and validate: names valid, each list strictly sorted, no name in both.
    pub fn from_bytes(data: &[u8]) -> Result<Self, DecodeError> {
        let buf = copy_to_align(data);
        let (files, dirs) = gv!("(a(say)a(sayay))").cast(buf.as_ref()).to_tuple();
        let mut tree = DirTree::default();
        for f in files.iter() {
            let (name, csum) = f.to_tuple();
            let name = name.to_str();
            validate_filename(name).map_err(|r| format!("file name {name:?}: {r}"))?;
            tree.files
                .push((name.to_owned(), checksum_field(csum, "file checksum")?));
        }
        for d in dirs.iter() {
            let (name, t, m) = d.to_tuple();
            let name = name.to_str();
            validate_filename(name).map_err(|r| format!("directory name {name:?}: {r}"))?;
            tree.dirs.push((
                name.to_owned(),
                checksum_field(t, "dirtree checksum")?,
                checksum_field(m, "dirmeta checksum")?,
            ));
        }
        let sorted = |names: &mut dyn Iterator<Item = &str>| {
            let v: Vec<&str> = names.collect();
            v.windows(2).all(|w| w[0].as_bytes() < w[1].as_bytes())
        };
        if !sorted(&mut tree.files.iter().map(|f| f.0.as_str()))
            || !sorted(&mut tree.dirs.iter().map(|d| d.0.as_str()))
        {
            return Err("entries are not sorted or contain duplicates".into());
        }
        let file_names: std::collections::HashSet<&str> =
            tree.files.iter().map(|f| f.0.as_str()).collect();
        if let Some(d) = tree.dirs.iter().find(|d| file_names.contains(d.0.as_str())) {
            return Err(format!("{:?} is both a file and a directory", d.0));
        }
        require_normal_form(data, &tree.to_bytes())?;
        Ok(tree)
    }
}

/// A directory's metadata: `(uuua(ayay))`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirMeta {
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Mode including `S_IFDIR`.
    pub mode: u32,
    /// Extended attributes.
    pub xattrs: Xattrs,
}

impl DirMeta {
    /// Encode to the object's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        encode_uuua(self.uid, self.gid, self.mode, &self.xattrs)
    }

    /// Decode and validate (must be a directory, no stray mode bits).
    pub fn from_bytes(data: &[u8]) -> Result<Self, DecodeError> {
        let (uid, gid, mode, xattrs) = decode_uuua(data)?;
        if mode & S_IFMT != S_IFDIR || mode & !(S_IFMT | PERMISSION_BITS) != 0 {
            return Err(format!("invalid directory mode {mode:o}"));
        }
        Ok(DirMeta {
            uid,
            gid,
            mode,
            xattrs,
        })
    }
}

/// `(uuua(ayay))`, shared by dirmeta and bare-user's `user.ostreemeta`.
pub(crate) fn encode_uuua(uid: u32, gid: u32, mode: u32, xattrs: &Xattrs) -> Vec<u8> {
    let x = xattrs_for_encoding(xattrs);
    let x: Vec<(&[u8], &[u8])> = x.iter().map(|(n, v)| (n.as_slice(), *v)).collect();
    let mut out = Vec::new();
    let _ = gv!("(uuua(ayay))").serialize(&(uid.to_be(), gid.to_be(), mode.to_be(), &x), &mut out);
    out
}

pub(crate) fn decode_uuua(data: &[u8]) -> Result<(u32, u32, u32, Xattrs), DecodeError> {
    let buf = copy_to_align(data);
    let (uid, gid, mode, xattrs) = gv!("(uuua(ayay))").cast(buf.as_ref()).to_tuple();
    let xattrs = decode_xattrs(xattrs.iter().map(|e| e.to_tuple()))?;
    let out = (
        u32::from_be(*uid),
        u32::from_be(*gid),
        u32::from_be(*mode),
        xattrs,
    );
    // Unsorted xattrs were written by ostree before 2024.10; accept them, since the
    // re-encode sorts, by comparing against a sorted re-encode only when already sorted.
    if is_sorted_xattrs(&out.3) {
        require_normal_form(data, &encode_uuua(out.0, out.1, out.2, &out.3))?;
    }
    Ok(out)
}

fn is_sorted_xattrs(x: &Xattrs) -> bool {
    x.windows(2).all(|w| w[0].0 < w[1].0)
}

/// The header of a content object: `(uuuusa(ayay))`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileHeader {
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Mode including the type bits (`S_IFREG` or `S_IFLNK`).
    pub mode: u32,
    /// Symlink target; empty for regular files.
    pub symlink_target: String,
    /// Extended attributes.
    pub xattrs: Xattrs,
}

impl FileHeader {
    /// True for a symlink.
    pub fn is_symlink(&self) -> bool {
        self.mode & S_IFMT == S_IFLNK
    }

    /// Validate the mode as ostree does for content objects.
    pub fn validate(&self) -> Result<(), DecodeError> {
        let t = self.mode & S_IFMT;
        if t != S_IFREG && t != S_IFLNK {
            return Err(format!(
                "invalid file mode {:o}: not a regular file or symlink",
                self.mode
            ));
        }
        if self.mode & !(S_IFMT | PERMISSION_BITS) != 0 {
            return Err(format!("invalid file mode {:o}", self.mode));
        }
        if t == S_IFLNK && self.symlink_target.is_empty() {
            return Err("symlink with an empty target".into());
        }
        if t == S_IFREG && !self.symlink_target.is_empty() {
            return Err("regular file with a symlink target".into());
        }
        Ok(())
    }

    /// The header bytes that go into the content checksum.
    pub fn to_checksum_bytes(&self) -> Vec<u8> {
        let x = xattrs_for_encoding(&self.xattrs);
        let x: Vec<(&[u8], &[u8])> = x.iter().map(|(n, v)| (n.as_slice(), *v)).collect();
        let mut out = Vec::new();
        let _ = gv!("(uuuusa(ayay))").serialize(
            &(
                self.uid.to_be(),
                self.gid.to_be(),
                self.mode.to_be(),
                0u32,
                self.symlink_target.as_str(),
                &x,
            ),
            &mut out,
        );
        out
    }

    /// The archive (`.filez`) header bytes, which add the uncompressed size in front.
    pub fn to_archive_bytes(&self, size: u64) -> Vec<u8> {
        let x = xattrs_for_encoding(&self.xattrs);
        let x: Vec<(&[u8], &[u8])> = x.iter().map(|(n, v)| (n.as_slice(), *v)).collect();
        let mut out = Vec::new();
        let _ = gv!("(tuuuusa(ayay))").serialize(
            &(
                size.to_be(),
                self.uid.to_be(),
                self.gid.to_be(),
                self.mode.to_be(),
                0u32,
                self.symlink_target.as_str(),
                &x,
            ),
            &mut out,
        );
        out
    }

    /// Decode a checksum header.
    pub fn from_checksum_bytes(data: &[u8]) -> Result<Self, DecodeError> {
        let buf = copy_to_align(data);
        let (uid, gid, mode, rdev, target, xattrs) =
            gv!("(uuuusa(ayay))").cast(buf.as_ref()).to_tuple();
        if *rdev != 0 {
            return Err("rdev is not 0".into());
        }
        let h = FileHeader {
            uid: u32::from_be(*uid),
            gid: u32::from_be(*gid),
            mode: u32::from_be(*mode),
            symlink_target: target.to_str().to_owned(),
            xattrs: decode_xattrs(xattrs.iter().map(|e| e.to_tuple()))?,
        };
        h.validate()?;
        Ok(h)
    }

    /// Decode an archive header; returns the header and the uncompressed size.
    pub fn from_archive_bytes(data: &[u8]) -> Result<(Self, u64), DecodeError> {
        let buf = copy_to_align(data);
        let (size, uid, gid, mode, rdev, target, xattrs) =
            gv!("(tuuuusa(ayay))").cast(buf.as_ref()).to_tuple();
        if *rdev != 0 {
            return Err("rdev is not 0".into());
        }
        let h = FileHeader {
            uid: u32::from_be(*uid),
            gid: u32::from_be(*gid),
            mode: u32::from_be(*mode),
            symlink_target: target.to_str().to_owned(),
            xattrs: decode_xattrs(xattrs.iter().map(|e| e.to_tuple()))?,
        };
        h.validate()?;
        Ok((h, u64::from_be(*size)))
    }

    /// The `user.ostreemeta` xattr value of a bare-user object.
    pub fn to_bare_user_meta(&self) -> Vec<u8> {
        encode_uuua(self.uid, self.gid, self.mode, &self.xattrs)
    }

    /// Decode a `user.ostreemeta` value; the symlink target comes from the file content.
    pub fn from_bare_user_meta(data: &[u8]) -> Result<Self, DecodeError> {
        let (uid, gid, mode, xattrs) = decode_uuua(data)?;
        Ok(FileHeader {
            uid,
            gid,
            mode,
            symlink_target: String::new(),
            xattrs,
        })
    }
}

/// The 8-byte prefix of a content stream or `.filez`: BE32 length and 4 zero bytes.
pub fn header_prefix(header_len: usize) -> [u8; 8] {
    let mut p = [0u8; 8];
    p[..4].copy_from_slice(&(header_len as u32).to_be_bytes());
    p
}

/// Decode detached commit metadata (`a{sv}`); an empty file is an empty dictionary.
pub fn commitmeta_from_bytes(data: &[u8]) -> Result<Metadata, DecodeError> {
    if data.is_empty() {
        return Ok(Metadata::new());
    }
    Metadata::from_bytes(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn content_checksum(h: &FileHeader, content: &[u8]) -> String {
        let hb = h.to_checksum_bytes();
        let mut s = Sha256::new();
        s.update(header_prefix(hb.len()));
        s.update(&hb);
        s.update(content);
        hex::encode(s.finalize())
    }

    fn reg(mode: u32) -> FileHeader {
        FileHeader {
            uid: 0,
            gid: 0,
            mode: S_IFREG | mode,
            symlink_target: String::new(),
            xattrs: vec![],
        }
    }

    #[test]
    fn dirmeta_vectors_match_ostree() {
        let d = DirMeta {
            uid: 0,
            gid: 0,
            mode: S_IFDIR | 0o755,
            xattrs: vec![],
        };
        assert_eq!(
            hex::encode(d.to_bytes()),
            "00000000".to_string() + "00000000" + "000041ed"
        );
        assert_eq!(
            Checksum::of(&d.to_bytes()).to_hex(),
            "446a0ef11b7cc167f3b603e585c7eeeeb675faa412d5ec73f62988eb0b6c5488"
        );
        let d700 = DirMeta {
            mode: S_IFDIR | 0o700,
            ..d
        };
        assert_eq!(
            Checksum::of(&d700.to_bytes()).to_hex(),
            "84641b0a39d8c873690da8f32aea21cf5d6fff354f85e045f6f5ecdc8e7758d0"
        );
    }

    #[test]
    fn empty_dirtree_is_one_zero_byte() {
        let t = DirTree::default();
        assert_eq!(t.to_bytes(), vec![0u8]);
        assert_eq!(
            Checksum::of(&t.to_bytes()).to_hex(),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
        );
        assert_eq!(DirTree::from_bytes(&[0]).unwrap(), t);
    }

    #[test]
    fn content_checksums_match_ostree_vectors() {
        assert_eq!(
            content_checksum(&reg(0o644), b""),
            "cc700d46f407c6c5ab2d5dde474366a928b7398277e61162e7f8ec06f469f07e"
        );
        assert_eq!(
            content_checksum(&reg(0o644), b"hello\n"),
            "44f778e59f0a4748d6b0c90a47347212a231c4ad1e8f7ea5c5dffc7749153a6b"
        );
        let mut x = reg(0o644);
        // Given unsorted: encoding must sort.
        x.xattrs = vec![
            (b"user.b".to_vec(), b"BBB".to_vec()),
            (b"user.a".to_vec(), b"A".to_vec()),
        ];
        assert_eq!(
            content_checksum(&x, b"hello\n"),
            "1fe1cddffaa5350a9326cce5d6883b4b8197fc82b97f4812d38712b0d70af70d"
        );
        let link = FileHeader {
            mode: S_IFLNK | 0o777,
            symlink_target: "hello.txt".into(),
            ..reg(0)
        };
        assert_eq!(
            content_checksum(&link, b""),
            "f66efa496a72379413c44593de510dc344beb045294f1a543da87b2b6118db35"
        );
        assert_eq!(
            content_checksum(&reg(0o755), b"#!/bin/sh\necho hi\n"),
            "89b350d278ff59ba4780bc377b8ebfee8ade6b55c99fab1ec84e133bc6ea52c5"
        );
    }

    #[test]
    fn archive_header_of_empty_file_matches_ostree() {
        let h = reg(0o644);
        let b = h.to_archive_bytes(0);
        assert_eq!(
            hex::encode(&b),
            "0000000000000000".to_string()
                + "00000000"
                + "00000000"
                + "000081a4"
                + "00000000"
                + "00"
                + "19"
        );
        assert_eq!(b.len(), 26);
        let (back, size) = FileHeader::from_archive_bytes(&b).unwrap();
        assert_eq!((back, size), (h, 0));
    }

    #[test]
    fn bare_user_meta_matches_ostree_vector() {
        let mut h = reg(0o644);
        h.xattrs = vec![
            (b"user.a".to_vec(), b"A".to_vec()),
            (b"user.b".to_vec(), b"BBB".to_vec()),
        ];
        assert_eq!(
            hex::encode(h.to_bare_user_meta()),
            "00000000".to_string()
                + "00000000"
                + "000081a4"
                + "757365722e6100"
                + "41"
                + "07"
                + "757365722e6200"
                + "424242"
                + "07"
                + "09"
                + "14"
        );
    }

    #[test]
    fn commit_vector_from_format_doc_roundtrips() {
        let mut m = Metadata::new();
        m.insert("version", Value::string("1.0"));
        m.insert("ostree.ref-binding", Value::strv(&["test/main"]));
        let c = Commit {
            metadata: m,
            parent: None,
            related: vec![],
            subject: "subject".into(),
            body: "body".into(),
            timestamp: 1577836800,
            root_tree: Checksum([0xf4; 32]),
            root_meta: Checksum::of(
                &DirMeta {
                    uid: 0,
                    gid: 0,
                    mode: S_IFDIR | 0o755,
                    xattrs: vec![],
                }
                .to_bytes(),
            ),
        };
        let b = c.to_bytes();
        assert_eq!(b.len(), 150);
        assert_eq!(&b[0x48..0x50], &[0, 0, 0, 0, 0x5e, 0x0b, 0xe1, 0x00]);
        assert_eq!(hex::encode(&b[0x90..]), "704641393939");
        assert_eq!(Commit::from_bytes(&b).unwrap(), c);
    }

    #[test]
    fn dirtree_rejects_hostile_and_unsorted_names() {
        for bad in ["..", ".", "a/b", ""] {
            let t = DirTree {
                files: vec![(bad.into(), Checksum([1; 32]))],
                dirs: vec![],
            };
            assert!(
                DirTree::from_bytes(&t.to_bytes()).is_err(),
                "{bad:?} accepted"
            );
        }
        let t = DirTree {
            files: vec![
                ("b".into(), Checksum([1; 32])),
                ("a".into(), Checksum([1; 32])),
            ],
            dirs: vec![],
        };
        assert!(DirTree::from_bytes(&t.to_bytes()).is_err());
        let t = DirTree {
            files: vec![("a".into(), Checksum([1; 32]))],
            dirs: vec![("a".into(), Checksum([1; 32]), Checksum([2; 32]))],
        };
        assert!(DirTree::from_bytes(&t.to_bytes()).is_err());
    }

    #[test]
    fn truncated_objects_are_rejected_not_panicking() {
        let c = Commit {
            metadata: Metadata::new(),
            parent: None,
            related: vec![],
            subject: "s".into(),
            body: String::new(),
            timestamp: 1,
            root_tree: Checksum([1; 32]),
            root_meta: Checksum([2; 32]),
        };
        let b = c.to_bytes();
        for n in 0..b.len() {
            assert!(Commit::from_bytes(&b[..n]).is_err());
        }
        assert!(DirMeta::from_bytes(&[1, 2, 3]).is_err());
    }
}
