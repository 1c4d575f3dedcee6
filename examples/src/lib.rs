//! Nothing but a home for the examples in `examples/` (see this package's `Cargo.toml`).
