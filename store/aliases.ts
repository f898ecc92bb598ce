/**
 * Recipient routing and alias expansion (Postfix's mydestination + /etc/aliases + recipient
 * delimiter). Expansion is recursive, de-duplicated, loop-safe and case-insensitive in the local
 * part; `user+tag` goes to `user`.
 */
import type { MailConfig } from "../config/schema";

export type Route =
  /** Our domain: deliver to these local users, and forward to these external addresses. */
  | { kind: "local"; users: string[]; forward: string[] }
  /** Our domain, but nobody by that name (550 5.1.1 at RCPT). */
  | { kind: "unknown" }
  /** Not our domain: relay if the client may relay, otherwise refuse. */
  | { kind: "remote"; domain: string };

export const RECIPIENT_DELIMITER = "+";

/** Splits `local@domain` at the last `@`. Returns null for anything without a plain domain. */
export function splitAddress(address: string): { local: string; domain: string } | null {
  const at = address.lastIndexOf("@");
  if (at <= 0 || at === address.length - 1) return null;
  return {
    local: address.slice(0, at),
    domain: address
      .slice(at + 1)
      .toLowerCase()
      .replace(/\.$/, ""),
  };
}

/**
 * Local parts that hide another address (`user%other`, `other!user`, `"user@other"`, `a@b`)
 * are the classic relay tricks; we never interpret them, so they route nowhere.
 */
export function isPlainLocalPart(local: string): boolean {
  return /^[a-z0-9#$&'*/=?^_`{|}~.+-]+$/i.test(local) && !local.startsWith(".") && !local.endsWith(".") && !local.includes("..");
}

export class Aliases {
  private readonly users: Set<string>;
  private readonly map: Map<string, string[]>;
  private readonly localDomains: Set<string>;

  constructor(config: MailConfig) {
    this.users = new Set(config.users.map((u) => u.name));
    this.map = new Map(Object.entries(config.aliases).map(([k, v]) => [k.toLowerCase(), v]));
    this.localDomains = new Set(config.destinations);
  }

  isLocalDomain(domain: string): boolean {
    return this.localDomains.has(domain.toLowerCase().replace(/\.$/, ""));
  }

  /** Where mail to `address` goes. */
  route(address: string): Route {
    const parts = splitAddress(address);
    if (!parts) return { kind: "unknown" };
    if (!this.isLocalDomain(parts.domain)) {
      if (parts.local.includes("@")) return { kind: "unknown" };
      return { kind: "remote", domain: parts.domain };
    }
    if (!isPlainLocalPart(parts.local)) return { kind: "unknown" };
    const result = this.expand(parts.local);
    if (result.users.length === 0 && result.forward.length === 0) return { kind: "unknown" };
    return { kind: "local", ...result };
  }

  /** Expands a local name into users and external addresses. */
  expand(local: string): { users: string[]; forward: string[] } {
    const users = new Set<string>();
    const forward = new Set<string>();
    const seen = new Set<string>();
    const walk = (name: string, depth: number) => {
      const lname = name.toLowerCase();
      if (seen.has(lname) || depth > 100) return;
      seen.add(lname);
      if (this.map.has(lname)) {
        for (const t of this.map.get(lname)!) this.walkTarget(t, depth, walk, forward);
        return;
      }
      if (this.users.has(lname)) {
        users.add(lname);
        return;
      }
      const plus = lname.indexOf(RECIPIENT_DELIMITER);
      if (plus > 0) walk(lname.slice(0, plus), depth + 1);
    };
    walk(local, 0);
    return { users: [...users].sort(), forward: [...forward].sort() };
  }

  private walkTarget(target: string, depth: number, walk: (name: string, depth: number) => void, forward: Set<string>): void {
    const parts = splitAddress(target);
    if (!parts) walk(target, depth + 1);
    else if (this.isLocalDomain(parts.domain)) walk(parts.local, depth + 1);
    else forward.add(`${parts.local}@${parts.domain}`);
  }
}
