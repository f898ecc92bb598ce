/**
 * Each policy of the pack: it fires on a bad resource and stays silent on a good one. Every
 * assertion is awaited (validateResource may be async).
 */

import { type ContainerService, containerSpec, renderServiceConfig, serializeServiceConfig } from "../components/specs";
import { parseConfig } from "../config/schema";
import {
  CONTAINER,
  mailDataOnNamedVolume,
  mailstackPolicies,
  noOpenRelayTrust,
  noSecretsInEnvironment,
  onlyMailAndDnsPorts,
  pinnedImages,
  plaintextAuthNeedsTlsOrTrust,
  REMOTE_IMAGE,
  restartAndHealthcheck,
} from "../policy/policies";
import { violations } from "./policy-helpers";
import { stackConfigMap } from "./pulumi-harness";

const IMAGE = `sha256:${"d".repeat(64)}`;

/** A container's inputs as the engine (and so the pack) sees them: what containerArgs builds, unwrapped. */
function container(
  service: ContainerService = "smtp",
  overrides: Record<string, unknown> = {},
  stackOverrides: Record<string, unknown> = {},
) {
  const config = parseConfig({ ...stackConfigMap("lx"), ...stackOverrides }, "lx");
  const spec = containerSpec(config, service, IMAGE);
  return {
    name: spec.name,
    image: IMAGE,
    command: spec.command,
    user: spec.user,
    networkMode: spec.networkMode,
    ports: [],
    volumes: spec.volumes.map((v) => ({ ...v })),
    uploads: [{ file: spec.configFile, content: serializeServiceConfig(renderServiceConfig(config, { stack: "lx" })) }],
    healthcheck: spec.healthcheck,
    restart: spec.restart,
    init: true,
    capabilities: spec.capabilities,
    labels: Object.entries(spec.labels).map(([label, value]) => ({ label, value })),
    ...overrides,
  };
}

test("the pack has the seven policies, all mandatory, uniquely named", () => {
  const all = mailstackPolicies();
  expect(all.map((p) => p.name)).toEqual([
    "mailstack-no-open-relay-trust",
    "mailstack-plaintext-auth-tls-or-trust",
    "mailstack-only-mail-and-dns-ports",
    "mailstack-no-secrets-in-environment",
    "mailstack-restart-and-healthcheck",
    "mailstack-pinned-images",
    "mailstack-mail-data-on-named-volume",
  ]);
  for (const p of all) expect(p.enforcementLevel).toBe("mandatory");
});

test.each(["dns", "smtp", "queue", "pop3", "imap"] as const)("every policy is silent on mailstack's own %s container", async (service) => {
  for (const p of mailstackPolicies()) await expect(violations(p, CONTAINER, container(service))).resolves.toEqual([]);
});

/** The same container with its uploaded config edited by hand (what the schema would refuse). */
function withUploadedConfig(props: ReturnType<typeof container>, key: string, value: unknown) {
  const doc = JSON.parse(props.uploads[0]!.content);
  doc.config[key] = value;
  return { ...props, uploads: [{ ...props.uploads[0]!, content: JSON.stringify(doc) }] };
}

describe("no open relay through trusted networks", () => {
  const policy = noOpenRelayTrust();
  test.each([["0.0.0.0/0"], ["::/0"]])("fires on %s, even where the schema was bypassed", async (net) => {
    await expect(
      violations(policy, CONTAINER, withUploadedConfig(container("smtp"), "mailstack:trustedNetworks", ["192.168.25.0/24", net])),
    ).resolves.toEqual([expect.stringContaining(`${net}: every address may relay`)]);
  });
  test("fires on the Docker bridge, or a network around it", async () => {
    for (const net of ["172.17.0.0/16", "172.17.0.1/32", "172.16.0.0/12"])
      await expect(violations(policy, CONTAINER, container("smtp", {}, { "mailstack:trustedNetworks": [net] }))).resolves.toEqual([
        expect.stringContaining("overlaps the Docker bridge 172.17.0.0/16"),
      ]);
  });
  test("fires when a container trusts networks but sits behind Docker's NAT", async () => {
    await expect(violations(policy, CONTAINER, container("smtp", { networkMode: "bridge" }))).resolves.toEqual([
      expect.stringContaining("not on the host network"),
    ]);
  });
  test("the bridge list is configurable", async () => {
    const props = container("smtp", {}, { "mailstack:trustedNetworks": ["10.20.0.0/16"] });
    await expect(violations(policy, CONTAINER, props)).resolves.toEqual([]);
    await expect(violations(policy, CONTAINER, props, { dockerNetworks: ["10.20.30.0/24"] })).resolves.toEqual([
      expect.stringContaining("overlaps the Docker bridge 10.20.30.0/24"),
    ]);
  });
  test("silent on private, narrow trust on the host network", async () => {
    await expect(
      violations(policy, CONTAINER, container("smtp", {}, { "mailstack:trustedNetworks": ["192.168.25.0/24", "fd00::/64"] })),
    ).resolves.toEqual([]);
    await expect(violations(policy, CONTAINER, { image: IMAGE, restart: "always" })).resolves.toEqual([]);
  });
});

