//! `piazza-client`: the async Rust SDK for talking to a Piazza node, and the `piazza` command-line
//! client built on it (`src/bin/piazza.rs`).
//!
//! The SDK speaks the wire protocol of [`piazza_protocol`] over QUIC (quinn + rustls on the ring
//! provider) and reuses its types: a [`Client`] sends [`piazza_protocol::Request`]s and hands back
//! the payloads of the answers ([`SendAck`], [`HistoryPage`], [`Message`], …) or a [`ClientError`]
//! that carries the node's typed [`ErrorCode`].
//!
//! What it adds on top of the wire:
//!
//! * one bidirectional stream per request, each with a deadline;
//! * a background task per client that reads the node's event stream and typing datagrams and
//!   queues them as [`ClientEvent`]s (read them with [`Client::next_event`]);
//! * **transparent reconnect**: when the connection drops, the task reconnects with backoff, says
//!   `Hello` again, runs `Sync` from the cursors it keeps and delivers what was missed before any
//!   live event; a send cut off by the drop is retried with the same `client_msg_id`, so the node
//!   answers with the original ack instead of storing the message twice;
//! * deduplication and gap detection of delivered messages, in the pure [`Cursors`] type.
//!
//! What it deliberately does *not* do: it persists nothing (an app that wants to resume after a
//! restart saves [`Client::cursors`] and passes them back through [`EventStart::After`]), it does
//! not fail over between nodes (it reconnects to the one `server` address it was given), it never
//! retries a request the node refused (rate limits included: the caller decides), and it does not
//! retry group creation or leaving after a lost connection, because those are not idempotent.
//!
//! **Commerce.** [`Client::shop`] sends any [`commerce::ShopOp`] to a shop; typed shorthands
//! cover the common flows (catalog: [`Client::put_product`], [`Client::set_stock`]; customers:
//! [`Client::cart_add`], [`Client::checkout`]; staff and customers: [`Client::order_command`];
//! coupons, promotions, staff and opening hours). [`money`] turns amounts as people write them
//! (`"12.50"` EUR) into [`Money`] and back, exactly. The wire types are re-exported as
//! [`commerce`], so an app needs this crate alone.
//!
//! Start reading at [`Client`] (`src/client/mod.rs`), then the background task
//! (`src/driver/mod.rs`) and the cursor bookkeeping it relies on ([`Cursors`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use piazza_client::{Client, ClientConfig, ClientEvent, ConversationRef};
//!
//! piazza_client::install_crypto_provider();
//! let config = ClientConfig::new("127.0.0.1:4433", "piazza-data/tls/ca.pem", "TOKEN", "laptop".parse()?);
//! let client = Client::connect(config).await?;
//! let ack = client.send(ConversationRef::Direct { peer: "bob".parse()? }, "hi", None).await?;
//! println!("stored as seq {}", ack.seq);
//! while let Some(event) = client.next_event().await {
//!     if let ClientEvent::Message(message) = event {
//!         println!("{}: {:?}", message.sender, message.body);
//!     }
//! }
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

mod backoff;
mod client;
mod config;
mod cursors;
mod driver;
mod error;
pub mod money;
mod transport;

pub use client::{
    Client, ClientEvent, Downloaded, Page, Posted, ProductFilter, UploadProgress, Uploaded,
};
pub use config::{ClientConfig, EventStart, REQUEST_TIMEOUT_DEFAULT, ReconnectPolicy};
pub use cursors::{Arrival, Cursors, SyncStep};
pub use error::ClientError;

// The wire types the SDK's signatures use, so an app can depend on this crate alone.
pub use piazza_protocol::{
    ChannelId, ChannelInfo, ClientMsgId, ConversationId, ConversationRef, DeviceId, ErrorCode,
    ForwardedFrom, GroupId, GroupInfo, GroupRole, HistoryPage, Member, Message, MessageBody,
    MessageUpdate, PostStats, PresenceState, ReactionCount, ReceiptKind, ReceiptState,
    ScheduledPost, SendAck, Seq, SyncBatch, SyncCursor, SystemEvent, UserId,
};
pub use piazza_protocol::{Currency, MediaId, MediaInfo, Money, MoneyError};

/// The commerce wire types (shops, catalogs, carts, orders, coupons, promotions) that the shop
/// methods of [`Client`] take and return.
pub use piazza_protocol::commerce;

/// Installs rustls' ring crypto provider as the process default.
///
/// Call it first thing in every binary and test harness that uses this crate: a dependency that
/// pulls in aws-lc-rs would otherwise leave rustls unable to choose a default, and the first
/// handshake would panic. The SDK itself builds its TLS configuration with an explicit ring
/// provider, so it works without this, but other rustls users in the same process may not.
/// Calling it again, or after another provider was installed, is harmless.
pub fn install_crypto_provider() {
    // `Err` only means a provider is already installed, which is exactly the state we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
