//! Dynamically typed GVariant values, as found in `a{sv}` metadata dictionaries.
//!
//! The fixed OSTree object types are encoded with the `gvariant` crate's compile-time
//! types (see `object`). Metadata dictionaries hold values of any type, so they are kept
//! here as (type string, normal-form bytes) pairs, in their original order: a commit's
//! checksum depends on the order of its metadata keys.

use std::fmt::Write as _;
use std::io::Write;

use gvariant::aligned_bytes::copy_to_align;
use gvariant::{Marker, SerializeTo, Structure, gv};

/// One value of a `v`: its type string and its serialised bytes.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Value {
    /// GVariant type string, e.g. `s`, `as`, `a{sv}`.
    pub type_str: String,
    /// The value's serialised bytes (normal form).
    pub data: Vec<u8>,
}

impl Value {
    /// A string (`s`).
    pub fn string(s: &str) -> Self {
        Value::encode("s", |w| gv!("s").serialize(s, w))
    }

    /// An array of strings (`as`).
    pub fn strv<S: AsRef<str>>(items: &[S]) -> Self {
        let v: Vec<&str> = items.iter().map(|s| s.as_ref()).collect();
        Value::encode("as", |w| gv!("as").serialize(&v, w))
    }

    /// An array of string pairs (`a(ss)`), e.g. package name and version.
    pub fn string_pairs<S: AsRef<str>>(items: &[(S, S)]) -> Self {
        let v: Vec<(&str, &str)> = items
            .iter()
            .map(|(a, b)| (a.as_ref(), b.as_ref()))
            .collect();
        Value::encode("a(ss)", |w| gv!("a(ss)").serialize(&v, w))
    }

    /// A byte string (`ay`).
    pub fn bytes(b: &[u8]) -> Self {
        Value {
            type_str: "ay".into(),
            data: b.to_vec(),
        }
    }

    /// An array of byte strings (`aay`), as used for signatures.
    pub fn bytes_array(items: &[Vec<u8>]) -> Self {
        Value::encode("aay", |w| gv!("aay").serialize(items, w))
    }

    /// A boolean (`b`).
    pub fn boolean(b: bool) -> Self {
        Value {
            type_str: "b".into(),
            data: vec![u8::from(b)],
        }
    }

    /// A `t` stored big-endian, OSTree's convention for numbers in metadata.
    pub fn u64_be(n: u64) -> Self {
        Value {
            type_str: "t".into(),
            data: n.to_be_bytes().to_vec(),
        }
    }

    /// A nested dictionary (`a{sv}`).
    pub fn dict(m: &Metadata) -> Self {
        Value {
            type_str: "a{sv}".into(),
            data: m.to_bytes(),
        }
    }

    fn encode(type_str: &str, f: impl FnOnce(&mut Vec<u8>) -> std::io::Result<usize>) -> Self {
        let mut data = Vec::new();
        // Writing to a Vec cannot fail; a string with an interior NUL is the only error
        // source and callers pass Rust strings that came from NUL-free sources.
        let _ = f(&mut data);
        Value {
            type_str: type_str.into(),
            data,
        }
    }

    /// The value as a string, if it is one.
    pub fn as_str(&self) -> Option<String> {
        if self.type_str != "s" {
            return None;
        }
        let buf = copy_to_align(&self.data);
        Some(gv!("s").cast(buf.as_ref()).to_str().to_owned())
    }

    /// The value as a list of strings, if it is one.
    pub fn as_strv(&self) -> Option<Vec<String>> {
        if self.type_str != "as" {
            return None;
        }
        let buf = copy_to_align(&self.data);
        Some(
            gv!("as")
                .cast(buf.as_ref())
                .iter()
                .map(|s| s.to_str().to_owned())
                .collect(),
        )
    }

    /// The value as a list of string pairs (`a(ss)`), if it is one.
    pub fn as_string_pairs(&self) -> Option<Vec<(String, String)>> {
        if self.type_str != "a(ss)" {
            return None;
        }
        let buf = copy_to_align(&self.data);
        Some(
            gv!("a(ss)")
                .cast(buf.as_ref())
                .iter()
                .map(|p| {
                    let (a, b) = p.to_tuple();
                    (a.to_str().to_owned(), b.to_str().to_owned())
                })
                .collect(),
        )
    }

