/**
 * The durable outbound queue on disk (Postfix's incoming/active/deferred, in one directory).
 *
 *   <dataDir>/queue/tmp/<id>          being written; never read by anyone
 *   <dataDir>/queue/msg/<id>          one queue entry: a header line, the envelope as one JSON
 *                                     line, then the message bytes. Immutable once there.
 *   <dataDir>/queue/state/<id>.json   the delivery state (per-recipient results, attempts, next
 *                                     attempt), rewritten by the queue manager. Absent = fresh.
 *   <dataDir>/queue/flush             touched by `mailstack queue flush`
 *   <dataDir>/queue/corrupt/<id>      entries that could not be parsed, set aside for an admin
 *
 * An entry becomes visible with a single rename into msg/ after the file was fsynced, and that
 * rename is made durable by an fsync of msg/ before `enqueue` returns. So a crash leaves either
 * nothing or a whole entry, never half of one. Removal unlinks msg/<id> first (the commit) and
 * then the state file; a state file without its message is garbage and is swept.
 */
import { randomBytes } from "node:crypto";
import { EventEmitter } from "node:events";
import { promises as fs } from "node:fs";
import * as path from "node:path";
import type { MailConfig } from "../config/schema";
import { asTemporary, syncDir, writeTmp } from "../store/maildir";

const MAGIC = "MAILSTACK-QUEUE 1\n";

/** What SMTP (or the queue itself, for bounces) hands to the queue. */
export interface EnqueueRequest {
  /** Envelope sender; "" for the null sender (bounces). */
  from: string;
  /** Envelope recipients (at least one). */
  to: string[];
  /** The message as received, headers included (`Received:` already added by SMTP). */
  data: Buffer;
  /** The client the message came from, for logs and DSNs, e.g. `mail.example.org [192.0.2.1]`. */
  receivedFrom?: string;
}

/** The immutable part of a queue entry: written once, at enqueue. */
export interface Envelope {
  id: string;
  from: string;
  to: string[];
  receivedFrom?: string;
  /** Milliseconds since the epoch when the entry was queued. */
  arrival: number;
  /** Message size in bytes. */
  size: number;
  /** Any byte > 127 in the message (needs 8BITMIME, or a downgrade). */
  eightBit: boolean;
  /** Any byte > 127 in the header section (needs SMTPUTF8 or 8BITMIME on the next hop). */
  eightBitHeaders: boolean;
  /** Set on delivery status notifications we generated ("dsn"). */
  kind?: "dsn";
}

export type RecipientStatus = "pending" | "delivered" | "failed";

export interface RecipientState {
  address: string;
  status: RecipientStatus;
  /** The recipient as originally given (alias expansion in the queue may replace it). */
  orcpt?: string;
  /** RFC 3463 status code of the last result, e.g. `2.0.0`, `4.4.1`, `5.1.1`. */
  dsnStatus?: string;
  /** The remote reply or our own explanation, for the DSN's Diagnostic-Code and the logs. */
  diagnostic?: string;
  /** Whether `diagnostic` is an SMTP reply from the remote MTA (`smtp;`) or our own text. */
  diagnosticType?: "smtp" | "x-local";
  remoteMta?: string;
  /** When the status last changed (ms since the epoch). */
  updated?: number;
  /** For failed recipients: the DSN (sequence number) that reports them; absent for null senders. */
  dsn?: number;
}

/** The mutable part of a queue entry. */
export interface QueueState {
  recipients: RecipientState[];
  attempts: number;
  /** When the entry is due next (ms since the epoch). */
  nextAttempt: number;
  lastAttempt?: number;
  /** The last temporary failure, for `queue list`. */
  lastError?: string;
  /** Number of DSNs generated so far. */
  bounceSeq: number;
  /** The DSN being generated: failed recipients with `dsn === pendingBounce` are reported by it. */
  pendingBounce?: number;
}

export interface QueueEntry {
  envelope: Envelope;
  state: QueueState;
}

export interface QueuePaths {
  root: string;
  tmp: string;
  msg: string;
  state: string;
  flush: string;
  /** Held by the running queue manager (store/lock.ts `tryHoldLock`): one manager per spool. */
  lock: string;
  corrupt: string;
}

