//! tmp
#![allow(missing_docs)]
pub mod auth;
pub mod config;
pub mod storage;
pub mod transport { pub mod tls; }
