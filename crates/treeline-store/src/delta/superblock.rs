//! The superblock `(a{sv}tayay(a{sv}aya(say)sstayay)aya(uayttay)a(yaytt))` and its
//! signed wrapper `(taya{sv})`.

use super::gv::{Member, TupleWriter, split_fixed_array, split_tuple, split_var_array, var_array};
use super::{DeltaName, ENDIANNESS_KEY};
use crate::checksum::{Checksum, ObjectName, ObjectType};
use crate::error::{Error, Result};
use crate::object::{Commit, DecodeError};
use crate::sign::{ED25519_KEY, PublicKeys, SigningKey};
use crate::variant::{Metadata, Value};

/// The first 8 bytes of a signed superblock: the big-endian `t` 0x4F535453474E4454.
pub const SIGNED_MAGIC: [u8; 8] = *b"OSTSGNDT";

/// Byte order of the part versions and of the part and fallback sizes, which ostree
/// writes in the generating host's order and flags with `ostree.endianness`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endianness {
    /// `'l'`.
    Little,
    /// `'B'`.
    Big,
}

impl Endianness {
    /// The byte stored under `ostree.endianness`.
    pub fn code(self) -> u8 {
        match self {
            Endianness::Little => b'l',
            Endianness::Big => b'B',
        }
    }

    /// How `ostree static-delta show` names it.
    pub fn name(self) -> &'static str {
        match self {
            Endianness::Little => "little",
            Endianness::Big => "big",
        }
    }

    fn u32_bytes(self, v: u32) -> [u8; 4] {
        match self {
            Endianness::Little => v.to_le_bytes(),
            Endianness::Big => v.to_be_bytes(),
        }
    }

    fn u64_bytes(self, v: u64) -> [u8; 8] {
        match self {
            Endianness::Little => v.to_le_bytes(),
            Endianness::Big => v.to_be_bytes(),
        }
    }

    fn read_u32(self, b: &[u8]) -> u32 {
        let mut a = [0u8; 4];
        a.copy_from_slice(&b[..4]);
        match self {
            Endianness::Little => u32::from_le_bytes(a),
            Endianness::Big => u32::from_be_bytes(a),
        }
    }

    fn read_u64(self, b: &[u8]) -> u64 {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[..8]);
        match self {
            Endianness::Little => u64::from_le_bytes(a),
            Endianness::Big => u64::from_be_bytes(a),
        }
    }
}

/// One part as the superblock describes it: `(uayttay)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartHeader {
    /// Part format version (0).
    pub version: u32,
    /// SHA-256 of the part file.
    pub checksum: Checksum,
    /// Length of the part file.
    pub size: u64,
    /// Sum of the sizes of the objects the part writes.
    pub usize: u64,
    /// The objects the part writes, in the order its operations produce them.
    pub objects: Vec<ObjectName>,
}

/// An object the client fetches on its own instead: `(yaytt)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fallback {
    /// The object.
    pub object: ObjectName,
    /// Its size as stored on the server (the `.filez` length for archive repositories).
    pub size: u64,
    /// Its uncompressed content size.
    pub usize: u64,
}

/// A decoded superblock.
///
/// Encoding gives back exactly the bytes decoded (decoding rejects anything that would
/// not), so a superblock can be inspected, or built, and written without surprises.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Superblock {
    /// Metadata: user keys, `ostree.endianness`, inline parts and detached commit
    /// metadata, in stored order.
    pub metadata: Metadata,
    /// Generation time, seconds since the epoch (stored big-endian).
    pub timestamp: u64,
    /// FROM commit; `None` for a from-scratch delta.
    pub from: Option<Checksum>,
    /// TO commit.
    pub to: Checksum,
    /// The TO commit object itself.
    pub commit: Commit,
    /// "Recursive deltas": always empty; kept for exact re-encoding.
    pub recurse: Vec<u8>,
    /// Part headers.
    pub parts: Vec<PartHeader>,
    /// Objects to fetch individually.
    pub fallbacks: Vec<Fallback>,
    /// Byte order of part versions and sizes.
    pub endianness: Endianness,
    /// True when `ostree.endianness` was absent and the order was guessed (old deltas).
    pub endianness_guessed: bool,
}

