//! Where a ring lives: a shm-core segment, or the heap (in-process rings, Miri, loom).
//! The algorithms see only a control block and an array of slots.

use std::any::Any;
use std::ptr::NonNull;
use std::sync::Arc;

pub(crate) use shm_sync::primitive::UnsafeCell;

/// A ring's memory: the control block `C` and `cap` slots of `S`, kept alive by `owner`.
pub(crate) struct Mem<C, S> {
    owner: Arc<dyn Any + Send + Sync>,
    ctrl: NonNull<C>,
    slots: NonNull<S>,
    /// A power of two, validated when the ring was created or opened; never re-read from
    /// shared memory, so `pos & (cap - 1)` is always in bounds.
    cap: u64,
}

impl<C, S> Clone for Mem<C, S> {
    fn clone(&self) -> Self {
        Mem {
            owner: self.owner.clone(),
            ctrl: self.ctrl,
            slots: self.slots,
            cap: self.cap,
        }
    }
}

// SAFETY: the pointers point into memory owned by `owner` (a mapping or heap boxes), which
// is `Send + Sync`; the control block `C` is all atomics (`Sync`), and slot access follows
// the ring protocol, which hands each slot's value to one side at a time: a value written
// in one thread is read in another, which is sound only if the slot type (and so the
// payload) is `Send`.
unsafe impl<C: Sync, S: Send> Send for Mem<C, S> {}
// SAFETY: as for `Send`: through `&Mem` handles in several threads move payloads from one
// thread to another (never share one), so `S: Send` suffices.
unsafe impl<C: Sync, S: Send> Sync for Mem<C, S> {}

impl<C, S> Mem<C, S> {
    /// # Safety
    ///
    /// `ctrl` and `slots` (with `cap` elements) must stay valid while `owner` lives, and
    /// `cap` must be a power of two.
    pub unsafe fn new(
        owner: Arc<dyn Any + Send + Sync>,
        ctrl: NonNull<C>,
        slots: NonNull<S>,
        cap: u64,
    ) -> Mem<C, S> {
        debug_assert!(cap.is_power_of_two());
        Mem {
            owner,
            ctrl,
            slots,
            cap,
        }
    }

    /// What keeps the memory alive: a reference to anything inside `ctrl()` stays valid
    /// while a clone of this lives.
    pub fn owner(&self) -> &Arc<dyn Any + Send + Sync> {
        &self.owner
    }

    /// Whether the memory is a named segment whose name still leads to it
    /// ([`shm_core::Segment::is_current`]); in-process memory, which has no name, always is.
    #[cfg(not(shm_loom))]
    pub fn is_current(&self) -> bool {
        self.owner
            .downcast_ref::<shm_core::Segment>()
            .is_none_or(shm_core::Segment::is_current)
    }

    /// Removes the ring's name if it still names this very segment (same inode): never a
    /// successor created under the name since. Nothing for an in-process ring.
    #[cfg(not(shm_loom))]
    pub fn unlink(&self) {
        if let Some(s) = self.owner.downcast_ref::<shm_core::Segment>() {
            let _ = s.unlink();
        }
    }

    /// The control block.
    #[inline]
    pub fn ctrl(&self) -> &C {
        // SAFETY: valid while `owner` lives (constructor contract), which `&self` keeps.
        unsafe { self.ctrl.as_ref() }
    }

    /// The slot for position `pos`.
    #[inline]
    pub fn slot(&self, pos: u64) -> &S {
        let i = (pos & (self.cap - 1)) as usize;
        // SAFETY: `i < cap`, the number of slots (constructor contract).
        unsafe { &*self.slots.as_ptr().add(i) }
    }

    /// A pointer to the slot for `pos` (for chunk slices).
    #[cfg_attr(shm_loom, allow(dead_code))]
    #[inline]
    pub fn slot_ptr(&self, pos: u64) -> *mut S {
        let i = (pos & (self.cap - 1)) as usize;
        // SAFETY: `i < cap`, so the offset stays inside the slot array.
        unsafe { self.slots.as_ptr().add(i) }
    }

    /// Number of slots.
    #[inline]
    pub fn cap(&self) -> u64 {
        self.cap
    }
}

/// The layout every ring segment uses: the control block `C` on its own 128-byte lines,
/// then `cap` slots `S` packed from a 128-byte boundary (neighbouring slots share a line:
/// see `mpmc::Slot` for why).
#[cfg(not(shm_loom))]
pub(crate) type Regions<C, S> = (shm_core::Layout, shm_core::Region<C>, shm_core::Region<S>);

