/**
 * CIDR parsing, copied from ../lib/cidr.ts so the pack is self-contained (a published pack has no
 * ../lib). test/policy-selfcontained.test.ts checks that both parse every input the same way.
 */
import { isIP } from "node:net";

export interface Cidr {
  family: 4 | 6;
  bits: bigint;
  prefix: number;
}

export function parseCidr(text: string): Cidr | null {
  const slash = text.indexOf("/");
  const addr = slash < 0 ? text : text.slice(0, slash);
  const family = isIP(addr);
  if (family === 0) return null;
  const max = family === 4 ? 32 : 128;
  let prefix = max;
  if (slash >= 0) {
    const p = text.slice(slash + 1);
    if (!/^\d{1,3}$/.test(p)) return null;
    prefix = Number(p);
    if (prefix > max) return null;
  }
  const bits = toBits(addr);
  if (bits === null) return null;
  return { family: family as 4 | 6, bits: mask(bits, prefix, max), prefix };
}

function mask(bits: bigint, prefix: number, max: number): bigint {
  if (prefix === 0) return 0n;
  const shift = BigInt(max - prefix);
  return (bits >> shift) << shift;
}

/** Numeric value of an address, or null. IPv4-mapped IPv6 (::ffff:a.b.c.d) becomes IPv4. */
export function toBits(address: string): bigint | null {
  const v4 = unmapV4(address);
  if (isIP(v4) === 4) return v4.split(".").reduce((acc, o) => (acc << 8n) | BigInt(Number(o)), 0n);
  if (isIP(address) !== 6) return null;
  const [head, tail] = address.split("::") as [string, string | undefined];
  let tailParts = tail !== undefined ? tail.split(":").filter(Boolean) : [];
  let headParts = head.split(":").filter(Boolean);
  const expand = (parts: string[]) =>
    parts.flatMap((p) => {
      if (p.includes(".")) {
        const o = p.split(".").map(Number);
        return [((o[0]! << 8) | o[1]!).toString(16), ((o[2]! << 8) | o[3]!).toString(16)];
      }
      return [p];
    });
  headParts = expand(headParts);
  tailParts = expand(tailParts);
  const fill = 8 - headParts.length - tailParts.length;
  const all = [...headParts, ...Array(tail !== undefined ? fill : 0).fill("0"), ...tailParts];
  return all.reduce((acc, h) => (acc << 16n) | BigInt(parseInt(h, 16)), 0n);
}

/** `::ffff:1.2.3.4` → `1.2.3.4`; anything else unchanged. */
export function unmapV4(address: string): string {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  return m ? m[1]! : address;
}
