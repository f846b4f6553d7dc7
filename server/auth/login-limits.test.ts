import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { loadConfig } from '../config.ts';
import { startTestServer, type TestServer } from '../../test/support/harness.ts';
import { api, setupOwner, TEST_PASSWORD } from '../../test/support/users.ts';
import { ADDRESS_FAILURES_PER_MINUTE, addressKey, createLoginLimits, type LoginLimits } from './login-limits.ts';
import { createPasswordGate } from './password-gate.ts';

// Real server, real scrypt. The limit state lives in the process, not the store, so one store
// dialect is enough here. Smaller numbers than den's defaults keep the runs short; the
// behaviour is the same.
const TEST_LIMITS = { addressFailuresPerMinute: 5, freeFailures: 2, firstDelayMs: 500, maxDelayMs: 1_000 } as const;
/** How long a test waits for a login to reach the password gate's queue. */
const QUEUE_TIMEOUT_MS = 10_000;

// Documentation addresses (RFC 5737), sent as X-Forwarded-For through a trusted proxy: no
// traffic goes to them.
const SPRAYER = '203.0.113.10';
const ALICE_ADDRESS = '198.51.100.1';
const CAROL_HOME = '198.51.100.2';
const CAROL_PHONE = '198.51.100.3';
const attacker = (n: number) => `203.0.113.${100 + n}`;

interface Answer {
  status: number;
  code?: string;
  message?: string;
  retryAfter?: string;
}

async function login(app: FastifyInstance, username: string, password: string, forwardedFor?: string): Promise<Answer> {
  const response = await app.inject({
    method: 'POST',
    url: '/api/v1/auth/login',
    headers: forwardedFor ? { 'x-forwarded-for': forwardedFor } : {},
    payload: { username, password, token: { name: 'limits' } },
  });
  const body = response.json();
  return { status: response.statusCode, code: body.error?.code, message: body.error?.message, retryAfter: response.headers['retry-after'] as string | undefined };
}

function expectRateLimited(answer: Answer, message: RegExp): void {
  expect({ status: answer.status, code: answer.code }).toEqual({ status: 429, code: 'RATE_LIMITED' });
  expect(answer.message).toMatch(message);
  expect(Number(answer.retryAfter)).toBeGreaterThanOrEqual(1);
}

const FROM_ADDRESS = /^Too many failed logins from your address\. Wait \d+ seconds? and try again\.$/;
const ACCOUNT_SLOWED = /^This account has had many failed logins, so its logins are slowed down\. Wait \d+ seconds? and try again\.$/;
const SERVER_BUSY = /^The server is busy checking other logins\. Try again in a second\.$/;

