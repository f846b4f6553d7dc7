import { join } from 'node:path';
import { defineConfig } from 'vite';
import react from '@vitejs/plugin-react';

/** the den server the dev server proxies to (`npm start` listens here by default) */
const DEN = process.env.DEN_URL ?? 'http://127.0.0.1:7080';

// Two pages: the dashboard (index.html, React) and the terminal page (terminal.html, plain
// TypeScript + xterm.js). The den server builds this folder once when it starts (and again only
// when a source changed since: server/web/build.ts) and serves the output; `npm run build:web`
// builds it ahead of time. For work on the pages, `npm run dev` serves them with hot reload on
// :5173 and proxies the API (and the terminal websocket) to a running den server.
export default defineConfig({
  root: import.meta.dirname,
  plugins: [react()],
  server: {
    // web/src imports ../../protocol and ../../client (shared with the server and the CLI)
    fs: { allow: ['..'] },
    proxy: {
      '/api': {
        target: DEN,
        ws: true,
        // den checks the Origin of cookie-authenticated websocket upgrades against its access URL
        configure: (proxy) => proxy.on('proxyReqWs', (request) => request.setHeader('origin', DEN)),
      },
    },
  },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    rolldownOptions: {
      input: { index: join(import.meta.dirname, 'index.html'), terminal: join(import.meta.dirname, 'terminal.html') },
    },
  },
});
