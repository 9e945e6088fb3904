//! Channels and presence in the SDK. A channel post is an ordinary send to
//! `ConversationRef::Id(ConversationId::Channel(..))` ([`Client::post`] is a shorthand); comments
//! are sends to the post's thread, `ConversationId::Comments { channel, post }`.

use piazza_protocol::{
    ChannelId, ChannelInfo, ClientMsgId, ConversationId, ConversationRef, MediaId, PostStats,
    PresenceState, Request, Response, ScheduledPost, SendAck, Seq, UserId,
};

use super::{Client, Retry};
use crate::error::ClientError;
use crate::transport;

impl Client {
    /// Creates a channel owned by this user. Not retried after a lost connection.
    pub async fn create_channel(
        &self,
        title: impl Into<String>,
        description: impl Into<String>,
        signed: bool,
    ) -> Result<ChannelId, ClientError> {
        let request = Request::CreateChannel {
            title: title.into(),
            description: description.into(),
            signed,
        };
        match self.call(request, Retry::Never).await? {
            Response::ChannelCreated { channel } => Ok(channel),
            other => Err(transport::unexpected("create_channel", &other)),
        }
    }

    /// Subscribes to a channel (subscribing twice is harmless) and returns its newest seq. Posts
    /// after it arrive as events; earlier ones are history ([`Client::history`]), not events:
    /// the conversation's cursor starts at the head.
    pub async fn subscribe(&self, channel: ChannelId) -> Result<Seq, ClientError> {
        match self
            .call(Request::Subscribe { channel }, Retry::Safe)
            .await?
        {
            Response::Subscribed { conversation, head } => {
                self.cursors
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .advance_to(&conversation, head);
                Ok(head)
            }
            other => Err(transport::unexpected("subscribe", &other)),
        }
    }

    /// Unsubscribes from a channel.
    pub async fn unsubscribe(&self, channel: ChannelId) -> Result<(), ClientError> {
        self.done_call("unsubscribe", Request::Unsubscribe { channel }, Retry::Safe)
            .await
    }

    /// Posts a text to a channel (owner and admins). Retried with the same id like any send.
    pub async fn post(
        &self,
        channel: ChannelId,
        text: impl Into<String>,
        client_msg_id: Option<ClientMsgId>,
    ) -> Result<SendAck, ClientError> {
        self.send(
            ConversationRef::Id(ConversationId::Channel(channel)),
            text,
            client_msg_id,
        )
        .await
    }

    /// Comments on a channel post (any subscriber).
    pub async fn comment(
        &self,
        channel: ChannelId,
        post: Seq,
        text: impl Into<String>,
        client_msg_id: Option<ClientMsgId>,
    ) -> Result<SendAck, ClientError> {
        self.send(
            ConversationRef::Id(ConversationId::Comments { channel, post }),
            text,
            client_msg_id,
        )
        .await
    }

    /// Changes the channel's title, description or signing (owner and admins).
    pub async fn update_channel(
        &self,
        channel: ChannelId,
        title: Option<String>,
        description: Option<String>,
        signed: Option<bool>,
    ) -> Result<(), ClientError> {
        let request = Request::UpdateChannel {
            channel,
            title,
            description,
            signed,
        };
        self.done_call("update_channel", request, Retry::Safe).await
    }

    /// Makes `user` an admin of the channel or a plain subscriber again (owner only).
    pub async fn set_channel_admin(
        &self,
        channel: ChannelId,
        user: UserId,
        admin: bool,
    ) -> Result<(), ClientError> {
        let request = Request::SetChannelAdmin {
            channel,
            user,
            admin,
        };
        self.done_call("set_channel_admin", request, Retry::Safe)
            .await
    }

    /// The channel's profile (any user).
    pub async fn channel_info(&self, channel: ChannelId) -> Result<ChannelInfo, ClientError> {
        match self
            .call(Request::ChannelInfo { channel }, Retry::Safe)
            .await?
        {
            Response::ChannelInfo(info) => Ok(info),
            other => Err(transport::unexpected("channel_info", &other)),
        }
    }

