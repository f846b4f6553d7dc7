import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative, sep } from 'node:path';
import { MAX_TEMPLATE_FILES, TEMPLATE_FILE } from '../protocol/templates-api.ts';
import { UsageError } from './errors.ts';

/** Folders that are never part of a template (tooling state, dependencies). */
const SKIPPED = new Set(['.git', '.hg', '.svn', 'node_modules', '.DS_Store']);

/**
 * Reads a template folder into the push body's `files` (relative path with '/' -> UTF-8 text).
 * Checked here so the common mistakes get a local sentence: no template.yaml, a binary file,
 * a dependency folder with thousands of files.
 */
export function readTemplateFolder(dir: string): Record<string, string> {
  let stats;
  try {
    stats = statSync(dir);
  } catch {
    throw new UsageError(`There is no folder ${dir}. Give the folder that holds ${TEMPLATE_FILE}.`);
  }
  if (!stats.isDirectory()) throw new UsageError(`${dir} is a file. Give the folder that holds ${TEMPLATE_FILE}.`);

  const files: Record<string, string> = {};
  const walk = (folder: string) => {
    for (const entry of readdirSync(folder, { withFileTypes: true })) {
      if (SKIPPED.has(entry.name)) continue;
      const path = join(folder, entry.name);
      if (entry.isDirectory()) {
        walk(path);
        continue;
      }
      if (!entry.isFile()) continue; // sockets, symlinks to elsewhere: not template content
      const key = relative(dir, path).split(sep).join('/');
      const bytes = readFileSync(path);
      if (bytes.includes(0)) {
        throw new UsageError(`${key} in ${dir} is a binary file; templates hold text files only. Remove it or move it out of the folder.`);
      }
      files[key] = bytes.toString('utf8');
      if (Object.keys(files).length > MAX_TEMPLATE_FILES) {
        throw new UsageError(`${dir} has more than ${MAX_TEMPLATE_FILES} files; a template folder should hold only the template. Remove what it does not need.`);
      }
    }
  };
  walk(dir);
  if (!Object.hasOwn(files, TEMPLATE_FILE)) {
    throw new UsageError(`${dir} has no ${TEMPLATE_FILE}. A template folder holds ${TEMPLATE_FILE} and the files it references.`);
  }
  return files;
}
