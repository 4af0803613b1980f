/** Building the page's DOM without a framework: one `el` helper, text always set as text (never as HTML). */

export type Child = Node | string | number | false | null | undefined;

/** An element with attributes (strings; `class` included) and children (strings become text nodes). */
export function el<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Record<string, string | undefined> = {}, ...children: Child[]): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined) node.setAttribute(k, v);
  for (const c of children) if (c !== false && c !== null && c !== undefined) node.append(typeof c === 'number' ? String(c) : c);
  return node;
}

const SVG = 'http://www.w3.org/2000/svg';

/** An SVG element with attributes. */
export function svg(tag: string, attrs: Record<string, string | number> = {}, ...children: (Node | string)[]): SVGElement {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  for (const c of children) node.append(c);
  return node;
}

/** A table in a sideways-scrolling wrapper: header cells and rows of cells (each cell labelled, for phones: one card per row). */
export function table(head: string[], rows: { cells: Child[]; attrs?: Record<string, string | undefined> }[]): HTMLElement {
  return el('div', { class: 'scroll' }, el('table', {},
    el('thead', {}, el('tr', {}, ...head.map((h) => el('th', {}, h)))),
    el('tbody', {}, ...rows.map((r) => el('tr', r.attrs ?? {}, ...r.cells.map((c, i) => el('td', { 'data-label': head[i] }, c)))))));
}

/** A definition list of label → value. */
export function keyValues(pairs: [string, Child][]): HTMLElement {
  const dl = el('dl', { class: 'kv' });
  for (const [k, v] of pairs) dl.append(el('dt', {}, k), el('dd', {}, v));
  return dl;
}

/** A link to a page of the explorer (hash route). */
export function link(hash: string, text: string, cls?: string): HTMLAnchorElement {
  return el('a', { href: `#/${hash}`, class: cls }, text);
}
