/**
 * The whole Pulumi program (index.ts) under mocks, on every shipped stack: config comes from the
 * stack file exactly as Pulumi would hand it over, then the program is imported. Unmocked types
 * and calls fail; the recorded inputs are checked against the stack.
 */
import { createHash } from "node:crypto";
import { CONFIG_PATH, CONTAINER_DATA_DIR, firewallPorts, serviceEndpoints } from "../components/specs";
import { withDeploymentDefaults } from "../components/stack-config";
import { parseConfig } from "../config/schema";
import { isSecret, MockEngine, plainStrings, type Recorded, SHIPPED_STACKS, stackConfigMap, unwrap } from "./pulumi-harness";

const CONTAINER = "docker:index/container:Container";
const COMMAND = "command:remote:Command";

interface Program {
  endpoints: unknown;
  registrarRecords: unknown;
  image: unknown;
  hostname: unknown;
}

async function runProgram(stack: string, opts: Parameters<typeof MockEngine.start>[1] = {}) {
  const engine = await MockEngine.start(stack, opts);
  const program = engine.require<Program>("index");
  const exports = program as unknown as Record<string, unknown>;
  const outputs = {
    endpoints: await engine.value<Array<Record<string, unknown>>>(program.endpoints),
    registrarRecords: await engine.value<Array<Record<string, unknown>>>(program.registrarRecords),
    image: await engine.value<string>(program.image),
    hostname: await engine.value<string>(program.hostname),
  };
  await engine.settle();
  const stackOutputs = await engine.stackOutputs({ ...exports });
  return { engine, outputs, stackOutputs };
}

