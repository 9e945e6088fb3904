//! The `mixed` scenario: chat pairs, groups and channels on one node at once, in the proportions of
//! `--mix chat=A,group=B,channel=C`. The weights are shares of the sending users, and since the
//! rate is spread evenly over the senders, shares of the sends: of `--clients N` senders,
//! `N · A / (A + B + C)` write in pairs (rounded down to an even number), `N · B / …` in groups of
//! `--group-size` (rounded down to whole groups) and the rest post into one channel each, every
//! channel with `--subscribers` listeners spread over them. Each part is set up by its own
//! scenario's code under its own user names; the traffic is `traffic.rs`, over all of them.

use anyhow::{Result, bail};

use crate::node::Target;
use crate::traffic::Member;
use crate::{channel, chat, group};

/// Senders of each kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Split {
    pub(crate) chat: usize,
    pub(crate) group: usize,
    pub(crate) channel: usize,
}

/// Parses `chat=70,group=20,channel=10` (any order, missing kinds weigh 0) into the weights.
pub(crate) fn parse_mix(text: &str) -> Result<[u64; 3], String> {
    let mut weights = [0u64; 3];
    for part in text.split(',').filter(|p| !p.trim().is_empty()) {
        let Some((kind, weight)) = part.split_once('=') else {
            return Err(format!("--mix: expected kind=weight, got {part:?}"));
        };
        let weight: u64 = weight
            .trim()
            .parse()
            .map_err(|_| format!("--mix: {weight:?} is not a whole number"))?;
        let slot = match kind.trim() {
            "chat" => 0,
            "group" => 1,
            "channel" => 2,
            other => {
                return Err(format!(
                    "--mix: unknown kind {other:?} (chat, group, channel)"
                ));
            }
        };
        weights[slot] = weight;
    }
    if weights.iter().sum::<u64>() == 0 {
        return Err("--mix: the weights add up to 0".to_owned());
    }
    Ok(weights)
}

/// How `senders` users split by `weights` (chat pairs and whole groups; channels take the rest).
pub(crate) fn split(senders: usize, weights: [u64; 3], group_size: usize) -> Split {
    let total: u64 = weights.iter().sum::<u64>().max(1);
    let share = |w: u64| usize::try_from(senders as u64 * w / total).unwrap_or(senders);
    let chat = share(weights[0]) & !1;
    let group_size = group_size.max(2);
    let group = share(weights[1]) / group_size * group_size;
    let channel = if weights[2] == 0 {
        0
    } else {
        senders.saturating_sub(chat + group)
    };
    Split {
        chat,
        group,
        channel,
    }
}

/// Sets up every part and joins their members into one list (peer indices shifted).
pub(crate) async fn setup(
    split: Split,
    group_size: usize,
    subscribers: usize,
    run_tag: &str,
    target: &Target,
) -> Result<Vec<Member>> {
    if split.chat + split.group + split.channel == 0 {
        bail!("--mix leaves no sender: raise --clients");
    }
    let mut members: Vec<Member> = Vec::new();
    let mut add = |part: Vec<Member>| {
        let offset = members.len();
        members.extend(part.into_iter().map(|mut member| {
            for peer in &mut member.peers {
                *peer += offset;
            }
            member
        }));
    };
    if split.chat > 0 {
        add(chat::setup(split.chat, &format!("{run_tag}c"), target).await?);
    }
    if split.group > 0 {
        add(group::setup(split.group, group_size, &format!("{run_tag}g"), target).await?);
    }
    if split.channel > 0 {
        let subscribers = subscribers.max(split.channel);
        add(channel::setup(subscribers, split.channel, &format!("{run_tag}h"), target).await?);
    }
    Ok(members)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_parses_and_splits_into_pairs_whole_groups_and_the_rest() {
        assert_eq!(parse_mix("chat=70,group=20,channel=10"), Ok([70, 20, 10]));
        assert_eq!(parse_mix("channel=1"), Ok([0, 0, 1]));
        assert!(parse_mix("chat=0").is_err());
        assert!(parse_mix("video=3").is_err());
        assert!(parse_mix("chat").is_err());
        let s = split(100, [70, 20, 10], 10);
        assert_eq!((s.chat, s.group, s.channel), (70, 20, 10));
        let s = split(25, [70, 20, 10], 4);
        assert_eq!((s.chat, s.group, s.channel), (16, 4, 5));
        let s = split(20, [1, 1, 0], 5);
        assert_eq!((s.chat, s.group, s.channel), (10, 10, 0));
    }
}
