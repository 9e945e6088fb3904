//! `piazza-node`: the Piazza server.
//!
//! A node accepts client connections over QUIC ([`transport`]), runs one session actor per
//! connection ([`session`]) and one actor per conversation (`actors`), persists every message with
//! group commit before acknowledging it ([`storage`]), and fans committed messages out to online
//! recipients through the relay actor. [`cluster`] decides where actors live (one node today).
//!
//! It deliberately does not contain protocol types (see `piazza-protocol`) nor client code (see
//! `piazza-client`). Start reading at [`node::start`], then `transport/server.rs`,
//! `session/mod.rs` and `actors/conversation/`.
#![warn(missing_docs)]

pub(crate) mod actors;
pub(crate) mod admin;
pub mod auth;
pub mod bench;
pub mod cli;
pub(crate) mod cluster;
// The core's API is wider than the shop actor uses today: accessors its tests read, `Shop::place`
// for orders staff create, `Actor::System` for integrations (a carrier reporting delivery).
#[allow(dead_code)]
pub(crate) mod commerce;
pub mod config;
pub mod media;
pub mod node;
pub(crate) mod payments;
pub(crate) mod session;
#[cfg(test)]
mod sim;
pub(crate) mod sinks;
pub mod storage;
pub mod telemetry;
pub mod transport;

pub use config::{Config, Overrides};
pub use node::{NodeHandle, StartError, start};
