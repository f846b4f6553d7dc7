/**
 * Which page origins may open cookie-authenticated websockets (the terminal) to a den server
 * reached at `accessUrl`. A loopback access URL (127.0.0.1, localhost, [::1]) also accepts the
 * other loopback names on the same scheme and port: they are the same machine and only a local
 * process can serve them, and `npm start` prints one name while people type the other.
 * Shared by the server's check and the browser page that explains a refusal.
 */
const LOOPBACK_HOSTS = ['127.0.0.1', 'localhost', '[::1]'];

export function allowedOrigins(accessUrl: string): string[] {
  const url = new URL(accessUrl);
  if (!LOOPBACK_HOSTS.includes(url.hostname)) return [url.origin];
  const port = url.port ? `:${url.port}` : '';
  return [url.origin, ...LOOPBACK_HOSTS.filter((host) => host !== url.hostname).map((host) => `${url.protocol}//${host}${port}`)];
}
