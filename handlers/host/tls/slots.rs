//! The listener's connection slots, kept per source (see [`Source`]).
//!
//! Every accepted TCP connection holds a slot until it closes; while its handshake is
//! in progress the slot also counts as a pending handshake. Each source may hold at most
//! its per-source share of each, well below the listener's totals, so one source can
//! never take every slot. When a total is reached, a newcomer from a source holding
//! fewer slots than the largest holder takes the largest holder's oldest slot (that
//! connection is told to stop): a fresh client is never turned away because somebody
//! else hoards the listener.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

use super::source::Source;

/// How many slots of each kind the listener and each source may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SlotLimits {
    pub connections: usize,
    pub connections_per_source: usize,
    pub handshakes: usize,
    pub handshakes_per_source: usize,
}

/// Why a connection got no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
    /// Its source already holds its share of connections.
    SourceConnections,
    /// Its source already holds its share of pending handshakes.
    SourceHandshakes,
    /// The listener is full and its source holds as many slots as anybody.
    Full,
}

impl Refused {
    pub(super) fn reason(self) -> &'static str {
        match self {
            Self::SourceConnections => "refused: the source holds its share of connections",
            Self::SourceHandshakes => "refused: the source holds its share of pending handshakes",
            Self::Full => "refused: the listener is full",
        }
    }
}

#[derive(Debug)]
pub(super) struct Slots {
    limits: SlotLimits,
    table: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    sources: HashMap<Source, Held>,
    connections: usize,
    handshakes: usize,
    next_id: u64,
}

#[derive(Debug, Default)]
struct Held {
    handshakes: usize,
    /// Oldest first.
    entries: VecDeque<Entry>,
}

#[derive(Debug)]
struct Entry {
    id: u64,
    handshaking: bool,
    stop: Arc<Notify>,
}

impl Slots {
    pub(super) fn new(limits: SlotLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            table: Mutex::new(Table::default()),
        })
    }

    /// The table, locked, whether or not a panic elsewhere poisoned the lock.
    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot for a new connection from `ip`, counted as a pending handshake.
    pub(super) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refused> {
        let source = Source::of(ip);
        let limits = self.limits;
        let mut table = self.table();
        let (held_connections, held_handshakes) = table
            .sources
            .get(&source)
            .map_or((0, 0), |held| (held.entries.len(), held.handshakes));
        if held_connections >= limits.connections_per_source {
            return Err(Refused::SourceConnections);
        }
        if held_handshakes >= limits.handshakes_per_source {
            return Err(Refused::SourceHandshakes);
        }
        if table.handshakes >= limits.handshakes
            && !table.evict(held_handshakes, |held| held.handshakes, true)
        {
            return Err(Refused::Full);
        }
        if table.connections >= limits.connections
            && !table.evict(held_connections, |held| held.entries.len(), false)
        {
            return Err(Refused::Full);
        }
        let id = table.next_id;
        table.next_id += 1;
        let stop = Arc::new(Notify::new());
        let held = table.sources.entry(source).or_default();
        held.handshakes += 1;
        held.entries.push_back(Entry {
            id,
            handshaking: true,
            stop: stop.clone(),
        });
        table.handshakes += 1;
        table.connections += 1;
        Ok(Slot {
            slots: self.clone(),
            source,
            id,
            stop,
        })
    }

    #[cfg(test)]
    fn held(&self) -> (usize, usize) {
        let table = self.table();
        (table.connections, table.handshakes)
    }
}

impl Table {
    /// Frees one slot of the largest holder (by `count`) if it holds more than
    /// `newcomer_holds`: its oldest pending handshake (`handshakes`) or its oldest
    /// connection, which is told to stop. False when no source holds more.
    fn evict(
        &mut self,
        newcomer_holds: usize,
        count: fn(&Held) -> usize,
        handshakes: bool,
    ) -> bool {
        let Some((&largest, held)) = self.sources.iter_mut().max_by_key(|(_, held)| count(held))
        else {
            return false;
        };
        if count(held) <= newcomer_holds {
            return false;
        }
        let Some(index) = held
            .entries
            .iter()
            .position(|entry| entry.handshaking || !handshakes)
        else {
            return false;
        };
        if let Some(entry) = held.entries.remove(index) {
            entry.stop.notify_one();
            self.release(largest, &entry);
        }
        true
    }

