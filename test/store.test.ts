import { execFileSync } from "node:child_process";
import { promises as fs, mkdtempSync, readdirSync, readFileSync } from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import * as path from "node:path";
import fc from "fast-check";
import { loadStack } from "../config/load";
import { parseConfig } from "../config/schema";
import { Aliases, isPlainLocalPart } from "../store/aliases";
import { MaildirDelivery } from "../store/deliver";
import {
  ensureUserMaildir,
  flagsToLetters,
  folderDir,
  lettersToFlags,
  maildirRoot,
  parseFileName,
  uniqueName,
  wireSize,
  writeMessage,
} from "../store/maildir";
import { sha512Crypt, verifySha512Crypt } from "../store/sha512crypt";
import { TemporaryFailure } from "../store/types";
import { argon2Concurrency, hashPassword, UserDb, verifyPassword } from "../store/users";

const tmp = () => mkdtempSync(path.join(tmpdir(), "mailstack-store-"));

describe("alias expansion", () => {
  const config = loadStack("dev");
  const aliases = new Aliases(config);

  it("routes users, aliases, sub-addresses and system aliases", () => {
    expect(aliases.route("lx@lx.com")).toEqual({ kind: "local", users: ["lx"], forward: [] });
    expect(aliases.route("LEI@Mail.LX.com")).toEqual({ kind: "local", users: ["lei"], forward: [] });
    expect(aliases.route("bin@lx.com")).toEqual({ kind: "local", users: ["lx"], forward: [] });
    expect(aliases.route("team@lx.com")).toEqual({ kind: "local", users: ["lei", "lx"], forward: [] });
    expect(aliases.route("lei+lists@lx.com")).toEqual({ kind: "local", users: ["lei"], forward: [] });
    expect(aliases.route("Postmaster@lx.com")).toEqual({ kind: "local", users: ["lx"], forward: [] });
    expect(aliases.route("ghost@lx.com")).toEqual({ kind: "unknown" });
    expect(aliases.route("someone@sohu.com")).toEqual({ kind: "remote", domain: "sohu.com" });
  });

  it("never interprets relay tricks in the local part", () => {
    for (const a of ["user%other.com@lx.com", "other.com!user@lx.com", '"user@other.com"@lx.com', "user@other.com@lx.com"])
      expect(aliases.route(a).kind).toBe("unknown");
  });

  it("expands nested aliases with external targets, de-duplicated", () => {
    const c = parseConfig({
      "mailstack:domain": "lx.com",
      "mailstack:publicAddress": "192.0.2.1",
      "mailstack:dataDir": "/tmp/x",
      "mailstack:users": [
        { name: "a", passwordHash: "$6$x$y" },
        { name: "b", passwordHash: "$6$x$y" },
      ],
      "mailstack:aliases": { all: ["a", "grp", "A@lx.com", "friend@example.org"], grp: ["b", "a", "FRIEND@example.org"] },
    });
    expect(new Aliases(c).route("ALL@lx.com")).toEqual({
      kind: "local",
      users: ["a", "b"],
      forward: ["FRIEND@example.org", "friend@example.org"],
    });
  });

  it("property: expansion terminates, yields only real users, and is case-insensitive", () => {
    const names = ["u0", "u1", "u2", "a0", "a1", "a2", "a3"];
    fc.assert(
      fc.property(
        fc.dictionary(fc.constantFrom("a0", "a1", "a2", "a3"), fc.array(fc.constantFrom(...names), { minLength: 1, maxLength: 4 })),
        fc.constantFrom(...names),
        fc.boolean(),
        (map, start, upper) => {
          // Build an Aliases directly (cycles allowed here: expansion must still terminate).
          const cfg = {
            users: [{ name: "u0" }, { name: "u1" }, { name: "u2" }],
            aliases: map,
            destinations: ["lx.com"],
          } as unknown as ConstructorParameters<typeof Aliases>[0];
          const al = new Aliases(cfg);
          const r = al.route(`${upper ? start.toUpperCase() : start}@lx.com`);
          if (r.kind === "local") {
            expect(new Set(r.users).size).toBe(r.users.length);
            for (const u of r.users) expect(["u0", "u1", "u2"]).toContain(u);
          }
          expect(al.route(`${start}@lx.com`)).toEqual(al.route(`${start.toUpperCase()}@LX.COM`));
        },
      ),
    );
  });

  it("property: any local part with % ! @ or quotes is never routed", () => {
    fc.assert(
      fc.property(fc.string(), fc.constantFrom("%", "!", "@", '"', " ", "\\"), fc.string(), (a, sep, b) => {
        const local = `lx${a}${sep}${b}`;
        expect(isPlainLocalPart(local)).toBe(false);
        expect(new Aliases(loadStack("dev")).route(`${local}@lx.com`).kind).not.toBe("local");
      }),
    );
  });
});

