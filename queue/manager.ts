/**
 * The queue manager (Postfix's qmgr + smtp + bounce): picks due entries out of the spool,
 * delivers them (local recipients into the Maildir, remote ones over SMTP by MX, or through the
 * relayhost), records per-recipient results durably, retries temporary failures with
 * exponential backoff and bounces permanent failures and expired mail with an RFC 3464 DSN.
 *
 * Crash safety (killed at any instant, restarted):
 * - a recipient is marked delivered only after the remote 250 (or the local fsync), so a crash
 *   in between delivers it again: at least once, never lost;
 * - a DSN is generated in three durable steps: (A) the failed recipients are recorded with the
 *   DSN's sequence number `k` and `pendingBounce = k`; (B) the DSN is queued under the fixed id
 *   `<id>-B<k>`, created exclusively; (C) `pendingBounce` is cleared. A restart between A and C
 *   redoes B, which finds the DSN already there. A DSN `<id>-B<k>` is never started while its
 *   parent is being processed or is due (and an unfinished bounce makes the parent due at once),
 *   so the DSN cannot be delivered and removed while B might still run again: at most one DSN.
 * - a DSN is itself delivered at least once, like any message: a crash between its delivery and
 *   its removal from the queue delivers the same DSN (same Message-ID) again.
 */
import { type FSWatcher, promises as fs, watch } from "node:fs";
import * as path from "node:path";
import type { Logger } from "pino";
import type { MailConfig } from "../config/schema";
import { splitAddress } from "../store/aliases";
import { lockHolder, tryHoldLock } from "../store/lock";
import { type OutboundMessage, type RecipientResult, SessionError, type SessionOptions, SmtpSession } from "./client";
import { buildDsn } from "./dsn";
import { LocalDelivery } from "./local";
import { countReceived } from "./mime";
import { createResolver, NextHopResolver, type NextHopResult } from "./nexthop";
import {
  type Envelope,
  ensureQueueDirs,
  isQueueId,
  listIds,
  type QueuePaths,
  type QueueState,
  queuePaths,
  type RecipientState,
  readEntry,
  readState,
  removeEntry,
  Spool,
  spoolEvents,
  writeState,
} from "./spool";

export interface QueueTuning {
  /** Entries being delivered at once. */
  maxActive: number;
  /** Parallel SMTP sessions per destination (Postfix: default_destination_concurrency_limit 20). */
  perDestination: number;
  /** Recipients per SMTP transaction (Postfix: smtp_destination_recipient_limit 50). */
  recipientsPerTransaction: number;
  /** Transactions per connection before it is closed and a new one opened. */
  transactionsPerConnection: number;
  /** How long an idle connection waits for another message to the same destination. */
  idleKeepMs: number;
  connectTimeoutMs: number;
  commandTimeoutMs: number;
}

export const DEFAULT_TUNING: QueueTuning = {
  maxActive: 100,
  perDestination: 10,
  recipientsPerTransaction: 50,
  transactionsPerConnection: 100,
  idleKeepMs: 200,
  connectTimeoutMs: 30_000,
  commandTimeoutMs: 300_000,
};

/** The status of deliveries cut short by our own shutdown (RFC 3463: system not accepting messages). */
const SHUTDOWN_STATUS = "4.3.2";

/** `relayhost` destinations are keyed by this instead of a domain. */
const RELAYHOST = "[relayhost]";

interface PoolRequest {
  msg: OutboundMessage;
  resolve: (r: RecipientResult[]) => void;
}

/** SMTP sessions to one destination, reused across entries (Postfix's connection cache). */
class DestinationPool {
  private readonly queue: PoolRequest[] = [];
  private sessions = 0;
  private hopCache: { at: number; result: NextHopResult } | null = null;
  private wake: (() => void) | null = null;
  closed = false;

  constructor(
    readonly key: string,
    private readonly resolveHops: () => Promise<NextHopResult>,
    private readonly sessionOptions: SessionOptions,
    private readonly tuning: QueueTuning,
  ) {}

