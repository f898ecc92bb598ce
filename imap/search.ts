/**
 * SEARCH keys (RFC 3501 §6.4.4, RFC 9051 §6.4.4; MODSEQ from RFC 7162 §3.1.5; OLDER/YOUNGER
 * from RFC 5032): parsed into a tree, then evaluated per message, cheapest keys first:
 *
 * - index keys (flags, sizes, dates, UIDs, modseqs) never touch the message files;
 * - SUBJECT/FROM/TO/CC/BCC and SENT* use the message's search fields (search-fields.ts), made
 *   once from its header and then kept in the folder cache;
 * - HEADER reads the header only; BODY and TEXT read the whole message.
 */

import type { MessageInfo } from "../store/types";
import { ImapError } from "./command";
import { parseDate } from "./compiler";
import { libmime, mailparser } from "./lazy";
import { decodeText, type HeaderField, parseHeader } from "./mime";
import { type AtomToken, isAtom, type Token, tokenBytes, tokenText } from "./parser";
import { FIELD, fieldContains, sentDay } from "./search-fields";
import { parseSeqSet, type Range } from "./seqset";

export type SearchKey =
  | { op: "all" }
  | { op: "none" }
  | { op: "flag"; flag: string; set: boolean }
  | { op: "seq"; set: Range[] | "$" }
  | { op: "uid"; set: Range[] | "$" }
  | { op: "and"; keys: SearchKey[] }
  | { op: "or"; a: SearchKey; b: SearchKey }
  | { op: "not"; key: SearchKey }
  | { op: "larger"; n: number }
  | { op: "smaller"; n: number }
  | { op: "date"; sent: boolean; cmp: "before" | "on" | "since"; day: number }
  | { op: "age"; older: boolean; seconds: number }
  | { op: "header"; name: string; value: string }
  /** SUBJECT/FROM/TO/CC/BCC: answered from the search fields (`value` lower-cased). */
  | { op: "envelope"; field: "subject" | "from" | "to" | "cc" | "bcc"; value: string }
  | { op: "body"; value: string }
  | { op: "text"; value: string }
  | { op: "modseq"; modseq: bigint };

export interface SearchProgram {
  key: SearchKey;
  /** The program uses MODSEQ (the response then carries the highest modseq, RFC 7162 §3.1.5). */
  usesModseq: boolean;
  /** Needs more than the index: search fields or message contents. */
  needsContent: boolean;
  /** Needs the message itself (HEADER, BODY, TEXT), not only the search fields. */
  needsMessage: boolean;
}

const FLAG_KEYS: Record<string, [string, boolean]> = {
  ANSWERED: ["\\Answered", true],
  DELETED: ["\\Deleted", true],
  DRAFT: ["\\Draft", true],
  FLAGGED: ["\\Flagged", true],
  SEEN: ["\\Seen", true],
  UNANSWERED: ["\\Answered", false],
  UNDELETED: ["\\Deleted", false],
  UNDRAFT: ["\\Draft", false],
  UNFLAGGED: ["\\Flagged", false],
  UNSEEN: ["\\Seen", false],
};

const HEADER_KEYS: Record<string, string> = { BCC: "bcc", CC: "cc", FROM: "from", SUBJECT: "subject", TO: "to" };

class KeyReader {
  i = 0;
  usesModseq = false;
  needsContent = false;
  needsMessage = false;
  constructor(
    private readonly tokens: Token[],
    private readonly decode: (b: Buffer) => string,
  ) {}

  more(): boolean {
    return this.i < this.tokens.length;
  }

  private next(what: string): Token {
    const t = this.tokens[this.i++];
    if (!t) throw new ImapError("BAD", `SEARCH: missing ${what}`);
    return t;
  }

  private str(what: string): string {
    const t = this.next(what);
    const b = tokenBytes(t);
    if (b === null) throw new ImapError("BAD", `SEARCH: ${what} must be a string`);
    return this.decode(b);
  }

  private num(what: string): number {
    const t = this.next(what);
    if (t.type !== "atom" || !/^\d{1,15}$/.test(t.value)) throw new ImapError("BAD", `SEARCH: ${what} must be a number`);
    return Number(t.value);
  }

