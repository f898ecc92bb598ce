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
 *
 * The buckets live in a fixed table in a SharedArrayBuffer, so every UDP thread of the server
 * (index.ts) draws from the same budget: a client whose source ports the kernel spreads over
 * several sockets gets `rate` in all, not `rate` per thread. The table is open-addressed in groups
 * of 8 buckets, each group behind a spin lock held for a few instructions; a bucket that has
 * refilled is free for another prefix, and when a group is full the least recently used bucket
 * goes. Its size bounds memory whatever a flood of spoofed prefixes does (the cost: under such a
 * flood some prefixes share or lose a budget early, which only ever limits less, never more
 * than `rate` per bucket).
 */
import { isIP } from "node:net";
import { toBits, unmapV4 } from "../lib/cidr";

export type RateDecision = "send" | "drop" | "slip";

const GROUP_BUCKETS = 8;
/** Bytes: the lock (int32, padded to 8), then per bucket key hash, over count (int32), tokens, last (float64). */
const BUCKET_BYTES = 24;
const GROUP_BYTES = 8 + GROUP_BUCKETS * BUCKET_BYTES;
/** Spins before giving up on a lock (a thread killed while holding it must not stall the others). */
const MAX_SPINS = 1 << 14;

/**
 * A table for `groups` × 8 prefixes. The default, 32,768 prefixes (BIND's RRL table holds at most
 * 20,000 by default), is 800 KiB of address space, of which only the pages of active buckets are
 * ever touched.
 */
export function rateLimitTable(groups = 4096): SharedArrayBuffer {
  return new SharedArrayBuffer(groups * GROUP_BYTES);
}

/** Milliseconds on a clock that every thread of the process shares. */
const sharedNow = () => performance.timeOrigin + performance.now();

export class RateLimiter {
  private readonly i32: Int32Array;
  private readonly f64: Float64Array;
  private readonly groups: number;

  /**
   * @param table shared with the other threads' limiters (rateLimitTable); a private one if omitted
   * @param now milliseconds, the same clock in every thread sharing `table`
   */
  constructor(
    readonly rate: number,
    table: SharedArrayBuffer = rateLimitTable(64),
    private readonly slip = 2,
    private readonly now: () => number = sharedNow,
  ) {
    this.i32 = new Int32Array(table);
    this.f64 = new Float64Array(table);
    this.groups = Math.floor(table.byteLength / GROUP_BYTES);
    if (this.groups < 1) throw new Error("rate limit table too small");
  }

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
    const key = hash(RateLimiter.prefix(address));
    const g = (key >>> 0) % this.groups;
    const lock = (g * GROUP_BYTES) >> 2;
    const locked = this.lock(lock);
    try {
      return this.take(g, key, t);
    } finally {
      if (locked) Atomics.store(this.i32, lock, 0);
    }
  }

  private lock(at: number): boolean {
    for (let i = 0; i < MAX_SPINS; i++) if (Atomics.compareExchange(this.i32, at, 0, 1) === 0) return true;
    return false;
  }

  private take(g: number, key: number, t: number): RateDecision {
    const rate = this.rate;
    let found = -1;
    let free = -1;
    let oldest = -1;
    let oldestLast = Number.POSITIVE_INFINITY;
    for (let i = 0; i < GROUP_BUCKETS; i++) {
      const off = g * GROUP_BYTES + 8 + i * BUCKET_BYTES;
      const k = this.i32[off >> 2]!;
      if (k === key) {
        found = off;
        break;
      }
      const last = this.f64[(off >> 3) + 2]!;
      if (k === 0 || this.f64[(off >> 3) + 1]! + ((t - last) / 1000) * rate >= rate) {
        if (free < 0) free = off;
      } else if (last < oldestLast) {
        oldestLast = last;
        oldest = off;
      }
    }
    let tokens: number;
    let over: number;
    const off = found >= 0 ? found : free >= 0 ? free : oldest;
    if (found >= 0) {
      const last = this.f64[(off >> 3) + 2]!;
      tokens = Math.min(rate, this.f64[(off >> 3) + 1]! + (Math.max(0, t - last) / 1000) * rate);
      over = this.i32[(off >> 2) + 1]!;
    } else {
      this.i32[off >> 2] = key;
      tokens = rate;
      over = 0;
    }
    let d: RateDecision;
    if (tokens >= 1) {
      tokens -= 1;
      over = 0;
      d = "send";
    } else {
      over++;
      d = this.slip > 0 && over % this.slip === 0 ? "slip" : "drop";
    }
    this.f64[(off >> 3) + 1] = tokens;
    this.f64[(off >> 3) + 2] = t;
    this.i32[(off >> 2) + 1] = over;
    return d;
  }

  /** Prefixes whose bucket has not refilled yet (the active set). */
  get size(): number {
    const t = this.now();
    let n = 0;
    for (let g = 0; g < this.groups; g++)
      for (let i = 0; i < GROUP_BUCKETS; i++) {
        const off = g * GROUP_BYTES + 8 + i * BUCKET_BYTES;
        if (this.i32[off >> 2] === 0) continue;
        if (this.f64[(off >> 3) + 1]! + ((t - this.f64[(off >> 3) + 2]!) / 1000) * this.rate < this.rate) n++;
      }
    return n;
  }
}

/** FNV-1a of the prefix, never 0 (0 marks an empty bucket). */
function hash(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h === 0 ? 1 : h | 0;
}
