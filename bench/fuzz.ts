// `npm run fuzz [-- --seconds N] [--seed S] [--target NAME]`: the fuzz targets of the suite
// (test/fuzz-frames.test.ts, test/fuzz.test.ts) for a bounded time instead of a fixed number of
// cases, with a fresh seed each run. Prints cases/s per target and the crashes found, and exits 1
// when a property failed, with the seed and the shrunk counterexample to replay it:
//   DEN_FUZZ_SEED=<seed> npx vitest run test/fuzz-frames.test.ts, or npm run fuzz -- --seed <seed> --target '<name>'
import { parseArgs } from 'node:util';
import fc from 'fast-check';
import { startAgentFuzzWorld } from '../test/support/fuzz-agent.ts';
import { startBodyFuzzWorld } from '../test/support/fuzz-bodies.ts';
import { startServerFuzzWorld, type FuzzTarget } from '../test/support/fuzz-server.ts';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '60' },
    seed: { type: 'string' },
    target: { type: 'string' },
  },
});
const seconds = Number(values.seconds);
if (!Number.isFinite(seconds) || seconds <= 0) {
  process.stderr.write(`--seconds ${values.seconds} is not a positive number of seconds; try --seconds 60.\n`);
  process.exit(2);
}
const seed = values.seed === undefined ? Date.now() % 2 ** 31 : Number(values.seed);

const server = await startServerFuzzWorld();
const agent = await startAgentFuzzWorld();
const bodies = await startBodyFuzzWorld();
const targets: FuzzTarget<unknown>[] = [...server.targets, agent.target, ...bodies.targets].filter((target) => !values.target || target.name === values.target);
if (targets.length === 0) {
  process.stderr.write(`No fuzz target is called '${values.target}'. The targets: ${[...server.targets, agent.target, ...bodies.targets].map((t) => `'${t.name}'`).join(', ')}.\n`);
  process.exit(2);
}

console.log(`fuzzing ${targets.length} targets for ${seconds} s in all, seed ${seed}`);
let failures = 0;
for (const target of targets) {
  const budgetMs = (seconds * 1000) / targets.length;
  const started = performance.now();
  let details: fc.RunDetails<[unknown]>;
  try {
    details = await fc.check(fc.asyncProperty(target.arbitrary, (input) => target.run(input)), {
      seed,
      numRuns: Number.MAX_SAFE_INTEGER,
      interruptAfterTimeLimit: budgetMs,
      markInterruptAsFailure: false,
    });
  } catch (error) {
    // a generator of ours threw: the worlds' crash recorders would swallow it and keep the process up
    console.log(`${target.name}: the fuzzer itself failed: ${(error as Error).stack ?? String(error)}`);
    failures++;
    continue;
  }
  const elapsed = (performance.now() - started) / 1000;
  const rate = details.numRuns / elapsed;
  console.log(`${target.name.padEnd(46)} ${String(details.numRuns).padStart(7)} cases in ${elapsed.toFixed(1)} s = ${rate.toFixed(0).padStart(5)} cases/s   ${details.failed ? 'FAILED' : 'ok'}`);
  if (details.failed) {
    failures++;
    console.log(`  seed ${details.seed}, path ${details.counterexamplePath}`);
    console.log(`  counterexample: ${fc.stringify(details.counterexample).slice(0, 2000)}`);
    console.log(`  ${String((details.errorInstance as Error)?.message ?? details.errorInstance).split('\n').slice(0, 6).join('\n  ')}`);
    console.log(`  replay: npm run fuzz -- --seed ${details.seed} --target '${target.name}'`);
  }
}
const crashes = server.crashes.length + agent.crashes.length;
console.log(`crashes found: ${crashes} (exceptions that escaped, sockets closed 1011, channels closed INTERNAL, 500s); failed targets: ${failures}`);
await Promise.all([server.close(), agent.close(), bodies.close()]);
process.exit(failures > 0 || crashes > 0 ? 1 : 0);