  get idle(): boolean {
    return this.sessions === 0 && this.queue.length === 0;
  }

  submit(msg: OutboundMessage): Promise<RecipientResult[]> {
    return new Promise((resolve) => {
      this.queue.push({ msg, resolve });
      if (this.wake) {
        const w = this.wake;
        this.wake = null;
        w();
      } else if (this.sessions < this.tuning.perDestination && this.sessions < this.queue.length) {
        void this.runSession();
      }
    });
  }

  close(): void {
    this.closed = true;
    this.wake?.();
    for (const r of this.queue.splice(0))
      r.resolve(allResults(r.msg.recipients, "deferred", SHUTDOWN_STATUS, "mail system shutting down", false));
  }

  private async hops(): Promise<NextHopResult> {
    const now = Date.now();
    if (this.hopCache && now - this.hopCache.at < 2000) return this.hopCache.result;
    const result = await this.resolveHops();
    this.hopCache = { at: Date.now(), result };
    return result;
  }

  private waitForWork(ms: number): Promise<void> {
    if (this.queue.length > 0 || this.closed) return Promise.resolve();
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        if (this.wake === done) this.wake = null;
        resolve();
      }, ms);
      const done = () => {
        clearTimeout(t);
        resolve();
      };
      // Only one session waits; others exit when the queue is empty.
      if (this.wake) {
        clearTimeout(t);
        resolve();
        return;
      }
      this.wake = done;
    });
  }

  private async runSession(): Promise<void> {
    this.sessions++;
    try {
      while (this.queue.length > 0 && !this.closed) {
        const hops = await this.hops();
        if (!hops.ok) {
          for (const r of this.queue.splice(0))
            r.resolve(allResults(r.msg.recipients, hops.permanent ? "failed" : "deferred", hops.status, hops.message, false));
          break;
        }
        let session: SmtpSession;
        try {
          session = await SmtpSession.open(hops.hops, this.sessionOptions);
        } catch (err) {
          const e = err instanceof SessionError ? err : new SessionError(String(err), false, "4.4.1", false);
          // The destination is unreachable now: defer everything waiting for it (Postfix marks it dead).
          for (const r of this.queue.splice(0))
            r.resolve(allResults(r.msg.recipients, e.permanent ? "failed" : "deferred", e.status, e.message, e.fromServer, e.remoteMta));
          break;
        }
        try {
          let sent = 0;
          while (sent < this.tuning.transactionsPerConnection && !this.closed) {
            if (this.queue.length === 0) await this.waitForWork(this.tuning.idleKeepMs);
            const req = this.queue.shift();
            if (!req) break;
            if (!(await session.ready())) {
              this.queue.unshift(req);
              break;
            }
            sent++;
            req.resolve(await session.send(req.msg));
            if (!session.usable) break;
          }
        } finally {
          session.close();
        }
      }
    } finally {
      this.sessions--;
    }
  }
}

function allResults(
  recipients: string[],
  outcome: RecipientResult["outcome"],
  status: string,
  response: string,
  fromServer: boolean,
  remoteMta?: string,
): RecipientResult[] {
  return recipients.map((address) => ({ address, outcome, status, response, fromServer, ...(remoteMta ? { remoteMta } : {}) }));
}

/** The retry delay after `attempts` failed attempts: minBackoff doubling up to maxBackoff. */
export function backoffSeconds(attempts: number, min: number, max: number): number {
  const n = Math.max(0, attempts - 1);
  return Math.min(max, min * 2 ** Math.min(n, 40));
}

/** A live manager refreshes its lock this often; one not refreshed for LOCK_STALE_MS is gone. */
const LOCK_REFRESH_MS = 10_000;
export const LOCK_STALE_MS = 60_000;

