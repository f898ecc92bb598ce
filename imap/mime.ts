/**
 * MIME structure for FETCH: ENVELOPE, BODY, BODYSTRUCTURE and BODY[section] byte ranges.
 *
 * The MIME tree comes from mailsplit (the splitter mailparser is built on), which finds parts,
 * headers and IMAP part numbers. We only add byte offsets (counted over the splitter's output,
 * which reproduces the input exactly) so that any section can be sliced out of the message
 * without parsing it again. The resulting tree is plain JSON and is cached per message through
 * `Mailbox.cached()`, so a folder is parsed once.
 */

import addressparser from "nodemailer/lib/addressparser";
import { mailsplit } from "./lazy";

/** One MIME entity. Offsets are absolute positions in the message (CRLF form). */
export interface MimeNode {
  /** Header start, body start (after the blank line), body end (before the CRLF of the next delimiter). */
  hs: number;
  bs: number;
  be: number;
  type: string;
  subtype: string;
  /** Content-Type parameters as written (name lower-cased). */
  params: Array<[string, string]>;
  id: string | null;
  description: string | null;
  encoding: string;
  md5: string | null;
  disposition: [string, Array<[string, string]>] | null;
  language: string[] | null;
  location: string | null;
  /** Text lines of the body (text/* and message/rfc822). */
  lines: number;
  /** Multipart children. */
  children?: MimeNode[];
  /** message/rfc822: the encapsulated message (a root node with its own header). */
  message?: MimeNode;
  /** Root nodes (the message and encapsulated messages): the ENVELOPE. */
  envelope?: Json;
}

/** JSON values that become IMAP values (strings are IMAP strings, arrays lists, null NIL). */
export type Json = string | number | null | Json[];

const MAX_DEPTH = 20;

/** Parses a whole message (CRLF line ends) into its MIME tree. */
export async function parseMime(message: Buffer): Promise<MimeNode> {
  return simpleEntity(message) ?? parseEntity(message, 0, message.length, 0);
}

/**
 * A message that is not multipart and does not encapsulate another message needs no splitter:
 * its structure is its header and one body. Most messages in a big folder take this path.
 */
function simpleEntity(message: Buffer): MimeNode | null {
  const end = headerEnd(message);
  if (end === null) return null;
  const header = message.subarray(0, end);
  const node = headerNode(header, 0, null);
  if (node.type === "multipart" || node.type === "message") return null;
  node.be = message.length;
  node.lines = countLines(message, node.bs, node.be);
  node.envelope = envelopeOf(header);
  return node;
}

/** Offset just after the blank line that ends the header, or null when there is none. */
export function headerEnd(message: Buffer): number | null {
  if (message[0] === 0x0a) return 1;
  if (message[0] === 0x0d && message[1] === 0x0a) return 2;
  const crlf = message.indexOf("\r\n\r\n");
  const lf = message.indexOf("\n\n");
  if (lf >= 0 && (crlf < 0 || lf < crlf)) return lf + 2;
  return crlf < 0 ? null : crlf + 4;
}

interface Pending {
  node: MimeNode;
  splitNode: SplitNode;
  parent: Pending | null;
  boundary: string | null;
  ended: boolean;
}

interface SplitNode {
  type: "node";
  getHeaders(): Buffer;
  parentNode: SplitNode | false;
  multipart: string | false;
  contentType: string | false;
  _boundary?: Buffer | false;
}

