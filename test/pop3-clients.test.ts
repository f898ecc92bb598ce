/**
 * The POP3 server against real clients: Python's poplib (plain, STLS, POP3_SSL) and curl
 * (pop3:// with and without --ssl-reqd, pop3s://, AUTH PLAIN, custom commands).
 */
import { promises as fs } from "node:fs";
import * as path from "node:path";
import { type Env, listFiles, loginSession, message, run, splitReplies, startEnv } from "./pop3-helpers";

const DOTS = message("dots", [".leading dot", "..two dots", ".", "last"]);
const SECOND = message("second", ["line 1", "line 2", "line 3"]);

/** Runs poplib with the given steps; prints a JSON record of everything the client saw. */
const POPLIB = String.raw`
import base64, json, poplib, ssl, sys
a = json.loads(sys.argv[1])
ctx = ssl.create_default_context(cafile=a["ca"])
out = {}
def s(b): return b.decode("latin1")
try:
    if a["mode"] == "ssl":
        p = poplib.POP3_SSL("127.0.0.1", a["port"], context=ctx, timeout=10)
    else:
        p = poplib.POP3("127.0.0.1", a["port"], timeout=10)
    out["welcome"] = s(p.getwelcome())
    out["capa_before"] = sorted(p.capa().keys())
    if a["mode"] == "stls":
        out["stls"] = s(p.stls(context=ctx))
        out["capa_tls"] = sorted(p.capa().keys())
    if a.get("plain"):
        tok = base64.b64encode(b"\0" + a["user"].encode() + b"\0" + a["password"].encode()).decode()
        out["login"] = s(p._shortcmd("AUTH PLAIN " + tok))
    else:
        out["user"] = s(p.user(a["user"]))
        out["login"] = s(p.pass_(a["password"]))
    out["stat"] = list(p.stat())
    out["list"] = [s(l) for l in p.list()[1]]
    out["uidl"] = [s(l) for l in p.uidl()[1]]
    r = p.retr(a["retr"])
    out["retr"] = [s(l) for l in r[1]]
    out["retr_octets"] = r[2]
    out["top"] = [s(l) for l in p.top(a["retr"], 1)[1]]
    for n in a.get("dele", []):
        out.setdefault("dele", []).append(s(p.dele(n)))
    if a.get("rset"):
        out["rset"] = s(p.rset())
    out["noop"] = s(p.noop())
    try:
        p.retr(99)
    except poplib.error_proto as e:
        out["retr_missing"] = s(e.args[0])
    out["quit"] = s(p.quit())
except Exception as e:
    out["error"] = repr(e)
print(json.dumps(out))
`;

async function poplib(env: Env, args: Record<string, unknown>): Promise<Record<string, unknown>> {
  const full = { ca: env.caFile, user: "lx", password: "lx-password", retr: 1, ...args };
  const r = await run("python3", ["-c", POPLIB, JSON.stringify(full)]);
  if (r.code !== 0) throw new Error(`python3 failed: ${r.stderr}`);
  const out = JSON.parse(r.stdout) as Record<string, unknown>;
  if (out.error) throw new Error(`poplib: ${out.error as string}\n${r.stdout}`);
  return out;
}

const curl = (args: string[]) => run("curl", ["-sS", "--max-time", "15", ...args]);
const asLines = (m: string) => m.split("\r\n").slice(0, -1);

