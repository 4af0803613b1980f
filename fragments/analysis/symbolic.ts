/**
 * Symbolic dimensions: integer polynomials over named symbols, with floor division, min and max kept as
 * opaque factors when they do not simplify. A dimension is a number or a string; the string is either a
 * plain symbol ("batch_size") or an expression ("past_sequence_length + sequence_length",
 * "2*sequence_length", "(height - 1) / 2 + 1", where "/" is integer floor division). Arithmetic on
 * dimensions parses them into a canonical polynomial and prints the result back, so equal quantities
 * print equally ("seq + past" and "past + seq" both become "past + seq").
 */

export type Dim = number | string;

// ---------------------------------------------------------------------------------------------------
// Representation

type Atom =
  | { kind: 'sym'; key: string; name: string }
  | { kind: 'div'; key: string; num: Poly; den: Poly }
  | { kind: 'fn'; key: string; name: 'max' | 'min'; args: Poly[] };

interface Term { coef: number; atoms: Atom[]; key: string }

/** A polynomial with integer coefficients; terms are keyed by their sorted atom keys ('' = constant). */
export class Poly {
  private constructor(readonly terms: ReadonlyMap<string, Term>) {}

  static readonly zero: Poly = new Poly(new Map());

  static constant(value: number): Poly {
    return value === 0 ? Poly.zero : new Poly(new Map([['', { coef: value, atoms: [], key: '' }]]));
  }

  static atom(atom: Atom): Poly {
    return new Poly(new Map([[atom.key, { coef: 1, atoms: [atom], key: atom.key }]]));
  }

  static symbol(name: string): Poly {
    return Poly.atom({ kind: 'sym', key: isIdentifier(name) ? name : `\`${name}\``, name });
  }

  private static fromTerms(terms: Iterable<Term>): Poly {
    const map = new Map<string, Term>();
    for (const t of terms) {
      const prev = map.get(t.key);
      const coef = (prev?.coef ?? 0) + t.coef;
      if (coef === 0) map.delete(t.key);
      else map.set(t.key, { coef, atoms: t.atoms, key: t.key });
    }
    return map.size === 0 ? Poly.zero : new Poly(map);
  }

  /** The value when the polynomial is a constant, else undefined. */
  get constantValue(): number | undefined {
    if (this.terms.size === 0) return 0;
    if (this.terms.size === 1) {
      const t = this.terms.get('');
      if (t) return t.coef;
    }
    return undefined;
  }

  get isConstant(): boolean { return this.constantValue !== undefined; }

  add(other: Poly): Poly { return Poly.fromTerms([...this.terms.values(), ...other.terms.values()]); }

  scale(k: number): Poly {
    if (k === 0) return Poly.zero;
    return Poly.fromTerms([...this.terms.values()].map((t) => ({ ...t, coef: t.coef * k })));
  }

  sub(other: Poly): Poly { return this.add(other.scale(-1)); }

  mul(other: Poly): Poly {
    const out: Term[] = [];
    for (const a of this.terms.values()) {
      for (const b of other.terms.values()) {
        const atoms = [...a.atoms, ...b.atoms].sort(compareAtoms);
        out.push({ coef: a.coef * b.coef, atoms, key: atoms.map((x) => x.key).join('*') });
      }
    }
    return Poly.fromTerms(out);
  }

  equals(other: Poly): boolean { return this.toString() === other.toString(); }

  /** Exact division, or undefined when `other` does not divide this polynomial. */
  exactDiv(other: Poly): Poly | undefined {
    if (other.terms.size === 0) return undefined;
    if (this.terms.size === 0) return Poly.zero;
    if (other.terms.size === 1) {
      const d = [...other.terms.values()][0];
      const out: Term[] = [];
      for (const t of this.terms.values()) {
        if (t.coef % d.coef !== 0) return undefined;
        const atoms = removeAtoms(t.atoms, d.atoms);
        if (!atoms) return undefined;
        out.push({ coef: t.coef / d.coef, atoms, key: atoms.map((x) => x.key).join('*') });
      }
      return Poly.fromTerms(out);
    }
    // A multi-term divisor divides when this is an integer multiple of it.
    if (this.terms.size !== other.terms.size) return undefined;
    let ratio: number | undefined;
    for (const [key, t] of this.terms) {
      const d = other.terms.get(key);
      if (!d || t.coef % d.coef !== 0) return undefined;
      const r = t.coef / d.coef;
      if (ratio !== undefined && r !== ratio) return undefined;
      ratio = r;
    }
    return ratio === undefined ? undefined : Poly.constant(ratio);
  }