fn object_records(objects: &[ObjectName]) -> Vec<u8> {
    let mut out = Vec::with_capacity(objects.len() * 33);
    for o in objects {
        out.push(o.objtype.code());
        out.extend_from_slice(o.checksum.as_bytes());
    }
    out
}

fn objtype_from_code(code: u8) -> Result<ObjectType, DecodeError> {
    ObjectType::from_code(code).ok_or_else(|| format!("invalid object type {code}"))
}

/// Decode a part's object list: 33-byte records of type and checksum.
pub(crate) fn parse_object_records(data: &[u8]) -> Result<Vec<ObjectName>, DecodeError> {
    split_fixed_array(data, 33)
        .map_err(|_| format!("object list of {} bytes is not whole records", data.len()))?
        .into_iter()
        .map(|r| {
            Ok(ObjectName::new(
                Checksum::from_bytes(&r[1..]).ok_or("short checksum")?,
                objtype_from_code(r[0])?,
            ))
        })
        .collect()
}

fn checksum_member(b: &[u8], what: &str) -> Result<Checksum, DecodeError> {
    Checksum::from_bytes(b).ok_or_else(|| format!("{what} is {} bytes, expected 32", b.len()))
}

impl PartHeader {
    fn to_bytes(&self, e: Endianness) -> Vec<u8> {
        let mut t = TupleWriter::new();
        t.fixed(4, &e.u32_bytes(self.version))
            .var(1, self.checksum.as_bytes())
            .fixed(8, &e.u64_bytes(self.size))
            .fixed(8, &e.u64_bytes(self.usize));
        t.finish_with(1, &object_records(&self.objects))
    }

    fn from_bytes(data: &[u8], e: Endianness) -> Result<Self, DecodeError> {
        let m = split_tuple(
            data,
            &[
                Member::fixed(4, 4),
                Member::var(1),
                Member::fixed(8, 8),
                Member::fixed(8, 8),
                Member::var(1),
            ],
        )?;
        Ok(PartHeader {
            version: e.read_u32(m[0]),
            checksum: checksum_member(m[1], "part checksum")?,
            size: e.read_u64(m[2]),
            usize: e.read_u64(m[3]),
            objects: parse_object_records(m[4])?,
        })
    }
}

impl Fallback {
    fn to_bytes(&self, e: Endianness) -> Vec<u8> {
        let mut t = TupleWriter::new();
        t.fixed(1, &[self.object.objtype.code()])
            .var(1, self.object.checksum.as_bytes())
            .fixed(8, &e.u64_bytes(self.size))
            .fixed(8, &e.u64_bytes(self.usize));
        t.finish()
    }

    fn from_bytes(data: &[u8], e: Endianness) -> Result<Self, DecodeError> {
        let m = split_tuple(
            data,
            &[
                Member::fixed(1, 1),
                Member::var(1),
                Member::fixed(8, 8),
                Member::fixed(8, 8),
            ],
        )?;
        Ok(Fallback {
            object: ObjectName::new(
                checksum_member(m[1], "fallback checksum")?,
                objtype_from_code(m[0][0])?,
            ),
            size: e.read_u64(m[2]),
            usize: e.read_u64(m[3]),
        })
    }
}

const SUPERBLOCK_MEMBERS: [Member; 8] = [
    Member::var(8),
    Member::fixed(8, 8),
    Member::var(1),
    Member::var(1),
    Member::var(8),
    Member::var(1),
    Member::var(8),
    Member::var(8),
];

impl Superblock {
    /// The delta this superblock describes.
    pub fn name(&self) -> DeltaName {
        DeltaName::new(self.from, self.to)
    }

    /// Encode.
    pub fn to_bytes(&self) -> Vec<u8> {
        let e = self.endianness;
        let parts: Vec<Vec<u8>> = self.parts.iter().map(|p| p.to_bytes(e)).collect();
        let fallbacks: Vec<Vec<u8>> = self.fallbacks.iter().map(|f| f.to_bytes(e)).collect();
        let from: &[u8] = match &self.from {
            Some(c) => c.as_bytes(),
            None => &[],
        };
        let mut t = TupleWriter::new();
        t.var(8, &self.metadata.to_bytes())
            .fixed(8, &self.timestamp.to_be_bytes())
            .var(1, from)
            .var(1, self.to.as_bytes())
            .var(8, &self.commit.to_bytes())
            .var(1, &self.recurse)
            .var(8, &var_array(8, parts.iter().map(Vec::as_slice)));
        t.finish_with(8, &var_array(8, fallbacks.iter().map(Vec::as_slice)))
    }