describe("POP3 with real clients (trusted loopback)", () => {
  let env: Env;
  beforeAll(async () => {
    env = await startEnv();
    await env.deliver("lx", DOTS);
    await env.deliver("lx", SECOND);
  });
  afterAll(async () => {
    await env.stop();
    await fs.rm(env.dataDir, { recursive: true, force: true });
  });

  test("poplib: USER/PASS, STAT, LIST, UIDL, RETR (dot-stuffing undone), TOP, RSET, errors", async () => {
    const out = await poplib(env, { port: env.port, mode: "plain", dele: [1], rset: true });
    expect(out.welcome).toMatch(/^\+OK/);
    expect(out.capa_before).toEqual(
      ["AUTH-RESP-CODE", "IMPLEMENTATION", "PIPELINING", "RESP-CODES", "SASL", "STLS", "TOP", "UIDL", "USER"].sort(),
    );
    expect(out.login).toMatch(/^\+OK Logged in/);
    const sizes = [DOTS, SECOND].map((m) => Buffer.byteLength(m));
    expect(out.stat).toEqual([2, sizes[0]! + sizes[1]!]);
    expect(out.list).toEqual([`1 ${sizes[0]}`, `2 ${sizes[1]}`]);
    expect((out.uidl as string[]).map((l) => l.split(" ")[0])).toEqual(["1", "2"]);
    expect(out.retr).toEqual(asLines(DOTS));
    expect(out.top).toEqual(asLines(DOTS).slice(0, asLines(DOTS).indexOf("") + 2));
    expect(out.dele).toEqual(["+OK Message 1 marked to be deleted."]);
    expect(out.rset).toMatch(/^\+OK 2 messages/);
    expect(out.retr_missing).toBe("-ERR There's no message 99.");
    expect(out.quit).toMatch(/^\+OK/);
  });

  test("poplib: STLS and POP3_SSL verify the server certificate", async () => {
    const stls = await poplib(env, { port: env.port, mode: "stls", retr: 2 });
    expect(stls.stls).toMatch(/^\+OK/);
    expect(stls.capa_tls).not.toContain("STLS");
    expect(stls.retr).toEqual(asLines(SECOND));
    const ssl = await poplib(env, { port: env.tlsPort, mode: "ssl", retr: 2, plain: true });
    expect(ssl.capa_before).not.toContain("STLS");
    expect(ssl.login).toMatch(/^\+OK Logged in/);
    expect(ssl.retr).toEqual(asLines(SECOND));
  });

  test("curl: LIST and RETR over pop3://, the same bytes as delivered", async () => {
    const list = await curl(["-u", "lx:lx-password", `pop3://127.0.0.1:${env.port}/`]);
    expect(list.code).toBe(0);
    expect(list.stdout).toBe(`1 ${Buffer.byteLength(DOTS)}\r\n2 ${Buffer.byteLength(SECOND)}\r\n`);
    const retr = await curl(["-u", "lx:lx-password", `pop3://127.0.0.1:${env.port}/1`]);
    expect(retr.code).toBe(0);
    expect(retr.stdout).toBe(DOTS);
  });

  test("curl: pop3s:// and STLS with the stack's certificate, AUTH PLAIN, UIDL", async () => {
    const pop3s = await curl(["--cacert", env.caFile, "-u", "lx:lx-password", `pop3s://127.0.0.1:${env.tlsPort}/2`]);
    expect(pop3s.stderr).toBe("");
    expect(pop3s.stdout).toBe(SECOND);
    const stls = await curl(["--ssl-reqd", "--cacert", env.caFile, "-u", "lx:lx-password", `pop3://127.0.0.1:${env.port}/2`]);
    expect(stls.stdout).toBe(SECOND);
    const plain = await curl(["-v", "--login-options", "AUTH=PLAIN", "-u", "lx:lx-password", `pop3://127.0.0.1:${env.port}/1`]);
    expect(plain.stderr).toMatch(/> AUTH PLAIN/);
    expect(plain.stderr).not.toMatch(/> USER/);
    expect(plain.stdout).toBe(DOTS);
    const uidl = await curl(["-u", "lx:lx-password", "-X", "UIDL", `pop3://127.0.0.1:${env.port}/`]);
    expect(uidl.stdout).toMatch(/^1 [0-9a-f]{16}\r\n2 [0-9a-f]{16}\r\n$/);
    const bad = await curl(["-u", "lx:wrong", `pop3://127.0.0.1:${env.port}/1`]);
    expect(bad.code).toBe(67); // CURLE_LOGIN_DENIED
  });

  test("curl: DELE takes effect at QUIT", async () => {
    await env.deliver("lei", message("to-delete", ["x"]));
    const root = path.join(env.dataDir, "mail", "lei");
    const count = async () => (await listFiles(path.join(root, "new"))).length + (await listFiles(path.join(root, "cur"))).length;
    expect(await count()).toBe(1);
    const dele = await curl(["-u", "lei:lei-password", "-X", "DELE 1", "-I", `pop3://127.0.0.1:${env.port}/`]);
    expect(dele.code).toBe(0);
    expect(await count()).toBe(0);
  });
});

