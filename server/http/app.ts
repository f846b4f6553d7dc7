import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import cookie from '@fastify/cookie';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import websocket from '@fastify/websocket';
import {
  jsonSchemaTransform,
  serializerCompiler,
  validatorCompiler,
  type ZodTypeProvider,
} from 'fastify-type-provider-zod';
import type { Den } from '../den.ts';
import { answerFrameworkError, registerErrorHandling } from './errors.ts';
import { registerHealth } from './health.ts';
import { registerMetricsRoute } from './metrics.ts';
import { authPlugin } from '../auth/plugin.ts';
import { authRoutes } from '../auth/routes.ts';
import { userRoutes } from '../users/routes.ts';
import { templateRoutes } from '../templates/routes.ts';
import { workspaceRoutes } from '../workspaces/routes.ts';
import { syncRoutes } from '../sync/routes.ts';
import { agentRoutes } from '../agents/routes.ts';
import { relayRoutes } from '../agents/relay-routes.ts';
import { terminalRoutes } from '../terminal/routes.ts';
import { webRoutes } from '../web/routes.ts';
import { eventRoutes } from '../events/routes.ts';
import { sshRoutes } from '../ssh/routes.ts';
import { appProxyRoutes } from '../apps/proxy.ts';
import { appRoutes } from '../apps/routes.ts';
import { environmentRoutes } from '../environments/routes.ts';
import { groupRoutes } from '../groups/routes.ts';
import { appAuthorizeRoute, rewriteAppHostUrl, subdomainRoutes } from '../apps/subdomain-routes.ts';
import { acceptAgentSocket, agentSocketGate } from '../agents/socket-gate.ts';

/** Far above any body of den's API but a template push (the largest schema field is 64 KiB). */
export const DEFAULT_BODY_LIMIT = 1024 * 1024;

/**
 * Builds den's HTTP app over a Den (without listening): `main` listens; tests use `inject`.
 * Each domain is a plugin that gets its dependencies as options. Closing the app stops the
 * Den's workers and agent connections (Den.stop) after the websockets were told why.
 */
export async function buildServer(den: Den): Promise<FastifyInstance> {
  const app = Fastify({
    // pino's Logger is a FastifyBaseLogger; widening keeps the instance type the default one
    loggerInstance: den.log as FastifyBaseLogger,
    // Every body is read and JSON-parsed on the event loop before any route code runs, anonymous
    // ones included (login, setup): a 4 MB body costs 10-15 ms of it. Only the template push
    // takes more (templates/routes.ts sets its own limit).
    bodyLimit: DEFAULT_BODY_LIMIT,
    // request.ip is the client's address only behind proxies the operator named; without any,
    // X-Forwarded-For is ignored (a client could otherwise pick its own address for the login limits)
    trustProxy: den.config.trustedProxies.length > 0 ? [...den.config.trustedProxies] : false,
    // per-request lines are noise at info level; /metrics has the request counts and latencies
    logController: new LogController({ disableRequestLogging: true }),
    routerOptions: { ignoreTrailingSlash: true },
    frameworkErrors: answerFrameworkError,
    // subdomain mode: a request to an app host goes to the app whatever its path (apps/subdomain-routes.ts)
    ...(den.config.appsWildcardDomain ? { rewriteUrl: rewriteAppHostUrl(den.config.appsWildcardDomain) } : {}),
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
  await app.register(authPlugin, den);
  registerMetricsRoute(app, den.metrics);

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
  // The domains, each typed by the options it declares; den (plus the websocket shutdown
  // hooks of this app) satisfies all of them.
  const deps = { ...den, websocketShutdown };
  registerHealth(app, deps);
  await app.register(authRoutes, { prefix: '/api/v1', ...deps });
  await app.register(userRoutes, { prefix: '/api/v1', ...deps });
  await app.register(templateRoutes, { prefix: '/api/v1', ...deps });
  await app.register(workspaceRoutes, { prefix: '/api/v1', ...deps });
  await app.register(syncRoutes, { prefix: '/api/v1', ...deps });
  await app.register(agentRoutes, { prefix: '/api/v1', ...deps });
  await app.register(relayRoutes, { prefix: '/api/v1', ...deps });
  await app.register(terminalRoutes, { prefix: '/api/v1', ...deps });
  await app.register(eventRoutes, { prefix: '/api/v1', ...deps });
  await app.register(sshRoutes, { prefix: '/api/v1', ...deps });
  await app.register(appRoutes, { prefix: '/api/v1', ...deps });
  await app.register(environmentRoutes, { prefix: '/api/v1', ...deps });
  await app.register(groupRoutes, { prefix: '/api/v1', ...deps });
  await app.register(appAuthorizeRoute, { prefix: '/api/v1', ...deps });
  await app.register(webRoutes, deps);
  await app.register(appProxyRoutes, deps);
  await app.register(subdomainRoutes, deps);

  // onClose runs after @fastify/websocket's preClose (websocketShutdown, then 1001 to every socket)
  app.addHook('onClose', () => den.stop());
  await den.driver.serveAgents?.(acceptAgentSocket(app));
  app.addHook('onReady', () => den.start());
  return app;
}