  /** Floor division (symbols are taken as non-negative integers; the divisor must not be zero). */
  floorDiv(other: Poly): Poly | undefined {
    const dc = other.constantValue;
    if (dc === 0) return undefined;
    const nc = this.constantValue;
    if (nc !== undefined && dc !== undefined) return Poly.constant(Math.floor(nc / dc));
    const exact = this.exactDiv(other);
    if (exact) return exact;
    if (dc !== undefined) {
      if (dc < 0) return this.scale(-1).floorDiv(Poly.constant(-dc));
      // floor((dc*q + r) / dc) = q + floor(r / dc) for integer q.
      const q: Term[] = [];
      const r: Term[] = [];
      for (const t of this.terms.values()) {
        const rem = ((t.coef % dc) + dc) % dc;
        if (t.key === '') {
          // Keep the constant's remainder in [0, dc) so that equal quantities print equally.
          q.push({ ...t, coef: (t.coef - rem) / dc });
          if (rem) r.push({ ...t, coef: rem });
        } else if (rem === 0) {
          q.push({ ...t, coef: t.coef / dc });
        } else {
          r.push(t);
        }
      }
      const quotient = Poly.fromTerms(q);
      const remainder = Poly.fromTerms(r);
      if (remainder.terms.size === 0) return quotient;
      if (remainder.isConstant) return quotient.add(Poly.constant(Math.floor((remainder.constantValue ?? 0) / dc)));
      return quotient.add(divAtom(remainder, other));
    }
    return divAtom(this, other);
  }

  /** Evaluates with symbols bound by `lookup`. */
  evaluate(lookup: (symbol: string) => number): number {
    let total = 0;
    for (const t of this.terms.values()) {
      let v = t.coef;
      for (const a of t.atoms) v *= evaluateAtom(a, lookup);
      total += v;
    }
    return total;
  }

  /** The symbols it names (through divisions and min/max too). */
  symbols(into = new Set<string>()): Set<string> {
    for (const t of this.terms.values()) for (const a of t.atoms) atomSymbols(a, into);
    return into;
  }

  toString(): string {
    if (this.terms.size === 0) return '0';
    const terms = [...this.terms.values()].sort(compareTerms);
    let out = '';
    terms.forEach((t, i) => {
      const body = termBody(t, Math.abs(t.coef), i === 0 && t.coef < 0);
      if (i === 0) out = t.coef < 0 ? `-${body}` : body;
      else out += t.coef < 0 ? ` - ${body}` : ` + ${body}`;
    });
    return out;
  }
}


function divAtom(num: Poly, den: Poly): Poly {
  const numText = wrapUnlessSimple(num);
  const denText = wrapUnlessSimple(den);
  return Poly.atom({ kind: 'div', key: `${numText} / ${denText}`, num, den });
}

function fnAtom(name: 'max' | 'min', args: Poly[]): Poly {
  const sorted = [...args].sort((a, b) => (a.toString() < b.toString() ? -1 : a.toString() > b.toString() ? 1 : 0));
  return Poly.atom({ kind: 'fn', key: `${name}(${sorted.map(String).join(', ')})`, name, args: sorted });
}

function wrapUnlessSimple(p: Poly): string {
  const text = p.toString();
  if (p.isConstant && (p.constantValue ?? 0) >= 0) return text;
  if (p.terms.size === 1) {
    const t = [...p.terms.values()][0];
    if (t.coef === 1 && t.atoms.length === 1 && t.atoms[0].kind !== 'div') return text;
  }
  return `(${text})`;
}

function termBody(t: Term, absCoef: number, leadingMinus: boolean): string {
  if (t.atoms.length === 0) return String(absCoef);
  const lone = t.atoms.length === 1 && absCoef === 1 && !leadingMinus;
  const atoms = t.atoms.map((a) => (a.kind === 'div' && !lone ? `(${a.key})` : a.key)).join('*');
  return absCoef === 1 ? atoms : `${absCoef}*${atoms}`;
}

