/**
 * Subscriptions and recovery (PROTOCOL.md §7 `subscription_update`).
 *
 * Keeps the topics the application wants, asks the server for them on
 * every connection, and reads its answers. A topic with a known position
 * is re-subscribed with `recover: true` and `recovery: {topic: {epoch,
 * offset}}`, so the server replays what was missed; during a connection a
 * gap in a topic's offsets triggers the same request for that topic (one
 * at a time per topic). Topics the server reports in `filtered_topics` skip
 * offsets by design, so their jumps never ask for recovery.
 *
 * An answer with `recovered: false` means the history could not fill the
 * hole (new epoch after a restart, or too old): the topic's position is
 * reset to what the server reports and a `recovery` outcome tells the
 * application to resynchronise (e.g. refetch a snapshot).
 */

import { isRecord, type WSEMessage } from './envelope.js';
import type { TopicPosition, TopicTracker } from './ordering.js';
import type { TopicGap } from './processor.js';
import { bump, type WSEStore } from './stores.js';

export interface RecoveryOutcome {
  topic: string;
  recovered: boolean;
  /** Messages replayed. */
  count: number;
  /** The server's position for the topic after the answer. */
  epoch: string | null;
  offset: number | null;
}

type Send = (envelope: { t: string; p: unknown }) => void;

export class Subscriptions {
  private readonly wanted = new Set<string>();
  private readonly filtered = new Set<string>();
  /** Topics with a recovery request in flight. */
  private readonly recovering = new Set<string>();

  constructor(
    private readonly store: WSEStore,
    private readonly send: Send,
  ) {}

  /** Adds topics; returns the ones that were new. */
  want(topics: readonly string[]): string[] {
    const added = topics.filter((t) => !this.wanted.has(t));
    added.forEach((t) => this.wanted.add(t));
    return added;
  }

  /** Removes topics; returns the ones that were wanted. */
  unwant(topics: readonly string[]): string[] {
    const removed = topics.filter((t) => this.wanted.delete(t));
    for (const topic of removed) {
      this.filtered.delete(topic);
      this.recovering.delete(topic);
    }
    const gone = new Set(removed);
    this.store.setState((s) => ({
      subscriptions: s.subscriptions.filter((t) => !gone.has(t)),
    }));
    return removed;
  }

  get topics(): string[] {
    return [...this.wanted];
  }

  /** On a new connection: every wanted topic, recovering known positions. */
  resubscribe(positions: TopicTracker): void {
    this.sendSubscribe([...this.wanted], positions);
  }

  sendSubscribe(topics: string[], positions: TopicTracker): void {
    const fresh: string[] = [];
    const recovery: Record<string, TopicPosition> = {};
    for (const topic of topics) {
      const at = this.filtered.has(topic) ? null : positions.position(topic);
      if (at === null) fresh.push(topic);
      else recovery[topic] = at;
    }
    if (fresh.length > 0) {
      this.send({
        t: 'subscription_update',
        p: { action: 'subscribe', topics: fresh },
      });
    }
    const recover = Object.keys(recovery);
    if (recover.length > 0) this.requestRecovery(recover, recovery);
  }

  sendUnsubscribe(topics: string[]): void {
    this.send({
      t: 'subscription_update',
      p: { action: 'unsubscribe', topics },
    });
  }

  /** A gap during a connection: ask for the missing offsets once. */
  recoverGap(gap: TopicGap, positions: TopicTracker): void {
    const topic = gap.topic;
    if (this.filtered.has(topic) || this.recovering.has(topic)) return;
    if (!this.wanted.has(topic)) return;
    const at = positions.position(topic);
    if (at !== null) this.requestRecovery([topic], { [topic]: at });
  }

  connectionLost(): void {
    this.recovering.clear();
    this.store.setState({ subscriptions: [] });
  }

  /** Reads the server's `subscription_update` answer. */
  handleAnswer(
    msg: WSEMessage,
    positions: TopicTracker,
    report: (outcome: RecoveryOutcome) => void,
  ): void {
    const p = isRecord(msg.payload) ? msg.payload : {};
    const ok = strings(p['success_topics']);
    for (const topic of strings(p['filtered_topics'])) this.filtered.add(topic);
    if (p['action'] === 'unsubscribe') {
      const gone = new Set(ok);
      this.store.setState((s) => ({
        subscriptions: s.subscriptions.filter((t) => !gone.has(t)),
      }));
      return;
    }
    this.recordSubscribed(ok, p);
    const recovery = isRecord(p['recovery']) ? p['recovery'] : {};
    for (const [topic, value] of Object.entries(recovery)) {
      if (!isRecord(value)) continue;
      if (!this.recovering.delete(topic)) continue;
      const outcome = readOutcome(topic, value);
      if (outcome.recovered) {
        bump(this.store, 'recoveriesSucceeded');
      } else {
        bump(this.store, 'recoveriesFailed');
        positions.resync(topic, outcome.epoch, outcome.offset);
      }
      report(outcome);
    }
  }

  private recordSubscribed(ok: string[], p: Record<string, unknown>): void {
    const failed = failures(p);
    this.store.setState((s) => {
      const subscriptions = [...new Set([...s.subscriptions, ...ok])].filter(
        (t) => this.wanted.has(t),
      );
      const failedSubscriptions = { ...s.failedSubscriptions, ...failed };
      for (const topic of ok) delete failedSubscriptions[topic];
      return { subscriptions, failedSubscriptions };
    });
  }

  private requestRecovery(
    topics: string[],
    recovery: Record<string, TopicPosition>,
  ): void {
    topics.forEach((t) => this.recovering.add(t));
    bump(this.store, 'recoveriesRequested', topics.length);
    this.send({
      t: 'subscription_update',
      p: { action: 'subscribe', topics, recover: true, recovery },
    });
  }
}

function readOutcome(
  topic: string,
  v: Record<string, unknown>,
): RecoveryOutcome {
  return {
    topic,
    recovered: v['recovered'] === true,
    count: typeof v['count'] === 'number' ? v['count'] : 0,
    epoch: typeof v['epoch'] === 'string' ? v['epoch'] : null,
    offset: typeof v['offset'] === 'number' ? v['offset'] : null,
  };
}

/** `failed_topics` as topic → reason (from `errors`, else `FAILED`). */
function failures(p: Record<string, unknown>): Record<string, string> {
  const errors = isRecord(p['errors']) ? p['errors'] : {};
  const out: Record<string, string> = {};
  for (const item of Array.isArray(p['failed_topics'])
    ? p['failed_topics']
    : []) {
    const topic =
      typeof item === 'string' ? item : isRecord(item) ? item['topic'] : null;
    if (typeof topic !== 'string') continue;
    const reason = errors[topic];
    out[topic] = typeof reason === 'string' ? reason : 'FAILED';
  }
  return out;
}

function strings(value: unknown): string[] {
  return Array.isArray(value)
    ? value.filter((v): v is string => typeof v === 'string')
    : [];
}
