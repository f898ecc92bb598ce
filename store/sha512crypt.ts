/**
 * SHA-512-crypt (`$6$`, Ulrich Drepper's "Unix crypt using SHA-256 and SHA-512"), verify side,
 * so Dovecot `{SHA512-CRYPT}` users can migrate without a password reset.
 */
import { createHash, timingSafeEqual } from "node:crypto";

const ITOA64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const ROUNDS_DEFAULT = 5000;

function sha512(...parts: Buffer[]): Buffer {
  const h = createHash("sha512");
  for (const p of parts) h.update(p);
  return h.digest();
}

function repeatTo(src: Buffer, length: number): Buffer {
  const out = Buffer.alloc(length);
  for (let i = 0; i < length; i += src.length) src.copy(out, i, 0, Math.min(src.length, length - i));
  return out;
}

/** Computes the full `$6$[rounds=N$]salt$hash` string for a password and a settings prefix. */
export function sha512Crypt(password: string, setting: string): string {
  const m = /^\$6\$(?:rounds=(\d+)\$)?([^$]*)/.exec(setting);
  if (!m) throw new Error("not a $6$ setting");
  const roundsGiven = m[1] !== undefined;
  const rounds = roundsGiven ? Math.min(999_999_999, Math.max(1000, Number(m[1]))) : ROUNDS_DEFAULT;
  const salt = Buffer.from(m[2]!.slice(0, 16));
  const pw = Buffer.from(password);

  const b = sha512(pw, salt, pw);
  const aCtx = createHash("sha512").update(pw).update(salt).update(repeatTo(b, pw.length));
  for (let n = pw.length; n > 0; n >>= 1) aCtx.update(n & 1 ? b : pw);
  const a = aCtx.digest();

  const dp = repeatTo(sha512(...Array(pw.length).fill(pw)), pw.length);
  const ds = repeatTo(sha512(...Array(16 + a[0]!).fill(salt)), salt.length);

  let c = a;
  for (let i = 0; i < rounds; i++) {
    const h = createHash("sha512");
    h.update(i & 1 ? dp : c);
    if (i % 3) h.update(ds);
    if (i % 7) h.update(dp);
    h.update(i & 1 ? c : dp);
    c = h.digest();
  }

  const order = [
    [0, 21, 42],
    [22, 43, 1],
    [44, 2, 23],
    [3, 24, 45],
    [25, 46, 4],
    [47, 5, 26],
    [6, 27, 48],
    [28, 49, 7],
    [50, 8, 29],
    [9, 30, 51],
    [31, 52, 10],
    [53, 11, 32],
    [12, 33, 54],
    [34, 55, 13],
    [56, 14, 35],
    [15, 36, 57],
    [37, 58, 16],
    [59, 17, 38],
    [18, 39, 60],
    [40, 61, 19],
    [62, 20, 41],
  ];
  let out = "";
  const enc = (v: number, n: number) => {
    for (let i = 0; i < n; i++, v >>= 6) out += ITOA64[v & 0x3f];
  };
  for (const [x, y, z] of order) enc((c[x!]! << 16) | (c[y!]! << 8) | c[z!]!, 4);
  enc(c[63]!, 2);
  return `$6$${roundsGiven ? `rounds=${rounds}$` : ""}${salt.toString()}$${out}`;
}

/** Constant-time check of a password against `$6$...` or `{SHA512-CRYPT}$6$...`. */
export function verifySha512Crypt(password: string, hash: string): boolean {
  const h = hash.replace(/^\{SHA512-CRYPT\}/, "");
  let computed: string;
  try {
    computed = sha512Crypt(password, h);
  } catch {
    return false;
  }
  const a = Buffer.from(computed);
  const b = Buffer.from(h);
  return a.length === b.length && timingSafeEqual(a, b);
}
