import { describe, expect, it } from 'vitest';
import { AppError } from '../../protocol/errors.ts';
import { parseTemplateYaml } from './parse.ts';

/** Push-time checks of the paths a template names: refused with the file, field, line and a sentence. */

function refusal(text: string): AppError {
  try {
    parseTemplateYaml(text);
  } catch (error) {
    expect(error).toBeInstanceOf(AppError);
    return error as AppError;
  }
  throw new Error('expected the template to be refused');
}

const withService = (service: string) => `name: demo
parameters:
  - { name: dir, type: string, default: app }
workspace:
  image: x
environment:
  services:
    api:
      command: node api.js
${service.trim().split('\n').map((line) => `      ${line}`).join('\n')}
`;

describe('template paths at push time', () => {
  it.each([
    ['a workdir climbing out of the home', 'workdir: "~/../../../tmp/x"', 'workdir', 'leaves the workspace home'],
    ['a relative workdir climbing out of the home', 'workdir: app/../../x', 'workdir', 'leaves the workspace home'],
    ["another user's home", 'workdir: ~root/x', 'workdir', "'~root' would be another user's home"],
    ['a NUL byte', 'workdir: "app\\0x"', 'workdir', 'control characters'],
    ['an absolute path climbing above /', 'workdir: /app/../../etc', 'workdir', "climbs above /"],
    ['a literal .. next to an expression', 'workdir: "~/../${{ params.dir }}"', 'workdir', 'leaves the workspace home'],
    ['a relative volume path', 'volumes: [{ name: data, path: data }]', 'volumes[0].path', 'absolute path'],
    ['a volume over the container root', 'volumes: [{ name: data, path: /srv/.. }]', 'volumes[0].path', 'mounted over /'],
    ['an absolute sync source', 'sync: [{ from: /etc, to: /app }]', 'sync[0].from', 'in the workspace home'],
    ['a sync source climbing out of the home', 'sync: [{ from: ~/.., to: /app }]', 'sync[0].from', 'leaves the workspace home'],
    ['a sync target climbing above /', 'sync: [{ from: ~/app, to: /../../etc }]', 'sync[0].to', 'climbs above /'],
    ['a sync exclude leaving the synced folder', 'sync: [{ from: ~/app, to: /app, exclude: [../secrets] }]', 'sync[0].exclude[0]', 'leaves the synced folder'],
    ['an absolute sync exclude', 'sync: [{ from: ~/app, to: /app, exclude: [/etc] }]', 'sync[0].exclude[0]', 'relative to the synced folder'],
  ])('refuses %s with the field, line and a sentence', (_, service, field, fragment) => {
    const error = refusal(withService(service));
    expect(error.code).toBe('TEMPLATE_INVALID');
    expect(error.validations).toHaveLength(1);
    expect(error.validations![0]).toMatchObject({ field: `environment.services.api.${field}`, line: 10 });
    expect(error.validations![0].detail).toContain(fragment);
    expect(error.message).toContain(`template.yaml is invalid: environment.services.api.${field} (line 10)`);
  });

  it('refuses a task input that climbs out of the home', () => {
    const error = refusal(`${withService('workdir: ~/app\nagent: true')}  tasks:\n    seed: { service: api, run: x, inputs: [../../x] }\n`);
    expect(error.validations?.[0]).toMatchObject({ field: 'environment.tasks.seed.inputs[0]', line: 13 });
  });

  it('accepts paths that stay where they belong, expressions included', () => {
    const spec = parseTemplateYaml(withService(`
workdir: "~/\${{ params.dir }}/src/../build"
volumes: [{ name: data, path: /var/lib/data }]
sync: [{ from: ~/app, to: /home/den/app, exclude: [node_modules, dist/cache] }]
`));
    expect(spec.environment?.services?.api.workdir).toBe('~/${{ params.dir }}/src/../build');
    for (const workdir of ['~', 'app', '/app', '~/a/../b', '${{ params.dir }}']) {
      expect(() => parseTemplateYaml(withService(`workdir: "${workdir}"`))).not.toThrow();
    }
  });
});
