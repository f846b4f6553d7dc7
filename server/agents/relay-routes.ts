import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { AppError } from '../../protocol/errors.ts';
import { RELAY_PROTOCOL, RELAY_PROTOCOL_HEADER, RELAY_REPLICA_HEADER, relayQuerySchema, relayVersion } from '../../protocol/relay.ts';
import type { LocalAgentHub } from './hub.ts';
import type { Replicas } from './replicas.ts';
import { serveRelay } from './relay-server.ts';

export interface RelayRoutesOptions {
  /** this process's own agent connections: a relay never forwards to a third replica */
  localAgents: LocalAgentHub;
  replicas: Pick<Replicas, 'verifyPeer'>;
}

/**
 * GET /api/v1/replicas/relay?agent=KEY: another replica of this deployment reaches an agent
 * connected here (protocol/relay.ts). Public at the user layer: no user token opens it. The
 * dialing replica names itself (x-den-replica) and presents its secret (Authorization: Bearer),
 * which must match the hash of a live replica's row in the store; anything else is a 401 envelope
 * before the upgrade.
 */
export async function relayRoutes(fastify: FastifyInstance, deps: RelayRoutesOptions): Promise<void> {
  const app = fastify.withTypeProvider<ZodTypeProvider>();
  const peers = new WeakMap<FastifyRequest, string>();

  app.get('/replicas/relay', {
    websocket: true,
    config: { auth: 'public' },
    schema: { querystring: relayQuerySchema, hide: true },
    preValidation: async (request) => {
      const replicaId = request.headers[RELAY_REPLICA_HEADER];
      const secret = /^Bearer\s+(\S+)$/i.exec(request.headers.authorization ?? '')?.[1];
      const peer = typeof replicaId === 'string' && secret ? await deps.replicas.verifyPeer(replicaId, secret) : undefined;
      if (!peer) {
        throw new AppError('REPLICA_UNAUTHORIZED', 'This address is for den replicas of the same deployment only; it needs the id and secret of a live replica. Users reach workspaces through the API.');
      }
      const version = relayVersion(request.headers[RELAY_PROTOCOL_HEADER]);
      if (version?.major !== RELAY_PROTOCOL.major) {
        throw new AppError('RELAY_PROTOCOL_UNSUPPORTED', `This replica speaks relay protocol ${RELAY_PROTOCOL.major}.x. Run the same den version on every replica of the deployment.`);
      }
      peers.set(request, peer.id);
    },
  }, (socket, request) => {
    const { agent } = request.query as { agent: string };
    request.log.debug({ replica: peers.get(request), agentKey: agent }, 'a replica opened a relay socket');
    serveRelay(socket, deps.localAgents, agent, request.log);
  });
}
