//! Structural type identity: what a segment's creator and its openers compare so that a
//! reader and a writer that disagree about a payload's layout fail at open, not later as
//! garbage.
//!
//! A payload type's [`Identity`] is a hash, computed at compile time, of its structure:
//! for a struct, its size and alignment and, in order, each field's name, offset and
//! identity, recursively down to primitives and arrays. Two types with the same fields
//! (names, types and offsets) have the same identity whatever they are called; a renamed
//! field, a reordered or retyped one, or another nested type gives another identity.
//!
//! Derive it with `#[derive(TypeIdentity)]` (re-exported from the `shm-derive` crate):
//!
//! ```
//! use shm_core::TypeIdentity;
//!
//! #[derive(Clone, Copy, TypeIdentity)]
//! #[repr(C)]
//! struct Tick { price: f64, qty: u32, venue: u32, ts: u64, id: u64 }
//!
//! #[derive(Clone, Copy, TypeIdentity)]
//! #[repr(C)]
//! struct Quote { price: f64, qty: u32, venue: u32, ts: u64, id: u64 }
//!
//! #[derive(Clone, Copy, TypeIdentity)]
//! #[repr(C)]
//! struct Order { price: f64, size: u32, venue: u32, ts: u64, id: u64 }
//!
//! // Same fields: the same identity, whatever the type is called.
//! assert_eq!(Tick::IDENTITY, Quote::IDENTITY);
//! // A renamed field, or four plain words of the same size: another identity.
//! assert_ne!(Tick::IDENTITY, Order::IDENTITY);
//! assert_ne!(Tick::IDENTITY, <[u64; 4]>::IDENTITY);
//! assert_eq!(std::mem::size_of::<Tick>(), std::mem::size_of::<[u64; 4]>());
//! ```
//!
//! The derive refuses enums and unions, and a field whose type has no identity:
//!
//! ```compile_fail
//! #[derive(Clone, Copy, shm_core::TypeIdentity)]
//! enum Side { Buy, Sell }
//! ```
//!
//! ```compile_fail
//! struct Opaque(u64);
//! #[derive(Clone, Copy, shm_core::TypeIdentity)]
//! struct Holder { inner: Opaque }
//! ```
//!
//! `#[type_identity(schema = N)]` on the type sets its identity explicitly instead (for a
//! type mirrored by hand from another language, or to declare two layouts compatible on
//! purpose); a manual `impl TypeIdentity` can do the same with [`Identity::schema`].
//!
//! **What it is not.** The identity catches honest disagreement between builds. It is not
//! a defence against a hostile peer, which can write any header it likes; what keeps a
//! hostile peer from causing undefined behaviour is that payloads are `Pod` (every bit
//! pattern is a valid value) and that nothing read from the mapping is trusted.

use std::fmt;

/// 64-bit FNV-1a offset basis.
const BASIS: u64 = 0xcbf2_9ce4_8422_2325;
/// 64-bit FNV-1a prime.
const PRIME: u64 = 0x0000_0100_0000_01b3;

const fn mix_bytes(mut h: u64, bytes: &[u8]) -> u64 {
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(PRIME);
        i += 1;
    }
    h
}

/// 64 bits folded into 32.
const fn fold(h: u64) -> u64 {
    (h ^ (h >> 32)) & 0xffff_ffff
}

const fn mix_u64(h: u64, v: u64) -> u64 {
    mix_bytes(h, &v.to_le_bytes())
}

/// A string is mixed with its length first, so that field lists cannot alias
/// (`"ab", "c"` against `"a", "bc"`).
const fn mix_str(h: u64, s: &str) -> u64 {
    mix_bytes(mix_u64(h, s.len() as u64), s.as_bytes())
}

/// The structural identity of a payload type. See the [module docs](self).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Identity {
    /// Everything: field names, types and offsets, recursively. What opens compare.
    structure: u64,
    /// Field names only (recursively): lets a mismatch say whether the names differ.
    names: u64,
    /// Sizes, offsets and primitive types only, without names.
    shape: u64,
}

impl Identity {
    /// A primitive (`u64`, `f32`...): its name and size.
    pub const fn primitive(name: &str, size: usize) -> Identity {
        let shape = mix_u64(mix_str(mix_str(BASIS, "primitive"), name), size as u64);
        Identity {
            structure: shape,
            names: mix_str(BASIS, "primitive"),
            shape,
        }
    }

    /// An array of `len` elements of identity `element`.
    pub const fn array(element: Identity, len: usize) -> Identity {
        let tag = mix_str(BASIS, "array");
        Identity {
            structure: mix_u64(mix_u64(tag, element.structure), len as u64),
            names: mix_u64(tag, element.names),
            shape: mix_u64(mix_u64(tag, element.shape), len as u64),
        }
    }

