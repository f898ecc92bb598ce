# The one mailstack image: every service (smtp, pop3, imap, dns, queue), chosen by the command
# (`serve <service> --config /etc/mailstack/config.json`). Multi-stage: TypeScript is compiled in
# one stage, production dependencies are installed in another, and the final stage gets only
# their results: the compiled JavaScript and the production node_modules.
#
# BASE_IMAGE must be a Debian-based image with node 22 and npm in /usr/local/bin: the official
# node:22 slim image, or the offline one docker/build-base.sh makes. Nothing but npm packages is
# fetched while building.
#
# The default stays the official tag (what a user with registry access expects, and what the issue
# asks for); builds without a registry pass BASE_IMAGE (docker/build-image.sh, the stack's
# deploy.baseImage). To pin it, pass a digest: --build-arg BASE_IMAGE=node:22-bookworm-slim@sha256:...
ARG BASE_IMAGE=node:22-bookworm-slim

FROM ${BASE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
COPY docker/build-ca/ /tmp/build-ca/
# --ignore-scripts: no Pulumi plugin download and no Node binary download (the `node` package).
RUN if [ -s /tmp/build-ca/extra.crt ]; then export NODE_EXTRA_CA_CERTS=/tmp/build-ca/extra.crt; fi; \
    npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
COPY . .
RUN node node_modules/typescript/bin/tsc -p docker/tsconfig.image.json \
 && test -f dist/cli/main.js
# Every stage is labelled, so the untagged images the classic builder leaves for the build and deps
# stages can be found (and pruned) by label; MAILSTACK_BUILD tells one build's images from another's.
ARG MAILSTACK_BUILD=""
LABEL mailstack.stage=build mailstack.build=${MAILSTACK_BUILD}

FROM ${BASE_IMAGE} AS deps
WORKDIR /app
COPY package.json package-lock.json ./
COPY docker/build-ca/ /tmp/build-ca/
RUN if [ -s /tmp/build-ca/extra.crt ]; then export NODE_EXTRA_CA_CERTS=/tmp/build-ca/extra.crt; fi; \
    npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error
ARG MAILSTACK_BUILD=""
LABEL mailstack.stage=deps mailstack.build=${MAILSTACK_BUILD}

FROM ${BASE_IMAGE}
ARG MAILSTACK_UID=10001
ENV NODE_ENV=production
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY package.json ./
COPY --from=build /src/dist ./dist
COPY bin ./bin
COPY docker/setcap.js /usr/local/lib/mailstack/setcap.js
# A non-root user, and the one capability it needs: node may bind ports below 1024
# (cap_net_bind_service=+ep on the binary, as `setcap` would set it). Containers run with every
# other capability dropped.
RUN useradd --uid "${MAILSTACK_UID}" --user-group --no-create-home --no-log-init \
      --home-dir /var/lib/mailstack --shell /usr/sbin/nologin mailstack \
 && mkdir -p /var/lib/mailstack /etc/mailstack \
 && chown mailstack:mailstack /var/lib/mailstack \
 && chmod 0750 /var/lib/mailstack \
 && chmod 0755 /app/bin/mailstack \
 && ln -s /app/bin/mailstack /usr/local/bin/mailstack \
 && node_bin="$(command -v node)" \
 && cp "$node_bin" /tmp/node \
 && node /usr/local/lib/mailstack/setcap.js /tmp/node "${node_bin#/}" \
    | tar --xattrs --xattrs-include=security.capability --unlink-first -xpf - -C / \
 && rm -f /tmp/node
ARG MAILSTACK_BUILD=""
LABEL mailstack.stage=final mailstack.build=${MAILSTACK_BUILD}
USER ${MAILSTACK_UID}:${MAILSTACK_UID}
ENTRYPOINT ["/usr/local/bin/mailstack"]
CMD ["check", "--config", "/etc/mailstack/config.json"]
