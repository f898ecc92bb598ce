import { execFile, execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { promisify } from "node:util";
import { loadStack, readStackConfig, stackFile } from "../config/load";
import { ConfigError, findAliasLoops, type MailConfig, parseConfig } from "../config/schema";

const run = promisify(execFile);
const base = () => readStackConfig(stackFile("dev"));

/** Parses the dev stack with some keys replaced; returns the problems (none → []). */
function problems(overrides: Record<string, unknown>): Array<{ path: string; message: string }> {
  try {
    parseConfig({ ...base(), ...overrides });
    return [];
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
}

describe("shipped stacks", () => {
  it.each(["dev", "lx", "sina", "sohu"])("%s parses", (name) => {
    const c = loadStack(name);
    expect(c.users.length).toBeGreaterThan(0);
    expect(c.destinations).toEqual([c.hostname, c.domain]);
  });

  it("lx is the seed's host", () => {
    const c = loadStack("lx");
    expect(c).toMatchObject({
      domain: "lx.com",
      hostname: "mail.lx.com",
      myorigin: "lx.com",
      publicAddress: "192.168.25.100",
      trustedNetworks: ["192.168.25.0/24"],
    });
    expect(c.users.map((u) => u.name)).toEqual(["lx", "lei"]);
    expect(c.aliases.bin).toEqual(["lx"]);
  });

  it("dev listens on 127.0.0.1 with the documented ports", () => {
    const c = loadStack("dev");
    const ports = Object.fromEntries(Object.entries(c.listen).map(([k, v]) => [k, v && `${v.address}:${v.port}`]));
    expect(ports).toEqual({
      smtp: "127.0.0.1:2525",
      submission: "127.0.0.1:2587",
      smtps: "127.0.0.1:2465",
      pop3: "127.0.0.1:2110",
      pop3s: "127.0.0.1:2995",
      imap: "127.0.0.1:2143",
      imaps: "127.0.0.1:2993",
      dns: "127.0.0.1:5353",
    });
    expect(path.isAbsolute(c.dataDir)).toBe(true);
  });
});

describe("defaults", () => {
  let c: MailConfig;
  beforeAll(() => {
    c = parseConfig({
      "mailstack:domain": "Example.ORG",
      "mailstack:publicAddress": "203.0.113.5",
      "mailstack:dataDir": "/var/lib/mailstack",
      "mailstack:users": [{ name: "Alice", passwordHash: "{SHA512-CRYPT}$6$abc$def" }],
      "other:key": "ignored",
    });
  });
  it("derives hostname, myorigin and destinations like Postfix", () => {
    expect(c.domain).toBe("example.org");
    expect(c.hostname).toBe("mail.example.org");
    expect(c.myorigin).toBe("example.org");
    expect(c.destinations).toEqual(["mail.example.org", "example.org"]);
  });
  it("maps the system aliases to the admin (the first user)", () => {
    expect(c.admin).toBe("alice");
    for (const a of ["postmaster", "abuse", "mailer-daemon", "bin", "daemon", "root"]) expect(c.aliases[a]).toEqual(["alice"]);
  });
  it("has the documented limits and standard ports", () => {
    expect(c.limits.messageSize).toBe(10 * 1024 * 1024);
    expect(c.limits.recipients).toBe(1000);
    expect(c.listen.smtp).toEqual({ address: "0.0.0.0", port: 25 });
    expect(c.listen.imaps).toEqual({ address: "0.0.0.0", port: 993 });
    expect(c.queue.minBackoff).toBe(300);
    expect(c.queue.maxLifetime).toBe(5 * 86400);
    expect(c.dns.nameserver).toBe("ns1.example.org");
    expect(c.dns.reverseNetwork).toBe("203.0.113.0/24");
  });
  it("parses sizes and durations", () => {
    const d = parseConfig({ ...base(), "mailstack:limits": { messageSize: "25MiB", idleTimeout: "2m" } });
    expect(d.limits.messageSize).toBe(25 * 1024 * 1024);
    expect(d.limits.idleTimeout).toBe(120);
  });
});

describe("bad config names the key and the reason", () => {
  const cases: Array<[string, Record<string, unknown>, string, RegExp]> = [
    ["a bad domain", { "mailstack:domain": "not a domain" }, "mailstack:domain", /not a valid domain/],
    ["a bad CIDR", { "mailstack:trustedNetworks": ["192.168.25.0/33"] }, "mailstack:trustedNetworks[0]", /CIDR/],
    ["0.0.0.0/0", { "mailstack:trustedNetworks": ["10.0.0.0/8", "0.0.0.0/0"] }, "mailstack:trustedNetworks[1]", /open relay/],
    ["::/0", { "mailstack:trustedNetworks": ["::/0"] }, "mailstack:trustedNetworks[0]", /open relay/],
    [
      "a duplicate user",
      {
        "mailstack:users": [
          { name: "lx", passwordHash: "$6$a$b" },
          { name: "LX", passwordHash: "$6$a$b" },
        ],
      },
      "mailstack:users[1].name",
      /duplicate user/,
    ],
    ["a user without a password", { "mailstack:users": [{ name: "lx" }] }, "mailstack:users[0]", /no password/],
    ["an alias loop", { "mailstack:aliases": { a: "b", b: ["c"], c: "a@lx.com" } }, "mailstack:aliases.a", /alias loop: a → b → c → a/],
    [
      "an alias to nobody",
      { "mailstack:aliases": { sales: ["lx", "ghost"] } },
      "mailstack:aliases.sales[1]",
      /"ghost" is not a user or alias/,
    ],
    ["a port out of range", { "mailstack:listen": { smtp: 70000 } }, "mailstack:listen.smtp", /<=65535/],
    ["a port of 0 for a fixed listener", { "mailstack:listen": { pop3: -1 } }, "mailstack:listen.pop3", />=0/],
    ["an unknown key", { "mailstack:limts": {} }, "mailstack", /unknown key\(s\) limts/],
    ["a missing domain", { "mailstack:domain": undefined }, "mailstack:domain", /required/],
    ["an admin who is not a user", { "mailstack:admin": "root" }, "mailstack:admin", /not a user/],
    ["a bad hash", { "mailstack:users": [{ name: "lx", passwordHash: "md5:abc" }] }, "mailstack:users[0].passwordHash", /argon2id/],
    [
      "an SSH host key that is not a public key line",
      { "mailstack:deploy": { sshHostKey: "SHA256:gHA/MRfiGY2RNSY6/2eF995YjmpuDjLoog064GmhSSc" } },
      "mailstack:deploy.sshHostKey",
      /must be an SSH public key line/,
    ],
    [
      "two listeners on one port",
      { "mailstack:listen": { address: "127.0.0.1", smtp: 2525, imap: 2525 } },
      "mailstack:listen.imap",
      /also used by listen.smtp/,
    ],
  ];
  it.each(cases)("%s", (_name, overrides, keyPath, reason) => {
    const found = problems(overrides);
    expect(found).toContainEqual({ path: keyPath, message: expect.stringMatching(reason) });
  });

  it("keeps the SSH host key as `<type> <base64>`, without the comment", () => {
    const key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDHc72uDaBae1Xl9+TOEqwFBvDIocBXCVpUw5KwpdQ3I";
    const c = parseConfig({ ...base(), "mailstack:deploy": { sshHostKey: `  ${key} root@mail.lx.com\n` } });
    expect(c.deploy.sshHostKey).toBe(key);
    expect(parseConfig(base()).deploy.sshHostKey).toBeUndefined();
  });

  it("lists every problem at once", () => {
    const found = problems({
      "mailstack:domain": "bad domain",
      "mailstack:trustedNetworks": ["nope"],
      "mailstack:listen": { smtp: 65536 },
    });
    expect(found.map((p) => p.path).sort()).toEqual(["mailstack:domain", "mailstack:listen.smtp", "mailstack:trustedNetworks[0]"]);
  });

  it("lists format problems and whole-config problems together", () => {
    const found = problems({
      "mailstack:domain": "bad domain",
      "mailstack:trustedNetworks": ["0.0.0.0/0", "10.0.0.0/33", "::/0"],
      "mailstack:users": [{ name: "lx", passwordHash: "$6$a$b" }, { name: "lei" }],
      "mailstack:aliases": { a: "b", b: "a", c: "ghost" },
      "mailstack:listen": { smtp: 70000 },
    });
    expect(found.map((p) => p.path).sort()).toEqual([
      "mailstack:aliases.a",
      "mailstack:aliases.c[0]",
      "mailstack:domain",
      "mailstack:listen.smtp",
      "mailstack:trustedNetworks[0]",
      "mailstack:trustedNetworks[1]",
      "mailstack:trustedNetworks[2]",
      "mailstack:users[1]",
    ]);
  });

  it("the CLI refuses bad config before starting, naming the key", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "mailstack-cfg-"));
    const file = path.join(dir, "Pulumi.bad.yaml");
    writeFileSync(
      file,
      "config:\n  mailstack:domain: lx.com\n  mailstack:publicAddress: 1.2.3.4\n  mailstack:dataDir: x\n  mailstack:trustedNetworks: [0.0.0.0/0]\n  mailstack:users: [{name: lx}]\n",
    );
    const err = await run(path.resolve("bin/mailstack"), ["check", "--config", file]).then(
      () => null,
      (e: { code: number; stderr: string }) => e,
    );
    expect(err?.code).toBe(78);
    expect(err?.stderr).toMatch(/mailstack:trustedNetworks\[0\]: 0\.0\.0\.0\/0 trusts every address/);
    expect(err?.stderr).toMatch(/mailstack:users\[0\]: user "lx" has no password/);
  });
});

