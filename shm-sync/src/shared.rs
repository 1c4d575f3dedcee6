//! A segment holding one primitive, opened by name from any process.

use std::ops::Deref;

use shm_core::{
    CreateError, Fingerprint, Identity, Kind, Layout, OpenError, Region, Segment, SegmentBuilder,
    ShmSafe, TypeIdentity,
};

use crate::{Condvar, Event, Mutex, Protocol, Reset, Semaphore, SeqLock, SpinLock};

/// Version of the in-memory layout of shm-sync's primitives; part of every fingerprint.
///
/// Version 2: `SeqLock` records its last writer and keeps a futex word for [`crate::Changes`]
/// (its value moved from offset 32 to 64).
pub const SYNC_LAYOUT_VERSION: u64 = 2;

/// A primitive that can be initialised in place inside a fresh (zeroed) segment. Its
/// [`TypeIdentity`] (the primitive's name and layout version, and its payload's identity)
/// is what [`Shared::open`] checks, so `Shared::<SeqLock<A>>::open` of a `SeqLock<B>` fails.
pub trait InPlace: ShmSafe + TypeIdentity {
    /// What initialisation needs (the initial value, the protocol, the permit count...).
    type Config;

    /// Initialises `self` in place.
    ///
    /// # Safety
    ///
    /// No other thread or process may access `self` during the call, e.g. because it lies
    /// in a segment still inside its creator's `create_with`.
    unsafe fn init_in_place(&self, config: Self::Config);

    /// Why a primitive made with `config` cannot work on this machine, if it cannot:
    /// [`Shared::create`] then refuses before creating anything.
    fn unsupported(_config: &Self::Config) -> Option<String> {
        None
    }

    /// Why this primitive, as another process made it, cannot work here, if it cannot:
    /// [`Shared::open`] then refuses it.
    fn unsupported_here(&self) -> Option<String> {
        None
    }
}

/// The identity of a primitive holding a `T`: its name, the layout version, its size and
/// alignment, and `T`'s identity.
macro_rules! wrapper_identity {
    ($($p:ident<T>),* ; $($q:ident),*) => {
        $(impl<T: TypeIdentity> TypeIdentity for $p<T> {
            const IDENTITY: Identity = Identity::wrapper(
                stringify!($p),
                SYNC_LAYOUT_VERSION,
                std::mem::size_of::<Self>(),
                std::mem::align_of::<Self>(),
                T::IDENTITY,
            );
        })*
        $(impl TypeIdentity for $q {
            const IDENTITY: Identity = Identity::wrapper(
                stringify!($q),
                SYNC_LAYOUT_VERSION,
                std::mem::size_of::<Self>(),
                std::mem::align_of::<Self>(),
                <()>::IDENTITY,
            );
        })*
    };
}
wrapper_identity!(Mutex<T>, SpinLock<T>, SeqLock<T>; Condvar, Semaphore, Event);

/// Why a priority-inheritance mutex is refused where [`crate::pi_supported`] is false.
const NO_LOCK_PI2: &str = "a priority-inheritance mutex needs FUTEX_LOCK_PI2 (Linux 5.14 or \
     later), which this kernel lacks; use Protocol::Normal (robust, without priority \
     inheritance) or a newer kernel";

impl<T: bytemuck::Pod + Send + TypeIdentity> InPlace for Mutex<T> {
    type Config = (T, Protocol);
    unsafe fn init_in_place(&self, (value, protocol): (T, Protocol)) {
        // SAFETY: forwarded from our caller.
        unsafe { Mutex::init_in_place(self, value, protocol) }
    }

    fn unsupported((_, protocol): &(T, Protocol)) -> Option<String> {
        (*protocol == Protocol::PriorityInheritance && !crate::pi_supported())
            .then(|| NO_LOCK_PI2.to_owned())
    }

    fn unsupported_here(&self) -> Option<String> {
        (self.protocol_requested() == Protocol::PriorityInheritance && !crate::pi_supported())
            .then(|| NO_LOCK_PI2.to_owned())
    }
}

impl<T: bytemuck::Pod + Send + TypeIdentity> InPlace for SpinLock<T> {
    type Config = T;
    unsafe fn init_in_place(&self, value: T) {
        // SAFETY: forwarded from our caller.
        unsafe { SpinLock::init_in_place(self, value) }
    }
}

impl<T: bytemuck::Pod + Send + TypeIdentity> InPlace for SeqLock<T> {
    type Config = T;
    unsafe fn init_in_place(&self, value: T) {
        // SAFETY: forwarded from our caller.
        unsafe { SeqLock::init_in_place(self, value) }
    }
}

impl InPlace for Condvar {
    type Config = ();
    unsafe fn init_in_place(&self, (): ()) {
        // A zeroed condvar is a fresh one.
    }
}

impl InPlace for Semaphore {
    type Config = u32;
    unsafe fn init_in_place(&self, permits: u32) {
        // Nobody else can see the semaphore yet, so releasing is the initialisation; the
        // count of a zeroed semaphore cannot overflow from `permits <= MAX`.
        let _ = self.release(permits.min(Semaphore::MAX));
    }
}

impl InPlace for Event {
    type Config = Reset;
    unsafe fn init_in_place(&self, reset: Reset) {
        // SAFETY: forwarded from our caller.
        unsafe { Event::init_in_place(self, reset) }
    }
}

