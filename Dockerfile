# The den server image. Built the same way as the workspace images (see docs/docker.md):
#
#   npm run images                          # den/node:24 (Node 24 + npm + compilers) first
#   node workspace-images/build.ts --only server        # den/server:latest, content-cached
# or by hand:
#   docker build --network host -t den/server .        # BASE_IMAGE defaults to debian:bookworm-slim
#
# Run it next to the engine it drives, on the host network so the agent relay can bind the
# docker0 address (docs/docker.md explains why):
#   docker run -d --name den --network host -v /var/run/docker.sock:/var/run/docker.sock \
#     -v den-data:/var/lib/den den/server --runtime docker
ARG BASE_IMAGE=debian:bookworm-slim
ARG NODE_IMAGE=den/node:24

# Build stage: production dependencies (node-pty compiles here) and the agent bundle.
FROM ${NODE_IMAGE} AS build
USER root
WORKDIR /app
COPY package.json package-lock.json ./
# EXTRA_CA_CERTS_B64: PEM certificates (base64) for a TLS-intercepting proxy in front of the npm
# registry; used by npm in this stage only. workspace-images/build.ts --only server passes the
# host's /usr/local/share/ca-certificates/*.crt.
ARG EXTRA_CA_CERTS_B64=
RUN if [ -n "$EXTRA_CA_CERTS_B64" ]; then \
      echo "$EXTRA_CA_CERTS_B64" | base64 -d > /tmp/extra-ca.pem && export NODE_EXTRA_CA_CERTS=/tmp/extra-ca.pem; \
    fi \
 && npm ci --omit=dev --no-audit --no-fund \
 && rm -f /tmp/extra-ca.pem \
 && test -f node_modules/node-pty/build/Release/pty.node
COPY . .
RUN node agent/build.ts
# Out of the image what the server never loads: source maps, and node-pty's prebuilt binaries for
# other platforms and its sources (it loads build/Release, compiled above; 60 MB).
RUN find node_modules -name '*.map' -type f -delete \
 && rm -rf node_modules/node-pty/prebuilds node_modules/node-pty/third_party node_modules/node-pty/deps node_modules/node-pty/src \
 && test -f node_modules/node-pty/build/Release/pty.node

# The browser pages (dashboard and terminal), built with the dev dependencies (Vite, React) in a
# stage of their own; the image ships only the output, which the server serves as it is.
FROM ${NODE_IMAGE} AS web
USER root
WORKDIR /app
COPY package.json package-lock.json ./
ARG EXTRA_CA_CERTS_B64=
RUN if [ -n "$EXTRA_CA_CERTS_B64" ]; then \
      echo "$EXTRA_CA_CERTS_B64" | base64 -d > /tmp/extra-ca.pem && export NODE_EXTRA_CA_CERTS=/tmp/extra-ca.pem; \
    fi \
 && npm ci --ignore-scripts --no-audit --no-fund \
 && rm -f /tmp/extra-ca.pem
COPY . .
RUN node server/web/build.ts

FROM ${BASE_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 NODE_ENV=production
# ca-certificates for TLS to PostgreSQL or a Kubernetes API; tar packs the agent bundle for the
# docker runtime's read-only agent volume.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates tar \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --create-home --home-dir /var/lib/den --uid 999 --user-group den
COPY --from=build /opt/den/agent/node /usr/local/bin/node
COPY --from=build /app /opt/den/server
COPY --from=web /app/dist/web /opt/den/server/dist/web
COPY --from=web /app/dist/web.json /opt/den/server/dist/web.json
RUN ln -s /opt/den/server/bin/den.js /usr/local/bin/den && chmod +x /opt/den/server/bin/den.js

# root by default: the docker runtime needs the engine's socket (root:docker 660). To run as
# `den`, add `--user den --group-add <gid of the socket>`.
WORKDIR /var/lib/den
ENV DEN_DATA_DIR=/var/lib/den DEN_LISTEN=127.0.0.1:7080
VOLUME /var/lib/den
EXPOSE 7080
ENTRYPOINT ["/usr/local/bin/node", "/opt/den/server/bin/den.js", "server"]
