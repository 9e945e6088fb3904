//! The node's actors (ractor on tokio).
//!
//! ```text
//! session (one per connection) ──request──► conversation (one per conversation, by key)
//!                                                  │ persist (group commit), then
//!                                                  ▼
//!                                   relay (one per node) ──► bounded outbox of each local session
//! ```
//!
//! Actors answer requests through reply ports, as data (`Response::Error`), and return `Err` from
//! `handle` only when they must restart (ractor stops an actor on `Err`).

pub(crate) mod conversation;
pub(crate) mod relay;
pub(crate) mod scheduler;
pub(crate) mod shop;
pub(crate) mod supervisor;