describe('login limits behind a trusted proxy', () => {
  let server: TestServer;
  let limits: LoginLimits;

  beforeAll(async () => {
    limits = createLoginLimits({ ...TEST_LIMITS, gate: createPasswordGate({ concurrency: 1, reserved: 1, queueLimit: 2 }) });
    server = await startTestServer({ startWorkers: false, config: { trustedProxies: ['127.0.0.1'] }, loginLimits: limits });
    const owner = await setupOwner(server.app);
    for (const username of ['alice', 'carol']) {
      expect((await api(server.app, owner.token).post('/api/v1/users', { username, password: TEST_PASSWORD })).status).toBe(201);
    }
  });
  afterAll(async () => {
    await server?.close();
  });

  it('answers a spray over unknown usernames from one address with 429 RATE_LIMITED after the limit, while another address signs in', async () => {
    const [spray, alice] = await Promise.all([
      Promise.all(Array.from({ length: 30 }, (_, i) => login(server.app, `spray-${i}`, 'wrong-password', SPRAYER))),
      login(server.app, 'alice', TEST_PASSWORD, ALICE_ADDRESS),
    ]);
    expect(alice.status).toBe(200);
    for (const answer of spray) {
      if (answer.status === 429) expectRateLimited(answer, answer.message?.startsWith('Too many') ? FROM_ADDRESS : SERVER_BUSY);
      else expect(answer.code).toBe('INVALID_CREDENTIALS');
    }

    // one at a time now: exactly the limit's worth of failures get a password check
    let failures = spray.filter((answer) => answer.status === 401).length;
    let last: Answer;
    do {
      last = await login(server.app, `spray-more-${failures}`, 'wrong-password', SPRAYER);
      if (last.status === 401) failures++;
    } while (last.status === 401 && failures <= TEST_LIMITS.addressFailuresPerMinute);
    expect(failures).toBe(TEST_LIMITS.addressFailuresPerMinute);
    expectRateLimited(last, FROM_ADDRESS);
    // the spraying address is refused even for a real account
    expectRateLimited(await login(server.app, 'carol', TEST_PASSWORD, SPRAYER), FROM_ADDRESS);
    expect((await login(server.app, 'alice', TEST_PASSWORD, ALICE_ADDRESS)).status).toBe(200);
  });

  it('slows an account targeted from many addresses without locking its owner out', async () => {
    expect((await login(server.app, 'carol', TEST_PASSWORD, CAROL_HOME)).status).toBe(200);
    // failures from one address, one at a time, until carol's attempts are paced at the longest delay
    for (let i = 0; i <= TEST_LIMITS.freeFailures; i++) {
      expect((await login(server.app, 'carol', 'wrong-password', attacker(0))).status).toBe(401);
    }

    // a burst from many addresses: one attempt per delay gets a password check, the rest are
    // refused at once; carol, from an address she signed in from before, is not held up
    const [burst, fromHome] = await Promise.all([
      Promise.all(Array.from({ length: 8 }, (_, i) => login(server.app, 'carol', 'wrong-password', attacker(i + 1)))),
      login(server.app, 'carol', TEST_PASSWORD, CAROL_HOME),
    ]);
    expect(fromHome.status).toBe(200);
    const refused = burst.filter((answer) => answer.status === 429);
    expect(refused.length).toBeGreaterThan(0);
    for (const answer of refused) expectRateLimited(answer, ACCOUNT_SLOWED);
    for (const answer of burst.filter((a) => a.status !== 429)) expect(answer.code).toBe('INVALID_CREDENTIALS');

    // slowed, not locked: the right password from an address carol never used still signs in
    expect((await login(server.app, 'carol', TEST_PASSWORD, CAROL_PHONE)).status).toBe(200);
  });

  it('caps concurrent password checks: a full queue answers at once with 429, a clean address goes ahead of a spraying one, and a known address is not held up', async () => {
    expect((await login(server.app, 'alice', TEST_PASSWORD, ALICE_ADDRESS)).status).toBe(200);
    // hold the only general place, so the logins below can only queue
    let release!: () => void;
    const held = limits.gate.run(1, () => new Promise<void>((resolve) => { release = resolve; }));

    const first = login(server.app, 'unknown-1', 'wrong-password', attacker(20));
    await vi.waitFor(() => expect(limits.gate.waiting).toBe(1), { timeout: QUEUE_TIMEOUT_MS, interval: 5 });
    const second = login(server.app, 'unknown-2', 'wrong-password', attacker(20));
    await vi.waitFor(() => expect(limits.gate.waiting).toBe(2), { timeout: QUEUE_TIMEOUT_MS, interval: 5 });
    // the queue is full: answered while the place is still held, so without any scrypt
    expectRateLimited(await login(server.app, 'unknown-3', 'wrong-password', attacker(20)), SERVER_BUSY);
    // an address with fewer attempts takes the place of the spraying address's last one
    const clean = login(server.app, 'unknown-4', 'wrong-password', attacker(21));
    expectRateLimited(await second, SERVER_BUSY);
    // an address alice signed in from before has a place of its own
    expect((await login(server.app, 'alice', TEST_PASSWORD, ALICE_ADDRESS)).status).toBe(200);

    release();
    await held;
    expect((await first).status).toBe(401);
    expect((await clean).status).toBe(401);

    // a burst from distinct addresses: every answer is a 401 or a 429, and no more checks than
    // the places ever overlap
    const burst = await Promise.all(Array.from({ length: 12 }, (_, i) => login(server.app, `burst-${i}`, 'wrong-password', attacker(30 + i))));
    for (const answer of burst) expect([401, 429]).toContain(answer.status);
    expect(burst.some((answer) => answer.status === 429)).toBe(true);
    expect(limits.gate.peak).toBe(2);
  });
});

