//! The Piazza client SDK.