    /// The value as a list of byte strings, if it is one.
    pub fn as_bytes_array(&self) -> Option<Vec<Vec<u8>>> {
        if self.type_str != "aay" {
            return None;
        }
        let buf = copy_to_align(&self.data);
        Some(
            gv!("aay")
                .cast(buf.as_ref())
                .iter()
                .map(|b| b.to_vec())
                .collect(),
        )
    }

    /// The value as a dictionary, if it is one.
    pub fn as_dict(&self) -> Option<Metadata> {
        if self.type_str != "a{sv}" {
            return None;
        }
        Metadata::from_bytes(&self.data).ok()
    }

    /// GLib's text form of the value (as `ostree show --print-metadata-key` prints it,
    /// with numbers read big-endian as OSTree stores them).
    pub fn to_text(&self) -> String {
        match parse_type(self.type_str.as_bytes()) {
            Some((ty, [])) => {
                let mut out = String::new();
                print_value(&ty, &self.data, &mut out);
                out
            }
            _ => format!("<invalid type {:?}>", self.type_str),
        }
    }
}

impl SerializeTo<gvariant::Variant> for &Value {
    fn serialize(self, f: &mut impl Write) -> std::io::Result<usize> {
        f.write_all(&self.data)?;
        f.write_all(b"\0")?;
        f.write_all(self.type_str.as_bytes())?;
        Ok(self.data.len() + 1 + self.type_str.len())
    }
}

/// An ordered `a{sv}` dictionary. Order is kept because it is part of the bytes.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Metadata(pub Vec<(String, Value)>);

impl Metadata {
    /// An empty dictionary.
    pub fn new() -> Self {
        Metadata(Vec::new())
    }

    /// Decode `a{sv}` bytes. Fails when they are not in normal form.
    pub fn from_bytes(data: &[u8]) -> Result<Self, String> {
        let buf = copy_to_align(data);
        let dict = gv!("a{sv}").cast(buf.as_ref());
        let mut entries = Vec::with_capacity(dict.len());
        for entry in dict.iter() {
            let (key, value) = entry.to_tuple();
            let (type_bytes, value_data) = value.split();
            let type_str = std::str::from_utf8(type_bytes)
                .map_err(|_| "variant type is not UTF-8".to_string())?;
            match parse_type(type_bytes) {
                Some((_, [])) => {}
                _ => return Err(format!("invalid variant type {type_str:?}")),
            }
            entries.push((
                key.to_str().to_owned(),
                Value {
                    type_str: type_str.to_owned(),
                    data: value_data.to_vec(),
                },
            ));
        }
        let m = Metadata(entries);
        if m.to_bytes() != data {
            return Err("metadata dictionary is not in normal form".into());
        }
        Ok(m)
    }

    /// Encode as `a{sv}`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let entries: Vec<(&str, &Value)> = self.0.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let mut out = Vec::new();
        let _ = gv!("a{sv}").serialize(&entries, &mut out);
        out
    }

    /// Look a key up.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Set a key: replaces the value in place if present, else appends.
    pub fn insert(&mut self, key: &str, value: Value) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key.to_owned(), value)),
        }
    }

    /// Remove a key.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        let pos = self.0.iter().position(|(k, _)| k == key)?;
        Some(self.0.remove(pos).1)
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A parsed GVariant type, for printing values whose type is only known at run time.
#[derive(Debug, Clone)]
enum Ty {
    Basic(u8),
    Variant,
    Array(Box<Ty>),
    Maybe(Box<Ty>),
    /// Members, and whether it is a dict entry (`{…}`) rather than a tuple.
    Tuple(Vec<Ty>, bool),
}

fn parse_type(s: &[u8]) -> Option<(Ty, &[u8])> {
    let (&c, rest) = s.split_first()?;
    match c {
        b'b' | b'y' | b'n' | b'q' | b'i' | b'u' | b'x' | b't' | b'h' | b'd' | b's' | b'o'
        | b'g' => Some((Ty::Basic(c), rest)),
        b'v' => Some((Ty::Variant, rest)),
        b'a' => parse_type(rest).map(|(t, r)| (Ty::Array(Box::new(t)), r)),
        b'm' => parse_type(rest).map(|(t, r)| (Ty::Maybe(Box::new(t)), r)),
        b'(' | b'{' => {
            let close = if c == b'(' { b')' } else { b'}' };
            let mut members = Vec::new();
            let mut rest = rest;
            loop {
                if let Some((&n, r)) = rest.split_first()
                    && n == close
                {
                    if c == b'{' && members.len() != 2 {
                        return None;
                    }
                    return Some((Ty::Tuple(members, c == b'{'), r));
                }
                let (t, r) = parse_type(rest)?;
                members.push(t);
                rest = r;
            }
        }
        _ => None,
    }
}

