/**
 * MailImage: the one mailstack image on the host's engine. Either built there from the
 * repository's Dockerfile (tagged with the build context's digest, rebuilt when the context
 * changes) or pulled by a digest-pinned reference from the stack (`deploy.image`).
 */
import * as path from "node:path";
import * as docker from "@pulumi/docker";
import * as pulumi from "@pulumi/pulumi";
import { contextDigest, readBuildContext } from "./build-context";

export const PINNED_REFERENCE = /^[a-z0-9]+(?:[._\-/:][a-z0-9]+)*@sha256:[0-9a-f]{64}$/;

export interface MailImageArgs {
  /** A pinned reference (`registry/mailstack@sha256:...`) to pull instead of building. Plain: it decides. */
  readonly image?: string;
  /** The build context: the repository root. Default: the directory above components/. */
  readonly context?: string;
  /** `BASE_IMAGE` for the Dockerfile. Default: the Dockerfile's own (the official Node 22 slim image). */
  readonly baseImage?: pulumi.Input<string>;
}

/** The build context as the RemoteImage input: relative to `cwd` (`.` for the repository root). Pure. */
export function buildContextPath(root: string, cwd: string): string {
  const rel = path.relative(cwd, root).split(path.sep).join("/");
  return rel === "" ? "." : rel;
}

/** The tag a build gets: `mailstack:<first 16 hex of the context digest>`. Pure. */
export function buildTag(digest: string): string {
  if (!/^[0-9a-f]{64}$/.test(digest)) throw new Error(`not a sha256 digest: ${digest}`);
  return `mailstack:${digest.slice(0, 16)}`;
}

export class MailImage extends pulumi.ComponentResource {
  /** The image id (`sha256:...`): what containers run, so a rebuilt image replaces them. */
  readonly imageId: pulumi.Output<string>;
  /** The reference: the pinned one, or the digest tag of the build. */
  readonly reference: pulumi.Output<string>;

  constructor(name: string, args: MailImageArgs, opts?: pulumi.ComponentResourceOptions) {
    if (args.image !== undefined && !PINNED_REFERENCE.test(args.image))
      throw new Error(`MailImage ${name}: image "${args.image}" must be pinned by digest (name@sha256:<64 hex>), never a tag like :latest`);
    super("mailstack:index:MailImage", name, {}, opts);
    let image: docker.RemoteImage;
    // A component's dependsOn does not reach its children by itself.
    const childOpts: pulumi.CustomResourceOptions = {
      parent: this,
      ...(opts?.dependsOn !== undefined ? { dependsOn: opts.dependsOn } : {}),
    };
    if (args.image !== undefined) {
      image = new docker.RemoteImage(`${name}-image`, { name: args.image, keepLocally: true }, childOpts);
    } else {
      const root = args.context ?? path.resolve(__dirname, "..");
      const digest = contextDigest(readBuildContext(root));
      // Relative to the program's directory (where `pulumi up` runs and the provider resolves it),
      // so the same commit checked out at another path registers the same inputs: no diff.
      const context = buildContextPath(root, process.cwd());
      image = new docker.RemoteImage(
        `${name}-image`,
        {
          name: buildTag(digest),
          keepLocally: true,
          triggers: { context: digest },
          build: {
            context,
            dockerfile: "Dockerfile",
            ...(args.baseImage !== undefined ? { buildArgs: { BASE_IMAGE: args.baseImage } } : {}),
            pullParent: false,
            remove: true,
            forceRemove: true,
            label: { "mailstack.context": digest },
          },
        },
        childOpts,
      );
    }
    this.imageId = image.imageId;
    this.reference = image.name;
    this.registerOutputs({ imageId: this.imageId, reference: this.reference });
  }
}
