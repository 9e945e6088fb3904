//! Generated message ids: valid at the limits and unique.

use std::collections::HashSet;

use piazza_protocol::DeviceId;
use piazza_protocol::limits::{CLIENT_MSG_ID_BYTES_MAX, DEVICE_ID_BYTES_MAX};

use super::{MsgIds, client_msg_id, device_prefix, random_salt};

#[test]
fn generated_ids_are_valid_at_the_limits() {
    let device: DeviceId = "d".repeat(DEVICE_ID_BYTES_MAX).parse().unwrap();
    let id = client_msg_id(&device_prefix(&device), u64::MAX, u64::MAX);
    assert!(id.as_str().len() <= CLIENT_MSG_ID_BYTES_MAX, "{id:?}");
    let short = client_msg_id(&device_prefix(&"cli".parse().unwrap()), 0, 0);
    assert_eq!(short.as_str(), "cli-0000000000000000-0");
}

#[test]
fn ids_of_one_client_are_unique() {
    let ids = MsgIds::new(&"phone:1".parse().unwrap());
    let seen: HashSet<String> = (0..1000).map(|_| ids.next().to_string()).collect();
    assert_eq!(seen.len(), 1000);
}

#[test]
fn two_clients_of_one_device_do_not_collide() {
    // Two CLI invocations in the same millisecond must not produce the same first id.
    let device: DeviceId = "cli".parse().unwrap();
    let (a, b) = (MsgIds::new(&device), MsgIds::new(&device));
    assert_ne!(a.next(), b.next());
    assert_ne!(random_salt(), random_salt());
}
