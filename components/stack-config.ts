/**
 * Reads the stack's `mailstack:` config from the Pulumi engine, once, when called (never at
 * import time), into two views of one validated MailConfig:
 * - `config`: plain, with every password and key removed. It decides the resource graph.
 * - `secretConfig`: complete, as a Pulumi secret (built from `requireSecretObject`). It is the
 *   only way passwords, TLS keys and the SSH key reach a resource, so they stay secret in state.
 */
import * as pulumi from "@pulumi/pulumi";
import { type MailConfig, NAMESPACE, parseConfig } from "../config/schema";

/** Keys whose values may hold secrets: read through `getSecretObject`/`requireSecretObject`. */
export const SECRET_BEARING_KEYS = ["users", "tls", "queue", "deploy"] as const;

/** Keys the schema types as strings: never JSON-decoded (a domain like `123.com` stays a string). */
const STRING_KEYS = new Set(["domain", "hostname", "myorigin", "publicAddress", "publicAddress6", "admin", "dataDir"]);

/**
 * Pulumi hands config over as strings (objects as JSON). This turns the `mailstack:` entries
 * back into values, keyed `mailstack:<key>` as in the stack file.
 */
export function decodePulumiConfig(all: Record<string, string>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(all)) {
    if (!key.startsWith(`${NAMESPACE}:`)) continue;
    const name = key.slice(NAMESPACE.length + 1);
    out[key] = STRING_KEYS.has(name) ? value : decodeValue(value);
  }
  return out;
}

function decodeValue(value: string): unknown {
  try {
    return JSON.parse(value);
  } catch {
    return value;
  }
}

/**
 * The deployment's defaults on top of the stack's own values. With host networking a service
 * binds what its config says, and the schema's default `listen.address` (0.0.0.0) would put it on
 * every address of the host, private and management networks included. So when the stack leaves
 * `listen.address` unset, the deployment binds the stack's `publicAddress`. An endpoint that names
 * its own address keeps it; a stack that sets `listen.address` (0.0.0.0 too) keeps that. Pure.
 */
export function withDeploymentDefaults(raw: Record<string, unknown>): Record<string, unknown> {
  const key = `${NAMESPACE}:listen`;
  const publicAddress = raw[`${NAMESPACE}:publicAddress`];
  const listen = raw[key];
  if (typeof publicAddress !== "string") return raw;
  if (listen === undefined) return { ...raw, [key]: { address: publicAddress } };
  if (typeof listen !== "object" || listen === null || Array.isArray(listen) || "address" in listen) return raw;
  return { ...raw, [key]: { ...listen, address: publicAddress } };
}

/** A copy without any plaintext password or key: users keep their hashes, nothing else secret. */
export function redactSecrets(config: MailConfig): MailConfig {
  const { sshPrivateKey: _key, ...deploy } = config.deploy;
  const { key: _tlsKey, ...tls } = config.tls;
  const out: MailConfig = {
    ...config,
    users: config.users.map(({ password: _pw, ...u }) => ({ ...u })),
    tls,
    deploy,
    queue: { ...config.queue },
  };
  if (config.queue.relayhost) {
    const { password: _rp, ...relayhost } = config.queue.relayhost;
    out.queue.relayhost = relayhost;
  }
  return out;
}

export interface StackConfig {
  stack: string;
  /** Plain and redacted: decides which resources exist. */
  config: MailConfig;
  /** Complete, secret: rendered into the containers' config files. */
  secretConfig: pulumi.Output<MailConfig>;
  /** The SSH private key (`deploy.sshPrivateKey`), secret; undefined to use the SSH agent. */
  sshPrivateKey: pulumi.Output<string> | undefined;
}

export function readStackConfig(): StackConfig {
  const stack = pulumi.getStack();
  const raw = withDeploymentDefaults(decodePulumiConfig(pulumi.runtime.allConfig()));
  const source = `stack ${stack}`;
  // Parsed here, in full, so that bad config fails the preview with every key path at once.
  const full = parseConfig(raw, source);
  const cfg = new pulumi.Config(NAMESPACE);
  const secretParts: Record<string, pulumi.Output<unknown>> = { users: cfg.requireSecretObject<unknown>("users") };
  for (const key of SECRET_BEARING_KEYS) {
    if (key === "users") continue;
    const value = cfg.getSecretObject<unknown>(key);
    if (value !== undefined) secretParts[key] = value;
  }
  const secretConfig = pulumi.all(secretParts).apply((parts) => {
    const merged: Record<string, unknown> = { ...raw };
    for (const [k, v] of Object.entries(parts)) merged[`${NAMESPACE}:${k}`] = v;
    return parseConfig(merged, source);
  });
  const sshPrivateKey =
    full.deploy.sshPrivateKey !== undefined ? pulumi.secret(secretConfig.apply((c) => c.deploy.sshPrivateKey ?? "")) : undefined;
  return { stack, config: redactSecrets(full), secretConfig: pulumi.secret(secretConfig), sshPrivateKey };
}
