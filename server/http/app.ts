import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import cookie from '@fastify/cookie';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import websocket from '@fastify/websocket';
import type { Logger } from 'pino';
import {
  jsonSchemaTransform,
  serializerCompiler,
  validatorCompiler,
  type ZodTypeProvider,
} from 'fastify-type-provider-zod';
import type { Config } from '../config.ts';
import type { Store } from '../store/connect.ts';
import type { Clock } from '../store/time.ts';
import type { RuntimeDriver } from '../runtimes/driver.ts';
import { answerFrameworkError, registerErrorHandling } from './errors.ts';
import { registerHealth } from './health.ts';
import { registerMetrics, type Metrics } from './metrics.ts';
import { authPlugin } from '../auth/plugin.ts';
import { authRoutes } from '../auth/routes.ts';
import { createLoginLimits, type LoginLimits } from '../auth/login-limits.ts';
import { userRoutes } from '../users/routes.ts';
import { templateRoutes } from '../templates/routes.ts';
import { workspaceRoutes } from '../workspaces/routes.ts';
import { agentRoutes } from '../agents/routes.ts';
import { terminalRoutes } from '../terminal/routes.ts';
import { webRoutes } from '../web/routes.ts';
import { createAgentHub } from '../agents/hub.ts';
import { acceptAgentSocket, agentSocketGate } from '../agents/socket-gate.ts';
import { createBuildService, type BuildService } from '../builds/service.ts';
import type { AgentHub } from '../agents/hub-types.ts';
import { createLiveAccess, type LiveAccess } from '../auth/live-access.ts';
import { createLocalRevocationBus, type RevocationBus } from '../auth/revocations.ts';
import { createReconciler, type Reconciler, type ReconcilerDeps } from '../reconcile/reconciler.ts';
import { startAgainAsOwner } from '../reconcile/restart.ts';
import { createLocalEventBus, type EventBus } from '../events/bus.ts';
import { eventRoutes } from '../events/routes.ts';

export interface ServerDeps {
  config: Config;
  store: Store;
  clock: Clock;
  log: Logger;
  driver: RuntimeDriver;
  /** start build workers in this process (tests of the HTTP layer alone may turn them off) */
  startWorkers?: boolean;
  /** where revocations are announced; defaults to one for this process alone */
  revocations?: RevocationBus;
  /** where workspace, build and agent changes are announced; defaults to one for this process alone */
  events?: EventBus;
  /** the login limits; defaults to in-process ones with den's defaults (tests pass smaller numbers) */
  loginLimits?: LoginLimits;
  /** the reconcile loop's timings (tests pass shorter ones); it runs where build workers run */
  reconcile?: Pick<ReconcilerDeps, 'intervalMs' | 'agentGraceMs' | 'gcIntervalMs' | 'maxRestarts' | 'restartBackoffMs'>;
}

/** Everything a domain plugin may use. Built once per server. */
export interface AppContext extends ServerDeps {
  agents: AgentHub;
  builds: BuildService;
  reconciler: Reconciler;
  events: EventBus;
  metrics: Metrics;
  revocations: RevocationBus;
  /** this process's terminals, execs and log follows, ended when a revocation takes their access away */
  liveAccess: LiveAccess;
  loginLimits: LoginLimits;
  /** Run at shutdown before the remaining websockets are closed (1001), so a protocol can say why in its own terms. */
  websocketShutdown: Set<() => void>;
}

declare module 'fastify' {
  interface FastifyInstance {
    den: AppContext;
  }
}

/** Far above any body of den's API but a template push (the largest schema field is 64 KiB). */
export const DEFAULT_BODY_LIMIT = 1024 * 1024;

