//! The `channel` scenario: `channels` posters, each the owner of its own channel, and
//! `subscribers` listeners, every one its own user on its own connection; subscriber `i` follows
//! channel `i mod channels`. Only the posters send (at the shared `--rate`, or closed loop); each
//! post is delivered to every subscriber of its channel. The channels are signed, so a post names
//! its poster as sender (an unsigned post is sent as the channel). The traffic is `traffic.rs`.

use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use piazza_client::{ChannelId, Client, ConversationId, ConversationRef};
use tokio::task::JoinSet;

use crate::connect::STORM_CONCURRENCY;
use crate::node::Target;
use crate::traffic::{self, Member};

/// Connects `channels` posters and `subscribers` listeners (all before the load starts, at most
/// [`STORM_CONCURRENCY`] connections or subscriptions under way at once), creates one channel per
/// poster and subscribes every listener to its channel.
pub(crate) async fn setup(
    subscribers: usize,
    channels: usize,
    run_tag: &str,
    target: &Target,
) -> Result<Vec<Member>> {
    if channels == 0 || subscribers < channels {
        bail!("the channel scenario needs at least one subscriber per channel");
    }
    let users = traffic::user_names(run_tag, channels + subscribers)?;
    let clients: Vec<Arc<Client>> =
        traffic::connect_users_at_most(target, &users, STORM_CONCURRENCY)
            .await?
            .into_iter()
            .map(Arc::new)
            .collect();

    let mut ids: Vec<ChannelId> = Vec::with_capacity(channels);
    for (index, poster) in clients.iter().take(channels).enumerate() {
        let id = poster
            .create_channel(format!("lt{run_tag}-c{index}"), "load test", true)
            .await
            .with_context(|| format!("create channel {index}"))?;
        ids.push(id);
    }

    // Subscribe every listener, bounded: each iteration starts one subscription or finishes one.
    let mut pending = JoinSet::new();
    let mut next = channels;
    while next < clients.len() || !pending.is_empty() {
        while next < clients.len() && pending.len() < STORM_CONCURRENCY {
            let client = Arc::clone(&clients[next]);
            let channel = ids[(next - channels) % channels];
            let index = next;
            pending.spawn(async move { (index, client.subscribe(channel).await) });
            next += 1;
        }
        let Some(joined) = pending.join_next().await else {
            break;
        };
        let (index, result) = joined.context("subscribe task")?;
        result.with_context(|| format!("subscribe user {}", users[index]))?;
    }

    let mut members = Vec::with_capacity(clients.len());
    for (index, client) in clients.into_iter().enumerate() {
        let channel = if index < channels {
            index
        } else {
            (index - channels) % channels
        };
        let id = *ids
            .get(channel)
            .ok_or_else(|| anyhow!("internal: channel {channel} missing"))?;
        let conversation = ConversationId::Channel(id);
        members.push(Member {
            client,
            me: users[index].clone(),
            to: ConversationRef::Id(conversation.clone()),
            conversation,
            // A poster hears nobody; a subscriber hears its channel's poster.
            peers: if index < channels {
                Vec::new()
            } else {
                vec![channel]
            },
            sends: index < channels,
        });
    }
    Ok(members)
}
