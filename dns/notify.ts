/**
 * NOTIFY (RFC 1996) to the secondaries when a zone's serial changes.
 *
 * The message (opcode NOTIFY, AA, question <zone> SOA IN, the new SOA in the answer section as
 * §3.7 allows) goes out from the server's own UDP socket, so its source is the address the
 * secondary knows as its primary. It is resent until the secondary answers with the same ID, or
 * `attempts` tries have passed (§3.6), with the interval doubling from `retryMs`.
 */
import { randomInt } from "node:crypto";
import type { Logger } from "pino";
import type { HostPort } from "./forward";
import { CLASS_IN, MessageWriter, OPCODE, type RR, TYPE } from "./wire";

export interface NotifyResult {
  zone: string;
  target: string;
  /** True when the secondary answered (any rcode). */
  acknowledged: boolean;
  rcode?: number;
}

export type Send = (msg: Buffer, to: HostPort) => void;

export function encodeNotify(id: number, zone: string, soa: RR): Buffer {
  const w = new MessageWriter(512);
  w.u16(id);
  w.u8((OPCODE.NOTIFY << 3) | 0x04); // QR=0, opcode NOTIFY, AA
  w.u8(0);
  for (const c of [1, 1, 0, 0]) w.u16(c);
  w.name(zone);
  w.u16(TYPE.SOA);
  w.u16(CLASS_IN);
  w.rr(soa);
  return w.result();
}

interface Pending {
  finish: (acknowledged: boolean, rcode?: number) => void;
  timer: NodeJS.Timeout | undefined;
}

export class Notifier {
  private pending = new Map<string, Pending>();
  private closed = false;

  constructor(
    private readonly send: Send,
    private readonly log: Logger,
    private readonly opts: { retryMs: number; attempts: number } = { retryMs: 2000, attempts: 5 },
  ) {}

  private static key(id: number, address: string, port: number): string {
    return `${id}|${address}|${port}`;
  }

  /** Sends NOTIFY for `zone` to every target; resolves when each has answered or given up. */
  notify(zone: string, soa: RR, targets: HostPort[]): Promise<NotifyResult[]> {
    return Promise.all(targets.map((t) => this.notifyOne(zone, soa, t)));
  }

  private notifyOne(zone: string, soa: RR, target: HostPort): Promise<NotifyResult> {
    const label = `${target.address}#${target.port}`;
    if (this.closed) return Promise.resolve({ zone, target: label, acknowledged: false });
    return new Promise((resolve) => {
      const id = randomInt(0, 65536);
      const msg = encodeNotify(id, zone, soa);
      const key = Notifier.key(id, target.address, target.port);
      let attempt = 0;
      const fire = () => {
        if (this.closed) return entry.finish(false);
        if (attempt >= this.opts.attempts) {
          this.log.warn({ zone, target: label, attempts: attempt }, "NOTIFY not acknowledged");
          return entry.finish(false);
        }
        attempt++;
        try {
          this.send(msg, target);
        } catch (err) {
          this.log.warn({ zone, target: label, err: (err as Error).message }, "NOTIFY send failed");
        }
        entry.timer = setTimeout(fire, this.opts.retryMs * 2 ** (attempt - 1));
        entry.timer.unref();
      };
      const entry: Pending = {
        timer: undefined,
        finish: (acknowledged, rcode) => {
          clearTimeout(entry.timer);
          this.pending.delete(key);
          if (acknowledged) this.log.info({ zone, target: label, rcode }, "NOTIFY acknowledged");
          resolve(rcode === undefined ? { zone, target: label, acknowledged } : { zone, target: label, acknowledged, rcode });
        },
      };
      this.pending.set(key, entry);
      fire();
    });
  }

  /** Takes a response that arrived on a server socket; true if it answered one of our NOTIFYs. */
  onResponse(msg: Buffer, from: HostPort): boolean {
    if (msg.length < 12) return false;
    const opcode = (msg[2]! >> 3) & 0xf;
    if (opcode !== OPCODE.NOTIFY) return false;
    const p = this.pending.get(Notifier.key(msg.readUInt16BE(0), from.address, from.port));
    if (!p) return false;
    p.finish(true, msg[3]! & 0xf);
    return true;
  }

  close(): void {
    this.closed = true;
    for (const p of [...this.pending.values()]) p.finish(false);
  }
}
