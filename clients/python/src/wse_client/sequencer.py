"""Order, gaps and duplicates of inbound messages. Sans-I/O: time is a parameter.

Sits between the codec and delivery: every decoded event passes through here once.
It owns three things, each with a bound and a named policy:

- **De-duplication by `id`**: the last `dedup_size` ids (default 10,000) seen within
  `dedup_age` seconds; a repeated id is dropped.
- **`seq` gaps** of direct messages (PROTOCOL.md §3): a jump is counted and reported,
  the message is delivered at once. Nothing ever waits for a `seq`.
- **Topic positions** `(epoch, offset)`: a publication at or below the last delivered
  offset is a duplicate and dropped; the next offset is delivered; a jump on a topic
  the client subscribed to by name asks for recovery (the client re-subscribes with
  `recover: true`) and holds the later publications in a reorder buffer until the
  replay fills the hole or the recovery answer arrives. That overlap of a replay and
  live delivery is the only place anything is held. Topics the server filters for us
  (`filtered_topics`) jump by design and are never treated as gaps; topics matched only
  by a glob cannot be recovered by name, so their gaps are reported and delivered.
  A new epoch means the topic's history restarted: the baseline moves to it.

The buffer is bounded by `reorder_limit` messages and `hold_timeout` seconds per topic;
past either, held messages are released in order and the hole is counted as lost.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from .types import TopicRecovery, WSEEvent

__all__ = ["EventSequencer", "SequencerStats"]

#: Returned by `on_publication` for "deliver nothing now".
NOTHING: tuple[WSEEvent, ...] = ()


@dataclass(slots=True)
class SequencerStats:
    """Counters since the sequencer was created."""

    duplicates: int = 0
    """Messages dropped: a repeated id, or a topic offset already delivered."""
    seq_gaps: int = 0
    """Direct messages missing according to `seq` jumps."""
    seq_regressions: int = 0
    """Direct messages whose `seq` was not above the last one (delivered anyway)."""
    topic_gaps: int = 0
    """Offset jumps detected on topics (each may trigger a recovery)."""
    lost: int = 0
    """Publications given up on: holes neither a replay nor a recovery filled."""
    epoch_changes: int = 0
    """Topics whose history restarted under a new epoch."""
    held: int = 0
    """Publications that waited in the reorder buffer."""
    recoveries_requested: int = 0


@dataclass(slots=True)
class _Topic:
    epoch: str | None
    offset: int
    recovering: bool = False
    held: dict[int, WSEEvent] = field(default_factory=dict)
    held_since: float = 0.0


class EventSequencer:
    """Per-connection-lifetime ordering state (positions survive reconnects)."""

    def __init__(
        self,
        *,
        dedup_size: int = 10_000,
        dedup_age: float = 300.0,
        reorder_limit: int = 1_000,
        hold_timeout: float = 5.0,
    ) -> None:
        if dedup_size < 0 or reorder_limit < 1:
            raise ValueError("need dedup_size >= 0 and reorder_limit >= 1")
        self.dedup_size = dedup_size
        self.dedup_age = dedup_age
        self.reorder_limit = reorder_limit
        self.hold_timeout = hold_timeout
        self.stats = SequencerStats()
        #: Topics that need a recovery request, filled by `on_publication`; the
        #: client sends the requests and clears the list.
        self.wanted: list[str] = []
        self._ids: set[str] = set()
        self._id_order: deque[tuple[float, str]] = deque()
        self._last_seq = 0
        self._topics: dict[str, _Topic] = {}
        self._exact: set[str] = set()
        self._filtered: set[str] = set()

    # -- de-duplication and seq --------------------------------------------------------

    def is_duplicate(self, message_id: str, now: float) -> bool:
        """True when the id was seen within the window; otherwise remembers it."""
        if message_id in self._ids:
            self.stats.duplicates += 1
            return True
        if self.dedup_size == 0:
            return False
        order = self._id_order
        order.append((now, message_id))
        self._ids.add(message_id)
        if len(order) > self.dedup_size:
            self._ids.discard(order.popleft()[1])
        if order[0][0] < now - self.dedup_age:
            self._evict(now)
        return False

    def check_seq(self, seq: int) -> int:
        """Records a direct message's `seq`; returns how many were skipped (0 when
        it is the next one). The message is delivered whatever this returns."""
        expected = self._last_seq + 1
        if seq == expected:
            self._last_seq = seq
            return 0
        if seq > expected:
            missing = seq - expected
            self.stats.seq_gaps += missing
            self._last_seq = seq
            return missing
        self.stats.seq_regressions += 1
        return 0

    def new_connection(self) -> None:
        """A new socket: its `seq` starts again at 1."""
        self._last_seq = 0

    # -- subscriptions -----------------------------------------------------------------

    def subscribed(self, topics: list[str], filtered: list[str]) -> None:
        """Topics the server confirmed; `filtered` are those it filters for us."""
        for topic in topics:
            if "*" not in topic and "?" not in topic:
                self._exact.add(topic)
            if topic in filtered:
                self._filtered.add(topic)
            else:
                self._filtered.discard(topic)

    def unsubscribed(self, topics: list[str]) -> None:
        """Forgets the topics and their positions."""
        for topic in topics:
            self._exact.discard(topic)
            self._filtered.discard(topic)
            self._topics.pop(topic, None)

    def positions(self) -> dict[str, tuple[str, int]]:
        """The last delivered `(epoch, offset)` per topic, for recovery requests."""
        return {
            name: (state.epoch, state.offset)
            for name, state in self._topics.items()
            if state.epoch is not None
        }

    # -- publications ------------------------------------------------------------------

    def on_publication(
        self, event: WSEEvent, now: float
    ) -> tuple[WSEEvent, ...] | list[WSEEvent] | None:
        """Decides what to deliver for a publication carrying `(tp, e, o)`.

        None: deliver `event` itself (the common case). Otherwise the events to deliver
        now, in order (possibly none: a duplicate, or `event` held for a recovery).
        """
        topic = event.topic
        offset = event.offset
        assert topic is not None and offset is not None
        state = self._topics.get(topic)
        if state is None:
            self._topics[topic] = _Topic(event.epoch, offset)
            return None
        if event.epoch != state.epoch:
            return self._new_epoch(state, event)
        if offset == state.offset + 1 and not state.held:
            state.offset = offset
            return None
        if offset <= state.offset:
            self.stats.duplicates += 1
            return NOTHING
        return self._out_of_order(topic, state, event, now)

    def finish_recovery(self, topic: str, answer: TopicRecovery) -> list[WSEEvent]:
        """The subscription answer for `topic` arrived (after any replay): releases
        what is still held and, when not recovered, resyncs to the server's position.
        """
        state = self._topics.get(topic)
        if state is None:
            if answer.epoch is not None and answer.offset is not None:
                self._topics[topic] = _Topic(answer.epoch, answer.offset)
            return []
        state.recovering = False
        released = self._release_all(state)
        if answer.recovered or answer.epoch is None or answer.offset is None:
            return released
        if answer.epoch == state.epoch:
            if answer.offset > state.offset:
                self.stats.lost += answer.offset - state.offset
            state.offset = max(state.offset, answer.offset)
        else:
            self.stats.epoch_changes += 1
            state.epoch, state.offset = answer.epoch, answer.offset
        return released

    def expire(self, now: float) -> list[WSEEvent]:
        """Releases buffers held longer than `hold_timeout` (call it periodically)."""
        released: list[WSEEvent] = []
        for state in self._topics.values():
            if state.held and now - state.held_since >= self.hold_timeout:
                state.recovering = False
                released.extend(self._release_all(state))
        return released

    def flush(self) -> list[WSEEvent]:
        """Releases every buffer, in order (the connection is going away)."""
        released: list[WSEEvent] = []
        for state in self._topics.values():
            state.recovering = False
            if state.held:
                released.extend(self._release_all(state))
        return released

    # -- helpers -----------------------------------------------------------------------

    def _new_epoch(self, state: _Topic, event: WSEEvent) -> list[WSEEvent] | None:
        assert event.offset is not None
        released = self._release_all(state) if state.held else None
        if state.epoch is not None:
            self.stats.epoch_changes += 1
        state.epoch, state.offset, state.recovering = event.epoch, event.offset, False
        if released is None:
            return None
        released.append(event)
        return released

    def _out_of_order(
        self, topic: str, state: _Topic, event: WSEEvent, now: float
    ) -> tuple[WSEEvent, ...] | list[WSEEvent] | None:
        offset = event.offset
        assert offset is not None
        if offset == state.offset + 1:
            if state.held.pop(offset, None) is not None:
                self.stats.duplicates += 1
            state.offset = offset
            return [event, *self._release_consecutive(state)]
        if topic in self._filtered:
            state.offset = offset
            return None
        if topic not in self._exact:
            self.stats.topic_gaps += 1
            self.stats.lost += offset - state.offset - 1
            state.offset = offset
            return None
        return self._hold(topic, state, event, now)

    def _hold(
        self, topic: str, state: _Topic, event: WSEEvent, now: float
    ) -> tuple[WSEEvent, ...] | list[WSEEvent]:
        assert event.offset is not None
        if event.offset in state.held:
            self.stats.duplicates += 1
            return NOTHING
        if not state.held:
            state.held_since = now
        state.held[event.offset] = event
        self.stats.held += 1
        if not state.recovering:
            state.recovering = True
            self.stats.topic_gaps += 1
            self.stats.recoveries_requested += 1
            self.wanted.append(topic)
        if len(state.held) > self.reorder_limit or now - state.held_since > (
            self.hold_timeout
        ):
            state.recovering = False
            return self._release_all(state)
        return NOTHING

    def _release_consecutive(self, state: _Topic) -> list[WSEEvent]:
        released = []
        held = state.held
        while state.offset + 1 in held:
            state.offset += 1
            released.append(held.pop(state.offset))
        return released

    def _release_all(self, state: _Topic) -> list[WSEEvent]:
        """Everything held, in offset order; holes between are counted as lost.
        Held offsets are always above `state.offset + 1` (the next one is delivered,
        never held), so each step moves forward."""
        released = []
        for offset in sorted(state.held):
            self.stats.lost += offset - state.offset - 1
            state.offset = offset
            released.append(state.held[offset])
        state.held.clear()
        return released

    def _evict(self, now: float) -> None:
        """Forgets ids older than `dedup_age`."""
        order, ids = self._id_order, self._ids
        horizon = now - self.dedup_age
        while order and order[0][0] < horizon:
            ids.discard(order.popleft()[1])