    /// Schedules a text post for `at_ms` (milliseconds since the Unix epoch). Retried safely:
    /// the same id answers with the existing schedule.
    pub async fn schedule_post(
        &self,
        channel: ChannelId,
        text: impl Into<String>,
        at_ms: u64,
        client_msg_id: Option<ClientMsgId>,
    ) -> Result<ScheduledPost, ClientError> {
        let request = Request::SchedulePost {
            channel,
            client_msg_id: client_msg_id.unwrap_or_else(|| self.new_client_msg_id()),
            text: text.into(),
            at_ms,
        };
        match self.call(request, Retry::Safe).await? {
            Response::Scheduled(post) => Ok(post),
            other => Err(transport::unexpected("schedule_post", &other)),
        }
    }

    /// The channel's scheduled posts, earliest first (owner and admins).
    pub async fn scheduled_posts(
        &self,
        channel: ChannelId,
    ) -> Result<Vec<ScheduledPost>, ClientError> {
        match self
            .call(Request::ScheduledPosts { channel }, Retry::Safe)
            .await?
        {
            Response::ScheduledPosts(posts) => Ok(posts),
            other => Err(transport::unexpected("scheduled_posts", &other)),
        }
    }

    /// Cancels a scheduled post.
    pub async fn cancel_scheduled(
        &self,
        channel: ChannelId,
        client_msg_id: ClientMsgId,
    ) -> Result<(), ClientError> {
        let request = Request::CancelScheduled {
            channel,
            client_msg_id,
        };
        self.done_call("cancel_scheduled", request, Retry::Never)
            .await
    }

    /// Counts this user's view of `posts` (once per user and post) and returns their counters.
    pub async fn view_posts(
        &self,
        channel: ChannelId,
        posts: Vec<Seq>,
    ) -> Result<Vec<PostStats>, ClientError> {
        self.stats_call(Request::ViewPosts { channel, posts }).await
    }

    /// The counters of `posts` without counting a view.
    pub async fn post_stats(
        &self,
        channel: ChannelId,
        posts: Vec<Seq>,
    ) -> Result<Vec<PostStats>, ClientError> {
        self.stats_call(Request::PostStats { channel, posts }).await
    }

    async fn stats_call(&self, request: Request) -> Result<Vec<PostStats>, ClientError> {
        match self.call(request, Retry::Safe).await? {
            Response::PostStats(stats) => Ok(stats),
            other => Err(transport::unexpected("post_stats", &other)),
        }
    }

    /// Sets (or with `None` removes) the picture of a group or channel (owner and admins). Upload
    /// the image first ([`Client::upload`]).
    pub async fn set_avatar(
        &self,
        conversation: ConversationRef,
        media: Option<MediaId>,
    ) -> Result<(), ClientError> {
        let request = Request::SetAvatar {
            conversation,
            media,
        };
        self.done_call("set_avatar", request, Retry::Safe).await
    }

    /// Shares (or stops sharing) this user's online state with watchers, for as long as this
    /// connection lasts: after [`crate::ClientEvent::Reconnected`], call it again.
    pub async fn set_presence(&self, visible: bool) -> Result<(), ClientError> {
        self.done_call(
            "set_presence",
            Request::SetPresence { visible },
            Retry::Safe,
        )
        .await
    }

    /// Watches the presence of a conversation's other members (direct conversations and groups
    /// up to the node's large-group size). Returns the current state of those who share it;
    /// changes arrive as [`crate::ClientEvent::Presence`] on this connection.
    pub async fn watch_presence(
        &self,
        conversation: ConversationRef,
    ) -> Result<Vec<PresenceState>, ClientError> {
        match self
            .call(Request::WatchPresence { conversation }, Retry::Safe)
            .await?
        {
            Response::Presence(states) => Ok(states),
            other => Err(transport::unexpected("watch_presence", &other)),
        }
    }
}
