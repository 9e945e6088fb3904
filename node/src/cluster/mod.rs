//! Where actors live. Today a node's membership is itself alone; the multi-node cluster (a later
//! issue) feeds [`placement::Placement`] with live members and adds remote delivery. Every route to
//! an actor already goes through [`router`], keyed by actor key, so callers do not change then.

pub(crate) mod placement;
pub(crate) mod router;