    /// Decode an (unsigned) superblock, rejecting anything not in normal form.
    pub fn from_bytes(data: &[u8]) -> Result<Self, DecodeError> {
        let m = split_tuple(data, &SUPERBLOCK_MEMBERS)?;
        let metadata = Metadata::from_bytes(m[0]).map_err(|e| format!("metadata: {e}"))?;
        let mut ts = [0u8; 8];
        ts.copy_from_slice(m[1]);
        let from = if m[2].is_empty() {
            None
        } else {
            Some(checksum_member(m[2], "FROM checksum")?)
        };
        let to = checksum_member(m[3], "TO checksum")?;
        let commit = Commit::from_bytes(m[4]).map_err(|e| format!("TO commit: {e}"))?;
        let part_elems = split_var_array(m[6], 8)?;
        let fallback_elems = split_var_array(m[7], 8)?;
        let (endianness, endianness_guessed) = match metadata.get(ENDIANNESS_KEY) {
            Some(v) => match (v.type_str.as_str(), v.data.as_slice()) {
                ("y", [b'l']) => (Endianness::Little, false),
                ("y", [b'B']) => (Endianness::Big, false),
                _ => {
                    return Err(format!(
                        "{ENDIANNESS_KEY} is {}, expected 'l' or 'B'",
                        v.to_text()
                    ));
                }
            },
            None => (guess_endianness(&part_elems)?, true),
        };
        let sb = Superblock {
            metadata,
            timestamp: u64::from_be_bytes(ts),
            from,
            to,
            commit,
            recurse: m[5].to_vec(),
            parts: part_elems
                .into_iter()
                .enumerate()
                .map(|(i, p)| {
                    PartHeader::from_bytes(p, endianness).map_err(|e| format!("part {i}: {e}"))
                })
                .collect::<Result<_, _>>()?,
            fallbacks: fallback_elems
                .into_iter()
                .map(|f| Fallback::from_bytes(f, endianness))
                .collect::<Result<_, _>>()?,
            endianness,
            endianness_guessed,
        };
        if sb.to_bytes() != data {
            return Err("superblock is not in GVariant normal form".into());
        }
        Ok(sb)
    }

    /// An inline part (`--inline`): the part file's bytes, kept in the metadata.
    pub fn inline_part(&self, index: usize) -> Option<Vec<u8>> {
        let v = self.metadata.get(&self.name().part_relpath(index))?;
        (v.type_str == "(yay)").then(|| v.data.clone())
    }

    /// The TO commit's detached metadata, if the delta carries it.
    pub fn detached_metadata(&self) -> Option<Metadata> {
        self.metadata.get(&self.name().commitmeta_key())?.as_dict()
    }

    /// Total length of the part files.
    pub fn total_part_size(&self) -> u64 {
        self.parts.iter().map(|p| p.size).sum()
    }

    /// Total size of the objects the parts write.
    pub fn total_part_usize(&self) -> u64 {
        self.parts.iter().map(|p| p.usize).sum()
    }

    /// Total stored size of the fallback objects.
    pub fn total_fallback_size(&self) -> u64 {
        self.fallbacks.iter().map(|f| f.size).sum()
    }

    /// Total uncompressed size of the fallback objects.
    pub fn total_fallback_usize(&self) -> u64 {
        self.fallbacks.iter().map(|f| f.usize).sum()
    }

    /// Metadata with `ostree.endianness` set, as a generator writes it: user entries
    /// first (flatpak sniffs them at the start of the file), then the byte order.
    pub fn metadata_for(user: &Metadata, e: Endianness) -> Metadata {
        let mut m = Metadata(
            user.0
                .iter()
                .filter(|(k, _)| k != ENDIANNESS_KEY)
                .cloned()
                .collect(),
        );
        m.insert(
            ENDIANNESS_KEY,
            Value {
                type_str: "y".into(),
                data: vec![e.code()],
            },
        );
        m
    }
}

