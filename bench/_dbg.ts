import fc from 'fast-check';
import { startServerFuzzWorld } from '../test/support/fuzz-server.ts';
const world = await startServerFuzzWorld();
const target = world.targets.find((t) => t.name === 'exec socket')!;
let i = 0;
try {
  await fc.assert(fc.asyncProperty(target.arbitrary, async (input) => {
    const started = Date.now();
    try { await target.run(input); } finally { if (Date.now() - started > 1000) console.log('slow case', i, Date.now() - started, fc.stringify(input).slice(0, 600)); i++; }
  }), { seed: 20261206, numRuns: 40, endOnFailure: true });
  console.log('ok');
} catch (e) { console.log(String(e).slice(0, 3000)); console.log("CAUSE", (e as any).cause); }
await world.close();
process.exit(0);
