//! Low-level readers shared by packages and indexes: a buffered file reader that hashes
//! exactly the compressed bytes a gzip decoder consumes (so member boundaries and member
//! digests come out without recompressing), and a streaming tar reader with apk's rules.

use std::io::{self, BufRead, Read};
use std::path::Path;

use sha1::Digest as _;

use super::Error;

/// SHA-1, SHA-256 and SHA-512 running over the same bytes: apk signatures may use any of
/// the three, and the identity is the SHA-1.
#[derive(Clone, Default)]
pub(crate) struct Digests {
    sha1: sha1::Sha1,
    sha256: sha2::Sha256,
    sha512: sha2::Sha512,
}

/// Finished [`Digests`].
#[derive(Clone, Debug)]
pub(crate) struct DigestValues {
    pub sha1: [u8; 20],
    pub sha256: [u8; 32],
    pub sha512: [u8; 64],
}

impl Digests {
    pub fn update(&mut self, bytes: &[u8]) {
        self.sha1.update(bytes);
        self.sha256.update(bytes);
        self.sha512.update(bytes);
    }

    pub fn finish(self) -> DigestValues {
        DigestValues {
            sha1: self.sha1.finalize().into(),
            sha256: self.sha256.finalize().into(),
            sha512: self.sha512.finalize().into(),
        }
    }
}

/// A buffered reader that counts and hashes the bytes its consumer `consume`s, so a
/// `flate2::bufread` decoder on top of it leaves exactly one gzip member's bytes counted.
pub(crate) struct CountingReader<R> {
    inner: R,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// Bytes consumed so far (the file offset when reading from the start).
    pub pos: u64,
    /// When set, every consumed byte goes through these digests.
    pub digests: Option<Digests>,
}

impl<R: Read> CountingReader<R> {
    pub fn new(inner: R, pos: u64) -> Self {
        CountingReader {
            inner,
            buf: vec![0; 64 * 1024].into_boxed_slice(),
            start: 0,
            end: 0,
            pos,
            digests: None,
        }
    }

