// Real-browser check of web/: bundles web/src with esbuild, serves it next to den's agent/terminal
// code behind one websocket (no server, no agent link), and drives Debian's Chromium: type, vim,
// reload (vim must come back identical), cut the socket (banner shows, screen stays, reattaches).
// Needs the web packages of docs/terminal.md installed. Run: node test/e2e/terminal-reload.mjs
// Measured 2026-11-26 with the packages unpacked in a scratch dir: every step passed, WebGL renderer.
// Becomes a Playwright test in test/ once the server routes the terminal (issue 3).
import http from 'node:http';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { build } from 'esbuild';
import { WebSocketServer } from 'ws';
import { chromium } from 'playwright-core';
const root = resolve(import.meta.dirname, '../..');
const dist = mkdtempSync(join(tmpdir(), 'den-web-'));
// NODE_PATH lets it run against packages unpacked elsewhere (how it was checked before they were installed)
await build({ entryPoints: [join(root, 'web/src/main.ts')], nodePaths: process.env.NODE_PATH ? [process.env.NODE_PATH] : [], bundle: true, format: 'esm', outdir: dist, loader: { '.css': 'css' }, logLevel: 'warning' });
const { TerminalSessions } = await import(join(root, 'agent/terminal/registry.ts'));
const { serveTerminalConnection } = await import(join(root, 'agent/terminal/socket.ts'));
const sessions = new TerminalSessions({ defaults: { command: ['bash', '--norc', '--noprofile'], env: { PATH: process.env.PATH, HOME: dist, PS1: 'den$ ', LANG: 'C.UTF-8' } } });
const html = readFileSync(join(root, 'web/index.html'), 'utf8').replace('<script type="module" src="/src/main.ts"></script>', '<link rel="stylesheet" href="/main.css"><script type="module" src="/main.js"></script>');
const server = http.createServer((req, res) => {
  if (req.url.startsWith('/main.js')) { res.setHeader('content-type', 'text/javascript'); return res.end(readFileSync(join(dist, 'main.js'))); }
  if (req.url.startsWith('/main.css')) { res.setHeader('content-type', 'text/css'); return res.end(readFileSync(join(dist, 'main.css'))); }
  res.setHeader('content-type', 'text/html'); res.end(html);
});
const wss = new WebSocketServer({ server, perMessageDeflate: false });
const sockets = new Set();
wss.on('connection', (ws, req) => {
  sockets.add(ws);
  console.log('ws connect', req.url);
  const c = serveTerminalConnection({ send: (m) => ws.send(m), close: (code, r) => ws.close(code, r) }, sessions);
  ws.on('message', (d, bin) => c.message(bin ? new Uint8Array(d) : d.toString()));
  ws.on('close', () => { sockets.delete(ws); c.closed(); });
});
await new Promise((r) => server.listen(0, '127.0.0.1', r));
const port = server.address().port;
const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'] });
const page = await browser.newPage();
page.on('console', (m) => { if (!m.text().includes('GL Driver')) console.log('page:', m.text()); });
const screen = () => page.evaluate(() => { const t = globalThis.denTerminal?.terminal; if (!t) return ''; const b = t.buffer.active; const out = []; for (let y = 0; y < t.rows; y++) out.push(b.getLine(b.viewportY + y)?.translateToString(true) ?? ''); return out.join('\n'); });
const until = async (what, f, ms = 15000) => { const end = Date.now() + ms; while (!(await f())) { if (Date.now() > end) throw new Error('timeout: ' + what + '\n' + (await screen()).slice(-500)); await new Promise((r) => setTimeout(r, 50)); } };
await page.goto(`http://127.0.0.1:${port}/@alice/dev/terminal`);
await until('prompt', async () => (await screen()).includes('den$'));
await page.keyboard.type('echo hello-$((6*7))\n');
await until('echo', async () => (await screen()).includes('hello-42'));
console.log('url after attach:', page.url());
await page.keyboard.type('printf "\\xe4\\xbd\\xa0\\xe5\\xa5\\xbd wide\\n"; vim -u NONE -i NONE -N e2e-notes.txt\n');
await until('vim', async () => (await screen()).includes('e2e-notes.txt'));
await page.keyboard.type('ihello from vim');
await page.keyboard.press('Escape');
await until('vim text', async () => (await screen()).includes('hello from vim'));
const before = await screen();
await page.reload();
await until('vim after reload', async () => (await screen()).includes('hello from vim'));
console.log('vim survives reload:', (await screen()) === before ? 'identical screen' : 'different screen');
console.log('renderer:', await page.evaluate(() => document.querySelector('.xterm canvas') ? 'webgl canvas' : 'dom'));
// cut the socket server-side: banner must show, screen stays, then reattach
for (const ws of sockets) ws.terminate();
await until('banner', () => page.evaluate(() => !document.getElementById('banner').hidden), 5000);
console.log('banner:', await page.evaluate(() => document.getElementById('banner').textContent), '| screen kept:', (await screen()).includes('hello from vim'));
await until('banner hidden', () => page.evaluate(() => document.getElementById('banner').hidden), 15000);
await page.keyboard.type(':q!\n');
await until('shell back', async () => (await screen()).includes('wide'));
console.log('after :q! screen has prompt:', (await screen()).includes('den$'));
await browser.close();
sessions.closeAll();
server.close();
process.exit(0);
