/**
 * Pure builders for everything mailstack runs on a Docker engine: one container spec per service,
 * the shared data volume, and the config file each container reads. The Pulumi components turn
 * these into `docker.Container`/`docker.Volume` inputs; the real-engine test turns the very same
 * specs into `docker create` arguments. Nothing here touches Pulumi, the network or the disk.
 *
 * Networking: every container uses the host's network namespace. A connection through a Docker
 * published port can arrive from the bridge gateway (docker-proxy, hairpin NAT, IPv6 to IPv4),
 * and trusting that address makes an open relay (docker-mailserver #1405, mailcow #1145). With
 * host networking the services bind the stack's listen addresses themselves and see every
 * client's real address; nothing is published through Docker and no bridge is ever trusted.
 */
import { createHmac } from "node:crypto";
import * as path from "node:path";
import { type Algorithm, hashSync } from "@node-rs/argon2";
import type { EndpointName, MailConfig } from "../config/schema";
import {
  CONFIG_PATH,
  CONTAINER_DATA_DIR,
  CONTAINER_TLS_DIR,
  type ContainerService,
  DEFAULT_HOST_DATA_DIR,
  LABEL_DOMAIN,
  LABEL_ENDPOINTS,
  LABEL_SERVICE,
  MAILSTACK_UID,
} from "./constants";

export {
  CONFIG_PATH,
  CONTAINER_DATA_DIR,
  CONTAINER_TLS_DIR,
  type ContainerService,
  DEFAULT_HOST_DATA_DIR,
  MAILSTACK_UID,
  WELL_KNOWN_PORTS,
} from "./constants";

/** Start order: DNS first (the queue resolves through it), the queue after SMTP. */
export const CONTAINER_SERVICES: readonly ContainerService[] = ["dns", "smtp", "queue", "pop3", "imap"];

/** The listeners each service owns. The queue listens on nothing. */
export const SERVICE_ENDPOINTS: Readonly<Record<ContainerService, readonly EndpointName[]>> = {
  dns: ["dns"],
  smtp: ["smtp", "submission", "smtps"],
  queue: [],
  pop3: ["pop3", "pop3s"],
  imap: ["imap", "imaps"],
};

export interface EndpointSpec {
  name: EndpointName;
  address: string;
  port: number;
  protocols: Array<"tcp" | "udp">;
}

export interface VolumeMountSpec {
  /** A named volume, or */
  volumeName?: string;
  /** a host path (read-only TLS files only). */
  hostPath?: string;
  containerPath: string;
  readOnly: boolean;
}

export interface HealthcheckSpec {
  /** Docker's form: ["CMD", argv...]. */
  tests: string[];
  interval: string;
  timeout: string;
  startPeriod: string;
  retries: number;
}

/** Everything about one service container except the secret config content. Plain data. */
export interface ContainerSpec {
  service: ContainerService;
  /** The container's name on the engine, unique per mail domain. */
  name: string;
  image: string;
  /** Arguments to the image's entrypoint (`mailstack`). */
  command: string[];
  /** uid:gid; never root. */
  user: string;
  /** Host networking: real client addresses (see the module comment). */
  networkMode: "host";
  /** What the container listens on, on the host's addresses. */
  endpoints: EndpointSpec[];
  /** Published ports: none, since the services bind the host's addresses directly. */
  ports: Array<{ internal: number; external: number; ip: string; protocol: "tcp" | "udp" }>;
  volumes: VolumeMountSpec[];
  /** The rendered config is uploaded here before the container starts (see renderServiceConfig). */
  configFile: string;
  healthcheck: HealthcheckSpec;
  restart: "unless-stopped";
  /** Docker's init (tini) as PID 1: signals forwarded, zombies reaped. */
  init: true;
  /** Every capability dropped but NET_BIND_SERVICE (the image's node carries it as a file capability). */
  capabilities: { adds: string[]; drops: string[] };
  /** Seconds between SIGTERM and SIGKILL: sessions get time to finish, queue files to be fsynced. */
  stopTimeout: number;
  labels: Record<string, string>;
  /** Bounded json-file logs, so a chatty client cannot fill the host's disk. */
  logOpts: Record<string, string>;
}

export interface DataVolumeSpec {
  name: string;
  driver: "local";
  /** Binds the volume to the host's data directory when that is an absolute path. */
  driverOpts: Record<string, string>;
  labels: Record<string, string>;
}

/** `lx.com` → `mailstack-lx-com`: the prefix of every engine object of one mail domain. */
export function resourcePrefix(config: Pick<MailConfig, "domain">): string {
  return `mailstack-${config.domain.replace(/[^a-z0-9]+/gi, "-").toLowerCase()}`;
}

