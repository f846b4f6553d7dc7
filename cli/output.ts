/**
 * Everything the CLI prints goes through here: aligned tables for people, JSON for scripts,
 * and durations/ages in one format. Results go to stdout, progress and errors to stderr.
 */

export interface Column<Row> {
  header: string;
  value: (row: Row) => string | number | boolean | null | undefined;
  /** right-align (numbers, durations) */
  align?: 'left' | 'right';
}

/** Renders rows as a table whose columns are as wide as their widest cell, separated by two spaces. */
export function renderTable<Row>(rows: readonly Row[], columns: readonly Column<Row>[]): string {
  const cells = rows.map((row) => columns.map((column) => cellText(column.value(row))));
  const widths = columns.map((column, index) =>
    Math.max(displayWidth(column.header), ...cells.map((line) => displayWidth(line[index]))),
  );
  const render = (line: string[]) =>
    line
      .map((text, index) => {
        const last = index === line.length - 1;
        const pad = ' '.repeat(widths[index] - displayWidth(text));
        if (columns[index].align === 'right') return pad + text;
        return last ? text : text + pad;
      })
      .join('  ')
      .trimEnd();
  return [render(columns.map((column) => column.header.toUpperCase())), ...cells.map(render)].join('\n') + '\n';
}

/** Prints a table, or a sentence when there is nothing to show (an empty table looks like an error). */
export function printTable<Row>(rows: readonly Row[], columns: readonly Column<Row>[], empty: string): void {
  process.stdout.write(rows.length === 0 ? `${empty}\n` : renderTable(rows, columns));
}

/** `key: value` lines with the keys aligned, for `show` commands. */
export function renderFields(fields: readonly [string, string | number | boolean | null | undefined][]): string {
  const width = Math.max(...fields.map(([key]) => key.length)) + 1;
  return fields.map(([key, value]) => `${`${key}:`.padEnd(width)} ${cellText(value)}`.trimEnd()).join('\n') + '\n';
}

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

export function print(text: string): void {
  process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
}

/** Progress and notes for people; on stderr so `--json` output and pipes stay clean. */
export function note(text: string): void {
  process.stderr.write(text.endsWith('\n') ? text : `${text}\n`);
}

/** 850ms, 1.2s, 3m04s, 2h10m */
export function formatDuration(ms: number | null | undefined): string {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return '-';
  if (ms < 1000) return `${Math.round(ms)}ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)}s`;
  const seconds = Math.round(ms / 1000);
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m${String(seconds % 60).padStart(2, '0')}s`;
  return `${Math.floor(seconds / 3600)}h${String(Math.floor((seconds % 3600) / 60)).padStart(2, '0')}m`;
}

/** How long ago an ISO timestamp was: "just now", "5m ago", "3d ago". */
export function formatAge(iso: string | null | undefined, now = Date.now()): string {
  if (!iso) return '-';
  const then = Date.parse(iso);
  if (Number.isNaN(then)) return iso;
  const seconds = Math.max(0, Math.round((now - then) / 1000));
  if (seconds < 10) return 'just now';
  if (seconds < 60) return `${seconds}s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m ago`;
  if (seconds < 86_400) return `${Math.floor(seconds / 3600)}h ago`;
  return `${Math.floor(seconds / 86_400)}d ago`;
}

function cellText(value: string | number | boolean | null | undefined): string {
  if (value === null || value === undefined || value === '') return '-';
  if (typeof value === 'boolean') return value ? 'yes' : 'no';
  // A newline would break the alignment of every following row.
  return String(value).replace(/\s*\n\s*/g, ' ');
}

function displayWidth(text: string): number {
  // Code points, not UTF-16 units: names with accents or emoji stay aligned well enough.
  return [...text].length;
}