  private date(): number {
    const t = this.next("date");
    const text = tokenText(t);
    const day = text === null ? null : parseDate(text);
    if (day === null) throw new ImapError("BAD", "SEARCH: invalid date (expected e.g. 1-Feb-2024)");
    return day;
  }

  key(depth = 0): SearchKey {
    if (depth > 50) throw new ImapError("BAD", "SEARCH: nested too deeply");
    const t = this.next("search key");
    if (t.type === "list") {
      if (t.items.length === 0) throw new ImapError("BAD", "SEARCH: empty parenthesized list");
      const sub = new KeyReader(t.items, this.decode);
      const keys: SearchKey[] = [];
      while (sub.more()) keys.push(sub.key(depth + 1));
      this.usesModseq ||= sub.usesModseq;
      this.needsContent ||= sub.needsContent;
      this.needsMessage ||= sub.needsMessage;
      return keys.length === 1 ? keys[0]! : { op: "and", keys };
    }
    if (t.type !== "atom" || (t as AtomToken).section) throw new ImapError("BAD", "SEARCH: invalid search key");
    const name = t.value.toUpperCase();
    const flag = FLAG_KEYS[name];
    if (flag) return { op: "flag", flag: flag[0], set: flag[1] };
    const header = HEADER_KEYS[name];
    if (header) {
      this.needsContent = true;
      const value = this.str(name);
      if (value === "") {
        this.needsMessage = true;
        return { op: "header", name: header, value };
      }
      return { op: "envelope", field: header as "subject", value: value.toLowerCase() };
    }
    switch (name) {
      case "ALL":
        return { op: "all" };
      case "NEW":
        // \Recent is never set for a session (see README): NEW = RECENT UNSEEN matches nothing.
        return { op: "none" };
      case "RECENT":
        return { op: "none" };
      case "OLD":
        return { op: "all" };
      case "KEYWORD":
      case "UNKEYWORD": {
        const k = this.str("keyword");
        return { op: "flag", flag: k, set: name === "KEYWORD" };
      }
      case "BEFORE":
      case "ON":
      case "SINCE":
        return { op: "date", sent: false, cmp: name.toLowerCase() as "before", day: this.date() };
      case "SENTBEFORE":
      case "SENTON":
      case "SENTSINCE":
        this.needsContent = true;
        return { op: "date", sent: true, cmp: name.slice(4).toLowerCase() as "before", day: this.date() };
      case "OLDER":
      case "YOUNGER":
        return { op: "age", older: name === "OLDER", seconds: this.num("interval") };
      case "LARGER":
        return { op: "larger", n: this.num("size") };
      case "SMALLER":
        return { op: "smaller", n: this.num("size") };
      case "HEADER": {
        const field = this.str("header field name").toLowerCase();
        this.needsContent = this.needsMessage = true;
        return { op: "header", name: field, value: this.str("header value") };
      }
      case "BODY":
        this.needsContent = this.needsMessage = true;
        return { op: "body", value: this.str("text") };
      case "TEXT":
        this.needsContent = this.needsMessage = true;
        return { op: "text", value: this.str("text") };
      case "NOT":
        return { op: "not", key: this.key(depth + 1) };
      case "OR": {
        const a = this.key(depth + 1);
        const b = this.key(depth + 1);
        return { op: "or", a, b };
      }
      case "UID": {
        const s = this.next("UID set");
        const set = s.type === "atom" ? parseSeqSet(s.value) : null;
        if (!set) throw new ImapError("BAD", "SEARCH: invalid UID set");
        return { op: "uid", set };
      }
      case "MODSEQ": {
        // MODSEQ [entry-name entry-type-req] mod-sequence-valzer (RFC 7162 §3.1.5)
        let v = this.next("mod-sequence");
        if (v.type === "string") {
          const type = this.next("entry type");
          if (!isAtom(type) || !["PRIV", "SHARED", "ALL"].includes(type.value.toUpperCase()))
            throw new ImapError("BAD", "SEARCH: invalid MODSEQ entry type");
          v = this.next("mod-sequence");
        }
        if (v.type !== "atom" || !/^\d{1,20}$/.test(v.value)) throw new ImapError("BAD", "SEARCH: invalid mod-sequence");
        this.usesModseq = true;
        return { op: "modseq", modseq: BigInt(v.value) };
      }
      default: {
        const set = parseSeqSet(t.value);
        if (set) return { op: "seq", set };
        throw new ImapError("BAD", `SEARCH: unknown search key ${t.value.slice(0, 30)}`);
      }
    }
  }
}

