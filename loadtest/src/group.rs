//! The `group` scenario: `clients` users in groups of `group_size`, each user on its own
//! connection. The first member of each group creates it with the others (through the SDK, as an
//! app would); then every member writes into its group and hears every other member. A message is
//! delivered `group_size - 1` times, so deliveries per second are `group_size - 1` times the send
//! rate. The traffic itself is `traffic.rs`.

use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use piazza_client::{Client, ConversationId, ConversationRef};
use piazza_protocol::limits::GROUP_CREATE_MEMBERS_MAX;
use tokio::task::JoinSet;

use crate::node::Target;
use crate::traffic::{self, CONNECT_CONCURRENCY, Member};

/// Largest group the scenario can create in one request: the creator plus the most members a
/// `CreateGroup` may name.
pub(crate) const GROUP_SIZE_MAX: usize = GROUP_CREATE_MEMBERS_MAX + 1;

/// Why `clients` users cannot form groups of `group_size`, if they cannot.
pub(crate) fn check_sizes(clients: usize, group_size: usize) -> Result<(), String> {
    if !(2..=GROUP_SIZE_MAX).contains(&group_size) {
        return Err(format!(
            "--group-size must be between 2 and {GROUP_SIZE_MAX}, got {group_size}"
        ));
    }
    if clients < group_size || !clients.is_multiple_of(group_size) {
        return Err(format!(
            "--clients {clients} is not a multiple of --group-size {group_size}: every user \
             belongs to exactly one full group"
        ));
    }
    Ok(())
}

/// Connects `clients` users, creates their groups and returns the members: group `g` is users
/// `g * group_size ..= (g + 1) * group_size - 1`, created by its first user.
pub(crate) async fn setup(
    clients: usize,
    group_size: usize,
    run_tag: &str,
    target: &Target,
) -> Result<Vec<Member>> {
    check_sizes(clients, group_size).map_err(|e| anyhow!(e))?;
    let users = traffic::user_names(run_tag, clients)?;
    let clients: Vec<Arc<Client>> = traffic::connect_users(target, &users)
        .await?
        .into_iter()
        .map(Arc::new)
        .collect();
    let groups = clients.len() / group_size;

    // Create the groups, at most CONNECT_CONCURRENCY at once. Bounded: each iteration starts one
    // of `groups` creations or finishes one.
    let mut conversations: Vec<Option<ConversationId>> = vec![None; groups];
    let mut pending = JoinSet::new();
    let mut next = 0;
    while next < groups || !pending.is_empty() {
        while next < groups && pending.len() < CONNECT_CONCURRENCY {
            let first = next * group_size;
            let owner = Arc::clone(&clients[first]);
            let others = users[first + 1..first + group_size].to_vec();
            let name = format!("lt{run_tag}-g{next}");
            let index = next;
            pending.spawn(async move { (index, owner.create_group(name, others).await) });
            next += 1;
        }
        let Some(joined) = pending.join_next().await else {
            break;
        };
        let (index, result) = joined.context("create-group task")?;
        let conversation = result.with_context(|| format!("create group {index}"))?;
        conversations[index] = Some(conversation);
    }

    let mut members = Vec::with_capacity(clients.len());
    for (index, client) in clients.into_iter().enumerate() {
        let group = index / group_size;
        let Some(conversation) = conversations[group].clone() else {
            bail!("group {group} was not created");
        };
        let ConversationId::Group(id) = &conversation else {
            bail!("create_group answered with a conversation that is not a group: {conversation}");
        };
        let first = group * group_size;
        members.push(Member {
            client,
            me: users[index].clone(),
            to: ConversationRef::Group(*id),
            conversation,
            peers: (first..first + group_size)
                .filter(|&i| i != index)
                .collect(),
            sends: true,
        });
    }
    Ok(members)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_must_be_full_and_within_the_creation_limit() {
        assert!(check_sizes(20, 5).is_ok());
        assert!(check_sizes(2, 2).is_ok());
        assert!(check_sizes(GROUP_SIZE_MAX, GROUP_SIZE_MAX).is_ok());
        assert!(check_sizes(GROUP_SIZE_MAX + 1, GROUP_SIZE_MAX + 1).is_err());
        assert!(check_sizes(20, 1).is_err());
        let partial = check_sizes(21, 5).unwrap_err();
        assert!(partial.contains("not a multiple"), "{partial}");
        assert!(check_sizes(4, 5).is_err());
    }
}
