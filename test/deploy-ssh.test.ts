/**
 * `deploy.sshHostKey` against a real sshd on loopback: the ssh options the Docker provider gets
 * (components/mail-system.ts `engineSshOpts`) make OpenSSH accept the pinned host key and refuse
 * any other, on a port other than 22 (where ssh looks the host up as `[host]:port`). The test
 * never logs in: a host key that is accepted gets as far as "Permission denied (publickey)", one
 * that is refused stops at "Host key verification failed".
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { promises as fs } from "node:fs";
import { createServer, connect as tcpConnect } from "node:net";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { promisify } from "node:util";
import { engineSshOpts } from "../components/mail-system";

const run = promisify(execFile);
const SSHD = "/usr/sbin/sshd"; // Debian's openssh-server (scripts/setup-system installs it)

let dir: string;
let port: number;
let sshd: ChildProcess;
let hostKey: string;
let otherKey: string;

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  const p = (srv.address() as { port: number }).port;
  await new Promise((r) => srv.close(r));
  return p;
}

async function publicKey(file: string): Promise<string> {
  await run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "test@mailstack", "-f", file]);
  return (await fs.readFile(`${file}.pub`, "utf8")).trim();
}

beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(tmpdir(), "mailstack-sshd-"));
  hostKey = await publicKey(path.join(dir, "host"));
  otherKey = await publicKey(path.join(dir, "other"));
  port = await freePort();
  const conf = path.join(dir, "sshd_config");
  await fs.writeFile(
    conf,
    [
      `ListenAddress 127.0.0.1:${port}`,
      `HostKey ${path.join(dir, "host")}`,
      `PidFile ${path.join(dir, "sshd.pid")}`,
      "UsePAM no",
      "PasswordAuthentication no",
      "KbdInteractiveAuthentication no",
      "AuthorizedKeysFile none",
      "UseDNS no",
      "",
    ].join("\n"),
  );
  // sshd's privilege separation directory (made by the service unit, which never runs here).
  await fs.mkdir("/run/sshd", { recursive: true, mode: 0o755 });
  sshd = spawn(SSHD, ["-D", "-e", "-f", conf], { stdio: ["ignore", "ignore", "pipe"] });
  let err = "";
  sshd.stderr?.on("data", (d) => (err += d));
  // Ready when it accepts a connection.
  const end = Date.now() + 10_000;
  for (;;) {
    if (sshd.exitCode !== null) throw new Error(`sshd exited: ${err}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = tcpConnect(port, "127.0.0.1");
      s.on("connect", () => {
        s.destroy();
        resolve(true);
      });
      s.on("error", () => resolve(false));
    });
    if (ok) break;
    if (Date.now() > end) throw new Error(`sshd did not listen: ${err}`);
    await new Promise((r) => setTimeout(r, 50));
  }
});

afterAll(async () => {
  if (sshd && sshd.exitCode === null) sshd.kill("SIGTERM");
  await fs.rm(dir, { recursive: true, force: true });
});

/** ssh as the Docker provider runs it (its options, then the engine host's user and port). */
async function connect(sshHostKey: string): Promise<string> {
  const opts = engineSshOpts({ deploy: { sshUser: "root", sshPort: port, sshHostKey } });
  const args = [...opts, "-o", "ConnectTimeout=10", "-p", String(port), "-l", "nobody", "--", "127.0.0.1", "true"];
  const r = await run("ssh", args).then(
    () => "",
    (e: { stderr: string }) => e.stderr,
  );
  return r;
}

test("the pinned host key is accepted (ssh goes on to authenticate)", async () => {
  const err = await connect(hostKey.split(" ").slice(0, 2).join(" "));
  expect(err).toMatch(/Permission denied \(publickey\)/);
  expect(err).not.toMatch(/Host key verification failed/);
});

test("any other host key is refused before authentication", async () => {
  const err = await connect(otherKey.split(" ").slice(0, 2).join(" "));
  expect(err).toMatch(/Host key verification failed/);
  expect(err).not.toMatch(/Permission denied/);
});
