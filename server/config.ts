import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';

/**
 * Server configuration, parsed once at start into a frozen object. Sources, later ones win:
 * an optional YAML/JSON file (--config / DEN_CONFIG), DEN_* environment variables, flags.
 */
export const configSchema = z.object({
  listen: z
    .string()
    .regex(/^[^\s:]+:\d{1,5}$|^\[[0-9a-fA-F:]+\]:\d{1,5}$/, 'Use host:port, for example 127.0.0.1:7080.')
    .default('127.0.0.1:7080'),
  dataDir: z.string().min(1).default('.den'),
  databaseUrl: z
    .string()
    .regex(/^postgres(ql)?:\/\//, 'Use a postgres:// URL, or leave it out for SQLite in the data directory.')
    .optional(),
  runtime: z.enum(['process', 'docker', 'kubernetes']).default('process'),
  /** The URL agents and browsers use to reach this server; defaults to http://<listen>. */
  accessUrl: z.url().optional(),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  /** Build workers in this process. */
  buildWorkers: z.coerce.number().int().min(1).max(64).default(4),
  /** How long a build lease lasts before another worker may take the build over. */
  buildLeaseSeconds: z.coerce.number().int().min(5).max(3600).default(30),
  sessionTtlHours: z.coerce.number().int().min(1).max(24 * 90).default(24 * 14),
  /**
   * The wildcard domain of app URLs in subdomain mode (`apps.example.com` for
   * `http(s)://8080--ws--alice.apps.example.com`); unset: path mode only. `*.` in front is accepted.
   */
  appsWildcardDomain: z
    .preprocess((value) => (typeof value === 'string' ? value.trim().toLowerCase().replace(/^\*\./, '') : value), z.string().regex(/^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/, 'Use a DNS name whose subdomains all reach den, for example apps.example.com (for *.apps.example.com).'))
    .optional(),
  /** How long an app in a workspace may take to send its response head through the app proxy. */
  appResponseTimeoutSeconds: z.coerce.number().int().min(1).max(3600).default(60),
  maxTemplateBytes: z.coerce.number().int().min(1024).max(64 * 1024 * 1024).default(4 * 1024 * 1024),
  /**
   * Addresses or CIDRs of the proxies (load balancers) in front of den, whose X-Forwarded-For is
   * believed for the client's address; a comma-separated list in the environment.
   */
  trustedProxies: z
    .preprocess(
      (value) => (typeof value === 'string' ? value.split(',').map((entry) => entry.trim()).filter(Boolean) : value),
      z.array(z.string().refine(isProxyAddress, 'must be an IP address or CIDR (for example 10.0.0.0/8), or loopback, linklocal or uniquelocal')),
    )
    .default([]),
  /** process runtime: require bubblewrap instead of warning when it is missing */
  requireSandbox: booleanSetting().default(false),
  /**
   * docker runtime: which den deployment this is (the den.instance label). Listing and garbage
   * collection see only this instance's objects, so two dens sharing one engine need two names.
   */
  /**
   * The SSH gateway's TCP port (0 = no SSH port; `den ssh` still works through the HTTP port).
   * Unset means DEFAULT_SSH_PORT, skipped with a warning when another process holds it.
   */
  sshPort: z.coerce.number().int().min(0).max(65535).optional(),
  /** The address the SSH port listens on; defaults to the host of `listen`. */
  sshHost: z.string().min(1).optional(),
  instance: z.string().regex(/^[a-z0-9][a-z0-9-]{0,62}$/, 'Use lowercase letters, digits and -, for example den-staging.').default('den'),
  /**
   * Where the other replicas of this deployment (den servers on the same PostgreSQL database)
   * reach this one's relay to get at the agents connected here; defaults to http://<listen>.
   * Behind a load balancer, each replica's own address, never the balancer's.
   */
  replicaUrl: z.url({ protocol: /^https?$/, error: 'Use an http:// or https:// URL, for example http://10.0.0.5:7080.' }).optional(),
  /**
   * The URL agents in workspaces dial when it is not the access URL (den behind an ingress that
   * pods should not go through, or reached by pods at a cluster-internal Service name).
   */
  agentAccessUrl: z.url().optional(),
  /** kubernetes runtime: the kubeconfig file (default KUBECONFIG, ~/.kube/config, or in-cluster) */
  kubeconfig: z.string().min(1).optional(),
  /** kubernetes runtime: a context of the kubeconfig other than its current one */
  kubeContext: z.string().min(1).optional(),
  /** kubernetes runtime: the static busybox image that downloads the agent into images without it */
  kubeDownloaderImage: z.string().min(1).default('busybox:1.37'),
});

export const DEFAULT_SSH_PORT = 2222;

const TRUE_WORDS = new Set(['true', '1', 'yes', 'on']);
const FALSE_WORDS = new Set(['false', '0', 'no', 'off']);

/**
 * A boolean as people write it in YAML, environment variables and flags: true/false, 1/0, yes/no,
 * on/off, in any case. z.coerce.boolean() would read the string "false" as true.
 */
function booleanSetting() {
  return z.preprocess((value) => {
    if (typeof value === 'boolean') return value;
    if (typeof value === 'number' && (value === 0 || value === 1)) return value === 1;
    if (typeof value !== 'string') return value;
    const word = value.trim().toLowerCase();
    if (TRUE_WORDS.has(word)) return true;
    if (FALSE_WORDS.has(word)) return false;
    return value;
  }, z.boolean({ error: 'Use true or false (also 1/0, yes/no, on/off).' }));
}

export type Config = Readonly<z.infer<typeof configSchema>> & { readonly accessUrl: string; readonly replicaUrl: string };

const ENV_KEYS: Record<string, keyof z.infer<typeof configSchema>> = {
  DEN_LISTEN: 'listen',
  DEN_DATA_DIR: 'dataDir',
  DEN_DATABASE_URL: 'databaseUrl',
  DEN_RUNTIME: 'runtime',
  DEN_ACCESS_URL: 'accessUrl',
  DEN_LOG_LEVEL: 'logLevel',
  DEN_BUILD_WORKERS: 'buildWorkers',
  DEN_BUILD_LEASE_SECONDS: 'buildLeaseSeconds',
  DEN_SESSION_TTL_HOURS: 'sessionTtlHours',
  DEN_APP_RESPONSE_TIMEOUT_SECONDS: 'appResponseTimeoutSeconds',
  DEN_APPS_WILDCARD_DOMAIN: 'appsWildcardDomain',
  DEN_MAX_TEMPLATE_BYTES: 'maxTemplateBytes',
  DEN_REQUIRE_SANDBOX: 'requireSandbox',
  DEN_TRUSTED_PROXIES: 'trustedProxies',
  DEN_INSTANCE: 'instance',
  DEN_SSH_PORT: 'sshPort',
  DEN_SSH_HOST: 'sshHost',
  DEN_REPLICA_URL: 'replicaUrl',
  DEN_AGENT_ACCESS_URL: 'agentAccessUrl',
  DEN_KUBECONFIG: 'kubeconfig',
  DEN_KUBE_CONTEXT: 'kubeContext',
  DEN_KUBE_DOWNLOADER_IMAGE: 'kubeDownloaderImage',
};

export class ConfigError extends Error {}

/** Merges file, environment and flags; throws ConfigError with one sentence per problem. */
export function loadConfig(
  flags: Record<string, unknown>,
  env: NodeJS.ProcessEnv = process.env,
  configFile: string | undefined = (flags.config as string | undefined) ?? env.DEN_CONFIG,
): Config {
  const fromFile = configFile ? readConfigFile(configFile) : {};
  const fromEnv: Record<string, unknown> = {};
  for (const [key, field] of Object.entries(ENV_KEYS)) {
    if (env[key] !== undefined && env[key] !== '') fromEnv[field] = env[key];
  }
  const fromFlags = Object.fromEntries(
    Object.entries(flags).filter(([k, v]) => k !== 'config' && v !== undefined),
  );
  const parsed = configSchema.safeParse({ ...fromFile, ...fromEnv, ...fromFlags });
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `${i.path.join('.') || 'config'}: ${i.message}`);
    throw new ConfigError(`The configuration is invalid:\n  ${lines.join('\n  ')}`);
  }
  const config = parsed.data;
  return Object.freeze({
    ...config,
    dataDir: resolve(config.dataDir),
    accessUrl: (config.accessUrl ?? `http://${config.listen}`).replace(/\/$/, ''),
    replicaUrl: (config.replicaUrl ?? `http://${config.listen}`).replace(/\/$/, ''),
  });
}

function readConfigFile(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new ConfigError(`Cannot read the configuration file ${path}: ${(error as Error).message}.`);
  }
  const value = parseYaml(text);
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new ConfigError(`The configuration file ${path} must hold a mapping of settings.`);
  }
  return value as Record<string, unknown>;
}

export function parseListen(listen: string): { host: string; port: number } {
  const index = listen.lastIndexOf(':');
  return { host: listen.slice(0, index).replace(/^\[|\]$/g, ''), port: Number(listen.slice(index + 1)) };
}

/** What Fastify's trustProxy (proxy-addr) accepts: an address, a CIDR, or one of its named ranges. */
function isProxyAddress(entry: string): boolean {
  if (['loopback', 'linklocal', 'uniquelocal'].includes(entry)) return true;
  const [address, bits, ...rest] = entry.split('/');
  const family = isIP(address);
  if (family === 0 || rest.length > 0) return false;
  return bits === undefined || (/^\d{1,3}$/.test(bits) && Number(bits) <= (family === 4 ? 32 : 128));
}
