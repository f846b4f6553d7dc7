// The worker thread of parse-thread.ts: parses one template.yaml at a time off the server's
// event loop and posts back the spec, or the AppError's parts (an Error does not survive
// postMessage with its code and validations).
import { parentPort } from 'node:worker_threads';
import { AppError } from '../../protocol/errors.ts';
import { parseTemplateYaml, type ParseTemplateOptions } from './parse.ts';

parentPort!.on('message', ({ text, options }: { text: string; options: ParseTemplateOptions }) => {
  try {
    parentPort!.postMessage({ spec: parseTemplateYaml(text, options) });
  } catch (error) {
    if (error instanceof AppError) {
      parentPort!.postMessage({ refused: { code: error.code, message: error.message, detail: error.detail, validations: error.validations } });
    } else {
      parentPort!.postMessage({ failed: error instanceof Error ? (error.stack ?? error.message) : String(error) });
    }
  }
});
