// Building the page: elements from data, never HTML from data (every text goes in as text).

/** `h('a', {href, class, on: {click}}, 'text', child)`: an element; null children are skipped. */
export function h(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes || {})) {
    if (key === 'on') {
      for (const [event, handler] of Object.entries(value)) node.addEventListener(event, handler);
    } else if (value !== false && value !== null && value !== undefined) {
      node.setAttribute(key, value === true ? '' : String(value));
    }
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

/** A table with a caption, column headings and rows of cells (text or elements). */
export function table(caption, headings, rows, id = null) {
  return h('table', { id },
    caption ? h('caption', { class: 'muted' }, caption) : null,
    h('thead', {}, h('tr', {}, headings.map((heading) => h('th', { scope: 'col' }, heading)))),
    h('tbody', {}, rows.length
      ? rows.map((cells) => h('tr', {}, cells.map((cell) => h('td', {}, cell))))
      : h('tr', {}, h('td', { colspan: headings.length, class: 'muted' }, 'Nothing here.'))));
}

/** A small coloured label: `badge('DOWN')`. */
export function badge(text, kind = text) {
  return text ? h('span', { class: `badge ${kind}` }, text) : null;
}

/** A labelled form control: `field('Class', select)`. */
export function field(label, control) {
  return h('label', {}, label, control);
}

/** A select with an empty choice first: `choice('status', STATUSES, current, 'any')`. */
export function choice(name, values, current, emptyLabel = 'any') {
  const select = h('select', { name },
    h('option', { value: '' }, emptyLabel),
    values.map((value) => h('option', { value }, value)));
  select.value = current || '';
  return select;
}

/** A JSON value as short text. */
export function showValue(value) {
  if (value === null || value === undefined) return '—';
  if (typeof value === 'string') return value;
  return JSON.stringify(value);
}

/** Replaces `node`'s children; nested lists are flattened and empty entries skipped. */
export function fill(node, ...children) {
  node.replaceChildren(...children.flat(Infinity)
    .filter((child) => child !== null && child !== undefined && child !== false)
    .map((child) => (child instanceof Node ? child : String(child))));
}
