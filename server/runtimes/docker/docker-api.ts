import type { Readable, Writable } from 'node:stream';

/**
 * The narrow slice of dockerode the docker driver uses. The driver depends on this type, not on
 * dockerode's, and the real client is injected (createDockerDriver({ docker: new Dockerode() })).
 * Only fields the driver reads are declared; dockerode returns more.
 */
export interface DockerApi {
  ping(): Promise<unknown>;
  info(): Promise<{ MemTotal?: number; NCPU?: number }>;
  createContainer(spec: ContainerSpec): Promise<ContainerApi>;
  getContainer(id: string): ContainerApi;
  listContainers(options: { all: boolean; filters: string }): Promise<ContainerSummary[]>;
  createNetwork(spec: { Name: string; Driver: string; Labels: Record<string, string>; CheckDuplicate?: boolean; Options?: Record<string, string> }): Promise<unknown>;
  getNetwork(id: string): NetworkApi;
  listNetworks(options: { filters: string }): Promise<{ Id: string; Name: string; Labels?: Record<string, string> | null }[]>;
  createVolume(spec: { Name: string; Labels: Record<string, string> }): Promise<unknown>;
  getVolume(name: string): VolumeApi;
  listVolumes(options: { filters: string }): Promise<{ Volumes?: { Name: string; Labels?: Record<string, string> | null }[] | null }>;
  getImage(name: string): { inspect(): Promise<ImageInfo> };
  pull(image: string): Promise<Readable>;
  /** the engine's event stream (GET /events), one JSON object per line, until destroyed */
  getEvents(options: { filters: string }): Promise<Readable>;
  modem: {
    followProgress(stream: Readable, onFinished: (error: Error | null, output: unknown[]) => void): void;
    demuxStream(stream: Readable, stdout: Writable, stderr: Writable): void;
  };
}

export interface ContainerSpec {
  name: string;
  Image: string;
  Entrypoint?: string[];
  Cmd?: string[];
  Env?: string[];
  User?: string;
  WorkingDir?: string;
  Hostname?: string;
  Labels: Record<string, string>;
  HostConfig: {
    Mounts?: { Type: 'volume'; Source: string; Target: string; ReadOnly?: boolean; VolumeOptions?: { NoCopy?: boolean } }[];
    NetworkMode?: string;
    NanoCpus?: number;
    Memory?: number;
    MemorySwap?: number;
    PidsLimit?: number;
    Privileged?: boolean;
    ExtraHosts?: string[];
    DnsOptions?: string[];
    Init?: boolean;
    SecurityOpt?: string[];
    LogConfig?: { Type: string; Config: Record<string, string> };
  };
  NetworkingConfig?: { EndpointsConfig: Record<string, { Aliases?: string[] }> };
}

export interface ContainerApi {
  id: string;
  start(): Promise<unknown>;
  stop(options?: { t: number }): Promise<unknown>;
  remove(options?: { force?: boolean; v?: boolean }): Promise<unknown>;
  inspect(): Promise<ContainerInfo>;
  wait(): Promise<{ StatusCode: number }>;
  logs(options: { follow: true; stdout: boolean; stderr: boolean; since?: number; tail?: number; timestamps?: boolean }): Promise<Readable>;
  logs(options: { follow?: false; stdout: boolean; stderr: boolean; tail?: number; timestamps?: boolean }): Promise<Buffer>;
  exec(options: { Cmd: string[]; AttachStdout: boolean; AttachStderr: boolean; User?: string; Env?: string[] }): Promise<ExecApi>;
  /** the container's processes as the host's ps shows them (one row of `Titles` columns each) */
  top(options: { ps_args: string }): Promise<{ Titles: string[]; Processes: string[][] }>;
  putArchive(file: Readable, options: { path: string }): Promise<unknown>;
  getArchive(options: { path: string }): Promise<Readable>;
}

export interface ExecApi {
  start(options: { hijack?: boolean; stdin?: boolean; Detach?: boolean }): Promise<Readable>;
  inspect(): Promise<{ ExitCode: number | null; Running: boolean }>;
}

export interface NetworkApi {
  inspect(): Promise<NetworkInfo>;
  remove(): Promise<unknown>;
}

export interface NetworkInfo {
  Name: string;
  Labels?: Record<string, string> | null;
  Options?: Record<string, string> | null;
  IPAM?: { Config?: { Gateway?: string; Subnet?: string }[] | null } | null;
}

export interface VolumeApi {
  inspect(): Promise<{ Name: string; Labels?: Record<string, string> | null }>;
  remove(): Promise<unknown>;
}

export interface ContainerSummary {
  Id: string;
  Names: string[];
  Labels: Record<string, string>;
  State: string;
}

export interface ContainerInfo {
  Id: string;
  Name: string;
  Config: { Labels?: Record<string, string> | null; Image: string; Env?: string[] | null; User?: string; WorkingDir?: string };
  State: { Status: string; Running: boolean; ExitCode: number; OOMKilled: boolean; Error?: string };
  NetworkSettings: { Networks?: Record<string, { IPAddress?: string }> | null };
}

export interface ImageInfo {
  Id: string;
  Config?: { Labels?: Record<string, string> | null } | null;
}

/** HTTP status of a dockerode error (404 for "no such container", 409 for conflicts). */
export function statusOf(error: unknown): number | undefined {
  const code = (error as { statusCode?: unknown } | null)?.statusCode;
  return typeof code === 'number' ? code : undefined;
}

/** True when the engine itself did not answer (socket gone, daemon stopped mid-build). */
export function isEngineUnreachable(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return code === 'ECONNREFUSED' || code === 'ENOENT' || code === 'ECONNRESET' || code === 'EPIPE'
    || /socket hang up/i.test((error as Error | null)?.message ?? '');
}

/** The engine's own message without dockerode's "(HTTP code 404) no such container -" prefix. */
export function engineMessage(error: unknown): string {
  const json = (error as { json?: { message?: unknown } } | null)?.json;
  const message = typeof json?.message === 'string' ? json.message : (error as Error | null)?.message ?? String(error);
  return message.replace(/^\(HTTP code \d+\)\s*[^-]*-\s*/, '').trim().replace(/\.$/, '');
}

/** Ignores "not found" (idempotent removes and stops); rethrows everything else. */
export async function ignoreMissing<T>(work: Promise<T>): Promise<T | undefined> {
  try {
    return await work;
  } catch (error) {
    if (statusOf(error) === 404 || statusOf(error) === 304) return undefined;
    throw error;
  }
}