/** Another queue manager is running on this spool. */
export class QueueLockedError extends Error {
  constructor(
    readonly lockFile: string,
    readonly holder: string,
  ) {
    super(`another queue manager is running on this spool (${lockFile} is held by ${holder}); two would deliver every message twice`);
    this.name = "QueueLockedError";
  }
}

export class QueueManager {
  readonly paths: QueuePaths;
  private readonly spool: Spool;
  private readonly local: LocalDelivery;
  private readonly nexthop: NextHopResolver;
  private readonly tuning: QueueTuning;
  private readonly pools = new Map<string, DestinationPool>();

  private readonly waiting = new Map<string, number>();
  private readonly ready: string[] = [];
  private readonly readySet = new Set<string>();
  private readonly active = new Map<string, Promise<void>>();
  private readonly rerun = new Set<string>();
  /** DSNs (`P-Bk`) waiting for their parent P to finish being processed (see the file comment). */
  private readonly blockedChildren = new Map<string, Set<string>>();

  private timer: NodeJS.Timeout | null = null;
  private timerDue = Number.POSITIVE_INFINITY;
  private scanTimer: NodeJS.Timeout | null = null;
  private scanSoonTimer: NodeJS.Timeout | null = null;
  private scanning: Promise<void> | null = null;
  private scanAgain = false;
  private watcher: FSWatcher | null = null;
  private flushSeen = 0;
  private closed = false;
  private releaseLock: (() => Promise<void>) | null = null;
  private readonly onEnqueued = (root: string, id: string) => {
    if (root === this.paths.root && !this.closed && !this.known(id)) this.schedule(id, Date.now());
  };

  constructor(
    private readonly config: MailConfig,
    private readonly log: Logger,
    tuning: Partial<QueueTuning> = {},
  ) {
    this.paths = queuePaths(config);
    this.spool = new Spool(config);
    this.local = new LocalDelivery(config);
    this.tuning = { ...DEFAULT_TUNING, ...tuning };
    this.nexthop = new NextHopResolver(
      config.resolvers.length > 0 ? createResolver(config.resolvers, sourceAddress(config)) : null,
      config.queue.remotePort,
    );
  }

  async start(): Promise<void> {
    await ensureQueueDirs(this.paths);
    // One manager per spool, as Postfix's master holds its pid lock: a second one would pick the
    // same entries and deliver them twice. A holder that died (kill -9, a restarted container)
    // leaves a stale lock, which is broken here (store/lock.ts).
    const release = await tryHoldLock(this.paths.lock, { staleMs: LOCK_STALE_MS, refreshMs: LOCK_REFRESH_MS });
    if (!release) {
      const holder = (await lockHolder(this.paths.lock, LOCK_STALE_MS).catch(() => null)) ?? "unknown";
      throw new QueueLockedError(this.paths.lock, holder);
    }
    this.releaseLock = release;
    try {
      await this.startWork();
    } catch (err) {
      this.releaseLock = null;
      await release();
      throw err;
    }
  }

  private async startWork(): Promise<void> {
    await this.sweep();
    this.flushSeen = await this.flushStamp();
    spoolEvents.on("enqueued", this.onEnqueued);
    try {
      this.watcher = watch(this.paths.msg, () => this.scanSoon());
      this.watcher.on("error", () => {
        this.watcher?.close();
        this.watcher = null;
      });
    } catch {
      // Polling alone (scanInterval) still finds everything.
    }
    try {
      // `queue flush` touches this file; watching the queue root notices it at once.
      const rootWatcher = watch(this.paths.root, (_ev, name) => {
        if (name === "flush") this.scanSoon();
      });
      rootWatcher.on("error", () => rootWatcher.close());
      const prev = this.watcher;
      this.watcher = {
        close: () => {
          prev?.close();
          rootWatcher.close();
        },
      } as FSWatcher;
    } catch {
      // polling covers it
    }
    await this.scan();
    const every = Math.max(50, this.config.queue.scanInterval * 1000);
    this.scanTimer = setInterval(() => this.scanSoon(), every);
    if (this.config.resolvers.length === 0 && !this.config.queue.relayhost)
      this.log.warn("no resolvers and no relayhost configured: remote mail will stay queued (temporary failure)");
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    spoolEvents.off("enqueued", this.onEnqueued);
    this.watcher?.close();
    for (const t of [this.timer, this.scanSoonTimer]) if (t) clearTimeout(t);
    if (this.scanTimer) clearInterval(this.scanTimer);
    for (const p of this.pools.values()) p.close();
    const pending = Promise.allSettled([...this.active.values()]);
    await Promise.race([pending, new Promise((r) => setTimeout(r, 5000).unref())]);
    await this.releaseLock?.();
  }