describe.each(SHIPPED_STACKS)("stack %s", (stack) => {
  // As the program reads it: the deployment binds publicAddress unless the stack says otherwise.
  const config = parseConfig(withDeploymentDefaults(stackConfigMap(stack)), stack);
  let engine: MockEngine;
  let outputs: Awaited<ReturnType<typeof runProgram>>["outputs"];
  beforeAll(async () => {
    ({ engine, outputs } = await runProgram(stack));
  });

  test("registers exactly the expected resources, all mocked, no provider calls", () => {
    expect(engine.errors).toEqual([]);
    const count = (t: string) => engine.ofType(t).length;
    const dnsOn53 = config.listen.dns?.port === 53;
    expect(count("mailstack:index:MailSystem")).toBe(1);
    expect(count("mailstack:index:MailHost")).toBe(1);
    expect(count("mailstack:index:MailImage")).toBe(1);
    for (const c of ["DnsService", "SmtpService", "Pop3Service", "ImapService"]) expect(count(`mailstack:index:${c}`)).toBe(1);
    expect(engine.ofType(COMMAND).map((c) => c.name)).toEqual([
      "mailstack-host-hostname",
      "mailstack-host-firewall",
      "mailstack-host-docker",
      "mailstack-host-datadir",
      ...(dnsOn53 ? ["mailstack-host-resolver"] : []),
    ]);
    expect(count("pulumi:providers:docker")).toBe(1);
    expect(count("docker:index/volume:Volume")).toBe(1);
    expect(count("docker:index/remoteImage:RemoteImage")).toBe(1);
    expect(count(CONTAINER)).toBe(5);
    expect(engine.resources).toHaveLength(7 + (dnsOn53 ? 5 : 4) + 3 + 5);
  });

  test("host steps run in order, and every container waits for the engine and the data directory", () => {
    const steps = engine.ofType(COMMAND);
    for (let i = 1; i < steps.length; i++) expect(steps[i]!.dependencies).toEqual([steps[i - 1]!.urn]);
    const ready = [engine.named("mailstack-host-docker").urn, engine.named("mailstack-host-datadir").urn];
    for (const c of engine.ofType(CONTAINER)) expect(c.dependencies).toEqual(expect.arrayContaining(ready));
    const dns = engine.named("mailstack-dns-container").urn;
    for (const c of engine.ofType(CONTAINER).filter((x) => x.name !== "mailstack-dns-container")) expect(c.dependencies).toContain(dns);
    expect(engine.named("mailstack-engine").dependencies).toEqual(expect.arrayContaining(ready));
  });

  test("the host's name, firewall ports and data directory come from the stack", () => {
    const create = (name: string) => String(unwrap(engine.named(name).inputs.create));
    expect(create("mailstack-host-hostname")).toContain(`'${config.publicAddress} ${config.hostname} ${config.hostname.split(".")[0]}'`);
    const fw = create("mailstack-host-firewall");
    for (const p of firewallPorts(config)) expect(fw).toContain(`<port protocol="${p.split("/")[1]}" port="${p.split("/")[0]}"/>`);
    expect((fw.match(/<port /g) ?? []).length).toBe(firewallPorts(config).length);
    expect(create("mailstack-host-datadir")).toContain("dir='/var/lib/mailstack'");
    const conn = unwrap<Record<string, unknown>>(engine.named("mailstack-host-hostname").inputs.connection);
    expect(conn).toMatchObject({ host: config.publicAddress, user: "root", port: 22 });
    expect(conn.privateKey).toBeUndefined();
  });

  test("containers: command, host network on the stack's addresses and ports, health check, restart, shared volume", () => {
    const containers = engine.ofType(CONTAINER).map((c) => unwrap<Record<string, any>>(c.inputs));
    const volumeName = unwrap<Record<string, unknown>>(engine.ofType("docker:index/volume:Volume")[0]!.inputs).name;
    expect(containers.map((c) => c.command[1])).toEqual(["dns", "smtp", "queue", "pop3", "imap"]);
    for (const c of containers) {
      const service = c.command[1] as "dns" | "smtp" | "queue" | "pop3" | "imap";
      expect(c.command).toEqual(["serve", service, "--config", CONFIG_PATH]);
      expect(c.networkMode).toBe("host");
      expect(c.ports).toEqual([]);
      const label = (k: string) => (c.labels as Array<{ label: string; value: string }>).find((l) => l.label === k)?.value;
      expect(label("mailstack.endpoints")).toBe(
        serviceEndpoints(config, service)
          .map((e) => `${e.name}=${e.address}:${e.port}/${e.protocols.join("+")}`)
          .join(","),
      );
      expect(c.healthcheck.tests.slice(0, 2)).toEqual(["CMD", "mailstack"]);
      expect(c.healthcheck.tests.slice(-2)).toEqual(["--config", CONFIG_PATH]);
      expect(c.restart).toBe("unless-stopped");
      expect(c.init).toBe(true);
      expect(c.volumes).toEqual([{ volumeName, containerPath: CONTAINER_DATA_DIR, readOnly: false }]);
    }
    // The image id MailImage's RemoteImage resolved to (the mock derives it from its inputs).
    const image = engine.named("mailstack-image-image");
    const id = `sha256:${createHash("sha256").update(JSON.stringify(image.inputs)).digest("hex")}`;
    for (const c of containers) expect(c.image).toBe(id);
  });

  test("each container gets the same secret config file, and it parses back into this stack", () => {
    const contents = new Set<string>();
    for (const c of engine.ofType(CONTAINER)) {
      expect(isSecret(c.inputs.uploads)).toBe(true);
      const [upload] = unwrap<Array<{ file: string; content: string }>>(c.inputs.uploads);
      expect(upload!.file).toBe(CONFIG_PATH);
      contents.add(upload!.content);
    }
    expect(contents.size).toBe(1);
    const back = parseConfig(JSON.parse([...contents][0]!).config);
    expect(back.domain).toBe(config.domain);
    expect(back.listen).toEqual(config.listen);
    expect(back.trustedNetworks).toEqual(config.trustedNetworks);
    expect(back.users.map((u) => u.passwordHash)).toEqual(config.users.map((u) => u.passwordHash));
    expect(back.dataDir).toBe(CONTAINER_DATA_DIR);
  });

  test("the image is built from a context path relative to the program, so another checkout registers the same inputs", () => {
    const build = unwrap<Record<string, any>>(engine.named("mailstack-image-image").inputs).build;
    expect(build.context).toBe(".");
  });

  if (stack !== "dev")
    test("every listener binds the stack's publicAddress, not 0.0.0.0", () => {
      const everywhere: string[] = [];
      for (const c of engine.ofType(CONTAINER)) {
        const inputs = unwrap<Record<string, any>>(c.inputs);
        const label = (inputs.labels as Array<{ label: string; value: string }>).find((l) => l.label === "mailstack.endpoints")!.value;
        for (const entry of label.split(",").filter(Boolean)) everywhere.push(/=(.+):\d+\//.exec(entry)![1]!);
        const rendered = JSON.parse(inputs.uploads[0].content).config["mailstack:listen"] as Record<string, { address: string } | false>;
        for (const ep of Object.values(rendered)) if (ep) everywhere.push(ep.address);
      }
      for (const e of outputs.endpoints) everywhere.push(String(e.address));
      expect(everywhere.length).toBeGreaterThan(16);
      expect(new Set(everywhere)).toEqual(new Set([config.publicAddress]));
    });

  test("exports the endpoints and the records the registrar must hold", () => {
    expect(outputs.hostname).toBe(config.hostname);
    expect(outputs.image).toMatch(/^mailstack:[0-9a-f]{16}$/);
    expect(outputs.endpoints.length).toBe(8);
    expect(outputs.registrarRecords.map((r) => r.type)).toEqual(["NS", "A", "PTR"]);
    expect(outputs.registrarRecords[0]).toMatchObject({ name: `${config.domain}.`, value: `ns1.${config.domain}.` });
  });
});

describe("secrets and determinism", () => {
  const KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nsecret-key-material\n-----END OPENSSH PRIVATE KEY-----\n";
  const withSecrets = () => ({
    ...stackConfigMap("lx"),
    "mailstack:users": [
      { name: "lx", password: "lx-password-from-pulumi-secret" },
      { name: "lei", password: "lei-password-from-pulumi-secret" },
    ],
    "mailstack:deploy": { sshPrivateKey: KEY, sshUser: "admin" },
  });

  test("config set --secret: plaintext passwords and the SSH key appear nowhere outside secrets", async () => {
    const { engine, stackOutputs } = await runProgram("lx", { config: withSecrets(), secretKeys: ["mailstack:users", "mailstack:deploy"] });
    expect(engine.errors).toEqual([]);
    // What components register as outputs, and what the stack exports, as the engine stores them.
    const components = engine.resources.filter((r) => r.type.startsWith("mailstack:index:"));
    expect(components.length).toBe(7);
    for (const c of components) expect(engine.componentOutputs.has(c.urn)).toBe(true);
    const stored = { components: Object.fromEntries(engine.componentOutputs), stack: stackOutputs };
    expect(Object.keys(stackOutputs).sort()).toEqual(["endpoints", "hostname", "image", "registrarRecords"]);
    expect(JSON.stringify(unwrap(stored))).not.toMatch(/password-from-pulumi-secret|secret-key-material/);
    expect(plainStrings(stored).filter((s) => /password-from-pulumi-secret|secret-key-material|\$argon2/.test(s.value))).toEqual([]);
    for (const r of engine.resources) {
      const leaks = plainStrings(r.inputs).filter((s) => /password-from-pulumi-secret|secret-key-material|\$argon2/.test(s.value));
      expect(leaks).toEqual([]);
      expect(JSON.stringify(unwrap(r.inputs))).not.toContain("password-from-pulumi-secret");
    }
    for (const s of engine.ofType(COMMAND)) {
      expect(isSecret(s.inputs.connection)).toBe(true);
      expect(unwrap<Record<string, string>>(s.inputs.connection).privateKey).toBe(KEY);
      expect(String(unwrap(s.inputs.create)).startsWith("sudo -n bash -s")).toBe(true);
    }
    const { verifySync } = require("@node-rs/argon2") as typeof import("@node-rs/argon2");
    const doc = JSON.parse(unwrap<Array<{ content: string }>>(engine.ofType(CONTAINER)[0]!.inputs.uploads)[0]!.content);
    expect(verifySync(doc.config["mailstack:users"][0].passwordHash, "lx-password-from-pulumi-secret")).toBe(true);
  });

  test("a second run with the same inputs registers identical inputs (nothing would be replaced)", async () => {
    const snapshot = (rs: Recorded[]) => rs.map((r) => ({ type: r.type, name: r.name, inputs: unwrap(r.inputs), deps: r.dependencies }));
    const first = await runProgram("lx", { config: withSecrets(), secretKeys: ["mailstack:users"] });
    const second = await runProgram("lx", { config: withSecrets(), secretKeys: ["mailstack:users"] });
    const sort = (x: ReturnType<typeof snapshot>) => [...x].sort((a, b) => `${a.type}${a.name}`.localeCompare(`${b.type}${b.name}`));
    expect(sort(snapshot(second.engine.resources))).toEqual(sort(snapshot(first.engine.resources)));
  });

  test("bad config stops the program with the key path", async () => {
    const engine = await MockEngine.start("lx", { config: { ...stackConfigMap("lx"), "mailstack:trustedNetworks": ["0.0.0.0/0"] } });
    expect(() => engine.require("index")).toThrow(/mailstack:trustedNetworks\[0\]: 0\.0\.0\.0\/0 trusts every address/);
  });
});

describe("deploy.sshHostKey", () => {
  const HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDHc72uDaBae1Xl9+TOEqwFBvDIocBXCVpUw5KwpdQ3I";
  const providerOpts = (engine: MockEngine) => unwrap<string[]>(engine.ofType("pulumi:providers:docker")[0]!.inputs.sshOpts);

  test("pinned: the host steps and the Docker provider accept that key only", async () => {
    const config = { ...stackConfigMap("lx"), "mailstack:deploy": { sshHostKey: `${HOST_KEY} root@mail.lx.com` } };
    const { engine } = await runProgram("lx", { config });
    expect(engine.errors).toEqual([]);
    for (const s of engine.ofType(COMMAND)) expect(unwrap<Record<string, string>>(s.inputs.connection).hostKey).toBe(HOST_KEY);
    const opts = providerOpts(engine);
    expect(opts).toContain("StrictHostKeyChecking=yes");
    expect(opts).toContain(`KnownHostsCommand=/bin/echo %H ${HOST_KEY}`);
    expect(opts).not.toContain("StrictHostKeyChecking=accept-new");
  });

  test("not pinned: accepted on first use, a changed key refused", async () => {
    const { engine } = await runProgram("lx");
    for (const s of engine.ofType(COMMAND)) expect(unwrap<Record<string, string>>(s.inputs.connection).hostKey).toBeUndefined();
    expect(providerOpts(engine)).toContain("StrictHostKeyChecking=accept-new");
  });
});
