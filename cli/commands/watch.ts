import type { DenClient } from '../../client/client.ts';
import type { WorkspaceEvent } from '../../protocol/events.ts';
import { ExitCode } from '../errors.ts';
import { note, print, printJson } from '../output.ts';

/**
 * `den list --watch`: after the table, one line per change of a workspace the caller may see
 * (status, build progress, agent state), from the server's event stream, until Ctrl-C.
 */
export async function watchWorkspaces(client: DenClient, options: { all?: boolean; json?: boolean; names: Map<string, string> }): Promise<void> {
  const controller = new AbortController();
  const onInterrupt = () => controller.abort();
  process.once('SIGINT', onInterrupt);
  try {
    for await (const event of client.workspaces.watch({ signal: controller.signal })) {
      if (options.json) {
        printJson(event);
        continue;
      }
      // a workspace created since the table was printed: learn its name once
      if (!options.names.has(event.workspaceId)) {
        await learnNames(client, options);
        // not in the list (another user's, or deleted): remember the id, so later events do not ask again
        if (!options.names.has(event.workspaceId)) options.names.set(event.workspaceId, event.workspaceId);
      }
      print(describeEvent(event, options.names.get(event.workspaceId) ?? event.workspaceId));
    }
    if (!controller.signal.aborted) {
      note('The server closed the event stream (it may be restarting). Run `den list --watch` again.');
      throw new ExitCode(1);
    }
  } finally {
    process.off('SIGINT', onInterrupt);
  }
}

/** One line for people: the time, the workspace and what changed. */
export function describeEvent(event: WorkspaceEvent, name: string): string {
  const time = event.at.slice(11, 19);
  switch (event.type) {
    case 'workspace.status':
      return `${time} ${name} status ${event.status}`;
    case 'build':
      return `${time} ${name} build #${event.number} ${event.transition} ${event.step ? `step ${event.step.name} ${event.step.state}` : event.state}`;
    case 'agent':
      return `${time} ${name} agent${event.agent ? ` of service ${event.agent}` : ''} ${event.state}${event.message ? `: ${event.message}` : ''}`;
  }
}

async function learnNames(client: DenClient, options: { all?: boolean; names: Map<string, string> }): Promise<void> {
  const { workspaces } = await client.workspaces.list({ all: options.all, limit: 500 }).catch(() => ({ workspaces: [] }));
  for (const workspace of workspaces) options.names.set(workspace.id, `${workspace.owner}/${workspace.name}`);
}