#[cfg(not(shm_loom))]
pub(crate) fn ring_layout<C, S>(cap: u64) -> Result<Regions<C, S>, shm_core::RegionError> {
    let mut l = shm_core::Layout::new();
    let ctrl = l.push_aligned::<C>(1, 128)?;
    let slots = l.push_aligned::<S>(cap, 128)?;
    Ok((l, ctrl, slots))
}

#[cfg(not(shm_loom))]
impl<C: shm_core::ShmSafe, S> Mem<C, S> {
    /// A `Mem` over a segment's control and slot regions, checked against the segment; the
    /// segment is kept mapped for as long as any handle lives.
    ///
    /// # Errors
    ///
    /// If a region does not lie inside the segment (callers check the layout against the
    /// segment's length first, so this is never expected).
    ///
    /// # Panics
    ///
    /// If `cap` is not a power of two or the slot region does not hold `cap` slots: both
    /// come from the caller's own (checked) layout, never from the segment's bytes.
    pub fn over_segment(
        seg: shm_core::Segment,
        cap: u64,
        ctrl: shm_core::Region<C>,
        slots: shm_core::Region<S>,
    ) -> Result<Mem<C, S>, shm_core::RegionError> {
        assert!(cap.is_power_of_two() && slots.count() == cap);
        let ctrl = NonNull::from(seg.get(ctrl)?);
        let slots = seg.region_ptr(slots)?;
        let owner: Arc<dyn Any + Send + Sync> = Arc::new(seg);
        // SAFETY: both regions were bounds- and alignment-checked against the segment, which
        // `owner` keeps mapped; `cap` is a power of two (asserted) and the slot region holds
        // `cap` slots (asserted).
        Ok(unsafe { Mem::new(owner, ctrl, slots, cap) })
    }

    /// A `Mem` over a segment another process created: reads the capacity from the control
    /// block once (`cap_of`), checks it is a power of two of at least `min_cap`, and that
    /// the layout it implies fits inside the segment, before any slot is touched.
    ///
    /// # Errors
    ///
    /// [`RingError::Corrupted`](crate::RingError::Corrupted) naming what is impossible.
    pub fn open_segment(
        seg: shm_core::Segment,
        name: &str,
        min_cap: u64,
        cap_of: impl FnOnce(&C) -> u64,
    ) -> Result<Mem<C, S>, crate::RingError> {
        let corrupted = |what: String| crate::RingError::Corrupted {
            name: name.to_owned(),
            what,
        };
        let (cap, l, ctrl_r, slots_r) =
            checked_layout::<C, S>(&seg, min_cap, cap_of).map_err(corrupted)?;
        if l.total_len() > seg.len() as u64 {
            return Err(corrupted(format!(
                "capacity {cap} needs {} bytes but the segment has {}",
                l.total_len(),
                seg.len()
            )));
        }
        Mem::over_segment(seg, cap, ctrl_r, slots_r)
            .map_err(|e| corrupted(format!("capacity {cap}: {e}")))
    }
}

/// The capacity a segment's control block records (`cap_of`, read once), checked to be a
/// power of two of at least `min_cap` (and at most 2^40), and the layout it implies.
#[cfg(not(shm_loom))]
#[allow(clippy::type_complexity)]
fn checked_layout<C: shm_core::ShmSafe, S>(
    seg: &shm_core::Segment,
    min_cap: u64,
    cap_of: impl FnOnce(&C) -> u64,
) -> Result<
    (
        u64,
        shm_core::Layout,
        shm_core::Region<C>,
        shm_core::Region<S>,
    ),
    String,
> {
    let ctrl_r = shm_core::Region::<C>::from_raw(shm_core::HEADER_SIZE as u64, 1);
    let c = seg
        .get(ctrl_r)
        .map_err(|e| format!("no room for the control block: {e}"))?;
    let cap = cap_of(c);
    if cap < min_cap || !cap.is_power_of_two() || cap > 1 << 40 {
        return Err(format!("capacity {cap} is not a power of two >= {min_cap}"));
    }
    let (l, ctrl_r2, slots_r) =
        ring_layout::<C, S>(cap).map_err(|e| format!("capacity {cap}: {e}"))?;
    debug_assert_eq!(ctrl_r, ctrl_r2);
    Ok((cap, l, ctrl_r, slots_r))
}