export function queuePaths(config: Pick<MailConfig, "dataDir">): QueuePaths {
  const root = path.join(config.dataDir, "queue");
  return {
    root,
    tmp: path.join(root, "tmp"),
    msg: path.join(root, "msg"),
    state: path.join(root, "state"),
    flush: path.join(root, "flush"),
    lock: path.join(root, "master.lock"),
    corrupt: path.join(root, "corrupt"),
  };
}

/** Queue ids: time-ordered, file-name safe, unguessable enough to never collide. */
export function newQueueId(now = Date.now()): string {
  return `${now.toString(36).toUpperCase().padStart(9, "0")}${randomBytes(4).toString("hex").toUpperCase()}`;
}

const ID_RE = /^[A-Z0-9][A-Z0-9-]{0,63}$/;
export function isQueueId(id: string): boolean {
  return ID_RE.test(id);
}

/** In-process notifications, so a queue manager in the same process picks new mail up at once. */
export const spoolEvents = new EventEmitter();
spoolEvents.setMaxListeners(0);

const ensured = new Map<string, Promise<void>>();
export function ensureQueueDirs(paths: QueuePaths): Promise<void> {
  let p = ensured.get(paths.root);
  if (!p) {
    p = Promise.all([paths.tmp, paths.msg, paths.state].map((d) => fs.mkdir(d, { recursive: true, mode: 0o700 }))).then(() => undefined);
    p.catch(() => ensured.delete(paths.root));
    ensured.set(paths.root, p);
  }
  return p;
}

/** Bytes > 127 anywhere, and in the header section (up to the first empty line). */
export function scan8bit(data: Buffer): { eightBit: boolean; eightBitHeaders: boolean } {
  let eightBit = false;
  let eightBitHeaders = false;
  const end = headerEnd(data);
  for (let i = 0; i < data.length; i++) {
    if (data[i]! > 0x7f) {
      eightBit = true;
      if (i < end) eightBitHeaders = true;
      break;
    }
  }
  return { eightBit, eightBitHeaders };
}

/** Offset of the empty line that ends the header section (or the message length). */
export function headerEnd(data: Buffer): number {
  for (let i = 0; i < data.length; i++) {
    if (data[i] !== 0x0a) continue;
    if (i === 0) return 0;
    if (data[i + 1] === 0x0a) return i + 1;
    if (data[i + 1] === 0x0d && data[i + 2] === 0x0a) return i + 1;
  }
  return data.length;
}

function encodeEntry(envelope: Envelope, data: Buffer): Buffer {
  return Buffer.concat([Buffer.from(MAGIC), Buffer.from(`${JSON.stringify(envelope)}\n`), data]);
}

/** Parses a msg/ file. Throws on anything that is not a whole queue entry. */
export function decodeEntry(file: Buffer): { envelope: Envelope; data: Buffer } {
  if (file.subarray(0, MAGIC.length).toString("latin1") !== MAGIC) throw new Error("not a queue file");
  const nl = file.indexOf(0x0a, MAGIC.length);
  if (nl < 0) throw new Error("truncated queue file");
  const envelope = JSON.parse(file.subarray(MAGIC.length, nl).toString("utf8")) as Envelope;
  const data = file.subarray(nl + 1);
  if (typeof envelope.id !== "string" || !Array.isArray(envelope.to) || data.length !== envelope.size)
    throw new Error("corrupt queue file");
  return { envelope, data };
}

export function initialState(envelope: Envelope): QueueState {
  return {
    recipients: envelope.to.map((address) => ({ address, status: "pending" })),
    attempts: 0,
    nextAttempt: envelope.arrival,
    bounceSeq: 0,
  };
}

/**
 * The producer side of the queue, used by SMTP for relayed mail and by the queue for bounces.
 * `enqueue` resolves only once the entry is on stable storage (file and directory fsynced).
 */
export class Spool {
  readonly paths: QueuePaths;

  constructor(config: Pick<MailConfig, "dataDir">) {
    this.paths = queuePaths(config);
  }

  async enqueue(msg: EnqueueRequest): Promise<string> {
    return this.enqueueAs(newQueueId(), msg);
  }

