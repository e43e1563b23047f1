//! Topic ownership: which shard stamps a topic's publications.
//!
//! Place in the data path: a publication of topic T, wherever it comes from (Python, a client,
//! the Redis bridge), is first routed to `owner_shard(T)`. That shard alone stamps T with its
//! [`TopicSequencer`](crate::sequencer::TopicSequencer), queues the stamped, encoded
//! publication for its own subscribers and sends it over its FIFO rings to every other shard.
//! Because one shard assigns all of T's offsets, they are consecutive; because each ring is
//! FIFO and has the owner as its only producer, every shard receives T's publications in
//! offset order. Per-topic order thus holds across shards without any lock or shared counter.
//!
//! For this to work every shard must compute the same owner, so the hash is written out here
//! (FNV-1a, 64 bits) instead of borrowing `std`'s hasher, whose keys are random per process
//! and whose algorithm may change between releases.

use crate::ids::ShardId;

/// The shard that stamps and fans out every publication of `topic`, among `shards` shards.
///
/// Deterministic: the same topic and shard count give the same shard on every thread, in
/// every run and on every platform. The result is always below `shards`.
///
/// # Panics
///
/// When `shards` is 0: a server always runs at least one shard, so that is a caller bug.
pub fn owner_shard(topic: &str, shards: usize) -> ShardId {
    assert!(shards > 0, "owner_shard needs at least one shard");
    let hash = fnv1a_64(topic.as_bytes());

    // Map the hash onto 0..shards by multiplying and keeping the high word. Unlike `% shards`
    // this draws on the hash's high bits, which FNV-1a mixes well; its low bits depend only on
    // the low bits of the input bytes. The result is below `shards`, so it fits a `usize`.
    let index = (u128::from(hash) * shards as u128) >> 64;
    ShardId(index as usize)
}

/// FNV-1a over `bytes`: for each byte, XOR it into the state, then multiply by the FNV prime.
fn fnv1a_64(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(FNV_OFFSET_BASIS, |hash, &byte| (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME))
}

/// The 64-bit FNV offset basis: the state before any byte.
const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;

/// The 64-bit FNV prime, 2^40 + 2^8 + 0xb3.
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_matches_published_fnv1a_vectors() {
        assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a_64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn owner_is_stable_and_in_range() {
        for shards in 1..=16 {
            for i in 0..200 {
                let topic = format!("user:{i}:events");
                let owner = owner_shard(&topic, shards);
                assert!(owner.0 < shards);
                assert_eq!(owner, owner_shard(&topic, shards));
            }
        }
    }

    #[test]
    fn single_shard_owns_everything() {
        assert_eq!(owner_shard("news", 1), ShardId(0));
        assert_eq!(owner_shard("", 1), ShardId(0));
    }

    #[test]
    fn spreads_a_thousand_topics_over_shards() {
        for shards in [2, 3, 4, 8] {
            let mut load = vec![0usize; shards];
            for i in 0..1000 {
                load[owner_shard(&format!("user:{i}:events"), shards).0] += 1;
            }
            let mean = 1000 / shards;
            for (shard, &n) in load.iter().enumerate() {
                assert!(n > mean * 7 / 10 && n < mean * 13 / 10, "{shards}: shard {shard} has {n}");
            }
        }
    }

    #[test]
    #[should_panic(expected = "at least one shard")]
    fn zero_shards_is_a_bug() {
        owner_shard("news", 0);
    }
}
