//! Media requests of a session: begin and finish an upload, authorize a download (its bytes are
//! written by the transport after the header this answers with), and send a media message.
//!
//! Each runs in a task beside the session, like `Sync`: they wait for disk work or for actors in
//! turn, and the session keeps serving the connection meanwhile. The tasks are bounded by the
//! connection's request streams, each of which waits for its answer.
//!
//! Who may do what:
//! * an upload belongs to its user: only they can continue or finish it (another user cannot even
//!   name it, see `crate::media::upload`);
//! * a blob may be downloaded by whoever uploaded it, and by anyone who can read a conversation in
//!   which a message references it (the conversation's actor decides who can read it);
//! * a blob may be sent by whoever uploaded it, and again into a conversation that already
//!   references it (forwarding goes through `Forward`, which checks the source conversation).

use std::sync::Arc;
use std::time::Instant;

use piazza_protocol::{
    ClientMsgId, ConversationId, ConversationRef, ErrorCode, MediaId, MediaRequest, MediaResponse,
    MessageBody, Response, UserId,
};
use ractor::RpcReplyPort;

use crate::actors::conversation::ConversationMsg;
use crate::actors::conversation::core::Draft;
use crate::node::NodeContext;

/// Answers a [`MediaRequest`] from a task beside the session.
pub(super) fn handle(
    ctx: Arc<NodeContext>,
    user: UserId,
    request: MediaRequest,
    reply: RpcReplyPort<Response>,
) {
    tokio::spawn(async move {
        let result = match request {
            MediaRequest::BeginUpload {
                size_bytes,
                sha256,
                mime_hint,
                file_name,
            } => ctx
                .media
                .begin_upload(user, size_bytes, sha256, mime_hint, file_name)
                .await
                .map_err(|e| e.to_error_code()),
            MediaRequest::FinishUpload { upload } => ctx
                .media
                .finish_upload(user, upload)
                .await
                .map(MediaResponse::Ready)
                .map_err(|e| e.to_error_code()),
            MediaRequest::Download {
                media,
                conversation,
                range,
            } => download(&ctx, &user, &media, &conversation, range).await,
        };
        let _ = reply.send(result.map_or_else(Response::Error, Response::Media));
    });
}

/// Sends a media message from a task beside the session.
pub(super) fn handle_send(
    ctx: Arc<NodeContext>,
    user: UserId,
    conversation: ConversationRef,
    client_msg_id: ClientMsgId,
    media: MediaId,
    caption: String,
    reply: RpcReplyPort<Response>,
) {
    tokio::spawn(async move {
        let response = send(&ctx, user, &conversation, client_msg_id, media, caption).await;
        let _ = reply.send(response.unwrap_or_else(Response::Error));
    });
}

async fn send(
    ctx: &Arc<NodeContext>,
    user: UserId,
    conversation: &ConversationRef,
    client_msg_id: ClientMsgId,
    media: MediaId,
    caption: String,
) -> Result<Response, ErrorCode> {
    let id = resolve(&user, conversation)?;
    let info = sendable(ctx, &user, &media, &id).await?;
    let draft = Draft {
        body: MessageBody::Media {
            media: info,
            caption,
        },
        reply_to: None,
        forwarded_from: None,
    };
    ctx.ask_conversation(&id, |reply| ConversationMsg::Send {
        sender: user,
        client_msg_id,
        draft,
        received: Instant::now(),
        reply,
    })
    .await
}

/// Sets or removes the picture of a group or channel: the blob is checked here like a media send
/// (uploaded by the caller, or referenced in the conversation); the conversation's actor checks
/// the caller's role.
pub(super) fn handle_set_avatar(
    ctx: Arc<NodeContext>,
    user: UserId,
    conversation: ConversationRef,
    media: Option<MediaId>,
    reply: RpcReplyPort<Response>,
) {
    tokio::spawn(async move {
        let response = set_avatar(&ctx, user, &conversation, media).await;
        let _ = reply.send(response.unwrap_or_else(Response::Error));
    });
}

