/**
 * FETCH (RFC 3501 §6.4.5, §7.4.2; RFC 9051 §6.4.5; BINARY from RFC 3516; MODSEQ and
 * CHANGEDSINCE/VANISHED from RFC 7162 §3.1.4, §3.2.6).
 *
 * Items are parsed into a plan once. A plan that needs only index data (UID, FLAGS,
 * INTERNALDATE, RFC822.SIZE, MODSEQ) is answered in one synchronous loop that builds the
 * response text directly, so `FETCH 1:* (UID FLAGS)` on a big folder does no I/O and no
 * per-message awaits. Structure items come from the per-message MIME cache; section items
 * read the message.
 */
import * as libqp from "libqp";
import type { MessageInfo } from "../store/types";
import { bad, ImapError, type Result } from "./command";
import { formatDateTime, ILiteral, IRaw, IString, quote, str, type Value } from "./compiler";
import { bodyStructure, type Json, type MimeNode, parseMime, resolvePart, type Section, sectionBytes } from "./mime";
import { type AtomToken, isAtom, type Token, tokenText } from "./parser";
import type { Session } from "./session";
import { flagsKey, type SelectedView } from "./view";

/** Cache field for the MIME tree (ENVELOPE, BODYSTRUCTURE and section offsets). */
export const MIME_CACHE_FIELD = "imap-mime-1";

type ItemKind =
  | "UID"
  | "FLAGS"
  | "INTERNALDATE"
  | "RFC822.SIZE"
  | "MODSEQ"
  | "ENVELOPE"
  | "BODY"
  | "BODYSTRUCTURE"
  | "SECTION"
  | "BINARY"
  | "BINARY.SIZE";

export interface FetchItem {
  kind: ItemKind;
  /** Name in the response (`BODY[1.2]<0>`, `RFC822.HEADER`, ...). */
  key: string;
  section?: Section;
  partial?: { start: number; length?: number };
  /** Sets \Seen (BODY[...] without .PEEK, RFC822, RFC822.TEXT). */
  setsSeen?: boolean;
}

export interface FetchPlan {
  items: FetchItem[];
  needsTree: boolean;
  needsBody: boolean;
  setsSeen: boolean;
  changedSince: bigint | null;
  vanished: boolean;
}

const MACROS: Record<string, string[]> = {
  ALL: ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"],
  FAST: ["FLAGS", "INTERNALDATE", "RFC822.SIZE"],
  FULL: ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"],
};

const SIMPLE: Record<string, ItemKind> = {
  UID: "UID",
  FLAGS: "FLAGS",
  INTERNALDATE: "INTERNALDATE",
  "RFC822.SIZE": "RFC822.SIZE",
  MODSEQ: "MODSEQ",
  ENVELOPE: "ENVELOPE",
  BODY: "BODY",
  BODYSTRUCTURE: "BODYSTRUCTURE",
};

/** Parses the `[...]` of BODY/BINARY. */
export function parseSection(tokens: Token[], binary: boolean): Section {
  if (tokens.length === 0) return { path: [], kind: "" };
  const first = tokens[0]!;
  if (first.type !== "atom") throw bad("Invalid section");
  const parts = first.value.split(".");
  const path: number[] = [];
  while (parts.length > 0 && /^\d+$/.test(parts[0]!)) {
    const n = Number(parts.shift());
    if (n < 1 || n > 100000) throw bad("Invalid section part number");
    path.push(n);
  }
  const kind = parts.join(".").toUpperCase();
  if (binary) {
    if (kind !== "" || tokens.length > 1) throw bad("BINARY sections are part numbers only");
    return { path, kind: "" };
  }
  if (first.value.endsWith(".") || (path.length > 0 && kind === "" && first.value !== path.join("."))) throw bad("Invalid section");
  switch (kind) {
    case "":
    case "HEADER":
    case "TEXT":
    case "MIME":
      if (tokens.length > 1) throw bad("Invalid section");
      if (kind === "MIME" && path.length === 0) throw bad("MIME needs a part number");
      return { path, kind };
    case "HEADER.FIELDS":
    case "HEADER.FIELDS.NOT": {
      const list = tokens[1];
      if (tokens.length !== 2 || !list || list.type !== "list" || list.items.length === 0) throw bad(`${kind} needs a list of field names`);
      const fields: string[] = [];
      for (const f of list.items) {
        const name = tokenText(f);
        if (name === null || !/^[\x21-\x39\x3b-\x7e]+$/.test(name)) throw bad("Invalid header field name");
        fields.push(name);
      }
      return { path, kind, fields };
    }
    default:
      throw bad(`Invalid section ${kind.slice(0, 30)}`);
  }
}

