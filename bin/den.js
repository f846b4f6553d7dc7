#!/usr/bin/env node
// The `den` command. `den server` starts the control plane; everything else is the CLI.
// The two never import each other (see DESIGN.md's arrows); this file only dispatches.
const [major] = process.versions.node.split('.').map(Number);
if (major < 24) {
  process.stderr.write(`den needs Node.js 24 or newer; this is ${process.version}. Install Node 24 and try again.\n`);
  process.exit(1);
}
const argv = process.argv.slice(2);
if (argv[0] === 'server') {
  const { runServer } = await import('../server/main.ts');
  await runServer(argv.slice(1));
} else {
  const { runCli } = await import('../cli/main.ts');
  process.exitCode = await runCli(argv);
}
