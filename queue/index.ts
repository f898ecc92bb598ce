/**
 * The outbound queue service and its admin commands (`mailstack queue list|flush|delete`).
 *
 * `startQueue` runs the queue manager over `<dataDir>/queue` (see spool.ts for the layout and
 * manager.ts for delivery). SMTP only ever writes into the spool (`Spool.enqueue`); the manager,
 * in the same process or another one sharing the data directory, picks entries up at once
 * (in-process event, fs.watch) or at the latest after `queue.scanInterval`.
 */
import { promises as fs } from "node:fs";
import type { MailConfig } from "../config/schema";
import { createLogger } from "../lib/log";
import type { RunningService, StartOptions } from "../lib/service";
import { lockHolder } from "../store/lock";
import { LOCK_STALE_MS, QueueManager, type QueueTuning } from "./manager";
import { ensureQueueDirs, isQueueId, listIds, queuePaths, readEntry, removeEntry } from "./spool";

export type { QueueTuning } from "./manager";
export { QueueLockedError } from "./manager";
export { Spool } from "./spool";

export interface QueueStartOptions extends StartOptions {
  tuning?: Partial<QueueTuning>;
}

export interface RunningQueue extends RunningService {
  name: "queue";
  /** Resolves when nothing is being delivered or due right now. */
  idle(): Promise<void>;
  /** Rescans the spool at once (what `queue flush` triggers in a running manager). */
  scan(): Promise<void>;
}

export async function startQueue(config: MailConfig, opts: QueueStartOptions = {}): Promise<RunningQueue> {
  const log = opts.log ?? createLogger("queue");
  const manager = new QueueManager(config, log, opts.tuning);
  await manager.start();
  log.info({ dir: manager.paths.root, resolvers: config.resolvers, relayhost: config.queue.relayhost?.host }, "queue manager started");
  let closing: Promise<void> | null = null;
  return {
    name: "queue",
    listeners: [],
    idle: () => manager.idle(),
    scan: () => manager.scan(),
    close() {
      closing ??= manager.close().then(() => log.info("queue manager stopped"));
      return closing;
    },
  };
}

export interface QueueListEntry {
  id: string;
  arrival: string;
  size: number;
  from: string;
  /** Recipients still to be delivered, with the last reason they were deferred. */
  recipients: { address: string; status: string; reason?: string }[];
  attempts: number;
  nextAttempt: string;
  lastError?: string;
  kind?: "dsn";
}

/** The running queue manager's `<pid>:<host>:<token>`, or null when none holds the spool's lock. */
export function queueManagerHolder(config: MailConfig): Promise<string | null> {
  return lockHolder(queuePaths(config).lock, LOCK_STALE_MS);
}

/** `mailstack queue list`: every entry, oldest first (like `postqueue -p`). */
export async function listQueue(config: MailConfig): Promise<QueueListEntry[]> {
  const paths = queuePaths(config);
  const out: QueueListEntry[] = [];
  for (const id of await listIds(paths)) {
    const e = await readEntry(paths, id).catch(() => null);
    if (!e) continue;
    const item: QueueListEntry = {
      id,
      arrival: new Date(e.envelope.arrival).toISOString(),
      size: e.envelope.size,
      from: e.envelope.from,
      recipients: e.state.recipients
        .filter((r) => r.status === "pending")
        .map((r) => ({ address: r.address, status: r.status, ...(r.diagnostic ? { reason: r.diagnostic } : {}) })),
      attempts: e.state.attempts,
      nextAttempt: new Date(e.state.nextAttempt).toISOString(),
    };
    if (e.state.lastError) item.lastError = e.state.lastError;
    if (e.envelope.kind) item.kind = e.envelope.kind;
    out.push(item);
  }
  return out;
}

/**
 * `mailstack queue flush`: makes everything due now. A running manager notices the touched
 * `flush` file (fs.watch, or its next scan). Returns the number of entries in the queue.
 */
export async function flushQueue(config: MailConfig): Promise<number> {
  const paths = queuePaths(config);
  await ensureQueueDirs(paths);
  const now = new Date();
  await fs.writeFile(paths.flush, `${now.toISOString()}\n`);
  await fs.utimes(paths.flush, now, now);
  return (await listIds(paths)).length;
}

/** `mailstack queue delete ID`: removes an entry without delivering or bouncing it. */
export async function deleteQueued(config: MailConfig, id: string): Promise<boolean> {
  if (!isQueueId(id)) throw new Error(`"${id}" is not a queue id`);
  return removeEntry(queuePaths(config), id);
}
