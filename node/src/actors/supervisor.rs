//! The node's root supervisor: parent of every conversation and session actor, so a failing actor
//! is logged where it is handled and shutdown can stop them all and wait.

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};

/// The supervisor actor. It has no messages of its own.
#[derive(Debug)]
pub(crate) struct Supervisor;

impl Actor for Supervisor {
    type Msg = ();
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _myself: ActorRef<()>, _args: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<()>,
        event: SupervisionEvent,
        _state: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        // A child that fails is gone; the router re-activates it from storage on the next request.
        // Returning Ok keeps the supervisor (and the node) running.
        if let SupervisionEvent::ActorFailed(cell, error) = event {
            let name = cell.get_name().unwrap_or_default();
            tracing::error!(actor = %name, error = %error, "actor failed; it restarts on next use");
            metrics::counter!("piazza_actor_failures_total").increment(1);
        }
        Ok(())
    }
}
