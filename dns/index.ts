/**
 * mailstack's authoritative DNS server: the zones of zone.ts over UDP and TCP on `listen.dns`.
 *
 *   const dns = await startDns(loadStack("dev"));
 *   // dig @127.0.0.1 -p 5353 lx.com MX +short  →  10 mail.lx.com.
 *
 * Port 0 asks for an ephemeral port; UDP and TCP then share one number (UDP is bound first, TCP
 * takes the same port, and both are retried on a new one if TCP finds it taken).
 * Serials persist under `${dataDir}/dns/` (serial.ts); when a start or `reload` changes a zone's
 * serial, the secondaries get a NOTIFY.
 *
 * UDP is answered by `udpThreads` threads (default: one per core but one, from 1 to 2): the main
 * thread and worker threads, each with its own socket on the one port (threads.ts). TCP,
 * transfers, reloads and NOTIFY stay on the main thread.
 */
import type * as dgram from "node:dgram";
import type * as net from "node:net";
import { isIP } from "node:net";
import type { Worker } from "node:worker_threads";
import type { Logger } from "pino";
import { ConfigError, type ConfigProblem, NAMESPACE } from "../config/errors";
import type { MailConfig } from "../config/schema";
import { createLogger } from "../lib/log";
import type { Listener, RunningService, StartOptions } from "../lib/service";
import { Engine, type EngineStats, STAT_NAMES, STATS_SLOT_BYTES, statsOf, statsSlot } from "./engine";
import { Forwarder, type HostPort, parseHostPort } from "./forward";
import { Notifier, type NotifyResult } from "./notify";
import { rateLimitTable } from "./ratelimit";
import { assignSerials } from "./serial";
import { createTcpServer, listenTcp } from "./tcp";
import { defaultUdpThreads, type EngineSpec, UdpThreads } from "./threads";
import { bindUdp, createUdpSocket } from "./udp";
import { buildZones, soaOf, type Zone } from "./zone";

export type { Zone, ZoneRecord } from "./zone";
export { buildZones, renderZone } from "./zone";

export interface DnsStartOptions extends StartOptions {
  /** RFC 7766 idle timeout for TCP connections (default 30 s, BIND's tcp-idle-timeout). */
  tcpIdleTimeoutMs?: number;
  /** First NOTIFY retry interval (doubling) and number of tries (default 2 s, 5). */
  notifyRetryMs?: number;
  notifyAttempts?: number;
  /** Per-upstream timeout when forwarding (default 2 s). */
  forwardTimeoutMs?: number;
  /** Clock for serials (tests). */
  now?: () => Date;
  /**
   * Threads answering UDP, the main thread included (default: the stack's `dns.threads`, else
   * threads.ts `defaultUdpThreads`: one per core but one, from 1 to 2).
   */
  udpThreads?: number;
  /** Each UDP worker thread as it starts, with its slot (1, 2, ...): tests use it to stop one. */
  onUdpWorker?: (worker: Worker, slot: number) => void;
  /** First delay before a stopped UDP thread is started again (default 100 ms, doubling). */
  udpRestartDelayMs?: number;
  /** Restarts of one UDP thread within a minute before it is left stopped (default 5). */
  udpMaxRestarts?: number;
}

/** Plain data (it is logged as is): the NOTIFY round it starts is `DnsService.notified`. */
export interface ReloadResult {
  /** Zone origins whose serial changed. */
  changed: string[];
  /** The new serial of each changed zone. */
  serials: Record<string, number>;
}

export interface DnsService extends RunningService {
  name: "dns";
  /** The zones being served, with their serials. */
  zones(): Zone[];
  /** Rebuilds the zones from a new config (same listeners); bumps serials and notifies as needed. */
  reload(config: MailConfig): Promise<ReloadResult>;
  /**
   * The latest NOTIFY round: the one started at startup, or by the last reload that changed a
   * serial (empty when no serial changed).
   */
  readonly notified: Promise<NotifyResult[]>;
  /** Counters of every thread together. */
  readonly stats: EngineStats;
  /** Counters per UDP thread: the main thread's first (it also counts TCP), then each worker's. */
  threadStats(): EngineStats[];
  /** Threads answering UDP right now, the main thread included. */
  readonly udpThreads: number;
}

/** `dns.secondaries` and `dns.upstream` as endpoints, with key-path errors for bad entries. */
export function dnsPeers(config: MailConfig): { secondaries: HostPort[]; upstream: string[] } {
  const problems: ConfigProblem[] = [];
  const parse = (key: "secondaries" | "upstream") =>
    config.dns[key].map((s, i) => {
      const hp = parseHostPort(s);
      if (!hp) problems.push({ path: `${NAMESPACE}:dns.${key}[${i}]`, message: `"${s}" is not "ip" or "ip:port"` });
      return hp;
    });
  const secondaries = parse("secondaries").filter((s): s is HostPort => s !== null);
  // Forwarding to ourselves would loop until every socket is used up.
  const self = config.listen.dns;
  parse("upstream").forEach((u, i) => {
    if (!u || !self || self.port === 0 || u.port !== self.port) return;
    if (u.address === self.address || self.address === "0.0.0.0" || self.address === "::")
      problems.push({
        path: `${NAMESPACE}:dns.upstream[${i}]`,
        message: `"${config.dns.upstream[i]}" is this DNS server itself (listen.dns)`,
      });
  });
  if (problems.length > 0) throw new ConfigError(problems);
  return { secondaries, upstream: config.dns.upstream };
}

