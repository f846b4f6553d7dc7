/**
 * The `${{ }}` expression language: tokenizer and recursive-descent parser producing a small
 * AST. Hand-written on purpose: no `eval`/`Function`, and names are plain strings that the
 * evaluator resolves only through own properties of plain objects.
 *
 * Grammar (lowest precedence first):
 *   expr     := or ('?' expr ':' expr)?
 *   or       := and ('||' and)*
 *   and      := equality ('&&' equality)*
 *   equality := sum (('==' | '!=') sum)*
 *   sum      := unary ('+' unary)*
 *   unary    := '!' unary | primary
 *   primary  := number | string | true | false | null | '(' expr ')'
 *             | name '(' (expr (',' expr)*)? ')' | name ('.' name)*
 * Names may contain '-' after the first character (service names are DNS labels); there is no
 * subtraction, so `services.my-api.url` is unambiguous.
 */

export type ExpressionNode =
  | { kind: 'literal'; value: string | number | boolean | null }
  | { kind: 'name'; path: string[] }
  | { kind: 'call'; name: string; args: ExpressionNode[] }
  | { kind: 'not'; operand: ExpressionNode }
  | { kind: 'binary'; op: '+' | '==' | '!=' | '&&' | '||'; left: ExpressionNode; right: ExpressionNode }
  | { kind: 'conditional'; test: ExpressionNode; then: ExpressionNode; otherwise: ExpressionNode };

/** Thrown by the parser; the evaluator wraps it into an AppError with the field path. */
export class ExpressionSyntaxError extends Error {}

/** Expressions longer than this are refused: a template value is not a program. */
export const MAX_EXPRESSION_LENGTH = 2000;
/** Bounds recursion so hostile nesting cannot overflow the stack. */
const MAX_DEPTH = 48;

/** Segment names that would reach an object's prototype machinery in JavaScript. */
export const FORBIDDEN_NAMES = new Set(['__proto__', 'constructor', 'prototype']);

type Token =
  | { type: 'number'; value: number; at: number }
  | { type: 'string'; value: string; at: number }
  | { type: 'name'; value: string; at: number }
  | { type: 'punct'; value: string; at: number }
  | { type: 'end'; at: number };

export function parseExpression(source: string): ExpressionNode {
  if (source.length > MAX_EXPRESSION_LENGTH) {
    throw new ExpressionSyntaxError(`the expression is longer than ${MAX_EXPRESSION_LENGTH} characters`);
  }
  const tokens = tokenize(source);
  if (tokens.length === 1) throw new ExpressionSyntaxError('the expression is empty');
  const parser = new Parser(tokens);
  const node = parser.expression(0);
  parser.expectEnd();
  return node;
}

/** Every dotted name the expression reads (for push-time reference checks). */
export function referencedNames(node: ExpressionNode): string[][] {
  switch (node.kind) {
    case 'literal':
      return [];
    case 'name':
      return [node.path];
    case 'call':
      return node.args.flatMap(referencedNames);
    case 'not':
      return referencedNames(node.operand);
    case 'binary':
      return [...referencedNames(node.left), ...referencedNames(node.right)];
    case 'conditional':
      return [...referencedNames(node.test), ...referencedNames(node.then), ...referencedNames(node.otherwise)];
  }
}

export interface ExpressionSegment {
  /** the source between `${{` and `}}` */
  source: string;
  start: number;
  /** index just after the closing `}}` */
  end: number;
}

/**
 * Finds the `${{ ... }}` segments of a string. The closing `}}` is searched outside quoted
 * strings, so `${{ '}}' }}` works. Throws ExpressionSyntaxError for an unclosed expression.
 */
export function findExpressions(text: string): ExpressionSegment[] {
  const segments: ExpressionSegment[] = [];
  let from = 0;
  for (;;) {
    const start = text.indexOf('${{', from);
    if (start < 0) return segments;
    let i = start + 3;
    let quote: string | null = null;
    while (i < text.length) {
      const char = text[i];
      if (quote) {
        if (char === '\\') i++;
        else if (char === quote) quote = null;
      } else if (char === '"' || char === "'") {
        quote = char;
      } else if (char === '}' && text[i + 1] === '}') {
        break;
      }
      i++;
    }
    if (i >= text.length) throw new ExpressionSyntaxError(`the expression starting at position ${start + 1} is not closed with '}}'`);
    segments.push({ source: text.slice(start + 3, i), start, end: i + 2 });
    from = i + 2;
  }
}

const PUNCTUATION = ['==', '!=', '&&', '||', '(', ')', '.', ',', '?', ':', '+', '!'];

function tokenize(source: string): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  while (i < source.length) {
    const char = source[i];
    if (/\s/.test(char)) {
      i++;
    } else if (/[0-9]/.test(char)) {
      const match = /^[0-9]+(\.[0-9]+)?/.exec(source.slice(i))!;
      if (/^[A-Za-z_]/.test(source.slice(i + match[0].length))) {
        throw new ExpressionSyntaxError(`'${source.slice(i, i + match[0].length + 1)}' at position ${i + 1} is neither a number nor a name`);
      }
      tokens.push({ type: 'number', value: Number(match[0]), at: i });
      i += match[0].length;
    } else if (char === '"' || char === "'") {
      const [value, end] = readString(source, i);
      tokens.push({ type: 'string', value, at: i });
      i = end;
    } else if (/[A-Za-z_]/.test(char)) {
      const match = /^[A-Za-z_][A-Za-z0-9_-]*/.exec(source.slice(i))!;
      // A trailing '-' belongs to no name; reject it rather than guess.
      if (match[0].endsWith('-')) throw new ExpressionSyntaxError(`'${match[0]}' at position ${i + 1} ends with '-'; there is no subtraction operator`);
      tokens.push({ type: 'name', value: match[0], at: i });
      i += match[0].length;
    } else {
      const punct = PUNCTUATION.find((p) => source.startsWith(p, i));
      if (!punct) {
        const hint = char === '=' ? " (compare with '==')" : char === '-' ? ' (there is no subtraction)' : '';
        throw new ExpressionSyntaxError(`unexpected character '${char}' at position ${i + 1}${hint}`);
      }
      tokens.push({ type: 'punct', value: punct, at: i });
      i += punct.length;
    }
  }
  tokens.push({ type: 'end', at: source.length });
  return tokens;
}

