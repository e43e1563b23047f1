//! The admission gate for sockets still in the handshake.
//!
//! Place: `accept → **gate** → handshake`. Every shard asks the same gate before it spends
//! anything on a new socket, so a slowloris flood from one address cannot hold more than
//! `max_handshakes_per_ip` sockets, nor all sources together more than `max_handshakes`.
//! Lock-free: a global atomic and a table of atomic counters indexed by a hash of the source
//! address. Two addresses that share a slot share its cap, which can only make the gate
//! stricter, never looser.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;

/// Counts sockets in the handshake, globally and per source address.
#[derive(Debug)]
pub struct HandshakeGate {
    /// Sockets in the handshake across all shards.
    total: AtomicUsize,
    /// Sockets in the handshake per address slot (see [`slot`]).
    per_ip: Box<[AtomicU32]>,
    max_total: usize,
    max_per_ip: u32,
}

/// Proof that a socket holds a place in the gate; the place is released on drop.
#[derive(Debug)]
pub struct Ticket {
    gate: Arc<HandshakeGate>,
    slot: usize,
}

impl HandshakeGate {
    /// A gate admitting `max_total` sockets, at most `max_per_ip` from one address.
    pub fn new(max_total: usize, max_per_ip: usize) -> HandshakeGate {
        HandshakeGate {
            total: AtomicUsize::new(0),
            per_ip: (0..SLOTS).map(|_| AtomicU32::new(0)).collect(),
            max_total,
            max_per_ip: u32::try_from(max_per_ip).unwrap_or(u32::MAX),
        }
    }

    /// Takes a place for a socket from `ip`, or `None` when either cap is reached.
    pub fn enter(self: &Arc<Self>, ip: IpAddr) -> Option<Ticket> {
        if self.total.fetch_add(1, Ordering::AcqRel) >= self.max_total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        let slot = slot(ip);
        if self.per_ip[slot].fetch_add(1, Ordering::AcqRel) >= self.max_per_ip {
            self.per_ip[slot].fetch_sub(1, Ordering::AcqRel);
            self.total.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Ticket { gate: Arc::clone(self), slot })
    }

    /// Sockets in the handshake now.
    pub fn in_handshake(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.gate.per_ip[self.slot].fetch_sub(1, Ordering::AcqRel);
        self.gate.total.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The table slot of an address: a multiplicative hash of its bits.
fn slot(ip: IpAddr) -> usize {
    let bits: u64 = match ip {
        IpAddr::V4(v4) => u64::from(u32::from(v4)),
        IpAddr::V6(v6) => {
            let n = u128::from(v6);
            (n as u64) ^ ((n >> 64) as u64)
        }
    };
    (bits.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - SLOT_BITS)) as usize
}

const SLOT_BITS: u32 = 12;
const SLOTS: usize = 1 << SLOT_BITS;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_one_address_but_not_another() {
        let gate = Arc::new(HandshakeGate::new(10, 2));
        let a: IpAddr = [127, 0, 0, 1].into();
        let b: IpAddr = [127, 0, 0, 2].into();
        let t1 = gate.enter(a).expect("first");
        let _t2 = gate.enter(a).expect("second");
        assert!(gate.enter(a).is_none());
        assert!(gate.enter(b).is_some());
        drop(t1);
        assert!(gate.enter(a).is_some());
    }

    #[test]
    fn caps_the_total_and_releases_on_drop() {
        let gate = Arc::new(HandshakeGate::new(2, 10));
        let t: Vec<_> = (1..=2).map(|i| gate.enter([10, 0, 0, i].into())).collect();
        assert!(t.iter().all(Option::is_some));
        assert!(gate.enter([10, 0, 0, 9].into()).is_none());
        drop(t);
        assert_eq!(gate.in_handshake(), 0);
    }
}
