/**
 * Units used in templates: sizes ("512Mi", "4Gi", "10G", bytes as a number), durations
 * ("30s", "2h", "1h30m", "500ms") and CPU ("2", 0.5, "500m"). Pure; shared by the schema (which
 * checks the shape) and the plan (which turns evaluated values into numbers).
 */

/** A size: a number with an optional binary (Ki..Pi) or decimal (K..P) suffix. */
export const SIZE_PATTERN = /^\d+(\.\d+)?(Ki|Mi|Gi|Ti|Pi|K|M|G|T|P|B)?$/;

/** A duration: one or more number+unit pairs, largest first by convention ("1h30m"). */
export const DURATION_PATTERN = /^(\d+(\.\d+)?(ms|s|m|h|d))+$/;

/** CPU cores: a number, or Kubernetes-style millicores ("500m"). */
export const CPU_PATTERN = /^(\d+(\.\d+)?|\d+m)$/;

const SIZE_FACTORS: Record<string, number> = {
  '': 1, B: 1,
  K: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15,
  Ki: 1024, Mi: 1024 ** 2, Gi: 1024 ** 3, Ti: 1024 ** 4, Pi: 1024 ** 5,
};

const DURATION_FACTORS: Record<string, number> = {
  ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000,
};

/** Bytes in a size ("4Gi" -> 4294967296); a number is taken as bytes. null when not a size. */
export function parseBytes(value: string | number): number | null {
  if (typeof value === 'number') return Number.isFinite(value) && value >= 0 ? Math.round(value) : null;
  const text = value.trim();
  const match = SIZE_PATTERN.exec(text);
  if (!match) return null;
  const unit = match[2] ?? '';
  const bytes = Math.round(Number.parseFloat(text) * SIZE_FACTORS[unit]);
  return Number.isSafeInteger(bytes) ? bytes : null;
}

/** Milliseconds in a duration ("1h30m" -> 5400000). null when not a duration. */
export function parseDuration(value: string): number | null {
  const text = value.trim();
  if (!DURATION_PATTERN.test(text)) return null;
  let total = 0;
  for (const part of text.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h|d)/g)) {
    total += Number.parseFloat(part[1]) * DURATION_FACTORS[part[2]];
  }
  const ms = Math.round(total);
  return Number.isSafeInteger(ms) ? ms : null;
}

/** Cores in a CPU value (2, "0.5", "500m" -> 0.5). null when not a positive CPU amount. */
export function parseCpu(value: string | number): number | null {
  if (typeof value === 'number') return Number.isFinite(value) && value > 0 ? value : null;
  const text = value.trim();
  if (!CPU_PATTERN.test(text)) return null;
  const cores = text.endsWith('m') ? Number.parseInt(text, 10) / 1000 : Number.parseFloat(text);
  return cores > 0 && Number.isFinite(cores) ? cores : null;
}

/** Formats bytes the way templates write them (binary units), for messages and listings. */
export function formatBytes(bytes: number): string {
  const units = ['Pi', 'Ti', 'Gi', 'Mi', 'Ki'];
  for (const unit of units) {
    const factor = SIZE_FACTORS[unit];
    if (bytes >= factor && bytes % factor === 0) return `${bytes / factor}${unit}`;
  }
  return String(bytes);
}
