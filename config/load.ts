/** Reads a stack file from disk and hands it to the schema. The only place that touches stacks/. */
import { readFileSync } from "node:fs";
import * as path from "node:path";
import { parse as parseYaml } from "yaml";
import { ConfigError, type MailConfig, parseConfig } from "./schema";

export const REPO_ROOT = path.resolve(__dirname, "..");
export const STACKS_DIR = path.join(REPO_ROOT, "stacks");

export function stackFile(stack: string): string {
  if (!/^[A-Za-z0-9_.-]+$/.test(stack)) throw new Error(`bad stack name "${stack}"`);
  return path.join(STACKS_DIR, `Pulumi.${stack}.yaml`);
}

/** The raw `config:` map of a stack file. */
export function readStackConfig(file: string): Record<string, unknown> {
  const doc = parseYaml(readFileSync(file, "utf8")) as Record<string, unknown> | null;
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
  const config = parseConfig(raw, path.relative(process.cwd(), file) || file);
  config.dataDir = path.resolve(REPO_ROOT, config.dataDir);
  return config;
}
