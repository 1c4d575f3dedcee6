//! Methods every ring kind's handles share, written once: the `Ring` accessors and the
//! wait settings of every end.

/// The accessors every kind's `Ring` has, over its fields `mem`, `name` and `created`;
/// `$stats` is the kind's counters snapshot, read by its `stats_of`.
macro_rules! ring_accessors {
    ($stats:ty) => {
        /// The counters, read without joining (a third process may call this). Neither
        /// allocates nor makes a syscall.
        pub fn stats(&self) -> $stats {
            stats_of(self.mem.ctrl())
        }

        /// Test hook: where slot 0 lies in this process, the stride between slots, and the
        /// slot count, for tests that play a hostile peer writing into the slots. Touching
        /// that memory other than with atomics is a data race with the ring.
        #[doc(hidden)]
        #[cfg(not(shm_loom))]
        pub fn raw_slots(&self) -> (*mut u8, usize, u64) {
            (
                self.mem.slot_ptr(0).cast::<u8>(),
                std::mem::size_of::<Slot<T>>(),
                self.mem.cap(),
            )
        }

        /// Slots in the ring (a power of two).
        pub fn capacity(&self) -> u64 {
            self.mem.cap()
        }

        crate::handles::ring_identity!();
    };
}
pub(crate) use ring_accessors;

/// `name`, `is_creator` and `is_current` of a ring whose fields `mem`, `name` and
/// `created` hold them (every kind's, the log's too).
macro_rules! ring_identity {
    () => {
        /// The ring's name.
        pub fn name(&self) -> &str {
            &self.name
        }

        /// Whether this handle created the ring (`create`, the winner of an
        /// `open_or_create` race, or `in_process`) rather than opening one that existed.
        pub fn is_creator(&self) -> bool {
            self.created
        }

        /// Whether the ring's name still leads to this ring. `false` once the name was
        /// removed or re-created by another process: a handle of the old ring then sees
        /// its peers stop (`Disconnected`, `PeerDied`, or nothing at all) while new
        /// processes meet on the new ring, and should reopen by name. One `lstat`; not for
        /// hot paths. An in-process ring has no name and always is current.
        #[cfg(not(shm_loom))]
        pub fn is_current(&self) -> bool {
            self.mem.is_current()
        }
    };
}
pub(crate) use ring_identity;

/// `set_wait_strategy` and `set_liveness_interval` for an end whose fields `strategy` and
/// `liveness` hold them: `$waits` names its blocking calls ("pushes"), `$checks` what a
/// poll checks ("a push on a full ring checks that the consumer still runs, when its
/// death cannot wake it").
macro_rules! end_settings {
    ($waits:literal, $checks:literal) => {
        #[doc = concat!("Sets how blocking ", $waits, " wait.")]
        pub fn set_wait_strategy(&mut self, strategy: crate::WaitStrategy) {
            self.strategy = strategy;
        }

        #[doc = concat!("Sets how often ", $checks, " (default")]
        /// [`LIVENESS_INTERVAL`](crate::LIVENESS_INTERVAL); see there). Any duration.
        pub fn set_liveness_interval(&mut self, interval: std::time::Duration) {
            self.liveness.set_interval(interval);
        }
    };
}
pub(crate) use end_settings;

/// `capacity` and `is_current` for an end whose field `mem` is the ring's memory.
macro_rules! end_ring_info {
    () => {
        /// Slots in the ring.
        pub fn capacity(&self) -> u64 {
            self.mem.cap()
        }

        /// Whether the ring's name still leads to this ring: see `Ring::is_current`.
        #[cfg(not(shm_loom))]
        pub fn is_current(&self) -> bool {
            self.mem.is_current()
        }
    };
}
pub(crate) use end_ring_info;
