/**
 * The files of a template tarball (.tar.gz, .tgz or .tar) as path -> UTF-8 text, read in the
 * browser: gunzip with DecompressionStream, then the ustar records (GNU long names included).
 * A single top folder (what `tar czf t.tgz my-template` makes) is not part of the paths.
 */
const BLOCK = 512;
/** a template is at most a few MB (the server's maxTemplateBytes); refuse archives far past it */
const MAX_ARCHIVE_BYTES = 64 * 1024 * 1024;

export async function readTarball(file: File): Promise<Record<string, string>> {
  const gzipped = /\.(tgz|gz)$/i.test(file.name);
  const stream = gzipped ? file.stream().pipeThrough(new DecompressionStream('gzip')) : file.stream();
  const bytes = new Uint8Array(await new Response(stream).arrayBuffer());
  if (bytes.byteLength > MAX_ARCHIVE_BYTES) throw new Error(`${file.name} unpacks to more than 64 MB; a template folder is far smaller.`);
  const text = new TextDecoder();
  const files: Record<string, string> = {};
  let longName: string | undefined;
  for (let offset = 0; offset + BLOCK <= bytes.byteLength;) {
    const header = bytes.subarray(offset, offset + BLOCK);
    if (header.every((byte) => byte === 0)) break;
    const field = (start: number, length: number) => text.decode(header.subarray(start, start + length)).replace(/\0.*$/s, '');
    const size = parseInt(field(124, 12).trim() || '0', 8);
    if (!Number.isFinite(size) || size < 0) throw new Error(`${file.name} is not a tar archive this page can read.`);
    const type = field(156, 1);
    const prefix = field(345, 155);
    const name = longName ?? (prefix ? `${prefix}/${field(0, 100)}` : field(0, 100));
    const body = bytes.subarray(offset + BLOCK, offset + BLOCK + size);
    longName = undefined;
    if (type === 'L') longName = text.decode(body).replace(/\0.*$/s, '');
    else if (type === '0' || type === '' || type === '7') files[name.replace(/^\.\//, '')] = text.decode(body);
    // directories, links and pax headers carry no file content
    offset += BLOCK + Math.ceil(size / BLOCK) * BLOCK;
  }
  return withoutTopFolder(files);
}

function withoutTopFolder(files: Record<string, string>): Record<string, string> {
  const paths = Object.keys(files);
  const top = paths[0]?.split('/')[0];
  if (!top || paths.some((path) => !path.startsWith(`${top}/`))) return files;
  return Object.fromEntries(paths.map((path) => [path.slice(top.length + 1), files[path]]));
}
