/**
 * One component per service: DnsService, SmtpService (the MTA and, beside it, the outbound queue
 * runner), Pop3Service, ImapService. Each runs the one mailstack image with its own
 * `serve <service>` command. The containers come from `containerSpec` (specs.ts), the same
 * function the real-engine test runs containers from; `containerArgs` only translates.
 */
import * as docker from "@pulumi/docker";
import * as pulumi from "@pulumi/pulumi";
import type { MailConfig } from "../config/schema";
import { type ContainerService, type ContainerSpec, containerSpec, type EndpointSpec } from "./specs";

export interface ServiceArgs {
  /** The stack's config, redacted (no passwords): decides the listeners and mounts. Plain. */
  readonly config: MailConfig;
  /** The image to run: the image id from MailImage. */
  readonly image: pulumi.Input<string>;
  /** The rendered config file (renderServiceConfig): password hashes, TLS keys. Kept secret. */
  readonly configFile: pulumi.Input<string>;
  /** The shared data volume (Maildirs, queue): its name on the engine. */
  readonly dataVolume: pulumi.Input<string>;
}

/** The `docker.Container` inputs of a spec. Pure apart from wrapping the config in a secret. */
export function containerArgs(
  spec: ContainerSpec,
  image: pulumi.Input<string>,
  configFile: pulumi.Input<string>,
  dataVolume: pulumi.Input<string>,
): docker.ContainerArgs {
  return {
    name: spec.name,
    image,
    command: spec.command,
    user: spec.user,
    networkMode: spec.networkMode,
    ports: spec.ports.map((p) => ({ internal: p.internal, external: p.external, ip: p.ip, protocol: p.protocol })),
    volumes: spec.volumes.map((v) =>
      v.volumeName !== undefined
        ? { volumeName: dataVolume, containerPath: v.containerPath, readOnly: v.readOnly }
        : { hostPath: v.hostPath, containerPath: v.containerPath, readOnly: v.readOnly },
    ),
    uploads: [{ file: spec.configFile, content: pulumi.secret(configFile) }],
    healthcheck: { ...spec.healthcheck, tests: [...spec.healthcheck.tests] },
    restart: spec.restart,
    init: spec.init,
    capabilities: { adds: [...spec.capabilities.adds], drops: [...spec.capabilities.drops] },
    stopTimeout: spec.stopTimeout,
    destroyGraceSeconds: spec.stopTimeout,
    labels: Object.entries(spec.labels).map(([label, value]) => ({ label, value })),
    logDriver: "json-file",
    logOpts: { ...spec.logOpts },
    // `pulumi up` waits until the health check passes, so a broken release fails the update.
    wait: true,
    waitTimeout: 180,
    mustRun: true,
  };
}

/** The shared shape of the four service components. */
abstract class MailService extends pulumi.ComponentResource {
  /** The containers, by role (`container`, and `queue` for SMTP). */
  readonly containers: Record<string, docker.Container>;
  /** What the service listens on. */
  readonly endpoints: EndpointSpec[];
  readonly containerNames: pulumi.Output<string[]>;

  protected constructor(
    type: string,
    services: Array<[role: string, service: ContainerService]>,
    name: string,
    args: ServiceArgs,
    opts?: pulumi.ComponentResourceOptions,
  ) {
    super(type, name, {}, opts);
    const specs = services.map(([role, service]) => [role, containerSpec(args.config, service, "<image>")] as const);
    this.containers = {};
    for (const [role, spec] of specs)
      this.containers[role] = new docker.Container(`${name}-${role}`, containerArgs(spec, args.image, args.configFile, args.dataVolume), {
        parent: this,
        // A component's dependsOn does not reach its children by itself.
        ...(opts?.dependsOn !== undefined ? { dependsOn: opts.dependsOn } : {}),
        // The name and the host's ports are fixed, so the old container goes first; the config
        // file rides in `uploads`, so a changed config replaces the container.
        deleteBeforeReplace: true,
      });
    this.endpoints = specs.flatMap(([, s]) => s.endpoints);
    this.containerNames = pulumi.all(Object.values(this.containers).map((c) => c.name));
    this.registerOutputs({ containerNames: this.containerNames });
  }
}

export class DnsService extends MailService {
  constructor(name: string, args: ServiceArgs, opts?: pulumi.ComponentResourceOptions) {
    super("mailstack:index:DnsService", [["container", "dns"]], name, args, opts);
  }
}

/** The MTA (`serve smtp`: smtp, submission, smtps) and the queue runner (`serve queue`) that delivers onwards. */
export class SmtpService extends MailService {
  constructor(name: string, args: ServiceArgs, opts?: pulumi.ComponentResourceOptions) {
    super(
      "mailstack:index:SmtpService",
      [
        ["container", "smtp"],
        ["queue", "queue"],
      ],
      name,
      args,
      opts,
    );
  }
}

export class Pop3Service extends MailService {
  constructor(name: string, args: ServiceArgs, opts?: pulumi.ComponentResourceOptions) {
    super("mailstack:index:Pop3Service", [["container", "pop3"]], name, args, opts);
  }
}

export class ImapService extends MailService {
  constructor(name: string, args: ServiceArgs, opts?: pulumi.ComponentResourceOptions) {
    super("mailstack:index:ImapService", [["container", "imap"]], name, args, opts);
  }
}
