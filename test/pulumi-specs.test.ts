/**
 * The pure builders behind the Pulumi components and the real-engine test: container specs, the
 * rendered config file (hashes, determinism, round trip through parseConfig), docker CLI args,
 * registrar records and the build context digest.
 */

import { readFileSync } from "node:fs";
import * as path from "node:path";
import { verify } from "@node-rs/argon2";
import fc from "fast-check";
import { buildContextDigest, contextDigest, dockerignoreMatcher, readBuildContext, selectContext } from "../components/build-context";
import { dataDirScript } from "../components/host-scripts";
import { buildContextPath, buildTag, PINNED_REFERENCE } from "../components/mail-image";
import { engineHost } from "../components/mail-system";
import { endpointList, registrarRecords, reverseName } from "../components/records";
import {
  CONFIG_PATH,
  CONTAINER_DATA_DIR,
  containerSpec,
  dataVolumeSpec,
  deterministicSalt,
  dockerVolumeCreateArgs,
  durationNs,
  enabledServices,
  engineCreateRequest,
  firewallPorts,
  hostDataDir,
  renderServiceConfig,
  serializeServiceConfig,
  serviceContainers,
} from "../components/specs";
import { decodePulumiConfig, redactSecrets, withDeploymentDefaults } from "../components/stack-config";
import { loadStack } from "../config/load";
import { type MailConfig, parseConfig } from "../config/schema";
import { pulumiConfigOf, REPO, SHIPPED_STACKS, stackConfigMap } from "./pulumi-harness";

const IMAGE = `sha256:${"ab".repeat(32)}`;

function stack(name: string, overrides: Record<string, unknown> = {}): MailConfig {
  return parseConfig({ ...stackConfigMap(name), ...overrides }, name);
}

