import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from './config.ts';

describe('loadConfig booleans', () => {
  it.each(['false', 'FALSE', '0', 'no', 'No', 'off', ' off '])('reads DEN_REQUIRE_SANDBOX=%j as false', (raw) => {
    expect(loadConfig({}, { DEN_REQUIRE_SANDBOX: raw }, undefined).requireSandbox).toBe(false);
  });

  it.each(['true', 'True', '1', 'yes', 'ON'])('reads DEN_REQUIRE_SANDBOX=%j as true', (raw) => {
    expect(loadConfig({}, { DEN_REQUIRE_SANDBOX: raw }, undefined).requireSandbox).toBe(true);
  });

  it('keeps YAML booleans and defaults to false', () => {
    expect(loadConfig({ requireSandbox: true }, {}, undefined).requireSandbox).toBe(true);
    expect(loadConfig({}, {}, undefined).requireSandbox).toBe(false);
  });

  it('refuses a word that is not a boolean, with a sentence naming the setting', () => {
    expect(() => loadConfig({}, { DEN_REQUIRE_SANDBOX: 'maybe' }, undefined)).toThrow(ConfigError);
    expect(() => loadConfig({}, { DEN_REQUIRE_SANDBOX: 'maybe' }, undefined)).toThrow(/requireSandbox: Use true or false/);
  });
});
