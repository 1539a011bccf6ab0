//! The few GVariant container rules the static-delta formats need, written out by hand.
//!
//! The superblock embeds a whole commit and a metadata dictionary whose values are only
//! known at run time, so its members are framed here from already-encoded bytes rather
//! than through compile-time types. Decoding splits containers into their members'
//! byte ranges and reports bad framing instead of guessing; callers re-encode what they
//! decoded and compare, which rejects anything not in normal form.

use super::part::XattrSet;

pub(crate) use crate::variant::offset_width;

/// The smallest offset width for a body of `body` bytes followed by `n` offsets.
pub(crate) fn writer_width(body: usize, n: usize) -> usize {
    [1usize, 2, 4]
        .into_iter()
        .find(|&w| {
            let max = (1u128 << (8 * w)) - 1;
            (body as u128) + (n as u128) * (w as u128) <= max
        })
        .unwrap_or(8)
}

fn push_offsets(buf: &mut Vec<u8>, offsets: impl ExactSizeIterator<Item = usize> + Clone) {
    let w = writer_width(buf.len(), offsets.len());
    for o in offsets {
        buf.extend_from_slice(&(o as u64).to_le_bytes()[..w]);
    }
}

fn pad_to(buf: &mut Vec<u8>, align: usize) {
    while !buf.len().is_multiple_of(align) {
        buf.push(0);
    }
}

/// Builds a non-fixed-size tuple member by member.
pub(crate) struct TupleWriter {
    buf: Vec<u8>,
    ends: Vec<usize>,
}

impl TupleWriter {
    pub(crate) fn new() -> Self {
        TupleWriter {
            buf: Vec::new(),
            ends: Vec::new(),
        }
    }

    /// A fixed-size member (its bytes are already its full fixed size).
    pub(crate) fn fixed(&mut self, align: usize, bytes: &[u8]) -> &mut Self {
        pad_to(&mut self.buf, align);
        self.buf.extend_from_slice(bytes);
        self
    }

    /// A variable-size member that is not the last one: its end is framed.
    pub(crate) fn var(&mut self, align: usize, bytes: &[u8]) -> &mut Self {
        pad_to(&mut self.buf, align);
        self.buf.extend_from_slice(bytes);
        self.ends.push(self.buf.len());
        self
    }

    /// A variable-size last member, then the framing offsets.
    pub(crate) fn finish_with(mut self, align: usize, bytes: &[u8]) -> Vec<u8> {
        pad_to(&mut self.buf, align);
        self.buf.extend_from_slice(bytes);
        self.finish()
    }

    /// The framing offsets, when the last member was fixed-size.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        let ends = std::mem::take(&mut self.ends);
        push_offsets(&mut self.buf, ends.into_iter().rev());
        self.buf
    }
}

/// An array of variable-size elements.
pub(crate) fn var_array<'a>(align: usize, elems: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut ends = Vec::new();
    for e in elems {
        pad_to(&mut buf, align);
        buf.extend_from_slice(e);
        ends.push(buf.len());
    }
    push_offsets(&mut buf, ends.into_iter());
    buf
}

/// How a tuple member is laid out.
#[derive(Clone, Copy)]
pub(crate) struct Member {
    align: usize,
    fixed: Option<usize>,
}

impl Member {
    /// A fixed-size member.
    pub(crate) const fn fixed(align: usize, size: usize) -> Self {
        Member {
            align,
            fixed: Some(size),
        }
    }

    /// A variable-size member.
    pub(crate) const fn var(align: usize) -> Self {
        Member { align, fixed: None }
    }
}

fn read_le(data: &[u8], at: usize, w: usize) -> Option<usize> {
    let bytes = data.get(at..at.checked_add(w)?)?;
    let mut v = 0u64;
    for (i, b) in bytes.iter().enumerate() {
        v |= u64::from(*b) << (8 * i);
    }
    usize::try_from(v).ok()
}

/// Split a non-fixed-size tuple into its members' bytes.
pub(crate) fn split_tuple<'a>(data: &'a [u8], members: &[Member]) -> Result<Vec<&'a [u8]>, String> {
    let w = offset_width(data.len());
    let n_offsets = members
        .iter()
        .enumerate()
        .filter(|(i, m)| m.fixed.is_none() && i + 1 < members.len())
        .count();
    let limit = data
        .len()
        .checked_sub(n_offsets * w)
        .ok_or("container too short for its framing offsets")?;
    let mut out = Vec::with_capacity(members.len());
    let mut pos = 0usize;
    let mut used = 0usize;
    for (i, m) in members.iter().enumerate() {
        let start = pos.div_ceil(m.align) * m.align;
        let end = match m.fixed {
            Some(size) => start + size,
            None if i + 1 == members.len() => limit,
            None => {
                used += 1;
                read_le(data, data.len() - used * w, w).ok_or("bad framing offset")?
            }
        };
        if start > end || end > limit {
            return Err(format!(
                "member {i} spans {start}..{end}, outside the container"
            ));
        }
        out.push(&data[start..end]);
        pos = end;
    }
    Ok(out)
}

