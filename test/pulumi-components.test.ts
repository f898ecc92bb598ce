/**
 * Each component under `pulumi.runtime.setMocks`, alone: the inputs it hands the engine, the
 * order its children wait for each other, and which values are secret.
 */
import type * as Components from "../components";
import { CONFIG_PATH, CONTAINER_DATA_DIR } from "../components/specs";
import { type MailConfig, parseConfig } from "../config/schema";
import { isSecret, MockEngine, plainStrings, REPO, stackConfigMap, unwrap } from "./pulumi-harness";

type Mod = typeof Components;
const KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmU=\n-----END OPENSSH PRIVATE KEY-----\n";
const CONTAINER = "docker:index/container:Container";

function lx(overrides: Record<string, unknown> = {}): MailConfig {
  return parseConfig({ ...stackConfigMap("lx"), ...overrides }, "lx");
}

async function engineFor(stack = "lx") {
  const engine = await MockEngine.start(stack);
  const mod = engine.require<Mod>("components/index");
  return { engine, mod };
}

describe("MailHost", () => {
  const args = {
    address: "192.168.25.100",
    hostname: "mail.lx.com",
    publicAddress: "192.168.25.100",
    firewallPorts: ["25/tcp", "53/udp"],
    dataDir: "/var/lib/mailstack",
  };

  test("five steps, each waiting for the one before: hostname → firewall → docker → datadir → resolver", async () => {
    const { engine, mod } = await engineFor();
    const host = new mod.MailHost("host", { ...args, resolver: { nameserver: "127.0.0.1", domain: "lx.com" } });
    await engine.settle();
    expect(engine.errors).toEqual([]);
    const steps = engine.ofType("command:remote:Command");
    expect(steps.map((s) => s.name)).toEqual(["host-hostname", "host-firewall", "host-docker", "host-datadir", "host-resolver"]);
    expect(steps[0]!.dependencies).toEqual([]);
    for (let i = 1; i < steps.length; i++) expect(steps[i]!.dependencies).toEqual([steps[i - 1]!.urn]);
    for (const s of steps) expect(s.parent).toBe(engine.named("host").urn);
    expect(engine.named("host").type).toBe("mailstack:index:MailHost");
    expect(Object.keys(host.steps)).toEqual(["hostname", "firewall", "docker", "datadir", "resolver"]);
    expect(host.ready).toEqual([host.steps.docker, host.steps.datadir]);
  });

  test("the scripts carry their inputs, run as create and update, and undo where it makes sense", async () => {
    const { engine, mod } = await engineFor();
    new mod.MailHost("host", args);
    await engine.settle();
    const byRole = (r: string) => unwrap<Record<string, unknown>>(engine.named(`host-${r}`).inputs);
    expect(engine.ofType("command:remote:Command").map((s) => s.name)).not.toContain("host-resolver");
    const hostname = byRole("hostname");
    expect(hostname.create).toContain("'192.168.25.100 mail.lx.com mail'");
    expect(hostname.update).toBe(hostname.create);
    expect(hostname.triggers).toEqual(["mail.lx.com", "192.168.25.100"]);
    expect(String(hostname.create).startsWith("bash -s <<'MAILSTACK_SCRIPT_EOF'")).toBe(true);
    const firewall = byRole("firewall");
    expect(firewall.create).toContain('<port protocol="tcp" port="25"/>');
    expect(firewall.delete).toContain("--remove-service=mailstack");
    expect(firewall.triggers).toEqual(["25/tcp 53/udp"]);
    expect(byRole("docker").delete).toBe("");
    expect(byRole("datadir").create).toContain("chown 10001:10001");
    expect(byRole("datadir").delete).not.toContain("rm -rf");
    expect(byRole("docker").create).not.toContain("usermod");
    expect(byRole("datadir").create).not.toContain("for f in");
  });

  test("the SSH key is a secret, and a non-root user runs the steps through sudo", async () => {
    const { engine, mod } = await engineFor();
    new mod.MailHost("host", { ...args, sshUser: "centos", sshPort: 2222, sshPrivateKey: KEY });
    await engine.settle();
    // The Docker provider connects as ssh://centos@host: the docker step puts centos in the docker group.
    const docker = unwrap<Record<string, unknown>>(engine.named("host-docker").inputs);
    expect(docker.create).toContain("ssh_user='centos'");
    expect(docker.create).toContain('usermod -aG docker "$ssh_user"');
    expect(docker.triggers).toEqual(["docker-ce", "centos"]);
    for (const step of engine.ofType("command:remote:Command")) {
      expect(isSecret(step.inputs.connection)).toBe(true);
      expect(plainStrings(step.inputs).some((s) => s.value.includes("PRIVATE KEY"))).toBe(false);
      expect(unwrap<Record<string, unknown>>(step.inputs.connection)).toMatchObject({
        host: "192.168.25.100",
        user: "centos",
        port: 2222,
        privateKey: KEY,
      });
      expect(String(unwrap(step.inputs.create)).startsWith("sudo -n bash -s")).toBe(true);
    }
  });

  test("a pinned SSH host key reaches every host step's connection", async () => {
    const { engine, mod } = await engineFor();
    const hostKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDHc72uDaBae1Xl9+TOEqwFBvDIocBXCVpUw5KwpdQ3I";
    new mod.MailHost("host", { ...args, sshHostKey: hostKey });
    await engine.settle();
    const steps = engine.ofType("command:remote:Command");
    expect(steps.length).toBeGreaterThan(0);
    for (const step of steps) expect(unwrap<Record<string, unknown>>(step.inputs.connection).hostKey).toBe(hostKey);
  });

  test("bad args fail with what is wrong", async () => {
    const { mod } = await engineFor();
    expect(() => new mod.MailHost("host", { ...args, resolver: { nameserver: "ns1.lx.com", domain: "lx.com" } })).toThrow(
      /resolver.nameserver must be an IP address/,
    );
  });
});

