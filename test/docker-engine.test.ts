/**
 * The real Docker engine: the image from the repository's Dockerfile, and the service containers
 * run with exactly the specs the Pulumi components declare (serviceContainers → dockerCreateArgs,
 * the config file from renderServiceConfig, copied in as the provider's `uploads` does).
 *
 * Network safety: the containers use the host network but listen only on a random loopback
 * address; the test stack's resolvers point at its own DNS on loopback, with no upstream; nothing
 * is ever pulled (`--pull=never`, and the build checks its base image is local). No traffic
 * leaves the machine.
 *
 * Needs a running engine and the offline base image: `bash docker/prepare.sh` (as CI does).
 */
import { execFile, execFileSync, spawnSync } from "node:child_process";
import { randomBytes, randomInt } from "node:crypto";
import { chmodSync, chownSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import * as path from "node:path";
import { promisify } from "node:util";
import { ImapFlow } from "imapflow";
import nodemailer from "nodemailer";
import { parse as parseYaml } from "yaml";
import {
  CONFIG_PATH,
  type ContainerSpec,
  dataVolumeSpec,
  dockerVolumeCreateArgs,
  engineCreateRequest,
  renderServiceConfig,
  serializeServiceConfig,
  serviceContainers,
} from "../components/specs";
import { type MailConfig, parseConfig } from "../config/schema";
import { freeLoopbackPort as freePort } from "./helpers/ports";

const run = promisify(execFile);
const REPO = path.resolve(__dirname, "..");
const TAG = `mailstack:test-${process.pid}`;
/** The mailstack.build label of this run's images: afterAll prunes exactly these. */
const BUILD_ID = `test-${process.pid}-${randomBytes(4).toString("hex")}`;

async function docker(...args: string[]): Promise<string> {
  const { stdout } = await run("docker", args, { maxBuffer: 64 * 1024 * 1024 });
  return stdout.trim();
}

function dockerSync(...args: string[]) {
  return spawnSync("docker", args, { encoding: "utf8" });
}

/** The engine's Unix socket (DOCKER_HOST=unix://..., else the default). */
function engineSocket(): string {
  const host = process.env.DOCKER_HOST;
  if (host?.startsWith("unix://")) return host.slice("unix://".length);
  if (host) throw new Error(`DOCKER_HOST=${host}: this test talks to the Engine API over a Unix socket`);
  return "/var/run/docker.sock";
}

/** One Engine API request through curl; returns the parsed JSON body, throws on a non-2xx status. */
async function engineApi(method: string, apiPath: string, body?: unknown): Promise<unknown> {
  const args = ["-sS", "--unix-socket", engineSocket(), "-X", method, "-w", "\n%{http_code}"];
  if (body !== undefined) args.push("-H", "Content-Type: application/json", "--data-binary", JSON.stringify(body));
  const { stdout } = await run("curl", [...args, `http://localhost${apiPath}`], { maxBuffer: 16 * 1024 * 1024 });
  const cut = stdout.lastIndexOf("\n");
  const status = Number(stdout.slice(cut + 1));
  const text = stdout.slice(0, cut);
  if (status < 200 || status > 299) throw new Error(`${method} ${apiPath}: HTTP ${status}: ${text}`);
  return text === "" ? undefined : JSON.parse(text);
}

/** A random 127.x.y.z: nothing else on this machine listens there. */
function randomLoopback(): string {
  return `127.${randomInt(16, 250)}.${randomInt(1, 250)}.${randomInt(2, 250)}`;
}

async function waitFor<T>(what: string, fn: () => Promise<T>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      return await fn();
    } catch (err) {
      last = err;
      await new Promise((r) => setTimeout(r, 500));
    }
  }
  throw new Error(`${what}: timed out; last error: ${String((last as Error)?.message ?? last)}`);
}

let imageId = "";
let buildSeconds = 0;

