import { z } from 'zod';

/**
 * The public registry of error codes. Codes are API: never rename or reuse one.
 * Each entry has the HTTP status it maps to and a line of documentation
 * (a test checks that every code is documented and unique).
 */
export const ERROR_CODES = {
  // generic
  VALIDATION_FAILED: { status: 400, doc: 'The request body, query or parameters did not match the schema.' },
  BAD_REQUEST: { status: 400, doc: 'The request is malformed in a way the schema cannot describe.' },
  PAYLOAD_TOO_LARGE: { status: 413, doc: 'The request body is larger than the server accepts.' },
  NOT_FOUND: { status: 404, doc: 'No route or object exists at this address.' },
  RATE_LIMITED: { status: 429, doc: 'Too many requests; wait and try again.' },
  INTERNAL: { status: 500, doc: 'An unexpected server error; the server log has the details.' },
  NOT_READY: { status: 503, doc: 'The server is starting or shutting down.' },

  // authentication and authorization
  UNAUTHENTICATED: { status: 401, doc: 'No valid session or API token was presented.' },
  TOKEN_EXPIRED: { status: 401, doc: 'The API token has expired.' },
  INVALID_CREDENTIALS: { status: 401, doc: 'The username or password is wrong.' },
  FORBIDDEN: { status: 403, doc: 'The caller is authenticated but lacks the role for this action.' },
  CSRF_FAILED: { status: 403, doc: 'A cookie-authenticated write arrived without a valid CSRF token.' },
  FIRST_USER_EXISTS: { status: 409, doc: 'First-user setup was attempted after the first user was created.' },
  SETUP_REQUIRED: { status: 409, doc: 'No user exists yet; create the first user.' },

  // users, tokens, keys
  USER_NOT_FOUND: { status: 404, doc: 'No user with that name or id.' },
  USER_EXISTS: { status: 409, doc: 'A user with that name already exists.' },
  LAST_OWNER: { status: 409, doc: 'The action would leave den without an owner.' },
  TOKEN_NOT_FOUND: { status: 404, doc: 'No API token with that id for this user.' },
  SSH_KEY_INVALID: { status: 400, doc: 'The SSH public key could not be parsed.' },
  SSH_KEY_EXISTS: { status: 409, doc: 'That SSH public key is already registered.' },
  SSH_KEY_NOT_FOUND: { status: 404, doc: 'No SSH key with that id for this user.' },
  USER_SUSPENDED: { status: 403, doc: 'The account is suspended; an owner must reactivate it.' },
  USER_HAS_WORKSPACES: { status: 409, doc: 'The user still owns workspaces (or their history); delete them or suspend the user instead.' },

  // templates
  TEMPLATE_INVALID: { status: 400, doc: 'The template document failed validation; see validations.' },
  TEMPLATE_YAML_INVALID: { status: 400, doc: 'The template file is not valid YAML.' },
  TEMPLATE_NOT_FOUND: { status: 404, doc: 'No template with that name.' },
  TEMPLATE_VERSION_NOT_FOUND: { status: 404, doc: 'The template has no version with that number.' },
  TEMPLATE_NO_ACTIVE_VERSION: { status: 409, doc: 'The template has no active version to create workspaces from.' },
  TEMPLATE_IN_USE: { status: 409, doc: 'Workspaces still use the template; delete or move them first.' },
  EXPRESSION_INVALID: { status: 400, doc: 'A ${{ }} expression could not be parsed or evaluated.' },
  TEMPLATE_PATH_INVALID: { status: 400, doc: 'A path in the template version (after its expressions are evaluated) leaves the workspace home or the container root, or is not a plain path.' },

  // workspaces and builds
  WORKSPACE_NOT_FOUND: { status: 404, doc: 'No workspace with that name for this owner.' },
  WORKSPACE_EXISTS: { status: 409, doc: 'The owner already has a workspace with that name.' },
  WORKSPACE_NAME_INVALID: { status: 400, doc: 'Workspace names must be DNS-safe.' },
  WORKSPACE_PARAMETERS_INVALID: { status: 400, doc: 'Parameters do not satisfy the template version.' },
  WORKSPACE_NOT_RUNNING: { status: 409, doc: 'The action needs a running workspace.' },
  WORKSPACE_ALREADY_IN_STATE: { status: 409, doc: 'The workspace is already in the requested state.' },
  BUILD_IN_PROGRESS: { status: 409, doc: 'A build is already queued or running for the workspace.' },
  BUILD_NOT_FOUND: { status: 404, doc: 'No build with that number for the workspace.' },
  BUILD_NOT_IN_PROGRESS: { status: 409, doc: 'The workspace has no queued or running build, so there is nothing to cancel.' },
  SERVICE_NOT_FOUND: { status: 404, doc: 'The workspace\'s template version has no environment service with that name.' },
  SYNC_NOT_FOUND: { status: 404, doc: 'The workspace (or the named service) syncs nothing while it runs.' },

  // agent link
  AGENT_UNAUTHORIZED: { status: 401, doc: 'The agent token is unknown, revoked or for another workspace.' },
  AGENT_PROTOCOL_UNSUPPORTED: { status: 400, doc: 'The agent speaks a protocol major version the server does not know.' },
  AGENT_NOT_CONNECTED: { status: 409, doc: 'The workspace agent is not connected right now.' },
  AGENT_NOT_FOUND: { status: 404, doc: 'The workspace runs no agent beside the service named.' },
  REPLICA_UNAUTHORIZED: { status: 401, doc: 'A replica relay was dialed without the id and secret of a live replica of this deployment.' },
  RELAY_PROTOCOL_UNSUPPORTED: { status: 400, doc: 'A replica dialed the relay with a relay protocol major version this replica does not speak; run one den version across replicas.' },
  WORKSPACE_DOWN: { status: 409, doc: 'den observed that the workspace\'s agent, container or a service died after its build; start the workspace again.' },
  AGENT_PROTOCOL_ERROR: { status: 502, doc: 'The workspace agent sent a malformed or out-of-order frame; den closed that channel (or, after many, the link).' },
  EXEC_FAILED: { status: 502, doc: 'The command could not be started in the workspace (the agent refused or failed it; not an error of den itself).' },
  AGENT_START_FAILED: { status: 502, doc: 'The workspace agent reported start_error (a blocking startup script failed).' },
  AGENT_READY_TIMEOUT: { status: 504, doc: 'The workspace agent did not report ready in time.' },
  AGENT_WAIT_CANCELED: { status: 409, doc: 'Waiting for the workspace agent was canceled (build canceled or server shutting down).' },

  // terminal
  TERMINAL_SESSION_NOT_FOUND: { status: 404, doc: 'No terminal session with that id in the workspace; it ended or expired.' },
  TERMINAL_PROTOCOL_UNSUPPORTED: { status: 400, doc: 'The terminal client speaks a protocol major version the server does not know.' },
  SERVER_SHUTTING_DOWN: { status: 503, doc: 'The den server is shutting down or restarting; reconnect in a moment.' },
  TERMINAL_MESSAGE_INVALID: { status: 400, doc: 'A terminal websocket message was malformed or too large.' },
  TERMINAL_CLIENT_TOO_SLOW: { status: 409, doc: 'The terminal client stopped acknowledging output and was detached; reattach to continue.' },
  EVENTS_SUBSCRIBER_TOO_SLOW: { status: 409, doc: 'An event stream (GET /api/v1/events) fell too far behind and was ended; open it again and re-read the current state with `den list`.' },
  TERMINAL_START_FAILED: { status: 502, doc: 'The terminal shell could not be started in the workspace (reported by its agent).' },

  // SSH gateway and port forwarding
  TCP_CONNECT_FAILED: { status: 502, doc: 'Nothing accepted a forwarded connection to that port or unix socket inside the workspace.' },
  TCP_LISTEN_FAILED: { status: 409, doc: 'The workspace could not listen on that port or unix socket (taken, or not allowed); choose another.' },
  APP_NOT_FOUND: { status: 404, doc: 'The workspace\'s template declares no app of that name.' },
  APP_UNREACHABLE: { status: 502, doc: 'The app in the workspace closed the connection before it answered.' },
  SHARE_NOT_ALLOWED: { status: 403, doc: 'The share level is wider than the workspace template\'s maxShare.' },
  APP_TIMEOUT: { status: 504, doc: 'The app in the workspace sent no response head in time.' },
  SSH_LIMIT_REACHED: { status: 429, doc: 'The user has as many SSH sessions or forwarded channels open as den allows; close some and try again.' },

  // web pages
  WEB_BUILD_FAILED: { status: 500, doc: 'The server could not build its web pages (web/ with Vite); the server log has the details.' },

  // environment tasks, tests and teammates
  TASK_NOT_FOUND: { status: 404, doc: 'The workspace\'s template version declares no environment task of that name.' },
  TEST_NOT_FOUND: { status: 404, doc: 'The workspace\'s template version declares no environment test of that name.' },
  ENVIRONMENT_RUN_NOT_FOUND: { status: 404, doc: 'No task or test run with that id in this workspace.' },
  ENVIRONMENT_INPUTS_FAILED: { status: 409, doc: 'den could not hash the input files of a task or test in the workspace.' },
  TASK_FAILED: { status: 409, doc: 'An environment task exited with a non-zero status (or ran out of time); its run log has its output.' },
  GRANT_NOT_FOUND: { status: 404, doc: 'The user has no grant on this workspace\'s environment.' },
  GRANT_NOT_ALLOWED: { status: 409, doc: 'The grant would give a workspace\'s owner access to their own environment.' },

  // groups
  GROUP_NOT_FOUND: { status: 404, doc: 'No group with that name.' },
  GROUP_EXISTS: { status: 409, doc: 'A group with that name already exists.' },
  GROUP_MEMBER_NOT_FOUND: { status: 404, doc: 'The user is not a member of that group.' },

  // runtimes
  RUNTIME_ERROR: { status: 500, doc: 'The runtime failed to apply the plan; the build log has details.' },
  RUNTIME_CAPABILITY_MISSING: { status: 422, doc: 'The template needs a feature this server\'s runtime does not have (for example a service given only as an image on the process runtime); refused before any build.' },
} as const satisfies Record<string, { status: number; doc: string }>;

