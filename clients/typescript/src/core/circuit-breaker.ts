/**
 * Client-side circuit breaker against reconnect storms. After
 * `failureThreshold` failed connection attempts within `windowMs` it opens:
 * no attempt is made for `openMs`. Then one probe is allowed (half-open);
 * its success closes the breaker, its failure opens it again. Time is a
 * parameter (`now`, ms).
 */

export type BreakerState = 'closed' | 'open' | 'half-open';

export interface CircuitBreakerOptions {
  failureThreshold?: number;
  windowMs?: number;
  openMs?: number;
}

export class CircuitBreaker {
  private readonly failures: number[] = [];
  private openedAt: number | null = null;
  private probing = false;
  private readonly threshold: number;
  private readonly windowMs: number;
  private readonly openMs: number;

  constructor(options: CircuitBreakerOptions = {}) {
    this.threshold = options.failureThreshold ?? 5;
    this.windowMs = options.windowMs ?? 60_000;
    this.openMs = options.openMs ?? 30_000;
    if (!(this.threshold >= 1)) {
      throw new RangeError('circuit breaker: failureThreshold must be >= 1');
    }
  }

  state(now: number): BreakerState {
    if (this.openedAt === null) return 'closed';
    return now - this.openedAt >= this.openMs ? 'half-open' : 'open';
  }

  /** Whether an attempt may start now; in half-open, only one at a time. */
  allow(now: number): boolean {
    const state = this.state(now);
    if (state === 'closed') return true;
    if (state === 'open' || this.probing) return false;
    this.probing = true;
    return true;
  }

  /** Ms until an attempt will be allowed (0 when allowed now). */
  waitMs(now: number): number {
    if (this.openedAt === null) return 0;
    return Math.max(0, this.openedAt + this.openMs - now);
  }

  recordSuccess(): void {
    this.failures.length = 0;
    this.openedAt = null;
    this.probing = false;
  }

  recordFailure(now: number): void {
    if (this.probing || this.state(now) === 'half-open') {
      this.trip(now);
      return;
    }
    this.failures.push(now);
    while (
      this.failures.length > 0 &&
      now - this.failures[0]! > this.windowMs
    ) {
      this.failures.shift();
    }
    if (this.failures.length >= this.threshold) this.trip(now);
  }

  private trip(now: number): void {
    this.openedAt = now;
    this.probing = false;
    this.failures.length = 0;
  }
}
