//! `piazza`: the command-line client. A thin layer over the SDK: parse arguments, call one
//! `Client` method per command, print the result (human-readable, or JSON with `--json`).
//!
//! Exit codes: 0 on success, 2 for usage errors (clap), 1 for everything else, with
//! `error: <message>` on stderr.

use std::collections::BTreeMap;
use std::io::{self, BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, CommandFactory, Parser, Subcommand};
use piazza_client::{
    ChannelId, Client, ClientConfig, ClientError, ClientEvent, ClientMsgId, ConversationId,
    ConversationRef, DeviceId, EventStart, GroupId, GroupRole, MediaId, Message, MessageBody,
    MessageUpdate, PresenceState, ReceiptKind, ReceiptState, SendAck, Seq, SystemEvent,
    UploadProgress, UserId,
};
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

// The commerce commands live beside this file, in `piazza/`, so that `src/bin/` holds only
// binaries.
#[path = "piazza/commerce/mod.rs"]
mod commerce;

/// Messages `chat` shows before reading input.
const CHAT_HISTORY_COUNT: u32 = 20;

/// Lines typed into `chat` waiting to be sent. A person types far slower than a send takes; the
/// bound only matters for a large paste, which then waits for the sends.
const STDIN_QUEUE_CAPACITY: usize = 64;

/// Messages per history request when paging (the protocol's page limit).
const HISTORY_PAGE: u32 = piazza_protocol::limits::HISTORY_PAGE_MAX;

/// Command-line client for a Piazza node.
#[derive(Debug, Parser)]
#[command(name = "piazza", version, about)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Options every command takes.
#[derive(Debug, clap::Args)]
struct Global {
    /// The node's client address, host:port.
    #[arg(
        long,
        env = "PIAZZA_SERVER",
        default_value = "127.0.0.1:4433",
        global = true
    )]
    server: String,
    /// PEM file with the node's certificate authority.
    #[arg(
        long,
        env = "PIAZZA_CA",
        default_value = "./piazza-data/tls/ca.pem",
        global = true
    )]
    ca: PathBuf,
    /// Signed token naming the user (`piazza-node token --user NAME`).
    #[arg(long, env = "PIAZZA_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// Device id of this client.
    #[arg(long, env = "PIAZZA_DEVICE", default_value = "cli", global = true)]
    device: DeviceId,
    /// TLS server name to verify (default: the host part of --server).
    #[arg(long, global = true)]
    server_name: Option<String>,
    /// Deadline of each request, in seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..), global = true)]
    request_timeout_secs: u64,
    /// Print JSON (one object per line) instead of text.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Send a direct message.
    Send {
        /// The recipient.
        #[arg(long)]
        to: UserId,
        #[command(flatten)]
        message: MessageArgs,
    },
    /// React to a message (or remove the reaction with --remove).
    React {
        #[command(flatten)]
        target: Target,
        /// The message.
        seq: u64,
        /// The emoji.
        emoji: String,
        /// Remove the reaction instead of adding it.
        #[arg(long)]
        remove: bool,
    },
    /// Edit the text of your own message.
    Edit {
        #[command(flatten)]
        target: Target,
        /// The message.
        seq: u64,
        /// The new text.
        text: String,
    },
    /// Delete a message for everyone.
    Delete {
        #[command(flatten)]
        target: Target,
        /// The message.
        seq: u64,
    },
    /// Pin a message (or unpin it with --unpin).
    Pin {
        #[command(flatten)]
        target: Target,
        /// The message.
        seq: u64,
        /// Unpin instead of pinning.
        #[arg(long)]
        unpin: bool,
    },
    /// Print the pinned messages of a conversation.
    Pinned {
        #[command(flatten)]
        target: Target,
    },
    /// Forward a message into another conversation.
    Forward {
        #[command(flatten)]
        target: Target,
        /// The message to forward.
        seq: u64,
        /// Forward to this user's direct conversation.
        #[arg(
            long,
            conflicts_with = "to_group",
            required_unless_present = "to_group"
        )]
        to: Option<UserId>,
        /// Forward to this group.
        #[arg(long)]
        to_group: Option<GroupId>,
    },
    /// Print the direct conversation with a user, oldest first.
    History {
        /// The other user.
        #[arg(long = "with")]
        with: UserId,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Print new messages as they arrive (in all conversations), marking them delivered.
    Listen {
        /// Stop after this many seconds (exit 0, having printed what arrived).
        #[arg(long)]
        timeout_secs: Option<u64>,
        /// Stop after this many messages.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        count: Option<u64>,
        /// First print every stored message, not only new ones.
        #[arg(long)]
        from_start: bool,
    },
    /// Chat with a user interactively: type a line to send it, /quit or end of input to leave.
    Chat {
        /// The other user.
        #[arg(long = "with")]
        with: UserId,
    },
    /// Group conversations.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Upload and download media.
    #[command(subcommand)]
    Media(MediaCommand),
    /// Channels: one-to-many broadcasts with comments, views and scheduled posts.
    #[command(subcommand)]
    Channel(ChannelCommand),
    /// Share your online state and print the presence of a conversation's members as it
    /// changes.
    Presence {
        #[command(flatten)]
        target: Target,
        /// Also share your own presence while this runs.
        #[arg(long)]
        share: bool,
        /// Stop after this many seconds.
        #[arg(long, default_value_t = 60)]
        timeout_secs: u64,
    },
    /// Shops: profile, hours, staff, customer conversations and product messages.
    #[command(subcommand)]
    Shop(commerce::ShopCommand),
    /// A shop's catalogs, categories, products, stock and special offers.
    #[command(subcommand)]
    Catalog(commerce::CatalogCommand),
    /// Your cart at a shop.
    #[command(subcommand)]
    Cart(commerce::CartCommand),
    /// Orders: checkout, payment, fulfilment, refunds.
    #[command(subcommand)]
    Order(commerce::OrderCommand),
    /// A shop's coupons.
    #[command(subcommand)]
    Coupon(commerce::CouponCommand),
    /// Promotions: consent, quota, sending.
    #[command(subcommand)]
    Promo(commerce::PromoCommand),
    /// Print how far each member of a conversation has received and read.
    Receipts {
        /// The direct conversation with this user.
        #[arg(
            long = "with",
            conflicts_with = "group",
            required_unless_present = "group"
        )]
        with: Option<UserId>,
        /// A group (123 or g:123).
        #[arg(long)]
        group: Option<GroupId>,
    },
}