    fn release(&mut self, source: Source, entry: &Entry) {
        self.connections -= 1;
        if entry.handshaking {
            self.handshakes -= 1;
            if let Some(held) = self.sources.get_mut(&source) {
                held.handshakes -= 1;
            }
        }
        if self
            .sources
            .get(&source)
            .is_some_and(|held| held.entries.is_empty())
        {
            self.sources.remove(&source);
        }
    }
}

/// One connection's slot; released when dropped.
#[derive(Debug)]
pub(super) struct Slot {
    slots: Arc<Slots>,
    source: Source,
    id: u64,
    stop: Arc<Notify>,
}

impl Slot {
    /// The handshake is done: the slot no longer counts as a pending handshake.
    pub(super) fn handshake_done(&self) {
        let mut table = self.slots.table();
        let Some(held) = table.sources.get_mut(&self.source) else {
            return;
        };
        let Some(entry) = held.entries.iter_mut().find(|entry| entry.id == self.id) else {
            return;
        };
        if entry.handshaking {
            entry.handshaking = false;
            held.handshakes -= 1;
            table.handshakes -= 1;
        }
    }

    /// Completes once the slot has been taken for a newcomer: the connection should
    /// stop (a handshake is dropped, a connection finishes its request and closes).
    pub(super) async fn taken(&self) {
        self.stop.notified().await;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut table = self.slots.table();
        let Some(held) = table.sources.get_mut(&self.source) else {
            return;
        };
        let Some(index) = held.entries.iter().position(|entry| entry.id == self.id) else {
            // Already released when it was taken for a newcomer.
            return;
        };
        if let Some(entry) = held.entries.remove(index) {
            table.release(self.source, &entry);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: SlotLimits = SlotLimits {
        connections: 6,
        connections_per_source: 4,
        handshakes: 4,
        handshakes_per_source: 3,
    };

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn a_source_is_held_to_its_shares() {
        let slots = Slots::new(LIMITS);
        let held: Vec<Slot> = (0..3)
            .map(|_| slots.admit(ip(1)).expect("admitted"))
            .collect();
        assert_eq!(slots.admit(ip(1)).err(), Some(Refused::SourceHandshakes));
        held[0].handshake_done();
        let fourth = slots.admit(ip(1)).expect("a handshake slot is free again");
        fourth.handshake_done();
        assert_eq!(slots.admit(ip(1)).err(), Some(Refused::SourceConnections));
        drop(held);
        drop(fourth);
        assert_eq!(slots.held(), (0, 0), "every slot is released");
    }

    #[tokio::test]
    async fn a_newcomer_takes_the_largest_holders_oldest_handshake_when_full() {
        let slots = Slots::new(LIMITS);
        let hog: Vec<Slot> = (0..3)
            .map(|_| slots.admit(ip(1)).expect("admitted"))
            .collect();
        let other = slots.admit(ip(2)).expect("admitted");
        assert_eq!(slots.held(), (4, 4));

        // Full of handshakes: the newcomer (holding none) takes the hog's oldest.
        let fresh = slots.admit(ip(3)).expect("a fresh source is never refused");
        tokio::time::timeout(std::time::Duration::from_secs(5), hog[0].taken())
            .await
            .expect("the hog's oldest handshake is told to stop");
        assert_eq!(slots.held(), (4, 4));

        // A source holding as many as the largest holder takes nothing.
        let second = slots
            .admit(ip(2))
            .expect("ip 2 holds 1, the hog 2: it takes one");
        assert_eq!(slots.admit(ip(2)).err(), Some(Refused::Full));
        drop((hog, other, fresh, second));
        assert_eq!(slots.held(), (0, 0), "taken slots are not released twice");
    }

    #[test]
    fn a_newcomer_takes_the_largest_holders_oldest_connection_when_full() {
        let slots = Slots::new(LIMITS);
        let hog: Vec<Slot> = (0..4)
            .map(|_| {
                let slot = slots.admit(ip(1)).expect("admitted");
                slot.handshake_done();
                slot
            })
            .collect();
        let other: Vec<Slot> = (0..2)
            .map(|_| {
                let slot = slots.admit(ip(2)).expect("admitted");
                slot.handshake_done();
                slot
            })
            .collect();
        assert_eq!(slots.held(), (6, 0));
        let fresh = slots.admit(ip(3)).expect("a fresh source is never refused");
        assert_eq!(slots.held(), (6, 1));
        drop((hog, other, fresh));
        assert_eq!(slots.held(), (0, 0));
    }
}
