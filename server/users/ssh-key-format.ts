import { createHash, createPublicKey } from 'node:crypto';
import { AppError } from '../../protocol/errors.ts';

/**
 * Parses OpenSSH public keys (`ssh-ed25519 AAAA... comment`). node:crypto cannot read this
 * format, so we read the SSH wire encoding (RFC 4253 strings and mpints) ourselves, check the
 * type inside the blob matches the one outside, and let node:crypto validate the key material
 * through JWK (curve points, RSA modulus).
 */

export interface ParsedSshKey {
  type: string;
  /** `type base64` without the comment: what we store and compare */
  publicKey: string;
  comment: string;
  /** as `ssh-keygen -lf` prints it */
  fingerprint: string;
  /** RSA modulus size; undefined for other types */
  bits?: number;
}

export const MIN_RSA_BITS = 2048;

const ECDSA_CURVES: Record<string, { curve: string; jwk: string; coordinateBytes: number }> = {
  'ecdsa-sha2-nistp256': { curve: 'nistp256', jwk: 'P-256', coordinateBytes: 32 },
  'ecdsa-sha2-nistp384': { curve: 'nistp384', jwk: 'P-384', coordinateBytes: 48 },
  'ecdsa-sha2-nistp521': { curve: 'nistp521', jwk: 'P-521', coordinateBytes: 66 },
};
const SECURITY_KEY_TYPES = new Set(['sk-ssh-ed25519@openssh.com', 'sk-ecdsa-sha2-nistp256@openssh.com']);

export const SUPPORTED_SSH_KEY_TYPES = ['ssh-ed25519', 'ssh-rsa', ...Object.keys(ECDSA_CURVES), ...SECURITY_KEY_TYPES];

export function parseSshPublicKey(text: string): ParsedSshKey {
  const fields = text.trim().split(/\s+/);
  if (fields.length < 2 || fields[0] === '') {
    throw invalid('It must look like `ssh-ed25519 AAAA... comment` (the contents of a .pub file, on one line).');
  }
  const [type, encoded, ...rest] = fields;
  if (!SUPPORTED_SSH_KEY_TYPES.includes(type)) {
    throw invalid(`The key type '${type.slice(0, 40)}' is not supported; use one of ${SUPPORTED_SSH_KEY_TYPES.join(', ')}.`);
  }
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(encoded)) throw invalid('The key data is not base64.');
  const blob = Buffer.from(encoded, 'base64');
  const reader = new WireReader(blob);
  const innerType = reader.string().toString('latin1');
  if (innerType !== type) {
    throw invalid(`The key says it is '${type}' but its data holds a '${innerType.slice(0, 40)}' key.`);
  }
  const bits = readKeyMaterial(type, reader);
  if (!reader.atEnd()) throw invalid('The key data has trailing bytes.');
  return {
    type,
    publicKey: `${type} ${blob.toString('base64')}`,
    comment: rest.join(' '),
    fingerprint: sshFingerprint(blob),
    bits,
  };
}

/** `SHA256:` + unpadded base64 of the sha256 of the key blob, exactly as OpenSSH prints it. */
export function sshFingerprint(blob: Buffer): string {
  return `SHA256:${createHash('sha256').update(blob).digest('base64').replace(/=+$/, '')}`;
}

function readKeyMaterial(type: string, reader: WireReader): number | undefined {
  if (type === 'ssh-ed25519' || type === 'sk-ssh-ed25519@openssh.com') {
    const key = reader.string();
    if (key.length !== 32) throw invalid('An ed25519 key must be 32 bytes long.');
    validateJwk({ kty: 'OKP', crv: 'Ed25519', x: key.toString('base64url') });
    if (type.startsWith('sk-')) reader.string(); // the FIDO application, e.g. "ssh:"
    return undefined;
  }
  if (type === 'ssh-rsa') {
    const e = reader.mpint();
    const n = reader.mpint();
    const bits = bitLength(n);
    if (bits < MIN_RSA_BITS) throw invalid(`RSA keys must have at least ${MIN_RSA_BITS} bits; this one has ${bits}. Generate an ed25519 key with \`ssh-keygen -t ed25519\`.`);
    validateJwk({ kty: 'RSA', n: n.toString('base64url'), e: e.toString('base64url') });
    return bits;
  }
  const ecdsaType = type.startsWith('sk-') ? 'ecdsa-sha2-nistp256' : type;
  const curve = ECDSA_CURVES[ecdsaType];
  const curveName = reader.string().toString('latin1');
  if (curveName !== curve.curve) throw invalid(`The key says it uses ${curve.curve} but its data names '${curveName.slice(0, 40)}'.`);
  const point = reader.string();
  if (point.length !== 1 + 2 * curve.coordinateBytes || point[0] !== 0x04) {
    throw invalid('The ECDSA public point is not an uncompressed point of the declared curve.');
  }
  const x = point.subarray(1, 1 + curve.coordinateBytes);
  const y = point.subarray(1 + curve.coordinateBytes);
  validateJwk({ kty: 'EC', crv: curve.jwk, x: x.toString('base64url'), y: y.toString('base64url') });
  if (type.startsWith('sk-')) reader.string();
  return undefined;
}

function validateJwk(jwk: Record<string, string>): void {
  try {
    createPublicKey({ key: jwk, format: 'jwk' });
  } catch (error) {
    throw invalid('The key material is not a valid public key.', error);
  }
}

function bitLength(unsigned: Buffer): number {
  const first = unsigned.findIndex((b) => b !== 0);
  if (first < 0) return 0;
  return (unsigned.length - first - 1) * 8 + (32 - Math.clz32(unsigned[first]));
}

function invalid(reason: string, cause?: unknown): AppError {
  return new AppError('SSH_KEY_INVALID', `The SSH public key could not be read. ${reason}`, { cause });
}

/** Reads RFC 4253 `string` and `mpint` fields, refusing anything that runs past the end. */
class WireReader {
  private offset = 0;
  private readonly buffer: Buffer;

  constructor(buffer: Buffer) {
    this.buffer = buffer;
  }

  string(): Buffer {
    if (this.offset + 4 > this.buffer.length) throw invalid('The key data is truncated.');
    const length = this.buffer.readUInt32BE(this.offset);
    const start = this.offset + 4;
    if (length > this.buffer.length - start) throw invalid('The key data is truncated.');
    this.offset = start + length;
    return this.buffer.subarray(start, this.offset);
  }

  /** A positive mpint without its sign byte. */
  mpint(): Buffer {
    const value = this.string();
    if (value.length === 0 || (value[0] & 0x80) !== 0) throw invalid('The key holds a zero or negative number.');
    return value[0] === 0 ? value.subarray(1) : value;
  }

  atEnd(): boolean {
    return this.offset === this.buffer.length;
  }
}