/// For [`shm_core::SegmentBuilder::open_bounded`]: the data bytes a ring segment holds, as
/// its recorded capacity implies, or `None` if that capacity is impossible or does not fit
/// (the open then fails in [`Mem::open_segment`], which says why).
#[cfg(not(shm_loom))]
pub(crate) fn needed_data_len<C: shm_core::ShmSafe, S>(
    seg: &shm_core::Segment,
    min_cap: u64,
    cap_of: impl FnOnce(&C) -> u64,
) -> Option<u64> {
    let (_, l, _, _) = checked_layout::<C, S>(seg, min_cap, cap_of).ok()?;
    (l.total_len() <= seg.len() as u64).then(|| l.data_len())
}

/// Heap storage for an in-process ring: the control block in a box, the slots in one
/// allocation aligned to 128 bytes like a segment's slot region (so a slot never straddles
/// two cache lines where it would not in a segment). Freed when the last handle drops.
pub(crate) struct Heap<C, S> {
    ctrl: *mut C,
    slots: *mut S,
    len: usize,
    layout: std::alloc::Layout,
}

// SAFETY: a `Heap` is only an owner: nothing reads or writes the control block or the slots
// through it (`Mem` does, and carries the `Send`/`Sync` bounds); its `Drop` frees the memory
// and runs no destructor of a slot or control block (`new_mem` asserts they need none), so
// moving it to, or dropping it in, another thread touches no value of `C` or `S`.
unsafe impl<C, S> Send for Heap<C, S> {}
// SAFETY: as for `Send`: `&Heap` gives access to nothing.
unsafe impl<C, S> Sync for Heap<C, S> {}

impl<C, S> Drop for Heap<C, S> {
    fn drop(&mut self) {
        // SAFETY: `ctrl` came from `Box::into_raw`, and `slots` from `alloc` with `layout`
        // holding `len` initialised elements (`Heap::new_mem`); both are freed once, here,
        // after the last `Mem` (which holds the `Arc` owning us) is gone.
        unsafe {
            drop(Box::from_raw(self.ctrl));
            std::ptr::drop_in_place(std::ptr::slice_from_raw_parts_mut(self.slots, self.len));
            std::alloc::dealloc(self.slots.cast::<u8>(), self.layout);
        }
    }
}

impl<C: 'static, S: 'static> Heap<C, S> {
    /// A `Mem` over a boxed control block and `cap` slots, slot `i` made by `slot(i)`.
    /// `cap` must be a power of two. `None` if `cap` slots exceed the address space.
    pub fn new_mem(ctrl: C, cap: u64, mut slot: impl FnMut(u64) -> S) -> Option<Mem<C, S>> {
        assert!(cap.is_power_of_two(), "ring capacity is a power of two");
        // (Loom's atomics and cells do have destructors, which only its bookkeeping uses;
        // loom runs every model thread on one OS thread.)
        #[cfg(not(shm_loom))]
        assert!(
            !std::mem::needs_drop::<S>() && !std::mem::needs_drop::<C>(),
            "ring memory holds no value with a destructor"
        );
        let len = usize::try_from(cap).ok()?;
        let layout = std::alloc::Layout::array::<S>(len)
            .and_then(|l| l.align_to(128))
            .ok()?;
        assert!(layout.size() > 0, "payloads are never zero-sized");
        // SAFETY: `layout` has a non-zero size (asserted).
        let raw = unsafe { std::alloc::alloc(layout) }.cast::<S>();
        if raw.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        for i in 0..len {
            // SAFETY: `i < len`, inside the allocation, which is aligned for `S`.
            unsafe { raw.add(i).write(slot(i as u64)) };
        }
        let heap = Heap {
            ctrl: Box::into_raw(Box::new(ctrl)),
            slots: raw,
            len,
            layout,
        };
        let ctrl = NonNull::new(heap.ctrl).expect("Box::into_raw is non-null");
        let slots = NonNull::new(heap.slots).expect("checked non-null above");
        let owner: Arc<dyn Any + Send + Sync> = Arc::new(heap);
        // SAFETY: the allocations live until `owner`'s `Heap` drops; they hold `cap`
        // initialised slots, and `cap` is a power of two (asserted above).
        Some(unsafe { Mem::new(owner, ctrl, slots, cap) })
    }
}