#[derive(Debug, Subcommand)]
enum MediaCommand {
    /// Upload a file and print its media id (with a progress bar on stderr for large files).
    Upload {
        /// The file.
        file: PathBuf,
        /// The type you believe it is; an image/, video/ or audio/ type that the bytes contradict
        /// fails the upload. The stored type is always the sniffed one.
        #[arg(long)]
        mime: Option<String>,
    },
    /// Download media into a file.
    Download {
        /// The media id.
        id: MediaId,
        /// The conversation it was sent in (any, for media you uploaded yourself).
        #[command(flatten)]
        target: Target,
        /// Where to write it.
        #[arg(long)]
        out: PathBuf,
        /// Only bytes A up to (not including) B; "A-" means from A to the end.
        #[arg(long)]
        range: Option<ByteRange>,
    },
}

/// `A-B` (bytes A up to, not including, B) or `A-` (from A to the end).
#[derive(Clone, Copy, Debug)]
struct ByteRange {
    start: u64,
    end: u64,
}

impl std::str::FromStr for ByteRange {
    type Err = String;
    fn from_str(text: &str) -> std::result::Result<ByteRange, String> {
        let bad = || format!("{text:?} is not A-B or A- (byte offsets)");
        let (start, end) = text.split_once('-').ok_or_else(bad)?;
        let start = start.parse::<u64>().map_err(|_| bad())?;
        let end = if end.is_empty() {
            u64::MAX
        } else {
            end.parse::<u64>().map_err(|_| bad())?
        };
        if start > end {
            return Err(bad());
        }
        Ok(ByteRange { start, end })
    }
}

/// What `send` and `group send` send: a text (optionally a reply) or a media message.
#[derive(Debug, Args)]
struct MessageArgs {
    /// The message text (with --media: the caption, which may be left out).
    #[arg(required_unless_present = "media")]
    text: Option<String>,
    /// Id for this message; sending again with the same id does not duplicate it.
    #[arg(long)]
    client_msg_id: Option<ClientMsgId>,
    /// Reply to (quote) this message of the conversation.
    #[arg(long)]
    reply_to: Option<u64>,
    /// Send this media (an id printed by `media upload`), with TEXT as its caption.
    #[arg(long, conflicts_with = "reply_to")]
    media: Option<MediaId>,
}

/// Which conversation: the direct one with a user, or a group.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct Target {
    /// The direct conversation with this user.
    #[arg(long = "with")]
    with: Option<UserId>,
    /// A group (123 or g:123).
    #[arg(long)]
    group: Option<GroupId>,
    /// A channel (123 or c:123).
    #[arg(long)]
    channel: Option<ChannelId>,
    /// Any conversation by its full id: dm:alice:bob, g:123, c:123, or c:123:7 for the comments
    /// of post 7 of channel 123.
    #[arg(long)]
    conversation: Option<ConversationId>,
}

impl Target {
    fn conversation(self) -> Result<ConversationRef> {
        match (self.with, self.group, self.channel, self.conversation) {
            (Some(peer), ..) => Ok(ConversationRef::Direct { peer }),
            (None, Some(group), ..) => Ok(ConversationRef::Group(group)),
            (None, None, Some(channel), _) => {
                Ok(ConversationRef::Id(ConversationId::Channel(channel)))
            }
            (None, None, None, Some(id)) => Ok(ConversationRef::Id(id)),
            (None, None, None, None) => {
                bail!("give --with USER, --group GROUP, --channel CHANNEL or --conversation ID")
            }
        }
    }
}

