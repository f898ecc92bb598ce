/**
 * The mailstack policies, one small factory each (in the manner of pulumi-policy-aws). They read
 * what is really deployed: the containers' inputs, including the config file uploaded into each
 * (policy packs see secret values unwrapped). `index.ts` puts them in a PolicyPack; tests call
 * `validateResource` directly with hand-built arguments.
 */
import type { ReportViolation, ResourceValidationArgs, ResourceValidationPolicy } from "@pulumi/policy";

export type { ReportViolation, ResourceValidationArgs, ResourceValidationPolicy };

import { type Cidr, parseCidr } from "./cidr";
import {
  CONFIG_PATH,
  CONTAINER_DATA_DIR,
  LABEL_ENDPOINTS,
  LABEL_SERVICE,
  MAIL_DATA_SERVICES,
  type MailEndpointName,
  PLAINTEXT_LOGIN_ENDPOINTS,
  WELL_KNOWN_PORTS,
} from "./constants";

export const CONTAINER = "docker:index/container:Container";
export const REMOTE_IMAGE = "docker:index/remoteImage:RemoteImage";

/** Docker's default bridge (docker0) and its gateway's network. */
export const DEFAULT_DOCKER_NETWORKS = ["172.17.0.0/16"];

/** Address space that never leaves a site: RFC 1918, loopback, link-local, CGNAT, ULA. */
const NON_PUBLIC = [
  "10.0.0.0/8",
  "172.16.0.0/12",
  "192.168.0.0/16",
  "127.0.0.0/8",
  "169.254.0.0/16",
  "100.64.0.0/10",
  "::1/128",
  "fc00::/7",
  "fe80::/10",
].map((c) => parseCidr(c)!);

// ---------------------------------------------------------------------------------------------
// Reading a container's inputs

type Props = Record<string, any>;

interface ContainerView {
  /** `mailstack.service` label, when the container is one of ours. */
  service: string | undefined;
  hostNetwork: boolean;
  /** The uploaded mailstack config (`mailstack:` prefix stripped), when there is one. */
  config: Record<string, any> | undefined;
  labels: Map<string, string>;
}

function containerView(props: Props): ContainerView {
  const labels = new Map<string, string>();
  for (const l of (props.labels ?? []) as Array<{ label?: string; value?: string }>)
    if (l?.label !== undefined) labels.set(l.label, String(l.value ?? ""));
  return {
    service: labels.get(LABEL_SERVICE),
    hostNetwork: props.networkMode === "host",
    config: uploadedConfig(props),
    labels,
  };
}

/** The rendered config in `uploads` (a stack-file shaped document, JSON). */
export function uploadedConfig(props: Props): Record<string, any> | undefined {
  const upload = ((props.uploads ?? []) as Array<{ file?: string; content?: string }>).find((u) => u?.file === CONFIG_PATH);
  if (typeof upload?.content !== "string") return undefined;
  let doc: any;
  try {
    doc = JSON.parse(upload.content);
  } catch {
    return { __unparseable: true };
  }
  const map = (doc?.config ?? doc) as Record<string, unknown>;
  const out: Record<string, any> = {};
  for (const [k, v] of Object.entries(map ?? {})) out[k.startsWith("mailstack:") ? k.slice("mailstack:".length) : k] = v;
  return out;
}

function trustedNetworks(config: Record<string, any> | undefined): string[] {
  return Array.isArray(config?.trustedNetworks) ? (config!.trustedNetworks as unknown[]).map(String) : [];
}

/** Enabled listeners in a rendered config: endpoint → port. */
function listeners(config: Record<string, any> | undefined): Map<MailEndpointName, { address: string; port: number }> {
  const out = new Map<MailEndpointName, { address: string; port: number }>();
  const listen = (config?.listen ?? {}) as Record<string, unknown>;
  for (const name of Object.keys(WELL_KNOWN_PORTS) as MailEndpointName[]) {
    const ep = listen[name];
    if (ep === false) continue;
    if (ep && typeof ep === "object" && typeof (ep as { port?: unknown }).port === "number")
      out.set(name, {
        address: String((ep as { address?: unknown }).address ?? listen.address ?? "0.0.0.0"),
        port: (ep as { port: number }).port,
      });
    else if (typeof ep === "number") out.set(name, { address: String(listen.address ?? "0.0.0.0"), port: ep });
    else if (ep === undefined) out.set(name, { address: String(listen.address ?? "0.0.0.0"), port: WELL_KNOWN_PORTS[name] });
  }
  return out;
}