  /**
   * Enqueues under a chosen id. With `exclusive`, an existing entry of that id is left alone and
   * `false` is returned (bounces use this so a restart never queues the same DSN twice).
   */
  async enqueueAs(id: string, msg: EnqueueRequest, opts: { exclusive?: boolean; kind?: "dsn" } = {}): Promise<string> {
    if (!isQueueId(id)) throw new Error(`bad queue id ${JSON.stringify(id)}`);
    if (typeof msg.from !== "string" || /[\r\n<>\s]/.test(msg.from)) throw new Error(`bad envelope sender ${JSON.stringify(msg.from)}`);
    if (!Array.isArray(msg.to) || msg.to.length === 0) throw new Error("a queue entry needs at least one recipient");
    for (const r of msg.to)
      if (typeof r !== "string" || !/^[^\s<>@]+@[^\s<>@]+$/.test(r)) throw new Error(`bad envelope recipient ${JSON.stringify(r)}`);
    if (!Buffer.isBuffer(msg.data)) throw new Error("message data must be a Buffer");

    await ensureQueueDirs(this.paths).catch((err) => {
      throw asTemporary(err);
    });
    const envelope: Envelope = {
      id,
      from: msg.from,
      to: [...msg.to],
      arrival: Date.now(),
      size: msg.data.length,
      ...scan8bit(msg.data),
    };
    if (msg.receivedFrom !== undefined) envelope.receivedFrom = msg.receivedFrom;
    if (opts.kind) envelope.kind = opts.kind;

    const tmp = await writeTmp(this.paths.root, `${id}.${randomBytes(3).toString("hex")}`, encodeEntry(envelope, msg.data));
    const dest = path.join(this.paths.msg, id);
    try {
      if (opts.exclusive) {
        try {
          await fs.link(tmp, dest);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === "EEXIST") return id;
          throw err;
        }
      } else {
        await fs.rename(tmp, dest);
      }
      await syncDir(this.paths.msg);
    } catch (err) {
      await fs.unlink(dest).catch(() => undefined);
      throw asTemporary(err);
    } finally {
      await fs.unlink(tmp).catch(() => undefined);
    }
    spoolEvents.emit("enqueued", this.paths.root, id);
    return id;
  }
}

/** Reads an entry with its state. Returns null when it is gone (delivered or deleted meanwhile). */
export async function readEntry(paths: QueuePaths, id: string): Promise<(QueueEntry & { data: Buffer }) | null> {
  let file: Buffer;
  try {
    file = await fs.readFile(path.join(paths.msg, id));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw err;
  }
  const { envelope, data } = decodeEntry(file);
  const state = (await readState(paths, id)) ?? initialState(envelope);
  return { envelope, state, data };
}

export async function readState(paths: QueuePaths, id: string): Promise<QueueState | null> {
  try {
    return JSON.parse(await fs.readFile(path.join(paths.state, `${id}.json`), "utf8")) as QueueState;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT") return null;
    // A state file is only ever replaced by rename, so it cannot be torn; anything unreadable
    // is treated as absent (the entry starts over: delivered at least once, never lost).
    if (err instanceof SyntaxError) return null;
    throw err;
  }
}

/** Durably replaces an entry's state (tmp → fsync → rename → fsync dir). */
export async function writeState(paths: QueuePaths, id: string, state: QueueState): Promise<void> {
  const tmp = await writeTmp(paths.root, `${id}.state.${randomBytes(3).toString("hex")}`, Buffer.from(JSON.stringify(state)));
  try {
    await fs.rename(tmp, path.join(paths.state, `${id}.json`));
  } catch (err) {
    await fs.unlink(tmp).catch(() => undefined);
    throw err;
  }
  await syncDir(paths.state);
}

/** Removes an entry: the message file first (the commit), then its state. */
export async function removeEntry(paths: QueuePaths, id: string): Promise<boolean> {
  let removed = true;
  try {
    await fs.unlink(path.join(paths.msg, id));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    removed = false;
  }
  await syncDir(paths.msg);
  await fs.unlink(path.join(paths.state, `${id}.json`)).catch(() => undefined);
  return removed;
}

/** Ids of every entry in the queue, oldest first. */
export async function listIds(paths: QueuePaths): Promise<string[]> {
  try {
    return (await fs.readdir(paths.msg)).filter(isQueueId).sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw err;
  }
}
