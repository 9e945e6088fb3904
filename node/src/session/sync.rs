//! `Sync`: everything a device missed, across the user's conversations.

use std::collections::HashMap;
use std::sync::Arc;

use piazza_protocol::{ErrorCode, Response, Seq, SyncBatch, SyncCursor, UserId};

use crate::actors::conversation::ConversationMsg;
use crate::node::NodeContext;

/// Answers a `Sync` for `user`. The user's conversation index and each conversation's last seq are
/// read from storage (cheap, committed data); only conversations with something new are asked for
/// their messages, through their actor, which authorizes the read.
pub(crate) async fn sync(
    ctx: &Arc<NodeContext>,
    user: &UserId,
    cursors: Vec<SyncCursor>,
    limit: u32,
) -> Response {
    match sync_inner(ctx, user, cursors, limit).await {
        Ok(batch) => Response::Sync(batch),
        Err(code) => Response::Error(code),
    }
}

async fn sync_inner(
    ctx: &Arc<NodeContext>,
    user: &UserId,
    cursors: Vec<SyncCursor>,
    limit: u32,
) -> Result<SyncBatch, ErrorCode> {
    let cursors: HashMap<_, _> = cursors
        .into_iter()
        .map(|c| (c.conversation, c.seq))
        .collect();
    let conversations = ctx
        .storage
        .user_conversations(user, None, ctx.config.limits.user_conversations_max)
        .map_err(|e| e.to_error_code())?;
    let mut messages = Vec::new();
    let mut budget = limit;
    let mut more = false;
    for conversation in conversations {
        let after = cursors.get(&conversation).copied().unwrap_or(Seq::ZERO);
        let last = ctx
            .storage
            .last_seq(&conversation)
            .map_err(|e| e.to_error_code())?;
        if last <= after {
            continue;
        }
        if budget == 0 {
            more = true;
            break;
        }
        let read = ctx
            .ask_conversation(&conversation, |reply| ConversationMsg::ReadAfter {
                user: user.clone(),
                after,
                limit: budget,
                reply,
            })
            .await?;
        let (page, page_more) = match read {
            Ok(page) => page,
            // Left the conversation since the index was read: nothing to sync there.
            Err(ErrorCode::Forbidden | ErrorCode::NotFound) => continue,
            Err(code) => return Err(code),
        };
        budget = budget.saturating_sub(u32::try_from(page.len()).unwrap_or(u32::MAX));
        more |= page_more;
        messages.extend(page);
    }
    Ok(SyncBatch { messages, more })
}

/// Answers `Heads`: the newest seq of each of `user`'s conversations, one page.
pub(crate) fn heads(
    ctx: &NodeContext,
    user: &UserId,
    after: Option<&piazza_protocol::ConversationId>,
) -> Response {
    let result = (|| {
        let limit = piazza_protocol::limits::HEADS_MAX;
        let mut conversations = ctx.storage.user_conversations(user, after, limit + 1)?;
        let more = conversations.len() > limit;
        conversations.truncate(limit);
        let heads = conversations
            .into_iter()
            .map(|conversation| {
                let seq = ctx.storage.last_seq(&conversation)?;
                Ok(SyncCursor { conversation, seq })
            })
            .collect::<Result<Vec<_>, crate::storage::StorageError>>()?;
        Ok::<_, crate::storage::StorageError>(Response::Heads { heads, more })
    })();
    result.unwrap_or_else(|e| Response::Error(e.to_error_code()))
}
