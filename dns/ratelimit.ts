/**
 * Response rate limiting over UDP, against reflection and amplification (the idea of BIND's RRL,
 * simplified to one budget per client prefix: IPv4 /24, IPv6 /56).
 *
 * Each prefix has a token bucket of `rate` responses per second holding at most one second's
 * worth. Over budget, responses are dropped, except every `slip`-th one, which goes out as an
 * empty truncated (TC) answer so a real client behind the prefix retries over TCP, which cannot
 * be spoofed and is never limited. `rate` 0 turns the limiter off.
 *
 * Who is exempt is the caller's decision: the server exempts `trustedNetworks` (they may use us as
 * their resolver), and nothing else, loopback included, so tests and local tools are limited like
 * anyone else unless the stack trusts them.
 */
import { isIP } from "node:net";
import { toBits, unmapV4 } from "../lib/cidr";

export type RateDecision = "send" | "drop" | "slip";

interface Bucket {
  tokens: number;
  last: number;
  over: number;
}

export class RateLimiter {
  private buckets = new Map<string, Bucket>();
  private lastSweep = 0;

  constructor(
    readonly rate: number,
    private readonly slip = 2,
    private readonly now: () => number = () => performance.now(),
  ) {}

  get enabled(): boolean {
    return this.rate > 0;
  }

  /** The bucket key: the /24 of an IPv4 address or the /56 of an IPv6 one. */
  static prefix(address: string): string {
    const a = unmapV4(address);
    if (isIP(a) === 4) return a.slice(0, a.lastIndexOf("."));
    const bits = toBits(a);
    return bits === null ? a : `v6:${(bits >> 72n).toString(16)}`;
  }

  check(address: string): RateDecision {
    if (this.rate <= 0) return "send";
    const t = this.now();
    if (t - this.lastSweep > 10_000) this.sweep(t);
    const key = RateLimiter.prefix(address);
    let b = this.buckets.get(key);
    if (!b) {
      b = { tokens: this.rate, last: t, over: 0 };
      this.buckets.set(key, b);
    } else {
      b.tokens = Math.min(this.rate, b.tokens + ((t - b.last) / 1000) * this.rate);
      b.last = t;
    }
    if (b.tokens >= 1) {
      b.tokens -= 1;
      b.over = 0;
      return "send";
    }
    b.over++;
    return this.slip > 0 && b.over % this.slip === 0 ? "slip" : "drop";
  }

  /** Forgets buckets that have refilled, so the table stays as small as the active client set. */
  private sweep(t: number): void {
    this.lastSweep = t;
    for (const [k, b] of this.buckets) if (b.tokens + ((t - b.last) / 1000) * this.rate >= this.rate) this.buckets.delete(k);
  }

  get size(): number {
    return this.buckets.size;
  }
}
