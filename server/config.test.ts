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

describe('loadConfig SSH settings', () => {
  it('leaves the SSH port unset by default (den then tries 2222) and reads 0 as no SSH port', () => {
    expect(loadConfig({}, {}, undefined).sshPort).toBeUndefined();
    expect(loadConfig({}, { DEN_SSH_PORT: '0' }, undefined).sshPort).toBe(0);
    expect(loadConfig({ sshPort: '2022' }, { DEN_SSH_HOST: '0.0.0.0' }, undefined)).toMatchObject({ sshPort: 2022, sshHost: '0.0.0.0' });
  });

  it('refuses a port that is not one, naming the setting', () => {
    expect(() => loadConfig({}, { DEN_SSH_PORT: '70000' }, undefined)).toThrow(/sshPort/);
    expect(() => loadConfig({}, { DEN_SSH_PORT: 'ssh' }, undefined)).toThrow(/sshPort/);
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