/** Where the data lives on the host. */
export function hostDataDir(config: Pick<MailConfig, "dataDir">): string {
  if (!path.posix.isAbsolute(config.dataDir)) return DEFAULT_HOST_DATA_DIR;
  return path.posix.normalize(config.dataDir).replace(/(.)\/+$/, "$1");
}

export function dataVolumeSpec(config: Pick<MailConfig, "domain" | "dataDir">): DataVolumeSpec {
  return {
    name: `${resourcePrefix(config)}-data`,
    driver: "local",
    driverOpts: { type: "none", o: "bind", device: hostDataDir(config) },
    labels: { "mailstack.domain": config.domain, "mailstack.role": "maildata" },
  };
}

/** The endpoints a service listens on, in the stack's order. Disabled ones are left out. */
export function serviceEndpoints(config: Pick<MailConfig, "listen">, service: ContainerService): EndpointSpec[] {
  const out: EndpointSpec[] = [];
  for (const name of SERVICE_ENDPOINTS[service]) {
    const ep = config.listen[name];
    if (!ep) continue;
    out.push({ name, address: ep.address, port: ep.port, protocols: name === "dns" ? ["udp", "tcp"] : ["tcp"] });
  }
  return out;
}

/** The services that get a container: those with a listener, and the queue beside SMTP. */
export function enabledServices(config: Pick<MailConfig, "listen">): ContainerService[] {
  const smtp = serviceEndpoints(config, "smtp").length > 0;
  return CONTAINER_SERVICES.filter((s) => (s === "queue" ? smtp : serviceEndpoints(config, s).length > 0));
}

/** `smtp=0.0.0.0:25/tcp,submission=...`: what a host-network container exposes, for policies. */
export function endpointsLabel(endpoints: readonly EndpointSpec[]): string {
  return endpoints.map((e) => `${e.name}=${e.address}:${e.port}/${e.protocols.join("+")}`).join(",");
}

export function healthcheckSpec(service: ContainerService): HealthcheckSpec {
  // `health queue` has no listener to greet: it checks that a live queue manager holds the
  // spool's lock (queue/manager.ts refreshes it every 10 s) and that the spool can be read.
  return {
    tests: ["CMD", "mailstack", "health", service, "--config", CONFIG_PATH],
    interval: "30s",
    timeout: "10s",
    startPeriod: "20s",
    retries: 3,
  };
}

/**
 * The container of one service. `image` is an image id (`sha256:...`) or a digest-pinned
 * reference; the components pass the id of the image they built or pulled.
 */
export function containerSpec(config: MailConfig, service: ContainerService, image: string): ContainerSpec {
  const endpoints = serviceEndpoints(config, service);
  if (service !== "queue" && endpoints.length === 0) throw new Error(`${service} has no enabled listener in the stack's listen section`);
  const volumes: VolumeMountSpec[] = [{ volumeName: dataVolumeSpec(config).name, containerPath: CONTAINER_DATA_DIR, readOnly: false }];
  const tls = tlsMounts(config);
  if (service !== "queue" && service !== "dns") volumes.push(...tls.mounts);
  return {
    service,
    name: `${resourcePrefix(config)}-${service}`,
    image,
    command: ["serve", service, "--config", CONFIG_PATH],
    user: `${MAILSTACK_UID}:${MAILSTACK_UID}`,
    networkMode: "host",
    endpoints,
    ports: [],
    volumes,
    configFile: CONFIG_PATH,
    healthcheck: healthcheckSpec(service),
    restart: "unless-stopped",
    init: true,
    capabilities: { adds: ["NET_BIND_SERVICE"], drops: ["ALL"] },
    stopTimeout: 30,
    labels: {
      [LABEL_DOMAIN]: config.domain,
      [LABEL_SERVICE]: service,
      [LABEL_ENDPOINTS]: endpointsLabel(endpoints),
    },
    logOpts: { "max-size": "20m", "max-file": "5" },
  };
}

/** Every container of a stack, in start order. */
export function serviceContainers(config: MailConfig, image: string): ContainerSpec[] {
  return enabledServices(config).map((s) => containerSpec(config, s, image));
}

/** Host ports to open in the firewall: `25/tcp`, `53/udp`, ... sorted and unique. */
export function firewallPorts(config: Pick<MailConfig, "listen">): string[] {
  const set = new Set<string>();
  for (const s of CONTAINER_SERVICES) for (const e of serviceEndpoints(config, s)) for (const p of e.protocols) set.add(`${e.port}/${p}`);
  return [...set].sort((a, b) => Number.parseInt(a, 10) - Number.parseInt(b, 10) || a.localeCompare(b));
}