  /** Resolves once nothing is active or due now (tests, `queue flush --wait`). */
  async idle(): Promise<void> {
    while (this.active.size > 0 || this.ready.length > 0) await Promise.allSettled([...this.active.values()]);
  }

  private known(id: string): boolean {
    return this.waiting.has(id) || this.readySet.has(id) || this.active.has(id);
  }

  private schedule(id: string, due: number): void {
    if (this.closed) return;
    if (this.active.has(id)) {
      if (due <= Date.now()) this.rerun.add(id);
      return;
    }
    if (due <= Date.now() && !this.blockOnParent(id)) {
      this.waiting.delete(id);
      if (!this.readySet.has(id)) {
        this.readySet.add(id);
        this.ready.push(id);
      }
      this.pump();
      return;
    }
    this.waiting.set(id, due);
    this.arm(due);
  }

  private arm(due: number): void {
    if (due >= this.timerDue && this.timer) return;
    if (this.timer) clearTimeout(this.timer);
    this.timerDue = due;
    this.timer = setTimeout(() => this.onTimer(), Math.max(0, Math.min(due - Date.now(), 2 ** 31 - 1)));
  }

  private onTimer(): void {
    this.timer = null;
    this.timerDue = Number.POSITIVE_INFINITY;
    const now = Date.now();
    let next = Number.POSITIVE_INFINITY;
    for (const [id, due] of this.waiting) {
      if (due <= now) {
        if (this.blockOnParent(id)) continue;
        this.waiting.delete(id);
        if (!this.readySet.has(id)) {
          this.readySet.add(id);
          this.ready.push(id);
        }
      } else next = Math.min(next, due);
    }
    if (next !== Number.POSITIVE_INFINITY) this.arm(next);
    this.pump();
  }

  private pump(): void {
    while (!this.closed && this.active.size < this.tuning.maxActive && this.ready.length > 0) {
      const id = this.ready.shift()!;
      this.readySet.delete(id);
      if (this.blockOnParent(id)) continue;
      const run = this.process(id)
        .catch((err: unknown) => {
          this.log.error({ queueId: id, err: (err as Error).message }, "queue entry processing failed; will retry");
          return Date.now() + this.config.queue.minBackoff * 1000;
        })
        .then((nextDue) => {
          this.active.delete(id);
          this.releaseChildren(id);
          if (this.rerun.delete(id) && nextDue !== null) this.schedule(id, Date.now());
          else if (nextDue !== null) this.schedule(id, nextDue);
          this.pump();
        });
      this.active.set(id, run);
    }
  }

  /**
   * A DSN `P-Bk` is not delivered while its parent P is being processed or is about to be: P may
   * still be between steps B and C for it. Parks the DSN (waiting, due now) until P finishes.
   */
  private blockOnParent(id: string): boolean {
    const m = /^(.+)-B\d+$/.exec(id);
    if (!m) return false;
    const parent = m[1]!;
    if (!this.active.has(parent) && !this.readySet.has(parent)) return false;
    this.waiting.set(id, Date.now());
    let set = this.blockedChildren.get(parent);
    if (!set) {
      set = new Set();
      this.blockedChildren.set(parent, set);
    }
    set.add(id);
    return true;
  }

