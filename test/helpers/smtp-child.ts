/**
 * Runs the SMTP server in a process of its own, for the crash and fault tests:
 *   node -r ts-node/register/transpile-only test/helpers/smtp-child.ts <dataDir> [overrides JSON]
 * Prints `{"port":N,"pid":P}` on stdout once it listens (127.0.0.1, ephemeral port, no TLS).
 */
import { silentLogger } from "../../lib/log";
import { startSmtp } from "../../smtp";
import { testConfig } from "./smtp";

async function main() {
  const [dataDir, overrides] = process.argv.slice(2);
  if (!dataDir) throw new Error("usage: smtp-child.ts <dataDir> [overrides]");
  const config = testConfig(JSON.parse(overrides ?? "{}"), dataDir);
  config.listen.submission = null;
  config.listen.smtps = null;
  const service = await startSmtp(config, { log: silentLogger, tls: false });
  process.stdout.write(`${JSON.stringify({ port: service.listeners[0]!.port, pid: process.pid })}\n`);
  process.on("SIGTERM", () => void service.close().then(() => process.exit(0)));
}

main().catch((err) => {
  process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