/** Parses the search keys (after CHARSET/RETURN). `charset` decides how strings are read. */
export function parseSearch(tokens: Token[], charset: string): SearchProgram {
  const cs = charset.toUpperCase();
  if (cs !== "UTF-8" && cs !== "US-ASCII" && cs !== "UTF8")
    throw new ImapError("NO", `Unsupported charset ${charset.slice(0, 30)}`, { name: "BADCHARSET", args: [["US-ASCII", "UTF-8"]] });
  const reader = new KeyReader(tokens, (b) => b.toString("utf8"));
  const keys: SearchKey[] = [];
  while (reader.more()) keys.push(reader.key());
  if (keys.length === 0) throw new ImapError("BAD", "SEARCH: no search keys");
  return {
    key: keys.length === 1 ? keys[0]! : { op: "and", keys },
    usesModseq: reader.usesModseq,
    needsContent: reader.needsContent,
    needsMessage: reader.needsMessage,
  };
}

/** What a message offers to the evaluator. Contents are loaded only when a key needs them. */
export interface Candidate {
  seq: number;
  info: MessageInfo;
  /** Resolves sequence/UID sets (with `$`) to membership tests. */
}

export interface SearchContext {
  inSeqSet(set: Range[] | "$", seq: number, uid: number): boolean;
  inUidSet(set: Range[] | "$", uid: number): boolean;
  /** The whole message (CRLF). */
  load(uid: number): Promise<Buffer>;
  /** The message's header block (CRLF). */
  loadHeader(uid: number): Promise<Buffer>;
  /** The message's search fields (search-fields.ts), cached. */
  fields(uid: number): Promise<string>;
  /** The search fields when already cached, without waiting (undefined: use `fields`). */
  peekFields?(uid: number): string | undefined;
  now: number;
}

const DAY = 86400000;

function dayOf(d: Date): number {
  return Math.floor(d.getTime() / DAY) * DAY;
}

function hasFlag(info: MessageInfo, flag: string): boolean {
  const flags = info.flags;
  // Exact spelling first (the usual case), then case-insensitively.
  for (let i = 0; i < flags.length; i++) if (flags[i] === flag) return true;
  if (flags.length === 0) return false;
  const f = flag.toLowerCase();
  for (let i = 0; i < flags.length; i++) if (flags[i]!.toLowerCase() === f) return true;
  return false;
}

/** Whether a key depends on flags only (then it has one answer per distinct flag list). */
export function flagsOnly(key: SearchKey): boolean {
  switch (key.op) {
    case "all":
    case "none":
    case "flag":
      return true;
    case "not":
      return flagsOnly(key.key);
    case "and":
      return key.keys.every(flagsOnly);
    case "or":
      return flagsOnly(key.a) && flagsOnly(key.b);
    default:
      return false;
  }
}

/** Index-only evaluation; undefined when the key needs the message contents. */
export function evalCheap(key: SearchKey, c: Candidate, ctx: SearchContext): boolean | undefined {
  const info = c.info;
  switch (key.op) {
    case "all":
      return true;
    case "none":
      return false;
    case "flag":
      return hasFlag(info, key.flag) === key.set;
    case "seq":
      return ctx.inSeqSet(key.set, c.seq, info.uid);
    case "uid":
      return ctx.inUidSet(key.set, info.uid);
    case "larger":
      return info.size > key.n;
    case "smaller":
      return info.size < key.n;
    case "modseq":
      return info.modseq >= key.modseq;
    case "age": {
      const age = (ctx.now - info.internalDate.getTime()) / 1000;
      return key.older ? age >= key.seconds : age <= key.seconds;
    }
    case "date":
      if (key.sent) return undefined;
      return compareDay(dayOf(info.internalDate), key.cmp, key.day);
    case "not": {
      const r = evalCheap(key.key, c, ctx);
      return r === undefined ? undefined : !r;
    }
    case "and": {
      let unknown = false;
      for (const k of key.keys) {
        const r = evalCheap(k, c, ctx);
        if (r === false) return false;
        if (r === undefined) unknown = true;
      }
      return unknown ? undefined : true;
    }
    case "or": {
      const a = evalCheap(key.a, c, ctx);
      if (a === true) return true;
      const b = evalCheap(key.b, c, ctx);
      if (b === true) return true;
      if (a === false && b === false) return false;
      return undefined;
    }
    default:
      return undefined;
  }
}