  private releaseChildren(parent: string): void {
    const set = this.blockedChildren.get(parent);
    if (!set) return;
    this.blockedChildren.delete(parent);
    for (const child of set) if (this.waiting.has(child)) this.schedule(child, Date.now());
  }

  private scanSoon(): void {
    if (this.closed || this.scanSoonTimer) return;
    this.scanSoonTimer = setTimeout(() => {
      this.scanSoonTimer = null;
      void this.scan();
    }, 20);
  }

  /** Finds new entries (from other processes), forgets deleted ones, and notices `queue flush`. */
  scan(): Promise<void> {
    if (this.scanning) {
      this.scanAgain = true;
      return this.scanning;
    }
    this.scanning = (async () => {
      do {
        this.scanAgain = false;
        try {
          await this.scanOnce();
        } catch (err) {
          this.log.error({ err: (err as Error).message }, "queue scan failed");
        }
      } while (this.scanAgain && !this.closed);
    })().finally(() => {
      this.scanning = null;
    });
    return this.scanning;
  }

  private async scanOnce(): Promise<void> {
    if (this.closed) return;
    const stamp = await this.flushStamp();
    const flush = stamp > this.flushSeen;
    if (flush) {
      this.flushSeen = stamp;
      this.log.info({ entries: this.waiting.size }, "queue flush requested: all deferred mail is due now");
    }
    const ids = await listIds(this.paths);
    const present = new Set(ids);
    for (const id of [...this.waiting.keys()]) if (!present.has(id)) this.waiting.delete(id);
    for (const id of ids) {
      if (this.closed) return;
      if (this.active.has(id)) {
        if (flush) this.rerun.add(id);
        continue;
      }
      if (this.readySet.has(id)) continue;
      if (this.waiting.has(id) && !flush) continue;
      let due = Date.now();
      if (!flush) {
        const st = await readState(this.paths, id).catch(() => null);
        // An unfinished bounce (crash between steps A and C) is finished at once.
        if (st && st.pendingBounce === undefined) due = st.nextAttempt;
      }
      this.schedule(id, due);
    }
  }

  private async flushStamp(): Promise<number> {
    try {
      return (await fs.stat(this.paths.flush)).mtimeMs;
    } catch {
      return 0;
    }
  }

  /** Leftovers of crashes: temp files, and state files whose entry is gone. */
  private async sweep(): Promise<void> {
    const now = Date.now();
    for (const f of await fs.readdir(this.paths.tmp).catch(() => [] as string[])) {
      const p = path.join(this.paths.tmp, f);
      // Other processes (SMTP) may be writing right now; only old files are abandoned.
      const st = await fs.stat(p).catch(() => null);
      if (st && now - st.mtimeMs > 3600_000) await fs.unlink(p).catch(() => undefined);
    }
    const ids = new Set(await listIds(this.paths));
    for (const f of await fs.readdir(this.paths.state).catch(() => [] as string[])) {
      const id = f.replace(/\.json$/, "");
      if (!ids.has(id)) await fs.unlink(path.join(this.paths.state, f)).catch(() => undefined);
    }
  }

  /** Delivers what is due in one entry. Returns when it is due next, or null when it is finished. */
  private async process(id: string): Promise<number | null> {
    if (!isQueueId(id)) return null;
    let entry: Awaited<ReturnType<typeof readEntry>>;
    try {
      entry = await readEntry(this.paths, id);
    } catch (err) {
      // Like Postfix's `corrupt` queue: set aside for an admin, never retried in a loop.
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== undefined) throw err; // an I/O error: retried later
      await fs.mkdir(this.paths.corrupt, { recursive: true });
      await fs.rename(path.join(this.paths.msg, id), path.join(this.paths.corrupt, id)).catch(() => undefined);
      this.log.error({ queueId: id, err: (err as Error).message, movedTo: this.paths.corrupt }, "corrupt queue file set aside");
      return null;
    }
    if (!entry) return null;
    const { envelope, state, data } = entry;

