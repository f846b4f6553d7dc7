// `npm test`: typecheck, the import lint (arrows and cycles), then the whole vitest suite.
// Prints what was skipped and why; with CI=true any skipped test fails the run, because CI
// installs everything the suite needs (see .ci/run).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const ci = process.env.CI === 'true' || process.env.CI === '1';
const extra = process.argv.slice(2);

function step(name: string, command: string, args: string[]): void {
  const started = performance.now();
  const result = spawnSync(command, args, { stdio: 'inherit' });
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  if (result.status !== 0) {
    console.error(`\nnpm test: ${name} failed (${seconds} s). Fix the errors above and run \`npm test\` again.`);
    process.exit(result.status ?? 1);
  }
  console.log(`npm test: ${name} ok (${seconds} s)`);
}

if (extra.length === 0) {
  step('typecheck', 'npx', ['tsc', '--noEmit', '-p', '.']);
  step('import lint (arrows and cycles)', process.execPath, ['test/lint-arrows.ts']);
  // The page (Vite) is built on the first request a server gets for it; built here, before the
  // suite, it no longer takes both CPUs away from whichever test file happens to run first.
  const started = performance.now();
  const { createWebBuilder } = await import('../server/web/build.ts');
  await createWebBuilder({ fallbackDir: join(tmpdir(), 'den-test-web') }).current();
  console.log(`npm test: web page build ok (${((performance.now() - started) / 1000).toFixed(1)} s)`);
}

const outDir = mkdtempSync(join(tmpdir(), 'den-test-report-'));
const report = join(outDir, 'vitest.json');
const vitest = spawnSync(
  'npx',
  ['vitest', 'run', '--reporter=default', '--reporter=json', `--outputFile.json=${report}`, ...extra],
  { stdio: 'inherit' },
);

interface AssertionResult { fullName: string; status: string }
interface FileResult { name: string; assertionResults: AssertionResult[] }
let results: FileResult[] = [];
try {
  results = (JSON.parse(readFileSync(report, 'utf8')) as { testResults: FileResult[] }).testResults;
} catch {
  console.error('npm test: vitest wrote no report; see its output above.');
  process.exit(vitest.status || 1);
} finally {
  rmSync(outDir, { recursive: true, force: true });
}

const all = results.flatMap((file) => file.assertionResults.map((test) => ({ ...test, file: file.name })));
const count = (status: string) => all.filter((test) => test.status === status).length;
const passed = count('passed');
const failed = count('failed');
const skipped = all.filter((test) => ['skipped', 'pending', 'todo'].includes(test.status));

if (skipped.length > 0) {
  console.log(`\nSkipped (${skipped.length}); each suite printed its reason above with [skip]:`);
  for (const test of skipped) console.log(`  - ${test.file.replace(process.cwd() + '/', '')}: ${test.fullName}`);
}
console.log(`\n${passed} passed, ${failed} failed, ${skipped.length} skipped`);

if (ci && skipped.length > 0) {
  console.error('npm test: tests were skipped under CI=true; CI must install every dependency, so this is a failure.');
  process.exit(1);
}
if (all.length === 0) {
  console.error('npm test: no tests ran.');
  process.exit(1);
}
process.exit(vitest.status ?? 1);