/// Split an array of variable-size elements.
pub(crate) fn split_var_array(data: &[u8], align: usize) -> Result<Vec<&[u8]>, String> {
    if data.is_empty() {
        return Ok(Vec::new());
    }
    let w = offset_width(data.len());
    let table = read_le(data, data.len() - w, w).ok_or("bad framing offset")?;
    if table > data.len() || !(data.len() - table).is_multiple_of(w) {
        return Err("array framing offsets are inconsistent".into());
    }
    let n = (data.len() - table) / w;
    let mut out = Vec::with_capacity(n);
    let mut start = 0usize;
    for i in 0..n {
        let end = read_le(data, table + i * w, w).ok_or("bad framing offset")?;
        let s = start.div_ceil(align) * align;
        if s > end || end > table {
            return Err(format!(
                "array element {i} spans {s}..{end}, outside the array"
            ));
        }
        out.push(&data[s..end]);
        start = end;
    }
    Ok(out)
}

/// Split an array of fixed-size elements.
pub(crate) fn split_fixed_array(data: &[u8], size: usize) -> Result<Vec<&[u8]>, String> {
    if !data.len().is_multiple_of(size) {
        return Err(format!(
            "array of {size}-byte elements is {} bytes long",
            data.len()
        ));
    }
    Ok(data.chunks_exact(size).collect())
}

/// `a(ayay)` entries as stored: names keep their trailing NUL, order kept.
pub(crate) fn encode_xattr_set(entries: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let elems: Vec<Vec<u8>> = entries
        .iter()
        .map(|(n, v)| {
            let mut t = TupleWriter::new();
            t.var(1, n);
            t.finish_with(1, v)
        })
        .collect();
    var_array(1, elems.iter().map(Vec::as_slice))
}

/// Decode `a(ayay)`.
pub(crate) fn decode_xattr_set(data: &[u8]) -> Result<XattrSet, String> {
    split_var_array(data, 1)?
        .into_iter()
        .map(|e| {
            let m = split_tuple(e, &[Member::var(1), Member::var(1)])?;
            Ok((m[0].to_vec(), m[1].to_vec()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_widen_with_the_body() {
        assert_eq!(writer_width(0xfe, 1), 1);
        assert_eq!(writer_width(0xff, 1), 2);
        assert_eq!(writer_width(0xfffd, 1), 2);
        assert_eq!(writer_width(0xfffe, 1), 4);
    }

    #[test]
    fn tuple_roundtrip_pads_before_empty_last_member() {
        let mut t = TupleWriter::new();
        t.var(1, b"abc").fixed(8, &7u64.to_le_bytes());
        let bytes = t.finish_with(8, b"");
        // "abc", 5 bytes of padding, the t, no padding needed for the empty last member,
        // then one offset (3).
        assert_eq!(bytes.len(), 8 + 8 + 1);
        let m = split_tuple(
            &bytes,
            &[Member::var(1), Member::fixed(8, 8), Member::var(8)],
        )
        .unwrap();
        assert_eq!(m[0], b"abc");
        assert_eq!(m[1], 7u64.to_le_bytes());
        assert!(m[2].is_empty());
    }

    #[test]
    fn xattr_sets_roundtrip_and_match_glib() {
        // From the format notes: user.a=A is `757365722e6100 41 07`, wrapped in an array.
        let set = vec![(b"user.a\0".to_vec(), b"A".to_vec())];
        let bytes = encode_xattr_set(&set);
        assert_eq!(hex::encode(&bytes), "757365722e6100410709");
        assert_eq!(decode_xattr_set(&bytes).unwrap(), set);
        assert!(encode_xattr_set(&[]).is_empty());
    }

    #[test]
    fn bad_framing_is_an_error_not_a_panic() {
        assert!(split_var_array(&[5], 1).is_err());
        assert!(split_tuple(&[0xff, 0xff], &[Member::var(1), Member::var(1)]).is_err());
        assert!(split_fixed_array(&[0; 13], 12).is_err());
        for n in 0..40u8 {
            let data: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37)).collect();
            let _ = split_var_array(&data, 8);
            let _ = split_tuple(
                &data,
                &[Member::var(1), Member::fixed(8, 8), Member::var(1)],
            );
        }
    }
}
