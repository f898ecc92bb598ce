/**
 * Failed-login throttling per client address (and per /64 for IPv6), shared by SMTP, POP3 and
 * IMAP. After `limit` failures inside `windowMs` the address is refused until the window passes.
 */
import { isIP } from "node:net";
import { unmapV4 } from "./cidr";

export function clientKey(address: string): string {
  const a = unmapV4(address);
  if (isIP(a) === 6) return `${a.split(":").slice(0, 4).join(":")}::/64`;
  return a;
}

export class FailureThrottle {
  private readonly failures = new Map<string, number[]>();

  constructor(
    private readonly limit: number,
    private readonly windowMs = 15 * 60 * 1000,
  ) {}

  isBlocked(address: string, now = Date.now()): boolean {
    return this.recent(clientKey(address), now).length >= this.limit;
  }

  fail(address: string, now = Date.now()): void {
    const key = clientKey(address);
    const list = this.recent(key, now);
    list.push(now);
    this.failures.set(key, list);
    if (this.failures.size > 100_000) this.prune(now);
  }

  succeed(address: string): void {
    this.failures.delete(clientKey(address));
  }

  private recent(key: string, now: number): number[] {
    const list = (this.failures.get(key) ?? []).filter((t) => now - t < this.windowMs);
    if (list.length === 0) this.failures.delete(key);
    return list;
  }

  private prune(now: number): void {
    for (const key of [...this.failures.keys()]) this.recent(key, now);
  }
}
