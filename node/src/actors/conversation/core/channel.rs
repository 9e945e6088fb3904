//! Channel administration in the pure core: creation, subscriptions, staff, profile, scheduled
//! posts, and the channel-role cache of comment threads. Posting itself is `handle_send` (the
//! core's `author` lets only the owner and admins post, signed or as the channel).

use std::collections::BTreeMap;
use std::sync::Arc;

use piazza_protocol::limits::SCHEDULED_POSTS_MAX;
use piazza_protocol::{
    ChannelInfo, ClientMsgId, ErrorCode, Message, MessageBody, ScheduledPost, Seq, SystemEvent,
    UserId,
};

use super::{COMMENT_ROLES_MAX, ConversationCore, Kind, SendOutcome, system_msg_id};
use crate::storage::{ChannelRecord, Role, Write};

/// The parts of a channel's state the operations below change.
struct ChannelParts<'a> {
    id: piazza_protocol::ChannelId,
    record: &'a mut ChannelRecord,
    staff: &'a mut BTreeMap<UserId, Role>,
    scheduled: &'a mut BTreeMap<ClientMsgId, ScheduledPost>,
}

/// What publishing a scheduled post does.
#[derive(Debug)]
pub(crate) enum Publish {
    /// Nothing is scheduled under that id (published or cancelled before): only clean the index.
    Stale,
    /// It was published before (the retry of a publication whose index row survived).
    Already { writes: Vec<Write> },
    /// Publish it: persist the outcome's writes (they also remove the schedule).
    Post(SendOutcome),
}

