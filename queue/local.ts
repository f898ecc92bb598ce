/**
 * Final delivery of queued mail for our own domains (a bounce to a local sender, mail the SMTP
 * server queued for a local alias that forwards): alias expansion, then the Maildir, with a
 * `Return-Path:` header as an MDA adds it (RFC 5321 §4.4).
 */
import type { MailConfig } from "../config/schema";
import { Aliases, splitAddress } from "../store/aliases";
import { MaildirDelivery } from "../store/deliver";
import { headerEnd } from "./spool";

export type LocalOutcome =
  | { kind: "delivered"; users: string[] }
  | { kind: "forward"; users: string[]; forward: string[] }
  | { kind: "unknown" }
  | { kind: "deferred"; reason: string };

export class LocalDelivery {
  private readonly aliases: Aliases;
  private readonly store: MaildirDelivery;

  constructor(config: MailConfig) {
    this.aliases = new Aliases(config);
    this.store = new MaildirDelivery(config.dataDir);
  }

  isLocal(address: string): boolean {
    const parts = splitAddress(address);
    return parts !== null && this.aliases.isLocalDomain(parts.domain);
  }

  /**
   * Delivers to every local recipient in one go (the message is written once). Returns one
   * outcome per recipient; a store failure defers all of them. `name`, derived from the queue
   * id, makes a retry after a crash deliver nothing twice.
   */
  async deliver(from: string, recipients: string[], data: Buffer, name?: string): Promise<Map<string, LocalOutcome>> {
    const out = new Map<string, LocalOutcome>();
    const users = new Set<string>();
    for (const r of recipients) {
      const route = this.aliases.route(r);
      if (route.kind !== "local") {
        out.set(r, { kind: "unknown" });
        continue;
      }
      for (const u of route.users) users.add(u);
      out.set(
        r,
        route.forward.length > 0
          ? { kind: "forward", users: route.users, forward: route.forward }
          : { kind: "delivered", users: route.users },
      );
    }
    if (users.size > 0) {
      try {
        await this.store.deliverLocal([...users], withReturnPath(from, data), name ? { name } : {});
      } catch (err) {
        const reason = `local delivery failed: ${(err as Error).message}`;
        for (const [r, o] of out) if (o.kind !== "unknown") out.set(r, { kind: "deferred", reason });
      }
    }
    return out;
  }
}

/** Replaces any `Return-Path:` with the envelope sender's. */
export function withReturnPath(from: string, data: Buffer): Buffer {
  const end = headerEnd(data);
  const head = data.subarray(0, end).toString("latin1");
  const kept = head
    .split(/(?<=\n)/)
    .reduce<{ lines: string[]; skipping: boolean }>(
      (acc, line) => {
        if (acc.skipping && /^[ \t]/.test(line)) return acc;
        acc.skipping = /^return-path[ \t]*:/i.test(line);
        if (!acc.skipping) acc.lines.push(line);
        return acc;
      },
      { lines: [], skipping: false },
    )
    .lines.join("");
  return Buffer.concat([Buffer.from(`Return-Path: <${from}>\r\n`, "utf8"), Buffer.from(kept, "latin1"), data.subarray(end)]);
}
