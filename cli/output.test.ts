import { describe, expect, test } from 'vitest';
import { formatAge, formatDuration, renderFields, renderTable } from './output.ts';

describe('renderTable', () => {
  test('pads every column to its widest cell and upper-cases the headers', () => {
    const text = renderTable(
      [
        { name: 'demo', status: 'running', builds: 3 },
        { name: 'a-much-longer-name', status: 'stopped', builds: 12 },
      ],
      [
        { header: 'name', value: (row) => row.name },
        { header: 'builds', value: (row) => row.builds, align: 'right' },
        { header: 'status', value: (row) => row.status },
      ],
    );
    expect(text).toBe(
      ['NAME                BUILDS  STATUS', 'demo                     3  running', 'a-much-longer-name      12  stopped', ''].join('\n'),
    );
  });

  test('shows empty values as a dash and keeps multi-line values on one row', () => {
    const text = renderTable([{ a: null, b: 'two\nlines' }], [
      { header: 'a', value: (row) => row.a },
      { header: 'b', value: (row) => row.b },
    ]);
    expect(text.split('\n')[1]).toBe('-  two lines');
  });
});

describe('renderFields', () => {
  test('aligns values after the longest key', () => {
    expect(renderFields([['user', 'admin'], ['server', 'http://x']])).toBe('user:   admin\nserver: http://x\n');
  });
});

describe('formatDuration and formatAge', () => {
  test('use the largest unit that keeps the number short', () => {
    expect(formatDuration(850)).toBe('850ms');
    expect(formatDuration(1234)).toBe('1.2s');
    expect(formatDuration(184_000)).toBe('3m04s');
    expect(formatDuration(undefined)).toBe('-');
  });

  test('describe timestamps relative to now', () => {
    const now = Date.parse('2026-01-01T12:00:00Z');
    expect(formatAge('2026-01-01T11:59:58Z', now)).toBe('just now');
    expect(formatAge('2026-01-01T11:55:00Z', now)).toBe('5m ago');
    expect(formatAge('2025-12-29T12:00:00Z', now)).toBe('3d ago');
  });
});
