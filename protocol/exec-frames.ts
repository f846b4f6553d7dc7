/**
 * The binary framing of the exec websocket (see ./exec.ts for the protocol). Kept apart from
 * the zod schemas so `den exec` can frame stdin and stdout without loading zod, which is a
 * large part of the CLI's start-up.
 */
export const EXEC_STREAM = { stdin: 0, stdout: 1, stderr: 2 } as const;

/** Prefixes `payload` with its stream byte. */
export function encodeExecData(stream: number, payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(payload.byteLength + 1);
  out[0] = stream;
  out.set(payload, 1);
  return out;
}

/** Splits a binary exec message; undefined when it is empty or names an unknown stream. */
export function decodeExecData(message: Uint8Array): { stream: number; payload: Uint8Array } | undefined {
  if (message.byteLength < 1 || message[0] > EXEC_STREAM.stderr) return undefined;
  return { stream: message[0], payload: message.subarray(1) };
}