/// Reads a slot's value (the slot is ours by the ring protocol).
///
/// Outside loom the copy is made of relaxed atomic loads, as wide as the address and size
/// allow ([`atomic_load`]): a hostile or buggy peer that keeps writing into the slot makes
/// the value garbage (any bytes are a valid `Pod`), never a data race in this process.
/// Under loom it is a plain read of the cell, so loom checks that the protocol itself never
/// reads a slot while its writer writes it.
///
/// # Safety
///
/// By the ring protocol, no other thread of this process may write the cell during the
/// call.
#[inline]
pub(crate) unsafe fn read<T: bytemuck::Pod>(cell: &UnsafeCell<T>) -> T {
    #[cfg(not(shm_loom))]
    // SAFETY: `p` points to a live, aligned `T` inside the ring's memory; `T: Pod`, so any
    // bytes read make a valid value.
    return cell.with(|p| unsafe { atomic_load(p) });
    #[cfg(shm_loom)]
    // SAFETY: the caller guarantees no concurrent writer; loom checks it.
    return cell.with(|p| unsafe { p.read() });
}

/// Writes a slot's value (the slot is ours by the ring protocol), with a plain write.
///
/// Reads are where a peer that keeps writing could break this process (the compiler may
/// assume the bytes under a read do not change); a write observes nothing, so a plain
/// (vectorisable) write costs nothing in soundness here, and writes of this process race
/// with no access of this process (the protocol orders them before the consumer's reads).
/// A peer that reads a slot while we fill it only gets garbage in its own process.
///
/// # Safety
///
/// By the ring protocol, no other thread of this process may access the cell during the
/// call.
#[inline]
pub(crate) unsafe fn write<T: bytemuck::Pod>(cell: &UnsafeCell<T>, value: T) {
    // SAFETY: the caller guarantees exclusive access within this process.
    cell.with_mut(|p| unsafe { p.write(value) });
}

/// The widest atomic word (8, 4, 2 or 1 bytes) that `addr` is aligned to and that fits in
/// the `left` bytes still to copy.
#[cfg(not(shm_loom))]
#[inline(always)]
fn word_at(addr: usize, left: usize) -> usize {
    let aligned = addr & 7;
    if aligned == 0 && left >= 8 {
        8
    } else if aligned & 3 == 0 && left >= 4 {
        4
    } else if aligned & 1 == 0 && left >= 2 {
        2
    } else {
        1
    }
}

/// Copies a `T` out of shared memory with relaxed atomic loads: race-free in Rust's model
/// whatever another process writes meanwhile (the copy may then mix old and new bytes,
/// which for a `Pod` is still a value). A `T` aligned to 8 is copied in 8-byte words (one
/// `mov` each); other types in the widest words their address allows.
///
/// # Safety
///
/// `src` must point to `size_of::<T>()` readable bytes aligned for `T`, which other parties
/// only ever access atomically or not at all while this runs. (`T: Pod`: any bit pattern is
/// a valid `T`.)
#[cfg(not(shm_loom))]
#[inline]
pub(crate) unsafe fn atomic_load<T: bytemuck::Pod>(src: *const T) -> T {
    use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};
    let mut out = std::mem::MaybeUninit::<T>::uninit();
    let n = std::mem::size_of::<T>();
    if std::mem::align_of::<T>() >= 8 && n % 8 == 0 {
        // The common case, decided at compile time: whole aligned words, no checks.
        let (src, dst) = (src.cast::<AtomicU64>(), out.as_mut_ptr().cast::<u64>());
        for w in 0..n / 8 {
            // SAFETY: `src` is aligned for `T`, so for `u64`, and word `w` of `n / 8` lies
            // inside the readable `T` (contract); `AtomicU64` has `u64`'s layout; the
            // destination word lies inside `out`, aligned likewise.
            unsafe { dst.add(w).write((*src.add(w)).load(Relaxed)) };
        }
        // SAFETY: every byte of `out` was written, and any bytes are a valid `T` (`Pod`).
        return unsafe { out.assume_init() };
    }
    let dst = out.as_mut_ptr().cast::<u8>();
    let src = src.cast::<u8>();
    let mut i = 0;
    while i < n {
        // SAFETY: (every arm) `i + width <= n`, so the word lies inside both the source
        // (readable, per the contract) and `out`; `word_at` chose a width the source
        // address is aligned to, so the atomic load is aligned; the destination, our own
        // local, is written unaligned. The source word is only accessed atomically by
        // others.
        unsafe {
            let s = src.add(i);
            let d = dst.add(i);
            let width = word_at(s as usize, n - i);
            match width {
                8 => d
                    .cast::<u64>()
                    .write_unaligned(AtomicU64::from_ptr(s as *mut u64).load(Relaxed)),
                4 => d
                    .cast::<u32>()
                    .write_unaligned(AtomicU32::from_ptr(s as *mut u32).load(Relaxed)),
                2 => d
                    .cast::<u16>()
                    .write_unaligned(AtomicU16::from_ptr(s as *mut u16).load(Relaxed)),
                _ => d.write(AtomicU8::from_ptr(s as *mut u8).load(Relaxed)),
            }
            i += width;
        }
    }
    // SAFETY: every byte of `out` was written above, and any bytes are a valid `T` (caller).
    unsafe { out.assume_init() }
}