describe("TLS material", () => {
  const pem = (args: string[]) => execFileSync("openssl", args, { encoding: "utf8" });
  it("refuses missing, malformed and mismatched certificate files, naming the key", () => {
    const dir = mkdtempSync(path.join(tmpdir(), "mailstack-tls-"));
    const key1 = path.join(dir, "k1.pem");
    const key2 = path.join(dir, "k2.pem");
    const cert1 = path.join(dir, "c1.pem");
    pem(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key1]);
    pem(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key2]);
    pem(["req", "-new", "-x509", "-key", key1, "-subj", "/CN=mail.lx.com", "-days", "2", "-out", cert1]);
    const withTls = (tls: Record<string, string>) => {
      try {
        loadStack("dev", { "mailstack:tls": tls });
        return [];
      } catch (err) {
        return (err as ConfigError).problems;
      }
    };
    expect(withTls({ certFile: cert1, keyFile: key1 })).toEqual([]);
    expect(withTls({ certFile: "/nonexistent/cert.pem", keyFile: key1 })).toEqual([
      { path: "mailstack:tls.certFile", message: "cannot read /nonexistent/cert.pem: ENOENT" },
    ]);
    expect(withTls({ certFile: key1, keyFile: key1 })).toEqual([{ path: "mailstack:tls.certFile", message: "is not a PEM certificate" }]);
    expect(withTls({ certFile: cert1, keyFile: key2 })).toEqual([
      { path: "mailstack:tls.keyFile", message: "does not match the certificate" },
    ]);
    expect(withTls({ cert: readFileSync(cert1, "utf8"), key: "not a key" })).toEqual([
      { path: "mailstack:tls.key", message: "is not a PEM private key" },
    ]);
  });
});

describe("findAliasLoops", () => {
  it("finds each cycle once, and none in a DAG", () => {
    expect(findAliasLoops({ a: ["b"], b: ["a"], c: ["c"] }, ["lx.com"])).toEqual([
      ["a", "b", "a"],
      ["c", "c"],
    ]);
    expect(findAliasLoops({ a: ["b", "c"], b: ["c"], c: ["x@other.org"] }, ["lx.com"])).toEqual([]);
  });
});