/// ostree's rule for superblocks written before `ostree.endianness` existed: sizes that
/// read as wildly larger than what they uncompress to were written the other way round.
fn guess_endianness(parts: &[&[u8]]) -> Result<Endianness, DecodeError> {
    let mut total_size = 0u128;
    let mut total_objects = 0u128;
    for p in parts {
        let h = PartHeader::from_bytes(p, Endianness::Little)?;
        total_objects += h.objects.len() as u128;
        total_size += u128::from(h.size);
        if h.size > h.usize && (h.size as f64) / (h.usize as f64) > 1.2 {
            return Ok(Endianness::Big);
        }
    }
    if total_objects > 0 && total_size / total_objects > u128::from(u32::MAX) {
        return Ok(Endianness::Big);
    }
    Ok(Endianness::Little)
}

/// A signed superblock file: `(taya{sv})` wrapping the exact superblock bytes that the
/// signatures cover.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedSuperblock {
    /// The unsigned superblock bytes.
    pub superblock: Vec<u8>,
    /// Signatures by engine (`ostree.sign.ed25519` → `aay`).
    pub signatures: Metadata,
}

impl SignedSuperblock {
    /// Encode.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut t = TupleWriter::new();
        t.fixed(8, &SIGNED_MAGIC).var(1, &self.superblock);
        t.finish_with(8, &self.signatures.to_bytes())
    }

    /// Decode; `None` when the bytes do not start with the magic.
    pub fn from_bytes(data: &[u8]) -> Option<Result<Self, DecodeError>> {
        if !data.starts_with(&SIGNED_MAGIC) {
            return None;
        }
        let parse = || -> Result<Self, DecodeError> {
            let m = split_tuple(data, &[Member::fixed(8, 8), Member::var(1), Member::var(8)])?;
            let s = SignedSuperblock {
                superblock: m[1].to_vec(),
                signatures: Metadata::from_bytes(m[2])?,
            };
            if s.to_bytes() != data {
                return Err("signed superblock is not in GVariant normal form".into());
            }
            Ok(s)
        };
        Some(parse())
    }

    /// Wrap superblock bytes with Ed25519 signatures by each key, as
    /// `ostree static-delta generate --sign` does.
    pub fn sign_ed25519(superblock: Vec<u8>, keys: &[SigningKey]) -> Self {
        let sigs: Vec<Vec<u8>> = keys.iter().map(|k| k.sign(&superblock).to_vec()).collect();
        let mut signatures = Metadata::new();
        signatures.insert(ED25519_KEY, Value::bytes_array(&sigs));
        SignedSuperblock {
            superblock,
            signatures,
        }
    }

    /// Whether an Ed25519 signature over the wrapped superblock verifies with one of
    /// `keys`.
    pub fn verify_ed25519(&self, keys: &PublicKeys) -> bool {
        self.signatures
            .get(ED25519_KEY)
            .and_then(Value::as_bytes_array)
            .is_some_and(|sigs| keys.verify(&self.superblock, &sigs))
    }

    /// The engines that signed (`ed25519`, …): the keys with an `ostree.sign.` prefix.
    pub fn engines(&self) -> Vec<String> {
        self.signatures
            .0
            .iter()
            .filter_map(|(k, _)| k.strip_prefix("ostree.sign.").map(str::to_owned))
            .collect()
    }
}

