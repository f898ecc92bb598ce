/**
 * Modified UTF-7 mailbox names (RFC 3501 §5.1.3): printable US-ASCII stands for itself except
 * `&`, which is `&-`; every other run of characters is UTF-16BE in modified BASE64 (`,` for `/`,
 * no padding) between `&` and `-`.
 */

const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";
const B64_INDEX = new Map([...B64].map((c, i) => [c, i]));

export function encodeMutf7(name: string): string {
  let out = "";
  let pending: number[] = [];
  const flush = () => {
    if (pending.length === 0) return;
    const bytes: number[] = [];
    for (const u of pending) bytes.push(u >> 8, u & 0xff);
    let bits = 0;
    let acc = 0;
    out += "&";
    for (const b of bytes) {
      acc = (acc << 8) | b;
      bits += 8;
      while (bits >= 6) {
        bits -= 6;
        out += B64[(acc >> bits) & 0x3f];
      }
    }
    if (bits > 0) out += B64[(acc << (6 - bits)) & 0x3f];
    out += "-";
    pending = [];
  };
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    if (c >= 0x20 && c <= 0x7e) {
      flush();
      out += c === 0x26 ? "&-" : name[i];
    } else {
      pending.push(c); // UTF-16 code units, surrogate pairs included as they are
    }
  }
  flush();
  return out;
}

/** Decodes a modified UTF-7 name; returns null when it is not valid modified UTF-7. */
export function decodeMutf7(text: string): string | null {
  let out = "";
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x20 || c > 0x7e) return null; // 8-bit or control characters are not modified UTF-7
    if (text[i] !== "&") {
      out += text[i];
      continue;
    }
    const end = text.indexOf("-", i + 1);
    if (end < 0) return null;
    if (end === i + 1) {
      out += "&";
      i = end;
      continue;
    }
    let acc = 0;
    let bits = 0;
    const units: number[] = [];
    let byteBuf: number[] = [];
    for (let j = i + 1; j < end; j++) {
      const v = B64_INDEX.get(text[j]!);
      if (v === undefined) return null;
      acc = ((acc << 6) | v) & 0xffffff;
      bits += 6;
      if (bits >= 8) {
        bits -= 8;
        byteBuf.push((acc >> bits) & 0xff);
        if (byteBuf.length === 2) {
          units.push((byteBuf[0]! << 8) | byteBuf[1]!);
          byteBuf = [];
        }
      }
    }
    // Leftover bits must be zero padding shorter than one base64 digit, and no odd byte.
    if (byteBuf.length !== 0 || bits >= 6 || (acc & ((1 << bits) - 1)) !== 0) return null;
    const decoded = String.fromCharCode(...units);
    // A shifted run must not encode printable ASCII (RFC 3501: those "MUST" be represented as themselves).
    if (units.length === 0 || units.some((u) => u >= 0x20 && u <= 0x7e)) return null;
    // Unpaired surrogates are not text.
    if (!isWellFormed(decoded)) return null;
    out += decoded;
    i = end;
  }
  return out;
}

function isWellFormed(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff) {
      const d = s.charCodeAt(i + 1);
      if (!(d >= 0xdc00 && d <= 0xdfff)) return false;
      i++;
    } else if (c >= 0xdc00 && c <= 0xdfff) return false;
  }
  return true;
}
