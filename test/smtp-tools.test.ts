/**
 * The SMTP server with the command-line clients admins use: swaks (Debian swaks, with
 * libnet-ssleay-perl for TLS) and curl (smtp:// with STARTTLS, smtps://).
 */
import { execFile } from "node:child_process";
import { promises as fs } from "node:fs";
import * as path from "node:path";
import { decodeEntry } from "../queue/spool";
import { inbox, queued, startTestSmtp, type TestServer, testConfig, tmpDir } from "./helpers/smtp";

let server: TestServer;
beforeAll(async () => {
  server = await startTestSmtp(testConfig({ trustedNetworks: ["10.9.9.0/24"] }));
});
afterAll(() => server.close());

function run(cmd: string, args: string[]): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: 20_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === "number" ? err.code : 1) : 0;
      resolve({ code, out: `${stdout}${stderr}` });
    });
  });
}

const count = async (user: string, needle: string) => (await inbox(server.config.dataDir, user)).filter((m) => m.data.includes(needle));
const server_ = (name: "smtp" | "submission" | "smtps") => `127.0.0.1:${server.port(name)}`;
/** swaks against one of the test server's listeners. */
const swaks = (name: "smtp" | "submission", ...args: string[]) => run("swaks", ["--server", server_(name), ...args]);
/** swaks options to authenticate as lx with `mechanism`. */
const asLx = (mechanism: string) => ["--auth", mechanism, "--auth-user", "lx", "--auth-password", "lx-password"];

describe("swaks", () => {
  it("delivers a message to a user", async () => {
    const r = await swaks("smtp", "--from", "lisi@sina.com", "--to", "lx@lx.com", "--header", "Subject: swaks-plain");
    expect(r.out).toContain("250 2.0.0 Ok: queued as");
    expect(r.code).toBe(0);
    const [m] = await count("lx", "Subject: swaks-plain");
    expect(m!.data).toMatch(/^Return-Path: <lisi@sina\.com>\r\nReceived: from /);
  });

  it("relays after STARTTLS and AUTH on submission", async () => {
    const args = ["--from", "lx@lx.com", "--to", "wangwu@sohu.com", "-tls", ...asLx("PLAIN"), "--header", "Subject: swaks-relay"];
    const r = await swaks("submission", ...args);
    expect(r.out).toContain("235 2.7.0 Authentication successful");
    expect(r.code).toBe(0);
    const entries = (await queued(server.config.dataDir)).map((f) => decodeEntry(f)).filter((e) => e.data.includes("swaks-relay"));
    expect(entries.map((e) => e.envelope.to)).toEqual([["wangwu@sohu.com"]]);
  });

  it("is refused relaying without AUTH, and plaintext AUTH without TLS", async () => {
    const relay = await swaks("smtp", "--from", "a@example.org", "--to", "wangwu@sohu.com");
    expect(relay.out).toContain("554 5.7.1");
    expect(relay.code).not.toBe(0);
    const auth = await swaks("smtp", "--to", "lx@lx.com", ...asLx("LOGIN"));
    // AUTH is not advertised without TLS to an untrusted client, so swaks gives up.
    expect(auth.code).not.toBe(0);
    expect(auth.out).toMatch(/did not advertise|not supported/i);
    expect(auth.out).not.toContain("235 ");
  });
});

describe("curl", () => {
  let file: string;
  /** curl uploading `file` from `from` to `rcpt` at `url`, with `opts` (TLS, credentials). */
  const send = (url: string, from: string, rcpt: string, ...opts: string[]) =>
    run("curl", ["-sS", ...opts, url, "--mail-from", from, "--mail-rcpt", rcpt, "--upload-file", file]);
  beforeAll(async () => {
    file = path.join(tmpDir("mailstack-curl-"), "mail.txt");
    // Bare LF line ends on purpose: the server stores CRLF.
    await fs.writeFile(file, "From: curl@example.org\nTo: bin@lx.com\nSubject: curl-plain\n\nsent by curl\n.hidden dot line\n");
  });

  it("delivers over smtp:// to an alias", async () => {
    const r = await send(`smtp://${server_("smtp")}`, "curl@example.org", "bin@lx.com");
    expect(r.out).toBe("");
    expect(r.code).toBe(0);
    const [m] = await count("lx", "Subject: curl-plain");
    expect(m!.data).toContain("\r\nsent by curl\r\n.hidden dot line\r\n");
    expect(/\r(?!\n)|(?<!\r)\n/.test(m!.data)).toBe(false);
  });

  it("authenticates over smtps:// (implicit TLS)", async () => {
    const r = await send(`smtps://${server_("smtps")}`, "lei@lx.com", "lx@lx.com", "-k", "--user", "lei:lei-password");
    expect(r.code).toBe(0);
    expect((await count("lx", "Subject: curl-plain")).filter((m) => /with ESMTPSA id/.test(m.data))).toHaveLength(1);
  });

  it("authenticates after STARTTLS (--ssl-reqd) on submission", async () => {
    const r = await send(`smtp://${server_("submission")}`, "lx@lx.com", "lei@lx.com", "-k", "--ssl-reqd", "--user", "lx:lx-password");
    expect(r.code).toBe(0);
    expect(await count("lei", "Subject: curl-plain")).toHaveLength(1);
  });

  it("fails for an unknown recipient and a wrong password", async () => {
    const unknown = await send(`smtp://${server_("smtp")}`, "a@example.org", "ghost@lx.com");
    expect(unknown.code).not.toBe(0);
    expect(unknown.out).toContain("550");
    const wrong = await send(`smtps://${server_("smtps")}`, "lx@lx.com", "lei@lx.com", "-k", "--user", "lx:nope");
    expect(wrong.code).toBe(67); // CURLE_LOGIN_DENIED
  });
});
