//! Identifiers shared by the fan-out path: which connection, which shard.
//!
//! Both are plain numbers underneath; the newtypes keep a connection id from being passed
//! where a shard index is expected (and the other way round) as they travel from the shard's
//! connection table through the topic index and the cross-shard rings.

use std::fmt;

/// A connection, unique within its shard for the life of the process.
///
/// The shard that accepted the connection assigns it; the fan-out path only stores and
/// compares it, never interprets the number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// A shard: the index of one executor thread, from 0 to the shard count minus one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub usize);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_as_the_bare_number() {
        assert_eq!(ConnId(42).to_string(), "42");
        assert_eq!(ShardId(3).to_string(), "3");
    }

    #[test]
    fn orders_by_the_inner_number() {
        assert!(ConnId(1) < ConnId(2));
        assert!(ShardId(0) < ShardId(7));
    }
}
