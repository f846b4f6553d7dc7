import { z } from 'zod';
import {
  pushTemplateResponseSchema,
  templateDetailSchema,
  templateListSchema,
  templateVersionDetailSchema,
  templateVersionListSchema,
  type PushTemplateBody,
} from '../protocol/templates-api.ts';
import { segment, type Transport } from './http.ts';

const jsonSchemaDocument = z.record(z.string(), z.unknown());

/** Templates and their versions: /api/v1/templates[/...]. */
export class TemplatesApi {
  readonly #transport: Transport;

  constructor(transport: Transport) {
    this.#transport = transport;
  }

  /** Uploads a template folder (path -> UTF-8 content) as a new immutable version. */
  push(body: PushTemplateBody) {
    return this.#transport.request('POST', '/api/v1/templates', { body, schema: pushTemplateResponseSchema });
  }

  list() {
    return this.#transport.request('GET', '/api/v1/templates', { schema: templateListSchema });
  }

  get(name: string) {
    return this.#transport.request('GET', templatePath(name), { schema: templateDetailSchema });
  }

  versions(name: string) {
    return this.#transport.request('GET', `${templatePath(name)}/versions`, { schema: templateVersionListSchema });
  }

  /** One version with its validated document and its files. */
  version(name: string, number: number) {
    return this.#transport.request('GET', `${templatePath(name)}/versions/${segment(number)}`, { schema: templateVersionDetailSchema });
  }

  activate(name: string, version: number) {
    return this.#transport.request('POST', `${templatePath(name)}/activate`, { body: { version } });
  }

  /** The JSON Schema of template.yaml, as this server validates it. */
  schema() {
    return this.#transport.request('GET', '/api/v1/templates/schema', { schema: jsonSchemaDocument });
  }
}

function templatePath(name: string): string {
  return `/api/v1/templates/${segment(name)}`;
}
