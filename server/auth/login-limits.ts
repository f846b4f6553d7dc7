import { isIPv4, isIPv6 } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { AppError } from '../../protocol/errors.ts';
import { createInMemoryLoginLimitState, type LoginLimitState } from './login-limit-state.ts';
import { createPasswordGate, isGateRefusal, type PasswordGate } from './password-gate.ts';

/**
 * What a login attempt must pass before its password is checked, and what its outcome leaves
 * behind. Three limits, each against a different attacker:
 *
 * - per client address, across usernames: a spray over many usernames from one address is
 *   refused (429 with Retry-After) after `addressFailuresPerMinute` failures;
 * - per account, across addresses: after `freeFailures` failures an account's attempts are paced,
 *   one per delay that doubles with each failure up to `maxDelayMs`, however many addresses they
 *   come from. Attempts that would wait longer than that are refused at once, so an attacker
 *   cannot park work on the server. The account is slowed, not locked: its owner's attempt gets
 *   the next slot, and an address the account signed in from before has a lane of its own, paced
 *   only by its own failures, so an attacker elsewhere cannot hold the owner up at all;
 * - per process: the password gate bounds the scrypt work running at once (see password-gate.ts).
 *
 * Unknown usernames go through the same limits and the same (dummy) scrypt as known ones, so
 * neither the answers nor their timing tell which usernames exist.
 */
export interface LoginLimits {
  /**
   * Runs `verify` (find the user, check the password; undefined when they do not match) under the
   * limits, and records its outcome. Throws AppError RATE_LIMITED when a limit refuses the attempt.
   */
  attempt<T>(client: LoginClient, verify: () => Promise<T | undefined>): Promise<T | undefined>;
  readonly gate: PasswordGate;
}

export interface LoginClient {
  /** the client's address as Fastify reports it (`request.ip`, after trusted proxies) */
  address: string;
  /** the normalised username the attempt is for */
  username: string;
}

export interface LoginLimitOptions {
  /** failure counts and pacing */
  state?: LoginLimitState;
  /**
   * which addresses signed in to which accounts: apart from `state`, because only a right
   * password adds here, so a flood of new keys there cannot push a user out of their own lane
   */
  knownAddresses?: LoginLimitState;
  gate?: PasswordGate;
  /** milliseconds since the epoch */
  now?: () => number;
  addressFailuresPerMinute?: number;
  freeFailures?: number;
  firstDelayMs?: number;
  maxDelayMs?: number;
  /** how long an account's failures count */
  accountWindowMs?: number;
  /** how long an address that signed in to an account keeps its own lane */
  knownAddressMs?: number;
  /** told of every refusal (for metrics) */
  onRefused?: (reason: LoginRefusal) => void;
}

export type LoginRefusal = 'address' | 'account' | 'busy';

/** Enough for a person mistyping across a few accounts (or a small office behind one address). */
export const ADDRESS_FAILURES_PER_MINUTE = 20;
/** An account's failures before its attempts are paced. */
export const FREE_FAILURES = 5;
export const FIRST_DELAY_MS = 250;
/** Bounds both the pacing and how long an attempt may wait for its slot: guessing one account
 * from any number of addresses gets at most one try per this long. */
export const MAX_DELAY_MS = 3_000;
export const ACCOUNT_WINDOW_MS = 15 * 60_000;
export const KNOWN_ADDRESS_MS = 30 * 24 * 3_600_000;
const MINUTE_MS = 60_000;

