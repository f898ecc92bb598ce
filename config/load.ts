/** Reads a stack file from disk and hands it to the schema. The only place that touches stacks/. */
import { createPrivateKey, X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import * as path from "node:path";
import { ConfigError, type ConfigProblem, type MailConfig, parseConfig } from "./schema";

export const REPO_ROOT = path.resolve(__dirname, "..");
export const STACKS_DIR = path.join(REPO_ROOT, "stacks");

export function stackFile(stack: string): string {
  if (!/^[A-Za-z0-9_.-]+$/.test(stack)) throw new Error(`bad stack name "${stack}"`);
  return path.join(STACKS_DIR, `Pulumi.${stack}.yaml`);
}

/** The raw `config:` map of a stack file. */
export function readStackConfig(file: string): Record<string, unknown> {
  // Rendered configs (what the containers get) are JSON; stack files are YAML. The YAML parser
  // is loaded only when needed: it costs every service process about 10 MB.
  const text = readFileSync(file, "utf8");
  const parse = (t: string): unknown => (file.endsWith(".json") ? JSON.parse(t) : (require("yaml") as typeof import("yaml")).parse(t));
  const doc = parse(text) as Record<string, unknown> | null;
  if (doc && typeof doc === "object") {
    if (doc.config && typeof doc.config === "object") return doc.config as Record<string, unknown>;
    // A rendered config file (what the containers get) holds the `mailstack:` keys at the top.
    if (Object.keys(doc).some((k) => k.startsWith("mailstack:"))) return doc;
  }
  throw new ConfigError([{ path: "config", message: "the stack file has no config: map" }], file);
}

/**
 * Loads and validates a stack by name (`dev`) or by file path. A relative dataDir is taken
 * relative to the repository root, so `npm start` and the tests agree where mail lives.
 */
export function loadStack(stackOrFile: string, overrides: Partial<Record<string, unknown>> = {}): MailConfig {
  const file = /[/]|\.(ya?ml|json)$/.test(stackOrFile) ? stackOrFile : stackFile(stackOrFile);
  const raw = { ...readStackConfig(file), ...overrides };
  const rel = path.relative(process.cwd(), file);
  const source = rel && !rel.startsWith("..") ? rel : file;
  const config = parseConfig(raw, source);
  config.dataDir = path.resolve(REPO_ROOT, config.dataDir);
  const problems = checkTlsMaterial(config);
  if (problems.length > 0) throw new ConfigError(problems, source);
  return config;
}

/** The certificate and key must exist, parse as PEM, and belong together. */
export function checkTlsMaterial(config: MailConfig): ConfigProblem[] {
  const t = config.tls;
  const problems: ConfigProblem[] = [];
  const read = (key: "certFile" | "keyFile", file: string): string | undefined => {
    try {
      return readFileSync(file, "utf8");
    } catch (err) {
      problems.push({ path: `mailstack:tls.${key}`, message: `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? err}` });
      return undefined;
    }
  };
  const cert = typeof t.cert === "string" ? t.cert : t.certFile ? read("certFile", t.certFile) : undefined;
  const key = typeof t.key === "string" ? t.key : t.keyFile ? read("keyFile", t.keyFile) : undefined;
  const certKey = t.cert !== undefined ? "cert" : "certFile";
  const keyKey = t.key !== undefined ? "key" : "keyFile";
  let x509: X509Certificate | undefined;
  if (cert !== undefined) {
    try {
      x509 = new X509Certificate(cert);
    } catch {
      problems.push({ path: `mailstack:tls.${certKey}`, message: "is not a PEM certificate" });
    }
  }
  if (key !== undefined) {
    try {
      const pk = createPrivateKey(key);
      if (x509 && !x509.checkPrivateKey(pk)) problems.push({ path: `mailstack:tls.${keyKey}`, message: "does not match the certificate" });
    } catch {
      problems.push({ path: `mailstack:tls.${keyKey}`, message: "is not a PEM private key" });
    }
  }
  return problems;
}
