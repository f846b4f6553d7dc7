import { defineConfig } from 'vite';

/** the den server the dev server proxies to (`npm start` listens here by default) */
const DEN = process.env.DEN_URL ?? 'http://127.0.0.1:7080';

// The den server builds this folder itself (server/web/build.ts, on start and when a source
// changes) and serves it at /@<owner>/<workspace>/terminal: no build step is needed to use it.
// For work on the page, `npx vite web` serves it with hot reload on :5173 and proxies the API
// (and the terminal websocket) to a running den server.
export default defineConfig({
  root: import.meta.dirname,
  server: {
    // web/src imports ../../protocol (wire types shared with the server)
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
  build: { outDir: 'dist', emptyOutDir: true, target: 'es2022' },
});
