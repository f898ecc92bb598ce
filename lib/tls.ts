/**
 * The TLS certificate every service uses: the PEM from the stack (`tls.cert`/`tls.key`), the files
 * it names (`tls.certFile`/`tls.keyFile`), or a self-signed certificate for `hostname` made on
 * first start under `<dataDir>/tls/` and kept. Several processes may start at once; the first to
 * publish its pair wins and the others read it.
 */
import { randomBytes } from "node:crypto";
import { promises as fs } from "node:fs";
import * as path from "node:path";
import type { MailConfig } from "../config/schema";

export interface TlsMaterial {
  key: string;
  cert: string;
}

export async function loadTls(config: MailConfig): Promise<TlsMaterial> {
  const t = config.tls;
  if (typeof t.cert === "string" && typeof t.key === "string") return { cert: t.cert, key: t.key };
  if (t.certFile && t.keyFile) {
    const [cert, key] = await Promise.all([fs.readFile(t.certFile, "utf8"), fs.readFile(t.keyFile, "utf8")]);
    return { cert, key };
  }
  return selfSigned(config);
}

/** One generation per data directory and process, however many services ask at once. */
const pending = new Map<string, Promise<TlsMaterial>>();

function selfSigned(config: MailConfig): Promise<TlsMaterial> {
  let p = pending.get(config.dataDir);
  if (!p) {
    p = makeOrReadSelfSigned(config);
    pending.set(config.dataDir, p);
    p.catch(() => pending.delete(config.dataDir));
  }
  return p;
}

async function makeOrReadSelfSigned(config: MailConfig): Promise<TlsMaterial> {
  const dir = path.join(config.dataDir, "tls");
  const file = path.join(dir, "selfsigned.json");
  try {
    return JSON.parse(await fs.readFile(file, "utf8")) as TlsMaterial;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
  await fs.mkdir(dir, { recursive: true, mode: 0o700 });
  // Loaded only to make a certificate (about 15 MB per process otherwise).
  const { generate } = require("selfsigned") as typeof import("selfsigned");
  const names = [...new Set([config.hostname, config.domain, ...config.destinations])];
  const pems = await generate([{ name: "commonName", value: config.hostname }], {
    keyType: "ec",
    curve: "P-256",
    algorithm: "sha256",
    notAfterDate: new Date(Date.now() + 825 * 86400 * 1000),
    extensions: [
      { name: "basicConstraints", cA: false },
      { name: "keyUsage", digitalSignature: true, keyEncipherment: true },
      { name: "extKeyUsage", serverAuth: true },
      {
        name: "subjectAltName",
        altNames: [...names.map((value) => ({ type: 2 as const, value })), { type: 7 as const, ip: config.publicAddress }],
      },
    ],
  } as Parameters<typeof import("selfsigned").generate>[1]);
  const material: TlsMaterial = { key: pems.private, cert: pems.cert };
  // Publish atomically; if another process published first, use its pair.
  const tmp = `${file}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`;
  await fs.writeFile(tmp, JSON.stringify(material), { mode: 0o600 });
  try {
    await fs.link(tmp, file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
  } finally {
    await fs.unlink(tmp).catch(() => undefined);
  }
  const published = JSON.parse(await fs.readFile(file, "utf8")) as TlsMaterial;
  // PEM files beside it, for clients that want to trust the certificate (curl --cacert).
  await fs.writeFile(path.join(dir, "cert.pem"), published.cert).catch(() => undefined);
  return published;
}
