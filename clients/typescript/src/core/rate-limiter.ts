/**
 * Token bucket for outbound messages: `capacity` tokens, refilled at
 * `refillPerSecond`. Time is a parameter (`now`, ms). The client takes one
 * token per message; without one the message waits in the priority buffer.
 */

export interface RateLimitOptions {
  capacity?: number;
  refillPerSecond?: number;
}

export class TokenBucket {
  private tokens: number;
  private last: number | null = null;
  readonly capacity: number;
  readonly refillPerSecond: number;

  constructor(options: RateLimitOptions = {}) {
    this.capacity = options.capacity ?? 100;
    this.refillPerSecond = options.refillPerSecond ?? 100;
    if (!(this.capacity >= 1) || !(this.refillPerSecond > 0)) {
      throw new RangeError('rate limit: need capacity >= 1, refill > 0');
    }
    this.tokens = this.capacity;
  }

  /** Takes `n` tokens if available. */
  tryTake(now: number, n = 1): boolean {
    this.refill(now);
    if (this.tokens < n) return false;
    this.tokens -= n;
    return true;
  }

  /** Ms until `n` tokens are available (0 when they are now). */
  waitMs(now: number, n = 1): number {
    this.refill(now);
    const short = n - this.tokens;
    return short <= 0 ? 0 : Math.ceil((short / this.refillPerSecond) * 1000);
  }

  available(now: number): number {
    this.refill(now);
    return this.tokens;
  }

  private refill(now: number): void {
    if (this.last !== null && now > this.last) {
      const gained = ((now - this.last) / 1000) * this.refillPerSecond;
      this.tokens = Math.min(this.capacity, this.tokens + gained);
    }
    if (this.last === null || now > this.last) this.last = now;
  }
}