function overlaps(a: Cidr, b: Cidr): boolean {
  if (a.family !== b.family) return false;
  const max = a.family === 4 ? 32 : 128;
  const shift = BigInt(max - Math.min(a.prefix, b.prefix));
  return a.bits >> shift === b.bits >> shift;
}

function within(inner: Cidr, outer: Cidr): boolean {
  return inner.family === outer.family && inner.prefix >= outer.prefix && overlaps(inner, outer);
}

// ---------------------------------------------------------------------------------------------
// The policies

/**
 * No trusted network may make an open relay: nothing that trusts every address (0.0.0.0/0, ::/0,
 * any /0), nothing that overlaps a Docker bridge (whose gateway is where NATed clients appear
 * from), and no trust at all in a container that does not see real client addresses.
 */
export function noOpenRelayTrust(): ResourceValidationPolicy {
  return {
    name: "mailstack-no-open-relay-trust",
    description:
      "trustedNetworks must not contain 0.0.0.0/0, ::/0 or a Docker bridge, and trust needs real client addresses (host networking)",
    enforcementLevel: "mandatory",
    configSchema: {
      properties: { dockerNetworks: { type: "array", items: { type: "string" }, default: DEFAULT_DOCKER_NETWORKS } },
    },
    validateResource: (args: ResourceValidationArgs, report: ReportViolation) => {
      if (args.type !== CONTAINER) return;
      const view = containerView(args.props);
      if (!view.config) return;
      const docker = (args.getConfig<{ dockerNetworks?: string[] }>().dockerNetworks ?? DEFAULT_DOCKER_NETWORKS)
        .map((c) => parseCidr(c))
        .filter((c): c is Cidr => c !== null);
      const nets = trustedNetworks(view.config);
      for (const n of nets) {
        const c = parseCidr(n);
        if (!c) {
          report(`trustedNetworks entry "${n}" is not a network`);
          continue;
        }
        if (c.prefix === 0) {
          report(`trustedNetworks contains ${n}: every address may relay (open relay)`);
          continue;
        }
        const bridge = docker.find((d) => overlaps(c, d));
        if (bridge)
          report(
            `trustedNetworks entry ${n} overlaps the Docker bridge ${cidrText(bridge)}: NATed clients appear from its gateway and could relay`,
          );
      }
      if (nets.length > 0 && !view.hostNetwork)
        report(
          `container trusts ${nets.join(", ")} but is not on the host network: through Docker's NAT every client can appear as the bridge gateway`,
        );
    },
  };
}

/**
 * Plaintext logins only over TLS or from trusted networks. mailstack's services refuse a
 * plaintext login from an untrusted address before STARTTLS; this makes sure that rule rests on
 * real addresses, that "trusted" is never the open internet, and that TLS is there to upgrade to.
 */
export function plaintextAuthNeedsTlsOrTrust(): ResourceValidationPolicy {
  return {
    name: "mailstack-plaintext-auth-tls-or-trust",
    description:
      "plaintext logins only with TLS or from trusted networks: trusted networks are private, seen through host networking, and TLS is available",
    enforcementLevel: "mandatory",
    validateResource: (args, report) => {
      if (args.type !== CONTAINER) return;
      const view = containerView(args.props);
      if (!view.config || !["smtp", "pop3", "imap"].includes(view.service ?? "")) return;
      const login = [...listeners(view.config)].filter(
        ([name]) => PLAINTEXT_LOGIN_ENDPOINTS.includes(name) && endpointService(name) === view.service,
      );
      if (login.length === 0) return;
      for (const n of trustedNetworks(view.config)) {
        const c = parseCidr(n);
        if (c && !NON_PUBLIC.some((p) => within(c, p)))
          report(
            `trustedNetworks entry ${n} is public address space: plaintext passwords from it would cross the internet (use TLS, or trust only private networks)`,
          );
      }
      if (!view.hostNetwork && trustedNetworks(view.config).length > 0)
        report(
          `${view.service} decides where plaintext logins are allowed from client addresses, which it cannot see behind Docker's NAT: use host networking`,
        );
      const tls = (view.config.tls ?? {}) as Record<string, unknown>;
      const material =
        (typeof tls.cert === "string" && typeof tls.key === "string") ||
        (typeof tls.certFile === "string" && typeof tls.keyFile === "string");
      const writableData = volumes(args.props).some((v) => v.containerPath === dataDirOf(view.config) && !v.readOnly);
      if (!material && !writableData)
        report(
          `${view.service} has no TLS certificate and no writable data directory for its self-signed one: STARTTLS would be impossible`,
        );
      if (tls.key !== undefined && typeof tls.key !== "string") report("tls.key is not a PEM string (an undecrypted secret?)");
    },
  };
}

