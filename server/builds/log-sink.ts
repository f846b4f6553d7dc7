/** Where anything that produces build output (drivers, the agent's startup scripts) writes it. */
export interface BuildLogSink {
  append(buildId: string, entry: BuildLogEntry): void;
}

export interface BuildLogEntry {
  stream: 'system' | 'stdout' | 'stderr';
  /** the build step or startup script the line belongs to */
  step?: string;
  line: string;
}