function compareDay(day: number, cmp: "before" | "on" | "since", target: number): boolean {
  if (cmp === "before") return day < target;
  if (cmp === "on") return day === target;
  return day >= target;
}

interface Loaded {
  header: HeaderField[];
  /** The whole message, once a key needed it. */
  raw: Buffer | null;
  decodedHeaders?: Map<string, string[]>;
  text?: string;
}

function decodedHeader(l: Loaded, name: string): string[] {
  if (!l.decodedHeaders) {
    l.decodedHeaders = new Map();
    for (const f of l.header) {
      let v = f.value;
      try {
        v = libmime().decodeWords(v);
      } catch {
        // keep raw
      }
      const list = l.decodedHeaders.get(f.name) ?? [];
      list.push(v);
      l.decodedHeaders.set(f.name, list);
    }
  }
  return l.decodedHeaders.get(name) ?? [];
}

async function bodyText(raw: Buffer, l: Loaded): Promise<string> {
  if (l.text === undefined) {
    try {
      const parsed = await mailparser().simpleParser(raw, { skipHtmlToText: false, skipTextToHtml: true, skipImageLinks: true });
      l.text = [parsed.text ?? "", typeof parsed.html === "string" ? parsed.html.replace(/<[^>]*>/g, " ") : ""].join("\n");
    } catch {
      l.text = decodeText(raw);
    }
  }
  return l.text;
}

function contains(haystack: string, needle: string): boolean {
  if (needle === "") return true;
  return haystack.toLowerCase().includes(needle.toLowerCase());
}

/** Evaluation with the search fields at hand: every key but HEADER, BODY and TEXT. */
function evalFields(key: SearchKey, c: Candidate, ctx: SearchContext, record: string): boolean {
  switch (key.op) {
    case "envelope":
      return fieldContains(record, FIELD[key.field], key.value);
    case "date": {
      if (!key.sent) return evalCheap(key, c, ctx) === true;
      // Sent date: the Date: header's own calendar day (RFC 3501: "disregarding time and timezone").
      const day = sentDay(record);
      return day !== null && compareDay(day, key.cmp, key.day);
    }
    case "not":
      return !evalFields(key.key, c, ctx, record);
    case "and":
      for (const k of key.keys) if (!evalFields(k, c, ctx, record)) return false;
      return true;
    case "or":
      return evalFields(key.a, c, ctx, record) || evalFields(key.b, c, ctx, record);
    default:
      return evalCheap(key, c, ctx) === true;
  }
}

/** Loads what keys need, once per message. */
class MessageLoader {
  private loaded: Loaded | null = null;
  private record: string | undefined;

  constructor(
    private readonly uid: number,
    private readonly ctx: SearchContext,
  ) {}

  async fields(): Promise<string> {
    this.record ??= await this.ctx.fields(this.uid);
    return this.record;
  }

  async header(): Promise<Loaded> {
    this.loaded ??= { header: parseHeader(await this.ctx.loadHeader(this.uid)), raw: null };
    return this.loaded;
  }

  async full(): Promise<{ raw: Buffer; l: Loaded }> {
    if (!this.loaded?.raw) {
      const raw = await this.ctx.load(this.uid);
      if (this.loaded) this.loaded.raw = raw;
      else {
        const end = raw.indexOf("\r\n\r\n");
        this.loaded = { header: parseHeader(end < 0 ? raw : raw.subarray(0, end + 4)), raw };
      }
    }
    return { raw: this.loaded.raw!, l: this.loaded };
  }
}

