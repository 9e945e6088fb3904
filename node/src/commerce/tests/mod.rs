//! Tests of the commerce core.