impl ConversationCore {
    fn channel_mut(&mut self) -> Result<ChannelParts<'_>, ErrorCode> {
        match &mut self.kind {
            Kind::Channel {
                id,
                record: Some(record),
                staff,
                scheduled,
            } => Ok(ChannelParts {
                id: *id,
                record,
                staff,
                scheduled,
            }),
            Kind::Channel { record: None, .. } => Err(ErrorCode::NotFound),
            _ => Err(ErrorCode::invalid("conversation", "not a channel")),
        }
    }

    fn require_channel_moderator(&self, user: &UserId) -> Result<(), ErrorCode> {
        self.authorize(user)?;
        if self.is_moderator(user) {
            Ok(())
        } else {
            Err(ErrorCode::Forbidden)
        }
    }

    /// Creates the channel with `owner`. Returns the writes and the creation message (seq 1).
    pub(crate) fn handle_create_channel(
        &mut self,
        owner: &UserId,
        title: String,
        description: String,
        signed: bool,
        now_ms: u64,
    ) -> Result<(Vec<Write>, Message), ErrorCode> {
        let Kind::Channel {
            id, record, staff, ..
        } = &mut self.kind
        else {
            return Err(ErrorCode::invalid("conversation", "not a channel"));
        };
        if record.is_some() || self.last_seq != Seq::ZERO {
            return Err(ErrorCode::Conflict {
                reason: "channel already exists".into(),
            });
        }
        let new = ChannelRecord {
            title: title.clone(),
            description,
            owner: owner.clone(),
            created_at_ms: now_ms,
            signed,
            avatar: None,
        };
        let mut writes = vec![
            Write::Channel {
                id: *id,
                record: new.clone(),
            },
            Write::AddMember {
                conversation: self.id.clone(),
                user: owner.clone(),
                role: Role::Owner,
            },
        ];
        *record = Some(new);
        staff.insert(owner.clone(), Role::Owner);
        Arc::make_mut(&mut self.members).insert(owner.clone());
        let client_msg_id = system_msg_id("created")?;
        let body = MessageBody::System(SystemEvent::ChannelCreated { title });
        let (message, more) = self.append(owner.clone(), client_msg_id, body, now_ms)?;
        writes.extend(more);
        Ok((writes, message))
    }

    /// `user` subscribes. Quiet (no message to the audience). `Ok(None)`: already subscribed.
    pub(crate) fn handle_subscribe(
        &mut self,
        user: &UserId,
        subscribers_max: usize,
    ) -> Result<Option<Vec<Write>>, ErrorCode> {
        self.channel_mut()?;
        if self.members.contains(user) {
            return Ok(None);
        }
        if self.members.len() >= subscribers_max {
            return Err(ErrorCode::TooLarge {
                what: "channel subscribers".into(),
                limit: subscribers_max as u64,
            });
        }
        // Copy-on-write: a fan-out still holding the old set keeps it; otherwise no copy.
        Arc::make_mut(&mut self.members).insert(user.clone());
        Ok(Some(vec![Write::AddMember {
            conversation: self.id.clone(),
            user: user.clone(),
            role: Role::Member,
        }]))
    }

    /// `user` unsubscribes (admins lose their role with it; the owner cannot leave).
    pub(crate) fn handle_unsubscribe(&mut self, user: &UserId) -> Result<Vec<Write>, ErrorCode> {
        self.authorize(user)?;
        let conversation = self.id.clone();
        let parts = self.channel_mut()?;
        if parts.record.owner == *user {
            return Err(ErrorCode::Conflict {
                reason: "the owner cannot unsubscribe".into(),
            });
        }
        parts.staff.remove(user);
        Arc::make_mut(&mut self.members).remove(user);
        Ok(vec![Write::RemoveMember {
            conversation,
            user: user.clone(),
        }])
    }

    /// The owner makes `user` an admin (subscribing them) or a plain subscriber again.
    pub(crate) fn handle_set_channel_admin(
        &mut self,
        by: &UserId,
        user: &UserId,
        admin: bool,
        subscribers_max: usize,
    ) -> Result<Vec<Write>, ErrorCode> {
        self.authorize(by)?;
        if self.role(by) != Some(Role::Owner) {
            return Err(ErrorCode::Forbidden);
        }
        if by == user {
            return Err(ErrorCode::invalid("user", "the owner is always an admin"));
        }
        let subscribed = self.members.contains(user);
        if admin && !subscribed && self.members.len() >= subscribers_max {
            return Err(ErrorCode::TooLarge {
                what: "channel subscribers".into(),
                limit: subscribers_max as u64,
            });
        }
        if !admin && !subscribed {
            return Err(ErrorCode::NotFound);
        }
        let conversation = self.id.clone();
        let parts = self.channel_mut()?;
        let role = if admin {
            parts.staff.insert(user.clone(), Role::Admin);
            Role::Admin
        } else {
            parts.staff.remove(user);
            Role::Member
        };
        Arc::make_mut(&mut self.members).insert(user.clone());
        Ok(vec![Write::AddMember {
            conversation,
            user: user.clone(),
            role,
        }])
    }

    /// The owner or an admin changes the profile. A title or description change is announced
    /// in the channel; signing changes quietly and applies to later posts.
    pub(crate) fn handle_update_channel(
        &mut self,
        by: &UserId,
        title: Option<String>,
        description: Option<String>,
        signed: Option<bool>,
        now_ms: u64,
    ) -> Result<(Vec<Write>, Option<Message>), ErrorCode> {
        self.require_channel_moderator(by)?;
        let parts = self.channel_mut()?;
        let title = title.filter(|t| *t != parts.record.title);
        let description = description.filter(|d| *d != parts.record.description);
        let signed = signed.filter(|s| *s != parts.record.signed);
        if title.is_none() && description.is_none() && signed.is_none() {
            return Ok((Vec::new(), None));
        }
        if let Some(title) = &title {
            parts.record.title = title.clone();
        }
        if let Some(description) = &description {
            parts.record.description = description.clone();
        }
        if let Some(signed) = signed {
            parts.record.signed = signed;
        }
        let mut writes = vec![Write::Channel {
            id: parts.id,
            record: parts.record.clone(),
        }];
        if title.is_none() && description.is_none() {
            return Ok((writes, None));
        }
        let sender = self.author(by)?;
        let (message, more) = self.system(
            &sender,
            SystemEvent::InfoChanged { title, description },
            now_ms,
        )?;
        writes.extend(more);
        Ok((writes, Some(message)))
    }

    /// The channel's profile, for anyone (channels are public).
    pub(crate) fn channel_info(&self, user: &UserId) -> Result<ChannelInfo, ErrorCode> {
        match &self.kind {
            Kind::Channel {
                id,
                record: Some(record),
                ..
            } => Ok(ChannelInfo {
                channel: *id,
                title: record.title.clone(),
                description: record.description.clone(),
                owner: record.owner.clone(),
                subscriber_count: self.members.len() as u64,
                created_at_ms: record.created_at_ms,
                signed: record.signed,
                role: self.role(user).map(Role::to_wire),
                avatar: record.avatar.clone(),
            }),
            Kind::Channel { record: None, .. } => Err(ErrorCode::NotFound),
            _ => Err(ErrorCode::invalid("conversation", "not a channel")),
        }
    }

    /// Schedules a text post. Scheduling the same id again answers with the existing schedule
    /// (`None` writes).
    pub(crate) fn handle_schedule(
        &mut self,
        by: &UserId,
        client_msg_id: ClientMsgId,
        text: String,
        at_ms: u64,
    ) -> Result<(Option<Vec<Write>>, ScheduledPost), ErrorCode> {
        self.require_channel_moderator(by)?;
        let author = self.author(by)?;
        if self.dedup.get(&(author, client_msg_id.clone())).is_some() {
            return Err(ErrorCode::Conflict {
                reason: "a post with this client_msg_id was already published".into(),
            });
        }
        let parts = self.channel_mut()?;
        if let Some(existing) = parts.scheduled.get(&client_msg_id) {
            return Ok((None, existing.clone()));
        }
        if parts.scheduled.len() >= SCHEDULED_POSTS_MAX {
            return Err(ErrorCode::TooLarge {
                what: "scheduled posts".into(),
                limit: SCHEDULED_POSTS_MAX as u64,
            });
        }
        let post = ScheduledPost {
            client_msg_id: client_msg_id.clone(),
            at_ms,
            author: by.clone(),
            text,
        };
        parts.scheduled.insert(client_msg_id, post.clone());
        let writes = vec![Write::Schedule {
            channel: parts.id,
            post: post.clone(),
        }];
        Ok((Some(writes), post))
    }

    /// The scheduled posts, earliest first, for the owner and admins.
    pub(crate) fn scheduled_posts(&self, by: &UserId) -> Result<Vec<ScheduledPost>, ErrorCode> {
        self.require_channel_moderator(by)?;
        let Kind::Channel { scheduled, .. } = &self.kind else {
            return Err(ErrorCode::invalid("conversation", "not a channel"));
        };
        let mut posts: Vec<ScheduledPost> = scheduled.values().cloned().collect();
        posts.sort_by(|a, b| (a.at_ms, &a.client_msg_id).cmp(&(b.at_ms, &b.client_msg_id)));
        Ok(posts)
    }

    /// Cancels a scheduled post.
    pub(crate) fn handle_cancel_scheduled(
        &mut self,
        by: &UserId,
        client_msg_id: &ClientMsgId,
    ) -> Result<Vec<Write>, ErrorCode> {
        self.require_channel_moderator(by)?;
        let parts = self.channel_mut()?;
        let post = parts
            .scheduled
            .remove(client_msg_id)
            .ok_or(ErrorCode::NotFound)?;
        Ok(vec![Write::Unschedule {
            channel: parts.id,
            client_msg_id: post.client_msg_id,
            at_ms: post.at_ms,
        }])
    }

    /// The scheduler publishes a post whose time has come: signed by its author if the channel
    /// signs posts now, and whoever scheduled it (the owner can cancel it before).
    pub(crate) fn handle_publish(
        &mut self,
        client_msg_id: &ClientMsgId,
        now_ms: u64,
    ) -> Result<Publish, ErrorCode> {
        let parts = self.channel_mut()?;
        let Some(post) = parts.scheduled.remove(client_msg_id) else {
            return Ok(Publish::Stale);
        };
        let unschedule = Write::Unschedule {
            channel: parts.id,
            client_msg_id: post.client_msg_id.clone(),
            at_ms: post.at_ms,
        };
        let sender = if parts.record.signed {
            post.author.clone()
        } else {
            UserId::channel()
        };
        if self.duplicate(&sender, client_msg_id).is_some() {
            return Ok(Publish::Already {
                writes: vec![unschedule],
            });
        }
        let (message, mut writes) = self.append(
            sender,
            client_msg_id.clone(),
            MessageBody::Text(post.text),
            now_ms,
        )?;
        writes.push(unschedule);
        Ok(Publish::Post(self.outcome(message, writes)))
    }

    /// Records `user`'s current role in the channel of this comment thread (read by the actor
    /// from the channel's member rows just before the request), or that they have none.
    pub(crate) fn note_channel_role(&mut self, user: &UserId, role: Option<Role>) {
        if let Kind::Comments { roles, .. } = &mut self.kind {
            match role {
                Some(role) => {
                    if roles.len() >= COMMENT_ROLES_MAX && !roles.contains_key(user) {
                        roles.clear();
                    }
                    roles.insert(user.clone(), role);
                }
                None => {
                    roles.remove(user);
                }
            }
        }
    }

    /// The channel whose post this comment thread belongs to, if it is one.
    pub(crate) fn comments_of(&self) -> Option<piazza_protocol::ChannelId> {
        match &self.kind {
            Kind::Comments { channel, .. } => Some(*channel),
            _ => None,
        }
    }
}