beforeAll(async () => {
  const info = dockerSync("info", "--format", "{{.ServerVersion}}");
  if (info.status !== 0) throw new Error(`no Docker engine (run: bash docker/prepare.sh): ${info.stderr.trim()}`);
  const started = Date.now();
  const { stdout } = await run("bash", [path.join(REPO, "docker/build-image.sh"), TAG], {
    cwd: REPO,
    maxBuffer: 64 * 1024 * 1024,
    env: { ...process.env, MAILSTACK_BUILD: BUILD_ID },
  });
  buildSeconds = (Date.now() - started) / 1000;
  imageId = stdout.trim().split("\n").pop()!;
  expect(imageId).toMatch(/^sha256:[0-9a-f]{64}$/);
  process.stdout.write(`docker-engine: image ${TAG} (${imageId.slice(0, 19)}) built in ${buildSeconds.toFixed(1)}s\n`);
}, 15 * 60_000);

afterAll(async () => {
  if (imageId) dockerSync("image", "rm", TAG);
  // The classic builder leaves the build and deps stages as untagged images: remove this run's
  // (and only this run's: the filter names its build id) along with their untagged parents.
  dockerSync("image", "prune", "-f", "--filter", "label=mailstack.stage", "--filter", `label=mailstack.build=${BUILD_ID}`);
  const left = dockerSync("images", "-a", "-q", "--filter", `label=mailstack.build=${BUILD_ID}`).stdout.trim();
  if (left !== "") throw new Error(`images of build ${BUILD_ID} left behind: ${left.replace(/\n/g, " ")}`);
});

describe("the image", () => {
  test("runs as the non-root mailstack user, with node 22 and the production dependencies only", async () => {
    const out = await docker(
      "run",
      "--rm",
      "--pull=never",
      "--network",
      "none",
      "--entrypoint",
      "sh",
      imageId,
      "-c",
      "id -u; id -g; node --version; test -f /app/dist/cli/main.js && test -d /app/node_modules/smtp-server && echo dist; ls -d /app/node_modules/jest /app/node_modules/ts-jest /app/node_modules/fast-check /app/node_modules/imapflow /app/node_modules/eslint 2>&1 | grep -c 'No such'; ls /app/cli /app/test /tmp/build-ca 2>&1 | grep -c 'No such'; command -v mailstack",
    );
    expect(out.split("\n")).toEqual(["10001", "10001", expect.stringMatching(/^v22\./), "dist", "5", "3", "/usr/local/bin/mailstack"]);
    const env = JSON.parse(await docker("image", "inspect", "--format", "{{json .Config}}", imageId)) as {
      Env: string[];
      User: string;
      Entrypoint: string[];
    };
    expect(env.User).toBe("10001:10001");
    expect(env.Entrypoint).toEqual(["/usr/local/bin/mailstack"]);
    expect(env.Env.filter((e) => /PASS|SECRET|TOKEN|KEY|CA_CERTS/i.test(e))).toEqual([]);
  });

  test("node may bind a port below 1024 as the non-root user, with every capability but NET_BIND_SERVICE dropped", async () => {
    const address = randomLoopback();
    // A few random privileged ports on a random loopback address: one is certainly free.
    const script = `const net=require("net");const ports=[${Array.from({ length: 5 }, () => randomInt(600, 1000)).join(",")}];
      (async()=>{for(const p of ports){const r=await new Promise(res=>{const s=net.createServer();s.once("error",e=>res(e.code));s.listen(p,"${address}",()=>s.close(()=>res("bound "+p)))});
      if(r!=="EADDRINUSE"){console.log(r, process.getuid());return}}console.log("all in use")})()`;
    const out = await docker(
      "run",
      "--rm",
      "--pull=never",
      "--network",
      "host",
      "--cap-drop",
      "ALL",
      "--cap-add",
      "NET_BIND_SERVICE",
      "--entrypoint",
      "node",
      imageId,
      "-e",
      script,
    );
    expect(out).toMatch(/^bound \d+ 10001$/);
  });

  test("its default command validates the uploaded config (`mailstack check`)", async () => {
    const work = mkdtempSync("/tmp/mailstack-check-");
    const name = `mailstack-check-${randomBytes(4).toString("hex")}`;
    try {
      const lx = parseConfig(
        (parseYaml(readFileSync(path.join(REPO, "stacks/Pulumi.lx.yaml"), "utf8")) as { config: Record<string, unknown> }).config,
        "lx",
      );
      const file = path.join(work, "config.json");
      writeFileSync(file, serializeServiceConfig(renderServiceConfig(lx, { stack: "lx" })));
      chmodSync(file, 0o644);
      await docker("create", "--pull=never", "--network", "none", "--name", name, imageId);
      await docker("cp", file, `${name}:${CONFIG_PATH}`);
      const out = await docker("start", "--attach", name);
      expect(out).toMatch(/^ok: lx\.com \(mail\.lx\.com\), 2 users, \d+ aliases, listening smtp=0\.0\.0\.0:25 /);
    } finally {
      dockerSync("rm", "-f", name);
      rmSync(work, { recursive: true, force: true });
    }
  });

  test("the build refuses a base image that is not on the engine instead of pulling it", () => {
    const r = spawnSync("bash", [path.join(REPO, "docker/build-image.sh"), "mailstack:never-built"], {
      cwd: REPO,
      encoding: "utf8",
      env: { ...process.env, BASE_IMAGE: "mailstack-base:does-not-exist" },
    });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain("is not on this engine (and is never pulled)");
  });
});

