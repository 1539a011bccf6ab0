//! The compressions Debian uses for package members and indexes, as one `Read`.

use std::io::{self, BufReader, Read};

/// A compression format, chosen by member-name suffix (`.deb`) or by magic bytes (indexes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
    Xz,
    Zstd,
    /// The legacy `.lzma` (lzma_alone) format dpkg still reads.
    Lzma,
}

impl Compression {
    /// The compression of a member called `{stem}{suffix}`; `None` for an unknown suffix.
    pub(crate) fn from_suffix(suffix: &str) -> Option<Compression> {
        Some(match suffix {
            "" => Compression::None,
            ".gz" => Compression::Gzip,
            ".xz" => Compression::Xz,
            ".zst" => Compression::Zstd,
            ".lzma" => Compression::Lzma,
            _ => return None,
        })
    }

    /// Guesses from the first bytes of a file; anything unrecognized is plain text.
    pub(crate) fn from_magic(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            Compression::Xz
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// A decompressing reader over `R`.
pub(crate) enum Decoder<R: Read> {
    None(R),
    Gzip(flate2::read::MultiGzDecoder<R>),
    Xz(liblzma::read::XzDecoder<R>),
    Zstd(zstd::stream::read::Decoder<'static, BufReader<R>>),
}

impl<R: Read> Decoder<R> {
    pub(crate) fn new(compression: Compression, reader: R) -> io::Result<Decoder<R>> {
        Ok(match compression {
            Compression::None => Decoder::None(reader),
            Compression::Gzip => Decoder::Gzip(flate2::read::MultiGzDecoder::new(reader)),
            Compression::Xz => Decoder::Xz(liblzma::read::XzDecoder::new_multi_decoder(reader)),
            Compression::Lzma => {
                let stream = liblzma::stream::Stream::new_lzma_decoder(u64::MAX)
                    .map_err(io::Error::other)?;
                Decoder::Xz(liblzma::read::XzDecoder::new_stream(reader, stream))
            }
            Compression::Zstd => Decoder::Zstd(zstd::stream::read::Decoder::new(reader)?),
        })
    }
}

impl<R: Read> Decoder<R> {
    /// The underlying reader (after the compressed stream has been read to its end).
    pub(crate) fn into_inner(self) -> R {
        match self {
            Decoder::None(reader) => reader,
            Decoder::Gzip(reader) => reader.into_inner(),
            Decoder::Xz(reader) => reader.into_inner(),
            Decoder::Zstd(reader) => reader.finish().into_inner(),
        }
    }
}

impl<R: Read> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoder::None(reader) => reader.read(buf),
            Decoder::Gzip(reader) => reader.read(buf),
            Decoder::Xz(reader) => reader.read(buf),
            Decoder::Zstd(reader) => reader.read(buf),
        }
    }
}