async function evalFull(key: SearchKey, c: Candidate, ctx: SearchContext, m: MessageLoader): Promise<boolean> {
  const cheap = evalCheap(key, c, ctx);
  if (cheap !== undefined) return cheap;
  switch (key.op) {
    case "envelope":
    case "date":
      return evalFields(key, c, ctx, await m.fields());
    case "header": {
      const values = decodedHeader(await m.header(), key.name);
      if (key.value === "") return values.length > 0;
      return values.some((v) => contains(v, key.value));
    }
    case "body": {
      const { raw, l } = await m.full();
      return contains(await bodyText(raw, l), key.value);
    }
    case "text": {
      const { raw, l } = await m.full();
      if (l.header.some((f) => contains(f.value, key.value))) return true;
      for (const name of new Set(l.header.map((f) => f.name))) if (decodedHeader(l, name).some((v) => contains(v, key.value))) return true;
      return contains(await bodyText(raw, l), key.value);
    }
    case "not":
      return !(await evalFull(key.key, c, ctx, m));
    case "and":
      // cheap keys were already checked by evalCheap; run the rest in order
      for (const k of key.keys) if (!(await evalFull(k, c, ctx, m))) return false;
      return true;
    case "or":
      return (await evalFull(key.a, c, ctx, m)) || (await evalFull(key.b, c, ctx, m));
    default:
      return false;
  }
}

/** Lets other sessions run during a long search: yields to the event loop every ~20 ms. */
class Yielder {
  private last = Date.now();
  private n = 0;
  async maybe(): Promise<void> {
    if ((++this.n & 127) !== 0 || Date.now() - this.last < 20) return;
    await new Promise<void>((resolve) => setImmediate(resolve));
    this.last = Date.now();
  }
}

function isExpunged(err: unknown): boolean {
  return (err as { code?: string }).code === "EXPUNGED";
}

/** Evaluates a program over candidates; returns those that match, in order. */
export async function runSearch(program: SearchProgram, candidates: Iterable<Candidate>, ctx: SearchContext): Promise<Candidate[]> {
  const out: Candidate[] = [];
  const yielder = new Yielder();
  if (!program.needsMessage) {
    // Search fields only: one message at a time (they come from memory, or from a short
    // synchronous read of the header), evaluated synchronously once at hand.
    for (const c of candidates) {
      const cheap = evalCheap(program.key, c, ctx);
      if (cheap !== undefined) {
        if (cheap) out.push(c);
        continue;
      }
      let record = ctx.peekFields?.(c.info.uid);
      if (record === undefined) {
        try {
          record = await ctx.fields(c.info.uid);
        } catch (err) {
          if (isExpunged(err)) continue;
          throw err;
        }
      }
      if (evalFields(program.key, c, ctx, record)) out.push(c);
      await yielder.maybe();
    }
    return out;
  }
  // Messages whose answer needs contents are evaluated a few at a time (reads overlap).
  let pending: Array<{ c: Candidate; p: Promise<boolean> }> = [];
  const drain = async () => {
    const results = await Promise.all(pending.map((x) => x.p));
    pending.forEach((x, i) => {
      if (results[i]) out.push(x.c);
    });
    pending = [];
    await yielder.maybe();
  };
  for (const c of candidates) {
    const cheap = evalCheap(program.key, c, ctx);
    if (cheap !== undefined) {
      if (pending.length > 0) await drain();
      if (cheap) out.push(c);
      continue;
    }
    pending.push({ c, p: evalOne(program, c, ctx) });
    if (pending.length >= 16) await drain();
  }
  if (pending.length > 0) await drain();
  return out;
}

async function evalOne(program: SearchProgram, c: Candidate, ctx: SearchContext): Promise<boolean> {
  try {
    return await evalFull(program.key, c, ctx, new MessageLoader(c.info.uid, ctx));
  } catch (err) {
    if (isExpunged(err)) return false;
    throw err;
  }
}
