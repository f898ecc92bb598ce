/**
 * A UDP thread of the DNS server (see threads.ts): its own socket on the server's address and
 * port (SO_REUSEPORT) and its own engine over the zones the main thread sends. It loads the
 * answer engine and the UDP transport only (no config schema, no logger, no TCP, no serials):
 * logging, NOTIFY acknowledgements and everything else stateful go to the main thread as messages.
 */
import { parentPort, workerData } from "node:worker_threads";
import { type DnsLog, Engine, statsSlot } from "./engine";
import { Forwarder } from "./forward";
import type { EngineSpec, FromWorker, LogLevel, ToWorker, WorkerInit } from "./threads";
import { bindUdp, createUdpSocket } from "./udp";
import type { Zone } from "./zone";

const init = workerData as WorkerInit;
const parent = parentPort!;
const post = (m: FromWorker) => parent.postMessage(m);

const LEVELS: Record<LogLevel, number> = { debug: 20, info: 30, warn: 40, error: 50 };
const relay =
  (level: LogLevel) =>
  (obj: object, msg?: string): void => {
    if (LEVELS[level] < init.logLevel) return;
    const m = msg === undefined ? {} : { msg };
    try {
      post({ type: "log", level, obj, ...m });
    } catch {
      // Something in `obj` cannot be cloned: its text will do.
      post({ type: "log", level, obj: { detail: String(Object.entries(obj).map(([k, v]) => `${k}=${v}`)) }, ...m });
    }
  };
const log: DnsLog = { debug: relay("debug"), info: relay("info"), warn: relay("warn"), error: relay("error") };

const counters = statsSlot(init.stats, init.statsSlot);

function makeEngine(zones: Zone[], spec: EngineSpec): Engine {
  return new Engine(zones, {
    log,
    trustedNetworks: spec.trustedNetworks,
    secondaries: spec.secondaries,
    forwarder: new Forwarder(spec.upstream, spec.forwardTimeoutMs),
    rateLimit: spec.rateLimit,
    rateLimitTable: init.rateLimitTable,
    counters,
    onResponse: (msg, from) => post({ type: "response", msg, from }),
  });
}

let engine = makeEngine(init.zones, init.spec);
let handler = engine.handle.bind(engine);
const sock = createUdpSocket(init.address, () => handler, log, true);

parent.on("message", (m: ToWorker) => {
  if (m.type === "reload") {
    engine = makeEngine(m.zones, m.spec);
    handler = engine.handle.bind(engine);
    post({ type: "reloaded", seq: m.seq });
  }
});

bindUdp(sock, init.address, init.port).then(
  (port) => post({ type: "ready", port }),
  (err: NodeJS.ErrnoException) => {
    post({ type: "failed", message: err.message, ...(err.code ? { code: err.code } : {}) });
    try {
      sock.close();
    } catch {
      // never bound
    }
    parent.close();
  },
);
