import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAgentFuzzWorld, type AgentFuzzWorld } from './support/fuzz-agent.ts';
import { expectExecStillWorks, startServerFuzzWorld, type ServerFuzzWorld } from './support/fuzz-server.ts';

/**
 * Property (server): whatever a member sends on the terminal and exec websockets, and whatever an agent
 * sends on its link, in any order, the server keeps serving: no exception escapes to the
 * process, /healthz answers, every socket the server closes carries a code of its protocol (never
 * 1011 INTERNAL), and afterwards a normal exec still works. fast-check with a fixed seed and a
 * bounded number of runs; DEN_FUZZ_SEED replays another seed, and a failure prints the seed and
 * the shrunk counterexample. Property (agent): whatever a fake server sends den's real agent, it
 * raises no exception, keeps its link and still runs a command afterwards. `npm run fuzz` runs the
 * same targets for longer.
 */
const SEED = Number(process.env.DEN_FUZZ_SEED ?? 20261206);
/** Cases per target: about 5 ms each on the 2-core machine, so the three targets take a few seconds. */
const RUNS = Number(process.env.DEN_FUZZ_RUNS ?? 300);
/** Agent cases start real processes and ptys, so fewer of them. */
const AGENT_RUNS = Number(process.env.DEN_FUZZ_RUNS ?? 100);

describe('fuzzing the server\'s websockets with fast-check', () => {
  let world: ServerFuzzWorld;
  beforeAll(async () => {
    world = await startServerFuzzWorld();
  });
  afterAll(async () => {
    await world?.close();
  });

  for (const name of ['terminal socket', 'exec socket', 'agent link (fake agent -> server)']) {
    it(`keeps serving through ${RUNS} fuzzed cases on the ${name} (seed ${SEED})`, async () => {
      const target = world.targets.find((candidate) => candidate.name === name)!;
      await fc.assert(fc.asyncProperty(target.arbitrary, (input) => target.run(input)), { seed: SEED, numRuns: RUNS });
      expect(world.crashes).toEqual([]);
    });
  }

  it('runs a normal exec after all of that', async () => {
    await expectExecStillWorks(world);
    expect((await world.server.app.inject({ method: 'GET', url: '/healthz' })).statusCode).toBe(200);
  });
});

describe('fuzzing den\'s agent from a fake server with fast-check', () => {
  let world: AgentFuzzWorld;
  beforeAll(async () => {
    world = await startAgentFuzzWorld();
  });
  afterAll(async () => {
    await world?.close();
  });

  it(`keeps the agent up through ${AGENT_RUNS} fuzzed cases of server frames (seed ${SEED})`, async () => {
    await fc.assert(fc.asyncProperty(world.target.arbitrary, (input) => world.target.run(input)), { seed: SEED, numRuns: AGENT_RUNS });
    expect(world.crashes).toEqual([]);
    if (process.env.DEN_FUZZ_VERBOSE) console.log(world.stats());
  });

  it('refuses an attach to an unknown terminal session with open_error, without an exception in the agent', async () => {
    const since = world.crashes.length;
    const channel = world.newChannel();
    world.send({ type: 'open', channel, window: 65_536, spec: { kind: 'terminal', sessionId: 'gone', cols: 80, rows: 24 } });
    expect(await world.next((frame) => frame.type === 'open_error' && frame.channel === channel)).toMatchObject({ code: 'TERMINAL_SESSION_NOT_FOUND' });
    await world.barrier();
    expect(world.crashes.slice(since)).toEqual([]);
  });

  it('ignores a signal name the system does not know, and the command runs on', async () => {
    const since = world.crashes.length;
    const channel = world.newChannel();
    world.send({ type: 'open', channel, window: 65_536, spec: { kind: 'exec', command: ['cat'] } });
    await world.next((frame) => frame.type === 'open_ok' && frame.channel === channel);
    world.send({ type: 'signal', channel, signal: 'SIGNOPE' });
    world.send({ type: 'eof', channel });
    expect(await world.next((frame) => frame.type === 'close' && frame.channel === channel)).toMatchObject({ exitCode: 0 });
    expect(world.crashes.slice(since)).toEqual([]);
  });

  it('runs a normal exec after all of that', async () => {
    await world.expectExecStillWorks();
  });
});