async function parseEntity(message: Buffer, start: number, end: number, depth: number): Promise<MimeNode> {
  const slice = message.subarray(start, end);
  const pending: Pending[] = [];
  const byNode = new Map<SplitNode, Pending>();
  let offset = start;
  let failed = false;

  await new Promise<void>((resolve) => {
    const splitter = new (mailsplit().Splitter)({
      ignoreEmbedded: true,
      maxHeadSize: 2 * 1024 * 1024,
    }) as unknown as NodeJS.EventEmitter & {
      end(b: Buffer): void;
    };
    splitter.on("data", (d: { type: string; value?: Buffer } & Partial<SplitNode>) => {
      if (d.type === "node") {
        const sn = d as unknown as SplitNode;
        const header = sn.getHeaders();
        const parent = sn.parentNode ? (byNode.get(sn.parentNode) ?? null) : null;
        const node = headerNode(header, offset, parent?.node ?? null);
        const p: Pending = {
          node,
          splitNode: sn,
          parent,
          boundary: node.type === "multipart" ? paramOf(node.params, "boundary") : null,
          ended: false,
        };
        pending.push(p);
        byNode.set(sn, p);
        if (parent) (parent.node.children ??= []).push(node);
        offset += header.length;
        return;
      }
      const value = d.value ?? Buffer.alloc(0);
      if (d.type === "data") markDelimiters(message, offset, value.length, pending);
      offset += value.length;
    });
    splitter.on("end", () => resolve());
    splitter.on("error", () => {
      failed = true;
      resolve();
    });
    splitter.end(slice);
  });

  const root = pending[0]?.node;
  if (failed || !root) return opaqueNode(message, start, end);
  for (const p of pending) if (!p.ended) p.node.be = end;
  // Multipart nodes without children still need a list of parts (RFC 3501 body-type-mpart).
  for (const p of pending) {
    const n = p.node;
    if (n.type === "multipart" && (!n.children || n.children.length === 0)) {
      n.children = [emptyTextNode(n.be)];
    }
    if (n.type !== "multipart") n.lines = countLines(message, n.bs, n.be);
  }
  // Encapsulated messages.
  for (const p of pending) {
    const n = p.node;
    if (n.type === "message" && (n.subtype === "rfc822" || n.subtype === "global") && depth < MAX_DEPTH) {
      n.message = await parseEntity(message, n.bs, n.be, depth + 1);
    }
  }
  root.envelope = envelopeOf(message.subarray(root.hs, root.bs));
  return root;
}

/** Sets the end of every open part below the multipart whose delimiter appears in a data chunk. */
function markDelimiters(message: Buffer, at: number, length: number, pending: Pending[]): void {
  const end = at + length;
  let lineStart = at;
  while (lineStart < end) {
    let nl = message.indexOf(0x0a, lineStart);
    if (nl < 0 || nl >= end) nl = end;
    if (message[lineStart] === 0x2d && message[lineStart + 1] === 0x2d) {
      const line = message.toString("latin1", lineStart + 2, nl).replace(/\r$/, "");
      // innermost open multipart first
      for (let i = pending.length - 1; i >= 0; i--) {
        const p = pending[i]!;
        if (!p.boundary || p.ended) continue;
        if (line === p.boundary || line.trimEnd() === p.boundary || line.trimEnd() === `${p.boundary}--`) {
          let pos = lineStart;
          if (pos >= 2 && message[pos - 1] === 0x0a && message[pos - 2] === 0x0d) pos -= 2;
          else if (pos >= 1 && message[pos - 1] === 0x0a) pos -= 1;
          // every open descendant of this multipart ends here
          for (let j = i + 1; j < pending.length; j++) {
            const q = pending[j]!;
            if (!q.ended && isDescendant(q, p)) {
              q.node.be = Math.max(q.node.bs, pos);
              q.ended = true;
            }
          }
          break;
        }
      }
    }
    lineStart = nl + 1;
  }
}

function isDescendant(q: Pending, ancestor: Pending): boolean {
  for (let p = q.parent; p; p = p.parent) if (p === ancestor) return true;
  return false;
}

