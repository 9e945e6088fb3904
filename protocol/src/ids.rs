//! Typed ids. Each is built only by parsing (or by deserializing, which parses), so holding one
//! means it is valid. Fields are private.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::commerce::ShopId;
use crate::limits::{CLIENT_MSG_ID_BYTES_MAX, DEVICE_ID_BYTES_MAX, USER_NAME_BYTES_MAX};

/// Why a string is not a valid id.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The id is empty.
    #[error("{kind} is empty")]
    Empty {
        /// Which kind of id.
        kind: &'static str,
    },
    /// The id is longer than its limit.
    #[error("{kind} is longer than {max} bytes")]
    TooLong {
        /// Which kind of id.
        kind: &'static str,
        /// The limit.
        max: usize,
    },
    /// The id contains a character it may not contain.
    #[error("{kind} contains {ch:?}; allowed: {allowed}")]
    BadChar {
        /// Which kind of id.
        kind: &'static str,
        /// The first offending character.
        ch: char,
        /// Human description of the allowed set.
        allowed: &'static str,
    },
    /// Structurally wrong (for example a direct conversation with oneself).
    #[error("{kind}: {reason}")]
    Malformed {
        /// Which kind of id.
        kind: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
}

/// Checks an id's length and characters (shared by every string id, commerce ids included).
pub(crate) fn check_chars(
    kind: &'static str,
    s: &str,
    max: usize,
    allowed: &'static str,
    ok: impl Fn(char) -> bool,
) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if s.len() > max {
        return Err(IdError::TooLong { kind, max });
    }
    match s.chars().find(|&ch| !ok(ch)) {
        Some(ch) => Err(IdError::BadChar { kind, ch, allowed }),
        None => Ok(()),
    }
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $max:expr, $allowed:literal, $ok:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
        #[serde(try_from = "String")]
        pub struct $name(String);

        // Serialized as the string it holds, borrowed (an `into = "String"` would clone it on
        // every encode).
        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl $name {
            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                check_chars($kind, s, $max, $allowed, $ok)?;
                Ok($name(s.to_owned()))
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                check_chars($kind, &s, $max, $allowed, $ok)?;
                Ok($name(s))
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }
    };
}

/// Lets other modules of the crate (commerce ids) define ids the same way.
pub(crate) use string_id;

string_id!(
    /// A user name: 1–64 bytes of `[a-z0-9_.-]`. The token's subject. `#` is reserved for the
    /// node's own pseudo-users ([`UserId::channel`]); nodes refuse tokens naming them.
    UserId,
    "user id",
    USER_NAME_BYTES_MAX,
    "a-z 0-9 _ . -",
    |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-' | '#')
);

impl UserId {
    /// The sender of unsigned channel posts: the channel itself, not the admin who wrote it.
    pub fn channel() -> UserId {
        UserId(CHANNEL_AUTHOR.to_owned())
    }

    /// The sender of a shop's automatic messages (greeting, away message, order messages,
    /// promotions) in a customer's conversation with the shop.
    pub fn shop() -> UserId {
        UserId(SHOP_AUTHOR.to_owned())
    }

    /// Whether this is one of the node's reserved pseudo-users (it contains `#`); no token may
    /// name one.
    pub fn is_reserved(&self) -> bool {
        self.0.contains('#')
    }
}

/// See [`UserId::channel`].
const CHANNEL_AUTHOR: &str = "#channel";

/// See [`UserId::shop`].
const SHOP_AUTHOR: &str = "#shop";

string_id!(
    /// A device of a user: 1–64 bytes of `[A-Za-z0-9_.:-]`.
    DeviceId,
    "device id",
    DEVICE_ID_BYTES_MAX,
    "A-Z a-z 0-9 _ . : -",
    |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-')
);

string_id!(
    /// The client's own id for a message it sends, 1–64 bytes of visible ASCII. A retried send with the
    /// same id (from the same sender, in the same conversation) returns the original ack.
    ClientMsgId,
    "client message id",
    CLIENT_MSG_ID_BYTES_MAX,
    "visible ASCII",
    |c: char| c.is_ascii_graphic()
);

/// A non-zero 64-bit id chosen by the node at creation, written with a prefix (`g:`, `c:`) in
/// conversation ids; parsing accepts the number with or without its prefix.
macro_rules! numeric_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "u64", into = "u64")]
        pub struct $name(u64);

        impl $name {
            /// Builds the id; zero is not a valid id.
            pub fn new(raw: u64) -> Result<$name, IdError> {
                if raw == 0 {
                    return Err(IdError::Malformed {
                        kind: $kind,
                        reason: "zero is not an id",
                    });
                }
                Ok($name(raw))
            }

            /// The raw number.
            pub fn get(self) -> u64 {
                self.0
            }
        }

        impl TryFrom<u64> for $name {
            type Error = IdError;
            fn try_from(raw: u64) -> Result<Self, IdError> {
                $name::new(raw)
            }
        }

        impl From<$name> for u64 {
            fn from(id: $name) -> u64 {
                id.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                let digits = s.strip_prefix($prefix).unwrap_or(s);
                let raw = digits.parse::<u64>().map_err(|_| IdError::Malformed {
                    kind: $kind,
                    reason: "not a number",
                })?;
                $name::new(raw)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }
    };
}