/** TLS files given by path are bind-mounted read-only, and the rendered config names the mount. */
function tlsMounts(config: Pick<MailConfig, "tls">): { mounts: VolumeMountSpec[]; certFile?: string; keyFile?: string } {
  const { certFile, keyFile } = config.tls;
  if (certFile === undefined || keyFile === undefined) return { mounts: [] };
  const cert = `${CONTAINER_TLS_DIR}/cert.pem`;
  const key = `${CONTAINER_TLS_DIR}/key.pem`;
  return {
    mounts: [
      { hostPath: certFile, containerPath: cert, readOnly: true },
      { hostPath: keyFile, containerPath: key, readOnly: true },
    ],
    certFile: cert,
    keyFile: key,
  };
}

// ---------------------------------------------------------------------------------------------
// The rendered config

/** argon2id parameters of every hash mailstack writes (the OWASP minimum, as the stack files use). */
export const ARGON2_PARAMS = { memoryCost: 19456, timeCost: 2, parallelism: 1, outputLen: 32 } as const;
const ARGON2ID = 2 as Algorithm;

/**
 * The salt of a deployed user's hash: HMAC-SHA256 over the stack, the domain and the user name.
 * Deterministic, so a second `pulumi up` renders byte-identical files and replaces nothing; unique
 * per user and stack. It never depends on the password: a salt derived from the password would
 * let anyone holding the hash test guesses with one cheap HMAC instead of an argon2 run.
 */
export function deterministicSalt(stack: string, domain: string, user: string): Buffer {
  return createHmac("sha256", "mailstack/argon2id-salt/v1").update(`${stack}\0${domain}\0${user}`).digest().subarray(0, 16);
}

export function hashUserPassword(password: string, salt: Uint8Array): string {
  return hashSync(password, { ...ARGON2_PARAMS, algorithm: ARGON2ID, salt });
}

export interface RenderOptions {
  /** The Pulumi stack name, part of every salt. */
  stack: string;
  /** The data directory as the services see it. Default: the container's mount point. */
  dataDir?: string;
}

/** The document each container reads: a stack file's shape, `{ config: { "mailstack:key": value } }`. */
export interface RenderedConfig {
  config: Record<string, unknown>;
}

/**
 * The config file of every service container. It holds password hashes and never a plaintext
 * password (plaintext ones are hashed here, deterministically), and no deployment settings (no
 * SSH key). It still holds TLS keys and relay credentials, so the components keep it secret.
 * `parseConfig` reads it back into the same MailConfig (the tests check that round trip).
 */
export function renderServiceConfig(config: MailConfig, opts: RenderOptions): RenderedConfig {
  const users = config.users.map((u) => {
    const passwordHash =
      u.password !== undefined ? hashUserPassword(u.password, deterministicSalt(opts.stack, config.domain, u.name)) : u.passwordHash;
    if (passwordHash === undefined) throw new Error(`mailstack:users: user "${u.name}" has neither password nor passwordHash`);
    const out: Record<string, unknown> = { name: u.name, passwordHash };
    if (u.quota !== undefined) out.quota = u.quota;
    return out;
  });
  const listen: Record<string, unknown> = {};
  for (const [name, ep] of Object.entries(config.listen)) listen[name] = ep ? { address: ep.address, port: ep.port } : false;
  const tls: Record<string, unknown> = {};
  if (config.tls.cert !== undefined) tls.cert = config.tls.cert;
  if (config.tls.key !== undefined) tls.key = config.tls.key;
  const mounted = tlsMounts(config);
  if (mounted.certFile !== undefined) {
    tls.certFile = mounted.certFile;
    tls.keyFile = mounted.keyFile;
  }
  const { relayhost, ...queue } = config.queue;
  const queueOut: Record<string, unknown> = { ...queue };
  if (relayhost) queueOut.relayhost = { ...relayhost };
  const body: Record<string, unknown> = {
    domain: config.domain,
    hostname: config.hostname,
    myorigin: config.myorigin,
    destinations: [...config.destinations],
    publicAddress: config.publicAddress,
    ...(config.publicAddress6 !== undefined ? { publicAddress6: config.publicAddress6 } : {}),
    trustedNetworks: [...config.trustedNetworks],
    relayDomains: [...config.relayDomains],
    admin: config.admin,
    users,
    // Every alias explicitly, system ones and users' own included, so parsing adds nothing.
    aliases: Object.fromEntries(Object.entries(config.aliases).map(([k, v]) => [k, [...v]])),
    dataDir: opts.dataDir ?? CONTAINER_DATA_DIR,
    listen,
    tls,
    limits: { ...config.limits },
    resolvers: [...config.resolvers],
    reverseLookups: config.reverseLookups,
    dns: {
      ...config.dns,
      records: config.dns.records.map((r) => ({ ...r })),
      secondaries: [...config.dns.secondaries],
      upstream: [...config.dns.upstream],
    },
    queue: queueOut,
  };
  const prefixed: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(body)) prefixed[`mailstack:${k}`] = v;
  return { config: prefixed };
}

