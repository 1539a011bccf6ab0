//! Part files: a compression byte, then the part variant `(a(uuu)aa(ayay)ayay)`.

use std::io::{Read, Write};
use std::ops::Range;

use liblzma::stream::{Check, Filters, LzmaOptions, Stream};

use super::gv::{
    TupleWriter, decode_xattr_set, encode_xattr_set, offset_width, split_fixed_array,
    split_var_array, var_array, writer_width,
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
    ///
    /// Only the framing and the two tables are checked for normal form (the payload and
    /// the operations are byte strings, where any bytes are normal), so nothing as large
    /// as the payload is re-encoded.
    pub fn from_bytes(data: &[u8]) -> Result<Self, DecodeError> {
        let len = data.len() as u64;
        let framing = data
            .len()
            .checked_sub(PartLayout::framing_len(len))
            .map(|at| &data[at..])
            .ok_or("part is too short for its framing offsets")?;
        let layout = PartLayout::from_framing(len, framing)?;
        let slice = |r: &Range<u64>| -> &[u8] {
            // In bounds: `from_framing` checked every range against `len`.
            &data[r.start as usize..r.end as usize]
        };
        let tables = PartTables::decode(slice(&layout.modes), slice(&layout.xattrs))?;
        Ok(DeltaPart {
            modes: tables.modes,
            xattrs: tables.xattrs,
            payload: slice(&layout.payload).to_vec(),
            ops: slice(&layout.ops).to_vec(),
        })
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
        file_header(&self.modes, &self.xattrs, mode_index, xattr_index)
    }
}

/// Where the four members of a part variant lie, found from its framing offsets alone:
/// what lets a part be applied from a file without reading its payload into memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartLayout {
    /// The mode table, `a(uuu)`.
    pub modes: Range<u64>,
    /// The xattr table, `aa(ayay)`.
    pub xattrs: Range<u64>,
    /// The payload, `ay`.
    pub payload: Range<u64>,
    /// The operations, `ay`.
    pub ops: Range<u64>,
}

impl PartLayout {
    /// How many bytes at the end of a part variant of `len` bytes are its framing
    /// offsets.
    pub fn framing_len(len: u64) -> usize {
        3 * offset_width(usize::try_from(len).unwrap_or(usize::MAX))
    }

    /// The layout of a part variant of `len` bytes, from its last
    /// [`framing_len`](Self::framing_len) bytes. The framing must be in normal form:
    /// offsets of the width the length calls for, in order, inside the variant.
    pub fn from_framing(len: u64, framing: &[u8]) -> Result<Self, DecodeError> {
        let w = Self::framing_len(len) / 3;
        let body = len
            .checked_sub(3 * w as u64)
            .filter(|_| framing.len() == 3 * w)
            .ok_or("part is too short for its framing offsets")?;
        if usize::try_from(body).map_or(true, |b| writer_width(b, 3) != w) {
            return Err("part is not in GVariant normal form (framing offset width)".into());
        }
        // Offsets are stored last member first: payload, xattrs, modes.
        let offset = |i: usize| -> u64 {
            framing[i * w..(i + 1) * w]
                .iter()
                .rev()
                .fold(0u64, |v, b| (v << 8) | u64::from(*b))
        };
        let (payload_end, xattrs_end, modes_end) = (offset(0), offset(1), offset(2));
        if !(modes_end <= xattrs_end && xattrs_end <= payload_end && payload_end <= body) {
            return Err(format!(
                "part framing offsets {modes_end}, {xattrs_end}, {payload_end} are out of \
                 order or past the {body}-byte body"
            ));
        }
        Ok(PartLayout {
            modes: 0..modes_end,
            xattrs: modes_end..xattrs_end,
            payload: xattrs_end..payload_end,
            ops: payload_end..body,
        })
    }
}

/// A part's mode and xattr tables: what its operations describe file headers with.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct PartTables {
    /// (uid, gid, mode) entries.
    pub modes: Vec<ModeEntry>,
    /// Xattr sets.
    pub xattrs: Vec<XattrSet>,
}

impl PartTables {
    /// Decode the two tables from their bytes, rejecting anything not in normal form.
    pub fn decode(modes: &[u8], xattrs: &[u8]) -> Result<Self, DecodeError> {
        let modes = split_fixed_array(modes, 12)?
            .into_iter()
            .map(|e| {
                let be = |i: usize| u32::from_be_bytes([e[i], e[i + 1], e[i + 2], e[i + 3]]);
                (be(0), be(4), be(8))
            })
            .collect();
        let sets: Vec<XattrSet> = split_var_array(xattrs, 1)?
            .into_iter()
            .map(decode_xattr_set)
            .collect::<Result<_, _>>()?;
        let encoded: Vec<Vec<u8>> = sets.iter().map(|x| encode_xattr_set(x)).collect();
        if var_array(1, encoded.iter().map(Vec::as_slice)) != xattrs {
            return Err("part xattr table is not in GVariant normal form".into());
        }
        Ok(PartTables {
            modes,
            xattrs: sets,
        })
    }