describe("Maildir naming", () => {
  it("property: unique names never repeat and round-trip their sizes", () => {
    const seen = new Set<string>();
    fc.assert(
      fc.property(fc.nat(), fc.nat(), (s, w) => {
        const name = uniqueName(s, w);
        expect(seen.has(name)).toBe(false);
        seen.add(name);
        expect(name).not.toMatch(/[/:]/);
        const parsed = parseFileName(`${name}:2,RS`);
        expect(parsed).toEqual({ key: name, size: s, wireSize: w, flags: "RS" });
      }),
    );
  });

  it("property: flag letters round-trip in Maildir order", () => {
    const flags = ["\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft"];
    fc.assert(
      fc.property(fc.subarray(flags), (sub) => {
        const letters = flagsToLetters(sub);
        expect(letters).toBe([...letters].sort().join(""));
        expect(lettersToFlags(letters).sort()).toEqual([...sub].sort());
      }),
    );
  });

  it("counts wire size with CRLF", () => {
    expect(wireSize(Buffer.from("a\nb\r\nc\n"))).toBe(9);
  });

  it("refuses folder names that escape the Maildir", () => {
    const root = "/data/mail/lx";
    expect(folderDir(root, "INBOX")).toBe(root);
    expect(folderDir(root, "Sent")).toBe("/data/mail/lx/.Sent");
    expect(folderDir(root, "Archive/2024")).toBe("/data/mail/lx/.Archive.2024");
    for (const bad of ["..", "../x", "a/../../b", "/etc", "a//b", "a.b", "~root", "x\u0000y", ""]) expect(folderDir(root, bad)).toBeNull();
    expect(() => maildirRoot("/data", "../etc")).toThrow();
  });
});

describe("durable delivery", () => {
  it("delivers to several users as hard links of one fsynced file, with Dovecot's layout", async () => {
    const dir = tmp();
    const d = new MaildirDelivery(dir);
    const data = Buffer.from("Subject: hi\r\n\r\nbody\r\n");
    const placed = await d.deliverLocal(["lx", "lei", "lx"], data);
    expect(placed).toHaveLength(2);
    for (const user of ["lx", "lei"]) {
      const root = path.join(dir, "mail", user);
      const files = readdirSync(path.join(root, "new"));
      expect(files).toHaveLength(1);
      expect(readFileSync(path.join(root, "new", files[0]!))).toEqual(data);
      expect(files[0]).toMatch(new RegExp(`,S=${data.length},W=${data.length}$`));
      expect(readdirSync(path.join(root, "tmp"))).toEqual([]);
      for (const f of ["Drafts", "Sent", "Trash", "Junk"])
        expect(readdirSync(path.join(root, `.${f}`)).sort()).toEqual(["cur", "maildirfolder", "new", "tmp"]);
      expect(readFileSync(path.join(root, "subscriptions"), "utf8")).toBe("Drafts\nSent\nTrash\nJunk\n");
    }
  });

  it("leaves nothing visible in new/ when a recipient's Maildir cannot be written", async () => {
    const dir = tmp();
    await ensureUserMaildir(dir, "lx");
    await ensureUserMaildir(dir, "lei");
    // lei's new/ is a file: the link into it fails after lx's link succeeded.
    await fs.rm(path.join(dir, "mail", "lei", "new"), { recursive: true });
    await fs.writeFile(path.join(dir, "mail", "lei", "new"), "");
    const d = new MaildirDelivery(dir);
    await expect(d.deliverLocal(["lx", "lei"], Buffer.from("x\r\n"))).rejects.toBeInstanceOf(TemporaryFailure);
    expect(readdirSync(path.join(dir, "mail", "lx", "new"))).toEqual([]);
    expect(readdirSync(path.join(dir, "mail", "lx", "tmp"))).toEqual([]);
  });

  it("reports a temporary failure when fsync fails (strace fault injection)", () => {
    const dir = tmp();
    const script = `require("ts-node").register({transpileOnly:true});
      const { MaildirDelivery } = require(${JSON.stringify(path.resolve("store/deliver.ts"))});
      const { ensureUserMaildir } = require(${JSON.stringify(path.resolve("store/maildir.ts"))});
      (async () => { await ensureUserMaildir(${JSON.stringify(dir)}, "lx");
        try { await new MaildirDelivery(${JSON.stringify(dir)}).deliverLocal(["lx"], Buffer.from("x\\r\\n")); console.log("DELIVERED"); }
        catch (e) { console.log("FAILED " + e.name + " " + e.code); } })();`;
    const out = execFileSync(
      "strace",
      ["-f", "-qq", "-o", "/dev/null", "-e", "trace=fsync", "-e", "inject=fsync:error=EIO", process.execPath, "-e", script],
      {
        encoding: "utf8",
      },
    );
    expect(out.trim()).toBe("FAILED TemporaryFailure EIO");
    expect(readdirSync(path.join(dir, "mail", "lx", "new"))).toEqual([]);
  });

  it("with a name, delivery is idempotent: a retry after a crash adds no second copy", async () => {
    const dir = tmp();
    const d = new MaildirDelivery(dir);
    const data = Buffer.from("Subject: bounce\r\n\r\nx\r\n");
    const name = "1764316800.M0Qabc123.mailstack-queue";
    expect(await d.deliverLocal(["lx"], data, { name })).toHaveLength(1);
    expect(await d.deliverLocal(["lx", "lei"], data, { name })).toHaveLength(1); // only lei is new
    // A client moved lx's copy to cur/ and flagged it: still found.
    const [file] = readdirSync(path.join(dir, "mail", "lx", "new"));
    await fs.rename(path.join(dir, "mail", "lx", "new", file!), path.join(dir, "mail", "lx", "cur", `${file}:2,S`));
    expect(await d.deliverLocal(["lx"], data, { name })).toEqual([]);
    for (const u of ["lx", "lei"]) {
      const all = [...readdirSync(path.join(dir, "mail", u, "new")), ...readdirSync(path.join(dir, "mail", u, "cur"))];
      expect(all).toHaveLength(1);
      expect(readdirSync(path.join(dir, "mail", u, "tmp"))).toEqual([]);
    }
  });

  it("writeMessage puts flagged messages in cur/ with the :2, suffix", async () => {
    const dir = tmp();
    const root = await ensureUserMaildir(dir, "lx");
    const r = await writeMessage(path.join(root, ".Sent"), Buffer.from("a\r\n"), { flags: ["\\Seen"] });
    expect(r.dir).toBe("cur");
    expect(r.file).toMatch(/:2,S$/);
  });
});