/// Copies `value` into shared memory with relaxed atomic stores, word for word as
/// [`atomic_load`] reads it back (the same widths at the same addresses), so a reader in
/// this process that copies the value while we write it races with nothing (it may get a
/// mix of old and new words, which a sequence check around its copy rejects). For slots that
/// readers may copy while they are written (broadcast); rings whose protocol hands a slot to
/// one side at a time use [`write`].
///
/// # Safety
///
/// `dst` must point to `size_of::<T>()` writable bytes aligned for `T`, which other parties
/// only ever access atomically (with these widths: [`atomic_load`]'s) or not at all while
/// this runs.
#[cfg(not(shm_loom))]
#[inline]
pub(crate) unsafe fn atomic_store<T: bytemuck::Pod>(dst: *mut T, value: &T) {
    use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};
    let n = std::mem::size_of::<T>();
    let src = (value as *const T).cast::<u8>();
    if std::mem::align_of::<T>() >= 8 && n % 8 == 0 {
        let (src, dst) = (value as *const T as *const u64, dst.cast::<AtomicU64>());
        for w in 0..n / 8 {
            // SAFETY: `dst` is aligned for `T`, so for `u64`, and word `w` of `n / 8` lies
            // inside the writable `T` (contract); `AtomicU64` has `u64`'s layout; the source
            // word lies inside `value`, aligned likewise.
            unsafe { (*dst.add(w)).store(src.add(w).read(), Relaxed) };
        }
        return;
    }
    let dst = dst.cast::<u8>();
    let mut i = 0;
    while i < n {
        // SAFETY: (every arm) `i + width <= n`, so the word lies inside both `value` and the
        // destination (writable, per the contract); `word_at` chose a width the destination
        // address is aligned to, so the atomic store is aligned; the source, our own
        // value, is read unaligned.
        unsafe {
            let d = dst.add(i);
            let s = src.add(i);
            let width = word_at(d as usize, n - i);
            match width {
                8 => AtomicU64::from_ptr(d.cast()).store(s.cast::<u64>().read_unaligned(), Relaxed),
                4 => AtomicU32::from_ptr(d.cast()).store(s.cast::<u32>().read_unaligned(), Relaxed),
                2 => AtomicU16::from_ptr(d.cast()).store(s.cast::<u16>().read_unaligned(), Relaxed),
                _ => AtomicU8::from_ptr(d).store(s.read(), Relaxed),
            }
            i += width;
        }
    }
}

/// Copies `dst.len()` slots starting at `first` out of shared memory into `dst` with
/// [`atomic_load`]s.
///
/// # Safety
///
/// As [`atomic_load`] for each of the `dst.len()` slots from `first` on.
#[cfg(not(shm_loom))]
#[inline]
pub(crate) unsafe fn atomic_load_slice<T: bytemuck::Pod>(first: *const T, dst: &mut [T]) {
    for (i, d) in dst.iter_mut().enumerate() {
        // SAFETY: slot `i` is inside the range the caller vouches for.
        *d = unsafe { atomic_load(first.add(i)) };
    }
}

/// An in-process ring's memory, on the heap: `capacity` checked for payload `T` and
/// rounded up, the control block made by `ctrl(cap)` and slot `i` by `slot(i, cap)`.
pub(crate) fn in_process_mem<T, C: 'static, S: 'static>(
    capacity: u64,
    ctrl: impl FnOnce(u64) -> C,
    mut slot: impl FnMut(u64, u64) -> S,
) -> Result<Mem<C, S>, crate::RingError> {
    crate::spsc::check_payload::<T>(IN_PROCESS)?;
    let cap = crate::spsc::round_capacity(IN_PROCESS, capacity)?;
    Heap::new_mem(ctrl(cap), cap, |i| slot(i, cap)).ok_or(crate::RingError::CapacityTooLarge {
        name: IN_PROCESS.to_owned(),
        requested: capacity,
    })
}

/// The name an in-process ring goes by in its errors.
pub(crate) const IN_PROCESS: &str = "(in-process)";
