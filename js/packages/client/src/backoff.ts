/**
 * Reconnect delays, as the reference documents them: `reconnectDelay`
 * doubling per failed attempt up to `maxReconnectDelay`, plus up to 500 ms of
 * random jitter so clients that lost the same server do not return at once.
 */
export class Backoff {
  attempts = 0;
  constructor(
    readonly base: number,
    readonly max: number,
    readonly jitter = 500,
    private readonly random: () => number = Math.random,
  ) {}

  /** The delay before the next attempt; counts the attempt. */
  next(): number {
    const raw = Math.min(this.max, this.base * 2 ** Math.min(this.attempts, 30));
    this.attempts++;
    return Math.min(this.max, raw + this.random() * this.jitter);
  }

  reset(): void {
    this.attempts = 0;
  }
}