describe('login limits without a trusted proxy', () => {
  let server: TestServer;

  beforeAll(async () => {
    server = await startTestServer({ startWorkers: false, loginLimits: createLoginLimits(TEST_LIMITS) });
    await setupOwner(server.app);
  });
  afterAll(async () => {
    await server?.close();
  });

  it('ignores X-Forwarded-For, so a client cannot pick a fresh address for each attempt', async () => {
    for (let i = 0; i < TEST_LIMITS.addressFailuresPerMinute; i++) {
      expect((await login(server.app, `spray-${i}`, 'wrong-password', attacker(i))).status).toBe(401);
    }
    expectRateLimited(await login(server.app, 'spray-last', 'wrong-password', attacker(99)), FROM_ADDRESS);
  });
});

describe("login limits with den's defaults", () => {
  let server: TestServer;

  beforeAll(async () => {
    server = await startTestServer({ startWorkers: false });
    // a server with users (one without any answers SETUP_REQUIRED, counted all the same)
    await setupOwner(server.app);
  });
  afterAll(async () => {
    await server?.close();
  });

  it('refuses the 21st failure a minute from one address and counts the refusal in /metrics', async () => {
    for (let i = 0; i < ADDRESS_FAILURES_PER_MINUTE; i++) {
      expect((await login(server.app, `nobody-${i}`, 'wrong-password')).status).toBe(401);
    }
    expectRateLimited(await login(server.app, 'nobody-else', 'wrong-password'), FROM_ADDRESS);
    const metrics = await server.app.inject({ method: 'GET', url: '/metrics' });
    expect(metrics.body).toContain('den_login_refused_total{reason="address"} 1');
  });
});

describe('trustedProxies configuration', () => {
  it('reads a comma-separated list of addresses and CIDRs from DEN_TRUSTED_PROXIES and trusts none by default', () => {
    expect(loadConfig({}, {}).trustedProxies).toEqual([]);
    expect(loadConfig({}, { DEN_TRUSTED_PROXIES: '10.0.0.0/8, 127.0.0.1,,fd00::/8,loopback' }).trustedProxies)
      .toEqual(['10.0.0.0/8', '127.0.0.1', 'fd00::/8', 'loopback']);
  });

  it('refuses an entry that is not an address or CIDR with a sentence naming the setting', () => {
    for (const bad of ['proxy.example.com', '10.0.0.0/33', '10.0.0.1/8/1']) {
      expect(() => loadConfig({}, { DEN_TRUSTED_PROXIES: bad })).toThrow(/trustedProxies\.0: must be an IP address or CIDR/);
    }
  });
});

describe('addressKey', () => {
  it('keys IPv4 by address and IPv6 by its /64, so one host cannot rotate through its own prefix', () => {
    expect(addressKey('203.0.113.7')).toBe('203.0.113.7');
    expect(addressKey('::ffff:203.0.113.7')).toBe('203.0.113.7');
    expect(addressKey('2001:db8:1:2:aaaa::1')).toBe('2001:db8:1:2::/64');
    expect(addressKey('2001:db8:1:2:bbbb:cccc:dddd:eeee')).toBe('2001:db8:1:2::/64');
    expect(addressKey('2001:db8::1')).toBe('2001:db8:0:0::/64');
    expect(addressKey('::1')).toBe('0:0:0:0::/64');
    expect(addressKey('fe80::1%eth0')).toBe('fe80:0:0:0::/64');
  });
});