function readString(source: string, start: number): [string, number] {
  const quote = source[start];
  let out = '';
  let i = start + 1;
  while (i < source.length) {
    const char = source[i];
    if (char === quote) return [out, i + 1];
    if (char === '\\') {
      const next = source[i + 1];
      const escapes: Record<string, string> = { n: '\n', t: '\t', '\\': '\\', "'": "'", '"': '"' };
      if (next === undefined || !Object.hasOwn(escapes, next)) {
        throw new ExpressionSyntaxError(`unknown escape '\\${next ?? ''}' at position ${i + 1}`);
      }
      out += escapes[next];
      i += 2;
    } else {
      out += char;
      i++;
    }
  }
  throw new ExpressionSyntaxError(`the string starting at position ${start + 1} is not closed with ${quote}`);
}

class Parser {
  private index = 0;
  private readonly tokens: Token[];

  constructor(tokens: Token[]) {
    this.tokens = tokens;
  }

  expression(depth: number): ExpressionNode {
    if (depth > MAX_DEPTH) throw new ExpressionSyntaxError(`the expression nests deeper than ${MAX_DEPTH} levels`);
    const test = this.binary(0, depth);
    if (!this.takePunct('?')) return test;
    const then = this.expression(depth + 1);
    this.expectPunct(':', "the ':' of a conditional (a ? b : c)");
    const otherwise = this.expression(depth + 1);
    return { kind: 'conditional', test, then, otherwise };
  }

  expectEnd(): void {
    const token = this.peek();
    if (token.type !== 'end') throw new ExpressionSyntaxError(`unexpected ${describe(token)}${where(token)}`);
  }

  private static readonly LEVELS: string[][] = [['||'], ['&&'], ['==', '!='], ['+']];

  private binary(level: number, depth: number): ExpressionNode {
    if (level === Parser.LEVELS.length) return this.unary(depth);
    let left = this.binary(level + 1, depth);
    for (;;) {
      const token = this.peek();
      if (token.type !== 'punct' || !Parser.LEVELS[level].includes(token.value)) return left;
      this.index++;
      const right = this.binary(level + 1, depth);
      left = { kind: 'binary', op: token.value as '+' | '==' | '!=' | '&&' | '||', left, right };
    }
  }

  private unary(depth: number): ExpressionNode {
    if (depth > MAX_DEPTH) throw new ExpressionSyntaxError(`the expression nests deeper than ${MAX_DEPTH} levels`);
    if (this.takePunct('!')) return { kind: 'not', operand: this.unary(depth + 1) };
    return this.primary(depth);
  }

  private primary(depth: number): ExpressionNode {
    const token = this.next();
    if (token.type === 'number' || token.type === 'string') return { kind: 'literal', value: token.value };
    if (token.type === 'punct' && token.value === '(') {
      const inner = this.expression(depth + 1);
      this.expectPunct(')', "a closing ')'");
      return inner;
    }
    if (token.type !== 'name') {
      throw new ExpressionSyntaxError(`expected a value but found ${describe(token)}${where(token)}`);
    }
    if (token.value === 'true' || token.value === 'false') return { kind: 'literal', value: token.value === 'true' };
    if (token.value === 'null') return { kind: 'literal', value: null };
    if (this.takePunct('(')) return { kind: 'call', name: token.value, args: this.arguments(depth) };
    const path = [token.value];
    while (this.takePunct('.')) {
      const segment = this.next();
      if (segment.type === 'name') path.push(segment.value);
      else if (segment.type === 'number' && Number.isInteger(segment.value)) path.push(String(segment.value));
      else throw new ExpressionSyntaxError(`expected a name after '${path.join('.')}.'${where(segment)}`);
    }
    const forbidden = path.find((segment) => FORBIDDEN_NAMES.has(segment));
    if (forbidden) throw new ExpressionSyntaxError(`'${forbidden}' is not allowed in a name`);
    return { kind: 'name', path };
  }

  private arguments(depth: number): ExpressionNode[] {
    const args: ExpressionNode[] = [];
    if (this.takePunct(')')) return args;
    for (;;) {
      args.push(this.expression(depth + 1));
      if (this.takePunct(')')) return args;
      this.expectPunct(',', "',' or ')' in the argument list");
    }
  }

  private peek(): Token {
    return this.tokens[this.index];
  }

  private next(): Token {
    const token = this.tokens[this.index];
    if (token.type !== 'end') this.index++;
    return token;
  }

  private takePunct(value: string): boolean {
    const token = this.peek();
    if (token.type === 'punct' && token.value === value) {
      this.index++;
      return true;
    }
    return false;
  }

  private expectPunct(value: string, what: string): void {
    if (!this.takePunct(value)) {
      const token = this.peek();
      throw new ExpressionSyntaxError(`expected ${what} but found ${describe(token)}${where(token)}`);
    }
  }
}

function where(token: Token): string {
  return token.type === 'end' ? '' : ` at position ${token.at + 1}`;
}

function describe(token: Token): string {
  switch (token.type) {
    case 'end':
      return 'the end of the expression';
    case 'string':
      return `the string ${JSON.stringify(token.value)}`;
    default:
      return `'${token.value}'`;
  }
}