describe("MailImage", () => {
  test("built on the engine from the repo's Dockerfile, tagged by content, with BASE_IMAGE", async () => {
    const { engine, mod } = await engineFor();
    const image = new mod.MailImage("image", { baseImage: "mailstack-base:node22" });
    await engine.settle();
    const remote = unwrap<Record<string, any>>(engine.named("image-image").inputs);
    expect(remote.name).toMatch(/^mailstack:[0-9a-f]{16}$/);
    expect(remote.keepLocally).toBe(true);
    expect(remote.triggers.context).toMatch(/^[0-9a-f]{64}$/);
    expect(remote.name).toBe(`mailstack:${remote.triggers.context.slice(0, 16)}`);
    // Relative to the program's directory (the repository root here): no diff from another checkout path.
    expect(REPO).toBe(process.cwd());
    expect(remote.build).toMatchObject({
      context: ".",
      dockerfile: "Dockerfile",
      buildArgs: { BASE_IMAGE: "mailstack-base:node22" },
      pullParent: false,
    });
    await expect(engine.value(image.imageId)).resolves.toMatch(/^sha256:[0-9a-f]{64}$/);
  });

  test("or pulled by a digest-pinned reference; never by tag", async () => {
    const { engine, mod } = await engineFor();
    const ref = `registry.example.net/mailstack@sha256:${"1".repeat(64)}`;
    new mod.MailImage("image", { image: ref });
    await engine.settle();
    expect(unwrap(engine.named("image-image").inputs)).toEqual({ name: ref, keepLocally: true });
    expect(() => new mod.MailImage("latest", { image: "registry.example.net/mailstack:latest" })).toThrow(/must be pinned by digest/);
  });
});