function endpointService(name: MailEndpointName): string {
  return name.startsWith("pop3") ? "pop3" : name.startsWith("imap") ? "imap" : name === "dns" ? "dns" : "smtp";
}

/**
 * Only mail and DNS ports are exposed: published ports must be mail/DNS ports (well-known, or a
 * mail endpoint of the container's own config); a host-network container must be a mailstack
 * service whose declared endpoints are exactly its config's listeners.
 */
export function onlyMailAndDnsPorts(): ResourceValidationPolicy {
  return {
    name: "mailstack-only-mail-and-dns-ports",
    description: "containers publish only SMTP, submission, SMTPS, POP3(S), IMAP(S) and DNS ports",
    enforcementLevel: "mandatory",
    validateResource: (args, report) => {
      if (args.type !== CONTAINER) return;
      const props = args.props;
      const view = containerView(props);
      const own = listeners(view.config);
      const allowed = new Set<number>([...Object.values(WELL_KNOWN_PORTS), ...[...own.values()].map((e) => e.port)]);
      if (props.publishAllPorts === true) report("publishAllPorts exposes every port the image declares");
      for (const p of (props.ports ?? []) as Array<{ internal?: number; external?: number }>) {
        for (const port of [p.internal, p.external])
          if (port !== undefined && !allowed.has(port)) report(`port ${port} is published but is no mail or DNS port`);
      }
      if (!view.hostNetwork) return;
      if (view.service === undefined) {
        report("host networking exposes every port the process opens; only mailstack service containers may use it");
        return;
      }
      const declared = view.labels.get(LABEL_ENDPOINTS);
      if (declared === undefined) {
        report(`host-network container has no ${LABEL_ENDPOINTS} label declaring what it listens on`);
        return;
      }
      for (const entry of declared.split(",").filter(Boolean)) {
        const m = /^([a-z0-9]+)=(.+):(\d+)\/([a-z+]+)$/.exec(entry);
        if (!m || !(m[1]! in WELL_KNOWN_PORTS)) {
          report(`declared endpoint "${entry}" is no mail or DNS endpoint`);
          continue;
        }
        const configured = own.get(m[1] as MailEndpointName);
        if (view.config && (!configured || configured.port !== Number(m[3])))
          report(`declared endpoint "${entry}" is not what the container's config listens on`);
      }
    },
  };
}

const SECRET_NAME = /(PASS(WORD|WD)?|SECRET|TOKEN|PRIVATE_?KEY|API_?KEY|CREDENTIALS?)/i;
const SECRET_VALUE = [/-----BEGIN [A-Z ]*PRIVATE KEY-----/, /^\$argon2(id|i|d)\$/, /^(\{SHA512-CRYPT\})?\$6\$/, /^\$2[aby]\$/];

/** No secret material in a container's environment or command line (where `docker inspect` and `ps` show it). */
export function noSecretsInEnvironment(): ResourceValidationPolicy {
  return {
    name: "mailstack-no-secrets-in-environment",
    description: "no passwords, hashes or private keys in container environment variables or command lines",
    enforcementLevel: "mandatory",
    validateResource: (args, report) => {
      if (args.type !== CONTAINER) return;
      for (const env of (args.props.envs ?? []) as string[]) {
        const eq = String(env).indexOf("=");
        const name = eq < 0 ? String(env) : String(env).slice(0, eq);
        const value = eq < 0 ? "" : String(env).slice(eq + 1);
        if (value !== "" && SECRET_NAME.test(name)) report(`environment variable ${name} looks like a secret`);
        else if (SECRET_VALUE.some((r) => r.test(value))) report(`environment variable ${name} holds secret material`);
      }
      const argv = [...((args.props.command ?? []) as string[]), ...((args.props.entrypoints ?? []) as string[])].map(String);
      argv.forEach((a, i) => {
        if (/^--?(pass(word)?|secret|token|key)(=|$)/i.test(a)) report(`command line argument ${i} (${a.split("=")[0]}) passes a secret`);
        else if (SECRET_VALUE.some((r) => r.test(a))) report(`command line argument ${i} holds secret material`);
      });
    },
  };
}

