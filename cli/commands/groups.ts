import { connect } from '../context.ts';
import { formatAge, print, printJson, printTable, renderFields } from '../output.ts';

/** `den groups list|show|create|delete|add|remove|history`. */
export async function listGroups(options: { json?: boolean }): Promise<void> {
  const { groups } = await connect().client.groups.list();
  if (options.json) return printJson(groups);
  printTable(groups, [
    { header: 'group', value: (g) => g.name },
    { header: 'members', value: (g) => String(g.members) },
    { header: 'description', value: (g) => g.description },
    { header: 'created', value: (g) => `${formatAge(g.createdAt)} by ${g.createdBy}` },
  ], 'There are no groups. An owner creates one with `den groups create NAME`.');
}

export async function showGroup(name: string, options: { json?: boolean }): Promise<void> {
  const group = await connect().client.groups.get(name);
  if (options.json) return printJson(group);
  print(renderFields([
    ['group', group.name],
    ['description', group.description || '-'],
    ['created', `${group.createdAt} (${formatAge(group.createdAt)}) by ${group.createdBy}`],
  ]));
  print('');
  printTable(group.members, [
    { header: 'member', value: (m) => m.user },
    { header: 'added', value: (m) => `${formatAge(m.addedAt)} by ${m.addedBy}` },
  ], `The group has no members yet. Add some with \`den groups add ${group.name} USER...\`.`);
}

export async function createGroup(name: string, options: { description?: string }): Promise<void> {
  await connect().client.groups.create({ name, ...(options.description !== undefined ? { description: options.description } : {}) });
  print(`Created the group ${name}. Add members with \`den groups add ${name} USER...\`.`);
}

export async function deleteGroup(name: string): Promise<void> {
  await connect().client.groups.delete(name);
  print(`Deleted the group ${name}; its members no longer see what it was granted.`);
}

export async function addMembers(name: string, users: string[]): Promise<void> {
  const session = connect();
  for (const user of users) await session.client.groups.addMember(name, user);
  print(`${users.join(', ')} ${users.length === 1 ? 'is' : 'are'} in the group ${name}.`);
}

export async function removeMembers(name: string, users: string[]): Promise<void> {
  const session = connect();
  for (const user of users) await session.client.groups.removeMember(name, user);
  print(`Removed ${users.join(', ')} from the group ${name}.`);
}

export async function groupHistory(name: string | undefined, options: { json?: boolean }): Promise<void> {
  const { events } = await connect().client.groups.events(name !== undefined ? { group: name } : {});
  if (options.json) return printJson(events);
  printTable(events, [
    { header: 'when', value: (e) => `${e.ts} (${formatAge(e.ts)})` },
    { header: 'group', value: (e) => e.group },
    { header: 'change', value: (e) => e.message },
  ], name !== undefined ? `The group ${name} has no history.` : 'No group has been created yet.');
}
