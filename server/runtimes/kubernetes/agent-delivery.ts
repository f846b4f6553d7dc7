import { networkInterfaces } from 'node:os';
import type { V1Container, V1Node, V1Volume, V1VolumeMount } from '@kubernetes/client-node';
import { AGENT_MOUNT_PATH } from '../agent-bundle.ts';
import type { AgentArchive } from '../agent-download.ts';
import { isLoopback, startRelay, type Relay } from '../tcp-relay.ts';

/**
 * How the agent gets into a workspace pod, kept in this module so it can follow the plan's
 * agent delivery field once plans carry one:
 *  - baked: den's workspace images carry the agent at /opt/den/agent; nothing to add;
 *  - download: any other (glibc) image gets it from an init container that fetches den's agent
 *    bundle (GET /api/v1/agent/bundle, with the workspace's agent token), checks its sha256
 *    against the one den computed, and unpacks it into an emptyDir mounted at /opt/den/agent.
 * The downloader is a static busybox image (wget, sha256sum, tar), so the workspace image
 * needs no tool of its own; only the Node binary in the bundle needs glibc.
 */
export interface AgentDelivery {
  kind: 'baked' | 'download';
  initContainers: V1Container[];
  volumes: V1Volume[];
  mounts: V1VolumeMount[];
}

export const BAKED_AGENT: AgentDelivery = Object.freeze({ kind: 'baked', initContainers: [], volumes: [], mounts: [] });

export const AGENT_DOWNLOAD_CONTAINER = 'den-agent-download';

/** Prints a sentence and exits non-zero at each step that can fail, so the build log says which. */
const DOWNLOAD_SCRIPT = `set -u
f=${AGENT_MOUNT_PATH}/.bundle.tar
# a busy or restarting den (or a blip of the pod network) gets a few more tries, 2 s apart
n=1
until timeout 60 wget -q -O "$f" --header "Authorization: Bearer $DEN_AGENT_TOKEN" "$DEN_AGENT_BUNDLE_URL"; do
  if [ "$n" -ge 5 ]; then echo "den: downloading the agent bundle from $DEN_AGENT_BUNDLE_URL failed 5 times." >&2; exit 1; fi
  n=$((n + 1)); sleep 2
done
if ! echo "$DEN_AGENT_BUNDLE_SHA256  $f" | sha256sum -c - >/dev/null 2>&1; then
  echo "den: the downloaded agent bundle does not have the sha256 den expects ($DEN_AGENT_BUNDLE_SHA256); not running it." >&2; exit 1
fi
tar -xf "$f" -C ${AGENT_MOUNT_PATH} && rm -f "$f"
`;

/** tokenKey: the key of the agent's token in the Secret tokenSecret, given to the download as tokenEnv */
export function downloadedAgent(input: { serverUrl: string; archive: Pick<AgentArchive, 'sha256'>; downloaderImage: string; tokenEnv: string; tokenSecret: string; tokenKey: string }): AgentDelivery {
  const mount: V1VolumeMount = { name: 'den-agent', mountPath: AGENT_MOUNT_PATH };
  return {
    kind: 'download',
    initContainers: [{
      name: AGENT_DOWNLOAD_CONTAINER,
      image: input.downloaderImage,
      imagePullPolicy: 'IfNotPresent',
      command: ['sh', '-c', DOWNLOAD_SCRIPT],
      env: [
        { name: 'DEN_AGENT_BUNDLE_URL', value: `${input.serverUrl}/api/v1/agent/bundle` },
        { name: 'DEN_AGENT_BUNDLE_SHA256', value: input.archive.sha256 },
        { name: input.tokenEnv, valueFrom: { secretKeyRef: { name: input.tokenSecret, key: input.tokenKey } } },
      ],
      volumeMounts: [mount],
      securityContext: { allowPrivilegeEscalation: false },
    }],
    volumes: [{ name: 'den-agent', emptyDir: {} }],
    mounts: [{ ...mount, readOnly: true }],
  };
}

/**
 * The URL agents in pods dial. A configured one (DEN_AGENT_ACCESS_URL) is used as given; an
 * access URL pods can reach too. When den listens on loopback on a node of the cluster (a
 * single-node or development cluster), pods cannot reach loopback: den relays the node's own
 * address (its InternalIP, which pods reach as the host) to the same port on loopback.
 */
export interface AgentAccess {
  urlFor(serverUrl: string): Promise<string>;
  close(): Promise<void>;
}

export function createAgentAccess(configured: string | undefined, nodes: () => Promise<V1Node[]>, log: { warn(message: string): void }): AgentAccess {
  const relays = new Map<string, Promise<{ host: string; relay: Relay }>>();
  return {
    async urlFor(serverUrl) {
      if (configured) return configured.replace(/\/$/, '');
      const url = new URL(serverUrl);
      if (!isLoopback(url.hostname)) return serverUrl;
      const port = Number(url.port || (url.protocol === 'https:' ? 443 : 80));
      const key = `${url.hostname}:${port}`;
      let relay = relays.get(key);
      if (!relay) {
        relay = (async () => {
          const host = localNodeAddress(await nodes());
          return { host, relay: await startRelay(host, url.hostname.replace(/^\[|\]$/g, ''), port, log) };
        })();
        relays.set(key, relay);
        relay.catch(() => relays.delete(key));
      }
      url.hostname = (await relay).host;
      return url.toString().replace(/\/$/, '');
    },
    async close() {
      const all = await Promise.allSettled(relays.values());
      relays.clear();
      await Promise.all(all.map((result) => (result.status === 'fulfilled' ? result.value.relay.close() : undefined)));
    },
  };
}

/** The InternalIP of a node that is this machine (an address of one of its interfaces). */
function localNodeAddress(nodes: V1Node[]): string {
  const local = new Set(Object.values(networkInterfaces()).flatMap((addresses) => (addresses ?? []).map((a) => a.address)));
  for (const node of nodes) {
    const address = node.status?.addresses?.find((a) => a.type === 'InternalIP' && local.has(a.address))?.address;
    if (address) return address;
  }
  throw new Error('den listens on loopback and runs on no node of the cluster, so workspace pods cannot reach it. Set DEN_AGENT_ACCESS_URL (or DEN_ACCESS_URL) to a URL pods can reach, such as den\'s Service in the cluster.');
}