async fn set_avatar(
    ctx: &Arc<NodeContext>,
    user: UserId,
    conversation: &ConversationRef,
    media: Option<MediaId>,
) -> Result<Response, ErrorCode> {
    let id = resolve(&user, conversation)?;
    let info = match media {
        None => None,
        Some(media) => {
            let info = sendable(ctx, &user, &media, &id).await?;
            if !info.mime.starts_with("image/") {
                return Err(ErrorCode::invalid("media", "a picture must be an image"));
            }
            Some(info)
        }
    };
    ctx.ask_conversation(&id, |reply| ConversationMsg::SetAvatar {
        user,
        media: info,
        reply,
    })
    .await
}

/// Authorizes a download and answers with its header; the transport then streams the bytes.
async fn download(
    ctx: &Arc<NodeContext>,
    user: &UserId,
    media: &MediaId,
    conversation: &ConversationRef,
    range: Option<(u64, u64)>,
) -> Result<MediaResponse, ErrorCode> {
    if !ctx.media.uploaded_by(user, media).await {
        let id = resolve(user, conversation)?;
        authorize(ctx, user, &id).await?;
        if !referenced(ctx, media, &id)? {
            return Err(ErrorCode::Forbidden);
        }
    }
    let info = ctx
        .media
        .stat(media)
        .await
        .map_err(|e| e.to_error_code())?
        .ok_or(ErrorCode::NotFound)?;
    let size = info.size_bytes;
    let (start, end) = match range {
        None => (0, size),
        Some((start, _)) if start > size => {
            return Err(ErrorCode::invalid(
                "range",
                format!("starts after the end of the blob ({size} bytes)"),
            ));
        }
        Some((start, end)) => (start, end.min(size)),
    };
    Ok(MediaResponse::Download { info, start, end })
}

fn resolve(user: &UserId, conversation: &ConversationRef) -> Result<ConversationId, ErrorCode> {
    conversation
        .resolve(user)
        .map_err(|e| ErrorCode::invalid("conversation", e.to_string()))
}

/// Asks the conversation's actor whether `user` may read it.
async fn authorize(
    ctx: &Arc<NodeContext>,
    user: &UserId,
    id: &ConversationId,
) -> Result<(), ErrorCode> {
    ctx.ask_conversation(id, |reply| ConversationMsg::Authorize {
        user: user.clone(),
        reply,
    })
    .await
    .and_then(|answer| answer)
}

/// The blob `user` may put into conversation `id` (they uploaded it, or a message there references
/// it already), or `Forbidden`; `NotFound` only after authorization, so probing hashes tells
/// nothing.
async fn sendable(
    ctx: &Arc<NodeContext>,
    user: &UserId,
    media: &MediaId,
    id: &ConversationId,
) -> Result<piazza_protocol::MediaInfo, ErrorCode> {
    if !ctx.media.uploaded_by(user, media).await && !referenced(ctx, media, id)? {
        return Err(ErrorCode::Forbidden);
    }
    ctx.media
        .stat(media)
        .await
        .map_err(|e| e.to_error_code())?
        .ok_or(ErrorCode::NotFound)
}

/// Whether a message of conversation `id` references blob `media` (committed data, a point read).
fn referenced(ctx: &NodeContext, media: &MediaId, id: &ConversationId) -> Result<bool, ErrorCode> {
    ctx.storage
        .media_referenced(media, id)
        .map_err(|e| e.to_error_code())
}

/// Pictures a shop operation puts on a profile or a product must be the caller's own uploads:
/// customers who see them may download them, so naming someone else's blob by its hash must not
/// be a way to publish it.
pub(super) async fn shop_media_allowed(
    ctx: &Arc<NodeContext>,
    user: &UserId,
    op: &piazza_protocol::commerce::ShopOp,
) -> Result<(), ErrorCode> {
    use piazza_protocol::commerce::ShopOp;
    let media: Vec<&MediaId> = match op {
        ShopOp::Create { profile } | ShopOp::UpdateProfile { profile } => {
            profile.avatar.iter().collect()
        }
        ShopOp::PutProduct(spec) => spec.media.iter().collect(),
        _ => Vec::new(),
    };
    for media in media {
        if !ctx.media.uploaded_by(user, media).await {
            return Err(ErrorCode::Forbidden);
        }
    }
    Ok(())
}
