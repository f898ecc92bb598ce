/**
 * Users and password checks. Hashes only: argon2id, or `{SHA512-CRYPT}` from Dovecot. An unknown
 * user is checked against a dummy hash of the same kind, and every failure waits the same delay,
 * so the answer and its timing do not tell which part was wrong.
 */
import { availableParallelism } from "node:os";
import { hash as argonHash, hashSync as argonHashSync, verify as argonVerify } from "@node-rs/argon2";
import type { MailConfig } from "../config/schema";
import { FailureThrottle } from "../lib/throttle";
import { verifySha512Crypt } from "./sha512crypt";
import type { Authenticator, AuthResult } from "./types";

/** Parameters of the hashes we make (OWASP's argon2id minimum: m=19 MiB, t=2, p=1). */
export const ARGON2_OPTIONS = { algorithm: 2 as const, memoryCost: 19456, timeCost: 2, parallelism: 1 };

/** A fixed argon2id hash of a random string, used for unknown users. */
const DUMMY_HASH = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$O6bqsQ4AAhOmP1RSyYeRv3NEQDIhwoHPpa2a+KExbJ4";

export function hashPassword(password: string): Promise<string> {
  return argonHash(password, ARGON2_OPTIONS);
}

/**
 * Each argon2id check holds its memory cost (19 MiB) while it runs. At most one per core runs at
 * once (more would not finish sooner: the work is CPU-bound); the rest wait their turn, so a burst
 * of logins costs a bounded amount of memory.
 */
const ARGON2_SLOTS = Math.max(1, availableParallelism());
let argonRunning = 0;
let argonPeak = 0;
const argonWaiting: Array<() => void> = [];

/** How many argon2id checks may run at once, and the most that ever did (for tests and health). */
export function argon2Concurrency(): { slots: number; peak: number } {
  return { slots: ARGON2_SLOTS, peak: argonPeak };
}

async function argonVerifyBounded(hash: string, password: string): Promise<boolean> {
  if (argonRunning >= ARGON2_SLOTS) await new Promise<void>((resolve) => argonWaiting.push(resolve));
  else argonRunning++;
  argonPeak = Math.max(argonPeak, argonRunning);
  try {
    return await argonVerify(hash, password);
  } finally {
    // Hand the slot straight to the next waiter, or give it back.
    const next = argonWaiting.shift();
    if (next) next();
    else argonRunning--;
  }
}

export async function verifyPassword(password: string, hash: string): Promise<boolean> {
  try {
    if (hash.startsWith("$argon2")) return await argonVerifyBounded(hash, password);
    if (/^(\{SHA512-CRYPT\})?\$6\$/.test(hash)) return verifySha512Crypt(password, hash);
  } catch {
    return false;
  }
  return false;
}

export class UserDb implements Authenticator {
  private readonly hashes = new Map<string, string>();
  private readonly throttle: FailureThrottle;
  private readonly delayMs: number;

  constructor(private readonly config: MailConfig) {
    for (const u of config.users) {
      // A plaintext password (only from a decrypted Pulumi secret) is hashed once, in memory.
      const h = u.passwordHash ?? (u.password !== undefined ? argonHashSync(u.password, ARGON2_OPTIONS) : undefined);
      if (h) this.hashes.set(u.name, h);
    }
    this.throttle = new FailureThrottle(config.limits.authFailures);
    this.delayMs = config.limits.authFailureDelay * 1000;
  }

  /** The canonical user name for a login (`lx`, `LX`, `lx@lx.com`), or null. */
  canonical(login: string): string | null {
    let name = login.trim().toLowerCase();
    const at = name.lastIndexOf("@");
    if (at >= 0) {
      if (!this.config.destinations.includes(name.slice(at + 1))) return null;
      name = name.slice(0, at);
    }
    return this.hashes.has(name) ? name : null;
  }

  exists(user: string): boolean {
    return this.hashes.has(user.toLowerCase());
  }

  async authenticate(login: string, password: string, clientAddress: string): Promise<AuthResult> {
    if (this.throttle.isBlocked(clientAddress)) {
      await delay(this.delayMs);
      return { ok: false, reason: "throttled" };
    }
    const user = this.canonical(login);
    const ok = await verifyPassword(password, user ? this.hashes.get(user)! : DUMMY_HASH);
    if (ok && user) {
      this.throttle.succeed(clientAddress);
      return { ok: true, user };
    }
    this.throttle.fail(clientAddress);
    await delay(this.delayMs);
    return { ok: false, reason: "invalid" };
  }
}

function delay(ms: number): Promise<void> {
  return ms > 0 ? new Promise((r) => setTimeout(r, ms)) : Promise.resolve();
}
