import { defineConfig } from 'vite';

// `npx vite web` serves the page on :5173 and proxies the API (and its websockets) to a den server on :3000.
export default defineConfig({
  root: import.meta.dirname,
  server: {
    // web/src imports ../../protocol (wire types shared with the server)
    fs: { allow: ['..'] },
    proxy: { '/api': { target: 'http://127.0.0.1:3000', ws: true } },
  },
  build: { outDir: 'dist', emptyOutDir: true, target: 'es2022' },
});
