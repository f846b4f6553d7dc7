import { AppError } from '../../protocol/errors.ts';
import type { AgentHub } from '../agents/hub-types.ts';

/** /proc/net/tcp has one 150-byte line per socket; this is ~25,000 sockets, far beyond a dev workspace's listeners */
const MAX_PROC_NET_BYTES = 4 * 1024 * 1024;
const LISTEN_STATE = '0A';

export interface ListeningSocket {
  port: number;
  address: string;
}

/**
 * The TCP ports something listens on inside a workspace: reads /proc/net/tcp and tcp6 there
 * through the agent (an exec of `cat`, no agent change needed), at most MAX_PROC_NET_BYTES.
 * A port bound on several addresses is listed once per address. Throws AGENT_NOT_CONNECTED.
 */
export async function listeningSockets(agents: AgentHub, workspaceId: string): Promise<ListeningSocket[]> {
  const session = await agents.exec(workspaceId, { command: ['cat', '/proc/net/tcp', '/proc/net/tcp6'] });
  session.closeStdin();
  session.stderr.resume();
  const chunks: Buffer[] = [];
  let bytes = 0;
  for await (const chunk of session.stdio as AsyncIterable<Buffer>) {
    bytes += chunk.length;
    if (bytes > MAX_PROC_NET_BYTES) {
      session.kill('SIGKILL');
      throw new AppError('INTERNAL', 'The workspace has too many sockets to list its listening ports.');
    }
    chunks.push(chunk);
  }
  await session.exit;
  return parseProcNetTcp(Buffer.concat(chunks).toString('latin1'));
}

/** Parses /proc/net/tcp and tcp6 text (any number of them, headers included): the sockets in LISTEN, sorted by port. */
export function parseProcNetTcp(text: string): ListeningSocket[] {
  const seen = new Set<string>();
  const out: ListeningSocket[] = [];
  for (const line of text.split('\n')) {
    const fields = line.trim().split(/\s+/);
    // sl local_address rem_address st ...
    if (fields.length < 4 || fields[3] !== LISTEN_STATE) continue;
    const [addressHex, portHex] = fields[1].split(':');
    if (!portHex || !/^[0-9A-Fa-f]{4}$/.test(portHex)) continue;
    const address = decodeAddress(addressHex);
    if (address === undefined) continue;
    const socket = { port: Number.parseInt(portHex, 16), address };
    const key = `${socket.address} ${socket.port}`;
    if (seen.has(key)) continue;
    seen.add(key);
    out.push(socket);
  }
  return out.sort((a, b) => a.port - b.port || a.address.localeCompare(b.address));
}

/** The kernel prints addresses as 32-bit words in host (little-endian) byte order. */
function decodeAddress(hex: string): string | undefined {
  if (/^[0-9A-Fa-f]{8}$/.test(hex)) return wordBytes(hex).join('.');
  if (!/^[0-9A-Fa-f]{32}$/.test(hex)) return undefined;
  const bytes = [0, 8, 16, 24].flatMap((offset) => wordBytes(hex.slice(offset, offset + 8)));
  if (bytes.slice(0, 10).every((b) => b === 0) && bytes[10] === 255 && bytes[11] === 255) return bytes.slice(12).join('.');
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i] << 8) | bytes[i + 1]).toString(16));
  return compressIpv6(groups);
}

function wordBytes(word: string): number[] {
  return [6, 4, 2, 0].map((offset) => Number.parseInt(word.slice(offset, offset + 2), 16));
}

function compressIpv6(groups: string[]): string {
  // the longest run of zero groups (two or more) becomes '::'
  let best = { start: -1, length: 0 };
  for (let i = 0; i < groups.length; ) {
    if (groups[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < groups.length && groups[j] === '0') j++;
    if (j - i > best.length && j - i >= 2) best = { start: i, length: j - i };
    i = j;
  }
  if (best.start < 0) return groups.join(':');
  return `${groups.slice(0, best.start).join(':')}::${groups.slice(best.start + best.length).join(':')}`;
}