    /// Whether nothing is left to read.
    pub fn at_eof(&mut self) -> io::Result<bool> {
        Ok(self.fill_buf()?.is_empty())
    }
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(out.len());
        out[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: Read> BufRead for CountingReader<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            loop {
                match self.inner.read(&mut self.buf) {
                    Ok(n) => {
                        self.end = n;
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(&self.buf[self.start..self.end])
    }

    fn consume(&mut self, amount: usize) {
        let amount = amount.min(self.end - self.start);
        if let Some(digests) = &mut self.digests {
            digests.update(&self.buf[self.start..self.start + amount]);
        }
        self.start += amount;
        self.pos += amount as u64;
    }
}

/// Why a tar stream could not be read.
#[derive(Debug)]
pub(crate) enum TarError {
    /// The underlying reader (file or gzip decoder) failed.
    Io(io::Error),
    /// The stream ends inside a header or an entry.
    Truncated(String),
    /// A header or extended header is malformed.
    Format(String),
}

impl From<io::Error> for TarError {
    fn from(e: io::Error) -> Self {
        TarError::Io(e)
    }
}

impl TarError {
    /// Turns this into a crate error about `member` of the file at `path`.
    pub fn into_error(self, path: &Path, member: &'static str) -> Error {
        match self {
            TarError::Io(e) => io_error(path, member, e),
            TarError::Truncated(what) => Error::Truncated {
                path: path.to_path_buf(),
                what: format!("{member} member: {what}"),
            },
            TarError::Format(what) => Error::Format {
                path: path.to_path_buf(),
                what: format!("{member} member: {what}"),
            },
        }
    }
}

/// Classifies an I/O error met while decompressing `member`: an early end is truncation,
/// invalid input is bad gzip, anything else is the file itself failing.
pub(crate) fn io_error(path: &Path, member: &'static str, error: io::Error) -> Error {
    match error.kind() {
        io::ErrorKind::UnexpectedEof => Error::Truncated {
            path: path.to_path_buf(),
            what: format!("{member} member ends early ({error})"),
        },
        io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData => Error::BadGzip {
            path: path.to_path_buf(),
            member,
            error,
        },
        _ => Error::Io {
            path: path.to_path_buf(),
            error,
        },
    }
}

/// One tar entry's header, with GNU long names and pax records already applied.
#[derive(Debug, Clone)]
pub(crate) struct TarHeader {
    /// The entry name: pax `path`, else GNU long name, else `prefix/name`.
    pub name: Vec<u8>,
    /// The link name: pax `linkpath`, else GNU long link, else the header field.
    pub link: Vec<u8>,
    pub typeflag: u8,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    pub mtime: u64,
    pub uname: String,
    pub gname: String,
    /// Records of the pax `x` header just before this entry, in order.
    pub pax: Vec<(String, Vec<u8>)>,
}

/// How a tar stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TarEnd {
    /// End of input at a header boundary: a "cut" tar (apk's control and signature tars).
    Cut,
    /// Two end-of-archive blocks.
    Marker,
}

/// Largest pax or GNU long-name header we accept; real ones are a few hundred bytes.
const MAX_EXTENSION_SIZE: u64 = 1 << 20;

/// A streaming tar reader following apk's reader: `ustar` magic required, a block whose
/// name starts with NUL counts as an end block and the second one ends the archive.
pub(crate) struct TarReader<R> {
    inner: R,
    /// Content bytes of the current entry not yet read.
    remaining: u64,
    /// Padding after the current entry's content.
    padding: u64,
    zero_blocks: u32,
    end: Option<TarEnd>,
}

impl<R: Read> TarReader<R> {
    pub fn new(inner: R) -> Self {
        TarReader {
            inner,
            remaining: 0,
            padding: 0,
            zero_blocks: 0,
            end: None,
        }
    }

    /// The underlying reader, positioned after what was read.
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// How the archive ended, once [`next_header`](Self::next_header) returned `None`.
    pub fn end(&self) -> Option<TarEnd> {
        self.end
    }

    /// Content bytes of the current entry not read yet.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// Reads the current entry's content.
    pub fn read_content(&mut self, out: &mut [u8]) -> Result<usize, TarError> {
        if self.remaining == 0 || out.is_empty() {
            return Ok(0);
        }
        let want = usize::try_from(self.remaining)
            .unwrap_or(usize::MAX)
            .min(out.len());
        let n = loop {
            match self.inner.read(&mut out[..want]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(TarError::Io(e)),
            }
        };
        if n == 0 {
            return Err(TarError::Truncated(format!(
                "entry content ends {} bytes early",
                self.remaining
            )));
        }
        self.remaining -= n as u64;
        Ok(n)
    }

    /// Reads the whole current entry into memory, refusing more than `limit` bytes.
    pub fn read_content_to_vec(&mut self, limit: u64, what: &str) -> Result<Vec<u8>, TarError> {
        if self.remaining > limit {
            return Err(TarError::Format(format!(
                "{what} is {} bytes, more than the {limit} allowed",
                self.remaining
            )));
        }
        let mut content = vec![0; usize::try_from(self.remaining).unwrap_or(0)];
        let mut filled = 0;
        while filled < content.len() {
            filled += self.read_content(&mut content[filled..])?;
        }
        Ok(content)
    }

    fn skip(&mut self, mut amount: u64) -> Result<(), TarError> {
        let mut scratch = [0u8; 8192];
        while amount > 0 {
            let want = usize::try_from(amount)
                .unwrap_or(scratch.len())
                .min(scratch.len());
            let n = self.inner.read(&mut scratch[..want])?;
            if n == 0 {
                return Err(TarError::Truncated("entry content ends early".into()));
            }
            amount -= n as u64;
        }
        Ok(())
    }

    /// Reads one 512-byte block; `None` at a clean end of input.
    fn read_block(&mut self) -> Result<Option<[u8; 512]>, TarError> {
        let mut block = [0u8; 512];
        let mut filled = 0;
        while filled < block.len() {
            let n = match self.inner.read(&mut block[filled..]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(TarError::Io(e)),
            };
            if n == 0 {
                if filled == 0 {
                    return Ok(None);
                }
                return Err(TarError::Truncated(format!(
                    "tar header cut after {filled} of 512 bytes"
                )));
            }
            filled += n;
        }
        Ok(Some(block))
    }

    /// Skips what is left of the current entry and reads the next header. Pax, GNU
    /// long-name and global headers are folded into the entry they describe.
    pub fn next_header(&mut self) -> Result<Option<TarHeader>, TarError> {
        if self.end.is_some() {
            return Ok(None);
        }
        let rest = self.remaining + self.padding;
        self.remaining = 0;
        self.padding = 0;
        self.skip(rest)?;

        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        loop {
            let Some(block) = self.read_block()? else {
                if !pax.is_empty() || long_name.is_some() || long_link.is_some() {
                    return Err(TarError::Truncated(
                        "archive ends after an extended header".into(),
                    ));
                }
                self.end = Some(TarEnd::Cut);
                return Ok(None);
            };
            if block[0] == 0 {
                self.zero_blocks += 1;
                if self.zero_blocks >= 2 {
                    self.end = Some(TarEnd::Marker);
                    return Ok(None);
                }
                continue;
            }
            let header = parse_header(&block)?;
            let padding = (512 - header.size % 512) % 512;
            match header.typeflag {
                b'x' | b'L' | b'K' => {
                    if header.size > MAX_EXTENSION_SIZE {
                        return Err(TarError::Format(format!(
                            "extended header of {} bytes is too large",
                            header.size
                        )));
                    }
                    self.remaining = header.size;
                    let content =
                        self.read_content_to_vec(MAX_EXTENSION_SIZE, "extended header")?;
                    self.skip(padding)?;
                    match header.typeflag {
                        b'x' => pax = parse_pax(&content)?,
                        b'L' => long_name = Some(trim_nul(&content).to_vec()),
                        _ => long_link = Some(trim_nul(&content).to_vec()),
                    }
                }
                b'g' => self.skip(header.size + padding)?,
                _ => {
                    let mut header = header;
                    if let Some(name) = long_name {
                        header.name = name;
                    }
                    if let Some(link) = long_link {
                        header.link = link;
                    }
                    for (key, value) in &pax {
                        match key.as_str() {
                            "path" => header.name = value.clone(),
                            "linkpath" => header.link = value.clone(),
                            "size" => {
                                header.size = std::str::from_utf8(value)
                                    .ok()
                                    .and_then(|s| s.parse().ok())
                                    .ok_or_else(|| TarError::Format("bad pax size record".into()))?
                            }
                            _ => {}
                        }
                    }
                    header.pax = pax;
                    // As in apk's reader, `size` bytes follow every entry type.
                    self.remaining = header.size;
                    self.padding = (512 - header.size % 512) % 512;
                    return Ok(Some(header));
                }
            }
        }
    }

    /// After the end-of-archive marker, reads to the end of input: only blocks that
    /// start with NUL (padding) may follow, as apk requires.
    pub fn finish(&mut self) -> Result<(), TarError> {
        if self.end == Some(TarEnd::Marker) {
            while let Some(block) = self.read_block()? {
                if block[0] != 0 {
                    return Err(TarError::Format(
                        "data follows the end-of-archive blocks".into(),
                    ));
                }
            }
        }
        Ok(())
    }
}

fn trim_nul(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    &bytes[..end]
}

fn field(block: &[u8; 512], start: usize, len: usize) -> &[u8] {
    block.get(start..start + len).unwrap_or(&[])
}

/// A numeric header field: octal text (space or NUL terminated) or GNU base-256.
fn parse_number(bytes: &[u8], what: &str) -> Result<u64, TarError> {
    if let Some((&first, rest)) = bytes.split_first()
        && first & 0x80 != 0
    {
        let mut value: u64 = u64::from(first & 0x7f);
        for &b in rest {
            value = value
                .checked_mul(256)
                .and_then(|v| v.checked_add(u64::from(b)))
                .ok_or_else(|| TarError::Format(format!("tar {what} field overflows")))?;
        }
        return Ok(value);
    }
    let text = bytes
        .iter()
        .skip_while(|&&b| b == b' ')
        .take_while(|&&b| b != 0 && b != b' ');
    let mut value: u64 = 0;
    for &b in text {
        if !(b'0'..=b'7').contains(&b) {
            return Err(TarError::Format(format!(
                "tar {what} field {:?} is not octal",
                String::from_utf8_lossy(trim_nul(bytes))
            )));
        }
        value = value
            .checked_mul(8)
            .and_then(|v| v.checked_add(u64::from(b - b'0')))
            .ok_or_else(|| TarError::Format(format!("tar {what} field overflows")))?;
    }
    Ok(value)
}

fn parse_header(block: &[u8; 512]) -> Result<TarHeader, TarError> {
    if !field(block, 257, 5).eq(b"ustar") {
        return Err(TarError::Format(
            "tar header without ustar magic (not a tar archive?)".into(),
        ));
    }
    let stored = parse_number(field(block, 148, 8), "checksum")?;
    let unsigned: u64 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(b)
            }
        })
        .sum();
    let signed: i64 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                i64::from(b as i8)
            }
        })
        .sum();
    if stored != unsigned && i64::try_from(stored).ok() != Some(signed) {
        return Err(TarError::Format(format!(
            "tar header checksum mismatch (stored {stored:o}, computed {unsigned:o})"
        )));
    }
    let name = trim_nul(field(block, 0, 100));
    // Only POSIX ustar has a prefix field; GNU keeps other data there.
    let posix = field(block, 257, 6) == b"ustar\0";
    let prefix = if posix {
        trim_nul(field(block, 345, 155))
    } else {
        &[]
    };
    let full_name = if prefix.is_empty() {
        name.to_vec()
    } else {
        [prefix, b"/", name].concat()
    };
    Ok(TarHeader {
        name: full_name,
        link: trim_nul(field(block, 157, 100)).to_vec(),
        typeflag: block[156],
        mode: u32::try_from(parse_number(field(block, 100, 8), "mode")? & 0o7777).unwrap_or(0),
        uid: parse_number(field(block, 108, 8), "uid")?,
        gid: parse_number(field(block, 116, 8), "gid")?,
        size: parse_number(field(block, 124, 12), "size")?,
        mtime: parse_number(field(block, 136, 12), "mtime")?,
        uname: String::from_utf8_lossy(trim_nul(field(block, 265, 32))).into_owned(),
        gname: String::from_utf8_lossy(trim_nul(field(block, 297, 32))).into_owned(),
        pax: Vec::new(),
    })
}