fn alignment(ty: &Ty) -> usize {
    match ty {
        Ty::Basic(b'n' | b'q') => 2,
        Ty::Basic(b'i' | b'u' | b'h') => 4,
        Ty::Basic(b'x' | b't' | b'd') | Ty::Variant => 8,
        Ty::Basic(_) => 1,
        Ty::Array(t) | Ty::Maybe(t) => alignment(t),
        Ty::Tuple(m, _) => m.iter().map(alignment).max().unwrap_or(1),
    }
}

fn fixed_size(ty: &Ty) -> Option<usize> {
    match ty {
        Ty::Basic(b'b' | b'y') => Some(1),
        Ty::Basic(b'n' | b'q') => Some(2),
        Ty::Basic(b'i' | b'u' | b'h') => Some(4),
        Ty::Basic(b'x' | b't' | b'd') => Some(8),
        Ty::Tuple(m, _) => {
            let mut pos = 0usize;
            for t in m {
                let a = alignment(t);
                pos = pos.div_ceil(a) * a + fixed_size(t)?;
            }
            let a = alignment(ty);
            Some((pos.div_ceil(a) * a).max(1))
        }
        _ => None,
    }
}

/// Width of the framing offsets of a container of `len` bytes, as a reader derives it.
pub(crate) fn offset_width(len: usize) -> usize {
    match len {
        0 => 0,
        1..=0xff => 1,
        0x100..=0xffff => 2,
        0x1_0000..=0xffff_ffff => 4,
        _ => 8,
    }
}

fn read_offset(data: &[u8], at: usize, w: usize) -> usize {
    let mut v = 0usize;
    for i in 0..w {
        v |= usize::from(*data.get(at + i).unwrap_or(&0)) << (8 * i);
    }
    v
}

/// Split a container into its children's byte ranges. Out-of-range framing yields empty
/// children (GLib's behaviour for non-normal data) rather than a panic.
fn children<'a>(ty: &Ty, data: &'a [u8]) -> Vec<&'a [u8]> {
    let slice = |s: usize, e: usize| data.get(s..e).unwrap_or(&[]);
    match ty {
        Ty::Array(elem) => match fixed_size(elem) {
            Some(0) => Vec::new(),
            Some(size) => data.chunks_exact(size).collect(),
            None => {
                let w = offset_width(data.len());
                if w == 0 {
                    return Vec::new();
                }
                let table = read_offset(data, data.len() - w, w);
                if table > data.len() {
                    return Vec::new();
                }
                let n = (data.len() - table) / w;
                let a = alignment(elem);
                let mut start = 0usize;
                (0..n)
                    .map(|i| {
                        let end = read_offset(data, table + i * w, w);
                        let s = start.div_ceil(a) * a;
                        start = end;
                        slice(s, end)
                    })
                    .collect()
            }
        },
        Ty::Tuple(members, _) => {
            let w = offset_width(data.len());
            let mut pos = 0usize;
            let mut offsets_used = 0usize;
            let mut out = Vec::new();
            for (i, t) in members.iter().enumerate() {
                let a = alignment(t);
                let start = pos.div_ceil(a) * a;
                let end = match fixed_size(t) {
                    Some(size) => start + size,
                    None if i + 1 == members.len() => data.len().saturating_sub(offsets_used * w),
                    None => {
                        offsets_used += 1;
                        let at = data.len().saturating_sub(offsets_used * w);
                        read_offset(data, at, w)
                    }
                };
                out.push(slice(start, end));
                pos = end;
            }
            out
        }
        _ => Vec::new(),
    }
}

