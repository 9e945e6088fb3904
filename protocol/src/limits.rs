//! Hard wire limits. Every string, list and frame that crosses the wire has one; both sides enforce
//! them, and a node answers anything over a limit with [`crate::ErrorCode::TooLarge`] or
//! [`crate::ErrorCode::Invalid`].

/// Largest frame body a node accepts from a client (requests). A request is small: the biggest ones
/// are a `Sync` with [`SYNC_CURSORS_MAX`] cursors and a group creation with
/// [`GROUP_CREATE_MEMBERS_MAX`] members.
pub const REQUEST_FRAME_BYTES_MAX: u32 = 256 * 1024;

/// Largest frame body either side accepts at all (responses and events). A full history page or sync
/// batch of maximal messages must fit, see the assertions below.
pub const FRAME_BYTES_MAX: u32 = 2 * 1024 * 1024;

/// Largest datagram body (typing indicators). Well under the smallest QUIC datagram size a path
/// supports (~1200 bytes), so it is never fragmented away.
pub const DATAGRAM_BYTES_MAX: u32 = 1024;

/// Longest user name in bytes. Names are `[a-z0-9_.-]`, so bytes = characters.
pub const USER_NAME_BYTES_MAX: usize = 64;

/// Longest device id in bytes.
pub const DEVICE_ID_BYTES_MAX: usize = 64;

/// Longest client message id in bytes (clients typically use a UUID or a counter).
pub const CLIENT_MSG_ID_BYTES_MAX: usize = 64;

/// Longest text message in bytes: Telegram's 4096 characters at up to 4 UTF-8 bytes each.
pub const TEXT_BYTES_MAX: usize = 16 * 1024;

/// Longest group name in bytes.
pub const GROUP_NAME_BYTES_MAX: usize = 256;

/// Longest token in bytes (a JWT with a handful of claims is ~300 bytes).
pub const TOKEN_BYTES_MAX: usize = 4096;

/// Most members a client may name when creating a group in one request. Larger groups grow by
/// invitation (a later issue).
pub const GROUP_CREATE_MEMBERS_MAX: usize = 1000;

/// Most messages in one history page.
pub const HISTORY_PAGE_MAX: u32 = 100;

/// Most cursors in one `Sync` request; a device with more conversations syncs in several requests.
pub const SYNC_CURSORS_MAX: usize = 1000;

/// Most messages in one `SyncBatch`; `more` tells the client to ask again.
pub const SYNC_MESSAGES_MAX: u32 = 100;

/// Longest reaction emoji in bytes (a family emoji with skin tones and joiners is ~35 bytes).
pub const EMOJI_BYTES_MAX: usize = 64;

/// Most distinct emoji on one message; further new emoji are refused.
pub const REACTIONS_DISTINCT_MAX: usize = 32;

/// Most channel posts named in one `ViewPosts` or `PostStats` request.
pub const POST_STATS_MAX: usize = 100;

/// Most posts waiting to be published per channel.
pub const SCHEDULED_POSTS_MAX: usize = 100;

/// Most pinned messages per conversation.
pub const PINNED_MAX: usize = 50;

/// Most users invited in one request; the system message naming them must fit in a message.
pub const GROUP_INVITE_BATCH_MAX: usize = 100;

/// Longest group description in bytes.
pub const GROUP_DESCRIPTION_BYTES_MAX: usize = 2048;

/// Longest invite link in bytes (`<group>.<secret>`).
pub const INVITE_LINK_BYTES_MAX: usize = 128;

/// Most members in one page of the member list.
pub const MEMBERS_PAGE_MAX: u32 = 1000;

/// Most conversations in one `Heads` answer.
pub const HEADS_MAX: usize = 1000;