describe("containerSpec", () => {
  const lx = stack("lx");

  test("the tutorial host runs dns, smtp, queue, pop3 and imap, in that order", () => {
    expect(enabledServices(lx)).toEqual(["dns", "smtp", "queue", "pop3", "imap"]);
    expect(serviceContainers(lx, IMAGE).map((s) => s.name)).toEqual([
      "mailstack-lx-com-dns",
      "mailstack-lx-com-smtp",
      "mailstack-lx-com-queue",
      "mailstack-lx-com-pop3",
      "mailstack-lx-com-imap",
    ]);
  });

  test.each(["dns", "smtp", "queue", "pop3", "imap"] as const)(
    "%s: its own serve command, the config file, host networking, non-root",
    (service) => {
      const spec = containerSpec(lx, service, IMAGE);
      expect(spec.command).toEqual(["serve", service, "--config", CONFIG_PATH]);
      expect(spec.image).toBe(IMAGE);
      expect(spec.networkMode).toBe("host");
      expect(spec.ports).toEqual([]);
      expect(spec.user).toBe("10001:10001");
      expect(spec.user.startsWith("0")).toBe(false);
      expect(spec.init).toBe(true);
      expect(spec.restart).toBe("unless-stopped");
      expect(spec.capabilities).toEqual({ adds: ["NET_BIND_SERVICE"], drops: ["ALL"] });
      expect(spec.configFile).toBe(CONFIG_PATH);
      expect(spec.labels["mailstack.service"]).toBe(service);
    },
  );

  test("health checks run `mailstack health <service>` against the same config", () => {
    for (const s of ["dns", "smtp", "queue", "pop3", "imap"] as const)
      expect(containerSpec(lx, s, IMAGE).healthcheck).toEqual({
        tests: ["CMD", "mailstack", "health", s, "--config", CONFIG_PATH],
        interval: "30s",
        timeout: "10s",
        startPeriod: "20s",
        retries: 3,
      });
    // The CLI has `health queue` (cli/main.ts): the queue is probed like the others.
    expect(containerSpec(lx, "queue", IMAGE).healthcheck.tests).toEqual(["CMD", "mailstack", "health", "queue", "--config", CONFIG_PATH]);
  });

  test("every container mounts the one named data volume at the data directory", () => {
    const volume = dataVolumeSpec(lx);
    expect(volume).toEqual({
      name: "mailstack-lx-com-data",
      driver: "local",
      driverOpts: { type: "none", o: "bind", device: "/var/lib/mailstack" },
      labels: { "mailstack.domain": "lx.com", "mailstack.role": "maildata" },
    });
    for (const spec of serviceContainers(lx, IMAGE))
      expect(spec.volumes).toEqual([{ volumeName: volume.name, containerPath: CONTAINER_DATA_DIR, readOnly: false }]);
  });

  test("endpoints are the stack's listeners on the host's addresses", () => {
    expect(containerSpec(lx, "smtp", IMAGE).endpoints).toEqual([
      { name: "smtp", address: "0.0.0.0", port: 25, protocols: ["tcp"] },
      { name: "submission", address: "0.0.0.0", port: 587, protocols: ["tcp"] },
      { name: "smtps", address: "0.0.0.0", port: 465, protocols: ["tcp"] },
    ]);
    expect(containerSpec(lx, "dns", IMAGE).endpoints).toEqual([{ name: "dns", address: "0.0.0.0", port: 53, protocols: ["udp", "tcp"] }]);
    const sina = stack("sina");
    expect(containerSpec(sina, "imap", IMAGE).endpoints.map((e) => `${e.address}:${e.port}`)).toEqual(["127.0.0.2:143", "127.0.0.2:993"]);
    const dev = stack("dev");
    expect(containerSpec(dev, "pop3", IMAGE).endpoints.map((e) => `${e.address}:${e.port}`)).toEqual(["127.0.0.1:2110", "127.0.0.1:2995"]);
    expect(containerSpec(dev, "smtp", IMAGE).labels["mailstack.endpoints"]).toBe(
      "smtp=127.0.0.1:2525/tcp,submission=127.0.0.1:2587/tcp,smtps=127.0.0.1:2465/tcp",
    );
  });

  test("firewall ports are exactly the enabled listeners' ports", () => {
    expect(firewallPorts(lx)).toEqual(["25/tcp", "53/tcp", "53/udp", "110/tcp", "143/tcp", "465/tcp", "587/tcp", "993/tcp", "995/tcp"]);
    const noPop = stack("lx", { "mailstack:listen": { pop3: false, pop3s: false } });
    expect(firewallPorts(noPop)).toEqual(["25/tcp", "53/tcp", "53/udp", "143/tcp", "465/tcp", "587/tcp", "993/tcp"]);
    expect(enabledServices(noPop)).toEqual(["dns", "smtp", "queue", "imap"]);
    expect(() => containerSpec(noPop, "pop3", IMAGE)).toThrow(/pop3 has no enabled listener/);
    const noSmtp = stack("lx", { "mailstack:listen": { smtp: false, submission: false, smtps: false } });
    expect(enabledServices(noSmtp)).toEqual(["dns", "pop3", "imap"]);
  });

  test("TLS files named by path are mounted read-only where the rendered config says", () => {
    const c = stack("lx", { "mailstack:tls": { certFile: "/etc/pki/mail/cert.pem", keyFile: "/etc/pki/mail/key.pem" } });
    const smtp = containerSpec(c, "smtp", IMAGE);
    expect(smtp.volumes.slice(1)).toEqual([
      { hostPath: "/etc/pki/mail/cert.pem", containerPath: "/etc/mailstack/tls/cert.pem", readOnly: true },
      { hostPath: "/etc/pki/mail/key.pem", containerPath: "/etc/mailstack/tls/key.pem", readOnly: true },
    ]);
    expect(containerSpec(c, "dns", IMAGE).volumes).toHaveLength(1);
    const rendered = renderServiceConfig(c, { stack: "lx" }).config;
    expect(rendered["mailstack:tls"]).toEqual({ certFile: "/etc/mailstack/tls/cert.pem", keyFile: "/etc/mailstack/tls/key.pem" });
  });

  test("the mounted TLS files get the container_file_t SELinux label in the datadir step, and lose it on delete", () => {
    const s = dataDirScript("/var/lib/mailstack", 10001, ["/etc/pki/mail/cert.pem", "/etc/pki/mail/key.pem"]);
    expect(s.create).toContain("for f in '/etc/pki/mail/cert.pem' '/etc/pki/mail/key.pem'; do");
    expect(s.create).toContain('semanage fcontext -a -t container_file_t "$f"');
    expect(s.create).toContain('chcon -t container_file_t "$f"');
    expect(s.create).toContain("does not exist on the host");
    expect(s.delete).toContain('semanage fcontext -d "$f"');
    // Without TLS files nothing of it.
    expect(dataDirScript("/var/lib/mailstack", 10001).create).not.toContain("for f in");
    expect(() => dataDirScript("/var/lib/mailstack", 10001, ["relative.pem"])).toThrow(/bad TLS file path/);
    expect(() => dataDirScript("/var/lib/mailstack", 10001, ["/etc/x'; rm -rf /"])).toThrow(/bad TLS file path/);
  });

  test("a relative dataDir (a local-run path) lives under /var/lib/mailstack on a host", () => {
    expect(hostDataDir(stack("dev"))).toBe("/var/lib/mailstack");
    expect(hostDataDir(stack("lx"))).toBe("/var/lib/mailstack");
    expect(hostDataDir(stack("lx", { "mailstack:dataDir": "/srv/mail/" }))).toBe("/srv/mail");
  });
});