function compareAtoms(a: Atom, b: Atom): number {
  return a.key < b.key ? -1 : a.key > b.key ? 1 : 0;
}

function compareTerms(a: Term, b: Term): number {
  if (a.key === '') return 1;
  if (b.key === '') return -1;
  if (a.atoms.length !== b.atoms.length) return b.atoms.length - a.atoms.length;
  return a.key < b.key ? -1 : a.key > b.key ? 1 : 0;
}

/** `atoms` minus the multiset `remove`, or undefined when `remove` is not contained. */
function removeAtoms(atoms: Atom[], remove: Atom[]): Atom[] | undefined {
  const left = [...atoms];
  for (const r of remove) {
    const i = left.findIndex((a) => a.key === r.key);
    if (i < 0) return undefined;
    left.splice(i, 1);
  }
  return left;
}

function evaluateAtom(a: Atom, lookup: (symbol: string) => number): number {
  switch (a.kind) {
    case 'sym': return lookup(a.name);
    case 'div': {
      const d = a.den.evaluate(lookup);
      if (d === 0) throw new Error(`division by zero in dimension "${a.key}"`);
      return Math.floor(a.num.evaluate(lookup) / d);
    }
    case 'fn': {
      const values = a.args.map((x) => x.evaluate(lookup));
      return a.name === 'max' ? Math.max(...values) : Math.min(...values);
    }
  }
}

function atomSymbols(a: Atom, into: Set<string>): void {
  if (a.kind === 'sym') into.add(a.name);
  else if (a.kind === 'div') { a.num.symbols(into); a.den.symbols(into); }
  else for (const x of a.args) x.symbols(into);
}

function isIdentifier(s: string): boolean {
  return /^[A-Za-z_$][\w$.]*$/.test(s);
}

// ---------------------------------------------------------------------------------------------------
// Parsing

type Token = { t: 'num'; v: number } | { t: 'id'; v: string } | { t: 'op'; v: string };

function tokenize(text: string): Token[] | undefined {
  const out: Token[] = [];
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    if (c === ' ' || c === '\t') { i++; continue; }
    if (/[0-9]/.test(c)) {
      let j = i;
      while (j < text.length && /[0-9]/.test(text[j])) j++;
      out.push({ t: 'num', v: Number(text.slice(i, j)) });
      i = j;
    } else if (/[A-Za-z_$]/.test(c)) {
      let j = i;
      while (j < text.length && /[\w$.]/.test(text[j])) j++;
      out.push({ t: 'id', v: text.slice(i, j) });
      i = j;
    } else if (c === '`') {
      const j = text.indexOf('`', i + 1);
      if (j < 0) return undefined;
      out.push({ t: 'id', v: text.slice(i + 1, j) });
      i = j + 1;
    } else if ('+-*/(),'.includes(c)) {
      out.push({ t: 'op', v: c });
      i++;
    } else {
      return undefined;
    }
  }
  return out;
}

class Parser {
  private i = 0;
  constructor(private readonly tokens: Token[]) {}

  parseAll(): Poly | undefined {
    const p = this.expr();
    return p && this.i === this.tokens.length ? p : undefined;
  }

  private peekOp(v: string): boolean {
    const t = this.tokens[this.i];
    return t !== undefined && t.t === 'op' && t.v === v;
  }

  private expr(): Poly | undefined {
    let left = this.term();
    while (left && (this.peekOp('+') || this.peekOp('-'))) {
      const op = this.tokens[this.i++].v;
      const right = this.term();
      if (!right) return undefined;
      left = op === '+' ? left.add(right) : left.sub(right);
    }
    return left;
  }

  private term(): Poly | undefined {
    let left = this.unary();
    while (left && (this.peekOp('*') || this.peekOp('/'))) {
      const op = this.tokens[this.i++].v;
      const right = this.unary();
      if (!right) return undefined;
      left = op === '*' ? left.mul(right) : left.floorDiv(right);
    }
    return left;
  }

  private unary(): Poly | undefined {
    if (this.peekOp('-')) { this.i++; return this.unary()?.scale(-1); }
    if (this.peekOp('+')) { this.i++; return this.unary(); }
    return this.primary();
  }