    /// A struct of `size` and `align` with `fields`, in declaration order (what the derive
    /// builds; fields of a tuple struct are named `"0"`, `"1"`...).
    pub const fn structure(size: usize, align: usize, fields: &[Field]) -> Identity {
        let tag = mix_str(BASIS, "struct");
        let mut structure = mix_u64(mix_u64(tag, size as u64), align as u64);
        let mut names = tag;
        let mut shape = structure;
        let mut i = 0;
        while i < fields.len() {
            let f = &fields[i];
            structure = mix_u64(
                mix_u64(mix_str(structure, f.name), f.offset as u64),
                f.ty.structure,
            );
            names = mix_u64(mix_str(names, f.name), f.ty.names);
            shape = mix_u64(mix_u64(shape, f.offset as u64), f.ty.shape);
            i += 1;
        }
        Identity {
            structure,
            names,
            shape,
        }
    }

    /// A library type wrapping one payload (`SeqLock<T>`, `Mutex<T>`): its own name and
    /// layout version, its size and alignment, and the payload's identity.
    pub const fn wrapper(
        name: &str,
        version: u64,
        size: usize,
        align: usize,
        inner: Identity,
    ) -> Identity {
        let tag = mix_u64(
            mix_u64(
                mix_u64(mix_str(mix_str(BASIS, "wrapper"), name), version),
                size as u64,
            ),
            align as u64,
        );
        Identity {
            structure: mix_u64(tag, inner.structure),
            names: mix_u64(tag, inner.names),
            shape: mix_u64(tag, inner.shape),
        }
    }

    /// An identity set by hand: two types with the same `schema` number match whatever
    /// their fields (sizes and alignments are still compared).
    pub const fn schema(schema: u64) -> Identity {
        let structure = mix_u64(mix_str(BASIS, "schema"), schema);
        Identity {
            structure,
            names: 0,
            shape: 0,
        }
    }

    /// The 64-bit value that opens compare.
    pub const fn value(&self) -> u64 {
        self.structure
    }

    /// The detail word stored beside [`value`](Self::value): the name hash in the high 32
    /// bits and the shape hash in the low 32, so that a mismatch can say what differs.
    /// Zero for an identity set with [`schema`](Self::schema).
    pub const fn detail(&self) -> u64 {
        if self.names == 0 && self.shape == 0 {
            0
        } else {
            (fold(self.names) << 32) | fold(self.shape) | 1 << 63
        }
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({:#018x})", self.structure)
    }
}

/// One field of a struct, for [`Identity::structure`].
#[derive(Clone, Copy, Debug)]
pub struct Field {
    /// Its name (`"0"`, `"1"`... in a tuple struct).
    pub name: &'static str,
    /// `offset_of!` the field.
    pub offset: usize,
    /// The field type's identity.
    pub ty: Identity,
}

impl Field {
    /// A field named `name` at `offset` of a type with identity `ty`.
    pub const fn new(name: &'static str, offset: usize, ty: Identity) -> Field {
        Field { name, offset, ty }
    }
}

/// A payload type with a structural [`Identity`]. Derive it (`#[derive(TypeIdentity)]`);
/// shmring implements it for the primitives, arrays, `()` and `PhantomData`.
///
/// The trait is safe to implement by hand: a wrong identity makes an open succeed or fail
/// when it should not, never undefined behaviour (payloads are `Pod`).
pub trait TypeIdentity {
    /// The type's identity.
    const IDENTITY: Identity;
}

macro_rules! primitives {
    ($($t:ty),*) => {$(
        impl TypeIdentity for $t {
            const IDENTITY: Identity = Identity::primitive(stringify!($t), std::mem::size_of::<$t>());
        }
    )*};
}

primitives!(u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize, f32, f64, bool, char);

impl TypeIdentity for () {
    const IDENTITY: Identity = Identity::primitive("()", 0);
}

impl<T: ?Sized> TypeIdentity for std::marker::PhantomData<T> {
    const IDENTITY: Identity = Identity::primitive("PhantomData", 0);
}

impl<T: TypeIdentity, const N: usize> TypeIdentity for [T; N] {
    const IDENTITY: Identity = Identity::array(T::IDENTITY, N);
}

/// Longest type name a segment header keeps (longer names are cut, ending in `~`).
pub const TYPE_NAME_MAX: usize = 32;

/// A payload type's short name as a segment header keeps it: module paths dropped
/// (`ticks::Tick` is `Tick`, `SeqLock<ticks::Tick>` is `SeqLock<Tick>`), at most
/// [`TYPE_NAME_MAX`] bytes. Only for messages: opens never compare it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TypeName([u8; TYPE_NAME_MAX]);

impl TypeName {
    /// The short name of `T`.
    pub fn of<T: ?Sized>() -> TypeName {
        TypeName::new(&short_type_name(std::any::type_name::<T>()))
    }

    /// `name`, cut at a character boundary to fit.
    pub fn new(name: &str) -> TypeName {
        let mut out = [0u8; TYPE_NAME_MAX];
        if name.len() <= TYPE_NAME_MAX {
            out[..name.len()].copy_from_slice(name.as_bytes());
        } else {
            let mut end = TYPE_NAME_MAX - 1;
            while !name.is_char_boundary(end) {
                end -= 1;
            }
            out[..end].copy_from_slice(&name.as_bytes()[..end]);
            out[end] = b'~';
        }
        TypeName(out)
    }

    /// From the bytes of a header (untrusted: bytes that are not UTF-8 up to the first NUL
    /// display as `(unreadable name)`, and control characters are escaped).
    pub const fn from_bytes(bytes: [u8; TYPE_NAME_MAX]) -> TypeName {
        TypeName(bytes)
    }

    /// The raw bytes, NUL-padded.
    pub fn to_bytes(&self) -> [u8; TYPE_NAME_MAX] {
        self.0
    }

    /// The name, or `None` when empty (untyped segments) or not valid UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        let len = self.0.iter().position(|&b| b == 0).unwrap_or(TYPE_NAME_MAX);
        std::str::from_utf8(&self.0[..len])
            .ok()
            .filter(|s| !s.is_empty())
    }
}

impl fmt::Display for TypeName {
    /// The name, with control characters escaped (a peer may have written anything).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.as_str() {
            Some(s) => {
                for c in s.chars() {
                    if c.is_control() {
                        write!(f, "{}", c.escape_default())?;
                    } else {
                        write!(f, "{c}")?;
                    }
                }
                Ok(())
            }
            None if self.0 == [0; TYPE_NAME_MAX] => f.write_str("(untyped)"),
            None => f.write_str("(unreadable name)"),
        }
    }
}

