//! Shared helpers for the Piazza criterion benches (see benches/README.md).