numeric_id!(
    /// A group, as a non-zero 64-bit number chosen by the node at creation.
    GroupId,
    "group id",
    "g:"
);

numeric_id!(
    /// A channel (one-to-many broadcast), as a non-zero 64-bit number chosen by the node.
    ChannelId,
    "channel id",
    "c:"
);

/// A position in a conversation's sequence. The first message has seq 1; `Seq::ZERO` means "nothing
/// yet" and is what a device that never saw a conversation syncs from.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Seq(u64);

impl Seq {
    /// Before the first message.
    pub const ZERO: Seq = Seq(0);

    /// Wraps a raw sequence number.
    pub const fn new(raw: u64) -> Seq {
        Seq(raw)
    }

    /// The raw number.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The next sequence number, or `None` at `u64::MAX` (a conversation cannot grow further).
    pub fn next(self) -> Option<Seq> {
        self.0.checked_add(1).map(Seq)
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A conversation: either the one direct conversation between two users (named by both, in
/// order, so both sides compute the same id) or a group.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "ConversationIdRepr")]
pub enum ConversationId {
    /// The direct conversation between `low` and `high`, with `low < high`.
    Direct {
        /// The lexicographically smaller user.
        low: UserId,
        /// The lexicographically larger user.
        high: UserId,
    },
    /// A group conversation.
    Group(GroupId),
    /// A channel: owner and admins post, subscribers read, react and comment.
    Channel(ChannelId),
    /// The comment thread of one channel post.
    Comments {
        /// The channel.
        channel: ChannelId,
        /// The post commented on.
        post: Seq,
    },
    /// A customer's conversation with a shop: the customer on one side, the shop's staff on
    /// the other.
    Shop {
        /// The shop.
        shop: ShopId,
        /// The customer.
        customer: UserId,
    },
}

impl ConversationId {
    /// The direct conversation between two distinct users, in either order.
    pub fn direct(a: UserId, b: UserId) -> Result<ConversationId, IdError> {
        if a == b {
            return Err(IdError::Malformed {
                kind: "conversation id",
                reason: "a direct conversation needs two different users",
            });
        }
        let (low, high) = if a < b { (a, b) } else { (b, a) };
        Ok(ConversationId::Direct { low, high })
    }

    /// Whether `user` is one of the two sides of a direct conversation (always false for groups,
    /// whose membership lives in the group's actor).
    pub fn is_direct_party(&self, user: &UserId) -> bool {
        match self {
            ConversationId::Direct { low, high } => low == user || high == user,
            ConversationId::Group(_)
            | ConversationId::Channel(_)
            | ConversationId::Comments { .. }
            | ConversationId::Shop { .. } => false,
        }
    }

    /// For a direct conversation, the side that is not `me`.
    pub fn peer_of(&self, me: &UserId) -> Option<&UserId> {
        match self {
            ConversationId::Direct { low, high } if low == me => Some(high),
            ConversationId::Direct { low, high } if high == me => Some(low),
            _ => None,
        }
    }
}

impl fmt::Display for ConversationId {
    /// `dm:<low>:<high>` or `g:<group>`; parsed back by [`FromStr`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConversationId::Direct { low, high } => write!(f, "dm:{low}:{high}"),
            ConversationId::Group(g) => write!(f, "g:{g}"),
            ConversationId::Channel(c) => write!(f, "c:{c}"),
            ConversationId::Comments { channel, post } => write!(f, "c:{channel}:{post}"),
            ConversationId::Shop { shop, customer } => write!(f, "s:{shop}:{customer}"),
        }
    }
}

impl fmt::Debug for ConversationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConversationId({self})")
    }
}

