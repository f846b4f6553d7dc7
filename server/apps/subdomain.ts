/** What an app host names: `8080--dev--alice.<domain>` a port, `web--dev--alice.<domain>` an app. */
export interface AppHost {
  /** the host as the browser sent it, lower-cased, with its port */
  host: string;
  target: { port: number } | { app: string };
  workspace: string;
  owner: string;
}

/** DNS labels hold 63 characters at most: longer names have no subdomain URL (path mode still works). */
const MAX_LABEL = 63;

/**
 * Reads a Host header as an app host of `domain` (subdomain mode, docs/apps.md); undefined when
 * it is not one (den's own host, a foreign one). The label is `<app|port>--<ws>--<owner>`;
 * usernames and workspace names are DNS labels, and `--` is read from the outside in.
 */
export function parseAppHost(hostHeader: string | undefined, domain: string | undefined): AppHost | undefined {
  if (!hostHeader || !domain) return undefined;
  const host = hostHeader.toLowerCase();
  const name = host.replace(/:\d{1,5}$/, '');
  const suffix = `.${domain}`;
  if (!name.endsWith(suffix)) return undefined;
  const label = name.slice(0, -suffix.length);
  if (label.length > MAX_LABEL || !/^[a-z0-9-]+$/.test(label)) return undefined;
  const first = label.indexOf('--');
  const last = label.lastIndexOf('--');
  if (first <= 0 || last <= first + 2) return undefined;
  const targetName = label.slice(0, first);
  const workspace = label.slice(first + 2, last);
  const owner = label.slice(last + 2);
  if (!owner) return undefined;
  const target: AppHost['target'] = /^\d{1,5}$/.test(targetName) ? { port: Number(targetName) } : { app: targetName };
  if ('port' in target && (target.port < 1 || target.port > 65535)) return undefined;
  return { host, target, workspace, owner };
}

/** The origin of an app host, with den's scheme and port (`http://8080--dev--alice.localtest:7080`); undefined when the label would be too long. */
export function appOrigin(accessUrl: string, domain: string, owner: string, workspace: string, target: { port: number } | { app: string }): string | undefined {
  const label = `${'port' in target ? target.port : target.app}--${workspace}--${owner}`;
  if (label.length > MAX_LABEL) return undefined;
  const url = new URL(accessUrl);
  return `${url.protocol}//${label}.${domain}${url.port ? `:${url.port}` : ''}`;
}
