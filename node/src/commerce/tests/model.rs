//! Property tests of the order and payment state machine against a reference model.