describe("service components", () => {
  const IMAGE = `sha256:${"c".repeat(64)}`;

  test.each([
    ["DnsService", "dns", ["container"]],
    ["SmtpService", "smtp", ["container", "queue"]],
    ["Pop3Service", "pop3", ["container"]],
    ["ImapService", "imap", ["container"]],
  ] as const)("%s runs the image with serve %s, host networking, the shared volume, a secret config file", async (cls, service, roles) => {
    const { engine, mod } = await engineFor();
    const config = lx();
    const svc = new mod[cls]("svc", { config, image: IMAGE, configFile: "CONFIG-FILE-CONTENT", dataVolume: "mailstack-lx-com-data" });
    await engine.settle();
    expect(engine.errors).toEqual([]);
    expect(engine.named("svc").type).toBe(`mailstack:index:${cls}`);
    const containers = engine.ofType(CONTAINER);
    expect(containers.map((c) => c.name)).toEqual(roles.map((r) => `svc-${r}`));
    const services = service === "smtp" ? ["smtp", "queue"] : [service];
    containers.forEach((c, i) => {
      const s = services[i]!;
      const inputs = unwrap<Record<string, any>>(c.inputs);
      expect(c.parent).toBe(engine.named("svc").urn);
      expect(inputs.name).toBe(`mailstack-lx-com-${s}`);
      expect(inputs.image).toBe(IMAGE);
      expect(inputs.command).toEqual(["serve", s, "--config", CONFIG_PATH]);
      expect(inputs.networkMode).toBe("host");
      expect(inputs.ports).toEqual([]);
      expect(inputs.volumes).toEqual([{ volumeName: "mailstack-lx-com-data", containerPath: CONTAINER_DATA_DIR, readOnly: false }]);
      expect(inputs.restart).toBe("unless-stopped");
      expect(inputs.init).toBe(true);
      expect(inputs.user).toBe("10001:10001");
      expect(inputs.capabilities).toEqual({ adds: ["NET_BIND_SERVICE"], drops: ["ALL"] });
      expect(inputs.healthcheck.tests).toEqual(["CMD", "mailstack", "health", s, "--config", CONFIG_PATH]);
      expect(inputs.wait).toBe(true);
      expect(inputs.envs).toBeUndefined();
      expect(isSecret(c.inputs.uploads)).toBe(true);
      expect(inputs.uploads).toEqual([{ file: CONFIG_PATH, content: "CONFIG-FILE-CONTENT" }]);
      expect(plainStrings(c.inputs).some((p) => p.value.includes("CONFIG-FILE-CONTENT"))).toBe(false);
    });
    expect(svc.endpoints.map((e) => e.name)).toEqual(
      { dns: ["dns"], smtp: ["smtp", "submission", "smtps"], pop3: ["pop3", "pop3s"], imap: ["imap", "imaps"] }[service],
    );
  });
});

