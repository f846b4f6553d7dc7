import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { expectExecStillWorks, startServerFuzzWorld, type ServerFuzzWorld } from './support/fuzz-server.ts';

/**
 * Property: whatever a member sends on the terminal and exec websockets, and whatever an agent
 * sends on its link, in any order, the server keeps serving: no exception escapes to the
 * process, /healthz answers, every socket the server closes carries a code of its protocol (never
 * 1011 INTERNAL), and afterwards a normal exec still works. fast-check with a fixed seed and a
 * bounded number of runs; DEN_FUZZ_SEED replays another seed, and a failure prints the seed and
 * the shrunk counterexample. `npm run fuzz` runs the same targets for longer.
 */
const SEED = Number(process.env.DEN_FUZZ_SEED ?? 20261206);
/** Cases per target: about 5 ms each on the 2-core machine, so the three targets take a few seconds. */
const RUNS = Number(process.env.DEN_FUZZ_RUNS ?? 300);

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
