/**
 * A test's own copy of the dev stack: a temporary data directory, and only the listeners the
 * test asks for, on ephemeral loopback ports (every other endpoint switched off).
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { loadStack } from "../../config/load";
import type { EndpointName, MailConfig } from "../../config/schema";
import { silentLogger } from "../../lib/log";
import type { RunningService, StartService } from "../../lib/service";

export interface TestStackOptions {
  /** Endpoints to listen on (port 0); the rest are off. */
  listen: EndpointName[];
  trustedNetworks?: string[];
  /** Merged over `authFailureDelay: 0.05`, so failed logins do not slow the tests down. */
  limits?: Record<string, unknown>;
  dataDir?: string;
  /** Prefix of the temporary data directory's name. */
  prefix?: string;
}

/** What a protocol test may change about its stack (the listeners and name prefix are the helper's). */
export type EnvOptions = Pick<TestStackOptions, "trustedNetworks" | "limits" | "dataDir">;

/** The dev stack's passwords (stacks/Pulumi.dev.yaml stores only their hashes). */
export const PASSWORDS: Record<string, string> = { lx: "lx-password", lei: "lei-password" };

const ENDPOINTS: EndpointName[] = ["smtp", "submission", "smtps", "pop3", "pop3s", "imap", "imaps", "dns"];

/**
 * A `mailstack:listen` value: every endpoint on `address`, each at its port in `ports`, the
 * others at `rest` (0: an ephemeral port; false: off).
 */
export function listenAll(
  address: string,
  ports: Partial<Record<EndpointName, number | false>> = {},
  rest: 0 | false = 0,
): Record<string, unknown> {
  const listen: Record<string, unknown> = { address };
  for (const e of ENDPOINTS) listen[e] = ports[e] ?? rest;
  return listen;
}

export function testStack(opts: TestStackOptions): { config: MailConfig; dataDir: string } {
  const dataDir = opts.dataDir ?? mkdtempSync(path.join(tmpdir(), opts.prefix ?? "mailstack-test-"));
  const overrides: Record<string, unknown> = {
    "mailstack:dataDir": dataDir,
    "mailstack:listen": listenAll("127.0.0.1", Object.fromEntries(opts.listen.map((e) => [e, 0])), false),
    "mailstack:limits": { authFailureDelay: 0.05, ...(opts.limits ?? {}) },
  };
  if (opts.trustedNetworks) overrides["mailstack:trustedNetworks"] = opts.trustedNetworks;
  return { config: loadStack("dev", overrides), dataDir };
}

/** A live server for one protocol on a test stack, with the helpers every protocol test needs. */
export interface ServiceEnv {
  config: MailConfig;
  dataDir: string;
  service: RunningService;
  /** The plaintext listener's port (STARTTLS/STLS) and the implicit-TLS listener's port. */
  port: number;
  tlsPort: number;
  /** PEM of the server certificate (self-signed, kept under dataDir/tls). */
  ca: string;
  caFile: string;
  /** Stops and starts the server again on the same dataDir (new ports). */
  restart(): Promise<void>;
  stop(): Promise<void>;
  /** Stops the server and removes the dataDir. */
  cleanup(): Promise<void>;
}

export async function startServiceEnv(
  start: StartService,
  listeners: [plain: EndpointName, tls: EndpointName],
  opts: Omit<TestStackOptions, "listen">,
): Promise<ServiceEnv> {
  const { config, dataDir } = testStack({ ...opts, listen: listeners });
  let stopped = true;
  const env: ServiceEnv = {
    config,
    dataDir,
    service: undefined as unknown as RunningService,
    port: 0,
    tlsPort: 0,
    ca: "",
    caFile: path.join(dataDir, "tls", "cert.pem"),
    async restart() {
      await env.stop();
      await boot();
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      await env.service.close();
    },
    async cleanup() {
      await env.stop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
  const boot = async () => {
    env.service = await start(config, { log: silentLogger });
    stopped = false;
    env.port = env.service.listeners.find((l) => l.name === listeners[0])!.port;
    env.tlsPort = env.service.listeners.find((l) => l.name === listeners[1])!.port;
  };
  await boot();
  env.ca = readFileSync(env.caFile, "utf8");
  return env;
}
