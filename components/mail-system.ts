/**
 * MailSystem: one mail domain on one host, composed from one typed config: the host (MailHost),
 * the Docker engine on it (a provider over SSH), the shared data volume, the image (MailImage)
 * and the four services. It exports the endpoints and the records the registrar and the hosting
 * provider must hold.
 */
import * as docker from "@pulumi/docker";
import * as pulumi from "@pulumi/pulumi";
import type { MailConfig } from "../config/schema";
import { resolverAddress } from "./host-scripts";
import { MailHost } from "./mail-host";
import { MailImage } from "./mail-image";
import { type DnsRecord, type EndpointInfo, endpointList, registrarRecords } from "./records";
import { DnsService, ImapService, Pop3Service, type ServiceArgs, SmtpService } from "./services";
import { dataVolumeSpec, enabledServices, firewallPorts, hostDataDir, renderServiceConfig, serializeServiceConfig } from "./specs";

export interface MailSystemArgs {
  /** The Pulumi stack name: part of every password hash's salt. */
  readonly stack: string;
  /** The stack's config with secrets removed. Plain: it decides which resources exist. */
  readonly config: MailConfig;
  /** The complete config, a secret: rendered into the containers' config files. */
  readonly secretConfig: pulumi.Input<MailConfig>;
  /** The SSH private key for the host steps (a secret); without it, the SSH agent. */
  readonly sshPrivateKey?: pulumi.Input<string>;
}

/** `ssh://root@192.168.25.100:22`: the Docker provider's engine address. Pure. */
export function engineHost(config: Pick<MailConfig, "publicAddress" | "deploy">): string {
  const host = config.publicAddress.includes(":") ? `[${config.publicAddress}]` : config.publicAddress;
  return `ssh://${config.deploy.sshUser}@${host}:${config.deploy.sshPort}`;
}

/**
 * The Docker provider's ssh options. With `deploy.sshHostKey` only that key is accepted: ssh reads
 * it from KnownHostsCommand (OpenSSH 8.5+; `%H` is the name ssh looks up, `[host]:port` off port
 * 22), with the known_hosts files switched off and strict checking on. Without it, a new host's
 * key is accepted on first use and a changed one refused (`accept-new`). Pure.
 */
export function engineSshOpts(config: Pick<MailConfig, "deploy">): string[] {
  const key = config.deploy.sshHostKey;
  const pin = key
    ? [
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        `KnownHostsCommand=/bin/echo %H ${key}`,
      ]
    : ["-o", "StrictHostKeyChecking=accept-new"];
  return ["-o", "BatchMode=yes", ...pin, "-o", "ServerAliveInterval=30"];
}

export class MailSystem extends pulumi.ComponentResource {
  readonly host: MailHost;
  readonly image: MailImage;
  readonly dataVolume: docker.Volume;
  readonly dns?: DnsService;
  readonly smtp?: SmtpService;
  readonly pop3?: Pop3Service;
  readonly imap?: ImapService;
  readonly endpoints: EndpointInfo[];
  readonly registrarRecords: DnsRecord[];

  constructor(name: string, args: MailSystemArgs, opts?: pulumi.ComponentResourceOptions) {
    const { config } = args;
    if (config.users.some((u) => u.password !== undefined) || config.deploy.sshPrivateKey !== undefined)
      throw new Error(`MailSystem ${name}: config must be redacted (plaintext passwords and keys go in secretConfig only)`);
    super("mailstack:index:MailSystem", name, {}, opts);

    const services = enabledServices(config);
    const dnsListen = config.listen.dns;
    this.host = new MailHost(
      `${name}-host`,
      {
        address: config.publicAddress,
        sshUser: config.deploy.sshUser,
        sshPort: config.deploy.sshPort,
        ...(config.deploy.sshHostKey !== undefined ? { sshHostKey: config.deploy.sshHostKey } : {}),
        ...(args.sshPrivateKey !== undefined ? { sshPrivateKey: args.sshPrivateKey } : {}),
        hostname: config.hostname,
        publicAddress: config.publicAddress,
        firewallPorts: firewallPorts(config),
        dataDir: hostDataDir(config),
        ...(config.tls.certFile !== undefined && config.tls.keyFile !== undefined
          ? { tlsFiles: [config.tls.certFile, config.tls.keyFile] }
          : {}),
        // /etc/resolv.conf cannot name a port: only a DNS service on 53 can be the host's resolver.
        ...(dnsListen && dnsListen.port === 53
          ? { resolver: { nameserver: resolverAddress(dnsListen.address), domain: config.domain } }
          : {}),
      },
      { parent: this },
    );

    const engine = new docker.Provider(
      `${name}-engine`,
      {
        host: engineHost(config),
        sshOpts: engineSshOpts(config),
        // The engine is installed by the host's docker step; do not ping it before that ran.
        disableDockerDaemonCheck: true,
      },
      { parent: this, dependsOn: this.host.ready },
    );
    const onEngine = { parent: this, provider: engine, dependsOn: this.host.ready };

    const volume = dataVolumeSpec(config);
    this.dataVolume = new docker.Volume(
      `${name}-data`,
      {
        name: volume.name,
        driver: volume.driver,
        driverOpts: volume.driverOpts,
        labels: Object.entries(volume.labels).map(([label, value]) => ({ label, value })),
      },
      // Mail lives here: never deleted by `pulumi destroy` or a replacement.
      { ...onEngine, retainOnDelete: true },
    );

    this.image = new MailImage(
      `${name}-image`,
      {
        ...(config.deploy.image !== undefined ? { image: config.deploy.image } : {}),
        ...(config.deploy.baseImage !== undefined ? { baseImage: config.deploy.baseImage } : {}),
      },
      { parent: this, providers: { docker: engine }, dependsOn: this.host.ready },
    );

    const configFile = pulumi.secret(
      pulumi.output(args.secretConfig).apply((full) => serializeServiceConfig(renderServiceConfig(full, { stack: args.stack }))),
    );
    const serviceArgs: ServiceArgs = { config, image: this.image.imageId, configFile, dataVolume: this.dataVolume.name };
    const serviceOpts = (dependsOn: pulumi.Resource[]): pulumi.ComponentResourceOptions => ({
      parent: this,
      providers: { docker: engine },
      dependsOn: [...this.host.ready, ...dependsOn],
    });
    // DNS first: the queue and the host resolve through it.
    if (services.includes("dns")) this.dns = new DnsService(`${name}-dns`, serviceArgs, serviceOpts([]));
    const afterDns = this.dns ? [this.dns] : [];
    if (services.includes("smtp")) this.smtp = new SmtpService(`${name}-smtp`, serviceArgs, serviceOpts(afterDns));
    if (services.includes("pop3")) this.pop3 = new Pop3Service(`${name}-pop3`, serviceArgs, serviceOpts(afterDns));
    if (services.includes("imap")) this.imap = new ImapService(`${name}-imap`, serviceArgs, serviceOpts(afterDns));

    this.endpoints = endpointList(config);
    this.registrarRecords = registrarRecords(config);
    this.registerOutputs({ endpoints: this.endpoints, registrarRecords: this.registrarRecords, image: this.image.reference });
  }
}
