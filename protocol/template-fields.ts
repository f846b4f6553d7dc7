import { z } from 'zod';
import { CPU_PATTERN, DURATION_PATTERN, SIZE_PATTERN } from './template-units.ts';

/**
 * The template document (`template.yaml`), field by field, and the types inferred from it.
 * Every object is strict: an unknown field is an error, because a misspelt field silently
 * ignored is the worst template bug to debug. Fields whose values are known only at plan time
 * (resources, sizes, env, commands) accept `${{ }}` expressions as strings; the plan evaluates
 * them and checks the result. Cross-field rules (references, cycles, defaults within options)
 * live in template-checks.ts, which reads these types; template.ts joins both into the schema
 * callers parse with, so this file is below the checks and imports none of them.
 */

// Names that would reach JavaScript prototype machinery when used as object keys or in
// expressions; refused everywhere a template names something.
const NOT_RESERVED = '(?!(__proto__|constructor|prototype)$)';
/** DNS label: template names, service names, app names (they end up in hostnames). */
export const DNS_LABEL = new RegExp(`^${NOT_RESERVED}[a-z0-9]([a-z0-9-]*[a-z0-9])?$`);
/** Parameter names are used in expressions as `params.<name>`. */
export const PARAMETER_NAME = new RegExp(`^${NOT_RESERVED}[A-Za-z_][A-Za-z0-9_]*$`);
export const ENV_NAME = new RegExp(`^${NOT_RESERVED}[A-Za-z_][A-Za-z0-9_]*$`);
const EXPRESSION_MARK = /\$\{\{/;

const withExpression = (pattern: RegExp) => new RegExp(`(${pattern.source})|\\$\\{\\{`);

export const dnsNameSchema = (what: string, max = 63) =>
  z
    .string()
    .max(max, `A ${what} name has at most ${max} characters.`)
    .regex(DNS_LABEL, `A ${what} name must be DNS-safe: lowercase letters, digits and '-', starting and ending with a letter or digit.`);

export const durationSchema = z
  .string()
  .regex(DURATION_PATTERN, 'Use a duration such as 30s, 5m, 2h or 1h30m.');

/** A size or an expression that evaluates to one, e.g. "4Gi" or "${{ params.disk }}Gi". */
export const sizeSchema = z.union([
  z.number().int().nonnegative(),
  z.string().regex(withExpression(SIZE_PATTERN), 'Use a size such as 512Mi or 4Gi, or a ${{ }} expression.'),
]);

export const cpuSchema = z.union([
  z.number().positive(),
  z.string().regex(withExpression(CPU_PATTERN), 'Use a number of cores such as 2 or 0.5 (or 500m), or a ${{ }} expression.'),
]);

export const portSchema = z.number().int().min(1, 'A port is a number from 1 to 65535.').max(65535, 'A port is a number from 1 to 65535.');

const scalarSchema = z.union([z.string(), z.number(), z.boolean()]);
export const envSchema = z.record(
  z.string().regex(ENV_NAME, 'Environment variable names are letters, digits and _, not starting with a digit.'),
  scalarSchema,
);
/** A command: an argv array, or one string run by `sh -c`. */
export const commandSchema = z.union([z.array(z.string()).min(1), z.string().min(1)]);

// ---- parameters ----

export const parameterTypes = ['string', 'number', 'bool', 'list'] as const;
export type ParameterType = (typeof parameterTypes)[number];
export type ParameterValue = string | number | boolean | string[];

const parameterValueSchema = z.union([z.string(), z.number(), z.boolean(), z.array(z.string())]);

export const parameterOptionSchema = z.union([
  z.string(),
  z.number(),
  z.boolean(),
  z.strictObject({
    value: z.union([z.string(), z.number(), z.boolean()]),
    name: z.string().optional(),
    description: z.string().optional(),
    icon: z.string().optional(),
  }),
]);

export const parameterValidationSchema = z.strictObject({
  min: z.number().optional().describe('number: smallest value; string: shortest length; list: fewest items'),
  max: z.number().optional().describe('number: largest value; string: longest length; list: most items'),
  regex: z.string().max(1000).optional().describe('string (or each list item): must match; JavaScript syntax, tested as is (anchor with ^ and $)'),
  message: z.string().optional().describe('shown instead of the generic sentence when the regex does not match'),
  monotonic: z.enum(['increasing', 'decreasing']).optional().describe('number only: on update the value may only grow (increasing) or shrink (decreasing)'),
});

export const parameterSchema = z.strictObject({
  name: z.string().max(63).regex(PARAMETER_NAME, 'A parameter name is letters, digits and _, not starting with a digit (it is used as params.<name>).'),
  displayName: z.string().optional(),
  description: z.string().optional(),
  icon: z.string().optional(),
  type: z.enum(parameterTypes),
  default: parameterValueSchema.optional().describe('without a default the parameter is required'),
  options: z.array(parameterOptionSchema).min(1).optional(),
  validation: parameterValidationSchema.optional(),
  mutable: z.boolean().default(true).describe('false: the value is fixed when the workspace is created (e.g. a disk that cannot shrink)'),
  ephemeral: z.boolean().default(false).describe('used for one build only and never stored (e.g. "reset the database on this start")'),
});

// ---- workspace ----

export const startupScriptSchema = z.strictObject({
  name: z.string().min(1).max(100),
  run: z.string().min(1),
  timeout: durationSchema.optional(),
  blocking: z.boolean().default(true).describe('blocking scripts must finish before the workspace is ready'),
});

export const shareLevels = ['owner', 'authenticated', 'public'] as const;
export type ShareLevel = (typeof shareLevels)[number];

export const appSchema = z.strictObject({
  name: dnsNameSchema('app', 32),
  displayName: z.string().optional(),
  icon: z.string().optional(),
  port: portSchema,
  path: z.string().startsWith('/', 'An app path starts with /.').optional(),
  healthcheck: z
    .strictObject({
      path: z.string().startsWith('/', 'A health check path starts with /.').default('/'),
      interval: durationSchema.default('5s'),
      threshold: z.number().int().min(1).max(100).default(3).describe('consecutive failures before the app is reported unhealthy'),
    })
    .optional(),
  share: z.enum(shareLevels).default('owner').describe('Who may open the app: its owner, any signed-in user, or anyone.'),
});

export const workspaceSchema = z.strictObject({
  image: z.string().min(1).describe('container image (docker, kubernetes); the process runtime ignores it'),
  resources: z
    .strictObject({
      cpu: cpuSchema.optional(),
      memory: sizeSchema.optional(),
      pids: z.union([z.number().int().positive(), z.string().regex(EXPRESSION_MARK, 'Use a whole number or a ${{ }} expression.')]).optional(),
    })
    .optional(),
  home: z.strictObject({ size: sizeSchema.optional() }).optional(),
  env: envSchema.optional().describe('Environment variables of the workspace; values may use ${{ }}.'),
  startup: z.array(startupScriptSchema).optional().describe('Scripts the agent runs in order at every start; their output goes to the build log.'),
  apps: z.array(appSchema).optional().describe('Web apps in the workspace, reachable through den at their own URL.'),
  maxShare: z.enum(shareLevels).default('owner').describe('The widest share level the owner may give an app or port of this workspace (`den share`): owner (no sharing), authenticated or public.'),
  dotfiles: z.strictObject({ repo: z.string().min(1) }).optional().describe('A git repository of dotfiles installed into the home.'),
  ssh: z
    .strictObject({
      agentForwarding: z.boolean().default(false)
        .describe('true: `ssh -A` (ForwardAgent) reaches the workspace, which gets SSH_AUTH_SOCK for the session; anyone who can run commands there while the session lasts can use the keys of your agent. Default false: refused.'),
    })
    .optional()
    .describe('What the SSH gateway allows in sessions to this workspace (docs/editors.md).'),
});

// ---- environment ----

export const servicePortSchema = z.strictObject({
  port: portSchema,
  name: z.string().regex(DNS_LABEL, 'A port name is DNS-safe: lowercase letters, digits and -.').optional(),
  preview: z.boolean().default(false).describe('gets a preview URL'),
});

export const readinessSchema = z.strictObject({
  tcp: portSchema.optional(),
  http: z.strictObject({ port: portSchema, path: z.string().startsWith('/', 'A readiness path starts with /.').default('/') }).optional(),
  command: commandSchema.optional(),
  timeout: durationSchema.default('60s').describe('how long to wait for readiness before the build fails'),
  interval: durationSchema.default('1s'),
});

export const serviceSchema = z.strictObject({
  image: z.string().min(1).optional(),
  command: commandSchema.optional().describe('The command to run (argv list, or one string run by sh -c); the process runtime needs it.'),
  workdir: z.string().min(1).optional(),
  env: envSchema.optional(),
  ports: z.array(servicePortSchema).optional(),
  readiness: readinessSchema.optional(),
  volumes: z
    .array(z.strictObject({ name: dnsNameSchema('volume', 32), path: z.string().min(1), size: sizeSchema.optional() }))
    .optional(),
  dependsOn: z.array(z.string()).optional().describe('Services that must be ready before this one starts.'),
  agent: z.boolean().optional()
    .describe('Run a den agent beside the service, so `den exec WS --service NAME` and terminals reach into it; the image is not changed (docker mounts the agent read-only).'),
  sync: z
    .array(z.strictObject({
      from: z.string().min(1).describe('a folder in the workspace (~/ is its home)'),
      to: z.string().min(1).describe('the folder in the service it is mirrored into'),
      exclude: z.array(z.string()).optional().describe('gitignore patterns, relative to from; excluded paths in the service are left alone'),
      mode: z.enum(['one-way', 'two-way'], { message: 'A sync mode is one-way (the workspace is mirrored into the service) or two-way (changes in the service come back too).' }).default('one-way')
        .describe('one-way: the workspace is mirrored into the service; two-way: changes made in the service under `to` come back into the workspace, and when a path changed on both sides at once the workspace\'s version wins and the service\'s is kept beside it as NAME.den-conflict-TIME'),
    }))
    .optional()
    .describe('Folders copied live from the workspace into the service (docker); a synced service gets an agent beside it. `den sync status` shows each one.'),
  afterSync: z
    .union([z.literal('nothing'), z.literal('restart'), z.strictObject({ run: z.string().min(1).describe('run by sh -c in the service after each applied batch') })])
    .optional()
    .describe('What the service does after a sync batch lands: nothing (its dev server reloads by itself, the default), restart (its process, in place: docker; the service needs a command), or run a command.'),
});

/**
 * A task or a test: a command run in a service's agent, or in a one-off container (pod) from the
 * service's image, with the inputs and tasks its version depends on.
 */
const environmentEntrySchema = (run: string, dependsOn: string) => z.strictObject({
  service: z.string().describe('the service it runs in: through its agent (`agent: true`), in the service\'s own container and environment; or, with `oneOff: true`, in a fresh container from its image'),
  oneOff: z.boolean().optional()
    .describe('true: run in a one-off container (docker) or pod (kubernetes) from the service\'s image, with its environment, on the workspace\'s network and the workspace\'s home read-only at ~; removed when done. The service needs no agent.'),
  run: z.string().min(1).describe(run),
  inputs: z.array(z.string()).max(100, 'List at most 100 inputs; name a directory to take in everything under it.').optional()
    .describe('paths in the workspace (~/app/migrations, /etc/app.conf; a directory means every file under it) whose contents are part of the version: a change to one makes the entry run again'),
  dependsOn: z.array(z.string()).optional().describe(dependsOn),
  timeout: durationSchema.default('10m').describe('how long the command may run before den ends it and records a failure'),
});

export const taskSchema = environmentEntrySchema('the command, run by sh -c', 'tasks that run before this one; their versions are part of its version');
export const testSchema = environmentEntrySchema('the command, run by sh -c; exit status 0 is a pass', 'tasks whose versions are part of the test\'s version');

const serviceNameKey = z
  .string()
  .max(32, 'A service name has at most 32 characters.')
  .regex(DNS_LABEL, 'A service name must be DNS-safe: lowercase letters, digits and -, starting and ending with a letter or digit.');
const entryNameKey = z.string().max(63).regex(new RegExp(`^${NOT_RESERVED}[A-Za-z0-9][A-Za-z0-9_.-]*$`), 'Use letters, digits, ., _ and - for task and test names.');

export const environmentSchema = z.strictObject({
  services: z.record(serviceNameKey, serviceSchema).optional().describe('Services by name; reach one from the workspace as ${{ services.<name>.url }}.'),
  tasks: z.record(entryNameKey, taskSchema).optional().describe('Commands run once per environment version (migrations, seeds).'),
  tests: z.record(entryNameKey, testSchema).optional().describe('Commands run on demand against the environment (`den test <name>`).'),
});

export const lifecycleSchema = z.strictObject({
  autostop: durationSchema.optional().describe('stop after this long without activity'),
  maxLifetime: durationSchema.optional().describe('stop this long after start, whatever the activity'),
  autostartAllowed: z.boolean().default(true),
  restart: z.enum(['never', 'on-failure']).optional()
    .describe('on-failure: when the agent, the container or a service dies after the build, den starts the workspace again (a few times, with back-off); never (the default): it is shown down until someone starts it'),
});

/** Without the cross-field checks: parse with template.ts's `templateSchema`, which runs them. */
export const templateFieldsSchema = z.strictObject({
  $schema: z.string().optional().describe('lets editors find the JSON Schema (`den templates schema`)'),
  // 'schema' would collide with GET /api/v1/templates/schema.
  name: dnsNameSchema('template').refine((name) => name !== 'schema', "The name 'schema' is reserved; choose another template name."),
  displayName: z.string().max(200).optional(),
  description: z.string().max(10_000).optional(),
  icon: z.string().max(2000).optional(),
  parameters: z.array(parameterSchema).default([]).describe('Values a user picks when creating a workspace; read them as ${{ params.<name> }}.'),
  workspace: workspaceSchema.describe('The workspace: image, resources, home volume, env, startup scripts, apps.'),
  environment: environmentSchema.optional().describe('The services of the workspace environment, with tasks and tests run against them.'),
  lifecycle: lifecycleSchema.optional().describe('Defaults for autostop, maximum lifetime and autostart.'),
});

// The cross-field checks refine without transforming, so these are also the checked schema's types.
export type TemplateSpec = z.infer<typeof templateFieldsSchema>;
/** What a template author writes (defaults not yet applied). */
export type TemplateInput = z.input<typeof templateFieldsSchema>;
export type ParameterSpec = z.infer<typeof parameterSchema>;
export type ParameterOption = z.infer<typeof parameterOptionSchema>;
export type ParameterValidation = z.infer<typeof parameterValidationSchema>;
export type WorkspaceSpec = z.infer<typeof workspaceSchema>;
export type StartupScriptSpec = z.infer<typeof startupScriptSchema>;
export type AppSpec = z.infer<typeof appSchema>;
export type EnvironmentSpec = z.infer<typeof environmentSchema>;
export type ServiceSpec = z.infer<typeof serviceSchema>;
export type ServicePortSpec = z.infer<typeof servicePortSchema>;
export type ReadinessSpec = z.infer<typeof readinessSchema>;
export type TaskSpec = z.infer<typeof taskSchema>;
export type TestSpec = z.infer<typeof testSchema>;
export type LifecycleSpec = z.infer<typeof lifecycleSchema>;

/** The plain values of a parameter's options, whether written as scalars or as objects. */
export function optionValues(parameter: Pick<ParameterSpec, 'options'>): (string | number | boolean)[] | undefined {
  return parameter.options?.map((option) => (typeof option === 'object' ? option.value : option));
}

