import { describe, expect, it } from 'vitest';
import { isAppError } from '../../protocol/errors.ts';
import { workspaceStatuses } from '../../protocol/workspaces.ts';
import type { BuildState, WorkspaceStatus } from '../store/schema.ts';
import { checkRequest, type LifecycleRequest, type LifecycleSubject } from './lifecycle.ts';

const requests: LifecycleRequest[] = ['start', 'stop', 'restart', 'update', 'delete', 'cancel'];

function subject(status: WorkspaceStatus, buildState: BuildState | null): LifecycleSubject {
  return { label: 'alice/demo', name: 'demo', status, buildState, buildTransition: buildState ? 'start' : null };
}

/** The code the request is refused with, or 'ok'. */
function answer(status: WorkspaceStatus, buildState: BuildState | null, request: LifecycleRequest): string {
  try {
    checkRequest(subject(status, buildState), request);
    return 'ok';
  } catch (error) {
    if (!isAppError(error)) throw error;
    expect(error.message, `${status}/${buildState}/${request}`).toMatch(/\.$/);
    return error.code;
  }
}

describe('the workspace lifecycle', () => {
  it('lets a running workspace that the reconciler saw go down be started again, and no other', () => {
    const running = subject('running', 'succeeded');
    expect(() => checkRequest({ ...running, health: 'down' }, 'start')).not.toThrow();
    expect(() => checkRequest({ ...running, health: 'ok' }, 'start')).toThrow(expect.objectContaining({ code: 'WORKSPACE_ALREADY_IN_STATE' }));
    expect(() => checkRequest({ ...running, health: null }, 'start')).toThrow(expect.objectContaining({ code: 'WORKSPACE_ALREADY_IN_STATE' }));
  });

  it('refuses every request but cancel while a build is queued or running, with BUILD_IN_PROGRESS', () => {
    for (const status of workspaceStatuses) {
      for (const state of ['queued', 'running'] as const) {
        for (const request of requests) {
          expect(answer(status, state, request), `${status}/${state}/${request}`).toBe(request === 'cancel' ? 'ok' : 'BUILD_IN_PROGRESS');
        }
      }
    }
  });

  it('refuses cancel with BUILD_NOT_IN_PROGRESS when no build is queued or running', () => {
    for (const status of workspaceStatuses) {
      for (const state of [null, 'succeeded', 'failed', 'canceled'] as const) {
        expect(answer(status, state, 'cancel')).toBe('BUILD_NOT_IN_PROGRESS');
      }
    }
  });

  it('refuses to start a running workspace and to stop a stopped one with WORKSPACE_ALREADY_IN_STATE', () => {
    expect(answer('running', 'succeeded', 'start')).toBe('WORKSPACE_ALREADY_IN_STATE');
    expect(answer('stopped', 'succeeded', 'stop')).toBe('WORKSPACE_ALREADY_IN_STATE');
  });

  it('accepts start, stop, restart, update and delete after a failed or canceled build', () => {
    for (const state of ['failed', 'canceled'] as const) {
      for (const request of ['start', 'stop', 'restart', 'update', 'delete'] as const) {
        expect(answer('failed', state, request), `${state}/${request}`).toBe('ok');
      }
    }
  });

  it('accepts start and delete of a workspace whose first build was canceled before it ran', () => {
    for (const request of ['start', 'restart', 'update', 'delete'] as const) expect(answer('stopped', 'canceled', request)).toBe('ok');
  });
});
