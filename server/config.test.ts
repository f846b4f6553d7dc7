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

describe('loadConfig kubernetes settings', () => {
  it('reads the kubeconfig, context, agent URL and downloader image from the environment, flags winning', () => {
    const config = loadConfig({ kubeContext: 'from-flag' }, {
      DEN_KUBECONFIG: '/etc/den/kubeconfig', DEN_KUBE_CONTEXT: 'from-env', DEN_AGENT_ACCESS_URL: 'http://den.den-system.svc:7080', DEN_KUBE_DOWNLOADER_IMAGE: 'registry.local/busybox:1.37',
    }, undefined);
    expect(config).toMatchObject({
      kubeconfig: '/etc/den/kubeconfig', kubeContext: 'from-flag', agentAccessUrl: 'http://den.den-system.svc:7080', kubeDownloaderImage: 'registry.local/busybox:1.37',
    });
    expect(loadConfig({}, {}, undefined).kubeDownloaderImage).toBe('busybox:1.37');
  });

  it('refuses an agent URL that is not a URL', () => {
    expect(() => loadConfig({}, { DEN_AGENT_ACCESS_URL: 'not a url' }, undefined)).toThrow(/agentAccessUrl/);
  });
});