describe("POP3 with real clients (untrusted: 127.0.0.1 not in trustedNetworks)", () => {
  let env: Env;
  beforeAll(async () => {
    env = await startEnv({ trustedNetworks: ["192.0.2.0/24"] });
    await env.deliver("lx", SECOND);
  });
  afterAll(async () => {
    await env.stop();
    await fs.rm(env.dataDir, { recursive: true, force: true });
  });

  test("curl cannot log in without TLS, and can with STLS or pop3s", async () => {
    const refused = await curl(["-u", "lx:lx-password", `pop3://127.0.0.1:${env.port}/1`]);
    expect(refused.code).not.toBe(0);
    expect(refused.stdout).toBe("");
    const stls = await curl(["--ssl-reqd", "--cacert", env.caFile, "-u", "lx:lx-password", `pop3://127.0.0.1:${env.port}/1`]);
    expect(stls.stdout).toBe(SECOND);
    const pop3s = await curl(["--cacert", env.caFile, "-u", "lx:lx-password", `pop3s://127.0.0.1:${env.tlsPort}/1`]);
    expect(pop3s.stdout).toBe(SECOND);
  });

  test("poplib sees no USER/SASL before STLS, both after", async () => {
    const out = await poplib(env, { port: env.port, mode: "stls" });
    expect(out.capa_before).not.toContain("USER");
    expect(out.capa_before).not.toContain("SASL");
    expect(out.capa_tls).toContain("USER");
    expect(out.capa_tls).toContain("SASL");
    expect(out.retr).toEqual(asLines(SECOND));
  });
});

describe("the same maildrop through Dovecot's own pop3", () => {
  let env: Env;
  beforeAll(async () => {
    env = await startEnv();
    await env.deliver("lx", DOTS);
    await env.deliver("lx", SECOND);
    await env.deliver("lx", message("third", ["x", ".", "y"]));
  });
  afterAll(async () => {
    await env.stop();
    await fs.rm(env.dataDir, { recursive: true, force: true });
  });

  test("UIDL, LIST, RETR and TOP agree byte for byte with Dovecot 2.3 (default pop3_uidl_format)", async () => {
    const commands = ["UIDL", "LIST 1", "LIST 3", "RETR 1", "RETR 2", "RETR 3", "TOP 2 1", "TOP 3 2", "UIDL 2"];
    const multi = (cmd: string) => cmd === "UIDL" || cmd.startsWith("RETR") || cmd.startsWith("TOP");

    // Ours first: it also writes dovecot-uidlist, which Dovecot then reads.
    const c = await loginSession(env.port);
    c.write(commands.map((x) => `${x}\r\n`).join(""));
    c.write("QUIT\r\n");
    await c.closed();
    const ours = splitReplies(c.unread, commands, multi);

    // Dovecot's pop3 binary, pre-authenticated on stdin/stdout, as an unprivileged user (Dovecot
    // refuses mail access as root), on the very same Maildir.
    const dir = path.join(env.dataDir, "dovecot");
    await fs.mkdir(dir, { recursive: true });
    const conf = path.join(dir, "dovecot.conf");
    await fs.writeFile(
      conf,
      [
        `mail_location = maildir:${path.join(env.dataDir, "mail")}/%u`,
        `base_dir = ${dir}/run`,
        `state_dir = ${dir}/state`,
        `log_path = ${dir}/dovecot.log`,
        "ssl = no",
        "",
      ].join("\n"),
    );
    await run("chmod", ["-R", "a+rwX", env.dataDir]);
    const dovecot = await run("setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", "/usr/lib/dovecot/pop3", "-c", conf], {
      input: `${commands.join("\r\n")}\r\nQUIT\r\n`,
      env: { PATH: process.env.PATH, USER: "lx", HOME: env.dataDir },
    });
    const log = await fs.readFile(path.join(dir, "dovecot.log"), "utf8").catch(() => "");
    expect({ code: dovecot.code, log: log.split("\n").filter((l) => /Error|Fatal/.test(l)) }).toEqual({ code: 0, log: [] });
    // Run pre-authenticated, Dovecot sends no greeting: the replies start at once.
    const theirs = splitReplies(dovecot.stdout, commands, multi);

    expect(ours[0]!.body).toMatch(/^1 [0-9a-f]{16}\r\n2 [0-9a-f]{16}\r\n3 [0-9a-f]{16}\r\n\.\r\n$/);
    commands.forEach((cmd, i) => {
      expect({ cmd, body: ours[i]!.body }).toEqual({ cmd, body: theirs[i]!.body });
      // Status lines agree where RFC 1939 fixes their content (UIDL n, LIST n, RETR's size).
      if (/^(LIST|UIDL) \d|^RETR/.test(cmd)) expect({ cmd, status: ours[i]!.status }).toEqual({ cmd, status: theirs[i]!.status });
    });
  });
});
