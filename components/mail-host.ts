/**
 * MailHost: prepares a CentOS/RHEL-family host over SSH, one `remote.Command` per step, each
 * after the one before: hostname → firewall → Docker engine → data directory → resolver.
 * The scripts are pure functions (host-scripts.ts); this constructor only wires them up.
 */
import { isIP } from "node:net";
import * as command from "@pulumi/command";
import * as pulumi from "@pulumi/pulumi";
import {
  dataDirScript,
  dockerInstallScript,
  firewallScript,
  hostnameScript,
  remoteCommand,
  resolverScript,
  type Script,
} from "./host-scripts";
import { MAILSTACK_UID } from "./specs";

export interface MailHostArgs {
  /** The address SSH connects to (usually the stack's publicAddress). */
  readonly address: pulumi.Input<string>;
  /** The SSH user; anyone but root runs the steps through `sudo -n`. Default root. */
  readonly sshUser?: pulumi.Input<string>;
  /** The SSH port. Default 22. */
  readonly sshPort?: pulumi.Input<number>;
  /** The SSH private key (a secret). Without it the SSH agent (SSH_AUTH_SOCK) is used. */
  readonly sshPrivateKey?: pulumi.Input<string>;
  /** The host's SSH public key (`ssh-ed25519 AAAA…`): no other is accepted. Without it, any. */
  readonly sshHostKey?: pulumi.Input<string>;
  /** The host's name, e.g. `mail.lx.com`. */
  readonly hostname: pulumi.Input<string>;
  /** The address /etc/hosts maps the hostname to. */
  readonly publicAddress: pulumi.Input<string>;
  /** Ports to open, as `25/tcp`, `53/udp`. Only the enabled services' ports. */
  readonly firewallPorts: pulumi.Input<pulumi.Input<string>[]>;
  /** The absolute data directory behind the shared volume. */
  readonly dataDir: pulumi.Input<string>;
  /** Host files the containers bind-mount (TLS certificate and key): labelled for SELinux in the datadir step. */
  readonly tlsFiles?: pulumi.Input<pulumi.Input<string>[]>;
  /**
   * Where the host's own DNS queries go first (the DNS service's address), with the zone as the
   * search domain. Plain: leave it out, and the resolver is left alone (DNS off, or not on port 53).
   */
  readonly resolver?: { nameserver: string; domain: string };
}

export type HostStep = "hostname" | "firewall" | "docker" | "datadir" | "resolver";

export class MailHost extends pulumi.ComponentResource {
  /** The steps in the order they run. */
  readonly steps: Partial<Record<HostStep, command.remote.Command>>;
  /** Done when the Docker engine runs and the data directory exists: services wait for this. */
  readonly ready: pulumi.Resource[];
  readonly hostname: pulumi.Output<string>;

  constructor(name: string, args: MailHostArgs, opts?: pulumi.ComponentResourceOptions) {
    if (args.resolver && isIP(args.resolver.nameserver) === 0)
      throw new Error(`MailHost ${name}: resolver.nameserver must be an IP address, got "${args.resolver.nameserver}"`);
    super("mailstack:index:MailHost", name, {}, opts);

    const sshUser = pulumi.output(args.sshUser ?? "root");
    const connection: command.types.input.remote.ConnectionArgs = {
      host: args.address,
      port: args.sshPort ?? 22,
      user: sshUser,
      ...(args.sshPrivateKey !== undefined ? { privateKey: pulumi.secret(args.sshPrivateKey) } : {}),
      ...(args.sshHostKey !== undefined ? { hostKey: args.sshHostKey } : {}),
      dialErrorLimit: 20,
      perDialTimeout: 30,
    };

    const steps: Partial<Record<HostStep, command.remote.Command>> = {};
    let previous: command.remote.Command | undefined;
    const step = (role: HostStep, script: pulumi.Output<Script>, triggers: pulumi.Input<unknown>[]) => {
      const create = pulumi.all([script, sshUser]).apply(([s, u]) => remoteCommand(s.create, u));
      const del = pulumi.all([script, sshUser]).apply(([s, u]) => (s.delete !== undefined ? remoteCommand(s.delete, u) : ""));
      const cmd = new command.remote.Command(
        `${name}-${role}`,
        {
          connection,
          create,
          // The scripts converge the host to their inputs, so an update simply runs them again.
          update: create,
          delete: del,
          triggers,
          addPreviousOutputInEnv: false,
        },
        { parent: this, dependsOn: previous ? [previous] : [] },
      );
      steps[role] = cmd;
      previous = cmd;
      return cmd;
    };

    step(
      "hostname",
      pulumi.all([args.hostname, args.publicAddress]).apply(([h, a]) => hostnameScript(h, a)),
      [args.hostname, args.publicAddress],
    );
    step(
      "firewall",
      pulumi.output(args.firewallPorts).apply((ports) => firewallScript(ports)),
      [pulumi.output(args.firewallPorts).apply((p) => p.join(" "))],
    );
    // The SSH user joins the docker group: the Docker provider connects as that user.
    const docker = step(
      "docker",
      sshUser.apply((u) => dockerInstallScript(u)),
      ["docker-ce", sshUser],
    );
    const tlsFiles = pulumi.output(args.tlsFiles ?? []);
    const datadir = step(
      "datadir",
      pulumi.all([args.dataDir, tlsFiles]).apply(([d, files]) => dataDirScript(d, MAILSTACK_UID, files)),
      [args.dataDir, MAILSTACK_UID, tlsFiles.apply((f) => f.join(" "))],
    );
    if (args.resolver) {
      const { nameserver, domain } = args.resolver;
      step("resolver", pulumi.output(resolverScript(nameserver, domain)), [nameserver, domain]);
    }

    this.steps = steps;
    this.ready = [docker, datadir];
    this.hostname = pulumi.output(args.hostname);
    this.registerOutputs({ hostname: this.hostname });
  }
}
