import type { DenBase } from './base.ts';
import { createAgentHub, type LocalAgentHub } from './agents/hub.ts';
import { parseAgentKey } from './agents/hub-types.ts';
import { createRoutedAgentHub } from './agents/relay.ts';
import { createReplicas, type Replicas } from './agents/replicas.ts';
import { createLiveAccess, type LiveAccess } from './auth/live-access.ts';
import { createLoginLimits, type LoginLimits } from './auth/login-limits.ts';
import { createStoreLoginLimitState } from './auth/login-limit-store.ts';
import { createLocalRevocationBus, createPgRevocationBus, type RevocationBus } from './auth/revocations.ts';
import { createBuildLogs } from './builds/logs.ts';
import { createBuildService, type BuildService } from './builds/service.ts';
import { createLocalEventBus, createPgEventBus, type EventBus } from './events/bus.ts';
import { createMetrics, type Metrics } from './http/metrics.ts';
import { createReconciler, type Reconciler, type ReconcilerDeps } from './reconcile/reconciler.ts';
import { startAgainAsOwner } from './reconcile/restart.ts';
import { createPgNotifier, type PgNotifier } from './store/pg-notify.ts';
import { createAgentDownload, type AgentDownload } from './runtimes/agent-download.ts';
import { createAppHealthMonitor, type AppHealthMonitor } from './apps/health.ts';
import { join } from 'node:path';
import { createSshGateway, type SshGateway, type SshLimits } from './ssh/gateway.ts';
import { createActivityRecorder, type ActivityRecorder } from './workspaces/activity.ts';
import { createWorkspaceSyncs, type WorkspaceSyncs } from './sync/service.ts';

export interface DenOptions extends DenBase {
  /** run build workers and the reconcile loop in this process (tests of the HTTP layer alone may turn them off) */
  startWorkers?: boolean;
  /** where revocations are announced; defaults to one for this process alone */
  revocations?: RevocationBus;
  /** the login limits; defaults to in-process ones with den's defaults (tests pass smaller numbers) */
  loginLimits?: LoginLimits;
  /** where workspace, build and agent changes are announced; defaults to one for this process alone */
  events?: EventBus;
  /** the reconcile loop's timings (tests pass shorter ones); it runs where build workers run */
  reconcile?: Pick<ReconcilerDeps, 'intervalMs' | 'agentGraceMs' | 'gcIntervalMs' | 'maxRestarts' | 'restartBackoffMs'>;
  /** the SSH gateway's per-user limits (tests pass smaller numbers) */
  sshLimits?: Partial<SshLimits>;
}

/**
 * One den server's parts, each built once: the ways in (the HTTP app, the server command, an SSH
 * gateway) take what they need from it. Domains receive their slice as arguments or plugin
 * options and never see this object.
 */
export interface Den extends DenBase {
  /** the agents of every replica: this process's own connections, the others' through the relay */
  agents: LocalAgentHub;
  /** den's agent bundle as one tar with its checksum: served to agents, named by plans that download it */
  agentBundle: AgentDownload;
  /** the agents connected to this process alone (what the relay serves to other replicas) */
  localAgents: LocalAgentHub;
  /** this process as a replica of the deployment, and where the others' agents are */
  replicas: Replicas;
  builds: BuildService;
  reconciler: Reconciler;
  /** workspace status, build progress and agent state, for GET /api/v1/events */
  events: EventBus;
  metrics: Metrics;
  revocations: RevocationBus;
  /** this process's terminals, execs and log follows, ended when a revocation takes their access away */
  liveAccess: LiveAccess;
  loginLimits: LoginLimits;
  /** the SSH gateway: `main` makes it listen on the SSH port; the tunnel route feeds it too */
  ssh: SshGateway;
  /** records workspace use (SSH traffic) */
  activity: ActivityRecorder;
  /** the health checks of the apps of the workspaces whose agents this process holds */
  appHealth: AppHealthMonitor;
  /** the live syncs of running workspaces (where the build workers run) */
  syncs: WorkspaceSyncs;
  /** Registers this replica, then starts the build workers and the reconcile loop, unless this process was built without them. */
  start(): Promise<void>;
  /**
   * Stops what start() started and closes the agent connections, in this order: the SSH gateway, live access,
   * reconcile loop, build workers (running builds get a grace period), agents, this replica's
   * row (marked expired, so another replica takes its agents over), the PostgreSQL LISTEN
   * connection of the shared buses. The store and the
   * driver belong to whoever opened them and stay open.
   */
  stop(): Promise<void>;
}

