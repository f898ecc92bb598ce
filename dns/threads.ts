/**
 * More UDP receive paths than the main thread alone: worker threads (worker.ts), each with its
 * own socket bound to the server's address and port with SO_REUSEPORT, so the kernel spreads
 * clients over the threads by their address and port (as BIND does with a listener per CPU).
 * Node has no sendmmsg or recvmmsg, so a thread costs a system call per query and per answer,
 * and one thread is bounded by one core.
 *
 * The main thread keeps its own UDP socket and everything that is not answering UDP queries:
 * TCP, zone transfers, serials, reloads, NOTIFY. A thread gets the zones and the engine settings
 * (plain data) when it starts and again on every reload, and `reload` resolves once every
 * thread answers from the new zones. What the threads share lives in SharedArrayBuffers: the
 * rate limiter's buckets (one budget per client prefix whatever thread a datagram reaches) and
 * the counters (each thread writes its own slot; `stats` adds them up). What reaches a thread but
 * belongs to the main thread, NOTIFY acknowledgements and log lines, is passed on as messages.
 *
 * A thread that stops (it should not: the engine never throws on input) is logged as an error and
 * started again after a short, growing delay; meanwhile the kernel gives its clients to the other
 * sockets. After `maxRestarts` within a minute it is left stopped (logged as an error) and the
 * remaining threads, the main thread at least, serve UDP.
 */
import { availableParallelism } from "node:os";
import * as path from "node:path";
import { type ResourceLimits, Worker } from "node:worker_threads";
import type { Logger } from "pino";
import type { HostPort } from "./forward";
import type { Zone } from "./zone";

export type LogLevel = "debug" | "info" | "warn" | "error";

/** The engine settings a thread needs, as plain data (EngineOptions minus the live objects). */
export interface EngineSpec {
  trustedNetworks: string[];
  secondaries: HostPort[];
  upstream: string[];
  forwardTimeoutMs: number;
  rateLimit: number;
}

export interface WorkerInit {
  address: string;
  port: number;
  zones: Zone[];
  spec: EngineSpec;
  rateLimitTable: SharedArrayBuffer;
  /** Every thread's counters; this one writes slot `statsSlot`. */
  stats: SharedArrayBuffer;
  statsSlot: number;
  /** pino level value: lines below it are not sent. */
  logLevel: number;
}

export type ToWorker = { type: "reload"; seq: number; zones: Zone[]; spec: EngineSpec };

export type FromWorker =
  | { type: "ready"; port: number }
  | { type: "failed"; message: string; code?: string }
  | { type: "reloaded"; seq: number }
  | { type: "response"; msg: Uint8Array; from: HostPort }
  | { type: "log"; level: LogLevel; obj: object; msg?: string };

/**
 * UDP threads by default: one per core but one, at least 1 and at most 2. The DNS service shares
 * its host with the other mail services. Measured on 2 cores with a busy neighbour (dnsperf, in
 * the benchmark): a second UDP thread cost 8.2 instead of 7.3 µs of CPU per query (more wake-ups
 * and context switches for the same work) and answered fewer queries per second, so a 2-core
 * host gets one thread; bigger hosts get two.
 */
export function defaultUdpThreads(cores = availableParallelism()): number {
  return Math.max(1, Math.min(2, cores - 1));
}

/**
 * A thread's heap stays small: the zones, the answer cache and per-datagram garbage. A smaller
 * young generation than the default (16 MiB semi-spaces) keeps its resident size down under load.
 */
const RESOURCE_LIMITS: ResourceLimits = { maxYoungGenerationSizeMb: 8 };

/**
 * How to start worker.ts: the compiled file next to this one, or, when running from the
 * TypeScript sources (ts-node, jest), through ts-node's transpile-only hook as the CLI does.
 */
function workerScript(): { file: string; eval: boolean } {
  const ext = path.extname(__filename);
  const file = path.join(__dirname, `worker${ext}`);
  if (ext !== ".ts") return { file, eval: false };
  const project = path.join(__dirname, "..", "tsconfig.json");
  // By absolute path: an eval'd worker resolves modules from the process's working directory.
  const tsNode = require.resolve("ts-node");
  return {
    file: `require(${JSON.stringify(tsNode)}).register({ transpileOnly: true, project: ${JSON.stringify(project)} }); require(${JSON.stringify(file)});`,
    eval: true,
  };
}

export interface UdpThreadsOptions {
  /** Worker threads (the main thread's own socket is not one of them). */
  workers: number;
  address: string;
  port: number;
  log: Logger;
  rateLimitTable: SharedArrayBuffer;
  stats: SharedArrayBuffer;
  /** The zones and engine settings now: what a (re)started thread begins with. */
  current: () => { zones: Zone[]; spec: EngineSpec };
  /** A response (NOTIFY acknowledgement) that reached a thread's socket. */
  onResponse: (msg: Buffer, from: HostPort) => void;
  /** Each thread as it starts (slot 1..workers); tests use it to stop one. */
  onWorker?: (worker: Worker, slot: number) => void;
  /** First restart delay, doubling (default 100 ms, at most 5 s). */
  restartDelayMs?: number;
  /** Restarts of one thread within a minute before it is left stopped (default 5). */
  maxRestarts?: number;
  /** How long a thread may take to confirm a reload (default 10 s). */
  reloadTimeoutMs?: number;
}

interface Slot {
  worker: Worker | null;
  ready: boolean;
  /** Reload acknowledgements awaited from this thread, by sequence number. */
  acks: Map<number, () => void>;
  /** When it was restarted (ms), for the per-minute cap. */
  restarts: number[];
  timer: NodeJS.Timeout | null;
}

