/**
 * Delivery bookkeeping of the message processor (PROTOCOL.md §3, §7):
 * message-id de-duplication, `seq` gap reporting for direct messages, and
 * per-topic `(epoch, offset)` positions that tell gaps, duplicates and
 * history restarts apart.
 *
 * Nothing here holds a message back: a jump is reported (and the processor
 * asks for recovery) while the message that revealed it is delivered at once.
 * Every structure is bounded; the bounds are named constants or options.
 */

/** Remembers recent message ids; the oldest is forgotten first. */
export class IdWindow {
  private readonly ids = new Set<string>();

  constructor(private readonly capacity: number = DEFAULT_ID_WINDOW) {}

  /** True the first time an id is seen within the window. */
  admit(id: string): boolean {
    if (this.ids.has(id)) return false;
    this.ids.add(id);
    if (this.ids.size > this.capacity) {
      const oldest = this.ids.values().next();
      if (oldest.done !== true) this.ids.delete(oldest.value);
    }
    return true;
  }

  get size(): number {
    return this.ids.size;
  }
}

/** A gap in the `seq` numbers of one connection. */
export interface SeqGap {
  expected: number;
  received: number;
  /** Messages that never arrived (received - expected). */
  missing: number;
}

/** Follows `seq` on one connection; `server_ready` (seq 1) restarts it. */
export class SeqTracker {
  private next: number | null = null;

  /** Records a `seq`; returns the gap it reveals, if any. */
  observe(seq: number): SeqGap | null {
    const expected = this.next;
    if (seq === 1 || expected === null || seq >= expected) {
      this.next = seq + 1;
    }
    if (expected === null || seq === 1 || seq <= expected) return null;
    return { expected, received: seq, missing: seq - expected };
  }

  reset(): void {
    this.next = null;
  }
}

/** What the topic tracker decided about one publication. */
export type TopicVerdict =
  /** Deliver; `gap` is set when offsets were skipped before this one. */
  | { kind: 'deliver'; gap: { from: number; to: number } | null }
  /** Deliver; the topic's history restarted under a new epoch. */
  | { kind: 'new-epoch'; previousEpoch: string | null }
  /** Drop: this offset was already delivered. */
  | { kind: 'duplicate' };

/** Position of one topic, as recovery requests send it. */
export interface TopicPosition {
  epoch: string;
  /** The highest offset delivered. */
  offset: number;
}

/**
 * Per-topic positions. For each topic: its epoch, the highest offset seen,
 * and the offsets still missing below it (ranges, at most
 * `maxMissingRanges`; the oldest range is given up first). A publication is
 * delivered when its offset is above the highest or inside a missing range,
 * so messages a recovery replays fill the holes while repeats are dropped.
 */
export class TopicTracker {
  private readonly topics = new Map<string, TopicState>();

  constructor(
    private readonly maxTopics: number = DEFAULT_MAX_TOPICS,
    private readonly maxMissingRanges: number = DEFAULT_MAX_MISSING_RANGES,
  ) {}

  observe(topic: string, epoch: string, offset: number): TopicVerdict {
    const state = this.topics.get(topic);
    if (state === undefined || state.epoch !== epoch) {
      this.set(topic, { epoch, high: offset, missing: [] });
      return state === undefined
        ? { kind: 'deliver', gap: null }
        : { kind: 'new-epoch', previousEpoch: state.epoch };
    }
    if (offset > state.high) {
      const gap =
        offset > state.high + 1
          ? { from: state.high + 1, to: offset - 1 }
          : null;
      if (gap !== null) this.addMissing(state, gap.from, gap.to);
      state.high = offset;
      return { kind: 'deliver', gap };
    }
    return this.fill(state, offset)
      ? { kind: 'deliver', gap: null }
      : { kind: 'duplicate' };
  }

  /**
   * Sets a topic's position from a recovery answer that did not replay:
   * `offset` is the last offset published under `epoch` (or null when the
   * server has no history: the next publication sets the baseline).
   */
  resync(topic: string, epoch: string | null, offset: number | null): void {
    if (epoch === null || offset === null) {
      this.topics.delete(topic);
      return;
    }
    const state = this.topics.get(topic);
    if (state !== undefined && state.epoch === epoch && state.high >= offset) {
      // Live messages past that position already arrived: keep them, and
      // give up on the holes the server could not fill.
      state.missing = [];
      return;
    }
    this.set(topic, { epoch, high: offset, missing: [] });
  }

  position(topic: string): TopicPosition | null {
    const state = this.topics.get(topic);
    if (state === undefined) return null;
    return { epoch: state.epoch, offset: this.recoverFrom(state) };
  }

  /** Offsets still missing below the highest seen (for diagnostics). */
  missing(topic: string): ReadonlyArray<readonly [number, number]> {
    return this.topics.get(topic)?.missing ?? [];
  }

  forget(topic: string): void {
    this.topics.delete(topic);
  }

  topicNames(): string[] {
    return [...this.topics.keys()];
  }

  /** Replay must start below the oldest hole, else above the highest. */
  private recoverFrom(state: TopicState): number {
    const first = state.missing[0];
    return first === undefined ? state.high : first[0] - 1;
  }

  private set(topic: string, state: TopicState): void {
    this.topics.delete(topic);
    this.topics.set(topic, state);
    if (this.topics.size > this.maxTopics) {
      const oldest = this.topics.keys().next();
      if (oldest.done !== true) this.topics.delete(oldest.value);
    }
  }

  private addMissing(state: TopicState, from: number, to: number): void {
    state.missing.push([from, to]);
    if (state.missing.length > this.maxMissingRanges) state.missing.shift();
  }

  /** Removes `offset` from the missing ranges; false when it was not there. */
  private fill(state: TopicState, offset: number): boolean {
    const i = state.missing.findIndex(([a, b]) => offset >= a && offset <= b);
    if (i < 0) return false;
    const [a, b] = state.missing[i]!;
    const rest: Array<[number, number]> = [];
    if (a < offset) rest.push([a, offset - 1]);
    if (offset < b) rest.push([offset + 1, b]);
    state.missing.splice(i, 1, ...rest);
    return true;
  }
}

interface TopicState {
  epoch: string;
  high: number;
  /** Ascending, disjoint ranges of offsets not yet delivered. */
  missing: Array<[number, number]>;
}

/** Message ids remembered for de-duplication. */
export const DEFAULT_ID_WINDOW = 10_000;
/** Topics whose positions are kept. */
export const DEFAULT_MAX_TOPICS = 10_000;
/** Holes remembered per topic. */
export const DEFAULT_MAX_MISSING_RANGES = 64;
