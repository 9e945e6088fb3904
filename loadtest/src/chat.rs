//! The `chat` scenario: `clients` users in pairs, each user on its own connection; in every pair
//! A writes to B and B to A in their direct conversation. The traffic itself is `traffic.rs`.

use std::sync::Arc;

use anyhow::{Result, anyhow, bail};
use piazza_client::{ConversationId, ConversationRef};

use crate::node::Target;
use crate::traffic::{self, Member};

/// Connects `clients` users (an even number) and pairs them: users `2k` and `2k + 1`.
pub(crate) async fn setup(clients: usize, run_tag: &str, target: &Target) -> Result<Vec<Member>> {
    if clients < 2 || !clients.is_multiple_of(2) {
        bail!("the chat scenario needs an even number of clients (at least 2)");
    }
    let users = traffic::user_names(run_tag, clients)?;
    let connected = traffic::connect_users(target, &users).await?;
    let mut members = Vec::with_capacity(clients);
    for (index, client) in connected.into_iter().enumerate() {
        // Pairs are (0, 1), (2, 3), …
        let peer = index ^ 1;
        let (me, peer_name) = (users[index].clone(), users[peer].clone());
        let conversation = ConversationId::direct(me.clone(), peer_name.clone())
            .map_err(|e| anyhow!("conversation id: {e}"))?;
        members.push(Member {
            client: Arc::new(client),
            me,
            to: ConversationRef::Direct { peer: peer_name },
            conversation,
            peers: vec![peer],
            sends: true,
        });
    }
    Ok(members)
}
