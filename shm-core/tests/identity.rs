//! `#[derive(TypeIdentity)]` and what an open of a segment made for another type says.

use std::marker::PhantomData;

use shm_core::{Fingerprint, Identity, OpenErrorKind, SegmentBuilder, TypeIdentity};

mod common;
use common::scratch;

#[derive(Clone, Copy, TypeIdentity)]
#[repr(C)]
struct Tick {
    price: f64,
    qty: u32,
    venue: u32,
    ts: u64,
    id: u64,
}

/// Tick with another name: the same fields, so the same identity.
#[derive(Clone, Copy, TypeIdentity)]
#[repr(C)]
struct Quote {
    price: f64,
    qty: u32,
    venue: u32,
    ts: u64,
    id: u64,
}

/// One field renamed.
#[derive(Clone, Copy, TypeIdentity)]
#[repr(C)]
struct Order {
    price: f64,
    size: u32,
    venue: u32,
    ts: u64,
    id: u64,
}

/// Two fields of one type swapped: the same types at the same offsets, names reordered.
#[derive(Clone, Copy, TypeIdentity)]
#[repr(C)]
struct Swapped {
    price: f64,
    venue: u32,
    qty: u32,
    ts: u64,
    id: u64,
}

/// One field retyped, same size.
#[derive(Clone, Copy, TypeIdentity)]
#[repr(C)]
struct Retyped {
    price: f64,
    qty: i32,
    venue: u32,
    ts: u64,
    id: u64,
}

#[derive(Clone, Copy, TypeIdentity)]
#[repr(C)]
struct Book {
    bid: Tick,
    ask: Tick,
}

#[derive(Clone, Copy, TypeIdentity)]
#[repr(C)]
struct BookOfQuotes {
    bid: Quote,
    ask: Quote,
}

#[derive(Clone, Copy, TypeIdentity)]
#[repr(C)]
struct BookRenamed {
    best_bid: Tick,
    ask: Tick,
}

#[derive(Clone, Copy, TypeIdentity)]
#[repr(C)]
struct Pair(u64, u32, u32);

/// `Pair`'s types and offsets, with names.
#[derive(Clone, Copy, TypeIdentity)]
#[repr(C)]
struct NamedPair {
    a: u64,
    b: u32,
    c: u32,
}

#[derive(Clone, Copy, TypeIdentity)]
struct Unit;

#[derive(Clone, Copy, TypeIdentity)]
#[repr(C)]
struct Samples<T: Copy, const N: usize> {
    len: u64,
    data: [T; N],
    _p: PhantomData<T>,
}

#[derive(Clone, Copy, TypeIdentity)]
#[type_identity(schema = 0x7469_636b)]
#[repr(C)]
struct MirroredA {
    a: u64,
}

#[derive(Clone, Copy, TypeIdentity)]
#[type_identity(schema = 0x7469_636b, crate = "::shm_core")]
#[repr(C)]
struct MirroredB {
    b: u64,
}

#[test]
fn identity_is_the_structure_not_the_name() {
    assert_eq!(Tick::IDENTITY, Quote::IDENTITY);
    for other in [
        Order::IDENTITY,
        Swapped::IDENTITY,
        Retyped::IDENTITY,
        <[u64; 4]>::IDENTITY,
    ] {
        assert_ne!(Tick::IDENTITY, other);
    }
    // Recursively: the nested type's fields count, its name does not.
    assert_eq!(Book::IDENTITY, BookOfQuotes::IDENTITY);
    assert_ne!(Book::IDENTITY, BookRenamed::IDENTITY);
    // Tuple structs (fields named by index), unit structs and generic ones.
    assert_ne!(Pair::IDENTITY, NamedPair::IDENTITY);
    assert_eq!(
        Pair::IDENTITY.detail() & 0xffff_ffff,
        NamedPair::IDENTITY.detail() & 0xffff_ffff,
        "the same types and offsets"
    );
    assert_ne!(Pair::IDENTITY, <[u64; 2]>::IDENTITY);
    assert_ne!(Unit::IDENTITY, <()>::IDENTITY);
    assert_ne!(Samples::<f32, 64>::IDENTITY, Samples::<f32, 65>::IDENTITY);
    assert_ne!(Samples::<f32, 64>::IDENTITY, Samples::<u32, 64>::IDENTITY);
    // An explicit schema: field names do not matter, the number does.
    assert_eq!(MirroredA::IDENTITY, MirroredB::IDENTITY);
    assert_eq!(MirroredA::IDENTITY, Identity::schema(0x7469_636b));
}

/// Creates a segment for `A`, opens it as `B`, returns the open error's message.
fn open_as<A: TypeIdentity, B: TypeIdentity>() -> Option<String> {
    let (name, _c) = scratch("identity");
    let _seg = SegmentBuilder::new(&name)
        .fingerprint(Fingerprint::of::<A>(0, 1))
        .size(64)
        .create()
        .unwrap();
    match SegmentBuilder::new(&name)
        .fingerprint(Fingerprint::of::<B>(0, 1))
        .size(64)
        .open()
    {
        Ok(_) => None,
        Err(e) => {
            assert!(
                matches!(e.kind(), OpenErrorKind::FingerprintMismatch { .. }),
                "{e}"
            );
            Some(e.to_string())
        }
    }
}

#[test]
fn a_mismatch_names_both_types_and_says_what_differs() {
    assert_eq!(open_as::<Tick, Quote>(), None, "renamed type, same fields");
    let cases = [
        (
            open_as::<Tick, [u64; 4]>(),
            "payload type expected `[u64; 4]` (size 32, align 8), found `Tick` (size 32, align \
             8): the same size and alignment, but field names and field types or offsets differ",
        ),
        (
            open_as::<Tick, Order>(),
            "expected `Order` (size 32, align 8), found `Tick` (size 32, align 8): the same \
             size, alignment, field types and offsets, but field names differ",
        ),
        (
            open_as::<Tick, Swapped>(),
            "expected `Swapped` (size 32, align 8), found `Tick` (size 32, align 8): the same \
             size, alignment, field types and offsets, but field names differ (renamed or \
             reordered)",
        ),
        (
            open_as::<Tick, Retyped>(),
            "expected `Retyped` (size 32, align 8), found `Tick` (size 32, align 8): the same \
             size, alignment and field names, but field types or offsets differ",
        ),
        (
            open_as::<Tick, Pair>(),
            "expected `Pair` (size 16, align 8), found `Tick` (size 32, align 8): the sizes \
             differ",
        ),
        (
            open_as::<MirroredA, u64>(),
            "an identity set by an explicit schema on one side differs",
        ),
    ];
    for (got, want) in cases {
        let got = got.expect("must be refused");
        assert!(got.contains(want), "{got}\n  does not contain\n{want}");
    }
    // Generic and long names are kept short: module paths dropped, cut to 32 bytes.
    let got = open_as::<Samples<f32, 4>, Samples<u32, 4>>().unwrap();
    assert!(
        got.contains("expected `Samples<u32, 4>` (size 24, align 8), found `Samples<f32, 4>`"),
        "{got}"
    );
}