    /// The file header an operation describes with table indexes; the symlink target is
    /// left empty.
    pub fn file_header(
        &self,
        mode_index: u64,
        xattr_index: u64,
    ) -> Result<FileHeader, DecodeError> {
        file_header(&self.modes, &self.xattrs, mode_index, xattr_index)
    }
}

fn file_header(
    modes: &[ModeEntry],
    xattr_sets: &[XattrSet],
    mode_index: u64,
    xattr_index: u64,
) -> Result<FileHeader, DecodeError> {
    let (uid, gid, mode) = usize::try_from(mode_index)
        .ok()
        .and_then(|i| modes.get(i))
        .copied()
        .ok_or_else(|| {
            format!(
                "mode index {mode_index} is outside the table of {}",
                modes.len()
            )
        })?;
    let set = usize::try_from(xattr_index)
        .ok()
        .and_then(|i| xattr_sets.get(i))
        .ok_or_else(|| {
            format!(
                "xattr index {xattr_index} is outside the table of {}",
                xattr_sets.len()
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

/// How [`compress_part_xz`] encodes a part. Any xz decoder reads the result (ostree's
/// included); what the settings change is the memory a client needs to decompress it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XzSettings {
    /// The LZMA2 dictionary size. A decoder allocates this much and touches up to this
    /// much (never more than the part's size), so it bounds the memory of applying a
    /// part. ostree's preset 8 uses 32 MiB.
    pub dict_size: u32,
    /// Run the x86 branch/call/jump filter first: x86 machine code then compresses
    /// about 10% better; other data loses a fraction of a percent.
    pub x86: bool,
}

impl Default for XzSettings {
    /// 12 MiB, without the x86 filter.
    fn default() -> Self {
        XzSettings {
            dict_size: 12 << 20,
            x86: false,
        }
    }
}

/// Make an xz part file from a part variant with the given settings (preset 8
/// otherwise, CRC64, as ostree).
pub fn compress_part_xz(variant: &[u8], settings: XzSettings) -> std::io::Result<Vec<u8>> {
    let mut lzma = LzmaOptions::new_preset(XZ_PRESET)?;
    lzma.dict_size(settings.dict_size.max(4096));
    let mut filters = Filters::new();
    if settings.x86 {
        filters.x86();
    }
    filters.lzma2(&lzma);
    let stream = Stream::new_stream_encoder(&filters, Check::Crc64)?;
    let mut enc =
        liblzma::write::XzEncoder::new_stream(Vec::with_capacity(variant.len() / 3), stream);
    enc.get_mut().push(b'x');
    enc.write_all(variant)?;
    enc.finish()
}

/// The part variant inside a part file. The output is refused past `limit` bytes, and
/// the xz decoder runs with a 100 MiB memory limit, so a hostile part cannot exhaust
/// memory.
pub fn decompress_part(file: &[u8], limit: u64) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    part_reader(file, false)?
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| format!("xz: {e}"))?;
    if out.len() as u64 > limit {
        return Err(format!(
            "part decompresses to more than the {limit}-byte limit"
        ));
    }
    Ok(out)
}

/// A reader of the part variant inside the part file `file` yields: this reads the
/// compression byte, then decompresses as it is read, so a part never has to be in
/// memory whole. The xz decoder runs with a 100 MiB memory limit (ostree's parts need
/// 33 MiB: a 32 MiB dictionary, of which only as much as the part's size is touched);
/// read errors of the decoder mean a corrupt part. The caller bounds the output.
/// `checksummed`: the caller checks the part file's SHA-256 before using what it read,
/// so the xz stream's own CRC64 is not computed again.
pub fn part_reader<'a, R: Read + 'a>(
    mut file: R,
    checksummed: bool,
) -> Result<Box<dyn Read + 'a>, DecodeError> {
    let mut kind = [0u8; 1];
    loop {
        match file.read(&mut kind) {
            Ok(0) => return Err("empty part file".into()),
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("reading the part: {e}")),
        }
    }
    match kind[0] {
        0 => Ok(Box::new(file)),
        b'x' => {
            let flags = if checksummed {
                liblzma::stream::IGNORE_CHECK
            } else {
                0
            };
            let stream =
                Stream::new_stream_decoder(XZ_MEMLIMIT, flags).map_err(|e| format!("xz: {e}"))?;
            Ok(Box::new(liblzma::read::XzDecoder::new_stream(file, stream)))
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
