import { CST, isAlias, isCollection, isMap, isNode, isPair, isScalar, Lexer, type Document, type LineCounter, type YAMLMap } from 'yaml';
import { AppError } from '../../protocol/errors.ts';

/**
 * Bounds on what a template's YAML may cost the server, checked before and after the `yaml`
 * package builds its document. That package spends about 10 µs and 1 KB per node and recurses
 * per nesting level: a 3.8 MB document of `- - - ... x` (1.9 million levels) held the event loop
 * for seconds and took gigabytes, and 950,000 flat list items (also 3.8 MB) cost as much. A
 * template has a few hundred nodes (templates/node-api: 311, as checkYamlShape counts them), so
 * the limits sit far above any real one.
 */

/** Keys, values, list items and indicators; a document this size parses in tens of ms. */
export const MAX_YAML_NODES = 5_000;
/** Levels as this scan counts them (it may count a level twice, never less than once). */
export const MAX_YAML_DEPTH = 64;

/**
 * Refuses a document that has more than MAX_YAML_NODES nodes or nests deeper than
 * MAX_YAML_DEPTH, naming the line where the limit is passed; returns the number of nodes. Uses
 * the `yaml` package's own lexer, so quoted strings, block scalars and comments are read exactly
 * as the parser will read them, and stops at the first token past a limit: a hostile document
 * costs the scan a few ms.
 *
 * Depth: every collection level starts at a column right of its parent's, except a block
 * sequence under a mapping key, which may share the key's column. So a stack of the strictly
 * increasing columns at which nodes start on the current path, plus the open flow brackets,
 * counts each level at least once in every two.
 */
export function checkYamlShape(text: string, fileName: string): number {
  let nodes = 0;
  let flowDepth = 0;
  const columns: number[] = [];
  let line = 1;
  let lineStart = 0;
  let offset = 0;
  let scalarFollows = false;
  for (const token of new Lexer().lex(text)) {
    if (token === CST.DOCUMENT || token === CST.SCALAR || token === CST.FLOW_END) {
      if (token === CST.SCALAR) scalarFollows = true;
      if (token === CST.FLOW_END) flowDepth = 0;
      continue;
    }
    const start = offset;
    offset += token.length;
    const type = scalarFollows ? 'scalar' : CST.tokenType(token);
    scalarFollows = false;
    if (type !== 'space' && type !== 'newline' && type !== 'comment' && type !== 'byte-order-mark') {
      if (++nodes > MAX_YAML_NODES) throw tooComplex(fileName, line, `has more than ${MAX_YAML_NODES} YAML nodes (keys, values and list items)`);
      if (flowDepth === 0) {
        const column = start - lineStart;
        while (columns.length > 0 && columns[columns.length - 1] > column) columns.pop();
        if (columns.length === 0 || columns[columns.length - 1] < column) columns.push(column);
      }
      if (type === 'flow-seq-start' || type === 'flow-map-start') flowDepth++;
      else if ((type === 'flow-seq-end' || type === 'flow-map-end') && flowDepth > 0) flowDepth--;
      if (columns.length + flowDepth > MAX_YAML_DEPTH) throw tooComplex(fileName, line, `nests more than ${MAX_YAML_DEPTH} levels deep`);
    }
    // Scalars, comments and the lexer's line breaks may span lines.
    for (let i = token.indexOf('\n'); i !== -1; i = token.indexOf('\n', i + 1)) {
      line++;
      lineStart = start + i + 1;
    }
  }
  return nodes;
}

/**
 * The checks the `yaml` package would make at a cost this module exists to avoid: duplicate keys
 * (its `uniqueKeys` compares every pair of keys in a mapping: 0.2 s for 3,300 keys) and alias
 * expansion. Refuses a document whose aliases expand to more than MAX_YAML_NODES nodes or more
 * than `maxBytes` of scalar text: each alias stands for a copy of what it names, so a few lines
 * can name millions of values (and `yaml`'s own alias limit counts aliases, not what they copy).
 * Names the line of the repeated key, or of the alias that copies the most.
 */
export function checkYamlDocument(doc: Document, lines: LineCounter, fileName: string, maxBytes: number): void {
  const sizes = new Map<unknown, Size>();
  let largest: { offset: number; size: Size } | undefined;
  const measure = (node: unknown): Size => {
    if (!isNode(node) && !isPair(node)) return { nodes: 0, bytes: 0 };
    const known = sizes.get(node);
    if (known) return known;
    sizes.set(node, CYCLE); // an alias inside the node it names copies nothing more than this
    let size: Size;
    if (isAlias(node)) {
      const target = node.resolve(doc);
      size = target ? measure(target) : { nodes: 1, bytes: 0 };
      if (!largest || size.nodes > largest.size.nodes || size.bytes > largest.size.bytes) largest = { offset: node.range?.[0] ?? 0, size };
    } else if (isScalar(node)) {
      size = { nodes: 1, bytes: node.range ? node.range[1] - node.range[0] : String(node.value).length };
    } else if (isPair(node)) {
      size = add(measure(node.key), measure(node.value));
    } else if (isCollection(node)) {
      if (isMap(node)) refuseRepeatedKeys(node, lines, fileName);
      size = node.items.reduce<Size>((sum, item) => add(sum, measure(item)), { nodes: 1, bytes: 0 });
    } else {
      size = { nodes: 1, bytes: 0 };
    }
    sizes.set(node, size);
    return size;
  };
  const total = measure(doc.contents);
  if (largest && (total.nodes > MAX_YAML_NODES || total.bytes > maxBytes)) {
    const what = total.nodes > MAX_YAML_NODES ? `more than ${MAX_YAML_NODES} YAML nodes` : `more than ${maxBytes} bytes`;
    throw tooComplex(fileName, lines.linePos(largest.offset).line, `has aliases that expand to ${what}`, 'Write the values out once instead of copying them with aliases');
  }
}

/** Keys compare as the strings they become in the template (so `1` and "1" are the same key). */
function refuseRepeatedKeys(map: YAMLMap, lines: LineCounter, fileName: string): void {
  const seen = new Set<string>();
  for (const pair of map.items) {
    const key = isScalar(pair.key) ? String(pair.key.value) : String(pair.key);
    if (!seen.has(key)) {
      seen.add(key);
      continue;
    }
    const { line, col } = lines.linePos(isNode(pair.key) ? (pair.key.range?.[0] ?? 0) : 0);
    const detail = `Map keys must be unique: ${JSON.stringify(key)} appears again at line ${line}, column ${col}`;
    throw new AppError('TEMPLATE_YAML_INVALID', `${fileName} is not valid YAML: ${detail}. Remove or rename one of them and push again.`, {
      validations: [{ field: '(yaml)', detail: `${detail}.`, line, column: col }],
    });
  }
}

interface Size {
  nodes: number;
  bytes: number;
}

const CYCLE: Size = { nodes: 1, bytes: 0 };

function add(a: Size, b: Size): Size {
  return { nodes: a.nodes + b.nodes, bytes: a.bytes + b.bytes };
}

function tooComplex(fileName: string, line: number, what: string, fix = 'Flatten or shorten the document (large data belongs in separate files of the template folder)'): AppError {
  const detail = `the document ${what}; the limit is passed at line ${line}`;
  return new AppError('TEMPLATE_YAML_INVALID', `${fileName} cannot be loaded: ${detail}. ${fix}, and push again.`, {
    validations: [{ field: '(yaml)', detail: `${detail}.`, line }],
  });
}