export function createLoginLimits(options: LoginLimitOptions = {}): LoginLimits {
  const state = options.state ?? createInMemoryLoginLimitState();
  const knownAddresses = options.knownAddresses ?? createInMemoryLoginLimitState();
  const gate = options.gate ?? createPasswordGate();
  const now = options.now ?? Date.now;
  const addressLimit = options.addressFailuresPerMinute ?? ADDRESS_FAILURES_PER_MINUTE;
  const freeFailures = options.freeFailures ?? FREE_FAILURES;
  const firstDelayMs = options.firstDelayMs ?? FIRST_DELAY_MS;
  const maxDelayMs = options.maxDelayMs ?? MAX_DELAY_MS;
  const accountWindowMs = options.accountWindowMs ?? ACCOUNT_WINDOW_MS;
  const knownAddressMs = options.knownAddressMs ?? KNOWN_ADDRESS_MS;
  const refused = (reason: LoginRefusal, error: AppError): AppError => {
    options.onRefused?.(reason);
    return error;
  };

  const delayAfter = (failures: number): number =>
    failures < freeFailures ? 0 : Math.min(maxDelayMs, firstDelayMs * 2 ** (failures - freeFailures));

  return {
    gate,
    async attempt(client, verify) {
      const address = addressKey(client.address);
      const knownKey = key(client.username, address);
      const addressKeyName = key('address', address);
      // One lane per account for the world, and one per address the account signed in from.
      // The address limit still applies to a known address: behind an unconfigured proxy every
      // address is known for every account, and an exemption would lift the limit for a spray.
      const known = (await knownAddresses.add(knownKey, 0, knownAddressMs, now())).count > 0;
      const lane = known ? [client.username, address] : [client.username];

      // Counted on arrival, not after the check, so a burst cannot pass the limit all at once;
      // given back unless the attempt fails its password check.
      const fromAddress = await state.add(addressKeyName, 1, MINUTE_MS, now());
      let failed = false;
      try {
        if (fromAddress.count > addressLimit) {
          const seconds = secondsUntil(fromAddress.resetsAt, now());
          throw refused('address', new AppError('RATE_LIMITED', `Too many failed logins from your address. Wait ${plural(seconds, 'second')} and try again.`, { retryAfterSeconds: seconds }));
        }
        const failures = (await state.add(key('failures', ...lane), 0, accountWindowMs, now())).count;
        const slot = await state.reserveSlot(key('pace', ...lane), delayAfter(failures), maxDelayMs, now());
        if (!slot.reserved) {
          const seconds = Math.max(1, Math.ceil(slot.waitMs / 1000));
          throw refused('account', new AppError('RATE_LIMITED', `This account has had many failed logins, so its logins are slowed down. Wait ${plural(seconds, 'second')} and try again.`, { retryAfterSeconds: seconds }));
        }
        if (slot.waitMs > 0) await sleep(slot.waitMs);
        // A known address goes first; otherwise the fewer attempts this minute, refused ones
        // included (the address count gives those back), the sooner: a client trying for the
        // first time goes ahead of addresses that keep retrying.
        const attempts = (await state.add(key('attempts', address), 1, MINUTE_MS, now())).count;
        const result = await gate.run(known ? 0 : attempts, verify).catch((error: unknown) => {
          throw isGateRefusal(error) ? refused('busy', error) : error;
        });
        if (result === undefined) {
          failed = true;
          await state.add(key('failures', client.username), 1, accountWindowMs, now());
          if (known) await state.add(key('failures', ...lane), 1, accountWindowMs, now());
        } else {
          await knownAddresses.add(knownKey, 1, knownAddressMs, now());
        }
        return result;
      } finally {
        if (!failed) await state.add(addressKeyName, -1, MINUTE_MS, now());
      }
    },
  };
}

/**
 * The part of a client address that one client controls: the address itself for IPv4, the /64
 * for IPv6 (one host usually holds a whole /64, and would otherwise get a fresh limit per address).
 */
export function addressKey(ip: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  if (mapped) return mapped[1];
  // String(): a socket closed before Fastify read its address has none
  const bare = String(ip).split('%')[0];
  if (isIPv4(bare) || !isIPv6(bare)) return bare;
  const groups = (part: string): string[] =>
    part === '' ? [] : part.split(':').flatMap((group) => (group.includes('.') ? ['0', '0'] : [group]));
  const [head, tail] = bare.split('::');
  const headGroups = groups(head);
  const all = tail === undefined
    ? headGroups
    : [...headGroups, ...Array<string>(8 - headGroups.length - groups(tail).length).fill('0'), ...groups(tail)];
  return `${all.slice(0, 4).map((group) => parseInt(group, 16).toString(16)).join(':')}::/64`;
}

/** Login input is any string up to 64 characters, so keys are JSON: no username can pose as another key. */
function key(...parts: string[]): string {
  return JSON.stringify(parts);
}

function secondsUntil(at: number, now: number): number {
  return Math.max(1, Math.ceil((at - now) / 1000));
}

function plural(count: number, noun: string): string {
  return `${count} ${noun}${count === 1 ? '' : 's'}`;
}