/** Every service container restarts by itself and has a health check. */
export function restartAndHealthcheck(): ResourceValidationPolicy {
  return {
    name: "mailstack-restart-and-healthcheck",
    description: "every service container has a restart policy and a health check",
    enforcementLevel: "mandatory",
    validateResource: (args, report) => {
      if (args.type !== CONTAINER) return;
      const restart = args.props.restart;
      if (!["always", "unless-stopped", "on-failure"].includes(restart))
        report(`restart policy is ${restart === undefined ? "unset (no)" : `"${restart}"`}; use unless-stopped`);
      const tests = (args.props.healthcheck?.tests ?? []) as string[];
      if (tests.length === 0 || tests[0] === "NONE") report("container has no health check");
    },
  };
}

const DIGEST = /^sha256:[0-9a-f]{64}$/;
const PINNED = /@sha256:[0-9a-f]{64}$/;

/** Images pinned by digest, or built from source with a content tag; never `:latest`. */
export function pinnedImages(): ResourceValidationPolicy {
  return {
    name: "mailstack-pinned-images",
    description: "images are pinned by digest or built from source, never :latest",
    enforcementLevel: "mandatory",
    validateResource: (args, report) => {
      if (args.type === CONTAINER) {
        const image = args.props.image;
        if (typeof image !== "string") return; // unknown during preview: checked on update
        if (!DIGEST.test(image) && !PINNED.test(image)) report(`container image "${image}" is neither an image id nor pinned by digest`);
      } else if (args.type === REMOTE_IMAGE) {
        const name = args.props.name;
        if (typeof name !== "string") return;
        if (PINNED.test(name)) return;
        const tag = /:([^/:]+)$/.exec(name)?.[1];
        if (args.props.build === undefined) report(`image "${name}" is pulled by tag; pin it by digest (name@sha256:...)`);
        else if (tag === undefined || tag === "latest")
          report(`built image "${name}" is tagged ${tag ?? "latest (implicitly)"}; tag it by content`);
      }
    },
  };
}

interface VolumeView {
  containerPath: string;
  named: boolean;
  readOnly: boolean;
}

function volumes(props: Props): VolumeView[] {
  const out: VolumeView[] = [];
  for (const v of (props.volumes ?? []) as Array<Record<string, unknown>>)
    out.push({
      containerPath: String(v.containerPath ?? ""),
      named: typeof v.volumeName === "string" && v.hostPath === undefined,
      readOnly: v.readOnly === true,
    });
  for (const m of (props.mounts ?? []) as Array<Record<string, unknown>>)
    out.push({
      containerPath: String(m.target ?? ""),
      named: m.type === "volume" && typeof m.source === "string",
      readOnly: m.readOnly === true,
    });
  return out;
}

function dataDirOf(config: Record<string, any> | undefined): string {
  return typeof config?.dataDir === "string" ? config.dataDir : CONTAINER_DATA_DIR;
}

/** Mail lives on a named volume, so replacing a container never loses it. */
export function mailDataOnNamedVolume(): ResourceValidationPolicy {
  return {
    name: "mailstack-mail-data-on-named-volume",
    description: "SMTP, queue, POP3 and IMAP containers keep their data directory on a named, writable volume",
    enforcementLevel: "mandatory",
    validateResource: (args, report) => {
      if (args.type !== CONTAINER) return;
      const view = containerView(args.props);
      if (!MAIL_DATA_SERVICES.includes(view.service as never)) return;
      const dir = dataDirOf(view.config);
      const mount = volumes(args.props).find((v) => v.containerPath === dir);
      if (!mount) report(`${view.service} has nothing mounted at its data directory ${dir}: mail would die with the container`);
      else if (!mount.named) report(`${view.service} keeps ${dir} on a bind mount or tmpfs, not a named volume`);
      else if (mount.readOnly) report(`${view.service} mounts its data volume read-only`);
    },
  };
}

function cidrText(c: Cidr): string {
  if (c.family === 4) return `${[24, 16, 8, 0].map((s) => Number((c.bits >> BigInt(s)) & 255n)).join(".")}/${c.prefix}`;
  return `${c.bits.toString(16)}/${c.prefix}`;
}

/** Every mailstack policy, as the pack runs them. */
export function mailstackPolicies(): ResourceValidationPolicy[] {
  return [
    noOpenRelayTrust(),
    plaintextAuthNeedsTlsOrTrust(),
    onlyMailAndDnsPorts(),
    noSecretsInEnvironment(),
    restartAndHealthcheck(),
    pinnedImages(),
    mailDataOnNamedVolume(),
  ];
}