export type ErrorCode = keyof typeof ERROR_CODES;
export const errorCodes = Object.keys(ERROR_CODES) as [ErrorCode, ...ErrorCode[]];

export const validationIssueSchema = z.object({
  field: z.string(),
  detail: z.string(),
  line: z.number().int().optional(),
  column: z.number().int().optional(),
});
export type ValidationIssue = z.infer<typeof validationIssueSchema>;

/** The one error envelope every den endpoint returns and every client parses. */
export const errorEnvelopeSchema = z.object({
  error: z.object({
    code: z.string(),
    message: z.string(),
    detail: z.string().optional(),
    validations: z.array(validationIssueSchema).optional(),
  }),
});
export type ErrorEnvelope = z.infer<typeof errorEnvelopeSchema>;

export interface AppErrorOptions {
  detail?: string;
  validations?: ValidationIssue[];
  cause?: unknown;
  /** for 429 and 503: when to try again, sent as the Retry-After header */
  retryAfterSeconds?: number;
}

/** A domain error with a public code and a sentence for the user. */
export class AppError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly detail?: string;
  readonly validations?: ValidationIssue[];
  readonly retryAfterSeconds?: number;

  constructor(code: ErrorCode, message: string, options: AppErrorOptions = {}) {
    super(message, { cause: options.cause });
    this.name = 'AppError';
    this.code = code;
    this.status = ERROR_CODES[code].status;
    this.detail = options.detail;
    this.validations = options.validations;
    this.retryAfterSeconds = options.retryAfterSeconds;
  }

  toEnvelope(): ErrorEnvelope {
    return {
      error: {
        code: this.code,
        message: this.message,
        ...(this.detail ? { detail: this.detail } : {}),
        ...(this.validations ? { validations: this.validations } : {}),
      },
    };
  }
}

export function isAppError(value: unknown): value is AppError {
  return value instanceof AppError;
}
