import { createServer, type Server } from 'node:http';
import { WebSocketServer } from 'ws';

/**
 * The app of the app proxy tests, as a workspace would run it: /echo answers with the request it
 * got (method, url, headers), two cookies and `Access-Control-Allow-Origin: *`; /count counts an upload; /large sends `largeBytes`
 * (chunked); /sized?bytes=N sends N bytes of `sizedBody` with a Content-Length, /sized?bytes=N&cut=M
 * only the first M of them before it drops the connection;
 * /events sends a server-sent event every 20 ms; /hang never answers; /ws is a websocket that
 * first says what its upgrade carried (origin, cookie, url), then echoes. Listen on it yourself.
 */
export function echoApp(largeBytes: number): { app: Server; wss: WebSocketServer } {
  const app = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://app');
    if (url.pathname === '/echo') {
      res.setHeader('content-type', 'application/json');
      res.setHeader('set-cookie', ['a=1; Path=/', 'b=2; Path=/']);
      // an app that would let every origin read it: den decides CORS in subdomain mode, not the app
      res.setHeader('access-control-allow-origin', '*');
      res.end(JSON.stringify({ method: req.method, url: req.url, headers: req.headers }));
    } else if (url.pathname === '/count') {
      let bytes = 0;
      req.on('data', (chunk: Buffer) => (bytes += chunk.length));
      req.on('end', () => res.end(String(bytes)));
    } else if (url.pathname === '/large') {
      const chunk = Buffer.alloc(1024 * 1024, 120);
      let sent = 0;
      const more = () => {
        while (sent < largeBytes) {
          sent += chunk.length;
          if (!res.write(chunk)) return void res.once('drain', more);
        }
        res.end();
      };
      more();
    } else if (url.pathname === '/sized') {
      const bytes = Number(url.searchParams.get('bytes'));
      const cut = url.searchParams.get('cut');
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': bytes });
      if (cut === null) return void res.end(sizedBody(bytes));
      res.write(sizedBody(bytes).subarray(0, Number(cut)), () => setTimeout(() => res.destroy(), 50));
    } else if (url.pathname === '/events') {
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
      let n = 0;
      const timer = setInterval(() => res.write(`data: tick ${++n}\n\n`), 20);
      res.on('close', () => clearInterval(timer));
    } else if (url.pathname === '/hang') {
      // never answers
    } else {
      res.writeHead(404).end('no such page');
    }
  });
  const wss = new WebSocketServer({ server: app, path: '/ws' });
  wss.on('connection', (socket, request) => {
    socket.send(JSON.stringify({ origin: request.headers.origin, cookie: request.headers.cookie ?? null, url: request.url }));
    socket.on('message', (data) => socket.send(`echo:${String(data)}`));
  });
  return { app, wss };
}

/** The bytes /sized sends: a pattern that shifts with every byte, so a lost, repeated or reordered piece shows. */
export function sizedBody(bytes: number): Buffer {
  const body = Buffer.alloc(bytes);
  for (let i = 0; i < bytes; i++) body[i] = (i * 7 + (i >> 12)) & 0xff;
  return body;
}
