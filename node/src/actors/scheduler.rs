//! The scheduler: publishes scheduled channel posts when they are due. One task per node. It
//! reads the due index from storage (so schedules survive restarts: a post that fell due while
//! the node was down is published at start-up), asks each channel's actor to publish, and sleeps
//! until the next due time or until a new schedule wakes it.
//!
//! Publishing is idempotent: the channel's actor removes the schedule in the same commit as the
//! post and deduplicates by the post's `client_msg_id`, so a retry never posts twice.

use std::sync::Arc;
use std::time::Duration;

use piazza_protocol::{ConversationId, Response, UserId};
use tokio::sync::watch;

use crate::actors::conversation::{ChannelOp, ConversationMsg};
use crate::node::NodeContext;

/// Due posts read per pass.
const DUE_BATCH_MAX: usize = 64;
/// Longest sleep between passes, in case a wake-up was missed.
const IDLE_POLL: Duration = Duration::from_secs(30);
/// Pause after a failed publication before the next pass.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Runs until `shutdown` turns true.
pub(crate) async fn run(ctx: Arc<NodeContext>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let pause = match pass(&ctx).await {
            Ok(Some(next_ms)) => {
                let now = crate::node::now_ms();
                Duration::from_millis(next_ms.saturating_sub(now)).min(IDLE_POLL)
            }
            Ok(None) => IDLE_POLL,
            Err(()) => RETRY_PAUSE,
        };
        if pause.is_zero() {
            continue;
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = ctx.scheduler.notified() => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

/// Publishes everything due now. Returns when the next post is due, or `Err` after a failure.
async fn pass(ctx: &Arc<NodeContext>) -> Result<Option<u64>, ()> {
    let (due, next) = match ctx.storage.due(crate::node::now_ms(), DUE_BATCH_MAX) {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(error = %e, "scheduler cannot read due posts");
            return Err(());
        }
    };
    let full = due.len() == DUE_BATCH_MAX;
    for post in due {
        let conversation = ConversationId::Channel(post.channel);
        let answer = ctx
            .ask_conversation(&conversation, |reply| ConversationMsg::Channel {
                user: UserId::channel(),
                op: ChannelOp::Publish {
                    client_msg_id: post.client_msg_id.clone(),
                    at_ms: post.at_ms,
                },
                reply,
            })
            .await;
        match answer {
            Ok(Response::Ack(_) | Response::Done) => {
                metrics::counter!("piazza_scheduled_posts_published_total").increment(1);
            }
            Ok(Response::Error(code)) => {
                tracing::debug!(channel = %post.channel, ?code, "scheduled post not published yet");
                return Err(());
            }
            Ok(other) => {
                tracing::debug!(?other, "unexpected answer to a publication");
                return Err(());
            }
            Err(code) => {
                tracing::debug!(channel = %post.channel, ?code, "scheduled post not published yet");
                return Err(());
            }
        }
    }
    // A full batch means more may be due already: look again at once.
    Ok(if full { Some(0) } else { next })
}