    if (state.pendingBounce !== undefined) {
      // Recovery after a crash between steps A and C.
      await this.sendBounce(envelope, state, data);
      await this.persist(id, state);
    }

    const now = Date.now();
    let pending = state.recipients.filter((r) => r.status === "pending");
    let stillPending = false;
    if (pending.length > 0) {
      const hops = countReceived(data);
      if (hops > this.config.limits.hopCount) {
        for (const r of pending)
          this.setResult(envelope, state, r, {
            address: r.address,
            outcome: "failed",
            status: "5.4.6",
            response: `mail forwarding loop: ${hops} Received: headers exceed the limit of ${this.config.limits.hopCount}`,
            fromServer: false,
          });
      } else {
        for (let round = 0; round < 3 && pending.length > 0; round++) {
          // Alias forwards found in the queue are delivered right away (a few rounds at most).
          pending = await this.attempt(envelope, state, pending, data);
        }
      }

      const failedNow = state.recipients.some((r) => r.status === "failed" && r.dsn === undefined);
      if (this.closed && !failedNow) {
        // Shutting down: what was delivered is recorded, the rest is due again at the next start
        // (a shutdown is not a failed attempt, and must not add a backoff).
        for (const r of state.recipients) if (r.status === "pending" && r.dsnStatus === SHUTDOWN_STATUS) delete r.dsnStatus;
        state.nextAttempt = Date.now();
        if (state.recipients.some((r) => r.status !== "pending")) await this.persist(id, state);
        return null;
      }

      state.lastAttempt = now;
      const lifetimeEnd = envelope.arrival + this.config.queue.maxLifetime * 1000;
      const deferred = state.recipients.filter((r) => r.status === "pending");
      if (deferred.length > 0 && Date.now() >= lifetimeEnd) {
        for (const r of deferred) {
          r.status = "failed";
          r.dsnStatus = "4.4.7";
          r.diagnostic = `message expired after ${Math.round((Date.now() - envelope.arrival) / 1000)}s in the queue; last error: ${r.diagnostic ?? "none"}`;
          r.updated = Date.now();
          this.logAttempt(envelope, state, r, "expired");
        }
      }

      state.attempts++;
      stillPending = state.recipients.some((r) => r.status === "pending");
      if (stillPending) {
        const delay = backoffSeconds(state.attempts, this.config.queue.minBackoff, this.config.queue.maxBackoff) * 1000;
        // The last try happens at the end of the lifetime, so expiry is noticed on time.
        state.nextAttempt = Math.max(Date.now() + 1, Math.min(Date.now() + delay, lifetimeEnd));
      }
    }

    const newlyFailed = state.recipients.filter((r) => r.status === "failed" && r.dsn === undefined);
    if (newlyFailed.length > 0) {
      if (envelope.from === "") {
        // RFC 5321 §4.5.5 / RFC 3464: a message with a null sender is never bounced.
        for (const r of newlyFailed) r.dsn = -1;
        this.log.warn(
          { queueId: id, to: newlyFailed.map((r) => r.address) },
          "undeliverable message with null sender discarded (never bounced)",
        );
      } else {
        const k = state.bounceSeq;
        for (const r of newlyFailed) r.dsn = k;
        state.pendingBounce = k;
        await this.persist(id, state); // step A
        await this.sendBounce(envelope, state, data); // step B; C is the persist (or removal) below
      }
    }