impl fmt::Debug for TypeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TypeName({self})")
    }
}

/// Drops the module path of every path in a `type_name` string.
fn short_type_name(full: &str) -> String {
    let mut out = String::with_capacity(full.len());
    // Where the path being copied starts in `out`.
    let mut start = 0;
    let mut chars = full.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ':' && chars.peek() == Some(&':') {
            chars.next();
            out.truncate(start);
        } else if c.is_alphanumeric() || c == '_' {
            out.push(c);
        } else {
            out.push(c);
            start = out.len();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_drop_module_paths() {
        assert_eq!(short_type_name("a::b::Tick"), "Tick");
        assert_eq!(
            short_type_name("shm_sync::seqlock::SeqLock<ticks::Tick>"),
            "SeqLock<Tick>"
        );
        assert_eq!(short_type_name("[u64; 4]"), "[u64; 4]");
        assert_eq!(short_type_name("(a::B, c::D)"), "(B, D)");
    }

    #[test]
    fn long_names_are_cut_at_a_char_boundary() {
        let n = TypeName::new(&"é".repeat(40));
        let s = n.as_str().unwrap();
        assert!(s.len() <= TYPE_NAME_MAX && s.ends_with('~'), "{s}");
        assert_eq!(TypeName::new("").as_str(), None);
        assert_eq!(
            TypeName::from_bytes([0xff; 32]).to_string(),
            "(unreadable name)"
        );
    }

    #[test]
    fn arrays_primitives_and_lengths_differ() {
        assert_ne!(u64::IDENTITY, i64::IDENTITY);
        assert_ne!(u64::IDENTITY, f64::IDENTITY);
        assert_ne!(<[u64; 4]>::IDENTITY, <[u64; 5]>::IDENTITY);
        assert_ne!(<[u32; 8]>::IDENTITY, <[u64; 4]>::IDENTITY);
        assert_eq!(<[u64; 4]>::IDENTITY, <[u64; 4]>::IDENTITY);
        assert_ne!(Identity::schema(1), Identity::schema(2));
        assert_eq!(Identity::schema(1).detail(), 0);
        assert_ne!(u64::IDENTITY.detail(), 0);
    }

    #[test]
    fn field_names_and_offsets_both_count() {
        let a = Identity::structure(
            16,
            8,
            &[
                Field::new("a", 0, u64::IDENTITY),
                Field::new("b", 8, u64::IDENTITY),
            ],
        );
        let renamed = Identity::structure(
            16,
            8,
            &[
                Field::new("a", 0, u64::IDENTITY),
                Field::new("c", 8, u64::IDENTITY),
            ],
        );
        let moved = Identity::structure(
            16,
            8,
            &[
                Field::new("b", 0, u64::IDENTITY),
                Field::new("a", 8, u64::IDENTITY),
            ],
        );
        let split = Identity::structure(
            16,
            8,
            &[
                Field::new("ab", 0, u64::IDENTITY),
                Field::new("", 8, u64::IDENTITY),
            ],
        );
        assert_ne!(a, renamed);
        assert_ne!(a, moved);
        assert_ne!(a, split);
        // Renaming changes the name half of the detail, not the shape half.
        assert_eq!(a.detail() & 0xffff_ffff, renamed.detail() & 0xffff_ffff);
        assert_ne!(a.detail() >> 32, renamed.detail() >> 32);
    }
}