function sectionText(s: Section): string {
  let out = s.path.join(".");
  if (s.kind) out += (out ? "." : "") + s.kind;
  if (s.fields) out += ` (${s.fields.map((f) => (/^[A-Za-z0-9!#$&'+\-.^_`|~]+$/.test(f) ? f : quote(f))).join(" ")})`;
  return out;
}

function itemFrom(t: Token): FetchItem[] {
  if (t.type !== "atom") throw bad("Invalid fetch item");
  const name = t.value.toUpperCase();
  const a = t as AtomToken;
  if (a.section !== undefined) {
    const peek = name.endsWith(".PEEK");
    const base = peek ? name.slice(0, -5) : name;
    if (base === "BINARY.SIZE") {
      if (a.partial) throw bad("BINARY.SIZE takes no partial");
      const section = parseSection(a.section, true);
      return [{ kind: "BINARY.SIZE", key: `BINARY.SIZE[${sectionText(section)}]`, section }];
    }
    if (base !== "BODY" && base !== "BINARY") throw bad(`Invalid fetch item ${name.slice(0, 30)}`);
    const section = parseSection(a.section, base === "BINARY");
    const item: FetchItem = {
      kind: base === "BINARY" ? "BINARY" : "SECTION",
      key: `${base}[${sectionText(section)}]`,
      section,
      setsSeen: !peek,
    };
    if (a.partial) {
      if (a.partial.length === undefined) throw bad("Partial needs <start.length>");
      if (a.partial.length === 0) throw bad("Partial length must be non-zero");
      item.partial = a.partial;
      item.key += `<${a.partial.start}>`;
    }
    return [item];
  }
  const macro = MACROS[name];
  if (macro) return macro.map((m) => ({ kind: SIMPLE[m]!, key: m }));
  const simple = SIMPLE[name];
  if (simple) return [{ kind: simple, key: name }];
  switch (name) {
    case "RFC822":
      return [{ kind: "SECTION", key: "RFC822", section: { path: [], kind: "" }, setsSeen: true }];
    case "RFC822.HEADER":
      return [{ kind: "SECTION", key: "RFC822.HEADER", section: { path: [], kind: "HEADER" } }];
    case "RFC822.TEXT":
      return [{ kind: "SECTION", key: "RFC822.TEXT", section: { path: [], kind: "TEXT" }, setsSeen: true }];
  }
  throw bad(`Invalid fetch item ${name.slice(0, 30)}`);
}

/** Parses the fetch items (and modifiers) of FETCH/UID FETCH. */
export function parseFetch(itemsToken: Token, modifiers: Token | undefined, byUid: boolean, session: Session): FetchPlan {
  let tokens: Token[];
  if (itemsToken.type === "list") {
    if (itemsToken.items.length === 0) throw bad("Empty fetch item list");
    if (itemsToken.items.some((t) => isAtom(t) && MACROS[t.value.toUpperCase()])) throw bad("Macros cannot be combined with other items");
    tokens = itemsToken.items;
  } else tokens = [itemsToken];
  const items: FetchItem[] = [];
  for (const t of tokens) items.push(...itemFrom(t));
  let changedSince: bigint | null = null;
  let vanished = false;
  if (modifiers) {
    if (modifiers.type !== "list") throw bad("Invalid FETCH modifiers");
    const m = modifiers.items;
    for (let i = 0; i < m.length; i++) {
      const t = m[i]!;
      const name = isAtom(t) ? t.value.toUpperCase() : "";
      if (name === "CHANGEDSINCE") {
        const v = m[++i];
        if (v?.type !== "atom" || !/^\d{1,20}$/.test(v.value)) throw bad("CHANGEDSINCE needs a mod-sequence");
        changedSince = BigInt(v.value);
      } else if (name === "VANISHED") {
        vanished = true;
      } else throw bad("Unknown FETCH modifier");
    }
    if (vanished && (!byUid || changedSince === null || !session.qresync))
      throw bad("VANISHED needs UID FETCH, CHANGEDSINCE and ENABLE QRESYNC");
  }
  // UID FETCH always returns UID; CHANGEDSINCE always returns MODSEQ (RFC 7162 §3.1.4.1).
  if (byUid && !items.some((i) => i.kind === "UID")) items.unshift({ kind: "UID", key: "UID" });
  if (changedSince !== null && !items.some((i) => i.kind === "MODSEQ")) items.push({ kind: "MODSEQ", key: "MODSEQ" });
  const needsTree = items.some((i) => ["ENVELOPE", "BODY", "BODYSTRUCTURE", "SECTION", "BINARY", "BINARY.SIZE"].includes(i.kind));
  const needsBody = items.some((i) => i.kind === "SECTION" || i.kind === "BINARY" || i.kind === "BINARY.SIZE");
  return { items, needsTree, needsBody, setsSeen: items.some((i) => i.setsSeen), changedSince, vanished };
}

/** Converts cached JSON (ENVELOPE / BODYSTRUCTURE) into response values. */
export function jsonValue(j: Json): Value {
  if (j === null) return null;
  if (typeof j === "number") return j;
  if (typeof j === "string") return new IString(j);
  return j.map(jsonValue);
}

/** The MIME tree of a message, parsed once and kept in the folder cache. */
export async function mimeTree(sel: SelectedView, uid: number, message?: Buffer): Promise<MimeNode> {
  return sel.mailbox.cached(uid, MIME_CACHE_FIELD, async () => parseMime(message ?? (await sel.mailbox.read(uid))));
}

function decodeContent(body: Buffer, encoding: string): Buffer | null {
  switch (encoding.toLowerCase()) {
    case "7bit":
    case "8bit":
    case "binary":
    case "":
      return body;
    case "base64":
      return Buffer.from(body.toString("latin1").replace(/[^A-Za-z0-9+/]/g, ""), "base64");
    case "quoted-printable":
      return libqp.decode(body.toString("latin1"));
    default:
      return null;
  }
}

/** Content of a BINARY section (RFC 3516 §4.2): the part's body with its transfer encoding undone. */
function binaryBytes(message: Buffer, tree: MimeNode, section: Section): Buffer | null {
  if (section.path.length === 0) return message.subarray(tree.hs, tree.be);
  const node = resolvePart(tree, section.path);
  if (!node) return null;
  const body = message.subarray(node.bs, node.be);
  if (node.children || node.message) return body;
  const decoded = decodeContent(body, node.encoding);
  if (decoded === null)
    throw new ImapError("NO", `Unknown Content-Transfer-Encoding ${node.encoding.slice(0, 30)}`, { name: "UNKNOWN-CTE" });
  return decoded;
}

function flagsText(flags: readonly string[]): string {
  if (flags.length === 0) return "()";
  if (flags.length === 1) return `(${flags[0]})`;
  return `(${flags.join(" ")})`;
}

/**
 * Runs a FETCH over resolved sequence numbers. Returns the tagged result (NO [EXPUNGEISSUED]
 * when messages vanished under a sequence-number FETCH).
 */
export async function runFetch(s: Session, sel: SelectedView, seqs: number[], plan: FetchPlan, byUid: boolean): Promise<Result> {
  if (plan.items.some((i) => i.kind === "MODSEQ")) s.condstore = true;
  let msgs = sel.mailbox.messages();
  let targets = seqs;
  if (plan.changedSince !== null) {
    const since = plan.changedSince;
    targets = seqs.filter((seq) => {
      const info = sel.info(seq, msgs);
      return info !== undefined && info.modseq > since;
    });
  }
  // \Seen is set before the responses are built, so they carry the new FLAGS (RFC 3501 §6.4.5).
  const seenSet = new Set<number>();
  if (plan.setsSeen && !sel.readOnly) {
    const need: number[] = [];
    for (const seq of targets) {
      const info = sel.info(seq, msgs);
      if (info && !info.flags.includes("\\Seen")) need.push(info.uid);
    }
    if (need.length > 0) {
      const changed = await sel.mailbox.setFlags(need, "add", ["\\Seen"]);
      for (const [uid, flags] of changed) {
        seenSet.add(uid);
        sel.knownFlags.set(uid, flagsKey(flags));
      }
      msgs = sel.mailbox.messages();
    }
  }
  const wantFlagsForSeen = seenSet.size > 0 && !plan.items.some((i) => i.kind === "FLAGS");
  let expunged = false;

  if (!plan.needsTree) {
    // Fast path: index data only, one loop, text built directly.
    const items = plan.items;
    // `UID FETCH n:m (FLAGS)` / `FETCH n:m (UID FLAGS)`: the usual sync request, specialised.
    const uidFlags = items.length === 2 && items[0]!.kind === "UID" && items[1]!.kind === "FLAGS";
    let lastFlags: readonly string[] | null = null;
    let lastFlagsText = "";
    let chunk = "";
    let count = 0;
    for (let t = 0; t < targets.length; t++) {
      const seq = targets[t]!;
      const info = sel.info(seq, msgs);
      if (!info) {
        expunged = true;
        continue;
      }
      if (uidFlags) {
        if (info.flags !== lastFlags) {
          lastFlags = info.flags;
          lastFlagsText = flagsText(info.flags);
        }
        chunk += `* ${seq} FETCH (UID ${info.uid} FLAGS ${lastFlagsText})\r\n`;
      } else {
        let line = `* ${seq} FETCH (`;
        for (let i = 0; i < items.length; i++) {
          if (i > 0) line += " ";
          line += simpleItem(items[i]!, info);
        }
        if (wantFlagsForSeen && seenSet.has(info.uid)) line += ` FLAGS ${flagsText(info.flags)}`;
        chunk += `${line})\r\n`;
      }
      if (++count % 2048 === 0) {
        s.sendRaw(chunk);
        chunk = "";
        lastFlags = null;
        await s.flushIfLarge();
      }
    }
    if (chunk.length > 0) s.sendRaw(chunk);
    return expunged && !byUid ? expungeIssued() : { status: "OK", text: `${byUid ? "UID " : ""}FETCH completed` };
  }

  // Structure and content: load a few messages at a time, answer in order.
  const BATCH = plan.needsBody ? 4 : 16;
  for (let b = 0; b < targets.length; b += BATCH) {
    const batch = targets.slice(b, b + BATCH);
    const loaded = await Promise.all(
      batch.map(async (seq) => {
        const info = sel.info(seq, msgs);
        if (!info) return null;
        try {
          const message = plan.needsBody ? await sel.mailbox.read(info.uid) : undefined;
          const tree = await mimeTree(sel, info.uid, message);
          return { seq, info, message, tree };
        } catch (err) {
          if ((err as { code?: string }).code === "EXPUNGED") return null;
          throw err;
        }
      }),
    );
    for (let k = 0; k < batch.length; k++) {
      const m = loaded[k];
      if (!m) {
        expunged = true;
        continue;
      }
      const attrs: Value[] = [];
      for (const item of plan.items) {
        attrs.push(new IRaw(item.key));
        attrs.push(fullItem(item, m.info, m.tree, m.message));
      }
      if (seenSet.has(m.info.uid)) {
        // \Seen was set by this FETCH: the client learns the new flags (and mod-sequence, RFC 7162 §3.1.4.1)
        if (wantFlagsForSeen) attrs.push("FLAGS", new IRaw(flagsText(m.info.flags)));
        if (s.condstore && !plan.items.some((i) => i.kind === "MODSEQ")) attrs.push("MODSEQ", [m.info.modseq]);
      }
      s.send({ tag: "*", command: `${m.seq} FETCH`, attributes: [attrs] });
      await s.flushIfLarge();
    }
  }
  return expunged && !byUid ? expungeIssued() : { status: "OK", text: `${byUid ? "UID " : ""}FETCH completed` };
}

function expungeIssued(): Result {
  return { status: "NO", code: { name: "EXPUNGEISSUED" }, text: "Some of the requested messages no longer exist" };
}

function simpleItem(item: FetchItem, info: MessageInfo): string {
  switch (item.kind) {
    case "UID":
      return `UID ${info.uid}`;
    case "FLAGS":
      return `FLAGS ${flagsText(info.flags)}`;
    case "INTERNALDATE":
      return `INTERNALDATE ${formatDateTime(info.internalDate)}`;
    case "RFC822.SIZE":
      return `RFC822.SIZE ${info.size}`;
    case "MODSEQ":
      return `MODSEQ (${info.modseq})`;
    default:
      throw new Error(`not a simple item: ${item.kind}`);
  }
}

function fullItem(item: FetchItem, info: MessageInfo, tree: MimeNode, message: Buffer | undefined): Value {
  switch (item.kind) {
    case "UID":
      return info.uid;
    case "FLAGS":
      return new IRaw(flagsText(info.flags));
    case "INTERNALDATE":
      return new IRaw(formatDateTime(info.internalDate));
    case "RFC822.SIZE":
      return info.size;
    case "MODSEQ":
      return [info.modseq];
    case "ENVELOPE":
      return jsonValue(tree.envelope ?? null);
    case "BODY":
      return jsonValue(bodyStructure(tree, false));
    case "BODYSTRUCTURE":
      return jsonValue(bodyStructure(tree, true));
    case "SECTION": {
      const bytes = sectionBytes(message!, tree, item.section!);
      return sliceValue(bytes ?? Buffer.alloc(0), item.partial, false);
    }
    case "BINARY": {
      const bytes = binaryBytes(message!, tree, item.section!);
      return sliceValue(bytes ?? Buffer.alloc(0), item.partial, true);
    }
    case "BINARY.SIZE": {
      const bytes = binaryBytes(message!, tree, item.section!);
      return bytes ? bytes.length : 0;
    }
  }
}

function sliceValue(bytes: Buffer, partial: { start: number; length?: number } | undefined, binary: boolean): Value {
  let b = bytes;
  if (partial) {
    const start = Math.min(partial.start, b.length);
    b = b.subarray(start, partial.length === undefined ? b.length : Math.min(b.length, start + partial.length));
  }
  if (b.length === 0) return str("");
  return new ILiteral(Buffer.from(b), binary && b.includes(0));
}