/** The composition root: builds den's parts from its base, each wired to the others once. */
export function createDen(options: DenOptions): Den {
  const { startWorkers, reconcile, sshLimits, revocations: givenRevocations, loginLimits: givenLoginLimits, events: givenEvents, ...base } = options;
  const metrics = createMetrics(base);
  // Replicas on one PostgreSQL database share their buses; on SQLite there is one process.
  const notifier = sharedBusNotifier(base);
  const events = givenEvents
    ?? (notifier ? createPgEventBus(notifier, base.log) : createLocalEventBus((error) => base.log.error({ err: error }, 'an event subscriber failed')));
  // The build log comes first: the agent hub writes an agent's startup lines into it, and the
  // build service needs the hub to wait for agents.
  const buildLogs = createBuildLogs(base.store.db, base.clock, (error) => base.log.error({ err: error }, 'writing build log lines failed'));
  const replicas = createReplicas({ db: base.store.db, clock: base.clock, url: base.config.replicaUrl, notifier, log: base.log });
  const localAgents = createAgentHub({ ...base, events, buildLogs, metrics, presence: replicas });
  const agents = createRoutedAgentHub({ local: localAgents, replicas, log: base.log });
  // a replica killed without a goodbye leaves its agents' records: whoever finds it dead says they are gone
  replicas.onReplicaLost((keys, at) => {
    localAgents.recordLost(keys, at);
    // agents that dial a socket the dead replica served (process runtime) reach this one instead
    void base.driver.takeOverAgents?.([...new Set(keys.map((key) => parseAgentKey(key).workspaceId))]).catch((error: unknown) => base.log.error({ err: error }, 'could not take over the agents of a replica that died'));
  });
  const agentBundle = createAgentDownload(join(base.config.dataDir, 'agent-download'));
  const builds = createBuildService({ ...base, events, agents, agentBundle, logs: buildLogs, metrics });
  const revocations = givenRevocations ?? (notifier ? createPgRevocationBus(notifier, base.log) : createLocalRevocationBus(base.log));
  const liveAccess = createLiveAccess(revocations);
  // On PostgreSQL the replicas share the counts, so a guesser cannot spread attempts over them.
  const loginLimits = givenLoginLimits ?? createLoginLimits({
    onRefused: (reason) => metrics.loginsRefused.inc({ reason }),
    ...(base.store.dialect === 'postgres'
      ? { state: createStoreLoginLimitState(base.store.db, 'limits'), knownAddresses: createStoreLoginLimitState(base.store.db, 'known') }
      : {}),
  });
  const reconciler = createReconciler({
    ...base,
    events,
    restart: startAgainAsOwner(base.store.db, base.clock, (request) => builds.enqueue(request)),
    ...reconcile,
  });
  const activity = createActivityRecorder(base.store.db, base.clock, (error) => base.log.warn({ err: error }, 'recording workspace activity failed'));
  const ssh = createSshGateway({ ...base, agents, liveAccess, activity, limits: sshLimits });
  const appHealth = createAppHealthMonitor({ db: base.store.db, clock: base.clock, log: base.log, agents, localAgents });
  const syncs = createWorkspaceSyncs({ db: base.store.db, agents, events, clock: base.clock, log: base.log, support: base.driver.capabilities.sync });
  return {
    syncs,
    ...base,
    agents,
    agentBundle,
    ssh,
    activity,
    appHealth,
    localAgents,
    replicas,
    builds,
    reconciler,
    events,
    metrics,
    revocations,
    liveAccess,
    loginLimits,
    async start() {
      // another replica's events and revocations are heard from the moment this one serves
      await notifier?.ready;
      await replicas.start();
      // wherever agents connect, their apps are checked (a replica without build workers too)
      appHealth.start();
      if (startWorkers === false) return;
      await builds.start();
      reconciler.start();
      await syncs.start();
    },
    async stop() {
      await ssh.close();
      appHealth.stop();
      liveAccess.close();
      syncs.stop();
      await reconciler.stop();
      await builds.stop();
      await agents.close();
      await replicas.stop();
      await notifier?.close();
    },
  };
}

function sharedBusNotifier(base: DenBase): PgNotifier | undefined {
  if (base.store.dialect !== 'postgres' || !base.config.databaseUrl) return undefined;
  return createPgNotifier({ databaseUrl: base.config.databaseUrl, log: base.log });
}
