"""The event sequencer: de-duplication, seq gaps, topic order and recovery."""

from __future__ import annotations

import pytest

from wse_client.sequencer import EventSequencer
from wse_client.types import TopicRecovery, WSEEvent


def pub(offset: int, topic: str = "t", epoch: str = "e1") -> WSEEvent:
    return WSEEvent(
        topic,
        {"o": offset},
        id=f"{topic}-{epoch}-{offset}",
        topic=topic,
        epoch=epoch,
        offset=offset,
    )


def delivered(seq: EventSequencer, event: WSEEvent, now: float = 0.0) -> list[int]:
    """Offsets delivered for `event`."""
    out = seq.on_publication(event, now)
    events = [event] if out is None else list(out)
    return [e.offset for e in events if e.offset is not None]


def subscribed(*topics: str, filtered: tuple[str, ...] = ()) -> EventSequencer:
    seq = EventSequencer()
    seq.subscribed(list(topics), list(filtered))
    return seq


def test_repeated_ids_are_dropped_within_the_window() -> None:
    seq = EventSequencer(dedup_size=3, dedup_age=10.0)
    assert not seq.is_duplicate("a", 0.0)
    assert seq.is_duplicate("a", 1.0)
    for name in ("b", "c", "d"):
        assert not seq.is_duplicate(name, 2.0)
    assert not seq.is_duplicate("a", 3.0), "evicted by size"
    assert seq.stats.duplicates == 1


def test_ids_are_forgotten_after_their_age() -> None:
    seq = EventSequencer(dedup_size=10_000, dedup_age=5.0)
    assert not seq.is_duplicate("a", 0.0)
    assert not seq.is_duplicate("b", 4.0)
    assert not seq.is_duplicate("c", 6.0)
    assert not seq.is_duplicate("a", 6.5), "older than 5 s"
    assert seq.is_duplicate("b", 6.5)


def test_default_window_holds_ten_thousand_ids() -> None:
    seq = EventSequencer()
    for n in range(10_000):
        seq.is_duplicate(str(n), 0.0)
    assert seq.is_duplicate("0", 1.0)
    seq.is_duplicate("new", 1.0)  # the oldest, "0", makes room
    assert seq.is_duplicate("1", 1.0)
    assert not seq.is_duplicate("0", 1.0)


def test_zero_window_keeps_nothing() -> None:
    seq = EventSequencer(dedup_size=0)
    assert not seq.is_duplicate("a", 0.0)
    assert not seq.is_duplicate("a", 0.0)


def test_seq_gaps_are_reported_and_never_block() -> None:
    seq = EventSequencer()
    assert [seq.check_seq(n) for n in (1, 2, 5, 6)] == [0, 0, 2, 0]
    assert seq.stats.seq_gaps == 2
    assert seq.check_seq(3) == 0
    assert seq.stats.seq_regressions == 1
    seq.new_connection()
    assert seq.check_seq(1) == 0


def test_consecutive_offsets_are_delivered_and_repeats_dropped() -> None:
    seq = subscribed("t")
    assert delivered(seq, pub(5)) == [5]
    assert delivered(seq, pub(6)) == [6]
    assert delivered(seq, pub(6)) == []
    assert delivered(seq, pub(2)) == []
    assert seq.stats.duplicates == 2
    assert seq.positions() == {"t": ("e1", 6)}


def test_gap_holds_later_messages_and_asks_for_recovery() -> None:
    seq = subscribed("t")
    delivered(seq, pub(0))
    assert delivered(seq, pub(3)) == []
    assert delivered(seq, pub(4)) == []
    assert seq.wanted == ["t"], "one request per gap"
    # The replay fills the hole; held messages follow in order.
    assert delivered(seq, pub(1)) == [1]
    assert delivered(seq, pub(2)) == [2, 3, 4]
    # Replayed copies of what was held are duplicates.
    assert delivered(seq, pub(3)) == []
    answer = TopicRecovery(recovered=True, epoch="e1", offset=4, count=4)
    assert seq.finish_recovery("t", answer) == []
    assert seq.stats.topic_gaps == 1 and seq.stats.lost == 0
    assert seq.positions() == {"t": ("e1", 4)}


def test_replay_of_a_held_offset_is_delivered_once() -> None:
    seq = subscribed("t")
    delivered(seq, pub(0))
    delivered(seq, pub(2))
    assert delivered(seq, pub(2)) == [], "held twice"
    assert delivered(seq, pub(1)) == [1, 2]


def test_failed_recovery_releases_held_and_resyncs() -> None:
    seq = subscribed("t")
    delivered(seq, pub(0))
    delivered(seq, pub(5))
    answer = TopicRecovery(recovered=False, epoch="e1", offset=9, count=0)
    released = seq.finish_recovery("t", answer)
    assert [e.offset for e in released] == [5]
    assert seq.positions() == {"t": ("e1", 9)}
    assert seq.stats.lost == 4 + 4
    assert delivered(seq, pub(10)) == [10]