/// Pax records: `<len> <key>=<value>\n`, where len counts the whole record.
fn parse_pax(mut content: &[u8]) -> Result<Vec<(String, Vec<u8>)>, TarError> {
    let bad = || TarError::Format("malformed pax extended header".into());
    let mut records = Vec::new();
    while !content.is_empty() {
        if content.iter().all(|&b| b == 0) {
            break;
        }
        let space = content.iter().position(|&b| b == b' ').ok_or_else(bad)?;
        let len: usize = std::str::from_utf8(&content[..space])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)?;
        if len <= space + 1 || len > content.len() {
            return Err(bad());
        }
        let record = &content[space + 1..len];
        let record = record.strip_suffix(b"\n").ok_or_else(bad)?;
        let eq = record.iter().position(|&b| b == b'=').ok_or_else(bad)?;
        let key = String::from_utf8(record[..eq].to_vec()).map_err(|_| bad())?;
        records.push((key, record[eq + 1..].to_vec()));
        content = &content[len..];
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_block(name: &str, typeflag: u8, size: u64, magic: &[u8; 8]) -> [u8; 512] {
        let mut block = [0u8; 512];
        block[..name.len()].copy_from_slice(name.as_bytes());
        block[100..107].copy_from_slice(b"0000644");
        block[108..115].copy_from_slice(b"0000000");
        block[116..123].copy_from_slice(b"0000000");
        let size_text = format!("{size:011o}");
        block[124..135].copy_from_slice(size_text.as_bytes());
        block[136..147].copy_from_slice(b"00000000000");
        block[156] = typeflag;
        block[257..265].copy_from_slice(magic);
        block[148..156].copy_from_slice(b"        ");
        let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
        block[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        block
    }

    fn padded(content: &[u8]) -> Vec<u8> {
        let mut v = content.to_vec();
        v.resize(content.len().div_ceil(512) * 512, 0);
        v
    }

    #[test]
    fn reads_pax_records_and_cut_end() {
        let pax = b"30 APK-TOOLS.checksum.SHA1=ab\n";
        let mut tar = Vec::new();
        tar.extend(header_block(
            "./PaxHeaders/x",
            b'x',
            pax.len() as u64,
            b"ustar\x0000",
        ));
        tar.extend(padded(pax));
        tar.extend(header_block("x", b'0', 3, b"ustar\x0000"));
        tar.extend(padded(b"abc"));
        let mut reader = TarReader::new(&tar[..]);
        let header = reader.next_header().unwrap().unwrap();
        assert_eq!(header.name, b"x");
        assert_eq!(
            header.pax,
            vec![("APK-TOOLS.checksum.SHA1".to_string(), b"ab".to_vec())]
        );
        let content = reader.read_content_to_vec(10, "x").unwrap();
        assert_eq!(content, b"abc");
        assert!(reader.next_header().unwrap().is_none());
        assert_eq!(reader.end(), Some(TarEnd::Cut));
    }

    #[test]
    fn gnu_long_name_and_end_marker() {
        let long = "d/".repeat(80) + "file";
        let mut tar = Vec::new();
        tar.extend(header_block(
            "././@LongLink",
            b'L',
            long.len() as u64 + 1,
            b"ustar  \0",
        ));
        tar.extend(padded(format!("{long}\0").as_bytes()));
        tar.extend(header_block("short", b'0', 0, b"ustar  \0"));
        tar.extend([0u8; 1024]);
        let mut reader = TarReader::new(&tar[..]);
        assert_eq!(reader.next_header().unwrap().unwrap().name, long.as_bytes());
        assert!(reader.next_header().unwrap().is_none());
        assert_eq!(reader.end(), Some(TarEnd::Marker));
        reader.finish().unwrap();
    }

    #[test]
    fn refuses_bad_checksum_missing_magic_and_cut_header() {
        let mut block = header_block("x", b'0', 0, b"ustar\x0000");
        block[0] = b'y';
        assert!(matches!(
            TarReader::new(&block[..]).next_header(),
            Err(TarError::Format(m)) if m.contains("checksum")
        ));
        let plain = header_block("x", b'0', 0, b"nottar\0\0");
        assert!(matches!(
            TarReader::new(&plain[..]).next_header(),
            Err(TarError::Format(m)) if m.contains("ustar")
        ));
        let good = header_block("x", b'0', 0, b"ustar\x0000");
        assert!(matches!(
            TarReader::new(&good[..100]).next_header(),
            Err(TarError::Truncated(_))
        ));
    }

    #[test]
    fn base256_and_octal_numbers() {
        assert_eq!(parse_number(b"0000644\0", "mode").unwrap(), 0o644);
        assert_eq!(parse_number(b"  17 ", "x").unwrap(), 0o17);
        assert_eq!(parse_number(&[0x80, 0, 0, 1, 0], "x").unwrap(), 256);
        assert!(parse_number(b"9", "x").is_err());
    }
}