/// Upper bound on one encoded message: text plus ids plus fixed fields, with slack for the encoding.
pub const MESSAGE_BYTES_MAX: u32 = (TEXT_BYTES_MAX
    + CLIENT_MSG_ID_BYTES_MAX
    + 5 * USER_NAME_BYTES_MAX
    + GROUP_NAME_BYTES_MAX
    + REACTIONS_DISTINCT_MAX * (EMOJI_BYTES_MAX + 8)
    + 256) as u32;

const _: () =
    assert!(HISTORY_PAGE_MAX as u64 * MESSAGE_BYTES_MAX as u64 + 1024 <= FRAME_BYTES_MAX as u64);
const _: () =
    assert!(SYNC_MESSAGES_MAX as u64 * MESSAGE_BYTES_MAX as u64 + 1024 <= FRAME_BYTES_MAX as u64);
const _: () = assert!(
    (SYNC_CURSORS_MAX * (2 * USER_NAME_BYTES_MAX + 32)) as u64 <= REQUEST_FRAME_BYTES_MAX as u64
);
const _: () = assert!(
    (GROUP_CREATE_MEMBERS_MAX * (USER_NAME_BYTES_MAX + 8)) as u64 <= REQUEST_FRAME_BYTES_MAX as u64
);
const _: () = assert!(REQUEST_FRAME_BYTES_MAX <= FRAME_BYTES_MAX);
const _: () =
    assert!(GROUP_INVITE_BATCH_MAX * (USER_NAME_BYTES_MAX + 2) + 256 <= MESSAGE_BYTES_MAX as usize);
const _: () = assert!(
    (MEMBERS_PAGE_MAX as u64) * (USER_NAME_BYTES_MAX as u64 + 8) + 1024 <= FRAME_BYTES_MAX as u64
);
const _: () =
    assert!(GROUP_DESCRIPTION_BYTES_MAX + GROUP_NAME_BYTES_MAX + 256 <= MESSAGE_BYTES_MAX as usize);
const _: () =
    assert!(PINNED_MAX as u64 * MESSAGE_BYTES_MAX as u64 + 1024 <= FRAME_BYTES_MAX as u64);
const _: () =
    assert!((HEADS_MAX * (2 * USER_NAME_BYTES_MAX + 32)) as u64 + 1024 <= FRAME_BYTES_MAX as u64);

/// Largest media blob any node accepts: 2 GiB, Telegram's file limit. A node's own limit
/// (`media.max_bytes`, default 100 MiB) may only be lower.
pub const MEDIA_BYTES_HARD_MAX: u64 = 2 * 1024 * 1024 * 1024;

/// A media id is a SHA-256 as lowercase hex.
pub const MEDIA_ID_HEX_BYTES: usize = 64;

/// Longest MIME type hint in bytes: RFC 6838 allows 127 bytes per part, plus parameters.
pub const MIME_BYTES_MAX: usize = 255;

/// Longest file name in an upload request (common file systems stop at 255 bytes).
pub const FILE_NAME_BYTES_MAX: usize = 255;

/// Longest media caption in bytes: Telegram's 1024 characters at up to 4 UTF-8 bytes each.
pub const CAPTION_BYTES_MAX: usize = 4096;

/// Most raw bytes one upload stream may carry after its header. Large files travel on several
/// streams one after another, so a broken stream costs at most this much to resend, and the node
/// can fsync what it got at every stream's end.
pub const UPLOAD_STREAM_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// Largest header frame of an upload stream: an upload id and an offset, varint-encoded, fit in
/// 20 bytes.
pub const UPLOAD_HEADER_FRAME_BYTES_MAX: u32 = 64;

// A media message (id, type, caption) is never larger than the largest text message, so
// `MESSAGE_BYTES_MAX` bounds it too.
const _: () =
    assert!(CAPTION_BYTES_MAX + MEDIA_ID_HEX_BYTES + MIME_BYTES_MAX + 32 <= TEXT_BYTES_MAX);
const _: () = assert!(UPLOAD_STREAM_BYTES_MAX <= MEDIA_BYTES_HARD_MAX);
