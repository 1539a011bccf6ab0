//! Part files: a compression byte, then the part variant `(a(uuu)aa(ayay)ayay)`.

use std::io::{Read, Write};

use liblzma::stream::{Check, Stream};

use super::gv::{
    Member, TupleWriter, decode_xattr_set, encode_xattr_set, split_fixed_array, split_tuple,
    split_var_array, var_array,
};
use crate::object::{DecodeError, FileHeader};

/// A mode table entry: uid, gid and mode (with type bits), as numbers (stored big-endian).
pub type ModeEntry = (u32, u32, u32);

/// An xattr table entry, as stored: names keep their trailing NUL, order as written.
pub type XattrSet = Vec<(Vec<u8>, Vec<u8>)>;

/// The xz preset ostree compresses parts with (and the check it uses, CRC64).
const XZ_PRESET: u32 = 8;

/// The decoder memory limit for xz parts (ostree's preset 8 needs 33 MiB).
const XZ_MEMLIMIT: u64 = 100 << 20;

/// The largest decompressed part [`decompress_part`] accepts by default: parts are cut
/// at 32 MB, but a single large object makes a part as large as itself.
pub const PART_DECOMPRESSED_LIMIT: u64 = 4 << 30;

/// A decompressed part: the tables, the payload blob and the operations that use them.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct DeltaPart {
    /// (uid, gid, mode) entries referenced by content operations.
    pub modes: Vec<ModeEntry>,
    /// Xattr sets referenced by content operations.
    pub xattrs: Vec<XattrSet>,
    /// The data the operations copy from.
    pub payload: Vec<u8>,
    /// The bytecode (see [`Op`](super::Op)).
    pub ops: Vec<u8>,
}

impl DeltaPart {
    /// Encode the part variant (uncompressed, without the compression byte).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut modes = Vec::with_capacity(self.modes.len() * 12);
        for (u, g, m) in &self.modes {
            modes.extend_from_slice(&u.to_be_bytes());
            modes.extend_from_slice(&g.to_be_bytes());
            modes.extend_from_slice(&m.to_be_bytes());
        }
        let xattrs: Vec<Vec<u8>> = self.xattrs.iter().map(|x| encode_xattr_set(x)).collect();
        let xattrs = var_array(1, xattrs.iter().map(Vec::as_slice));
        let mut out = Vec::with_capacity(
            modes.len() + xattrs.len() + self.payload.len() + self.ops.len() + 32,
        );
        let mut t = TupleWriter::new();
        t.var(4, &modes).var(1, &xattrs).var(1, &self.payload);
        out.extend_from_slice(&t.finish_with(1, &self.ops));
        out
    }

    /// Decode a part variant, rejecting anything not in normal form.
    pub fn from_bytes(data: &[u8]) -> Result<Self, DecodeError> {
        let m = split_tuple(
            data,
            &[
                Member::var(4),
                Member::var(1),
                Member::var(1),
                Member::var(1),
            ],
        )?;
        let modes = split_fixed_array(m[0], 12)?
            .into_iter()
            .map(|e| {
                let be = |i: usize| u32::from_be_bytes([e[i], e[i + 1], e[i + 2], e[i + 3]]);
                (be(0), be(4), be(8))
            })
            .collect();
        let xattrs = split_var_array(m[1], 1)?
            .into_iter()
            .map(decode_xattr_set)
            .collect::<Result<_, _>>()?;
        let part = DeltaPart {
            modes,
            xattrs,
            payload: m[2].to_vec(),
            ops: m[3].to_vec(),
        };
        if part.to_bytes() != data {
            return Err("part is not in GVariant normal form".into());
        }
        Ok(part)
    }

    /// Index of a mode entry, adding it if new.
    pub(crate) fn mode_index(&mut self, entry: ModeEntry) -> usize {
        match self.modes.iter().position(|m| *m == entry) {
            Some(i) => i,
            None => {
                self.modes.push(entry);
                self.modes.len() - 1
            }
        }
    }

    /// The file header an operation describes with table indexes; the symlink target is
    /// left empty.
    pub fn file_header(
        &self,
        mode_index: u64,
        xattr_index: u64,
    ) -> Result<FileHeader, DecodeError> {
        let (uid, gid, mode) = usize::try_from(mode_index)
            .ok()
            .and_then(|i| self.modes.get(i))
            .copied()
            .ok_or_else(|| {
                format!(
                    "mode index {mode_index} is outside the table of {}",
                    self.modes.len()
                )
            })?;
        let set = usize::try_from(xattr_index)
            .ok()
            .and_then(|i| self.xattrs.get(i))
            .ok_or_else(|| {
                format!(
                    "xattr index {xattr_index} is outside the table of {}",
                    self.xattrs.len()
                )
            })?;
        let xattrs =
            crate::object::decode_xattrs(set.iter().map(|(n, v)| (n.as_slice(), v.as_slice())))?;
        Ok(FileHeader {
            uid,
            gid,
            mode,
            symlink_target: String::new(),
            xattrs,
        })
    }
}

