import type { TerminalAttached, TerminalConnection, TerminalEnd } from '../../client/terminal.ts';
import { requireLogin } from '../config.ts';
import { connect } from '../context.ts';
import { ExitCode, UsageError } from '../errors.ts';
import { formatAge, note, printJson, printTable } from '../output.ts';
import { parseWorkspaceRef } from '../refs.ts';

/**
 * `den terminal WS`: the local terminal attached to a persistent terminal session in the workspace
 * (the same sessions as the dashboard's terminal), plus `den terminal list|close`.
 *
 * Detach with Ctrl-\ then d: the session keeps running in the workspace and `den terminal WS
 * --session ID` (or the dashboard) picks it up with its screen. Output is acknowledged only after
 * it was written to stdout, so a flood (`cat` of a large file) is paced by this terminal instead
 * of piling up in memory, and Ctrl-C answers at once.
 */

/** Ctrl-\ (FS): the first key of the detach sequence, as in `Ctrl-\ d`. */
const ESCAPE = 0x1c;
const DETACH = 'd'.charCodeAt(0);
/** Reconnect attempts after the server or link went away (4009, a dropped socket), with doubling waits. */
const RECONNECT_DELAYS_MS = [250, 500, 1_000, 2_000, 4_000, 8_000];
/** Errors on reattaching that may clear up by themselves. */
const RETRIED_CODES = new Set(['NETWORK', 'AGENT_NOT_CONNECTED']);

export interface TerminalOptions {
  session?: string;
  new?: boolean;
  command?: string;
  /** a session on the agent beside this environment service */
  service?: string;
}

export async function terminal(reference: string, options: TerminalOptions): Promise<void> {
  if (options.session && options.new) throw new UsageError('Give either --session ID (reattach) or --new (start a session), not both.');
  if (options.session && options.command) throw new UsageError('--command starts a new session; it cannot be combined with --session.');
  if (!process.stdin.isTTY || !process.stdout.isTTY) {
    throw new UsageError('den terminal needs an interactive terminal on stdin and stdout. For scripts, use `den exec WORKSPACE -- COMMAND`.');
  }
  const config = requireLogin();
  const parsed = parseWorkspaceRef(reference);
  const owner = parsed.owner ?? config.username ?? (await connect().username());
  const refText = `${owner}/${parsed.name}`;
  const sessionId = options.session ?? (options.new || options.command ? undefined : await lastDetachedSession(owner, parsed.name, options.service));
  const [{ openTerminal }, { nodeSocket }] = await Promise.all([import('../../client/terminal.ts'), import('../../client/node-socket.ts')]);

  const screen = new LocalScreen();
  const keys = new DetachKeys();
  let current: TerminalConnection | undefined;
  const open = (id: string | undefined) =>
    openTerminal({
      baseUrl: config.url,
      token: config.token,
      // `ws` reads the body of a refused upgrade: the user gets the server's sentence
      connect: nodeSocket,
      owner,
      workspace: parsed.name,
      service: options.service,
      sessionId: id,
      command: id === undefined && options.command ? ['sh', '-c', options.command] : undefined,
      cols: process.stdout.columns || 80,
      rows: process.stdout.rows || 24,
      onAttached: (attached) => {
        // raw before the screen shows: a detach key pressed as soon as it does must not meet a
        // terminal still in cooked mode (where Ctrl-\ is SIGQUIT); cooked until then, so Ctrl-C
        // still ends a connect that hangs
        process.stdin.setRawMode(true);
        screen.attached(attached, id !== undefined);
      },
      onOutput: (data, consumed) => screen.output(data, consumed),
    });

  const onInput = (chunk: Buffer) => {
    const { forward, detach } = keys.feed(chunk);
    if (forward.byteLength > 0) current?.input(forward);
    if (detach) current?.detach();
  };
  const onResize = () => current?.resize(process.stdout.columns || 80, process.stdout.rows || 24);

  current = await open(sessionId);
  const attachedId = current.attached.sessionId;
  process.stdin.on('data', onInput);
  process.stdin.resume();
  process.stdout.on('resize', onResize);
  let end: TerminalEnd;
  try {
    end = await current.ended;
    for (let attempt = 0; end.reason === 'error' && end.reconnect && attempt < RECONNECT_DELAYS_MS.length; attempt++) {
      process.stderr.write(`\r\n[den: ${end.error.message} Reconnecting...]\r\n`);
      await new Promise((resolve) => setTimeout(resolve, RECONNECT_DELAYS_MS[attempt]));
      try {
        current = await open(attachedId);
        end = await current.ended;
        attempt = -1;
      } catch (error) {
        // a server still starting, or its agent not yet reconnected, is worth the next attempt;
        // anything else (the session is gone, no access) is final and says what to do
        if (!RETRIED_CODES.has((error as { code?: string }).code ?? '')) throw error;
      }
    }
  } finally {
    process.stdin.setRawMode(false);
    process.stdin.off('data', onInput);
    process.stdout.off('resize', onResize);
    // stdin is a terminal: it would keep den alive after the session ended
    process.stdin.destroy();
    screen.restore();
  }

  if (end.reason === 'detached') {
    const name = parsed.owner ? refText : parsed.name;
    process.stderr.write(`Detached from terminal session ${attachedId} in ${refText}; it keeps running.\nReattach with: den terminal ${name}${options.service ? ` --service ${options.service}` : ''} --session ${attachedId}\n`);
    return;
  }
  if (end.reason === 'error') throw end.error;
  if (end.code !== 0) throw new ExitCode(end.code);
}