describe("the service containers from the components' specs: a round trip", () => {
  const suffix = randomBytes(3).toString("hex");
  const domain = `rt${suffix}.test`;
  const listen = randomLoopback();
  let trusted = randomLoopback();
  let untrusted = randomLoopback();
  while (trusted === listen) trusted = randomLoopback();
  while (untrusted === listen || untrusted === trusted) untrusted = randomLoopback();
  const alicePassword = `alice-${randomBytes(6).toString("hex")}`;
  const bobPassword = `bob-${randomBytes(6).toString("hex")}`;
  /** Sent in failed logins: must show up in no log either. */
  const wrongPassword = `wrong-${randomBytes(6).toString("hex")}`;
  let work = "";
  let config: MailConfig;
  let specs: ContainerSpec[] = [];
  const ports: Record<string, number> = {};
  const created: string[] = [];
  let volumeName = "";

  async function createAndStart(spec: ContainerSpec, configFile: string) {
    // Through the Engine API, as the Pulumi provider creates it: the health check in exec form.
    const request = engineCreateRequest(spec);
    await engineApi("POST", `/containers/create?name=${encodeURIComponent(request.name)}`, request.body);
    created.push(spec.name);
    // What the Pulumi provider's `uploads` does: the file goes in before the container starts.
    await docker("cp", configFile, `${spec.name}:${CONFIG_PATH}`);
    await docker("start", spec.name);
  }

  /** The container's own health check command, run now rather than on its 30 s schedule. */
  async function healthy(spec: ContainerSpec) {
    await waitFor(`${spec.name} health`, () => docker("exec", spec.name, ...spec.healthcheck.tests.slice(1)), 90_000);
  }

  beforeAll(async () => {
    expect(imageId).not.toBe("");
    work = mkdtempSync("/tmp/mailstack-engine-");
    const data = path.join(work, "data");
    mkdirSync(data);
    chownSync(data, 10001, 10001);
    for (const name of ["smtp", "submission", "smtps", "pop3", "pop3s", "imap", "imaps"]) ports[name] = await freePort(listen);
    ports.dns = await freePort(listen, true);
    config = parseConfig(
      {
        "mailstack:domain": domain,
        "mailstack:publicAddress": listen,
        "mailstack:trustedNetworks": [`${trusted}/32`],
        "mailstack:users": [
          { name: "alice", password: alicePassword },
          { name: "bob", password: bobPassword },
        ],
        "mailstack:dataDir": data,
        "mailstack:resolvers": [`${listen}:${ports.dns}`],
        "mailstack:listen": Object.fromEntries(Object.entries(ports).map(([k, port]) => [k, { address: listen, port }])),
        "mailstack:dns": { reverseNetwork: `${listen.split(".").slice(0, 3).join(".")}.0/24`, upstream: [] },
        "mailstack:queue": { remotePort: await freePort(listen), minBackoff: 60 },
        "mailstack:limits": { authFailureDelay: 0.2 },
      },
      "engine test stack",
    );
    specs = serviceContainers(config, imageId);
    const configFile = path.join(work, "config.json");
    writeFileSync(configFile, serializeServiceConfig(renderServiceConfig(config, { stack: "engine-test" })));
    chmodSync(configFile, 0o644);
    const volume = dataVolumeSpec(config);
    volumeName = volume.name;
    await docker(...dockerVolumeCreateArgs(volume));
    for (const spec of specs) await createAndStart(spec, configFile);
    for (const spec of specs) await healthy(spec);
  }, 5 * 60_000);

  afterAll(async () => {
    for (const name of created) dockerSync("rm", "-f", "-v", name);
    if (volumeName) dockerSync("volume", "rm", "-f", volumeName);
    if (work) rmSync(work, { recursive: true, force: true });
  });

  const transport = (localAddress: string) =>
    nodemailer.createTransport({
      host: listen,
      port: ports.smtp!,
      secure: false,
      localAddress,
      name: "client.example",
      tls: { rejectUnauthorized: false },
      connectionTimeout: 10_000,
    });

  async function imapSubjects(): Promise<string[]> {
    const client = new ImapFlow({
      host: listen,
      port: ports.imap!,
      secure: false,
      doSTARTTLS: true,
      tls: { rejectUnauthorized: false },
      auth: { user: "alice", pass: alicePassword },
      logger: false,
    });
    await client.connect();
    try {
      const lock = await client.getMailboxLock("INBOX");
      try {
        const subjects: string[] = [];
        for await (const m of client.fetch("1:*", { envelope: true })) subjects.push(m.envelope?.subject ?? "");
        return subjects;
      } finally {
        lock.release();
      }
    } finally {
      await client.logout();
    }
  }

  function pop3Subjects(): string[] {
    // Python's poplib, from 127.0.0.1 (untrusted): it must upgrade with STLS before logging in.
    const script = `
import poplib, ssl, sys, email
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
p = poplib.POP3(sys.argv[1], int(sys.argv[2]), timeout=10)
p.stls(ctx)
p.user("alice"); p.pass_(sys.argv[3])
n, _ = p.stat()
for i in range(1, n + 1):
    msg = email.message_from_bytes(b"\\r\\n".join(p.retr(i)[1]))
    print(msg["Subject"])
p.quit()
`;
    const out = execFileSync("python3", ["-c", script, listen, String(ports.pop3), alicePassword], { encoding: "utf8", timeout: 30_000 });
    return out.split("\n").filter(Boolean);
  }

  test("the containers are the components' specs: host network, non-root, init, restart policy, dropped capabilities", async () => {
    expect(specs.map((s) => s.service)).toEqual(["dns", "smtp", "queue", "pop3", "imap"]);
    for (const spec of specs) {
      const c = JSON.parse(await docker("inspect", "--format", "{{json .}}", spec.name));
      expect(c.Config.Image).toBe(imageId);
      expect(c.Image).toBe(imageId);
      expect(c.Config.Cmd).toEqual(spec.command);
      expect(c.Config.User).toBe("10001:10001");
      expect(c.HostConfig.NetworkMode).toBe("host");
      expect(c.HostConfig.Init).toBe(true);
      expect(c.HostConfig.RestartPolicy.Name).toBe("unless-stopped");
      expect(c.HostConfig.CapDrop).toEqual(["ALL"]);
      expect((c.HostConfig.CapAdd as string[]).map((x) => x.replace(/^CAP_/, ""))).toEqual(["NET_BIND_SERVICE"]);
      expect(c.Mounts).toEqual([
        expect.objectContaining({ Type: "volume", Name: volumeName, Destination: "/var/lib/mailstack", RW: true }),
      ]);
      // Exactly the components' exec form (["CMD", ...]), not the CLI's ["CMD-SHELL", "..."].
      expect(c.Config.Healthcheck).toEqual({ Test: spec.healthcheck.tests, Interval: 30e9, Timeout: 10e9, StartPeriod: 20e9, Retries: 3 });
      expect(c.Config.Healthcheck.Test).toEqual(["CMD", "mailstack", "health", spec.service, "--config", CONFIG_PATH]);
      expect(c.Config.Labels).toEqual(expect.objectContaining(spec.labels));
      const env = (c.Config.Env as string[]).join("\n");
      expect(env).not.toContain(alicePassword);
      expect(JSON.stringify(c)).not.toContain(alicePassword);
    }
  });

  test("the config file in each container holds hashes, never the passwords", async () => {
    const inside = await docker("exec", specs[1]!.name, "cat", CONFIG_PATH);
    expect(inside).not.toContain(alicePassword);
    expect(inside).toMatch(/"passwordHash": "\$argon2id\$v=19\$m=19456,t=2,p=1\$/);
  });

  test("DNS: the domain's MX and the mail host's A record, from the DNS container", () => {
    const dig = (name: string, type: string) =>
      execFileSync("dig", [`@${listen}`, "-p", String(ports.dns), name, type, "+short", "+time=2", "+tries=2"], {
        encoding: "utf8",
      }).trim();
    expect(dig(domain, "MX")).toBe(`10 mail.${domain}.`);
    expect(dig(`mail.${domain}`, "A")).toBe(listen);
  });

  test("a client outside trustedNetworks cannot relay through the SMTP port; a trusted one can", async () => {
    const envelope = { from: `someone@${domain}`, to: ["victim@example.invalid"] };
    const outsider = transport(untrusted);
    try {
      await expect(
        outsider.sendMail({ envelope, from: envelope.from, to: envelope.to, subject: "relay attempt", text: "x" }),
      ).rejects.toMatchObject({
        command: "RCPT TO",
        responseCode: 554,
        response: expect.stringMatching(/^554 5\.7\.1 .*Relay access denied/i),
      });
    } finally {
      outsider.close();
    }
    // The same from 127.0.0.1 (the address a NATed client could wear): refused too.
    const local = transport("127.0.0.1");
    try {
      await expect(
        local.sendMail({ envelope, from: envelope.from, to: envelope.to, subject: "relay attempt", text: "x" }),
      ).rejects.toMatchObject({
        command: "RCPT TO",
        response: expect.stringMatching(/^554 5\.7\.1 .*Relay access denied/i),
      });
    } finally {
      local.close();
    }
    // The server sees real addresses: the trusted one is allowed to relay (queued; the queue's
    // only resolver is our DNS, which knows nothing of example.invalid, so nothing leaves).
    const insider = transport(trusted);
    try {
      const info = await insider.sendMail({ envelope, from: envelope.from, to: envelope.to, subject: "trusted relay", text: "x" });
      expect(info.accepted).toEqual(["victim@example.invalid"]);
    } finally {
      insider.close();
    }
  });

  test("SMTP in, POP3 and IMAP out; a restarted and a replaced SMTP container lose nothing", async () => {
    const send = async (subject: string) => {
      const t = transport(untrusted);
      try {
        const info = await t.sendMail({ from: `bob@${domain}`, to: `alice@${domain}`, subject, text: `${subject}\n` });
        expect(info.accepted).toEqual([`alice@${domain}`]);
      } finally {
        t.close();
      }
    };
    await send("first message");
    await waitFor("delivery to alice", async () => {
      if (!(await imapSubjects()).includes("first message")) throw new Error("not yet in INBOX");
    });
    expect(pop3Subjects()).toContain("first message");

    const smtp = specs.find((s) => s.service === "smtp")!;
    await docker("restart", smtp.name);
    await healthy(smtp);
    expect(await imapSubjects()).toContain("first message");
    await send("after restart");

    // A replacement, as `pulumi up` does after a config change: the mail is on the volume.
    await docker("rm", "-f", smtp.name);
    await createAndStart(smtp, path.join(work, "config.json"));
    await healthy(smtp);
    await send("after replacement");
    await waitFor("all three messages", async () => {
      const subjects = await imapSubjects();
      for (const s of ["first message", "after restart", "after replacement"])
        if (!subjects.includes(s)) throw new Error(`missing ${s}: ${subjects.join(", ")}`);
    });
    expect(pop3Subjects()).toEqual(expect.arrayContaining(["first message", "after restart", "after replacement"]));
  });

  test("Docker itself reports every container healthy, from the specs' health checks", async () => {
    for (const spec of specs)
      await waitFor(
        `${spec.name} healthy`,
        async () => {
          const status = await docker("inspect", "--format", "{{.State.Health.Status}}", spec.name);
          if (status !== "healthy") throw new Error(status);
        },
        120_000,
      );
  }, 150_000);

  test("a wrong password gets the same refusal as an unknown user, over TLS", async () => {
    const attempt = (user: string, pass: string) => {
      const c = new ImapFlow({
        host: listen,
        port: ports.imaps!,
        secure: true,
        tls: { rejectUnauthorized: false },
        auth: { user, pass },
        logger: false,
      });
      return c.connect().then(
        () => c.logout().then(() => "ok"),
        (err: { authenticationFailed?: boolean; responseText?: string }) =>
          err.authenticationFailed ? `failed: ${err.responseText ?? ""}` : `error ${String(err)}`,
      );
    };
    const wrong = await attempt("alice", wrongPassword);
    const unknown = await attempt("nobody", wrongPassword);
    expect(wrong).toMatch(/^failed/);
    expect(unknown).toBe(wrong);
  });

  test("no password, right or wrong, appears in any container's log", async () => {
    // A failed SMTP AUTH (after STARTTLS) and a failed POP3 login as well, with the wrong password.
    const t = nodemailer.createTransport({
      host: listen,
      port: ports.submission!,
      secure: false,
      requireTLS: true,
      tls: { rejectUnauthorized: false },
      auth: { user: "bob", pass: wrongPassword },
      connectionTimeout: 10_000,
    });
    try {
      await expect(t.verify()).rejects.toMatchObject({ code: "EAUTH" });
    } finally {
      t.close();
    }
    const pop = spawnSync(
      "python3",
      [
        "-c",
        `import poplib, ssl, sys
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
p = poplib.POP3_SSL(sys.argv[1], int(sys.argv[2]), context=ctx, timeout=10)
p.user("alice")
try:
    p.pass_(sys.argv[3]); print("accepted")
except poplib.error_proto as e:
    print("refused")`,
        listen,
        String(ports.pop3s),
        wrongPassword,
      ],
      { encoding: "utf8", timeout: 30_000 },
    );
    expect(pop.stdout.trim()).toBe("refused");
    for (const spec of specs) {
      const logs = dockerSync("logs", spec.name);
      expect(logs.status).toBe(0);
      const all = `${logs.stdout}\n${logs.stderr}`;
      // The services log: otherwise this test could not fail.
      if (spec.service !== "queue") expect(all.length).toBeGreaterThan(0);
      for (const secret of [alicePassword, bobPassword, wrongPassword]) expect(all).not.toContain(secret);
    }
  });
});