    if (!stillPending) {
      await removeEntry(this.paths, id);
      return null;
    }
    await this.persist(id, state);
    return state.nextAttempt;
  }

  /** Writes the state unless the entry was deleted meanwhile (`queue delete`). */
  private async persist(id: string, state: QueueState): Promise<void> {
    try {
      await fs.access(path.join(this.paths.msg, id));
    } catch {
      return;
    }
    await writeState(this.paths, id, state);
  }

  /** Step B (and the in-memory part of C): queue DSN `pendingBounce`, exclusively. */
  private async sendBounce(envelope: Envelope, state: QueueState, data: Buffer): Promise<void> {
    const k = state.pendingBounce;
    if (k === undefined) return;
    const failed = state.recipients.filter((r) => r.status === "failed" && r.dsn === k);
    if (failed.length > 0 && envelope.from !== "") {
      const dsn = buildDsn({
        reportingMta: this.config.hostname,
        queueId: envelope.id,
        sender: envelope.from,
        arrival: new Date(envelope.arrival),
        original: data,
        failed,
        ...(envelope.receivedFrom ? { receivedFrom: envelope.receivedFrom } : {}),
      });
      const bounceId = dsnId(envelope.id, k);
      await this.spool.enqueueAs(bounceId, { from: "", to: [envelope.from], data: dsn }, { exclusive: true, kind: "dsn" });
      this.log.info(
        { queueId: envelope.id, dsnId: bounceId, to: envelope.from, failed: failed.map((r) => r.address) },
        "sender non-delivery notification queued",
      );
    }
    state.pendingBounce = undefined;
    delete state.pendingBounce;
    state.bounceSeq = k + 1;
  }

  /** One delivery attempt for `pending`; returns recipients added by alias forwarding. */
  private async attempt(envelope: Envelope, state: QueueState, pending: RecipientState[], data: Buffer): Promise<RecipientState[]> {
    const localRcpts: RecipientState[] = [];
    const remote = new Map<string, RecipientState[]>();
    for (const r of pending) {
      if (this.local.isLocal(r.address)) {
        localRcpts.push(r);
        continue;
      }
      const domain = splitAddress(r.address)?.domain ?? "";
      const key = this.config.queue.relayhost ? RELAYHOST : domain;
      const list = remote.get(key) ?? [];
      list.push(r);
      remote.set(key, list);
    }
    const added: RecipientState[] = [];
    const jobs: Promise<void>[] = [];

    if (localRcpts.length > 0) {
      jobs.push(
        (async () => {
          const outcomes = await this.local.deliver(
            envelope.from,
            localRcpts.map((r) => r.address),
            data,
            maildirName(envelope),
          );
          for (const r of localRcpts) {
            const o = outcomes.get(r.address) ?? { kind: "deferred" as const, reason: "no outcome" };
            if (o.kind === "unknown") {
              this.setResult(envelope, state, r, {
                address: r.address,
                outcome: "failed",
                status: "5.1.1",
                response: `<${r.address}>: unknown user`,
                fromServer: false,
                remoteMta: this.config.hostname,
              });
            } else if (o.kind === "deferred") {
              this.setResult(envelope, state, r, {
                address: r.address,
                outcome: "deferred",
                status: "4.3.0",
                response: o.reason,
                fromServer: false,
              });
            } else {
              this.setResult(envelope, state, r, {
                address: r.address,
                outcome: "delivered",
                status: "2.0.0",
                response:
                  o.kind === "forward"
                    ? `delivered to ${o.users.join(", ") || "nobody"}; forwarded to ${o.forward.join(", ")}`
                    : `delivered to maildir (${o.users.join(", ")})`,
                fromServer: false,
                remoteMta: this.config.hostname,
              });
              if (o.kind === "forward") {
                for (const f of o.forward) {
                  if (state.recipients.some((x) => x.address.toLowerCase() === f.toLowerCase())) continue;
                  const nr: RecipientState = { address: f, status: "pending", orcpt: r.orcpt ?? r.address };
                  state.recipients.push(nr);
                  added.push(nr);
                }
              }
            }
          }
        })(),
      );
    }

    for (const [key, rcpts] of remote) {
      const pool = this.pool(key);
      for (let i = 0; i < rcpts.length; i += this.tuning.recipientsPerTransaction) {
        const chunk = rcpts.slice(i, i + this.tuning.recipientsPerTransaction);
        jobs.push(
          pool
            .submit({
              from: envelope.from,
              recipients: chunk.map((r) => r.address),
              data,
              eightBit: envelope.eightBit,
              eightBitHeaders: envelope.eightBitHeaders,
            })
            .then((results) => {
              results.forEach((res, j) => {
                this.setResult(envelope, state, chunk[j]!, res);
              });
            }),
        );
      }
    }
    await Promise.all(jobs);
    this.gcPools();
    return added;
  }

  private setResult(envelope: Envelope, state: QueueState, r: RecipientState, res: RecipientResult): void {
    r.status = res.outcome === "delivered" ? "delivered" : res.outcome === "failed" ? "failed" : "pending";
    r.dsnStatus = res.status;
    r.diagnostic = res.response;
    r.diagnosticType = res.fromServer ? "smtp" : "x-local";
    if (res.remoteMta) r.remoteMta = res.remoteMta;
    else delete r.remoteMta;
    r.updated = Date.now();
    if (res.outcome === "deferred") state.lastError = res.response;
    this.logAttempt(envelope, state, r, res.outcome === "delivered" ? "sent" : res.outcome === "failed" ? "bounced" : "deferred");
  }

  private logAttempt(envelope: Envelope, state: QueueState, r: RecipientState, status: string): void {
    const fields = {
      queueId: envelope.id,
      from: envelope.from,
      to: r.address,
      ...(r.orcpt ? { orcpt: r.orcpt } : {}),
      relay: r.remoteMta ?? "none",
      delay: Math.round((Date.now() - envelope.arrival) / 10) / 100,
      attempts: state.attempts + 1,
      dsn: r.dsnStatus,
      status,
      response: r.diagnostic,
    };
    if (status === "sent") this.log.info(fields, "delivery attempt");
    else this.log.warn(fields, "delivery attempt");
  }

  private pool(key: string): DestinationPool {
    let p = this.pools.get(key);
    if (p && !p.closed) return p;
    const rh = this.config.queue.relayhost;
    const localAddress = sourceAddress(this.config);
    const opts = {
      heloName: this.config.hostname,
      connectTimeoutMs: this.tuning.connectTimeoutMs,
      commandTimeoutMs: this.tuning.commandTimeoutMs,
      ...(localAddress ? { localAddress } : {}),
      ...(key === RELAYHOST && rh?.username && rh.password ? { auth: { user: rh.username, pass: rh.password } } : {}),
      ...(key === RELAYHOST && rh?.port === 465 ? { secure: true } : {}),
    };
    const resolveHops = key === RELAYHOST && rh ? () => this.nexthop.forHost(rh.host, rh.port) : () => this.nexthop.forDomain(key);
    p = new DestinationPool(key, resolveHops, opts, this.tuning);
    this.pools.set(key, p);
    return p;
  }

  private gcPools(): void {
    if (this.pools.size < 1000) return;
    for (const [k, p] of this.pools) if (p.idle) this.pools.delete(k);
  }
}

/**
 * The address outgoing connections and DNS queries leave from: the SMTP listen address when it
 * is a specific one (a host with several addresses, or sina and sohu side by side on loopback).
 */
export function sourceAddress(config: MailConfig): string | undefined {
  const a = config.listen.smtp?.address ?? config.listen.submission?.address;
  return a && a !== "0.0.0.0" && a !== "::" ? a : undefined;
}

export function dsnId(id: string, k: number): string {
  return `${id}-B${k}`;
}

/**
 * The Maildir base name a queued message gets in local mailboxes: its arrival time (so it sorts
 * with other mail) and its queue id, the same on every attempt, so that a delivery repeated
 * after a crash finds the copy it already made.
 */
export function maildirName(envelope: { id: string; arrival: number }): string {
  const sec = Math.floor(envelope.arrival / 1000);
  const usec = (envelope.arrival % 1000) * 1000;
  return `${sec}.M${usec}Q${envelope.id.replace(/[^A-Za-z0-9]/g, "")}.mailstack-queue`;
}
