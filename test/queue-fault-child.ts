/**
 * Child process for the queue fault test: runs the queue manager on the config given in
 * MAILSTACK_TEST_CONFIG (JSON) until it is killed. Prints "ready" once started.
 */
import pino from "pino";
import type { MailConfig } from "../config/schema";
import { startQueue } from "../queue/index";

const config = JSON.parse(process.env.MAILSTACK_TEST_CONFIG ?? "{}") as MailConfig;
const log = process.env.MAILSTACK_TEST_LOG
  ? pino({ level: "info" }, pino.destination({ dest: process.env.MAILSTACK_TEST_LOG, sync: true }))
  : pino({ level: "silent" });
startQueue(config, { log }).then(
  (q) => {
    process.stdout.write("ready\n");
    process.on("SIGTERM", () => void q.close().then(() => process.exit(0)));
  },
  (err: unknown) => {
    process.stderr.write(`queue failed to start: ${(err as Error).stack}\n`);
    process.exit(1);
  },
);