export async function list(reference: string, options: { json?: boolean; service?: string }): Promise<void> {
  const session = connect();
  const ref = await session.workspaceRef(reference);
  const { sessions } = await session.client.workspaces.terminals(ref.owner, ref.name, options.service);
  if (options.json) return printJson(sessions);
  printTable(
    sessions,
    [
      { header: 'id', value: (s) => s.id },
      { header: 'command', value: (s) => s.command.join(' ') },
      { header: 'size', value: (s) => `${s.cols}x${s.rows}` },
      { header: 'clients', value: (s) => String(s.clients) },
      { header: 'title', value: (s) => s.title ?? '' },
      { header: 'started', value: (s) => formatAge(s.createdAt) },
      { header: 'detached', value: (s) => (s.idleSince ? formatAge(s.idleSince) : '') },
    ],
    `There are no terminal sessions in ${ref.owner}/${ref.name}. Start one with \`den terminal ${reference}\`.`,
  );
}

export async function close(reference: string, id: string, options: { service?: string } = {}): Promise<void> {
  const session = connect();
  const ref = await session.workspaceRef(reference);
  await session.client.workspaces.closeTerminal(ref.owner, ref.name, id, options.service);
  note(`Closed terminal session ${id} in ${ref.owner}/${ref.name}.`);
}

/** The session to reattach to by default: the most recently detached one nobody is attached to. */
async function lastDetachedSession(owner: string, name: string, service: string | undefined): Promise<string | undefined> {
  const { sessions } = await connect().client.workspaces.terminals(owner, name, service);
  const detached = sessions.filter((session) => session.idleSince !== null).sort((a, b) => Date.parse(b.idleSince!) - Date.parse(a.idleSince!));
  return detached[0]?.id;
}

/**
 * Recognizes Ctrl-\ d in the keystrokes; Ctrl-\ Ctrl-\ sends one Ctrl-\, Ctrl-\ then anything
 * else sends both. The state survives chunk boundaries (the two keys arrive in separate reads).
 */
export class DetachKeys {
  #armed = false;

  feed(chunk: Uint8Array): { forward: Uint8Array; detach: boolean } {
    const out: number[] = [];
    for (const byte of chunk) {
      if (this.#armed) {
        this.#armed = false;
        if (byte === DETACH) return { forward: Uint8Array.from(out), detach: true };
        out.push(ESCAPE);
        if (byte !== ESCAPE) out.push(byte);
      } else if (byte === ESCAPE) {
        this.#armed = true;
      } else {
        out.push(byte);
      }
    }
    // the common case (no escape byte) forwards the chunk as it is
    return { forward: out.length === chunk.byteLength ? chunk : Uint8Array.from(out), detach: false };
  }
}

/**
 * The local terminal as the session's renderer: writes the snapshot on attach (after a reset
 * when reattaching, since it describes a whole screen), output as it comes (acknowledged in the
 * write callback), and on leaving undoes the modes a remote program may have left on (alternate
 * screen, hidden cursor, mouse reporting, bracketed paste) so the user's shell is usable again.
 */
class LocalScreen {
  #alternate = false;

  attached(attached: TerminalAttached, reattach: boolean): void {
    this.#track(attached.snapshot);
    process.stdout.write(`${reattach ? '\x1bc' : ''}${attached.snapshot}`);
    if (attached.title) process.stdout.write(`\x1b]0;${attached.title}\x07`);
  }

  output(data: Uint8Array, consumed: () => void): void {
    this.#track(data);
    process.stdout.write(data, () => consumed());
  }

  restore(): void {
    const leaveAlternate = this.#alternate ? '\x1b[?1049l' : '';
    // soft reset (cursor visible, SGR, keypad and cursor-key modes), mouse modes and bracketed paste off
    process.stdout.write(`${leaveAlternate}\x1b[!p\x1b[?25h\x1b[?1000l\x1b[?1002l\x1b[?1003l\x1b[?1006l\x1b[?2004l\r\n`);
  }

  /** Follows the alternate-screen mode (vim, less, htop) in the output; sequences split across chunks are rare enough to miss. */
  #track(data: string | Uint8Array): void {
    const text = typeof data === 'string' ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('latin1');
    if (!text.includes('\x1b[?')) return;
    for (const match of text.matchAll(/\x1b\[\?(?:1049|1047|47)([hl])/g)) this.#alternate = match[1] === 'h';
  }
}
