import { describe, expect, it } from 'vitest';
import { describeEvent } from './commands/watch.ts';

describe('describeEvent', () => {
  it('names the agent of a service, and says nothing more of the workspace\'s own', () => {
    const at = '2026-12-06T23:04:05.000Z';
    expect(describeEvent({ type: 'agent', workspaceId: 'w', at, state: 'ready' }, 'alice/demo')).toBe('23:04:05 alice/demo agent ready');
    expect(describeEvent({ type: 'agent', workspaceId: 'w', at, agent: 'api', state: 'disconnected' }, 'alice/demo'))
      .toBe('23:04:05 alice/demo agent of service api disconnected');
  });
});