/** A MIME node from its header block. */
function headerNode(header: Buffer, offset: number, parent: MimeNode | null): MimeNode {
  const fields = parseHeader(header);
  const get = (name: string) => fields.find((f) => f.name === name)?.value ?? null;
  const ctRaw = get("content-type");
  let type = "text";
  let subtype = "plain";
  let params: Array<[string, string]> = [];
  if (ctRaw !== null) {
    const parsed = parseStructured(ctRaw);
    const m = /^([^/\s]+)\/([^/\s]+)$/.exec(parsed.value);
    if (m) {
      type = m[1]!.toLowerCase();
      subtype = m[2]!.toLowerCase();
      params = parsed.params;
    } else {
      params = parsed.params.filter(([k]) => k === "charset");
    }
  } else if (parent && parent.type === "multipart" && parent.subtype === "digest") {
    // RFC 2046 §5.1.5: the default type inside multipart/digest is message/rfc822.
    type = "message";
    subtype = "rfc822";
  }
  if (type === "multipart" && !paramOf(params, "boundary")) {
    // A multipart without a boundary cannot be split; mailsplit treats it as a leaf.
    type = "text";
    subtype = "plain";
    params = [];
  }
  if (type === "text" && !paramOf(params, "charset") && ctRaw === null) params = [["charset", "us-ascii"]];
  const dispRaw = get("content-disposition");
  let disposition: MimeNode["disposition"] = null;
  if (dispRaw !== null) {
    const d = parseStructured(dispRaw);
    if (d.value) disposition = [d.value.toLowerCase(), d.params];
  }
  const lang = get("content-language");
  const encoding = (get("content-transfer-encoding") ?? "7bit").replace(/\([^)]*\)/g, "").trim() || "7bit";
  return {
    hs: offset,
    bs: offset + header.length,
    be: offset + header.length,
    type,
    subtype,
    params,
    id: get("content-id"),
    description: get("content-description"),
    encoding,
    md5: get("content-md5"),
    disposition,
    language: lang
      ? lang
          .split(",")
          .map((s) => s.trim())
          .filter(Boolean)
      : null,
    location: get("content-location"),
    lines: 0,
  };
}

function emptyTextNode(at: number): MimeNode {
  return {
    hs: at,
    bs: at,
    be: at,
    type: "text",
    subtype: "plain",
    params: [["charset", "us-ascii"]],
    id: null,
    description: null,
    encoding: "7bit",
    md5: null,
    disposition: null,
    language: null,
    location: null,
    lines: 0,
  };
}

/** Used when a message cannot be split at all: one text/plain body after whatever header there is. */
function opaqueNode(message: Buffer, start: number, end: number): MimeNode {
  let bs = message.indexOf("\r\n\r\n", start);
  bs = bs < 0 || bs >= end ? start : bs + 4;
  const n = emptyTextNode(start);
  n.bs = bs;
  n.be = end;
  n.lines = countLines(message, bs, end);
  n.envelope = envelopeOf(message.subarray(start, bs));
  return n;
}

export function countLines(buf: Buffer, start: number, end: number): number {
  if (end <= start) return 0;
  let lines = 0;
  let i = buf.indexOf(0x0a, start);
  while (i >= 0 && i < end) {
    lines++;
    i = buf.indexOf(0x0a, i + 1);
  }
  if (buf[end - 1] !== 0x0a) lines++;
  return lines;
}

function paramOf(params: Array<[string, string]>, name: string): string | null {
  return params.find(([k]) => k === name)?.[1] ?? null;
}

// ---------------------------------------------------------------------------------------------
// Header fields

export interface HeaderField {
  /** Lower-cased field name. */
  name: string;
  /** The whole field as written, folded lines and CRLF included. */
  raw: Buffer;
  /** Unfolded value, trimmed, as text (UTF-8 when valid, else Latin-1). */
  value: string;
}

/** Splits a header block into fields (RFC 5322 §2.2, unfolding §2.2.3). */
export function parseHeader(header: Buffer): HeaderField[] {
  const fields: HeaderField[] = [];
  let pos = 0;
  const len = header.length;
  let current: { start: number; end: number } | null = null;
  const flush = () => {
    if (!current) return;
    const raw = header.subarray(current.start, current.end);
    const colon = raw.indexOf(0x3a);
    if (colon > 0) {
      const name = raw.toString("latin1", 0, colon).trim().toLowerCase();
      if (/^[\x21-\x39\x3b-\x7e]+$/.test(name)) {
        const valueBytes = raw.subarray(colon + 1);
        const text = decodeText(valueBytes)
          .replace(/\r?\n(?=[ \t])/g, "")
          .replace(/\r?\n$/, "")
          .trim();
        fields.push({ name, raw, value: text });
      }
    }
    current = null;
  };
  while (pos < len) {
    let nl = header.indexOf(0x0a, pos);
    if (nl < 0) nl = len - 1;
    const lineEnd = nl + 1;
    const first = header[pos];
    const isBlank = (first === 0x0d && header[pos + 1] === 0x0a) || first === 0x0a;
    if (isBlank) {
      flush();
      break;
    }
    if ((first === 0x20 || first === 0x09) && current) {
      current.end = lineEnd;
    } else {
      flush();
      current = { start: pos, end: lineEnd };
    }
    pos = lineEnd;
  }
  flush();
  return fields;
}