describe("passwords", () => {
  it("verifies argon2id and Dovecot SHA512-CRYPT hashes", async () => {
    const h = await hashPassword("pässword");
    expect(h).toMatch(/^\$argon2id\$v=19\$m=19456,t=2,p=1\$/);
    expect(await verifyPassword("pässword", h)).toBe(true);
    expect(await verifyPassword("password", h)).toBe(false);
    const crypt = execFileSync("openssl", ["passwd", "-6", "-salt", "dovecotsalt", "secret"], { encoding: "utf8" }).trim();
    expect(sha512Crypt("secret", crypt)).toBe(crypt);
    expect(await verifyPassword("secret", `{SHA512-CRYPT}${crypt}`)).toBe(true);
    expect(verifySha512Crypt("Secret", crypt)).toBe(false);
  });

  it("runs at most one argon2id check per core at once, and every queued check gets its own answer", async () => {
    const a = await hashPassword("alpha");
    const b = await hashPassword("beta");
    const checks = Array.from({ length: 12 }, (_, i) => {
      const [hash, right] = i % 2 ? [b, "beta"] : [a, "alpha"];
      const password = i % 3 === 0 ? "wrong" : right;
      return verifyPassword(password, hash).then((ok) => ({ ok, expected: password !== "wrong" }));
    });
    const results = await Promise.all(checks);
    expect(results.map((r) => r.ok)).toEqual(results.map((r) => r.expected));
    const { slots, peak } = argon2Concurrency();
    expect(slots).toBe(availableParallelism());
    expect(peak).toBeLessThanOrEqual(slots);
    expect(peak).toBeGreaterThanOrEqual(1);
  });

  it("gives the same answer for an unknown user as for a wrong password, and throttles", async () => {
    const config = parseConfig({ ...loadStackRaw(), "mailstack:limits": { authFailureDelay: 0.05, authFailures: 3 } });
    const db = new UserDb(config);
    expect(await db.authenticate("LX@lx.com", "lx-password", "192.0.2.1")).toEqual({ ok: true, user: "lx" });
    const wrong = await db.authenticate("lx", "nope", "192.0.2.2");
    const unknown = await db.authenticate("ghost", "nope", "192.0.2.2");
    expect(wrong).toEqual(unknown);
    await db.authenticate("lx", "nope", "192.0.2.2");
    expect(await db.authenticate("lx", "lx-password", "192.0.2.2")).toEqual({ ok: false, reason: "throttled" });
    expect(await db.authenticate("lx", "lx-password", "192.0.2.3")).toEqual({ ok: true, user: "lx" });
    expect(await db.authenticate("lx@other.org", "lx-password", "192.0.2.3")).toEqual({ ok: false, reason: "invalid" });
  });
});

function loadStackRaw(): Record<string, unknown> {
  // The dev stack's own keys, for overriding before parsing.
  const { readStackConfig, stackFile } = require("../config/load") as typeof import("../config/load");
  return readStackConfig(stackFile("dev"));
}
