import type { FastifyError, FastifyInstance, FastifyReply } from 'fastify';
import { hasZodFastifySchemaValidationErrors, isResponseSerializationError } from 'fastify-type-provider-zod';
import { AppError, type ValidationIssue } from '../../protocol/errors.ts';

/**
 * The one place errors become responses. Domain code throws AppError; zod failures become
 * 400 VALIDATION_FAILED with field paths; anything else is a logged 500 without internals.
 */
export function registerErrorHandling(app: FastifyInstance): void {
  app.setErrorHandler((error: FastifyError | AppError | Error, request, reply) => {
    const appError = toAppError(error);
    if (appError.status >= 500) {
      request.log.error({ err: error }, 'request failed');
    } else if (appError.status === 429) {
      // a flood of refused requests would write a line each; den_login_refused_total counts them
      request.log.debug({ code: appError.code, status: appError.status }, appError.message);
    } else {
      request.log.info({ code: appError.code, status: appError.status }, appError.message);
    }
    if (appError.retryAfterSeconds !== undefined) reply.header('retry-after', String(appError.retryAfterSeconds));
    return reply.status(appError.status).send(appError.toEnvelope());
  });

  app.setNotFoundHandler((request, reply) => {
    const error = new AppError('NOT_FOUND', `There is no route ${request.method} ${request.url.split('?')[0]}. See /api/docs for the API.`);
    return reply.status(404).send(error.toEnvelope());
  });
}

/**
 * Errors Fastify raises before routing (a %-escape in the URL that is not valid UTF-8) skip the
 * error handler; this answers them with the same envelope (Fastify's `frameworkErrors` option).
 */
export function answerFrameworkError(error: FastifyError, _request: unknown, reply: FastifyReply): void {
  const appError = toAppError(error);
  void reply.status(appError.status).send(appError.toEnvelope());
}

export function toAppError(error: unknown): AppError {
  if (error instanceof AppError) return error;
  if (hasZodFastifySchemaValidationErrors(error)) {
    const validations: ValidationIssue[] = error.validation.map((issue) => ({
      field: [error.validationContext, ...issuePath(issue)].filter(Boolean).join('.'),
      detail: issue.message ?? 'is invalid',
    }));
    const first = validations[0];
    return new AppError(
      'VALIDATION_FAILED',
      `The request is invalid: ${first ? `${first.field} ${lowerFirst(first.detail)}` : 'it does not match the schema'}. Fix it and try again.`,
      { validations },
    );
  }
  if (isResponseSerializationError(error)) {
    return new AppError('INTERNAL', 'The server produced a response it could not send. This is a bug in den; the server log has the details.', { cause: error });
  }
  const fastifyError = error as FastifyError;
  switch (fastifyError.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new AppError('PAYLOAD_TOO_LARGE', 'The request body is too large. Send a smaller body (for templates, remove large files from the folder).');
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new AppError('BAD_REQUEST', 'The request has an unsupported content type. Send JSON with Content-Type: application/json.');
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return new AppError('BAD_REQUEST', 'The request declares a JSON body but has none. Send a JSON object.');
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return new AppError('BAD_REQUEST', 'The request body is not valid JSON. Check its syntax and try again.');
    case 'FST_ERR_BAD_URL':
      return new AppError('BAD_REQUEST', 'The URL is malformed (a %-escape is not valid UTF-8). Fix the address and try again.');
  }
  if (fastifyError.statusCode === 429) {
    return new AppError('RATE_LIMITED', 'Too many requests. Wait a minute and try again.');
  }
  if (fastifyError.statusCode && fastifyError.statusCode >= 400 && fastifyError.statusCode < 500) {
    return new AppError('BAD_REQUEST', `The request is invalid: ${fastifyError.message}.`);
  }
  return new AppError('INTERNAL', 'Something went wrong inside den. The server log has the details; please report it.', { cause: error });
}

function issuePath(issue: { instancePath?: string; params?: unknown }): string[] {
  const path = (issue.params as { issue?: { path?: PropertyKey[] } } | undefined)?.issue?.path;
  if (path) return path.map(String);
  return (issue.instancePath ?? '').split('/').filter(Boolean);
}

function lowerFirst(text: string): string {
  return text.charAt(0).toLowerCase() + text.slice(1);
}