/// A [`Kind::Sync`] segment that holds one primitive `P` (with the fingerprint of `P`).
///
/// ```
/// use shm_sync::{Mutex, Protocol, Shared};
///
/// let name = format!("/shm-sync-doc-{}", std::process::id());
/// let created = Shared::<Mutex<u64>>::create(&name, (0, Protocol::Normal)).unwrap();
/// // In another process:
/// let opened = Shared::<Mutex<u64>>::open(&name).unwrap();
/// *opened.lock().unwrap() += 1;
/// assert_eq!(*created.lock().unwrap(), 1);
/// ```
pub struct Shared<P> {
    segment: Segment,
    /// The primitive inside `segment`, bounds- and alignment-checked once at create/open.
    ptr: std::ptr::NonNull<P>,
}

// SAFETY: `ptr` points into `segment`'s mapping, which moves with it; `P: ShmSafe` is `Sync`,
// so handing `&P` to other threads is what processes already do.
unsafe impl<P: ShmSafe> Send for Shared<P> {}
// SAFETY: as for `Send`: `&Shared<P>` only gives out `&P`, and `P: Sync`.
unsafe impl<P: ShmSafe> Sync for Shared<P> {}

impl<P: InPlace> Shared<P> {
    fn layout() -> (Layout, Region<P>) {
        let mut layout = Layout::new();
        let region = layout
            .push_aligned::<P>(1, 128)
            .expect("one primitive always fits");
        (layout, region)
    }

    /// The segment options `create` and `open` use for `name`; adjust and pass to
    /// [`create_with`](Self::create_with) / [`open_with`](Self::open_with).
    pub fn builder(name: &str) -> SegmentBuilder {
        SegmentBuilder::new(name)
            .kind(Kind::Sync)
            .fingerprint(Fingerprint::of::<P>(0, SYNC_LAYOUT_VERSION))
            .layout(&Self::layout().0)
    }

    /// Creates the segment `name` and initialises the primitive with `config` before any
    /// other process can open it.
    ///
    /// # Errors
    ///
    /// See [`SegmentBuilder::create`].
    pub fn create(name: &str, config: P::Config) -> Result<Shared<P>, CreateError> {
        Self::create_with(Self::builder(name), config)
    }

    /// [`create`](Self::create) with your own segment options (mode, mlock, ...). The
    /// builder's kind, fingerprint and size are set here.
    ///
    /// # Errors
    ///
    /// See [`SegmentBuilder::create`].
    pub fn create_with(
        builder: SegmentBuilder,
        config: P::Config,
    ) -> Result<Shared<P>, CreateError> {
        let (layout, region) = Self::layout();
        if let Some(reason) = P::unsupported(&config) {
            return Err(CreateError::unsupported(builder.name(), reason));
        }
        let builder = builder
            .kind(Kind::Sync)
            .fingerprint(Fingerprint::of::<P>(0, SYNC_LAYOUT_VERSION))
            .layout(&layout);
        let segment = builder.create_with(|seg| {
            let p = seg.get(region)?;
            // SAFETY: inside `create_with` the segment is not yet READY, so no other
            // process can open it, and this thread is the only one with the mapping.
            unsafe { p.init_in_place(config) };
            Ok::<_, shm_core::RegionError>(())
        })?;
        let ptr = std::ptr::NonNull::from(segment.get(region).expect("checked inside create_with"));
        Ok(Shared { segment, ptr })
    }

    /// Opens the segment `name`, checking that it holds a `P`.
    ///
    /// # Errors
    ///
    /// See [`SegmentBuilder::open`]; a different primitive is a `FingerprintMismatch`.
    pub fn open(name: &str) -> Result<Shared<P>, OpenError> {
        Self::open_with(Self::builder(name))
    }

    /// [`open`](Self::open) with your own segment options.
    ///
    /// # Errors
    ///
    /// See [`SegmentBuilder::open`].
    pub fn open_with(builder: SegmentBuilder) -> Result<Shared<P>, OpenError> {
        let (layout, region) = Self::layout();
        let segment = builder
            .kind(Kind::Sync)
            .fingerprint(Fingerprint::of::<P>(0, SYNC_LAYOUT_VERSION))
            .layout(&layout)
            .open()?;
        // The open checked the fingerprint and that the file is exactly as long as this
        // layout makes it, so the region is in bounds; `get` checks it once more rather than
        // trust that, and a failure is an error, never a panic.
        let ptr = segment
            .get(region)
            .map(std::ptr::NonNull::from)
            .map_err(|e| OpenError::region(segment.name(), e))?;
        // SAFETY: `ptr` came from `Segment::get` just above, and `segment` is alive.
        if let Some(reason) = unsafe { ptr.as_ref() }.unsupported_here() {
            return Err(OpenError::unsupported(segment.name(), reason));
        }
        Ok(Shared { segment, ptr })
    }

    /// The segment underneath.
    pub fn segment(&self) -> &Segment {
        &self.segment
    }

    /// The segment underneath, mutably (to keep it past the creator, say).
    pub fn segment_mut(&mut self) -> &mut Segment {
        &mut self.segment
    }
}

impl<P: InPlace> Deref for Shared<P> {
    type Target = P;
    fn deref(&self) -> &P {
        // SAFETY: `ptr` came from `Segment::get`, which checked bounds and alignment, and
        // the mapping lives as long as `self.segment`, which `&self` borrows.
        unsafe { self.ptr.as_ref() }
    }
}