fn print_value(ty: &Ty, data: &[u8], out: &mut String) {
    let be = |n: usize| -> u64 {
        data.iter()
            .take(n)
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
    };
    match ty {
        Ty::Basic(b'b') => out.push_str(if data.first() == Some(&1) {
            "true"
        } else {
            "false"
        }),
        Ty::Basic(b'y') => {
            let _ = write!(out, "byte 0x{:02x}", data.first().copied().unwrap_or(0));
        }
        Ty::Basic(b'q') => {
            let _ = write!(out, "uint16 {}", be(2));
        }
        Ty::Basic(b'n') => {
            let _ = write!(out, "int16 {}", be(2) as u16 as i16);
        }
        Ty::Basic(b'u') => {
            let _ = write!(out, "uint32 {}", be(4));
        }
        Ty::Basic(b'i' | b'h') => {
            let _ = write!(out, "{}", be(4) as u32 as i32);
        }
        Ty::Basic(b't') => {
            let _ = write!(out, "uint64 {}", be(8));
        }
        Ty::Basic(b'x') => {
            let _ = write!(out, "int64 {}", be(8) as i64);
        }
        Ty::Basic(b'd') => {
            let _ = write!(out, "{}", f64::from_bits(be(8)));
        }
        Ty::Basic(_) => {
            let text = data.strip_suffix(b"\0").unwrap_or(data);
            let _ = write!(
                out,
                "'{}'",
                String::from_utf8_lossy(text).replace('\'', "\\'")
            );
        }
        Ty::Variant => {
            let split = data.iter().rposition(|&b| b == 0);
            match split.and_then(|i| parse_type(&data[i + 1..]).map(|t| (i, t))) {
                Some((i, (inner, []))) => {
                    out.push('<');
                    print_value(&inner, &data[..i], out);
                    out.push('>');
                }
                _ => out.push_str("<invalid>"),
            }
        }
        Ty::Maybe(inner) => {
            if data.is_empty() {
                out.push_str("nothing");
            } else {
                let body = if fixed_size(inner).is_some() {
                    data
                } else {
                    &data[..data.len() - 1]
                };
                print_value(inner, body, out);
            }
        }
        Ty::Array(elem) if matches!(**elem, Ty::Basic(b'y')) => {
            let _ = write!(
                out,
                "[{}]",
                data.iter()
                    .map(|b| format!("0x{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        Ty::Array(elem) => {
            let is_dict = matches!(&**elem, Ty::Tuple(m, true) if m.len() == 2);
            let items = children(ty, data);
            out.push(if is_dict { '{' } else { '[' });
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                match (&**elem, is_dict) {
                    (Ty::Tuple(m, _), true) => {
                        let kv = children(elem, item);
                        print_value(&m[0], kv.first().copied().unwrap_or(&[]), out);
                        out.push_str(": ");
                        print_value(&m[1], kv.get(1).copied().unwrap_or(&[]), out);
                    }
                    _ => print_value(elem, item, out),
                }
            }
            out.push(if is_dict { '}' } else { ']' });
        }
        Ty::Tuple(members, _) => {
            out.push('(');
            for (i, (t, d)) in members.iter().zip(children(ty, data)).enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                print_value(t, d, out);
            }
            if members.len() == 1 {
                out.push(',');
            }
            out.push(')');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_roundtrips_and_keeps_order() {
        let mut m = Metadata::new();
        m.insert("version", Value::string("1.0"));
        m.insert("ostree.ref-binding", Value::strv(&["test/main"]));
        let bytes = m.to_bytes();
        let back = Metadata::from_bytes(&bytes).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.get("version").unwrap().as_str().unwrap(), "1.0");
        assert_eq!(back.0[0].0, "version");
    }

    #[test]
    fn value_text_matches_glib_style() {
        assert_eq!(Value::string("a'b").to_text(), "'a\\'b'");
        assert_eq!(Value::strv(&["a", "b"]).to_text(), "['a', 'b']");
        assert_eq!(Value::u64_be(5).to_text(), "uint64 5");
        assert_eq!(Value::boolean(true).to_text(), "true");
        let mut inner = Metadata::new();
        inner.insert("k", Value::string("v"));
        assert_eq!(Value::dict(&inner).to_text(), "{'k': <'v'>}");
        assert_eq!(
            Value::string_pairs(&[("a", "1-2"), ("b-c", "3")]).to_text(),
            "[('a', '1-2'), ('b-c', '3')]"
        );
    }

    #[test]
    fn string_pairs_roundtrip() {
        let pairs = vec![
            ("libc6".to_owned(), "2.36-9+deb12u4".to_owned()),
            ("zlib".to_owned(), "1.3-r0".to_owned()),
        ];
        let v = Value::string_pairs(&pairs);
        assert_eq!(v.type_str, "a(ss)");
        assert_eq!(v.as_string_pairs().unwrap(), pairs);
        assert_eq!(
            Value::string_pairs::<&str>(&[]).as_string_pairs().unwrap(),
            []
        );
    }

    #[test]
    fn non_normal_metadata_is_rejected() {
        let mut m = Metadata::new();
        m.insert("a", Value::string("b"));
        let mut bytes = m.to_bytes();
        bytes.push(0);
        assert!(Metadata::from_bytes(&bytes).is_err());
    }
}
