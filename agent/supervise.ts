import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { constants } from 'node:os';

/**
 * `afterSync: restart` on docker (ADR 0027). A service container's first process is docker-init,
 * and the service's command its only child: when that child ends, the container ends, and with it
 * the agent den runs beside the service (a `docker exec`) and the sync. So a service that asks
 * to be restarted after a sync runs its command under this supervisor (`agent.mjs supervise --
 * CMD...`, from the agent bundle the container already mounts; the image is unchanged): SIGHUP
 * restarts the command in place, the container and the agent stay up. The command ending by
 * itself ends the supervisor with its status, so a crash is still a crash the runtime sees.
 */

/** How long the command has to stop after SIGTERM before it is killed, at a restart. */
const STOP_GRACE_MS = 5_000;
/** How long `restart-service` waits for the new process. */
const RESTART_WAIT_MS = STOP_GRACE_MS + 5_000;
const POLL_MS = 50;
export const SUPERVISE_ARG = 'supervise';

export function supervise(command: string[]): void {
  if (command.length === 0) {
    process.stderr.write('den supervisor: no command to run; the den server passes the service\'s command after --.\n');
    process.exit(2);
  }
  let child: ChildProcess;
  let restarting = false;
  const start = () => {
    // its own process group, so a restart stops what it started too (sh -c 'npm start' -> node)
    const started = spawn(command[0], command.slice(1), { stdio: 'inherit', detached: true });
    child = started;
    started.on('error', (error) => {
      process.stderr.write(`den supervisor: ${command[0]} could not start: ${error.message}\n`);
      process.exit(127);
    });
    started.on('exit', (code, signal) => {
      if (restarting) {
        restarting = false;
        return start();
      }
      process.exit(code ?? 128 + (signal ? constants.signals[signal] : 0));
    });
  };
  const signalGroup = (target: ChildProcess, signal: NodeJS.Signals) => {
    try {
      process.kill(-target.pid!, signal);
    } catch {
      // already gone
    }
  };
  process.on('SIGHUP', () => {
    if (restarting) return;
    restarting = true;
    const stopping = child;
    signalGroup(stopping, 'SIGTERM');
    const kill = setTimeout(() => signalGroup(stopping, 'SIGKILL'), STOP_GRACE_MS);
    stopping.once('exit', () => clearTimeout(kill));
  });
  for (const signal of ['SIGTERM', 'SIGINT'] as const) process.on(signal, () => signalGroup(child, signal));
  start();
}

/**
 * `agent.mjs restart-service`, run through the service's agent: asks the supervisor in this
 * container to restart the service's command, waits for the new process and prints
 * `{"previous": PID, "pid": PID}`. Exits 1 with a sentence when there is no supervisor or no new
 * process came.
 */
export async function restartService(): Promise<number> {
  const supervisor = findSupervisor();
  if (supervisor === undefined) {
    process.stderr.write('No den supervisor runs in this container, so the service cannot be restarted in place; the template needs `afterSync: restart` and the workspace a restart to take it.\n');
    return 1;
  }
  const previous = childOf(supervisor);
  process.kill(supervisor, 'SIGHUP');
  const deadline = Date.now() + RESTART_WAIT_MS;
  for (;;) {
    const pid = childOf(supervisor);
    if (pid !== undefined && pid !== previous) {
      process.stdout.write(`${JSON.stringify({ previous: previous ?? null, pid })}\n`);
      return 0;
    }
    if (Date.now() > deadline) {
      process.stderr.write(`The service's process did not come back within ${RESTART_WAIT_MS / 1000} s of the restart; see \`den env logs\`.\n`);
      return 1;
    }
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

/** The supervisor's pid: the process whose argv is `node .../agent.mjs supervise ...`. */
function findSupervisor(): number | undefined {
  for (const pid of processIds()) {
    if (pid === process.pid) continue;
    const argv = read(`/proc/${pid}/cmdline`)?.split('\0');
    if (argv?.[2] === SUPERVISE_ARG && /agent\.mjs$|main\.ts$/.test(argv[1] ?? '')) return pid;
  }
  return undefined;
}

/** The supervisor's child (the service's command), by the parent pid in /proc/PID/stat. */
function childOf(parent: number): number | undefined {
  for (const pid of processIds()) {
    const stat = read(`/proc/${pid}/stat`);
    // the command name (field 2) is in parentheses and may hold spaces: the fields after it are plain
    const ppid = stat === undefined ? undefined : Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    if (ppid === parent) return pid;
  }
  return undefined;
}

function processIds(): number[] {
  return readdirSync('/proc').filter((name) => /^\d+$/.test(name)).map(Number);
}

function read(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}
