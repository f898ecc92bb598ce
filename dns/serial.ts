/**
 * SOA serials that increase exactly when a zone's content changes.
 *
 * `${dataDir}/dns/serials.json` keeps, per zone, the last serial and the hash of the content it
 * was given to (zoneHash). On start or reload the hash is compared: same content, same serial;
 * new content, a new serial in the YYYYMMDDnn style (RFC 1912 §2.2), strictly greater than the
 * last one even after 99 changes in a day or with a clock that went back.
 * The file is replaced atomically (write, fsync, rename, fsync the directory).
 */
import { promises as fs } from "node:fs";
import * as path from "node:path";
import { withSerial, type Zone, zoneHash } from "./zone";

export interface SerialEntry {
  serial: number;
  hash: string;
}
export type SerialState = Record<string, SerialEntry>;

/** The largest serial we hand out before wrapping would be needed (RFC 1982 space). */
const MAX_SERIAL = 0xffffffff;

/** The next serial after `previous`: today's YYYYMMDD00 if that is larger, else previous + 1. */
export function nextSerial(previous: number | undefined, now: Date): number {
  const day = now.getUTCFullYear() * 10000 + (now.getUTCMonth() + 1) * 100 + now.getUTCDate();
  const today = day * 100;
  if (previous === undefined || previous < today) return today;
  if (previous >= MAX_SERIAL) throw new Error(`SOA serial ${previous} cannot grow any further`);
  return previous + 1;
}

export function serialFile(dataDir: string): string {
  return path.join(dataDir, "dns", "serials.json");
}

export async function readSerials(dataDir: string): Promise<SerialState> {
  try {
    const raw = JSON.parse(await fs.readFile(serialFile(dataDir), "utf8")) as { zones?: unknown };
    const out: SerialState = {};
    if (raw && typeof raw.zones === "object" && raw.zones !== null) {
      for (const [zone, e] of Object.entries(raw.zones as Record<string, unknown>)) {
        const entry = e as Partial<SerialEntry>;
        if (typeof entry.serial === "number" && Number.isInteger(entry.serial) && typeof entry.hash === "string")
          out[zone] = { serial: entry.serial, hash: entry.hash };
      }
    }
    return out;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return {};
    throw new Error(`cannot read ${serialFile(dataDir)}: ${(err as Error).message}`);
  }
}

async function writeSerials(dataDir: string, state: SerialState): Promise<void> {
  const file = serialFile(dataDir);
  const dir = path.dirname(file);
  await fs.mkdir(dir, { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  const fh = await fs.open(tmp, "w", 0o644);
  try {
    await fh.writeFile(`${JSON.stringify({ zones: state }, null, 2)}\n`);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await fs.rename(tmp, file);
  const dh = await fs.open(dir, "r");
  try {
    await dh.sync();
  } finally {
    await dh.close();
  }
}

export interface SerialResult {
  zones: Zone[];
  /** Origins whose serial changed (new zones included). */
  changed: string[];
}

/** Gives every zone its serial, bumping and persisting those whose content changed. */
export async function assignSerials(dataDir: string, zones: Zone[], now = new Date()): Promise<SerialResult> {
  const state = await readSerials(dataDir);
  const changed: string[] = [];
  const out = zones.map((z) => {
    const hash = zoneHash(z);
    const prev = state[z.origin];
    if (prev && prev.hash === hash) return withSerial(z, prev.serial);
    const serial = nextSerial(prev?.serial, now);
    state[z.origin] = { serial, hash };
    changed.push(z.origin);
    return withSerial(z, serial);
  });
  if (changed.length > 0) await writeSerials(dataDir, state);
  return { zones: out, changed };
}
