//! The router: the one way to reach a keyed actor. It checks placement, activates the actor on
//! demand (spawned under its key in the registry) and delivers the message, retrying when it meets
//! an activation that is passivating.

use std::sync::Arc;
use std::time::Duration;

use piazza_protocol::{ConversationId, ErrorCode};
use ractor::{Actor, ActorRef, Message, MessagingErr, RpcReplyPort, SpawnErr};

use crate::actors::conversation::{ConversationActor, ConversationArgs, ConversationMsg};
use crate::node::NodeContext;

/// Attempts to deliver to an actor that keeps turning out to be passivating. Passivation takes
/// microseconds, so a few attempts with a short pause always suffice unless the node is stuck.
const DELIVERY_ATTEMPTS_MAX: u32 = 50;

impl NodeContext {
    /// Registry name of a conversation's actor on this node instance.
    fn conversation_actor_name(&self, id: &ConversationId) -> String {
        format!("{}/conv/{id}", self.instance)
    }

    /// Delivers `message` to the actor of conversation `id`, activating it if needed. If it cannot
    /// be delivered, the request inside is answered with the error.
    pub(crate) async fn send_to_conversation(
        self: &Arc<Self>,
        id: &ConversationId,
        message: ConversationMsg,
    ) {
        let key = id.to_string();
        if !self.placement.is_local(key.as_bytes()) {
            // Single-node today; with a cluster this forwards through the gateway instead.
            message.fail(ErrorCode::unavailable(
                "conversation is owned by another node",
            ));
            return;
        }
        let delivered = self.deliver(message, || self.activate(id)).await;
        if let Err((message, code)) = delivered {
            tracing::debug!(conversation = %id, error = %code, "conversation not reached");
            message.fail(code);
        }
    }

    /// Delivers `message` to the actor `activate` finds or starts, trying again while that
    /// actor turns out to be passivating; gives the message back with the error otherwise.
    pub(crate) async fn deliver<M: Message, F>(
        &self,
        mut message: M,
        activate: impl Fn() -> F,
    ) -> Result<(), (M, ErrorCode)>
    where
        F: Future<Output = Result<ActorRef<M>, ErrorCode>>,
    {
        for attempt in 0..DELIVERY_ATTEMPTS_MAX {
            let actor = match activate().await {
                Ok(actor) => actor,
                Err(code) => return Err((message, code)),
            };
            match actor.send_message(message) {
                Ok(()) => return Ok(()),
                Err(MessagingErr::SendErr(returned)) => {
                    message = returned;
                    tokio::time::sleep(Duration::from_millis(u64::from(attempt.min(10)))).await;
                }
                // The actor is gone with the message: nothing to answer.
                Err(_) => return Ok(()),
            }
        }
        Err((
            message,
            ErrorCode::unavailable("actor is restarting, retry"),
        ))
    }

    /// The actor registered as `name`, or a new one spawned under that name (linked to the
    /// supervisor).
    pub(crate) async fn activate_named<A: Actor>(
        &self,
        name: String,
        actor: A,
        args: A::Arguments,
    ) -> Result<ActorRef<A::Msg>, ErrorCode> {
        if let Some(found) = ActorRef::<A::Msg>::where_is(name.clone()) {
            return Ok(found);
        }
        match Actor::spawn_linked(Some(name.clone()), actor, args, self.supervisor.clone()).await {
            Ok((spawned, _join)) => Ok(spawned),
            Err(SpawnErr::ActorAlreadyRegistered(_)) => ActorRef::<A::Msg>::where_is(name)
                .ok_or_else(|| ErrorCode::unavailable("actor is restarting, retry")),
            Err(e) => {
                tracing::error!(actor = %name, error = %e, "cannot activate actor");
                Err(ErrorCode::unavailable("actor cannot be loaded"))
            }
        }
    }

    /// Sends the message `build` makes around a fresh reply port to conversation `id`, and waits
    /// for the answer no longer than `limits.actor_call_timeout_ms`.
    pub(crate) async fn ask_conversation<T: Send + 'static>(
        self: &Arc<Self>,
        id: &ConversationId,
        build: impl FnOnce(RpcReplyPort<T>) -> ConversationMsg,
    ) -> Result<T, ErrorCode> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send_to_conversation(id, build(tx.into())).await;
        let timeout = Duration::from_millis(self.config.limits.actor_call_timeout_ms);
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(ErrorCode::unavailable("conversation did not answer")),
            Err(_) => Err(ErrorCode::unavailable("conversation timed out")),
        }
    }

    async fn activate(
        self: &Arc<Self>,
        id: &ConversationId,
    ) -> Result<ActorRef<ConversationMsg>, ErrorCode> {
        let name = self.conversation_actor_name(id);
        if let Some(actor) = ActorRef::<ConversationMsg>::where_is(name.clone()) {
            return Ok(actor);
        }
        let active = self
            .conversations_active
            .load(std::sync::atomic::Ordering::Relaxed);
        if active >= self.config.limits.conversations_active_max {
            metrics::counter!("piazza_actor_activations_refused_total").increment(1);
            return Err(ErrorCode::unavailable(
                "too many active conversations on this node, retry",
            ));
        }
        let args = ConversationArgs {
            id: id.clone(),
            ctx: self.clone(),
        };
        self.activate_named(name, ConversationActor, args).await
    }
}
