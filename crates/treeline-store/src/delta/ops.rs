//! Part bytecode: opcodes with LEB128 arguments.

use crate::checksum::{ObjectName, ObjectType};
use crate::object::DecodeError;

/// One operation of a part. Each `Splice*` and `Close` finishes the current object of
/// the part's object list and moves to the next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `S` on a metadata object: write `payload[offset..offset+size]` as the object.
    SpliceMeta {
        /// Object length.
        size: u64,
        /// Payload offset.
        offset: u64,
    },
    /// `S` on a content object: a regular file's content or a symlink's target from the
    /// payload, with its mode and xattrs from the part's tables.
    SpliceContent {
        /// Mode table index.
        mode: u64,
        /// Xattr table index.
        xattr: u64,
        /// Content (or target) length.
        size: u64,
        /// Payload offset.
        offset: u64,
    },
    /// `o`: start a regular file of `size` bytes, filled by `Write` and `Bspatch`.
    Open {
        /// Mode table index.
        mode: u64,
        /// Xattr table index.
        xattr: u64,
        /// Content length.
        size: u64,
    },
    /// `w`: append `size` bytes from the read source at `offset`, or from the payload
    /// when no read source is set.
    Write {
        /// Length.
        size: u64,
        /// Offset in the read source or the payload.
        offset: u64,
    },
    /// `r`: `payload[offset..offset+32]` names an existing content object to read from.
    SetReadSource {
        /// Payload offset of the checksum.
        offset: u64,
    },
    /// `R`: stop reading from the read source.
    UnsetReadSource,
    /// `c`: finish the open object (verify and store it), unset the read source.
    Close,
    /// `B`: apply the bsdiff patch `payload[offset..offset+size]` to the read source,
    /// producing the open object's whole content.
    Bspatch {
        /// Payload offset of the patch.
        offset: u64,
        /// Patch length.
        size: u64,
    },
}

impl Op {
    /// The opcode byte.
    pub fn code(&self) -> u8 {
        match self {
            Op::SpliceMeta { .. } | Op::SpliceContent { .. } => b'S',
            Op::Open { .. } => b'o',
            Op::Write { .. } => b'w',
            Op::SetReadSource { .. } => b'r',
            Op::UnsetReadSource => b'R',
            Op::Close => b'c',
            Op::Bspatch { .. } => b'B',
        }
    }

    fn args(&self) -> Vec<u64> {
        match *self {
            Op::SpliceMeta { size, offset } => vec![size, offset],
            Op::SpliceContent {
                mode,
                xattr,
                size,
                offset,
            } => vec![mode, xattr, size, offset],
            Op::Open { mode, xattr, size } => vec![mode, xattr, size],
            Op::Write { size, offset } => vec![size, offset],
            Op::SetReadSource { offset } => vec![offset],
            Op::UnsetReadSource | Op::Close => vec![],
            Op::Bspatch { offset, size } => vec![offset, size],
        }
    }

    /// Append the encoded operation.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.code());
        for a in self.args() {
            write_varint(out, a);
        }
    }
}

/// Append an unsigned LEB128 number.
pub(crate) fn write_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Read an unsigned LEB128 number (at most 10 bytes).
pub(crate) fn read_varint(data: &[u8], pos: &mut usize) -> Result<u64, DecodeError> {
    let mut v = 0u64;
    for i in 0..10 {
        let b = *data
            .get(*pos)
            .ok_or("unexpected end of operations reading a varint")?;
        *pos += 1;
        let bits = u64::from(b & 0x7f);
        if i == 9 && bits > 1 {
            return Err("varint overflows 64 bits".into());
        }
        v |= bits << (7 * i);
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("varint longer than 10 bytes".into())
}

/// Encode a sequence of operations.
pub fn encode_ops(ops: &[Op]) -> Vec<u8> {
    let mut out = Vec::new();
    for op in ops {
        op.encode(&mut out);
    }
    out
}

/// Decode a part's operations. The object list says which objects `S` writes (its
/// arguments differ for metadata and content).
pub fn decode_ops(data: &[u8], objects: &[ObjectName]) -> Result<Vec<Op>, DecodeError> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    let mut index = 0usize;
    while pos < data.len() {
        let at = pos;
        let code = data[pos];
        pos += 1;
        let mut arg = || read_varint(data, &mut pos).map_err(|e| format!("op at {at}: {e}"));
        let op = match code {
            b'S' => {
                let obj = objects.get(index).ok_or_else(|| {
                    format!(
                        "op at {at} writes object {index}, but the part lists {}",
                        objects.len()
                    )
                })?;
                index += 1;
                if obj.objtype == ObjectType::File {
                    Op::SpliceContent {
                        mode: arg()?,
                        xattr: arg()?,
                        size: arg()?,
                        offset: arg()?,
                    }
                } else {
                    Op::SpliceMeta {
                        size: arg()?,
                        offset: arg()?,
                    }
                }
            }
            b'o' => Op::Open {
                mode: arg()?,
                xattr: arg()?,
                size: arg()?,
            },
            b'w' => Op::Write {
                size: arg()?,
                offset: arg()?,
            },
            b'r' => Op::SetReadSource { offset: arg()? },
            b'R' => Op::UnsetReadSource,
            b'c' => {
                index += 1;
                Op::Close
            }
            b'B' => Op::Bspatch {
                offset: arg()?,
                size: arg()?,
            },
            other => return Err(format!("unknown opcode {other:#04x} at {at}")),
        };
        out.push(op);
    }
    Ok(out)
}

