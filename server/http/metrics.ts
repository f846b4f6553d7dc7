import type { FastifyInstance } from 'fastify';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { DenBase } from '../base.ts';

export interface Metrics {
  registry: Registry;
  httpDuration: Histogram<'method' | 'route' | 'status'>;
  buildsTotal: Counter<'transition' | 'state'>;
  buildDuration: Histogram<'transition'>;
  agentsConnected: Gauge;
  loginsRefused: Counter<'reason'>;
}

/** den's Prometheus metrics (prom-client), one registry per den instance; served by registerMetricsRoute. */
export function createMetrics(deps: Pick<DenBase, 'config' | 'store'>): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'den_' });
  const metrics: Metrics = {
    registry,
    httpDuration: new Histogram({
      name: 'den_http_request_duration_seconds',
      help: 'HTTP request latency by route.',
      labelNames: ['method', 'route', 'status'],
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5],
      registers: [registry],
    }),
    buildsTotal: new Counter({
      name: 'den_builds_total',
      help: 'Finished workspace builds by transition and final state.',
      labelNames: ['transition', 'state'],
      registers: [registry],
    }),
    buildDuration: new Histogram({
      name: 'den_build_duration_seconds',
      help: 'Workspace build duration by transition.',
      labelNames: ['transition'],
      buckets: [0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300],
      registers: [registry],
    }),
    agentsConnected: new Gauge({
      name: 'den_agents_connected',
      help: 'Workspace agents connected to this server.',
      registers: [registry],
    }),
    loginsRefused: new Counter({
      name: 'den_login_refused_total',
      help: 'Logins refused with 429 before a password check: address (too many failures from it), account (paced), busy (password checks full).',
      labelNames: ['reason'],
      registers: [registry],
    }),
  };
  new Gauge({
    name: 'den_info',
    help: 'Static facts about this den server.',
    labelNames: ['runtime', 'store'],
    registers: [registry],
  }).set({ runtime: deps.config.runtime, store: deps.store.dialect }, 1);
  return metrics;
}

/** Times every request into `metrics` and serves the registry at /metrics. */
export function registerMetricsRoute(app: FastifyInstance, metrics: Metrics): void {
  app.addHook('onResponse', async (request, reply) => {
    const route = request.routeOptions.url;
    if (!route || route === '/metrics') return;
    metrics.httpDuration.observe(
      { method: request.method, route, status: String(reply.statusCode) },
      reply.elapsedTime / 1000,
    );
  });
  app.get('/metrics', { config: { auth: 'public' }, schema: { hide: true } }, async (_request, reply) => {
    reply.header('content-type', metrics.registry.contentType);
    return metrics.registry.metrics();
  });
}
