/**
 * Connection limits: at most `max` sessions in all, and at most `perClient` from one client
 * (one IPv4 address, or one IPv6 /64). Trusted networks are exempt from the per-client limit,
 * as Postfix exempts $mynetworks (smtpd_client_event_limit_exceptions).
 */
import { clientKey } from "../lib/throttle";

export type Admission = { release(): void } | "total" | "client";

export class ConnectionLimiter {
  private total = 0;
  private readonly perClientCount = new Map<string, number>();

  constructor(
    private readonly max: number,
    private readonly perClient: number,
    private readonly exempt: (address: string) => boolean,
  ) {}

  get active(): number {
    return this.total;
  }

  admit(address: string): Admission {
    if (this.total >= this.max) return "total";
    const key = clientKey(address);
    const n = this.perClientCount.get(key) ?? 0;
    if (n >= this.perClient && !this.exempt(address)) return "client";
    this.total++;
    this.perClientCount.set(key, n + 1);
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        this.total--;
        const left = (this.perClientCount.get(key) ?? 1) - 1;
        if (left <= 0) this.perClientCount.delete(key);
        else this.perClientCount.set(key, left);
      },
    };
  }
}