export function decodeText(b: Buffer): string {
  const s = b.toString("utf8");
  return s.includes("\ufffd") ? b.toString("latin1") : s;
}

/** Selects (or drops) header fields by name; the result ends with the blank line (RFC 3501 §6.4.5). */
export function filterHeader(header: Buffer, names: string[], not: boolean): Buffer {
  const want = new Set(names.map((n) => n.toLowerCase()));
  const parts: Buffer[] = [];
  for (const f of parseHeader(header)) {
    if (want.has(f.name) !== not) {
      parts.push(f.raw);
      if (f.raw[f.raw.length - 1] !== 0x0a) parts.push(Buffer.from("\r\n"));
    }
  }
  parts.push(Buffer.from("\r\n"));
  return Buffer.concat(parts);
}

/** `value; a=b; c="d e"` → value and parameters as written (names lower-cased, quotes removed). */
export function parseStructured(text: string): { value: string; params: Array<[string, string]> } {
  const s = text.replace(/\([^()]*\)/g, " ");
  let i = 0;
  const semi = s.indexOf(";");
  const value = (semi < 0 ? s : s.slice(0, semi)).trim();
  const params: Array<[string, string]> = [];
  i = semi < 0 ? s.length : semi + 1;
  while (i < s.length) {
    while (i < s.length && /[\s;]/.test(s[i]!)) i++;
    const eq = s.indexOf("=", i);
    if (eq < 0) break;
    const key = s.slice(i, eq).trim().toLowerCase();
    i = eq + 1;
    while (i < s.length && /\s/.test(s[i]!)) i++;
    let val = "";
    if (s[i] === '"') {
      i++;
      while (i < s.length && s[i] !== '"') {
        if (s[i] === "\\" && i + 1 < s.length) i++;
        val += s[i];
        i++;
      }
      i++;
      while (i < s.length && s[i] !== ";") i++;
    } else {
      const next = s.indexOf(";", i);
      val = (next < 0 ? s.slice(i) : s.slice(i, next)).trim();
      i = next < 0 ? s.length : next;
    }
    if (key && /^[\x21-\x7e]+$/.test(key) && !params.some(([k]) => k === key)) params.push([key, val]);
  }
  return { value, params };
}

// ---------------------------------------------------------------------------------------------
// ENVELOPE (RFC 3501 §7.4.2)

function envelopeOf(header: Buffer): Json {
  const fields = parseHeader(header);
  const get = (name: string): string | null => {
    const f = fields.find((x) => x.name === name);
    return f ? f.value : null;
  };
  const nonEmpty = (s: string | null) => (s === null || s === "" ? null : s);
  const from = addresses(get("from"));
  const sender = addresses(get("sender")) ?? from;
  const replyTo = addresses(get("reply-to")) ?? from;
  return [
    nonEmpty(get("date")),
    nonEmpty(get("subject")),
    from,
    sender,
    replyTo,
    addresses(get("to")),
    addresses(get("cc")),
    addresses(get("bcc")),
    nonEmpty(get("in-reply-to")),
    nonEmpty(get("message-id")),
  ];
}

export function addresses(value: string | null): Json {
  if (value === null || value.trim() === "") return null;
  let parsed: Array<{ name: string; address?: string; group?: Array<{ name: string; address?: string; group?: unknown }> }>;
  try {
    parsed = addressparser(value) as typeof parsed;
  } catch {
    return null;
  }
  const out: Json[] = [];
  const one = (a: { name: string; address?: string }): Json => {
    const addr = a.address ?? "";
    const at = addr.lastIndexOf("@");
    const mailbox = at < 0 ? addr : addr.slice(0, at);
    const host = at < 0 ? "" : addr.slice(at + 1);
    return [a.name ? a.name : null, null, mailbox || "MISSING_MAILBOX", host || "MISSING_DOMAIN"];
  };
  for (const a of parsed) {
    if (Array.isArray(a.group)) {
      out.push([null, null, a.name || "", null]);
      for (const g of a.group) if (!Array.isArray(g.group)) out.push(one(g));
      out.push([null, null, null, null]);
    } else {
      if (!a.address && !a.name) continue;
      out.push(one(a));
    }
  }
  return out.length > 0 ? out : null;
}

