/**
 * Structured JSON logs (pino). One logger per service, with `service` bound. Secrets never go
 * in: password fields are redacted by path as a second guard.
 */
import pino, { type Logger } from "pino";

export function createLogger(service: string, level = process.env.MAILSTACK_LOG_LEVEL ?? "info"): Logger {
  return pino({
    level,
    base: { service },
    redact: { paths: ["password", "*.password", "pass", "*.pass", "auth.password"], censor: "[redacted]" },
    timestamp: pino.stdTimeFunctions.isoTime,
  });
}

/** A logger that discards everything (tests that do not read logs). */
export const silentLogger: Logger = pino({ level: "silent" });