describe("plaintext logins only with TLS or from trusted networks", () => {
  const policy = plaintextAuthNeedsTlsOrTrust();
  test("fires on a public trusted network", async () => {
    await expect(
      violations(policy, CONTAINER, container("imap", {}, { "mailstack:trustedNetworks": ["203.0.113.0/24"] })),
    ).resolves.toEqual([expect.stringContaining("203.0.113.0/24 is public address space")]);
  });
  test("fires when trust is decided behind Docker's NAT", async () => {
    await expect(violations(policy, CONTAINER, container("pop3", { networkMode: "bridge" }))).resolves.toEqual([
      expect.stringContaining("cannot see behind Docker's NAT"),
    ]);
  });
  test("fires when STARTTLS would have no certificate", async () => {
    const props = container("smtp", { volumes: [] });
    await expect(violations(policy, CONTAINER, props)).resolves.toEqual([
      expect.stringContaining("no TLS certificate and no writable data directory"),
    ]);
    const readOnly = container("smtp");
    readOnly.volumes = readOnly.volumes.map((v) => ({ ...v, readOnly: true }));
    await expect(violations(policy, CONTAINER, readOnly)).resolves.toEqual([expect.stringContaining("STARTTLS would be impossible")]);
  });
  test("silent with a certificate from the stack, or the self-signed one on the data volume", async () => {
    await expect(
      violations(policy, CONTAINER, container("smtp", { volumes: [] }, { "mailstack:tls": { cert: "CERT", key: "KEY" } })),
    ).resolves.toEqual([]);
    await expect(violations(policy, CONTAINER, container("imap"))).resolves.toEqual([]);
    // DNS and the queue take no logins.
    await expect(
      violations(policy, CONTAINER, container("dns", { networkMode: "bridge" }, { "mailstack:trustedNetworks": ["203.0.113.0/24"] })),
    ).resolves.toEqual([]);
  });
});

describe("only mail and DNS ports", () => {
  const policy = onlyMailAndDnsPorts();
  test("fires on a published SSH or web port, and on publishAllPorts", async () => {
    const props = container("smtp", {
      networkMode: "bridge",
      ports: [
        { internal: 25, external: 25 },
        { internal: 22, external: 2222 },
      ],
    });
    await expect(violations(policy, CONTAINER, props)).resolves.toEqual([
      "port 22 is published but is no mail or DNS port",
      "port 2222 is published but is no mail or DNS port",
    ]);
    await expect(violations(policy, CONTAINER, container("imap", { networkMode: "bridge", publishAllPorts: true }))).resolves.toEqual([
      expect.stringContaining("publishAllPorts"),
    ]);
  });
  test("fires on a host-network container that is not a declared mailstack service", async () => {
    await expect(violations(policy, CONTAINER, { image: IMAGE, networkMode: "host" })).resolves.toEqual([
      expect.stringContaining("only mailstack service containers"),
    ]);
    const undeclared = container("smtp");
    undeclared.labels = undeclared.labels.filter((l) => l.label !== "mailstack.endpoints");
    await expect(violations(policy, CONTAINER, undeclared)).resolves.toEqual([expect.stringContaining("no mailstack.endpoints label")]);
    const extra = container("smtp");
    extra.labels = extra.labels.map((l) =>
      l.label === "mailstack.endpoints" ? { ...l, value: `${l.value},metrics=0.0.0.0:9100/tcp` } : l,
    );
    await expect(violations(policy, CONTAINER, extra)).resolves.toEqual([
      'declared endpoint "metrics=0.0.0.0:9100/tcp" is no mail or DNS endpoint',
    ]);
    const lying = container("smtp");
    lying.labels = lying.labels.map((l) => (l.label === "mailstack.endpoints" ? { ...l, value: "smtp=0.0.0.0:2525/tcp" } : l));
    await expect(violations(policy, CONTAINER, lying)).resolves.toEqual([
      expect.stringContaining("not what the container's config listens on"),
    ]);
  });
  test("silent on well-known mail ports and on the stack's own non-standard mail ports", async () => {
    await expect(
      violations(
        policy,
        CONTAINER,
        container("smtp", {
          networkMode: "bridge",
          ports: [
            { internal: 25, external: 25 },
            { internal: 587, external: 587 },
          ],
        }),
      ),
    ).resolves.toEqual([]);
    const dev = container(
      "smtp",
      { networkMode: "bridge", ports: [{ internal: 2525, external: 2525 }] },
      { "mailstack:listen": { smtp: 2525 } },
    );
    await expect(violations(policy, CONTAINER, dev)).resolves.toEqual([]);
  });
});