// ---------------------------------------------------------------------------------------------
// BODY / BODYSTRUCTURE (RFC 3501 §7.4.2 body, RFC 9051 §7.5.2)

function paramList(params: Array<[string, string]>): Json {
  if (params.length === 0) return null;
  const out: Json[] = [];
  for (const [k, v] of params) out.push(k.toUpperCase(), v);
  return out;
}

/** BODY (extended = false) or BODYSTRUCTURE (extended = true) of a message or part. */
export function bodyStructure(node: MimeNode, extended: boolean): Json {
  if (node.type === "multipart") {
    const out: Json[] = (node.children ?? []).map((c) => bodyStructure(c, extended));
    out.push(node.subtype.toUpperCase());
    if (extended) {
      out.push(paramList(node.params), dispositionOf(node), node.language, node.location);
    }
    return out;
  }
  const out: Json[] = [
    node.type.toUpperCase(),
    node.subtype.toUpperCase(),
    paramList(node.params),
    node.id,
    node.description,
    node.encoding.toUpperCase(),
    node.be - node.bs,
  ];
  if (node.type === "message" && (node.subtype === "rfc822" || node.subtype === "global") && node.message) {
    out.push(node.message.envelope ?? null, bodyStructure(node.message, extended), node.lines);
  } else if (node.type === "text") {
    out.push(node.lines);
  }
  if (extended) out.push(node.md5, dispositionOf(node), node.language, node.location);
  return out;
}

function dispositionOf(node: MimeNode): Json {
  if (!node.disposition) return null;
  return [node.disposition[0].toUpperCase(), paramList(node.disposition[1])];
}

// ---------------------------------------------------------------------------------------------
// Sections (RFC 3501 §6.4.5)

export interface Section {
  /** Part numbers, e.g. [1, 2] for `1.2`. */
  path: number[];
  /** "" for the part itself; HEADER, HEADER.FIELDS, HEADER.FIELDS.NOT, TEXT or MIME. */
  kind: "" | "HEADER" | "HEADER.FIELDS" | "HEADER.FIELDS.NOT" | "TEXT" | "MIME";
  fields?: string[];
}

/** The node a part path names, and whether it was reached as a message (root or encapsulated). */
export function resolvePart(root: MimeNode, path: number[]): MimeNode | null {
  let node = root;
  let isMessage = true;
  for (const n of path) {
    if (!isMessage && node.message && !node.children) {
      node = node.message;
      isMessage = true;
    }
    if (node.children) {
      const c = node.children[n - 1];
      if (!c) return null;
      node = c;
    } else if (isMessage && n === 1) {
      // a non-multipart message has one part, itself
    } else {
      return null;
    }
    isMessage = false;
  }
  return node;
}

/** The bytes a section names, or null when the message has no such part. */
export function sectionBytes(message: Buffer, root: MimeNode, section: Section): Buffer | null {
  const node = section.path.length === 0 ? root : resolvePart(root, section.path);
  if (!node) return null;
  const msg = section.path.length === 0 ? root : node.message;
  switch (section.kind) {
    case "":
      if (section.path.length === 0) return message.subarray(root.hs, root.be);
      if (node.message) return message.subarray(node.bs, node.be);
      return message.subarray(node.bs, node.be);
    case "MIME":
      if (section.path.length === 0) return null;
      return message.subarray(node.hs, node.bs);
    case "HEADER":
      return msg ? message.subarray(msg.hs, msg.bs) : null;
    case "TEXT":
      return msg ? message.subarray(msg.bs, msg.be) : null;
    case "HEADER.FIELDS":
    case "HEADER.FIELDS.NOT":
      return msg ? filterHeader(message.subarray(msg.hs, msg.bs), section.fields ?? [], section.kind === "HEADER.FIELDS.NOT") : null;
  }
}
