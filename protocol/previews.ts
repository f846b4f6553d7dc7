// No zod here: the CLI reads previews from a template spec without loading the schema.
/** An environment service port marked `preview: true`, under the name its URL carries (docs/apps.md). */
export interface ServicePreview {
  /** the URL's name: the service's own when it previews one port, else `<service>-<port name or number>` */
  name: string;
  service: string;
  port: number;
}

/**
 * The preview URLs a template's environment services ask for, in declaration order. They share
 * the apps' names (`/@owner/ws/apps/<name>/`, `<name>--ws--owner.<domain>`), so the template
 * checks refuse a preview named like an app or like another preview.
 */
export function servicePreviews(spec: { environment?: { services?: Record<string, { ports?: { port: number; name?: string; preview?: boolean }[] }> } }): ServicePreview[] {
  const out: ServicePreview[] = [];
  for (const [service, declared] of Object.entries(spec.environment?.services ?? {})) {
    const previewed = (declared.ports ?? []).filter((port) => port.preview === true);
    for (const port of previewed) {
      out.push({ name: previewed.length === 1 ? service : `${service}-${port.name ?? port.port}`, service, port: port.port });
    }
  }
  return out;
}