describe("no secrets in container environments", () => {
  const policy = noSecretsInEnvironment();
  test("fires on password variables, keys, hashes and password flags", async () => {
    const props = container("smtp", {
      envs: [
        "TZ=UTC",
        "MAILSTACK_PASSWORD=hunter2",
        "TLS=-----BEGIN PRIVATE KEY-----x",
        "H=$argon2id$v=19$m=19456,t=2,p=1$abc$def",
        "EMPTY_TOKEN=",
      ],
      command: ["serve", "smtp", "--password=hunter2"],
    });
    await expect(violations(policy, CONTAINER, props)).resolves.toEqual([
      "environment variable MAILSTACK_PASSWORD looks like a secret",
      "environment variable TLS holds secret material",
      "environment variable H holds secret material",
      "command line argument 2 (--password) passes a secret",
    ]);
  });
  test("silent on mailstack's containers, which carry their config in a file", async () => {
    await expect(violations(policy, CONTAINER, container("smtp", { envs: ["TZ=UTC", "NODE_ENV=production"] }))).resolves.toEqual([]);
  });
});

describe("restart policy and health check", () => {
  const policy = restartAndHealthcheck();
  test("fires without a restart policy or a health check", async () => {
    await expect(violations(policy, CONTAINER, container("smtp", { restart: undefined }))).resolves.toEqual([
      expect.stringContaining("restart policy is unset"),
    ]);
    await expect(violations(policy, CONTAINER, container("smtp", { restart: "no" }))).resolves.toEqual([expect.stringContaining('"no"')]);
    await expect(violations(policy, CONTAINER, container("smtp", { healthcheck: undefined }))).resolves.toEqual([
      "container has no health check",
    ]);
    await expect(violations(policy, CONTAINER, container("smtp", { healthcheck: { tests: ["NONE"] } }))).resolves.toEqual([
      "container has no health check",
    ]);
  });
  test("silent with unless-stopped and a health check", async () => {
    await expect(violations(policy, CONTAINER, container("queue"))).resolves.toEqual([]);
  });
});

describe("pinned images", () => {
  const policy = pinnedImages();
  test("fires on tags and :latest", async () => {
    await expect(violations(policy, CONTAINER, container("smtp", { image: "mailstack:latest" }))).resolves.toEqual([
      expect.stringContaining("neither an image id nor pinned"),
    ]);
    await expect(violations(policy, REMOTE_IMAGE, { name: "docker.io/library/node:22" })).resolves.toEqual([
      expect.stringContaining("pulled by tag"),
    ]);
    await expect(violations(policy, REMOTE_IMAGE, { name: "mailstack", build: { context: "." } })).resolves.toEqual([
      expect.stringContaining("latest (implicitly)"),
    ]);
    await expect(violations(policy, REMOTE_IMAGE, { name: "mailstack:latest", build: { context: "." } })).resolves.toEqual([
      expect.stringContaining("tagged latest"),
    ]);
  });
  test("silent on image ids, digests, and content-tagged builds; unknown during preview is left for the update", async () => {
    await expect(violations(policy, CONTAINER, container("smtp"))).resolves.toEqual([]);
    await expect(
      violations(policy, CONTAINER, container("smtp", { image: `registry.example.net/mailstack@sha256:${"e".repeat(64)}` })),
    ).resolves.toEqual([]);
    await expect(violations(policy, REMOTE_IMAGE, { name: `mailstack@sha256:${"e".repeat(64)}` })).resolves.toEqual([]);
    await expect(violations(policy, REMOTE_IMAGE, { name: "mailstack:0123456789abcdef", build: { context: "." } })).resolves.toEqual([]);
    await expect(violations(policy, CONTAINER, container("smtp", { image: undefined }))).resolves.toEqual([]);
  });
});

describe("mail data on a named volume", () => {
  const policy = mailDataOnNamedVolume();
  test("fires on no mount, a bind mount, or a read-only volume", async () => {
    await expect(violations(policy, CONTAINER, container("smtp", { volumes: [] }))).resolves.toEqual([
      expect.stringContaining("nothing mounted at its data directory /var/lib/mailstack"),
    ]);
    await expect(
      violations(policy, CONTAINER, container("pop3", { volumes: [{ hostPath: "/srv/mail", containerPath: "/var/lib/mailstack" }] })),
    ).resolves.toEqual([expect.stringContaining("bind mount or tmpfs")]);
    await expect(
      violations(
        policy,
        CONTAINER,
        container("queue", { volumes: [{ volumeName: "v", containerPath: "/var/lib/mailstack", readOnly: true }] }),
      ),
    ).resolves.toEqual([expect.stringContaining("read-only")]);
  });
  test("silent on the named volume, also as a mount; DNS keeps no mail", async () => {
    await expect(violations(policy, CONTAINER, container("imap"))).resolves.toEqual([]);
    await expect(
      violations(
        policy,
        CONTAINER,
        container("imap", { volumes: [], mounts: [{ type: "volume", source: "v", target: "/var/lib/mailstack" }] }),
      ),
    ).resolves.toEqual([]);
    await expect(violations(policy, CONTAINER, container("dns", { volumes: [] }))).resolves.toEqual([]);
  });
});
