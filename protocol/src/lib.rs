//! `piazza-protocol`: everything that crosses the wire between a Piazza client and a node.
//!
//! This crate is *sans-IO*: it has no async runtime, no sockets, no clock and no randomness. Time and
//! ids come in as arguments. It holds:
//!
//! * typed ids ([`UserId`], [`GroupId`], [`ConversationId`], [`Seq`], …), built only by parsing, so a
//!   value of one of these types is always valid;
//! * [`Money`]: integer minor units plus a currency, with checked arithmetic only;
//! * the request, response, event and datagram types ([`Request`], [`Response`], [`Event`],
//!   [`Datagram`]);
//! * the wire-visible error codes ([`ErrorCode`]);
//! * the hard limits ([`limits`]) and the frame codec ([`codec`], [`FrameDecoder`]).
//!
//! It deliberately does *not* know how streams are opened or how a node routes a request; that is the
//! node's and the client's business. Start reading at [`messages`], then [`codec`].
//!
//! Wire conventions (also in the README):
//! * ALPN [`ALPN`] (`piazza/1`); the first request on a connection is [`Request::Hello`].
//! * Every request opens its own bidirectional stream: the client writes one frame and finishes its
//!   side, the server answers with one [`Response`] frame and finishes.
//! * The server pushes [`Event`]s on one long-lived unidirectional stream per connection.
//! * Typing indicators travel as QUIC datagrams ([`Datagram`]), one un-prefixed body per datagram.
//! * Media bytes travel on client-opened unidirectional upload streams, and a media download is
//!   the one request answered with a header frame plus raw bytes (see [`media`]).
#![warn(missing_docs)]

pub mod codec;
pub mod commerce;
mod error;
mod frame;
mod ids;
pub mod limits;
pub mod media;
pub mod messages;
mod money;

pub use error::ErrorCode;
pub use frame::{FrameDecoder, FrameError};
pub use ids::{
    ChannelId, ClientMsgId, ConversationId, ConversationRef, DeviceId, GroupId, IdError, Seq,
    UserId,
};
pub use media::{MediaId, MediaInfo, MediaRequest, MediaResponse, UploadChunkHeader, UploadId};
pub use messages::{
    ChannelInfo, Datagram, Event, ForwardedFrom, GroupInfo, GroupRole, HistoryPage, Member,
    Message, MessageBody, MessageUpdate, PostStats, PresenceState, ReactionCount, ReceiptKind,
    ReceiptState, Request, Response, ScheduledPost, SendAck, SyncBatch, SyncCursor, SystemEvent,
};
pub use money::{Currency, Money, MoneyError};

/// ALPN protocol name clients must offer.
pub const ALPN: &[u8] = b"piazza/1";

/// ALPN protocol name nodes use between themselves.
pub const CLUSTER_ALPN: &[u8] = b"piazza-cluster/1";

/// Protocol version carried in [`Request::Hello`]. A node refuses any other version with
/// [`ErrorCode::Invalid`] naming the field `protocol_version`.
pub const PROTOCOL_VERSION: u32 = 1;

/// QUIC application close codes used by the node when it closes a connection on purpose.
pub mod close_code {
    /// The node is shutting down; reconnect (to another node if there is one).
    pub const SHUTDOWN: u32 = 1;
    /// The connection broke the protocol (for example a request before `Hello`).
    pub const PROTOCOL_VIOLATION: u32 = 2;
    /// The token expired or was revoked while the connection was open.
    pub const UNAUTHENTICATED: u32 = 3;
}

#[cfg(test)]
mod tests;
