/**
 * A test's own copy of the dev stack: a temporary data directory, and only the listeners the
 * test asks for, on ephemeral loopback ports (every other endpoint switched off).
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { loadStack } from "../../config/load";
import type { EndpointName, MailConfig } from "../../config/schema";

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

const ENDPOINTS: EndpointName[] = ["smtp", "submission", "smtps", "pop3", "pop3s", "imap", "imaps", "dns"];

export function testStack(opts: TestStackOptions): { config: MailConfig; dataDir: string } {
  const dataDir = opts.dataDir ?? mkdtempSync(path.join(tmpdir(), opts.prefix ?? "mailstack-test-"));
  const listen: Record<string, unknown> = { address: "127.0.0.1" };
  for (const e of ENDPOINTS) listen[e] = opts.listen.includes(e) ? 0 : false;
  const overrides: Record<string, unknown> = {
    "mailstack:dataDir": dataDir,
    "mailstack:listen": listen,
    "mailstack:limits": { authFailureDelay: 0.05, ...(opts.limits ?? {}) },
  };
  if (opts.trustedNetworks) overrides["mailstack:trustedNetworks"] = opts.trustedNetworks;
  return { config: loadStack("dev", overrides), dataDir };
}