/// How many of each operation a part has, as `ostree static-delta show` counts them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpCounts {
    /// `S`.
    pub open_splice_close: u32,
    /// `o`.
    pub open: u32,
    /// `w`.
    pub write: u32,
    /// `r`.
    pub set_read: u32,
    /// `R`.
    pub unset_read: u32,
    /// `c`.
    pub close: u32,
    /// `B`.
    pub bspatch: u32,
}

impl OpCounts {
    /// Count a sequence of operations.
    pub fn of(ops: &[Op]) -> Self {
        let mut c = OpCounts::default();
        for op in ops {
            let slot = match op {
                Op::SpliceMeta { .. } | Op::SpliceContent { .. } => &mut c.open_splice_close,
                Op::Open { .. } => &mut c.open,
                Op::Write { .. } => &mut c.write,
                Op::SetReadSource { .. } => &mut c.set_read,
                Op::UnsetReadSource => &mut c.unset_read,
                Op::Close => &mut c.close,
                Op::Bspatch { .. } => &mut c.bspatch,
            };
            *slot += 1;
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::Checksum;

    #[test]
    fn varints_are_leb128() {
        let mut out = Vec::new();
        write_varint(&mut out, 0);
        write_varint(&mut out, 127);
        write_varint(&mut out, 128);
        write_varint(&mut out, 200_024);
        write_varint(&mut out, u64::MAX);
        assert_eq!(&out[..4], &[0, 0x7f, 0x80, 0x01]);
        let mut pos = 0;
        for want in [0, 127, 128, 200_024, u64::MAX] {
            assert_eq!(read_varint(&out, &mut pos).unwrap(), want);
        }
        assert_eq!(pos, out.len());
        assert!(read_varint(&[0x80], &mut 0).is_err());
        assert!(read_varint(&[0xff; 10], &mut 0).is_err());
        assert!(
            read_varint(
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
                &mut 0
            )
            .is_err()
        );
    }

    #[test]
    fn ostree_dump_decodes() {
        // From the format notes: S(meta 355@0) r(355) o(0,0,200000) B(387,200024) c R
        // S(content 0,1,12@200411).
        let objects = [
            ObjectName::new(Checksum([1; 32]), ObjectType::DirTree),
            ObjectName::new(Checksum([2; 32]), ObjectType::File),
            ObjectName::new(Checksum([3; 32]), ObjectType::File),
        ];
        let ops = vec![
            Op::SpliceMeta {
                size: 355,
                offset: 0,
            },
            Op::SetReadSource { offset: 355 },
            Op::Open {
                mode: 0,
                xattr: 0,
                size: 200_000,
            },
            Op::Bspatch {
                offset: 387,
                size: 200_024,
            },
            Op::Close,
            Op::UnsetReadSource,
            Op::SpliceContent {
                mode: 0,
                xattr: 1,
                size: 12,
                offset: 200_411,
            },
        ];
        let bytes = encode_ops(&ops);
        assert_eq!(bytes[0], b'S');
        assert_eq!(decode_ops(&bytes, &objects).unwrap(), ops);
        let counts = OpCounts::of(&ops);
        assert_eq!(
            (counts.open_splice_close, counts.bspatch, counts.close),
            (2, 1, 1)
        );
        // One object fewer than the ops write.
        assert!(decode_ops(&bytes, &objects[..2]).is_err());
        assert!(decode_ops(b"Z", &objects).is_err());
        assert!(decode_ops(b"S", &objects).is_err());
    }
}