/** Builds the Fastify app (without listening). `main` listens; tests use `inject`. */
export async function buildServer(deps: ServerDeps): Promise<FastifyInstance> {
  const app = Fastify({
    // pino's Logger is a FastifyBaseLogger; widening keeps the instance type the default one
    loggerInstance: deps.log as FastifyBaseLogger,
    // Every body is read and JSON-parsed on the event loop before any route code runs, anonymous
    // ones included (login, setup): a 4 MB body costs 10-15 ms of it. Only the template push
    // takes more (templates/routes.ts sets its own limit).
    bodyLimit: DEFAULT_BODY_LIMIT,
    // request.ip is the client's address only behind proxies the operator named; without any,
    // X-Forwarded-For is ignored (a client could otherwise pick its own address for the login limits)
    trustProxy: deps.config.trustedProxies.length > 0 ? [...deps.config.trustedProxies] : false,
    // per-request lines are noise at info level; /metrics has the request counts and latencies
    logController: new LogController({ disableRequestLogging: true }),
    routerOptions: { ignoreTrailingSlash: true },
    frameworkErrors: answerFrameworkError,
  }).withTypeProvider<ZodTypeProvider>();
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  registerErrorHandling(app);
  // Cookie and websocket plugins first: their onRequest hooks (parse cookies, mark upgrades so a
  // refused upgrade's socket is closed) must run before auth's. Auth before any route: its
  // onRoute hook must see every route.
  await app.register(cookie);
  const websocketShutdown = new Set<() => void>();
  await app.register(websocket, {
    options: { maxPayload: 1024 * 1024, perMessageDeflate: false },
    preClose(done) {
      for (const close of websocketShutdown) close();
      for (const client of this.websocketServer.clients) client.close(1001, 'server shutting down');
      this.websocketServer.close();
      done();
    },
  });
  await app.register(authPlugin);

  const metrics = registerMetrics(app, deps);
  const events = deps.events ?? createLocalEventBus((error) => deps.log.error({ err: error }, 'an event subscriber failed'));
  const builds = createBuildService({ ...deps, events }, metrics);
  const agents = createAgentHub({ ...deps, events, buildLogs: builds.logs, metrics });
  builds.attachAgents(agents);
  const revocations = deps.revocations ?? createLocalRevocationBus(deps.log);
  const liveAccess = createLiveAccess(revocations);
  const loginLimits = deps.loginLimits ?? createLoginLimits({ onRefused: (reason) => metrics.loginsRefused.inc({ reason }) });
  const reconciler = createReconciler({ ...deps, events, restart: startAgainAsOwner(deps.store.db, deps.clock, (request) => builds.enqueue(request)), ...deps.reconcile });
  const context: AppContext = { ...deps, agents, builds, reconciler, events, metrics, revocations, liveAccess, loginLimits, websocketShutdown };
  app.decorate('den', context);

  await app.register(swagger, {
    openapi: {
      info: { title: 'den API', version: '1', description: 'Remote development workspaces with their own environments.' },
      components: {
        securitySchemes: {
          token: { type: 'http', scheme: 'bearer', description: 'An API token from `den tokens create` or `den login`.' },
          session: { type: 'apiKey', in: 'cookie', name: 'den_session' },
        },
      },
      security: [{ token: [] }, { session: [] }],
    },
    transform: jsonSchemaTransform,
  });
  await app.register(swaggerUi, { routePrefix: '/api/docs', uiConfig: { deepLinking: false } });

  // Before any route: a connection from a workspace's agent socket reaches the agent link only.
  app.addHook('onRequest', agentSocketGate);
  registerHealth(app, context);
  await app.register(authRoutes, { prefix: '/api/v1' });
  await app.register(userRoutes, { prefix: '/api/v1' });
  await app.register(templateRoutes, { prefix: '/api/v1' });
  await app.register(workspaceRoutes, { prefix: '/api/v1' });
  await app.register(agentRoutes, { prefix: '/api/v1' });
  await app.register(terminalRoutes, { prefix: '/api/v1' });
  await app.register(eventRoutes, { prefix: '/api/v1', events });
  await app.register(webRoutes);

  app.addHook('onClose', async () => {
    liveAccess.close();
    await reconciler.stop();
    await builds.stop();
    await agents.close();
  });
  await deps.driver.serveAgents?.(acceptAgentSocket(app));
  if (deps.startWorkers !== false) {
    app.addHook('onReady', async () => {
      await builds.start();
      reconciler.start();
    });
  }
  return app;
}