  private primary(): Poly | undefined {
    const t = this.tokens[this.i];
    if (!t) return undefined;
    if (t.t === 'num') { this.i++; return Poly.constant(t.v); }
    if (t.t === 'op' && t.v === '(') {
      this.i++;
      const inner = this.expr();
      if (!inner || !this.peekOp(')')) return undefined;
      this.i++;
      return inner;
    }
    if (t.t === 'id') {
      this.i++;
      if (!this.peekOp('(')) return Poly.symbol(t.v);
      const fn = t.v.toLowerCase();
      this.i++;
      const args: Poly[] = [];
      if (!this.peekOp(')')) {
        for (;;) {
          const a = this.expr();
          if (!a) return undefined;
          args.push(a);
          if (this.peekOp(',')) { this.i++; continue; }
          break;
        }
      }
      if (!this.peekOp(')')) return undefined;
      this.i++;
      return applyFunction(fn, args);
    }
    return undefined;
  }
}

function applyFunction(fn: string, args: Poly[]): Poly | undefined {
  switch (fn) {
    // Symbols are integers, so floor and ceil of an integer polynomial are the polynomial itself;
    // divisions inside are already floor divisions.
    case 'floor': case 'ceil': case 'int': case 'trunc':
      return args.length === 1 ? args[0] : undefined;
    case 'max': case 'min':
      return args.length >= 1 ? polyMinMax(fn, args) : undefined;
    default:
      return undefined;
  }
}

function polyMinMax(fn: 'max' | 'min', args: Poly[]): Poly {
  const unique: Poly[] = [];
  let constant: number | undefined;
  for (const a of args) {
    const c = a.constantValue;
    if (c !== undefined) constant = constant === undefined ? c : fn === 'max' ? Math.max(constant, c) : Math.min(constant, c);
    else if (!unique.some((u) => u.equals(a))) unique.push(a);
  }
  // Symbols stand for sizes, never negative: max(sym, c <= 0) = sym and min(sym, c <= 0) = c.
  if (constant !== undefined && constant <= 0 && unique.every(isNonNegativeMonomialSum)) {
    if (fn === 'min') return Poly.constant(constant);
    constant = undefined;
  }
  // Drop arguments that another one dominates (their difference has only non-negative terms).
  const kept = unique.filter((a, i) => !unique.some((b, j) => j !== i && dominates(fn === 'max' ? b : a, fn === 'max' ? a : b, j < i)));
  const all = constant === undefined ? kept : [...kept, Poly.constant(constant)];
  return all.length === 1 ? all[0] : fnAtom(fn, all);
}

/** True when big - small >= 0 for all non-negative symbol values (ties broken by `tieWins`). */
function dominates(big: Poly, small: Poly, tieWins: boolean): boolean {
  const diff = big.sub(small);
  if (diff.terms.size === 0) return tieWins;
  for (const t of diff.terms.values()) {
    if (t.coef < 0) return false;
    if (t.atoms.some((a) => a.kind !== 'sym')) return false;
  }
  return true;
}

function isNonNegativeMonomialSum(p: Poly): boolean {
  for (const t of p.terms.values()) if (t.coef < 0) return false;
  return true;
}

const parseCache = new Map<string, Poly | null>();

/** Parses a dimension expression; undefined when the text is not an expression of the grammar. */
export function parseExpression(text: string): Poly | undefined {
  let p = parseCache.get(text);
  if (p === undefined) {
    const tokens = tokenize(text);
    p = (tokens && tokens.length > 0 ? new Parser(tokens).parseAll() : undefined) ?? null;
    if (parseCache.size > 100_000) parseCache.clear();
    parseCache.set(text, p);
  }
  return p ?? undefined;
}

// ---------------------------------------------------------------------------------------------------
// Dimension arithmetic

/** A dimension as a polynomial (a string that is no expression is one opaque symbol). */
export function dimToPoly(d: Dim): Poly {
  if (typeof d === 'number') return Poly.constant(d);
  return parseExpression(d) ?? Poly.symbol(d);
}

