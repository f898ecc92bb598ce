/**
 * Loads a stack in a worker thread that exits once it has answered. The schema library (zod) and
 * the YAML parser are loaded, used once and freed with the worker's heap, so a service that runs
 * for months does not carry them: about 5 MB less per service process (the worker's start costs
 * about 80 ms, once). The config crosses as plain data; a ConfigError comes back whole, with every
 * key path.
 *
 * From TypeScript sources (ts-node: `npm start`, the tests) a worker would have to compile the
 * schema again, and that process carries the compiler anyway, so the stack is loaded in-process.
 */
import { Worker } from "node:worker_threads";
import { ConfigError, type ConfigProblem } from "./errors";
import type { MailConfig } from "./schema";

type Reply = { ok: true; config: MailConfig } | { ok: false; message: string; problems?: ConfigProblem[]; source?: string };

const WORKER = `
const { parentPort, workerData } = require("node:worker_threads");
try {
  parentPort.postMessage({ ok: true, config: require(workerData.loader).loadStack(workerData.stack) });
} catch (err) {
  parentPort.postMessage(
    err && err.name === "ConfigError"
      ? { ok: false, message: err.message, problems: err.problems, source: err.source }
      : { ok: false, message: err && err.message ? err.message : String(err) },
  );
}`;

/** `loadStack` (config/load.ts) without keeping the schema in this process. */
export function loadStackIsolated(stackOrFile: string): Promise<MailConfig> {
  const loader = require.resolve("./load");
  if (!loader.endsWith(".js")) {
    return new Promise((resolve) => resolve((require("./load") as typeof import("./load")).loadStack(stackOrFile)));
  }
  return new Promise((resolve, reject) => {
    let reply: Reply | undefined;
    const worker = new Worker(WORKER, { eval: true, workerData: { loader, stack: stackOrFile } });
    worker.once("message", (m: Reply) => {
      reply = m;
    });
    worker.once("error", (err) => {
      reply ??= { ok: false, message: `config loader failed: ${err.message}` };
    });
    // Settle when the worker has gone, so its heap is already given back.
    worker.once("exit", (code) => {
      if (!reply) reject(new Error(`config loader exited with code ${code} and no answer`));
      else if (reply.ok) resolve(reply.config);
      else reject(reply.problems ? new ConfigError(reply.problems, reply.source) : new Error(reply.message));
    });
  });
}