impl FromStr for ConversationId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        if let Some(rest) = s.strip_prefix("dm:") {
            let (a, b) = rest.split_once(':').ok_or(IdError::Malformed {
                kind: "conversation id",
                reason: "expected dm:<user>:<user>",
            })?;
            let (a, b) = (a.parse::<UserId>()?, b.parse::<UserId>()?);
            if a >= b {
                return Err(IdError::Malformed {
                    kind: "conversation id",
                    reason: "users of a direct conversation must be in ascending order",
                });
            }
            return ConversationId::direct(a, b);
        }
        if let Some(rest) = s.strip_prefix("g:") {
            return Ok(ConversationId::Group(rest.parse()?));
        }
        if let Some(rest) = s.strip_prefix("c:") {
            return match rest.split_once(':') {
                None => Ok(ConversationId::Channel(rest.parse()?)),
                Some((channel, post)) => {
                    let post =
                        post.parse::<u64>()
                            .ok()
                            .filter(|p| *p > 0)
                            .ok_or(IdError::Malformed {
                                kind: "conversation id",
                                reason: "expected c:<channel>:<post seq>",
                            })?;
                    Ok(ConversationId::Comments {
                        channel: channel.parse()?,
                        post: Seq::new(post),
                    })
                }
            };
        }
        if let Some(rest) = s.strip_prefix("s:") {
            // Shop ids may contain ':', user ids never do: the customer follows the last one.
            let (shop, customer) = rest.rsplit_once(':').ok_or(IdError::Malformed {
                kind: "conversation id",
                reason: "expected s:<shop>:<customer>",
            })?;
            return Ok(ConversationId::Shop {
                shop: shop.parse()?,
                customer: customer.parse()?,
            });
        }
        Err(IdError::Malformed {
            kind: "conversation id",
            reason: "expected dm:…, g:…, c:… or s:…",
        })
    }
}

/// The wire shape of a [`ConversationId`], validated on the way in.
#[derive(Deserialize)]
enum ConversationIdRepr {
    Direct(UserId, UserId),
    Group(GroupId),
    Channel(ChannelId),
    Comments(ChannelId, Seq),
    Shop(ShopId, UserId),
}

impl TryFrom<ConversationIdRepr> for ConversationId {
    type Error = IdError;
    fn try_from(repr: ConversationIdRepr) -> Result<Self, IdError> {
        match repr {
            ConversationIdRepr::Direct(low, high) if low < high => {
                Ok(ConversationId::Direct { low, high })
            }
            ConversationIdRepr::Direct(..) => Err(IdError::Malformed {
                kind: "conversation id",
                reason: "users of a direct conversation must be distinct and ascending",
            }),
            ConversationIdRepr::Group(g) => Ok(ConversationId::Group(g)),
            ConversationIdRepr::Channel(c) => Ok(ConversationId::Channel(c)),
            ConversationIdRepr::Comments(_, post) if post == Seq::ZERO => Err(IdError::Malformed {
                kind: "conversation id",
                reason: "comments belong to a post (seq 1 or later)",
            }),
            ConversationIdRepr::Comments(channel, post) => {
                Ok(ConversationId::Comments { channel, post })
            }
            ConversationIdRepr::Shop(shop, customer) => Ok(ConversationId::Shop { shop, customer }),
        }
    }
}

/// [`ConversationIdRepr`] borrowing the ids it holds: the same encoding without cloning them.
#[derive(Serialize)]
#[serde(rename = "ConversationIdRepr")]
enum ConversationIdReprRef<'a> {
    Direct(&'a UserId, &'a UserId),
    Group(GroupId),
    Channel(ChannelId),
    Comments(ChannelId, Seq),
    Shop(&'a ShopId, &'a UserId),
}

impl Serialize for ConversationId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let repr = match self {
            ConversationId::Direct { low, high } => ConversationIdReprRef::Direct(low, high),
            ConversationId::Group(g) => ConversationIdReprRef::Group(*g),
            ConversationId::Channel(c) => ConversationIdReprRef::Channel(*c),
            ConversationId::Comments { channel, post } => {
                ConversationIdReprRef::Comments(*channel, *post)
            }
            ConversationId::Shop { shop, customer } => ConversationIdReprRef::Shop(shop, customer),
        };
        repr.serialize(serializer)
    }
}

/// How a client names a conversation in a request: "my direct conversation with this user", or a
/// group. The node resolves it to a [`ConversationId`] using the authenticated user.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ConversationRef {
    /// The direct conversation between the caller and `peer`.
    Direct {
        /// The other user.
        peer: UserId,
    },
    /// A group the caller belongs to.
    Group(GroupId),
    /// A conversation named by its full id (as it appears in events and sync batches).
    Id(ConversationId),
}

impl ConversationRef {
    /// Resolves the reference for the authenticated user `me`.
    pub fn resolve(&self, me: &UserId) -> Result<ConversationId, IdError> {
        match self {
            ConversationRef::Direct { peer } => ConversationId::direct(me.clone(), peer.clone()),
            ConversationRef::Group(g) => Ok(ConversationId::Group(*g)),
            ConversationRef::Id(id) => Ok(id.clone()),
        }
    }
}