/** A polynomial as a dimension: a number when constant, else its canonical text. */
export function polyToDim(p: Poly): Dim {
  const c = p.constantValue;
  if (c !== undefined) return c;
  if (p.terms.size === 1) {
    const t = [...p.terms.values()][0];
    if (t.coef === 1 && t.atoms.length === 1 && t.atoms[0].kind === 'sym') return t.atoms[0].name;
  }
  return p.toString();
}

/** Canonical form of a dimension (a number when it is constant). */
export function normalizeDim(d: Dim): Dim {
  return typeof d === 'number' ? d : polyToDim(dimToPoly(d));
}

export function isSymbolic(d: Dim): d is string { return typeof d === 'string'; }

export function dimEquals(a: Dim, b: Dim): boolean {
  if (typeof a === 'number' && typeof b === 'number') return a === b;
  if (a === b) return true;
  return dimToPoly(a).equals(dimToPoly(b));
}

function bothNumbers(a: Dim, b: Dim): boolean { return typeof a === 'number' && typeof b === 'number'; }

export function dimAdd(a: Dim, b: Dim): Dim {
  if (bothNumbers(a, b)) return (a as number) + (b as number);
  if (b === 0) return a;
  if (a === 0) return b;
  return polyToDim(dimToPoly(a).add(dimToPoly(b)));
}

export function dimSub(a: Dim, b: Dim): Dim {
  if (bothNumbers(a, b)) return (a as number) - (b as number);
  if (b === 0) return a;
  return polyToDim(dimToPoly(a).sub(dimToPoly(b)));
}

export function dimMul(a: Dim, b: Dim): Dim {
  if (bothNumbers(a, b)) return (a as number) * (b as number);
  if (b === 1) return a;
  if (a === 1) return b;
  return polyToDim(dimToPoly(a).mul(dimToPoly(b)));
}

/** Floor division; undefined for a zero divisor. */
export function dimFloorDiv(a: Dim, b: Dim): Dim | undefined {
  if (bothNumbers(a, b)) return b === 0 ? undefined : Math.floor((a as number) / (b as number));
  if (b === 1) return a;
  const q = dimToPoly(a).floorDiv(dimToPoly(b));
  return q ? polyToDim(q) : undefined;
}

/** Exact division, or undefined when the divisor does not divide. */
export function dimExactDiv(a: Dim, b: Dim): Dim | undefined {
  if (bothNumbers(a, b)) return b !== 0 && (a as number) % (b as number) === 0 ? (a as number) / (b as number) : undefined;
  if (b === 1) return a;
  const q = dimToPoly(a).exactDiv(dimToPoly(b));
  return q ? polyToDim(q) : undefined;
}

/** Ceiling division by a positive divisor. */
export function dimCeilDiv(a: Dim, b: Dim): Dim | undefined {
  if (bothNumbers(a, b)) return b === 0 ? undefined : Math.ceil((a as number) / (b as number));
  if (b === 1) return a;
  return dimFloorDiv(dimSub(dimAdd(a, b), 1), b);
}

export function dimMax(a: Dim, b: Dim): Dim {
  if (bothNumbers(a, b)) return Math.max(a as number, b as number);
  return polyToDim(polyMinMax('max', [dimToPoly(a), dimToPoly(b)]));
}

export function dimMin(a: Dim, b: Dim): Dim {
  if (bothNumbers(a, b)) return Math.min(a as number, b as number);
  return polyToDim(polyMinMax('min', [dimToPoly(a), dimToPoly(b)]));
}

export function dimProduct(dims: readonly Dim[]): Dim {
  let out: Dim = 1;
  for (const d of dims) out = dimMul(out, d);
  return out;
}

/**
 * Evaluates a dimension. A string that is exactly a bound symbol takes its value; any other string is
 * parsed as an expression whose symbols are looked up (integer floor division for "/").
 */
export function evaluateDim(d: Dim, lookup: (symbol: string) => number, exact?: Record<string, number>): number {
  if (typeof d === 'number') return d;
  if (exact && Object.prototype.hasOwnProperty.call(exact, d)) return exact[d];
  return dimToPoly(d).evaluate(lookup);
}

/** The symbols a dimension names. */
export function dimSymbols(d: Dim): Set<string> {
  return typeof d === 'number' ? new Set() : dimToPoly(d).symbols();
}