export class UdpThreads {
  private readonly slots: Slot[];
  private closing = false;
  private seq = 0;
  private readonly script = workerScript();

  constructor(private readonly opts: UdpThreadsOptions) {
    this.slots = Array.from({ length: opts.workers }, () => ({ worker: null, ready: false, acks: new Map(), restarts: [], timer: null }));
  }

  /** Starts every thread; resolves when all are bound, rejects (and stops them) if one cannot be. */
  async start(): Promise<void> {
    try {
      await Promise.all(this.slots.map((_, i) => this.spawn(i)));
    } catch (err) {
      await this.close();
      throw err;
    }
  }

  /** Threads answering now (not counting the main thread). */
  get running(): number {
    return this.slots.filter((s) => s.ready).length;
  }

  /**
   * Hands new zones and settings to every thread; resolves when each answers from them. A thread
   * that does not confirm within `reloadTimeoutMs` (it would have to be stuck) is stopped, and so
   * started again from the new state.
   */
  async reload(zones: Zone[], spec: EngineSpec): Promise<void> {
    const seq = ++this.seq;
    const msg: ToWorker = { type: "reload", seq, zones, spec };
    const timeoutMs = this.opts.reloadTimeoutMs ?? 10_000;
    await Promise.all(
      this.slots.map((s, i) => {
        const w = s.worker;
        if (!w) return Promise.resolve(); // stopped: a restart starts from `current()`, already the new state
        return new Promise<void>((resolve) => {
          const timer = setTimeout(() => {
            this.opts.log.error({ thread: i + 1, timeoutMs }, "DNS UDP thread did not take the reload; stopping it");
            void w.terminate();
          }, timeoutMs);
          s.acks.set(seq, () => {
            clearTimeout(timer);
            resolve();
          });
          w.postMessage(msg);
        });
      }),
    );
  }

  async close(): Promise<void> {
    this.closing = true;
    await Promise.all(
      this.slots.map(async (s) => {
        if (s.timer) clearTimeout(s.timer);
        s.timer = null;
        await s.worker?.terminate();
      }),
    );
  }

  /** Starts slot `i`'s thread; one that was started again is restarted whenever it stops. */
  private spawn(i: number, again = false): Promise<void> {
    const { opts } = this;
    const slot = this.slots[i]!;
    const { zones, spec } = opts.current();
    const init: WorkerInit = {
      address: opts.address,
      port: opts.port,
      zones,
      spec,
      rateLimitTable: opts.rateLimitTable,
      stats: opts.stats,
      statsSlot: i + 1,
      logLevel: opts.log.levelVal,
    };
    const w = new Worker(this.script.file, {
      eval: this.script.eval,
      workerData: init,
      resourceLimits: RESOURCE_LIMITS,
      name: `dns-udp-${i + 1}`,
    });
    slot.worker = w;
    slot.ready = false;
    opts.onWorker?.(w, i + 1);
    return new Promise<void>((resolve, reject) => {
      w.on("message", (m: FromWorker) => {
        switch (m.type) {
          case "ready":
            slot.ready = true;
            resolve();
            break;
          case "failed":
            reject(Object.assign(new Error(m.message), m.code ? { code: m.code } : {}));
            break;
          case "reloaded":
            slot.acks.get(m.seq)?.();
            slot.acks.delete(m.seq);
            break;
          case "response":
            opts.onResponse(Buffer.from(m.msg.buffer, m.msg.byteOffset, m.msg.byteLength), m.from);
            break;
          case "log":
            opts.log[m.level]({ ...m.obj, thread: i + 1 }, m.msg);
            break;
        }
      });
      w.on("error", (err) => {
        opts.log.error({ err, thread: i + 1 }, "DNS UDP thread failed");
        reject(err);
      });
      w.on("exit", (code) => {
        const wasReady = slot.ready;
        if (slot.worker === w) {
          slot.worker = null;
          slot.ready = false;
        }
        // A reload waits for nobody that is gone: a restart begins from the new state anyway.
        for (const ack of slot.acks.values()) ack();
        slot.acks.clear();
        reject(new Error(`DNS UDP thread ${i + 1} stopped (exit code ${code}) before it was listening`));
        if ((wasReady || again) && !this.closing) this.restart(i, code);
      });
    });
  }

  private restart(i: number, code: number): void {
    const slot = this.slots[i]!;
    const now = Date.now();
    slot.restarts = slot.restarts.filter((t) => now - t < 60_000);
    const max = this.opts.maxRestarts ?? 5;
    if (slot.restarts.length >= max) {
      this.opts.log.error(
        { thread: i + 1, code, restarts: slot.restarts.length },
        "DNS UDP thread keeps stopping: not started again; the other threads serve UDP",
      );
      return;
    }
    slot.restarts.push(now);
    const delay = Math.min(5000, (this.opts.restartDelayMs ?? 100) * 2 ** (slot.restarts.length - 1));
    this.opts.log.error({ thread: i + 1, code, delayMs: delay }, "DNS UDP thread stopped; starting it again");
    slot.timer = setTimeout(() => {
      slot.timer = null;
      if (this.closing) return;
      // A failed start ends in the thread's exit, which schedules the next attempt.
      this.spawn(i, true).then(
        () => this.opts.log.info({ thread: i + 1 }, "DNS UDP thread listening again"),
        (err: Error) => this.opts.log.error({ thread: i + 1, err: err.message }, "DNS UDP thread could not start again"),
      );
    }, delay);
  }
}