def test_failed_recovery_under_a_new_epoch_moves_the_baseline() -> None:
    seq = subscribed("t")
    delivered(seq, pub(7))
    answer = TopicRecovery(recovered=False, epoch="e2", offset=3, count=0)
    assert seq.finish_recovery("t", answer) == []
    assert seq.positions() == {"t": ("e2", 3)}
    assert delivered(seq, pub(4, epoch="e2")) == [4]
    assert seq.stats.epoch_changes == 1


def test_failed_recovery_never_moves_backwards() -> None:
    seq = subscribed("t")
    delivered(seq, pub(7))
    answer = TopicRecovery(recovered=False, epoch="e1", offset=3, count=0)
    seq.finish_recovery("t", answer)
    assert seq.positions() == {"t": ("e1", 7)}


def test_recovery_answer_without_position_keeps_ours() -> None:
    seq = subscribed("t")
    delivered(seq, pub(7))
    answer = TopicRecovery(recovered=False, epoch=None, offset=None, count=0)
    seq.finish_recovery("t", answer)
    assert seq.positions() == {"t": ("e1", 7)}
    # After a server restart the topic comes back under a new epoch.
    assert delivered(seq, pub(0, epoch="e9")) == [0]
    assert seq.positions() == {"t": ("e9", 0)}


def test_answer_for_an_unknown_topic_sets_its_baseline() -> None:
    seq = subscribed("t")
    answer = TopicRecovery(recovered=False, epoch="e1", offset=4, count=0)
    assert seq.finish_recovery("t", answer) == []
    assert delivered(seq, pub(4)) == []
    assert delivered(seq, pub(5)) == [5]
    none = TopicRecovery(recovered=False, epoch=None, offset=None, count=0)
    assert seq.finish_recovery("u", none) == []
    assert "u" not in seq.positions()


def test_new_epoch_releases_held_then_restarts() -> None:
    seq = subscribed("t")
    delivered(seq, pub(0))
    delivered(seq, pub(2))
    assert delivered(seq, pub(0, epoch="e2")) == [2, 0]
    assert seq.positions() == {"t": ("e2", 0)}
    assert seq.stats.epoch_changes == 1 and seq.stats.lost == 1


def test_filtered_topics_jump_without_gaps() -> None:
    seq = subscribed("t", filtered=("t",))
    delivered(seq, pub(0))
    assert delivered(seq, pub(9)) == [9]
    assert seq.stats.topic_gaps == 0 and not seq.wanted
    seq.subscribed(["t"], [])
    assert delivered(seq, pub(12)) == []
    assert seq.wanted == ["t"]


def test_glob_only_topics_report_gaps_without_holding() -> None:
    seq = subscribed("prices.*")
    delivered(seq, pub(0, topic="prices.eu"))
    assert delivered(seq, pub(3, topic="prices.eu")) == [3]
    assert seq.stats.topic_gaps == 1 and seq.stats.lost == 2
    assert not seq.wanted


def test_reorder_buffer_is_bounded_by_count() -> None:
    seq = EventSequencer(reorder_limit=3)
    seq.subscribed(["t"], [])
    delivered(seq, pub(0))
    for offset in (2, 3, 4):
        assert delivered(seq, pub(offset)) == []
    assert delivered(seq, pub(5)) == [2, 3, 4, 5]
    assert seq.stats.lost == 1


def test_reorder_buffer_is_bounded_by_time() -> None:
    seq = EventSequencer(hold_timeout=5.0)
    seq.subscribed(["t"], [])
    delivered(seq, pub(0), 0.0)
    assert delivered(seq, pub(2), 1.0) == []
    assert seq.expire(3.0) == []
    assert [e.offset for e in seq.expire(6.5)] == [2]
    delivered(seq, pub(4), 7.0)
    assert delivered(seq, pub(5), 13.0) == [4, 5]


def test_flush_releases_everything_in_order() -> None:
    seq = subscribed("t", "u")
    delivered(seq, pub(0))
    delivered(seq, pub(0, topic="u"))
    delivered(seq, pub(3))
    delivered(seq, pub(2))
    delivered(seq, pub(2, topic="u"))
    assert [e.offset for e in seq.flush()] == [2, 3, 2]
    assert seq.flush() == []


def test_unsubscribe_forgets_positions() -> None:
    seq = subscribed("t")
    delivered(seq, pub(3))
    seq.unsubscribed(["t"])
    assert seq.positions() == {}
    assert delivered(seq, pub(1)) == [1]


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        EventSequencer(reorder_limit=0)
