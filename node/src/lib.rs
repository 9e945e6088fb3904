//! The Piazza node library.