/// Decode a superblock file, unwrapping a signed one. The second value is the signed
/// wrapper, when there is one.
pub fn parse_superblock_file(data: &[u8]) -> Result<(Superblock, Option<SignedSuperblock>)> {
    let invalid = |reason: String| Error::InvalidObject {
        object: "static delta superblock".into(),
        reason,
    };
    if let Some(Ok(signed)) = SignedSuperblock::from_bytes(data) {
        // A superblock whose first metadata key happens to start with the magic is not
        // signed: only take the wrapper when what it wraps decodes.
        if let Ok(sb) = Superblock::from_bytes(&signed.superblock) {
            return Ok((sb, Some(signed)));
        }
    }
    Superblock::from_bytes(data)
        .map(|sb| (sb, None))
        .map_err(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit() -> Commit {
        Commit {
            metadata: Metadata::new(),
            parent: None,
            related: vec![],
            subject: "s".into(),
            body: String::new(),
            timestamp: 1_577_836_800,
            root_tree: Checksum([1; 32]),
            root_meta: Checksum([2; 32]),
        }
    }

    pub(crate) fn sample(e: Endianness) -> Superblock {
        let c = commit();
        Superblock {
            metadata: Superblock::metadata_for(&Metadata::new(), e),
            timestamp: 1_700_000_000,
            from: Some(Checksum([3; 32])),
            to: Checksum::of(&c.to_bytes()),
            commit: c,
            recurse: vec![],
            parts: vec![PartHeader {
                version: 0,
                checksum: Checksum([4; 32]),
                size: 173,
                usize: 85,
                objects: vec![
                    ObjectName::new(Checksum([5; 32]), ObjectType::DirTree),
                    ObjectName::new(Checksum([6; 32]), ObjectType::File),
                ],
            }],
            fallbacks: vec![Fallback {
                object: ObjectName::new(Checksum([7; 32]), ObjectType::File),
                size: 5_000_000,
                usize: 9_000_000,
            }],
            endianness: e,
            endianness_guessed: false,
        }
    }

    #[test]
    fn superblock_roundtrips_in_both_byte_orders() {
        for e in [Endianness::Little, Endianness::Big] {
            let sb = sample(e);
            let bytes = sb.to_bytes();
            assert_eq!(Superblock::from_bytes(&bytes).unwrap(), sb);
        }
    }

    #[test]
    fn sizes_are_native_and_timestamp_big_endian() {
        let bytes = sample(Endianness::Little).to_bytes();
        assert!(
            bytes
                .windows(8)
                .any(|w| w == 1_700_000_000u64.to_be_bytes())
        );
        assert!(bytes.windows(8).any(|w| w == 173u64.to_le_bytes()));
        assert!(bytes.windows(8).any(|w| w == 5_000_000u64.to_le_bytes()));
    }

    #[test]
    fn legacy_superblock_without_endianness_key_is_guessed() {
        let mut sb = sample(Endianness::Big);
        sb.metadata = Metadata::new();
        let bytes = sb.to_bytes();
        let back = Superblock::from_bytes(&bytes).unwrap();
        assert_eq!(back.endianness, Endianness::Big);
        assert!(back.endianness_guessed);
        assert_eq!(back.parts[0].size, 173);
    }

    #[test]
    fn signed_superblock_unwraps() {
        let sb = sample(Endianness::Little);
        let mut sigs = Metadata::new();
        sigs.insert("ostree.sign.ed25519", Value::bytes_array(&[vec![9; 64]]));
        let signed = SignedSuperblock {
            superblock: sb.to_bytes(),
            signatures: sigs,
        };
        let bytes = signed.to_bytes();
        assert!(bytes.starts_with(b"OSTSGNDT"));
        let (back, wrapper) = parse_superblock_file(&bytes).unwrap();
        assert_eq!(back, sb);
        assert_eq!(wrapper.unwrap().engines(), vec!["ed25519".to_string()]);
        let key = SigningKey::generate().unwrap();
        let mut keys = PublicKeys::default();
        keys.add_base64(&key.public_base64()).unwrap();
        let signed = SignedSuperblock::sign_ed25519(sb.to_bytes(), &[key]);
        let (back, wrapper) = parse_superblock_file(&signed.to_bytes()).unwrap();
        assert_eq!(back, sb);
        assert!(wrapper.unwrap().verify_ed25519(&keys));
        let mut tampered = signed.clone();
        tampered.superblock[10] ^= 1;
        assert!(!tampered.verify_ed25519(&keys));
        let (plain, none) = parse_superblock_file(&sb.to_bytes()).unwrap();
        assert_eq!(plain, sb);
        assert!(none.is_none());
    }

    #[test]
    fn corrupted_superblocks_are_rejected_not_panicking() {
        let bytes = sample(Endianness::Little).to_bytes();
        for n in 0..bytes.len() {
            assert!(Superblock::from_bytes(&bytes[..n]).is_err());
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(Superblock::from_bytes(&extra).is_err());
        for i in (0..bytes.len()).step_by(7) {
            let mut b = bytes.clone();
            b[i] ^= 0x5a;
            let _ = Superblock::from_bytes(&b);
        }
    }
}