/** The rendered config as the bytes written into the container (stable key order, final newline). */
export function serializeServiceConfig(rendered: RenderedConfig): string {
  return `${JSON.stringify(rendered, null, 2)}\n`;
}

// ---------------------------------------------------------------------------------------------
// The same specs as `docker` CLI arguments (the real-engine test, and anyone without Pulumi)

/** `docker volume create` arguments for the data volume. */
export function dockerVolumeCreateArgs(spec: DataVolumeSpec): string[] {
  return [
    "volume",
    "create",
    "--driver",
    spec.driver,
    ...Object.entries(spec.driverOpts).flatMap(([k, v]) => ["--opt", `${k}=${v}`]),
    ...Object.entries(spec.labels).flatMap(([k, v]) => ["--label", `${k}=${v}`]),
    spec.name,
  ];
}

/** A Docker duration (`30s`, `1m30s`, `500ms`) in nanoseconds, as the Engine API takes it. */
export function durationNs(text: string): number {
  const re = /(\d+)(ms|s|m|h)/gy;
  let total = 0;
  let m: RegExpExecArray | null;
  let seen = 0;
  while ((m = re.exec(text)) !== null) {
    total += Number(m[1]) * { ms: 1e6, s: 1e9, m: 60e9, h: 3600e9 }[m[2] as "ms" | "s" | "m" | "h"];
    seen = re.lastIndex;
  }
  if (seen === 0 || seen !== text.length) throw new Error(`bad duration "${text}"`);
  return total;
}

/**
 * The Docker Engine API `POST /containers/create?name=<name>` body of a container spec: what the
 * Pulumi provider sends for the same `docker.Container`, health check in its exec form
 * (`["CMD", argv...]`, never the CLI's shell form). The config file is copied in afterwards
 * (`PUT /containers/<id>/archive`, or `docker cp`), as the provider's `uploads` does, and never
 * passed on the command line. The API never pulls: a missing image is an error.
 */
export function engineCreateRequest(spec: ContainerSpec): { name: string; body: Record<string, unknown> } {
  const hc = spec.healthcheck;
  if (hc.tests[0] !== "CMD") throw new Error(`unsupported healthcheck form ${hc.tests[0]}`);
  const mounts = spec.volumes.map((v) => {
    if (v.volumeName !== undefined) return { Type: "volume", Source: v.volumeName, Target: v.containerPath, ReadOnly: v.readOnly };
    if (v.hostPath !== undefined) return { Type: "bind", Source: v.hostPath, Target: v.containerPath, ReadOnly: v.readOnly };
    throw new Error(`mount of ${v.containerPath} has neither a volume nor a host path`);
  });
  const portBindings: Record<string, Array<{ HostIp: string; HostPort: string }>> = {};
  for (const p of spec.ports) (portBindings[`${p.internal}/${p.protocol}`] ??= []).push({ HostIp: p.ip, HostPort: String(p.external) });
  return {
    name: spec.name,
    body: {
      Image: spec.image,
      Cmd: [...spec.command],
      User: spec.user,
      Labels: { ...spec.labels },
      StopTimeout: spec.stopTimeout,
      ExposedPorts: Object.fromEntries(Object.keys(portBindings).map((k) => [k, {}])),
      Healthcheck: {
        Test: [...hc.tests],
        Interval: durationNs(hc.interval),
        Timeout: durationNs(hc.timeout),
        StartPeriod: durationNs(hc.startPeriod),
        Retries: hc.retries,
      },
      HostConfig: {
        NetworkMode: spec.networkMode,
        Init: spec.init,
        RestartPolicy: { Name: spec.restart },
        CapAdd: [...spec.capabilities.adds],
        CapDrop: [...spec.capabilities.drops],
        Mounts: mounts,
        PortBindings: portBindings,
        LogConfig: { Type: "json-file", Config: { ...spec.logOpts } },
      },
    },
  };
}