const BIND_TRIES = 20;

/** UDP threads: the start option, else the stack's `dns.threads`, else the default. */
function udpThreadCount(config: MailConfig, opts: DnsStartOptions): number {
  const n = opts.udpThreads ?? config.dns.threads ?? defaultUdpThreads();
  if (!Number.isInteger(n) || n < 1 || n > 64) {
    throw new ConfigError([{ path: `${NAMESPACE}:dns.threads`, message: `${n} is not a whole number of threads from 1 to 64` }]);
  }
  return n;
}

export async function startDns(config: MailConfig, opts: DnsStartOptions = {}): Promise<DnsService> {
  const log: Logger = opts.log ?? createLogger("dns");
  const now = opts.now ?? (() => new Date());
  const threads = udpThreadCount(config, opts);
  let { secondaries, upstream } = dnsPeers(config);
  const initial = await assignSerials(config.dataDir, buildZones(config), now());
  let zones = initial.zones;

  // Shared by every thread's engine: the rate limiter's buckets and the counters (a slot each).
  const rrlTable = rateLimitTable();
  const statsBuffer = new SharedArrayBuffer(threads * STATS_SLOT_BYTES);
  const counters = (slot: number) => statsSlot(statsBuffer, slot);
  const mainCounters = counters(0);

  const specOf = (c: MailConfig, peers: { secondaries: HostPort[]; upstream: string[] }): EngineSpec => ({
    trustedNetworks: [...c.trustedNetworks],
    secondaries: peers.secondaries,
    upstream: [...peers.upstream],
    forwardTimeoutMs: opts.forwardTimeoutMs ?? 2000,
    rateLimit: c.dns.rateLimit,
  });
  let spec = specOf(config, { secondaries, upstream });
  const makeEngine = (z: Zone[], sp: EngineSpec) =>
    new Engine(z, {
      log,
      trustedNetworks: sp.trustedNetworks,
      secondaries: sp.secondaries,
      forwarder: new Forwarder(sp.upstream, sp.forwardTimeoutMs),
      rateLimit: sp.rateLimit,
      rateLimitTable: rrlTable,
      counters: mainCounters,
      onResponse: (msg, from) => notifier.onResponse(msg, from),
    });
  let engine = makeEngine(zones, spec);
  let handler = engine.handle.bind(engine);
  const handle = () => handler;

  const endpoint = config.listen.dns;
  const sockets: dgram.Socket[] = [];

  // NOTIFY goes out from the server socket when the family matches (the secondary knows that
  // address as its primary), else from a socket of the right family. The acknowledgement may
  // reach any thread's socket; the workers pass it on.
  const side = new Map<4 | 6, dgram.Socket>();
  const sendNotify = (msg: Buffer, to: HostPort) => {
    const fam = isIP(to.address) === 6 ? 6 : 4;
    let sock = sockets.find((s) => (s.address().family === "IPv6" ? 6 : 4) === fam);
    if (!sock) {
      sock = side.get(fam);
      if (!sock) {
        sock = createUdpSocket(fam === 6 ? "::" : "0.0.0.0", handle, log);
        sock.bind(0);
        side.set(fam, sock);
      }
    }
    sock.send(msg, to.port, to.address);
  };
  const notifier = new Notifier(sendNotify, log, { retryMs: opts.notifyRetryMs ?? 2000, attempts: opts.notifyAttempts ?? 5 });

  let tcp: { server: net.Server; sockets: Set<net.Socket> } | null = null;
  let pool: UdpThreads | null = null;
  const listeners: Listener[] = [];

  if (endpoint) {
    let lastErr: unknown;
    // With several threads every UDP socket on the port has SO_REUSEPORT. The TCP listener has
    // not: binding it is what tells this server from another one on the same port (the kernel
    // would let a second reuse-port UDP socket of the same user join the first one's group).
    for (let attempt = 0; attempt < (endpoint.port === 0 ? BIND_TRIES : 1); attempt++) {
      const udp = createUdpSocket(endpoint.address, handle, log, threads > 1);
      const t = createTcpServer(
        handle,
        {
          idleTimeoutMs: opts.tcpIdleTimeoutMs ?? 30_000,
          maxConnections: config.limits.maxConnections,
          connectionsPerClient: config.limits.connectionsPerClient,
        },
        log,
      );
      try {
        const port = await bindUdp(udp, endpoint.address, endpoint.port);
        await listenTcp(t.server, endpoint.address, port);
        sockets.push(udp);
        tcp = t;
        listeners.push({ name: "dns", address: endpoint.address, port, protocol: "tcp+udp" });
        break;
      } catch (err) {
        lastErr = err;
        try {
          udp.close();
        } catch {
          // never bound
        }
        t.server.close();
        if ((err as NodeJS.ErrnoException).code !== "EADDRINUSE") break;
      }
    }
    if (!tcp) {
      const e = lastErr as NodeJS.ErrnoException;
      throw new Error(`DNS cannot listen on ${endpoint.address} port ${endpoint.port} (listen.dns): ${e?.message ?? e}`);
    }
    if (threads > 1) {
      pool = new UdpThreads({
        workers: threads - 1,
        address: endpoint.address,
        port: listeners[0]!.port,
        log,
        rateLimitTable: rrlTable,
        stats: statsBuffer,
        current: () => ({ zones, spec }),
        onResponse: (msg, from) => notifier.onResponse(msg, from),
        ...(opts.onUdpWorker ? { onWorker: opts.onUdpWorker } : {}),
        ...(opts.udpRestartDelayMs !== undefined ? { restartDelayMs: opts.udpRestartDelayMs } : {}),
        ...(opts.udpMaxRestarts !== undefined ? { maxRestarts: opts.udpMaxRestarts } : {}),
      });
      try {
        await pool.start();
      } catch (err) {
        const t = tcp;
        await Promise.all([new Promise<void>((r) => sockets[0]!.close(() => r())), new Promise<void>((r) => t.server.close(() => r()))]);
        throw new Error(`DNS cannot start its UDP threads on ${endpoint.address} port ${listeners[0]!.port}: ${(err as Error).message}`);
      }
    }
  } else {
    log.info("listen.dns is off: the DNS server is not started");
  }

  const notifyChanged = (changed: string[]): Promise<NotifyResult[]> => {
    if (changed.length === 0 || secondaries.length === 0 || !endpoint) return Promise.resolve([]);
    return Promise.all(
      changed.map((origin) => {
        const z = zones.find((x) => x.origin === origin)!;
        return notifier.notify(origin, soaOf(z), secondaries);
      }),
    ).then((r) => r.flat());
  };

  for (const z of zones) log.info({ zone: z.origin, serial: soaOf(z).data.serial, records: z.records.length }, "zone loaded");
  if (listeners[0])
    log.info({ address: listeners[0].address, port: listeners[0].port, udpThreads: threads }, "DNS listening (UDP and TCP)");
  let notified = notifyChanged(initial.changed);

  let reloading: Promise<unknown> = Promise.resolve();
  const doReload = async (next: MailConfig): Promise<ReloadResult> => {
    const peers = dnsPeers(next);
    const built = await assignSerials(next.dataDir, buildZones(next), now());
    zones = built.zones;
    secondaries = peers.secondaries;
    upstream = peers.upstream;
    spec = specOf(next, peers);
    engine = makeEngine(zones, spec);
    handler = engine.handle.bind(engine);
    // Every thread answers from the new zones before the reload counts as done.
    await pool?.reload(zones, spec);
    const serials: Record<string, number> = {};
    for (const origin of built.changed) {
      serials[origin] = soaOf(zones.find((z) => z.origin === origin)!).data.serial;
      log.info({ zone: origin, serial: serials[origin] }, "zone changed");
    }
    if (built.changed.length > 0) notified = notifyChanged(built.changed);
    return { changed: built.changed, serials };
  };

  let closing: Promise<void> | null = null;
  const service: DnsService = {
    name: "dns",
    listeners,
    get notified() {
      return notified;
    },
    get stats() {
      const sum = new Float64Array(STAT_NAMES.length);
      for (let i = 0; i < threads; i++) {
        const c = counters(i);
        for (let k = 0; k < c.length; k++) sum[k] = sum[k]! + c[k]!;
      }
      return statsOf(sum);
    },
    threadStats: () => Array.from({ length: threads }, (_, i) => statsOf(counters(i))),
    get udpThreads() {
      return sockets.length === 0 ? 0 : 1 + (pool?.running ?? 0);
    },
    zones: () => zones,
    reload(next: MailConfig): Promise<ReloadResult> {
      // One reload at a time: each reads and rewrites the serial file.
      const run = reloading.then(() => doReload(next));
      reloading = run.catch(() => {});
      return run;
    },
    close() {
      closing ??= (async () => {
        notifier.close();
        await pool?.close();
        const closeUdp = (s: dgram.Socket) => new Promise<void>((r) => s.close(() => r()));
        await Promise.all([...sockets, ...side.values()].map((s) => closeUdp(s).catch(() => {})));
        if (tcp) {
          const t = tcp;
          const done = new Promise<void>((r) => t.server.close(() => r()));
          for (const s of t.sockets) s.destroy();
          await done;
        }
      })();
      return closing;
    },
  };
  return service;
}