/// How a part file is compressed (its first byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// `0x00`: the part variant as is.
    None,
    /// `'x'`: an xz stream (preset 8, CRC64), what ostree always writes.
    Xz,
}

/// Make a part file from a part variant.
pub fn compress_part(variant: &[u8], compression: Compression) -> std::io::Result<Vec<u8>> {
    match compression {
        Compression::None => {
            let mut out = Vec::with_capacity(variant.len() + 1);
            out.push(0);
            out.extend_from_slice(variant);
            Ok(out)
        }
        Compression::Xz => {
            let stream = Stream::new_easy_encoder(XZ_PRESET, Check::Crc64)?;
            let mut enc = liblzma::write::XzEncoder::new_stream(
                Vec::with_capacity(variant.len() / 3),
                stream,
            );
            enc.get_mut().push(b'x');
            enc.write_all(variant)?;
            enc.finish()
        }
    }
}

/// The part variant inside a part file. The output is refused past `limit` bytes, and
/// the xz decoder runs with a 100 MiB memory limit, so a hostile part cannot exhaust
/// memory.
pub fn decompress_part(file: &[u8], limit: u64) -> Result<Vec<u8>, DecodeError> {
    let (&kind, body) = file.split_first().ok_or("empty part file")?;
    match kind {
        0 => {
            if body.len() as u64 > limit {
                return Err(format!("part is larger than the {limit}-byte limit"));
            }
            Ok(body.to_vec())
        }
        b'x' => {
            let stream =
                Stream::new_stream_decoder(XZ_MEMLIMIT, 0).map_err(|e| format!("xz: {e}"))?;
            let dec = liblzma::read::XzDecoder::new_stream(body, stream);
            let mut out = Vec::new();
            dec.take(limit.saturating_add(1))
                .read_to_end(&mut out)
                .map_err(|e| format!("xz: {e}"))?;
            if out.len() as u64 > limit {
                return Err(format!(
                    "part decompresses to more than the {limit}-byte limit"
                ));
            }
            Ok(out)
        }
        other => Err(format!("unknown part compression type {other:#04x}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> DeltaPart {
        DeltaPart {
            modes: vec![(0, 0, 0o100644), (1000, 1000, 0o120777)],
            xattrs: vec![vec![], vec![(b"user.a\0".to_vec(), b"A".to_vec())]],
            payload: b"hello\nworld\n".to_vec(),
            ops: vec![b'S', 0, 0, 6, 0],
        }
    }

    #[test]
    fn part_variant_roundtrips() {
        let p = sample();
        let b = p.to_bytes();
        assert_eq!(DeltaPart::from_bytes(&b).unwrap(), p);
        assert_eq!(
            DeltaPart::from_bytes(&DeltaPart::default().to_bytes()).unwrap(),
            DeltaPart::default()
        );
    }

    #[test]
    fn mode_table_is_big_endian() {
        let b = sample().to_bytes();
        assert_eq!(&b[..12], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x81, 0xa4]);
    }

    #[test]
    fn compression_roundtrips_and_is_reproducible() {
        let v = sample().to_bytes();
        for c in [Compression::None, Compression::Xz] {
            let f = compress_part(&v, c).unwrap();
            assert_eq!(decompress_part(&f, 1 << 20).unwrap(), v);
            assert_eq!(compress_part(&v, c).unwrap(), f);
        }
        let xz = compress_part(&v, Compression::Xz).unwrap();
        assert_eq!(xz[0], b'x');
        assert_eq!(&xz[1..7], b"\xfd7zXZ\0");
    }

    #[test]
    fn decompression_is_bounded_and_checked() {
        let big = vec![0u8; 1 << 20];
        let f = compress_part(&big, Compression::Xz).unwrap();
        assert!(decompress_part(&f, 1000).is_err());
        assert!(decompress_part(&[b'g', 1, 2], 1000).is_err());
        assert!(decompress_part(&[], 1000).is_err());
        let mut bad = f.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 1;
        assert!(decompress_part(&bad, 2 << 20).is_err());
    }

    #[test]
    fn file_headers_come_from_the_tables() {
        let p = sample();
        let h = p.file_header(1, 1).unwrap();
        assert_eq!((h.uid, h.mode), (1000, 0o120777));
        assert_eq!(h.xattrs, vec![(b"user.a".to_vec(), b"A".to_vec())]);
        assert!(p.file_header(2, 0).is_err());
        assert!(p.file_header(0, 9).is_err());
    }
}
