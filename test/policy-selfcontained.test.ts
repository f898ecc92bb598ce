/**
 * The policy pack is self-contained: it imports nothing outside policy/ (a published pack, or
 * `pulumi preview --policy-pack policy` from another checkout, has no ../components or ../lib),
 * and its copies of mailstack's constants and CIDR parser cannot drift from the originals.
 */
import { readdirSync, readFileSync } from "node:fs";
import * as path from "node:path";
import fc from "fast-check";
import * as components from "../components/constants";
import { parseCidr as libParseCidr } from "../lib/cidr";
import { parseCidr as policyParseCidr } from "../policy/cidr";
import * as policy from "../policy/constants";

const POLICY = path.resolve(__dirname, "../policy");

test("no module of the pack imports anything outside policy/ (or an undeclared package)", () => {
  const pkg = JSON.parse(readFileSync(path.join(POLICY, "package.json"), "utf8")) as { dependencies: Record<string, string> };
  const sources = readdirSync(POLICY).filter((f) => f.endsWith(".ts"));
  expect(sources).toEqual(expect.arrayContaining(["index.ts", "policies.ts", "constants.ts", "cidr.ts"]));
  for (const file of sources) {
    const text = readFileSync(path.join(POLICY, file), "utf8");
    for (const m of text.matchAll(/(?:from|import|require\()\s*["']([^"']+)["']/g)) {
      const spec = m[1]!;
      if (spec.startsWith("."))
        expect({ file, spec, inside: path.resolve(POLICY, spec).startsWith(`${POLICY}/`) }).toEqual({ file, spec, inside: true });
      else if (!spec.startsWith("node:"))
        expect({
          file,
          spec,
          declared:
            spec
              .split("/")
              .slice(0, spec.startsWith("@") ? 2 : 1)
              .join("/") in pkg.dependencies,
        }).toEqual({ file, spec, declared: true });
    }
  }
});

test("the pack's constants are exactly mailstack's", () => {
  expect({ ...policy }).toEqual({ ...components });
});

test("the pack's CIDR parser agrees with lib/cidr on every input", () => {
  const v4 = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((o) => o.join("."));
  const v6 = fc.array(fc.nat(0xffff), { minLength: 8, maxLength: 8 }).map((g) => g.map((x) => x.toString(16)).join(":"));
  const text = fc.oneof(
    fc.tuple(v4, fc.integer({ min: -1, max: 40 })).map(([a, p]) => (p < 0 ? a : `${a}/${p}`)),
    fc.tuple(v6, fc.integer({ min: -1, max: 130 })).map(([a, p]) => (p < 0 ? a : `${a}/${p}`)),
    fc.constantFrom("0.0.0.0/0", "::/0", "::ffff:10.0.0.1/128", "172.17.0.0/16", "fc00::/7", "not-a-net", "1.2.3.4/x", "::1"),
    fc.string(),
  );
  fc.assert(
    fc.property(text, (t) => {
      expect(policyParseCidr(t)).toEqual(libParseCidr(t));
    }),
    { numRuns: 500 },
  );
});