describe("renderServiceConfig", () => {
  const withPasswords = (extra: Record<string, unknown> = {}) =>
    stack("lx", {
      "mailstack:users": [
        { name: "lx", password: "lx-secret-password" },
        { name: "lei", passwordHash: "$argon2id$v=19$m=19456,t=2,p=1$9xVWqNmuWXXvnKsxxygtkg$s6nhfvKo4Ja4s/VRasnZ2Kbtcv7SR9BdSZiGyq4HOdA" },
      ],
      "mailstack:deploy": { sshPrivateKey: "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----" },
      ...extra,
    });

  test("plaintext passwords become argon2id hashes that verify; nothing secret but hashes remains", async () => {
    const text = serializeServiceConfig(renderServiceConfig(withPasswords(), { stack: "lx" }));
    expect(text).not.toContain("lx-secret-password");
    expect(text).not.toContain("PRIVATE KEY");
    expect(text).not.toContain("deploy");
    const users = JSON.parse(text).config["mailstack:users"] as Array<{ name: string; passwordHash: string }>;
    expect(users[0]!.passwordHash).toMatch(/^\$argon2id\$v=19\$m=19456,t=2,p=1\$/);
    await expect(verify(users[0]!.passwordHash, "lx-secret-password")).resolves.toBe(true);
    await expect(verify(users[0]!.passwordHash, "wrong")).resolves.toBe(false);
    expect(users[1]!.passwordHash).toBe(
      "$argon2id$v=19$m=19456,t=2,p=1$9xVWqNmuWXXvnKsxxygtkg$s6nhfvKo4Ja4s/VRasnZ2Kbtcv7SR9BdSZiGyq4HOdA",
    );
  });

  test("deterministic: the same inputs render byte-identical files; stack, user and password change the hash", () => {
    const a = serializeServiceConfig(renderServiceConfig(withPasswords(), { stack: "lx" }));
    const b = serializeServiceConfig(renderServiceConfig(withPasswords(), { stack: "lx" }));
    expect(a).toBe(b);
    const otherStack = serializeServiceConfig(renderServiceConfig(withPasswords(), { stack: "prod" }));
    expect(otherStack).not.toBe(a);
    const changed = stack("lx", {
      "mailstack:users": [
        { name: "lx", password: "another-password" },
        { name: "lei", passwordHash: "$6$x$y" },
      ],
    });
    const hashOf = (c: MailConfig, s: string) =>
      (renderServiceConfig(c, { stack: s }).config["mailstack:users"] as Array<{ passwordHash: string }>)[0]!.passwordHash;
    expect(hashOf(changed, "lx")).not.toBe(hashOf(withPasswords(), "lx"));
    expect(deterministicSalt("lx", "lx.com", "lx")).toEqual(deterministicSalt("lx", "lx.com", "lx"));
    expect(deterministicSalt("lx", "lx.com", "lx")).not.toEqual(deterministicSalt("lx", "lx.com", "lei"));
    expect(deterministicSalt("lx", "lx.com", "lx")).toHaveLength(16);
  });

  test.each(SHIPPED_STACKS)("stack %s: parseConfig reads the rendered file back into the same config", (name) => {
    const original = stack(name);
    const rendered = renderServiceConfig(original, { stack: name });
    const back = parseConfig(JSON.parse(serializeServiceConfig(rendered)).config, "rendered");
    expect(back).toEqual({ ...original, dataDir: CONTAINER_DATA_DIR, deploy: { sshUser: "root", sshPort: 22 } });
  });

  test("the CLI's loader (--config FILE) reads it too", async () => {
    const { mkdtempSync, writeFileSync, rmSync } = await import("node:fs");
    const dir = mkdtempSync("/tmp/mailstack-render-");
    try {
      const file = `${dir}/config.json`;
      writeFileSync(file, serializeServiceConfig(renderServiceConfig(stack("sohu"), { stack: "sohu" })));
      const loaded = loadStack(file);
      expect(loaded.domain).toBe("sohu.com");
      expect(loaded.dataDir).toBe(CONTAINER_DATA_DIR);
      expect(loaded.users.map((u) => u.name)).toEqual(["wangwu", "zhangsan"]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("property: any users' passwords render to hashes of exactly those passwords, and parse back", () => {
    fc.assert(
      fc.property(
        fc
          .uniqueArray(fc.stringMatching(/^[a-z][a-z0-9]{0,7}$/), { minLength: 1, maxLength: 3 })
          .filter((names) => !names.some((n) => n === "postmaster" || n === "root")),
        fc.array(fc.string({ minLength: 1, maxLength: 24 }), { minLength: 3, maxLength: 3 }),
        (names, passwords) => {
          const users = names.map((name, i) => ({ name, password: passwords[i]! }));
          let config: MailConfig;
          try {
            config = stack("dev", { "mailstack:users": users, "mailstack:aliases": {}, "mailstack:admin": names[0] });
          } catch {
            return; // a generated name the schema refuses (a system alias): not this property's business
          }
          const text = serializeServiceConfig(renderServiceConfig(config, { stack: "prop" }));
          const back = parseConfig(JSON.parse(text).config);
          back.users.forEach((u, i) => {
            expect(u.password).toBeUndefined();
            expect(require("@node-rs/argon2").verifySync(u.passwordHash!, passwords[i]!)).toBe(true);
          });
        },
      ),
      { numRuns: 12 },
    );
  });
});

describe("docker CLI arguments from the same specs", () => {
  test("Engine API create body: host network, init, restart, dropped capabilities, mounts, exec-form health check", () => {
    const spec = containerSpec(stack("lx"), "smtp", IMAGE);
    const { name, body } = engineCreateRequest(spec) as { name: string; body: Record<string, any> };
    expect(name).toBe("mailstack-lx-com-smtp");
    expect(body.Image).toBe(IMAGE);
    expect(body.Cmd).toEqual(["serve", "smtp", "--config", CONFIG_PATH]);
    expect(body.User).toBe("10001:10001");
    expect(body.Env).toBeUndefined();
    expect(body.Healthcheck).toEqual({
      Test: ["CMD", "mailstack", "health", "smtp", "--config", CONFIG_PATH],
      Interval: 30e9,
      Timeout: 10e9,
      StartPeriod: 20e9,
      Retries: 3,
    });
    expect(body.HostConfig).toEqual({
      NetworkMode: "host",
      Init: true,
      RestartPolicy: { Name: "unless-stopped" },
      CapAdd: ["NET_BIND_SERVICE"],
      CapDrop: ["ALL"],
      Mounts: [{ Type: "volume", Source: "mailstack-lx-com-data", Target: "/var/lib/mailstack", ReadOnly: false }],
      PortBindings: {},
      LogConfig: { Type: "json-file", Config: { "max-size": "20m", "max-file": "5" } },
    });
    expect(durationNs("1m30s")).toBe(90e9);
    expect(durationNs("500ms")).toBe(5e8);
    expect(() => durationNs("30 s")).toThrow(/bad duration/);
    expect(dockerVolumeCreateArgs(dataVolumeSpec(stack("lx")))).toEqual([
      "volume",
      "create",
      "--driver",
      "local",
      "--opt",
      "type=none",
      "--opt",
      "o=bind",
      "--opt",
      "device=/var/lib/mailstack",
      "--label",
      "mailstack.domain=lx.com",
      "--label",
      "mailstack.role=maildata",
      "mailstack-lx-com-data",
    ]);
  });
});

describe("records and endpoints", () => {
  test("the registrar holds the NS delegation and glue; the provider the PTR", () => {
    expect(registrarRecords(stack("lx"))).toEqual([
      { name: "lx.com.", type: "NS", value: "ns1.lx.com.", at: "registrar", note: expect.any(String) },
      { name: "ns1.lx.com.", type: "A", value: "192.168.25.100", at: "registrar", note: expect.any(String) },
      { name: "100.25.168.192.in-addr.arpa.", type: "PTR", value: "mail.lx.com.", at: "hosting provider", note: expect.any(String) },
    ]);
    const outside = stack("lx", { "mailstack:dns": { nameserver: "ns.example.net" } });
    expect(registrarRecords(outside).map((r) => r.type)).toEqual(["NS", "PTR"]);
    expect(reverseName("2001:db8::1")).toBe("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.");
  });

  test("endpoints name the hostname for wildcard listeners", () => {
    const lx = endpointList(stack("lx"));
    expect(lx.map((e) => e.url)).toEqual([
      "dns://mail.lx.com:53",
      "smtp://mail.lx.com:25",
      "smtp+starttls://mail.lx.com:587",
      "smtps://mail.lx.com:465",
      "pop3://mail.lx.com:110",
      "pop3s://mail.lx.com:995",
      "imap://mail.lx.com:143",
      "imaps://mail.lx.com:993",
    ]);
    // sina binds its public address (127.0.0.2): clients still use the name.
    expect(endpointList(stack("sina"))[1]!.url).toBe("smtp://mail.sina.com:25");
    expect(endpointList(stack("lx", { "mailstack:listen": { address: "10.1.2.3" } }))[1]!.url).toBe("smtp://10.1.2.3:25");
  });

  test("the Docker provider reaches the engine over SSH", () => {
    expect(engineHost(stack("lx"))).toBe("ssh://root@192.168.25.100:22");
    expect(engineHost(stack("lx", { "mailstack:deploy": { sshUser: "admin", sshPort: 2222 } }))).toBe("ssh://admin@192.168.25.100:2222");
  });
});

describe("stack config as Pulumi hands it over", () => {
  test("the deployment binds publicAddress unless the stack sets listen.address; an endpoint's own address stays", () => {
    const lx = decodePulumiConfig(pulumiConfigOf(stackConfigMap("lx")));
    const deployed = parseConfig(withDeploymentDefaults(lx));
    for (const ep of Object.values(deployed.listen)) expect(ep?.address).toBe("192.168.25.100");
    // The schema's own default is unchanged (the local run and the tests keep 0.0.0.0).
    expect(parseConfig(lx).listen.smtp?.address).toBe("0.0.0.0");
    const own = withDeploymentDefaults({ ...lx, "mailstack:listen": { smtp: { address: "10.0.0.5", port: 25 }, pop3: false } });
    const parsed = parseConfig(own);
    expect(parsed.listen.smtp?.address).toBe("10.0.0.5");
    expect(parsed.listen.imap?.address).toBe("192.168.25.100");
    expect(parsed.listen.pop3).toBeNull();
    const wildcard = { ...lx, "mailstack:listen": { address: "0.0.0.0" } };
    expect(withDeploymentDefaults(wildcard)).toEqual(wildcard);
    expect(withDeploymentDefaults({ "mailstack:domain": "x.test" })).toEqual({ "mailstack:domain": "x.test" });
  });

  test("decodes JSON values, keeps string keys strings, ignores other namespaces", () => {
    const decoded = decodePulumiConfig({ ...pulumiConfigOf(stackConfigMap("lx")), "aws:region": "x", "mailstack:domain": "123.com" });
    expect(decoded["mailstack:domain"]).toBe("123.com");
    expect(decoded["mailstack:trustedNetworks"]).toEqual(["192.168.25.0/24"]);
    expect(decoded["aws:region"]).toBeUndefined();
    expect(parseConfig(decodePulumiConfig(pulumiConfigOf(stackConfigMap("lx")))).domain).toBe("lx.com");
  });

  test("redaction drops every plaintext secret and keeps the hashes", () => {
    const c = stack("lx", {
      "mailstack:users": [
        { name: "lx", password: "pw" },
        { name: "lei", passwordHash: "$6$abc$def" },
      ],
      "mailstack:deploy": { sshPrivateKey: "KEY" },
      "mailstack:tls": { cert: "CERT", key: "TLSKEY" },
      "mailstack:queue": { relayhost: { host: "relay.example.net", username: "u", password: "RELAYPW" } },
    });
    const r = redactSecrets(c);
    expect(JSON.stringify(r)).not.toMatch(/"pw"|KEY"|TLSKEY|RELAYPW/);
    expect(r.users[1]!.passwordHash).toBe("$6$abc$def");
    expect(r.tls.cert).toBe("CERT");
    expect(r.queue.relayhost).toEqual({ host: "relay.example.net", port: 587, username: "u" });
    expect(c.users[0]!.password).toBe("pw");
  });
});

describe("the image", () => {
  test("built images are tagged by the context digest, never latest; pinned references need a digest", () => {
    expect(buildTag("a".repeat(64))).toBe(`mailstack:${"a".repeat(16)}`);
    expect(() => buildTag("latest")).toThrow();
    expect(PINNED_REFERENCE.test(`registry.example.net/mailstack@sha256:${"0".repeat(64)}`)).toBe(true);
    expect(PINNED_REFERENCE.test("registry.example.net/mailstack:latest")).toBe(false);
    expect(PINNED_REFERENCE.test("mailstack")).toBe(false);
  });

  test(".dockerignore matching follows Docker's rules", () => {
    const ignored = dockerignoreMatcher("**/node_modules\ndist\ntest\n**/*.log\n!keep.log\n# comment\n");
    expect(ignored("node_modules")).toBe(true);
    expect(ignored("policy/node_modules/x/y.js")).toBe(true);
    expect(ignored("dist/cli/main.js")).toBe(true);
    expect(ignored("test/a.test.ts")).toBe(true);
    expect(ignored("smtp/test.ts")).toBe(false);
    expect(ignored("a/b/c.log")).toBe(true);
    expect(ignored("keep.log")).toBe(false);
    expect(ignored("cli/main.ts")).toBe(false);
  });

  test("the build context is an allow-list: README, components, tests, benchmarks, stacks and policy stay out", () => {
    const ignore = readFileSync(path.join(REPO, ".dockerignore"), "utf8");
    const f = (p: string, content: string) => ({ path: p, content: Buffer.from(content), executable: false });
    const files = [
      f("cli/main.ts", "cli"),
      f("smtp/server.ts", "smtp"),
      f("package.json", "{}"),
      f("tsconfig.json", "{}"),
      f("Dockerfile", "FROM x"),
      f("docker/setcap.js", "x"),
      f("docker/tsconfig.image.json", "{}"),
      f("docker/build-base.sh", "x"),
      f("README.md", "readme"),
      f("components/specs.ts", "c"),
      f("test/pulumi-specs.test.ts", "t"),
      f("bench/run.ts", "b"),
      f("stacks/Pulumi.lx.yaml", "s"),
      f("policy/policies.ts", "p"),
      f("smtp/node_modules/x/index.js", "n"),
      f("store/store.test.ts", "t"),
    ];
    expect(selectContext(files, ignore).map((x) => x.path)).toEqual([
      "cli/main.ts",
      "smtp/server.ts",
      "package.json",
      "tsconfig.json",
      "Dockerfile",
      "docker/setcap.js",
      "docker/tsconfig.image.json",
    ]);
    const base = buildContextDigest(files, ignore);
    const edit = (p: string) => files.map((x) => (x.path === p ? f(p, `${x.content.toString()} edited`) : x));
    for (const p of [
      "README.md",
      "test/pulumi-specs.test.ts",
      "components/specs.ts",
      "bench/run.ts",
      "stacks/Pulumi.lx.yaml",
      "docker/build-base.sh",
    ])
      expect(buildContextDigest(edit(p), ignore)).toBe(base);
    expect(buildContextDigest([...files, f("NOTES.md", "new file")], ignore)).toBe(base);
    for (const p of ["cli/main.ts", "package.json", "Dockerfile", "docker/setcap.js"])
      expect(buildContextDigest(edit(p), ignore)).not.toBe(base);
    // The real repository's context: only what the Dockerfile uses.
    const tops = new Set(readBuildContext(REPO).map((x) => x.path.split("/")[0]));
    expect([...tops].sort()).toEqual([
      "Dockerfile",
      "bin",
      "cli",
      "config",
      "dns",
      "docker",
      "imap",
      "lib",
      "package-lock.json",
      "package.json",
      "pop3",
      "queue",
      "smtp",
      "store",
      "tsconfig.json",
    ]);
  });

  test("the build context path is relative to the program's directory, so another checkout shows no diff", () => {
    expect(buildContextPath("/work/main", "/work/main")).toBe(".");
    expect(buildContextPath("/home/ops/src/mailstack", "/home/ops/src/mailstack")).toBe(".");
    expect(buildContextPath("/srv/mailstack", "/srv/mailstack/deploy")).toBe("..");
  });

  test("the context digest changes with any content, path or mode, and not with file order", () => {
    const f = (path: string, content: string, executable = false) => ({ path, content: Buffer.from(content), executable });
    const base = contextDigest([f("a", "1"), f("b", "2")]);
    expect(contextDigest([f("b", "2"), f("a", "1")])).toBe(base);
    expect(contextDigest([f("a", "1"), f("b", "3")])).not.toBe(base);
    expect(contextDigest([f("a", "1"), f("c", "2")])).not.toBe(base);
    expect(contextDigest([f("a", "1", true), f("b", "2")])).not.toBe(base);
  });
});
