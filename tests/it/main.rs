//! Piazza's black-box integration tests, one binary (matklad's layout): real nodes, real clients,
//! real QUIC and TLS on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod admin;
mod bad_input;
mod channels;
mod chat;
mod commerce;
mod durability;
mod fanout;
mod features;
mod groups;
mod media;