#[derive(Debug, Subcommand)]
enum ChannelCommand {
    /// Create a channel with you as owner; prints its id.
    Create {
        /// Title.
        title: String,
        /// Description.
        #[arg(long, default_value = "")]
        description: String,
        /// Show the author of each post (otherwise posts come from the channel).
        #[arg(long)]
        signed: bool,
    },
    /// Post to a channel (owner and admins), now or at a later time.
    Post {
        /// The channel (123 or c:123).
        channel: ChannelId,
        #[command(flatten)]
        message: MessageArgs,
        /// Publish in this many seconds instead of now (a scheduled post; text only).
        #[arg(long, conflicts_with_all = ["media", "reply_to", "at_ms"])]
        in_secs: Option<u64>,
        /// Publish at this time, in milliseconds since the Unix epoch (text only).
        #[arg(long, conflicts_with_all = ["media", "reply_to"])]
        at_ms: Option<u64>,
    },
    /// Subscribe to a channel.
    Subscribe {
        /// The channel (123 or c:123).
        channel: ChannelId,
    },
    /// Unsubscribe from a channel.
    Unsubscribe {
        /// The channel (123 or c:123).
        channel: ChannelId,
    },
    /// Print a channel's posts, oldest first.
    History {
        /// The channel (123 or c:123).
        channel: ChannelId,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Comment on a post (any subscriber).
    Comment {
        /// The channel (123 or c:123).
        channel: ChannelId,
        /// The post's seq.
        post: u64,
        #[command(flatten)]
        message: MessageArgs,
    },
    /// Print the comments of a post, oldest first.
    Comments {
        /// The channel (123 or c:123).
        channel: ChannelId,
        /// The post's seq.
        post: u64,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Set the channel's picture (an image id from `media upload`), or remove it with --remove.
    Avatar {
        /// The channel (123 or c:123).
        channel: ChannelId,
        /// The image.
        #[arg(required_unless_present = "remove")]
        media: Option<MediaId>,
        /// Remove the picture.
        #[arg(long, conflicts_with = "media")]
        remove: bool,
    },
    /// Print the channel's profile.
    Info {
        /// The channel (123 or c:123).
        channel: ChannelId,
    },
    /// Change the title, description or signing (owner and admins).
    Edit {
        /// The channel (123 or c:123).
        channel: ChannelId,
        /// New title.
        #[arg(long)]
        title: Option<String>,
        /// New description.
        #[arg(long)]
        description: Option<String>,
        /// Sign posts from now on (true) or not (false).
        #[arg(long)]
        signed: Option<bool>,
    },
    /// Make a user an admin (owner only), or a plain subscriber again with --remove.
    Admin {
        /// The channel (123 or c:123).
        channel: ChannelId,
        /// The user.
        user: UserId,
        /// Take the admin role away.
        #[arg(long)]
        remove: bool,
    },
    /// List the scheduled posts (owner and admins).
    Scheduled {
        /// The channel (123 or c:123).
        channel: ChannelId,
    },
    /// Cancel a scheduled post.
    Cancel {
        /// The channel (123 or c:123).
        channel: ChannelId,
        /// The scheduled post's client message id.
        client_msg_id: ClientMsgId,
    },
    /// Print views and comment counts of posts; with --view, count your view first.
    Stats {
        /// The channel (123 or c:123).
        channel: ChannelId,
        /// Post seqs.
        #[arg(required = true)]
        posts: Vec<u64>,
        /// Count a view by you (once per post).
        #[arg(long)]
        view: bool,
    },
}

#[derive(Debug, Subcommand)]
enum GroupCommand {
    /// Create a group with you as owner; prints its id.
    Create {
        /// Display name.
        name: String,
        /// Other members, comma-separated.
        #[arg(long, value_delimiter = ',')]
        members: Vec<UserId>,
    },
    /// Send a message to a group.
    Send {
        /// The group (123 or g:123).
        group: GroupId,
        #[command(flatten)]
        message: MessageArgs,
    },
    /// Print a group's messages, oldest first.
    History {
        /// The group (123 or g:123).
        group: GroupId,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Leave a group.
    Leave {
        /// The group (123 or g:123).
        group: GroupId,
    },
    /// Add members (owner and admins).
    Invite {
        /// The group (123 or g:123).
        group: GroupId,
        /// Users to add, comma-separated.
        #[arg(value_delimiter = ',', required = true)]
        users: Vec<UserId>,
    },
    /// Create a new invite link (the previous one stops working).
    Link {
        /// The group (123 or g:123).
        group: GroupId,
    },
    /// Join a group with an invite link.
    Join {
        /// The link.
        link: String,
    },
    /// Remove a member (--ban keeps them out).
    Kick {
        /// The group (123 or g:123).
        group: GroupId,
        /// The member.
        user: UserId,
        /// Also ban them.
        #[arg(long)]
        ban: bool,
    },
    /// Lift a ban.
    Unban {
        /// The group (123 or g:123).
        group: GroupId,
        /// The user.
        user: UserId,
    },
    /// Change a member's role (owner only; `owner` transfers ownership).
    Role {
        /// The group (123 or g:123).
        group: GroupId,
        /// The member.
        user: UserId,
        /// owner, admin or member.
        #[arg(value_parser = parse_role)]
        role: GroupRole,
    },
    /// Set the group's picture (an image id from `media upload`), or remove it with --remove.
    Avatar {
        /// The group (123 or g:123).
        group: GroupId,
        /// The image.
        #[arg(required_unless_present = "remove")]
        media: Option<MediaId>,
        /// Remove the picture.
        #[arg(long, conflicts_with = "media")]
        remove: bool,
    },
    /// Print the group's profile.
    Info {
        /// The group (123 or g:123).
        group: GroupId,
    },
    /// Change the group's title or description.
    Edit {
        /// The group (123 or g:123).
        group: GroupId,
        /// New title.
        #[arg(long)]
        title: Option<String>,
        /// New description.
        #[arg(long)]
        description: Option<String>,
    },
    /// List members (all pages, or --limit N).
    Members {
        /// The group (123 or g:123).
        group: GroupId,
        /// At most this many.
        #[arg(long)]
        limit: Option<u32>,
    },
}

fn parse_role(text: &str) -> std::result::Result<GroupRole, String> {
    match text {
        "owner" => Ok(GroupRole::Owner),
        "admin" => Ok(GroupRole::Admin),
        "member" => Ok(GroupRole::Member),
        other => Err(format!("{other:?} is not owner, admin or member")),
    }
}

fn role_name(role: GroupRole) -> &'static str {
    match role {
        GroupRole::Owner => "owner",
        GroupRole::Admin => "admin",
        GroupRole::Member => "member",
    }
}

/// Most member pages `group members` fetches: 200 pages of 1000 covers the largest group.
const MEMBER_PAGES_MAX: usize = 200;

#[derive(Debug, clap::Args)]
struct PageArgs {
    /// How many messages (the newest ones, or the ones before --before).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    limit: u32,
    /// Only messages with a seq below this one.
    #[arg(long)]
    before: Option<u64>,
}

fn main() -> ExitCode {
    piazza_client::install_crypto_provider();
    let cli = Cli::parse();
    if cli.global.token.is_none() {
        // Every command connects; a missing token is a usage error (exit code 2).
        Cli::command()
            .error(
                clap::error::ErrorKind::MissingRequiredArgument,
                "--token (or PIAZZA_TOKEN) is required",
            )
            .exit();
    }
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    drop(runtime);
    let code = match result {
        Ok(()) => 0,
        // The reader of our output went away (`piazza history | head`): not an error.
        Err(error) if is_broken_pipe(&error) => 0,
        Err(error) => {
            eprintln!("error: {error:#}");
            1
        }
    };
    // `exit` rather than returning: the chat's stdin reader thread may still be blocked in a read
    // that nothing can interrupt.
    std::process::exit(code)
}

fn init_tracing() {
    // The SDK reports reconnects as warnings; RUST_LOG=info or debug shows more.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .init();
}

async fn run(cli: Cli) -> Result<()> {
    let out = Output {
        json: cli.global.json,
    };
    let events = match &cli.command {
        Command::Listen {
            from_start: true, ..
        } => EventStart::Beginning,
        Command::Listen { .. } | Command::Chat { .. } => EventStart::Now,
        _ => EventStart::Off,
    };
    let client = connect(&cli.global, events).await?;
    let result = dispatch(&client, &out, cli.command).await;
    client.close().await;
    result
}

async fn connect(global: &Global, events: EventStart) -> Result<Client> {
    let token = global
        .token
        .clone()
        .ok_or_else(|| anyhow!("--token (or PIAZZA_TOKEN) is required"))?;
    let mut config = ClientConfig::new(&global.server, &global.ca, token, global.device.clone());
    config.server_name = global.server_name.clone();
    config.request_timeout = Duration::from_secs(global.request_timeout_secs);
    config.events = events;
    Ok(Client::connect(config).await?)
}

async fn dispatch(client: &Client, out: &Output, command: Command) -> Result<()> {
    match command {
        Command::Send { to, message } => {
            out.ack(&send(client, ConversationRef::Direct { peer: to }, message).await?)
        }
        Command::React {
            target,
            seq,
            emoji,
            remove,
        } => {
            let ack = client
                .react(target.conversation()?, Seq::new(seq), emoji, !remove)
                .await?;
            out.optional_ack(ack.as_ref(), "no change")
        }
        Command::Edit { target, seq, text } => out.ack(
            &client
                .edit(target.conversation()?, Seq::new(seq), text)
                .await?,
        ),
        Command::Delete { target, seq } => {
            out.ack(&client.delete(target.conversation()?, Seq::new(seq)).await?)
        }
        Command::Pin { target, seq, unpin } => {
            let ack = client
                .pin(target.conversation()?, Seq::new(seq), !unpin)
                .await?;
            out.optional_ack(ack.as_ref(), "no change")
        }
        Command::Pinned { target } => {
            for message in client.pinned(target.conversation()?).await? {
                out.message(&message, false)?;
            }
            Ok(())
        }
        Command::Forward {
            target,
            seq,
            to,
            to_group,
        } => {
            let destination = match (to, to_group) {
                (Some(peer), _) => ConversationRef::Direct { peer },
                (None, Some(group)) => ConversationRef::Group(group),
                (None, None) => bail!("give --to USER or --to-group GROUP"),
            };
            out.ack(
                &client
                    .forward(target.conversation()?, Seq::new(seq), destination)
                    .await?,
            )
        }
        Command::History { with, page } => {
            history(client, out, ConversationRef::Direct { peer: with }, &page).await
        }
        Command::Listen {
            timeout_secs,
            count,
            ..
        } => listen(client, out, timeout_secs.map(Duration::from_secs), count).await,
        Command::Chat { with } => chat(client, out, with).await,
        Command::Group(GroupCommand::Create { name, members }) => {
            let conversation = client.create_group(name, members).await?;
            let ConversationId::Group(group) = &conversation else {
                bail!("the node created {conversation}, which is not a group");
            };
            out.line(
                &format!("created group {group} (conversation {conversation})"),
                json!({ "group": group.get(), "conversation": conversation.to_string() }),
            )
        }
        Command::Group(GroupCommand::Send { group, message }) => {
            out.ack(&send(client, ConversationRef::Group(group), message).await?)
        }
        Command::Media(command) => media(client, out, command).await,
        Command::Shop(command) => commerce::shop(client, out, command).await,
        Command::Catalog(command) => commerce::catalog(client, out, command).await,
        Command::Cart(command) => commerce::cart(client, out, command).await,
        Command::Order(command) => commerce::order(client, out, command).await,
        Command::Coupon(command) => commerce::coupon(client, out, command).await,
        Command::Promo(command) => commerce::promo(client, out, command).await,
        Command::Channel(command) => channel(client, out, command).await,
        Command::Presence {
            target,
            share,
            timeout_secs,
        } => {
            presence(
                client,
                out,
                target,
                share,
                Duration::from_secs(timeout_secs),
            )
            .await
        }
        Command::Group(GroupCommand::History { group, page }) => {
            history(client, out, ConversationRef::Group(group), &page).await
        }
        Command::Group(GroupCommand::Leave { group }) => {
            client.leave_group(group).await?;
            out.line(
                &format!("left group {group}"),
                json!({ "group": group.get(), "left": true }),
            )
        }
        Command::Group(GroupCommand::Invite { group, users }) => {
            let names = users
                .iter()
                .map(UserId::as_str)
                .collect::<Vec<_>>()
                .join(",");
            client.invite(group, users.clone()).await?;
            out.line(
                &format!("invited {names} to {group}"),
                json!({ "group": group.get(), "invited": names }),
            )
        }
        Command::Group(GroupCommand::Link { group }) => {
            let link = client.create_invite_link(group).await?;
            out.line(&link, json!({ "group": group.get(), "link": link }))
        }
        Command::Group(GroupCommand::Join { link }) => {
            let conversation = client.join_by_link(link).await?;
            out.line(
                &format!("joined {conversation}"),
                json!({ "conversation": conversation.to_string() }),
            )
        }
        Command::Group(GroupCommand::Kick { group, user, ban }) => {
            client.remove_member(group, user.clone(), ban).await?;
            let verb = if ban { "banned" } else { "removed" };
            out.line(
                &format!("{verb} {user} from {group}"),
                json!({ "group": group.get(), "user": user.as_str(), "banned": ban }),
            )
        }
        Command::Group(GroupCommand::Unban { group, user }) => {
            client.unban(group, user.clone()).await?;
            out.line(
                &format!("unbanned {user} in {group}"),
                json!({ "group": group.get(), "user": user.as_str() }),
            )
        }
        Command::Group(GroupCommand::Role { group, user, role }) => {
            client.set_role(group, user.clone(), role).await?;
            let name = role_name(role);
            out.line(
                &format!("{user} is now {name} of {group}"),
                json!({ "group": group.get(), "user": user.as_str(), "role": name }),
            )
        }
        Command::Group(GroupCommand::Avatar { group, media, .. }) => {
            client
                .set_avatar(ConversationRef::Group(group), media.clone())
                .await?;
            out.line(
                &format!("avatar of {group} set"),
                json!({ "group": group.get(), "avatar": media.as_ref().map(MediaId::as_str) }),
            )
        }
        Command::Group(GroupCommand::Info { group }) => {
            let info = client.group_info(group).await?;
            out.line(
                &format!(
                    "{} (group {}): {} members, owner {}{}\n{}",
                    info.title,
                    info.group,
                    info.member_count,
                    info.owner,
                    if info.large { ", large" } else { "" },
                    info.description
                ),
                json!({
                    "group": info.group.get(),
                    "title": info.title,
                    "description": info.description,
                    "owner": info.owner.as_str(),
                    "member_count": info.member_count,
                    "created_at_ms": info.created_at_ms,
                    "large": info.large,
                    "avatar": info.avatar.as_ref().map(MediaId::as_str),
                }),
            )
        }
        Command::Group(GroupCommand::Edit {
            group,
            title,
            description,
        }) => {
            if title.is_none() && description.is_none() {
                bail!("give --title and/or --description");
            }
            client.update_group_info(group, title, description).await?;
            out.line(
                &format!("updated {group}"),
                json!({ "group": group.get(), "updated": true }),
            )
        }
        Command::Group(GroupCommand::Members { group, limit }) => {
            let mut remaining = limit.unwrap_or(u32::MAX);
            let mut after = None;
            for _ in 0..MEMBER_PAGES_MAX {
                if remaining == 0 {
                    break;
                }
                let (members, more) = client
                    .members(group, after.clone(), remaining.min(1000))
                    .await?;
                for member in &members {
                    let name = role_name(member.role);
                    out.line(
                        &format!("{} ({name})", member.user),
                        json!({ "user": member.user.as_str(), "role": name }),
                    )?;
                }
                remaining =
                    remaining.saturating_sub(u32::try_from(members.len()).unwrap_or(u32::MAX));
                match members.last() {
                    Some(last) if more => after = Some(last.user.clone()),
                    _ => break,
                }
            }
            Ok(())
        }
        Command::Receipts { with, group } => {
            let conversation = match (with, group) {
                (Some(peer), _) => ConversationRef::Direct { peer },
                (None, Some(group)) => ConversationRef::Group(group),
                (None, None) => bail!("give --with USER or --group GROUP"),
            };
            for state in client.receipts(conversation).await? {
                out.receipt_state(&state)?;
            }
            Ok(())
        }
    }
}

async fn channel(client: &Client, out: &Output, command: ChannelCommand) -> Result<()> {
    let id = |channel: ChannelId| ConversationRef::Id(ConversationId::Channel(channel));
    match command {
        ChannelCommand::Create {
            title,
            description,
            signed,
        } => {
            let channel = client.create_channel(title, description, signed).await?;
            out.line(
                &format!("created channel {channel} (conversation c:{channel})"),
                json!({ "channel": channel.get(), "conversation": format!("c:{channel}") }),
            )
        }
        ChannelCommand::Post {
            channel,
            message,
            in_secs,
            at_ms,
        } => {
            let at_ms = match (in_secs, at_ms) {
                (Some(secs), _) => Some(now_ms().saturating_add(secs.saturating_mul(1000))),
                (None, at_ms) => at_ms,
            };
            let Some(at_ms) = at_ms else {
                return out.ack(&send(client, id(channel), message).await?);
            };
            let text = message
                .text
                .ok_or_else(|| anyhow::anyhow!("a scheduled post needs a text"))?;
            let post = client
                .schedule_post(channel, text, at_ms, message.client_msg_id)
                .await?;
            out.line(
                &format!(
                    "scheduled {} for {} (in {} s)",
                    post.client_msg_id,
                    post.at_ms,
                    post.at_ms.saturating_sub(now_ms()) / 1000
                ),
                json!({
                    "channel": channel.get(),
                    "client_msg_id": post.client_msg_id.as_str(),
                    "at_ms": post.at_ms,
                }),
            )
        }
        ChannelCommand::Subscribe { channel } => {
            let head = client.subscribe(channel).await?;
            out.line(
                &format!("subscribed to {channel} (newest post: {head})"),
                json!({ "channel": channel.get(), "subscribed": true, "head": head.get() }),
            )
        }
        ChannelCommand::Unsubscribe { channel } => {
            client.unsubscribe(channel).await?;
            out.line(
                &format!("unsubscribed from {channel}"),
                json!({ "channel": channel.get(), "subscribed": false }),
            )
        }
        ChannelCommand::History { channel, page } => history(client, out, id(channel), &page).await,
        ChannelCommand::Comment {
            channel,
            post,
            message,
        } => {
            let thread = ConversationRef::Id(ConversationId::Comments {
                channel,
                post: Seq::new(post),
            });
            out.ack(&send(client, thread, message).await?)
        }
        ChannelCommand::Comments {
            channel,
            post,
            page,
        } => {
            let thread = ConversationRef::Id(ConversationId::Comments {
                channel,
                post: Seq::new(post),
            });
            history(client, out, thread, &page).await
        }
        ChannelCommand::Avatar { channel, media, .. } => {
            client.set_avatar(id(channel), media.clone()).await?;
            out.line(
                &format!("avatar of {channel} set"),
                json!({ "channel": channel.get(), "avatar": media.as_ref().map(MediaId::as_str) }),
            )
        }
        ChannelCommand::Info { channel } => {
            let info = client.channel_info(channel).await?;
            let role = info.role.map_or("not subscribed", role_name);
            out.line(
                &format!(
                    "{} (channel {}): {} subscribers, owner {}, {}, you: {role}\n{}",
                    info.title,
                    info.channel,
                    info.subscriber_count,
                    info.owner,
                    if info.signed { "signed" } else { "unsigned" },
                    info.description
                ),
                json!({
                    "channel": info.channel.get(),
                    "title": info.title,
                    "description": info.description,
                    "owner": info.owner.as_str(),
                    "subscriber_count": info.subscriber_count,
                    "created_at_ms": info.created_at_ms,
                    "signed": info.signed,
                    "role": info.role.map(role_name),
                    "avatar": info.avatar.as_ref().map(MediaId::as_str),
                }),
            )
        }
        ChannelCommand::Edit {
            channel,
            title,
            description,
            signed,
        } => {
            if title.is_none() && description.is_none() && signed.is_none() {
                bail!("give --title, --description and/or --signed true|false");
            }
            client
                .update_channel(channel, title, description, signed)
                .await?;
            out.line(
                &format!("updated {channel}"),
                json!({ "channel": channel.get(), "updated": true }),
            )
        }
        ChannelCommand::Admin {
            channel,
            user,
            remove,
        } => {
            client
                .set_channel_admin(channel, user.clone(), !remove)
                .await?;
            let role = if remove { "member" } else { "admin" };
            out.line(
                &format!("{user} is now {role} of {channel}"),
                json!({ "channel": channel.get(), "user": user.as_str(), "role": role }),
            )
        }
        ChannelCommand::Scheduled { channel } => {
            for post in client.scheduled_posts(channel).await? {
                out.line(
                    &format!(
                        "{} at {} by {}: {}",
                        post.client_msg_id, post.at_ms, post.author, post.text
                    ),
                    json!({
                        "client_msg_id": post.client_msg_id.as_str(),
                        "at_ms": post.at_ms,
                        "author": post.author.as_str(),
                        "text": post.text,
                    }),
                )?;
            }
            Ok(())
        }
        ChannelCommand::Cancel {
            channel,
            client_msg_id,
        } => {
            client
                .cancel_scheduled(channel, client_msg_id.clone())
                .await?;
            out.line(
                &format!("cancelled {client_msg_id}"),
                json!({ "channel": channel.get(), "cancelled": client_msg_id.as_str() }),
            )
        }
        ChannelCommand::Stats {
            channel,
            posts,
            view,
        } => {
            let posts = posts.into_iter().map(Seq::new).collect();
            let stats = if view {
                client.view_posts(channel, posts).await?
            } else {
                client.post_stats(channel, posts).await?
            };
            for stat in stats {
                out.line(
                    &format!(
                        "[{}] {} views, {} comments",
                        stat.post, stat.views, stat.comments
                    ),
                    json!({
                        "post": stat.post.get(),
                        "views": stat.views,
                        "comments": stat.comments,
                    }),
                )?;
            }
            Ok(())
        }
    }
}

/// Shares presence (with `share`), watches the target's members and prints their presence as
/// it changes until `timeout` passes.
async fn presence(
    client: &Client,
    out: &Output,
    target: Target,
    share: bool,
    timeout: Duration,
) -> Result<()> {
    if share {
        client.set_presence(true).await?;
    }
    let print = |state: &PresenceState| {
        let seen = state
            .last_seen_ms
            .map_or(String::new(), |at| format!(", last seen {at}"));
        out.line(
            &format!(
                "{} is {}{seen}",
                state.user,
                if state.online { "online" } else { "offline" }
            ),
            json!({
                "user": state.user.as_str(),
                "online": state.online,
                "last_seen_ms": state.last_seen_ms,
            }),
        )
    };
    for state in client.watch_presence(target.conversation()?).await? {
        print(&state)?;
    }
    let deadline = Instant::now() + timeout;
    loop {
        let event = tokio::time::timeout_at(deadline, client.next_event()).await;
        match event {
            Err(_) | Ok(None) => return Ok(()),
            Ok(Some(ClientEvent::Presence(state))) => print(&state)?,
            Ok(Some(_)) => {}
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Prints up to `page.limit` messages, oldest first, fetching as many pages as that takes.
async fn history(
    client: &Client,
    out: &Output,
    conversation: ConversationRef,
    page: &PageArgs,
) -> Result<()> {
    let mut pages = Vec::new();
    let mut remaining = page.limit;
    let mut before = page.before.map(Seq::new);
    // Bounded: every round fetches at least one message off `remaining`, or stops.
    while remaining > 0 {
        let got = client
            .history(conversation.clone(), before, remaining.min(HISTORY_PAGE))
            .await?;
        let Some(first) = got.messages.first().map(|m| m.seq) else {
            break;
        };
        remaining = remaining.saturating_sub(u32::try_from(got.messages.len()).unwrap_or(u32::MAX));
        let more = got.more;
        pages.push(got.messages);
        if !more {
            break;
        }
        before = Some(first);
    }
    for message in pages.iter().rev().flatten() {
        out.message(message, false)?;
    }
    Ok(())
}

/// Prints messages as they arrive until `count` were printed or `timeout` passed, and marks them
/// delivered (one receipt per conversation for the newest printed, sent whenever the queue of
/// arrived events is empty).
async fn listen(
    client: &Client,
    out: &Output,
    timeout: Option<Duration>,
    count: Option<u64>,
) -> Result<()> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut printed: u64 = 0;
    let mut unreceipted: BTreeMap<ConversationId, Seq> = BTreeMap::new();
    loop {
        if count.is_some_and(|n| printed >= n) {
            break;
        }
        let event = match client.try_next_event() {
            Some(event) => event,
            None => {
                send_receipts(client, &mut unreceipted, ReceiptKind::Delivered).await;
                let next = client.next_event();
                let event = match deadline {
                    Some(deadline) => match tokio::time::timeout_at(deadline, next).await {
                        Ok(event) => event,
                        Err(_) => break,
                    },
                    None => next.await,
                };
                event
                    .ok_or_else(|| anyhow!(ClientError::Closed))
                    .context("the connection was lost and could not be re-established")?
            }
        };
        if let ClientEvent::Message(message) = event {
            out.message(&message, true)?;
            printed += 1;
            if &message.sender != client.user() {
                unreceipted.insert(message.conversation.clone(), message.seq);
            }
        }
    }
    send_receipts(client, &mut unreceipted, ReceiptKind::Delivered).await;
    Ok(())
}

/// Sends one receipt per conversation. A failed receipt is reported and skipped: it only affects
/// what others see, and a later one covers it.
async fn send_receipts(
    client: &Client,
    pending: &mut BTreeMap<ConversationId, Seq>,
    kind: ReceiptKind,
) {
    for (conversation, seq) in std::mem::take(pending) {
        if let Err(error) = client.receipt(conversation.clone(), seq, kind).await {
            eprintln!("warning: cannot mark {conversation} up to {seq}: {error}");
        }
    }
}

/// Interactive chat with one user.
async fn chat(client: &Client, out: &Output, peer: UserId) -> Result<()> {
    let me = client.user().clone();
    let conversation = ConversationId::direct(me.clone(), peer.clone())
        .map_err(|e| anyhow!("cannot chat with {peer}: {e}"))?;
    let target = ConversationRef::Direct { peer: peer.clone() };

    let page = client
        .history(target.clone(), None, CHAT_HISTORY_COUNT)
        .await?;
    let mut shown = Seq::ZERO;
    for message in &page.messages {
        out.message(message, false)?;
        shown = message.seq;
    }
    mark_read(client, &conversation, shown).await;
    if !out.json {
        eprintln!("chatting with {peer} as {me}; type a line to send it, /quit to leave");
    }

    let mut lines = spawn_stdin_reader()?;
    loop {
        // Why select: the user may type while messages arrive; either must be handled at once.
        // Both branches are cancel-safe (queue receives).
        let input = tokio::select! {
            line = lines.recv() => Input::Line(line),
            event = client.next_event() => Input::Event(event),
        };
        match input {
            Input::Line(None) => break,
            Input::Line(Some(line)) => {
                let line = line.context("read from stdin")?;
                let text = line.trim_end_matches('\r');
                if text.trim() == "/quit" {
                    break;
                }
                if text.trim().is_empty() {
                    continue;
                }
                // Line-based input cannot tell when typing starts, so the indicator goes out
                // right before the message; it is best effort, hence the ignored result.
                let _ = client.typing(conversation.clone(), true);
                match client.send(target.clone(), text, None).await {
                    Ok(_) => {}
                    // The node refused this one message (rate limit, too long, …): say so and
                    // keep chatting.
                    Err(
                        error @ (ClientError::Server(_)
                        | ClientError::Invalid(_)
                        | ClientError::Timeout { .. }),
                    ) => eprintln!("error: {error}"),
                    Err(error) => return Err(error.into()),
                }
            }
            Input::Event(None) => {
                return Err(anyhow!(ClientError::Closed))
                    .context("the connection was lost and could not be re-established");
            }
            Input::Event(Some(ClientEvent::Message(message))) => {
                if message.conversation == conversation && message.seq > shown {
                    out.message(&message, false)?;
                    shown = message.seq;
                    if message.sender != me {
                        mark_read(client, &conversation, shown).await;
                    }
                }
            }
            Input::Event(Some(ClientEvent::Typing {
                conversation: typing_in,
                user,
                active: true,
            })) if typing_in == conversation && user != me => out.line(
                &format!("{user} is typing…"),
                json!({ "typing": user.as_str(), "conversation": conversation.to_string() }),
            )?,
            Input::Event(Some(_)) => {}
        }
    }
    let _ = client.typing(conversation, false);
    Ok(())
}

enum Input {
    Line(Option<io::Result<String>>),
    Event(Option<ClientEvent>),
}

async fn mark_read(client: &Client, conversation: &ConversationId, seq: Seq) {
    if seq == Seq::ZERO {
        return;
    }
    let mut pending = BTreeMap::from([(conversation.clone(), seq)]);
    send_receipts(client, &mut pending, ReceiptKind::Read).await;
}

/// Reads stdin lines on a plain thread: tokio's stdin cannot be interrupted, and a pending read
/// would keep the runtime from shutting down after `/quit`.
fn spawn_stdin_reader() -> Result<mpsc::Receiver<io::Result<String>>> {
    let (tx, rx) = mpsc::channel(STDIN_QUEUE_CAPACITY);
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            for line in io::stdin().lock().lines() {
                if tx.blocking_send(line).is_err() {
                    break;
                }
            }
        })
        .context("start the stdin reader")?;
    Ok(rx)
}

/// Prints results as text or as JSON lines.
struct Output {
    json: bool,
}

impl Output {
    fn line(&self, human: &str, json: serde_json::Value) -> Result<()> {
        let mut stdout = io::stdout().lock();
        if self.json {
            writeln!(stdout, "{json}")?;
        } else {
            writeln!(stdout, "{human}")?;
        }
        // Flushed per line, so `listen` output shows up (and can be piped) as it arrives.
        stdout.flush()?;
        Ok(())
    }

    fn ack(&self, ack: &SendAck) -> Result<()> {
        let duplicate = if ack.duplicate { " (duplicate)" } else { "" };
        self.line(
            &format!("sent to {} seq {}{duplicate}", ack.conversation, ack.seq),
            json!({
                "conversation": ack.conversation.to_string(),
                "seq": ack.seq.get(),
                "client_msg_id": ack.client_msg_id.as_str(),
                "duplicate": ack.duplicate,
                "sent_at_ms": ack.sent_at_ms,
            }),
        )
    }

    /// An ack, or a note that the request changed nothing.
    fn optional_ack(&self, ack: Option<&SendAck>, nothing: &str) -> Result<()> {
        match ack {
            Some(ack) => self.ack(ack),
            None => self.line(nothing, json!({ "changed": false })),
        }
    }

    /// One message: `[seq] sender: text`, prefixed by the conversation when several can appear.
    fn message(&self, message: &Message, with_conversation: bool) -> Result<()> {
        let (text, system) = describe(message);
        let prefix = if with_conversation {
            format!("{} ", message.conversation)
        } else {
            String::new()
        };
        let mut decorations = String::new();
        if let Some(target) = message.reply_to {
            decorations.push_str(&format!(" (reply to [{target}])"));
        }
        if let Some(origin) = &message.forwarded_from {
            decorations.push_str(&format!(
                " (forwarded from {} in {})",
                origin.sender, origin.conversation
            ));
        }
        if message.edited_at_ms.is_some() {
            decorations.push_str(" (edited)");
        }
        for reaction in &message.reactions {
            decorations.push_str(&format!(" {}×{}", reaction.emoji, reaction.count));
        }
        let human = if system {
            format!("{prefix}[{}] * {text}", message.seq)
        } else {
            format!(
                "{prefix}[{}] {}: {text}{decorations}",
                message.seq, message.sender
            )
        };
        self.line(
            &human,
            json!({
                "conversation": message.conversation.to_string(),
                "seq": message.seq.get(),
                "sender": message.sender.as_str(),
                "text": text,
                "system": system,
                "sent_at_ms": message.sent_at_ms,
                "client_msg_id": message.client_msg_id.as_str(),
                "reply_to": message.reply_to.map(Seq::get),
                "forwarded_from": message.forwarded_from.as_ref().map(|o| json!({
                    "conversation": o.conversation.to_string(),
                    "seq": o.seq.get(),
                    "sender": o.sender.as_str(),
                })),
                "edited_at_ms": message.edited_at_ms,
                "reactions": message.reactions.iter()
                    .map(|r| json!({ "emoji": r.emoji, "count": r.count }))
                    .collect::<Vec<_>>(),
                "media": match &message.body {
                    MessageBody::Media { media, caption } => json!({
                        "id": media.id.as_str(),
                        "size_bytes": media.size_bytes,
                        "mime": media.mime,
                        "caption": caption,
                    }),
                    _ => serde_json::Value::Null,
                },
                "commerce": commerce_json(&message.body),
            }),
        )
    }

    fn receipt_state(&self, state: &ReceiptState) -> Result<()> {
        self.line(
            &format!(
                "{}: delivered {}, read {}",
                state.user, state.delivered, state.read
            ),
            json!({
                "user": state.user.as_str(),
                "delivered": state.delivered.get(),
                "read": state.read.get(),
            }),
        )
    }
}

/// The commerce payload of a message (a product, list, question, order or promotion, or an
/// order update) as the wire types serialize it; `null` for other messages.
fn commerce_json(body: &MessageBody) -> serde_json::Value {
    match body {
        // Serializing wire types into a JSON value cannot fail (string keys, no floats).
        MessageBody::Commerce(body) => {
            serde_json::to_value(body).unwrap_or(serde_json::Value::Null)
        }
        MessageBody::Update(MessageUpdate::Order { target, order }) => {
            json!({ "order_update": { "target": target.get(), "order": order } })
        }
        _ => serde_json::Value::Null,
    }
}

/// The text of a message, or a readable description of a system event; and whether it is one.
fn describe(message: &Message) -> (String, bool) {
    match &message.body {
        MessageBody::Text(text) => (text.clone(), false),
        MessageBody::System(SystemEvent::GroupCreated { name, member_count }) => (
            format!(
                "{} created group \"{name}\" with {member_count} members",
                message.sender
            ),
            true,
        ),
        MessageBody::System(SystemEvent::ChannelCreated { title }) => (
            format!("{} created channel \"{title}\"", message.sender),
            true,
        ),
        MessageBody::System(SystemEvent::AvatarChanged { media }) => match media {
            Some(media) => (
                format!("{} set the picture to media {}", message.sender, media.id),
                true,
            ),
            None => (format!("{} removed the picture", message.sender), true),
        },
        MessageBody::System(SystemEvent::MemberLeft { user }) => {
            (format!("{user} left the group"), true)
        }
        MessageBody::System(SystemEvent::MembersAdded { users, by }) => {
            let names = users
                .iter()
                .map(UserId::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            match by {
                Some(by) => (format!("{by} added {names}"), true),
                None => (format!("{names} joined by link"), true),
            }
        }
        MessageBody::System(SystemEvent::MemberRemoved { user, by, banned }) => {
            let verb = if *banned { "banned" } else { "removed" };
            (format!("{by} {verb} {user}"), true)
        }
        MessageBody::System(SystemEvent::RoleChanged { user, role, by }) => {
            (format!("{by} made {user} {role:?}"), true)
        }
        MessageBody::System(SystemEvent::InfoChanged { title, description }) => {
            let mut parts = Vec::new();
            if let Some(title) = title {
                parts.push(format!("title is now \"{title}\""));
            }
            if let Some(description) = description {
                parts.push(format!("description is now \"{description}\""));
            }
            (
                format!("{} changed the group: {}", message.sender, parts.join(", ")),
                true,
            )
        }
        MessageBody::Media { media, caption } => (
            format!(
                "[{} {}, media {}] {caption}",
                media.mime,
                human_bytes(media.size_bytes),
                media.id
            ),
            false,
        ),
        MessageBody::Commerce(body) => (commerce::describe_commerce(body), false),
        MessageBody::Deleted => ("(deleted)".to_owned(), true),
        MessageBody::Update(update) => {
            let who = &message.sender;
            let text = match update {
                MessageUpdate::Edited { target, text } => {
                    format!("{who} edited [{target}]: {text}")
                }
                MessageUpdate::Deleted { target } => format!("{who} deleted [{target}]"),
                MessageUpdate::Reaction {
                    target,
                    emoji,
                    added: true,
                } => {
                    format!("{who} reacted {emoji} to [{target}]")
                }
                MessageUpdate::Reaction {
                    target,
                    emoji,
                    added: false,
                } => {
                    format!("{who} removed {emoji} from [{target}]")
                }
                MessageUpdate::Pinned {
                    target,
                    pinned: true,
                } => format!("{who} pinned [{target}]"),
                MessageUpdate::Pinned {
                    target,
                    pinned: false,
                } => format!("{who} unpinned [{target}]"),
                MessageUpdate::Order { target, order } => {
                    commerce::describe_order_update(*target, order)
                }
            };
            (text, true)
        }
    }
}

/// Sends a text, a reply, or (with `media`) a media message with the text as caption.
async fn send(
    client: &Client,
    conversation: ConversationRef,
    message: MessageArgs,
) -> Result<SendAck> {
    let MessageArgs {
        text,
        client_msg_id,
        reply_to,
        media,
    } = message;
    let text = text.unwrap_or_default();
    let ack = match (media, reply_to) {
        (Some(media), _) => {
            client
                .send_media(conversation, media, text, client_msg_id)
                .await?
        }
        (None, Some(seq)) => {
            client
                .reply(conversation, Seq::new(seq), text, client_msg_id)
                .await?
        }
        (None, None) => client.send(conversation, text, client_msg_id).await?,
    };
    Ok(ack)
}

/// Files above this size get a progress bar while uploading (when stderr is a terminal).
const PROGRESS_BAR_MIN_BYTES: u64 = 1024 * 1024;

/// How often the progress bar is redrawn.
const PROGRESS_BAR_PERIOD: Duration = Duration::from_millis(100);

async fn media(client: &Client, out: &Output, command: MediaCommand) -> Result<()> {
    match command {
        MediaCommand::Upload { file, mime } => {
            let size = std::fs::metadata(&file)
                .with_context(|| format!("read {}", file.display()))?
                .len();
            let (progress_tx, progress_rx) = watch::channel(UploadProgress::default());
            let bar = (io::stderr().is_terminal() && size > PROGRESS_BAR_MIN_BYTES)
                .then(|| tokio::spawn(progress_bar(progress_rx)));
            let started = Instant::now();
            let result = client.upload(&file, mime, Some(&progress_tx)).await;
            // Dropping the sender ends the bar.
            drop(progress_tx);
            if let Some(bar) = bar {
                let _ = bar.await;
            }
            let uploaded = result?;
            let info = &uploaded.info;
            let seconds = started.elapsed().as_secs_f64();
            out.line(
                info.id.as_str(),
                json!({
                    "id": info.id.as_str(),
                    "size_bytes": info.size_bytes,
                    "mime": info.mime,
                    "resumed_from_bytes": uploaded.resumed_from_bytes,
                    "sent_bytes": uploaded.sent_bytes,
                    "seconds": seconds,
                }),
            )
        }
        MediaCommand::Download {
            id,
            target,
            out: path,
            range,
        } => {
            let conversation = target.conversation()?;
            let file = tokio::fs::File::create(&path)
                .await
                .with_context(|| format!("create {}", path.display()))?;
            let mut writer = tokio::io::BufWriter::new(file);
            let range = range.map(|r| (r.start, r.end));
            let got = match client.download(&id, conversation, range, &mut writer).await {
                Ok(got) => got,
                Err(error) => {
                    // Nothing half-written is left behind under the name asked for.
                    drop(writer);
                    let _ = tokio::fs::remove_file(&path).await;
                    return Err(error.into());
                }
            };
            let bytes = got.end - got.start;
            out.line(
                &format!(
                    "wrote {} ({}) to {}",
                    human_bytes(bytes),
                    got.info.mime,
                    path.display()
                ),
                json!({
                    "id": got.info.id.as_str(),
                    "size_bytes": got.info.size_bytes,
                    "mime": got.info.mime,
                    "start": got.start,
                    "end": got.end,
                    "out": path.display().to_string(),
                }),
            )
        }
    }
}

/// Draws `[#####     ]  50%  25.0 MiB / 50.0 MiB  12.3 MiB/s` on stderr until the sender is dropped.
async fn progress_bar(mut progress: watch::Receiver<UploadProgress>) {
    const WIDTH: u64 = 30;
    let started = Instant::now();
    let mut first_done = None;
    // Bounded: ends when the upload drops its sender.
    while progress.changed().await.is_ok() {
        let UploadProgress {
            done_bytes,
            total_bytes,
        } = *progress.borrow_and_update();
        // The speed counts only what this run sent, not what the node already had.
        let base = *first_done.get_or_insert(done_bytes);
        let total = total_bytes.max(1);
        let filled = (done_bytes.min(total) * WIDTH / total) as usize;
        let rate =
            (done_bytes - base.min(done_bytes)) as f64 / started.elapsed().as_secs_f64().max(0.001);
        eprint!(
            "\r[{}{}] {:>3}%  {} / {}  {}/s   ",
            "#".repeat(filled),
            " ".repeat(WIDTH as usize - filled),
            done_bytes.min(total) * 100 / total,
            human_bytes(done_bytes),
            human_bytes(total_bytes),
            human_bytes(rate as u64)
        );
        tokio::time::sleep(PROGRESS_BAR_PERIOD).await;
    }
    eprintln!();
}

/// `512 B`, `1.5 KiB`, `25.0 MiB`, `2.0 GiB`.
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error
        .chain()
        .filter_map(|cause| cause.downcast_ref::<io::Error>())
        .any(|e| e.kind() == io::ErrorKind::BrokenPipe)
}