describe("MailSystem", () => {
  async function system(overrides: Record<string, unknown> = {}) {
    const { engine, mod } = await engineFor();
    const full = lx({
      "mailstack:users": [
        { name: "lx", password: "lx-plaintext-password" },
        { name: "lei", password: "lei-plaintext-password" },
      ],
      "mailstack:deploy": { sshPrivateKey: KEY },
      ...overrides,
    });
    const { redactSecrets } = engine.require<typeof import("../components/stack-config")>("components/stack-config");
    const sys = new mod.MailSystem("mail", {
      stack: "lx",
      config: redactSecrets(full),
      secretConfig: engine.pulumi.secret(full),
      sshPrivateKey: engine.pulumi.secret(KEY),
    });
    await engine.settle();
    return { engine, sys, mod, full };
  }

  test("host, engine, volume, image and services, with every container after the host and DNS first", async () => {
    const { engine } = await system();
    expect(engine.errors).toEqual([]);
    const step = (r: string) => engine.named(`mail-host-${r}`).urn;
    const containers = engine.ofType(CONTAINER);
    expect(containers.map((c) => c.name)).toEqual([
      "mail-dns-container",
      "mail-smtp-container",
      "mail-smtp-queue",
      "mail-pop3-container",
      "mail-imap-container",
    ]);
    const dnsUrn = engine.named("mail-dns-container").urn;
    for (const c of containers) {
      expect(c.dependencies).toEqual(expect.arrayContaining([step("docker"), step("datadir")]));
      if (c.name !== "mail-dns-container") expect(c.dependencies).toContain(dnsUrn);
      expect(c.provider).toMatch(/pulumi:providers:docker::mail-engine::/);
    }
    const provider = engine.named("mail-engine");
    expect(unwrap(provider.inputs)).toMatchObject({ host: "ssh://root@192.168.25.100:22", disableDockerDaemonCheck: "true" });
    expect(provider.dependencies).toEqual(expect.arrayContaining([step("docker"), step("datadir")]));
    for (const r of [engine.named("mail-data"), engine.named("mail-image-image")]) {
      expect(r.dependencies).toEqual(expect.arrayContaining([step("docker"), step("datadir")]));
      expect(r.provider).toMatch(/mail-engine/);
    }
    expect(unwrap(engine.named("mail-data").inputs)).toMatchObject({
      name: "mailstack-lx-com-data",
      driverOpts: { type: "none", o: "bind", device: "/var/lib/mailstack" },
    });
    const volumeName = "mailstack-lx-com-data";
    for (const c of containers) expect(unwrap<any>(c.inputs).volumes[0].volumeName).toBe(volumeName);
  });

  test("passwords reach the containers only as argon2id hashes inside a secret; the SSH key only as a secret", async () => {
    const { engine } = await system();
    const { verifySync } = require("@node-rs/argon2") as typeof import("@node-rs/argon2");
    for (const r of engine.resources) {
      const plain = plainStrings(r.inputs).map((p) => p.value);
      expect(plain.filter((v) => /plaintext-password|PRIVATE KEY|\$argon2/.test(v))).toEqual([]);
      expect(JSON.stringify(unwrap(r.inputs))).not.toContain("plaintext-password");
    }
    for (const c of engine.ofType(CONTAINER)) {
      expect(isSecret(c.inputs.uploads)).toBe(true);
      const doc = JSON.parse(unwrap<Array<{ content: string }>>(c.inputs.uploads)[0]!.content);
      const users = doc.config["mailstack:users"] as Array<{ name: string; passwordHash: string }>;
      expect(verifySync(users[0]!.passwordHash, "lx-plaintext-password")).toBe(true);
      expect(verifySync(users[1]!.passwordHash, "lei-plaintext-password")).toBe(true);
      expect(doc.config["mailstack:deploy"]).toBeUndefined();
    }
    for (const s of engine.ofType("command:remote:Command")) expect(isSecret(s.inputs.connection)).toBe(true);
  });

  test("a pinned image from the stack is pulled instead of built", async () => {
    const ref = `registry.example.net/mailstack@sha256:${"2".repeat(64)}`;
    const { engine } = await system({ "mailstack:deploy": { sshPrivateKey: KEY, image: ref } });
    expect(unwrap<any>(engine.named("mail-image-image").inputs)).toEqual({ name: ref, keepLocally: true });
    const id = unwrap<any>(engine.ofType(CONTAINER)[0]!.inputs).image;
    expect(id).toMatch(/^sha256:[0-9a-f]{64}$/);
  });

  test("TLS files mounted from the host are labelled for SELinux by the datadir step", async () => {
    const { engine } = await system({ "mailstack:tls": { certFile: "/etc/pki/mail/cert.pem", keyFile: "/etc/pki/mail/key.pem" } });
    const datadir = unwrap<Record<string, unknown>>(engine.named("mail-host-datadir").inputs);
    expect(datadir.create).toContain("for f in '/etc/pki/mail/cert.pem' '/etc/pki/mail/key.pem'; do");
    expect(datadir.triggers).toEqual(["/var/lib/mailstack", 10001, "/etc/pki/mail/cert.pem /etc/pki/mail/key.pem"]);
    const smtp = unwrap<Record<string, any>>(engine.named("mail-smtp-container").inputs);
    expect(smtp.volumes.map((v: { hostPath?: string }) => v.hostPath).filter(Boolean)).toEqual([
      "/etc/pki/mail/cert.pem",
      "/etc/pki/mail/key.pem",
    ]);
  });

  test("outputs: endpoints and the registrar's records", async () => {
    const { sys } = await system();
    expect(sys.endpoints.find((e) => e.endpoint === "submission")).toMatchObject({
      service: "smtp",
      port: 587,
      url: "smtp+starttls://mail.lx.com:587",
    });
    expect(sys.registrarRecords.map((r) => `${r.name} ${r.type} ${r.value}`)).toEqual([
      "lx.com. NS ns1.lx.com.",
      "ns1.lx.com. A 192.168.25.100",
      "100.25.168.192.in-addr.arpa. PTR mail.lx.com.",
    ]);
  });

  test("refuses a config that still holds plaintext passwords", async () => {
    const { engine, mod } = await engineFor();
    const full = lx({
      "mailstack:users": [
        { name: "lx", password: "pw" },
        { name: "lei", password: "pw2" },
      ],
    });
    expect(() => new mod.MailSystem("mail", { stack: "lx", config: full, secretConfig: engine.pulumi.secret(full) })).toThrow(
      /must be redacted/,
    );
  });
});

describe("the mock harness", () => {
  test("fails unmocked resource types and provider calls instead of inventing answers", async () => {
    const engine = await MockEngine.start("lx");
    engine.expectErrors = true;
    const docker = engine.require<typeof import("@pulumi/docker")>(require.resolve("@pulumi/docker"));
    new docker.Network("stray", { name: "stray" });
    // The SDK turns the mock's error into a rejection of its own (without the message).
    await expect(docker.getNetwork({ name: "bridge" })).rejects.toBeDefined();
    await engine.settle();
    expect([...engine.errors].sort()).toEqual([
      "unmocked call docker:index/getNetwork:getNetwork",
      "unmocked resource type docker:index/network:Network (stray)",
    ]);
  });
});
