// The console's pages. Each reads the estate at the moment the header shows (the resolved
// position, so every query of one page reads the same state) through the public GraphQL API,
// and draws into `ctx.main`. `ctx` (from app.js): arg, params, resolved, position, main,
// href(page, arg, params), go(page, arg, params), showPosition(position), alive().

import { gql } from './api.js';
import { h, fill, table, badge, field, choice, showValue } from './dom.js';
import { showTime, showSpan } from './moment.js';
import { drawPicture, impactElements } from './picture.js';

/** CIs per page of search results. */
const SEARCH_PAGE_SIZE = 50;
/** The most CIs drawn in one impact picture (more is a hairball, not a picture). */
export const MAX_PICTURE_NODES = 300;
/** History entries shown on a CI page, newest first (unless the whole history is asked for). */
const MAX_HISTORY_ROWS = 200;
/** Relationships per page of a CI page (a hub has tens of thousands). */
const RELATIONSHIPS_PAGE_SIZE = 100;
/** Changes listed per page. */
const CHANGES_PAGE_SIZE = 50;
/** Entries of a diff fetched per page. */
const DIFF_PAGE_SIZE = 200;
/** Events a replay plays at most. */
export const MAX_REPLAY_EVENTS = 300;
/** How long a replay shows each event. */
const REPLAY_STEP_MS = 900;
/** Relationships drawn around the CI a replay watches. */
const MAX_REPLAY_RELATIONSHIPS = 100;

const STATUSES = ['PLANNED', 'ORDERED', 'RECEIVED', 'IN_TEST', 'LIVE', 'UNDER_CHANGE', 'WITHDRAWN'];
const ENVIRONMENTS = ['DEVELOPMENT', 'TEST', 'STAGING', 'PRODUCTION'];
const CHANGE_STATES = ['DRAFT', 'SUBMITTED', 'ASSESSED', 'APPROVED', 'REJECTED', 'SCHEDULED', 'IMPLEMENTING',
  'IMPLEMENTED', 'FAILED', 'BACKED_OUT', 'VERIFIED', 'REVIEWED', 'CLOSED', 'CANCELLED'];
const DAY_MS = 86_400_000;

let classNames = null;

async function classes() {
  if (!classNames) classNames = (await gql('query Classes { classes { name } }')).classes.map((c) => c.name).sort();
  return classNames;
}

function heading(ctx, text, ...extra) {
  return h('h1', { tabindex: '-1', id: 'page-title' }, text, ...extra);
}

function ciLink(ctx, ci) {
  if (!ci) return h('span', { class: 'muted' }, 'not present at this moment');
  return h('a', { href: ctx.href('ci', ci.id), 'data-ci': ci.id }, ci.name);
}

function changeLink(ctx, id, text) {
  return id ? h('a', { href: ctx.href('change', id) }, text || id) : null;
}

function pager(ctx, page, arg, params, pageInfo) {
  return pagerBy(ctx, page, arg, params, 'after', pageInfo, 'Next page');
}

/** Links to the first page and the next one, the cursor kept in the `key` parameter. */
function pagerBy(ctx, page, arg, params, key, pageInfo, nextLabel) {
  const first = new URLSearchParams(params);
  first.delete(key);
  return h('p', { class: 'controls' },
    params.get(key) ? h('a', { href: ctx.href(page, arg, first) }, '« First page') : null,
    pageInfo.hasNextPage ? h('a', { href: ctx.href(page, arg, withParam(params, key, pageInfo.endCursor || '')), rel: 'next' }, `${nextLabel} »`) : null);
}

function withParam(params, key, value) {
  const next = new URLSearchParams(params);
  next.set(key, value);
  return next;
}

function formParams(form) {
  const params = new URLSearchParams();
  for (const [key, value] of new FormData(form).entries()) if (String(value).trim()) params.set(key, String(value).trim());
  return params;
}

/** An RFC 3339 time or a position typed into a box, as a MomentInput. */
function momentInput(text) {
  if (/^\d+$/.test(text)) return { position: Number(text) };
  return { time: text };
}

// ---------------------------------------------------------------- search

const SEARCH = `query Search($position: Position, $filter: CiFilterInput, $first: Int, $after: String) {
  at(position: $position) {
    cis(filter: $filter, first: $first, after: $after) {
      nodes { id name class status environment version }
      pageInfo { hasNextPage endCursor }
    }
  }
}`;

export async function search(ctx) {
  const p = ctx.params;
  const known = await classes();
  const form = h('form', { class: 'filters', role: 'search', 'aria-label': 'Search CIs' },
    field('Name contains', h('input', { name: 'name', type: 'search', value: p.get('name') || '', autofocus: true })),
    field('Class', choice('class', known, p.get('class'))),
    field('Status', choice('status', STATUSES, p.get('status'))),
    field('Environment', choice('env', ENVIRONMENTS, p.get('env'))),
    field('Attribute', h('input', { name: 'attr', value: p.get('attr') || '', placeholder: 'e.g. tier' })),
    field('equals', h('input', { name: 'value', value: p.get('value') || '', placeholder: 'e.g. 1 or "eu-west"' })),
    h('button', { type: 'submit', class: 'primary' }, 'Search'));
  form.addEventListener('submit', (event) => { event.preventDefault(); ctx.go('search', '', formParams(form)); });

  const filter = {
    includeWithdrawn: p.get('status') === 'WITHDRAWN',
    classes: p.get('class') ? [p.get('class')] : null,
    statuses: p.get('status') ? [p.get('status')] : null,
    environments: p.get('env') ? [p.get('env')] : null,
    nameContains: p.get('name') || null,
    attribute: p.get('attr') ? { name: p.get('attr'), value: parseValue(p.get('value') || '') } : null,
  };
  const data = await gql(SEARCH, { position: ctx.position, filter, first: SEARCH_PAGE_SIZE, after: p.get('after') || null });
  const found = data.at.cis;
  const together = failingTogether(ctx);
  fill(ctx.main, 
    heading(ctx, 'Configuration items'),
    form,
    table(`CIs at position ${ctx.position}`, ['Fails', 'Name', 'Class', 'Status', 'Environment', 'Version'],
      found.nodes.map((ci) => [
        h('input', { type: 'checkbox', name: 'fails', value: ci.id, 'aria-label': `${ci.name} fails`, on: { change: () => together.update() } }),
        ciLink(ctx, ci), ci.class, badge(ci.status), ci.environment || '—', ci.version || '—']), 'search-results'),
    together.controls,
    pager(ctx, 'search', '', p, found.pageInfo));
}

/**
 * The search page's way to several CIs failing together (a rack, two members of a cluster):
 * tick them in the results, then open their impact as one.
 */
function failingTogether(ctx) {
  const button = h('button', { type: 'button', id: 'impact-selected', disabled: true }, 'Impact of the ticked CIs failing together');
  const ticked = () => [...document.querySelectorAll('#search-results input[name=fails]:checked')].map((box) => box.value);
  button.addEventListener('click', () => {
    const ids = ticked();
    if (ids.length) ctx.go('impact', ids.join(','), { dir: 'DOWNSTREAM' });
  });
  return {
    controls: h('p', { class: 'controls' }, button),
    update: () => { button.disabled = ticked().length === 0; },
  };
}

function parseValue(text) {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

// ---------------------------------------------------------------- one CI

const CI = `query Ci($position: Position, $id: ID!, $last: Int, $relationshipsAfter: String) {
  at(position: $position) {
    ci(id: $id) {
      id class name status environment version validFrom validTo attributes
      owner { id name } location { id name }
      relationshipsConnection(first: ${RELATIONSHIPS_PAGE_SIZE}, after: $relationshipsAfter) {
        totalCount pageInfo { hasNextPage endCursor }
        nodes { id type sourceId targetId validFrom authorizedBy source { id name class } target { id name class } }
      }
    }
    history(ci: $id, last: $last) { position recordedAt type principal correlationId authorizedBy version { status version } }
    changes(filter: { ci: $id }, first: 50) { nodes { id number title state type window { start end } } }
  }
}`;

export async function ci(ctx) {
  const wholeHistory = ctx.params.get('history') === 'all';
  const data = await gql(CI, {
    position: ctx.position, id: ctx.arg, last: wholeHistory ? null : MAX_HISTORY_ROWS,
    relationshipsAfter: ctx.params.get('rafter') || null,
  });
  const { ci: item, history, changes } = data.at;
  if (!item) {
    fill(ctx.main, heading(ctx, 'Not in the estate at this moment'),
      h('p', { class: 'notice' }, `CI ${ctx.arg} did not exist at position ${ctx.position}. `,
        h('a', { href: ctx.href('ci', ctx.arg, {}, null) }, 'Show it now')));
    return;
  }
  const numbers = new Map(changes.nodes.map((change) => [change.id, change.number || change.id]));
  const actions = h('p', { class: 'controls' },
    h('a', { href: ctx.href('impact', item.id, { dir: 'DOWNSTREAM' }) }, 'What its failure reaches'),
    h('a', { href: ctx.href('impact', item.id, { dir: 'UPSTREAM' }) }, 'What it depends on'),
    h('a', { href: ctx.href('diff', '', { around: item.id }) }, 'What changed around it (7 days)'),
    ctx.position < ctx.resolved.head
      ? h('a', { href: ctx.href('diff', '', { around: item.id, from: String(ctx.position), to: String(ctx.resolved.head) }), id: 'changed-since' },
        'What changed around it since then')
      : null,
    h('a', { href: ctx.href('replay', '', { ci: item.id }) }, 'Replay around it'));
  const attributes = Object.entries(item.attributes || {}).sort(([a], [b]) => a.localeCompare(b));
  const page = item.relationshipsConnection;
  const relationships = page.nodes.map((rel) => {
    const outgoing = rel.sourceId === item.id;
    const other = outgoing ? rel.target : rel.source;
    return [outgoing ? rel.type : `${rel.type} (from)`, ciLink(ctx, other), other ? other.class : '—',
      rel.validFrom, changeLink(ctx, rel.authorizedBy, numbers.get(rel.authorizedBy)) || '—'];
  });
  const entries = [...history].reverse().map((entry) => [
    h('a', { href: ctx.href('ci', item.id, {}, entry.position), title: 'Show the CI as it was here' }, entry.position),
    showTime(entry.recordedAt), entry.type, entry.principal,
    changeLink(ctx, entry.authorizedBy, numbers.get(entry.authorizedBy)) || '—',
    entry.version ? `${entry.version.status}${entry.version.version ? ` · ${entry.version.version}` : ''}` : '—']);
  fill(ctx.main, 
    heading(ctx, item.name, ' ', badge(item.status)),
    h('p', { class: 'muted' }, `${item.class} · id ${item.id}`),
    actions,
    h('div', { class: 'grid2' },
      h('section', { class: 'card', 'aria-labelledby': 'facts-h' }, h('h2', { id: 'facts-h' }, 'Facts'),
        h('dl', { class: 'facts' },
          h('dt', {}, 'Environment'), h('dd', {}, item.environment || '—'),
          h('dt', {}, 'Version'), h('dd', {}, item.version || '—'),
          h('dt', {}, 'Owner'), h('dd', {}, item.owner ? ciLink(ctx, item.owner) : '—'),
          h('dt', {}, 'Location'), h('dd', {}, item.location ? ciLink(ctx, item.location) : '—'),
          h('dt', {}, 'This version since'), h('dd', {}, `position ${item.validFrom}`),
          ...attributes.flatMap(([name, value]) => [h('dt', {}, name), h('dd', { 'data-attribute': name }, showValue(value))]))),
      h('section', { class: 'card', 'aria-labelledby': 'changes-h' }, h('h2', { id: 'changes-h' }, 'Changes that touched it'),
        table(null, ['Change', 'Title', 'State', 'Window'], changes.nodes.map((change) => [
          changeLink(ctx, change.id, change.number || change.id), change.title, badge(change.state),
          change.window ? showSpan(change.window.start, change.window.end) : '—'])))),
    h('h2', {}, `Relationships (${page.totalCount})`),
    table(null, ['Relationship', 'CI', 'Class', 'Since position', 'Authorised by'], relationships, 'relationships'),
    pagerBy(ctx, 'ci', item.id, ctx.params, 'rafter', page.pageInfo, `${RELATIONSHIPS_PAGE_SIZE} more relationships`),
    h('h2', {}, wholeHistory ? `History (${history.length} entries)` : `History (newest ${history.length} entries)`),
    !wholeHistory && history.length === MAX_HISTORY_ROWS
      ? h('p', {}, h('a', { href: ctx.href('ci', item.id, withParam(ctx.params, 'history', 'all')) }, 'Show the whole history'))
      : null,
    table(null, ['Position', 'Recorded', 'Event', 'By', 'Change', 'Status · version'], entries, 'history'));
}

// ---------------------------------------------------------------- impact picture

const IMPACT = `query Impact($position: Position, $ids: [ID!]!, $direction: ImpactDirection!, $depth: Int, $max: Int) {
  at(position: $position) {
    impact(cis: $ids, direction: $direction, maxDepth: $depth, maxResults: $max) {
      count downCount degradedCount truncated
      roots { id name class }
      reached { depth severity ci { id name class } path { type ciId sourceId targetId relationshipId } }
      services { tier depth severity service { id name } path { ci { name } } severityPath { ci { name } } }
    }
  }
}`;

/** CIs whose names contain what was typed into "Fails too", offered when it names no one CI. */
const ALSO_FAILING_CHOICES = 20;

const ALSO_FAILING = `query AlsoFailing($position: Position, $name: String!, $first: Int!) {
  at(position: $position) { cis(filter: { nameContains: $name }, first: $first) { nodes { id name class } } }
}`;

/**
 * The CIs an impact page starts from: its argument is their ids, separated by commas (in
 * lower case, as the API writes them, so a root's link to leave it out finds it).
 */
function impactIds(arg) {
  return arg.split(',').map((id) => id.trim().toLowerCase()).filter(Boolean);
}

export async function impact(ctx) {
  const p = ctx.params;
  const direction = p.get('dir') === 'UPSTREAM' ? 'UPSTREAM' : 'DOWNSTREAM';
  const depth = Math.min(Math.max(Number(p.get('depth')) || 3, 1), 12);
  const ids = impactIds(ctx.arg);
  const data = await gql(IMPACT, { position: ctx.position, ids, direction, depth, max: MAX_PICTURE_NODES });
  const answer = data.at.impact;
  const { roots } = answer;
  const together = roots.length > 1;
  const form = h('form', { class: 'controls', 'aria-label': 'Impact settings' },
    field('Direction', (() => {
      const select = h('select', { name: 'dir' },
        h('option', { value: 'DOWNSTREAM' }, together ? 'Downstream: what their failure reaches' : 'Downstream: what its failure reaches'),
        h('option', { value: 'UPSTREAM' }, together ? 'Upstream: what they depend on' : 'Upstream: what it depends on'));
      select.value = direction;
      return select;
    })()),
    field('Depth', h('input', { name: 'depth', type: 'number', min: '1', max: '12', value: String(depth) })),
    h('button', { type: 'submit', class: 'primary' }, 'Draw'));
  form.addEventListener('submit', (event) => { event.preventDefault(); ctx.go('impact', ctx.arg, formParams(form)); });
  const names = together ? `${roots.length} CIs failing together` : roots[0].name;
  const holder = h('div', { id: 'picture', role: 'img',
    'aria-label': `Graph of ${answer.count} CIs reached ${direction.toLowerCase()} from ${names}; the tables below list them` });
  const summary = h('p', {},
    `${answer.count} CIs reached within ${depth} hops`,
    direction === 'DOWNSTREAM' ? ` · ${answer.downCount} down · ${answer.degradedCount} degraded` : '',
    ` · ${answer.services.length} business services`,
    answer.truncated ? h('span', { class: 'notice' }, ` Only the first ${MAX_PICTURE_NODES} are drawn; lower the depth to see all.`) : '');
  fill(ctx.main, 
    heading(ctx, `Impact of ${names}`),
    impactRoots(ctx, roots, ids, p),
    alsoFailing(ctx, ids, p),
    form, summary,
    h('div', { class: 'legend', 'aria-hidden': 'true' },
      h('span', { style: '--c:#d92d20' }, 'down'), h('span', { style: '--c:#f79009' }, 'degraded'),
      h('span', { style: '--c:#7f56d9' }, 'business service (diamond)'), h('span', { style: '--c:#5b8def' }, 'other CI'),
      h('span', {}, 'arrows point from source to target of the relationship')),
    holder,
    h('h2', {}, `Business services reached (${answer.services.length})`),
    // Downstream, the way the failure arrives with its severity (it can be longer than the
    // shortest way, when that crosses a redundant group that survives); upstream, the shortest.
    table(null, ['Service', 'Tier', 'Severity', 'Hops', 'Through'], answer.services.map((service) => [
      ciLink(ctx, service.service), service.tier ?? '—', badge(service.severity) || '—', service.depth,
      (service.severityPath || service.path).map((step) => (step.ci ? step.ci.name : '?')).join(' → ')]),
    'impact-services'),
    h('details', {}, h('summary', {}, `Every CI reached (${answer.reached.length})`),
      table(null, ['CI', 'Class', 'Hops', 'Severity', 'Reached through'], answer.reached.map((reached) => [
        ciLink(ctx, reached.ci), reached.ci.class, reached.depth, badge(reached.severity) || '—',
        reached.path.length ? reached.path[reached.path.length - 1].type : '—']), 'impact-reached')));
  const { nodes, edges } = impactElements(answer);
  drawPicture(holder, nodes, edges, (id) => ctx.go('impact', id, { dir: direction, depth: String(depth) }));
}

/** The CIs failing: one, or several each with a link to the impact without it. */
function impactRoots(ctx, roots, ids, params) {
  if (roots.length === 1) {
    return h('p', { class: 'muted' }, ciLink(ctx, roots[0]), ` · ${roots[0].class} · click a node to centre the picture on it`);
  }
  return h('section', { 'aria-labelledby': 'roots-h' },
    h('h2', { id: 'roots-h' }, 'Failing together'),
    h('ul', { id: 'impact-roots' }, roots.map((root) => h('li', {}, ciLink(ctx, root), ` · ${root.class} · `,
      h('a', { href: ctx.href('impact', ids.filter((id) => id !== root.id).join(','), params), 'data-leave-out': root.id },
        `Leave ${root.name} out`)))),
    h('p', { class: 'muted' }, 'Click a node to see its failure alone.'));
}

/**
 * "Fails too": a CI named (or its id) joins the CIs failing. A name that is not exactly one
 * CI's offers the CIs whose names contain it.
 */
function alsoFailing(ctx, ids, params) {
  const input = h('input', { name: 'also', id: 'also-failing', placeholder: 'name or id', required: true });
  const choices = h('div', { id: 'also-failing-choices', 'aria-live': 'polite' });
  const withRoot = (id) => [...ids.filter((known) => known !== id), id].join(',');
  const add = (id) => ctx.go('impact', withRoot(id), params);
  const form = h('form', { class: 'controls', 'aria-label': 'Add a CI that fails too' },
    field('Fails too', input), h('button', { type: 'submit' }, 'Add'), choices);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    if (/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(text)) return add(text.toLowerCase());
    let found;
    try {
      found = (await gql(ALSO_FAILING, { position: ctx.position, name: text, first: ALSO_FAILING_CHOICES })).at.cis.nodes;
    } catch (failure) {
      fill(choices, h('p', { class: 'notice' }, `${failure.code}: ${failure.message}`));
      return;
    }
    const exact = found.filter((ci) => ci.name === text);
    if (exact.length === 1) return add(exact[0].id);
    if (found.length === 1) return add(found[0].id);
    fill(choices, found.length
      ? [h('p', {}, `${found.length === ALSO_FAILING_CHOICES ? `The first ${ALSO_FAILING_CHOICES}` : found.length} CIs are named like "${text}"; pick one:`),
        h('ul', {}, found.map((ci) => h('li', {},
          h('a', { href: ctx.href('impact', withRoot(ci.id), params), 'data-add': ci.id }, ci.name),
          ` · ${ci.class}`)))]
      : h('p', { class: 'notice' }, `No CI at this moment is named like "${text}".`));
  });
  return form;
}

// ---------------------------------------------------------------- diff

const DIFF = `query Diff($from: MomentInput!, $to: MomentInput!, $around: ID, $depth: Int!, $first: Int, $after: String) {
  diff(from: $from, to: $to, around: $around, depth: $depth) {
    from to fromTime toTime createdCount changedCount withdrawnCount relationshipsAddedCount relationshipsRemovedCount
    cis(first: $first, after: $after) {
      nodes { id kind transitioned before { name class } after { name class } fields { field before after }
              events { position principal authorizedBy type } }
      pageInfo { hasNextPage endCursor }
    }
    relationships(first: $first) {
      nodes { kind relationship { id type sourceId targetId source { id name } target { id name } }
              cause { position principal type authorizedBy } }
      pageInfo { hasNextPage }
    }
  }
}`;

export async function diff(ctx) {
  const p = ctx.params;
  const toText = p.get('to') || String(ctx.position);
  const fromText = p.get('from') || (ctx.resolved.time
    ? new Date(Date.parse(ctx.resolved.time) - 7 * DAY_MS).toISOString() : '1');
  const depth = Math.min(Math.max(Number(p.get('depth')) || 2, 0), 6);
  const form = h('form', { class: 'filters', 'aria-label': 'Diff settings' },
    field('From (position or RFC 3339 time)', h('input', { name: 'from', value: fromText, size: 26 })),
    field('To (position or time)', h('input', { name: 'to', value: toText, size: 26 })),
    field('Around CI (id, optional)', h('input', { name: 'around', value: p.get('around') || '', size: 38 })),
    field('Hops around it', h('input', { name: 'depth', type: 'number', min: '0', max: '6', value: String(depth) })),
    h('button', { type: 'submit', class: 'primary' }, 'Compare'));
  form.addEventListener('submit', (event) => { event.preventDefault(); ctx.go('diff', '', formParams(form)); });
  const data = await gql(DIFF, {
    from: momentInput(fromText), to: momentInput(toText), around: p.get('around') || null, depth,
    first: DIFF_PAGE_SIZE, after: p.get('after') || null,
  });
  const result = data.diff;
  const kinds = h('fieldset', { class: 'controls' }, h('legend', {}, 'Show'),
    ...['CREATED', 'CHANGED', 'WITHDRAWN'].map((kind) => h('label', {},
      h('input', { type: 'checkbox', name: 'kind', value: kind, checked: true }), ` ${kind.toLowerCase()}`)),
    field('Filter by name, class or field', h('input', { type: 'search', id: 'diff-filter' })));
  const rows = result.cis.nodes.map((entry) => {
    const version = entry.after || entry.before || {};
    const row = h('tr', { 'data-kind': entry.kind, 'data-text': `${version.name} ${version.class} ${entry.fields.map((f) => f.field).join(' ')}`.toLowerCase() },
      h('td', {}, badge(entry.kind)),
      h('td', {}, h('a', { href: ctx.href('ci', entry.id, {}, result.to) }, version.name || entry.id)),
      h('td', {}, version.class || '—'),
      h('td', {}, entry.fields.length
        ? h('ul', {}, entry.fields.map((f) => h('li', {}, h('code', {}, f.field), `: ${showValue(f.before)} → ${showValue(f.after)}`)))
        : '—'),
      h('td', {}, entry.events.slice(-3).map((e) => h('div', {}, `${e.type} by ${e.principal} @${e.position}`))));
    return row;
  });
  const body = h('tbody', {}, rows);
  const applyFilter = () => {
    const shown = new Set([...kinds.querySelectorAll('input[name=kind]:checked')].map((box) => box.value));
    const text = kinds.querySelector('#diff-filter').value.trim().toLowerCase();
    for (const row of rows) row.hidden = !shown.has(row.dataset.kind) || (text && !row.dataset.text.includes(text));
  };
  kinds.addEventListener('input', applyFilter);
  const next = new URLSearchParams(p);
  next.set('after', result.cis.pageInfo.endCursor || '');
  fill(ctx.main, 
    heading(ctx, 'What changed'),
    form,
    h('p', {}, `From position ${result.from} (${showTime(result.fromTime)}) to ${result.to} (${showTime(result.toTime)}): `,
      badge(`${result.createdCount} created`, 'CREATED'), ' ', badge(`${result.changedCount} changed`, 'CHANGED'), ' ',
      badge(`${result.withdrawnCount} withdrawn`, 'WITHDRAWN'), ' ',
      badge(`${result.relationshipsAddedCount} relationships added`, 'ADDED'), ' ',
      badge(`${result.relationshipsRemovedCount} removed`, 'REMOVED')),
    kinds,
    h('table', { id: 'diff-cis' }, h('thead', {}, h('tr', {}, ['Kind', 'CI', 'Class', 'Fields (before → after)', 'Caused by'].map((t) => h('th', { scope: 'col' }, t)))), body),
    result.cis.pageInfo.hasNextPage ? h('p', {}, h('a', { href: ctx.href('diff', '', next) }, `Next ${DIFF_PAGE_SIZE} CIs »`)) : null,
    h('h2', {}, 'Relationships'),
    table(result.relationships.pageInfo.hasNextPage ? `first ${DIFF_PAGE_SIZE} shown` : null,
      ['Kind', 'From', 'Type', 'To', 'By', 'Change'], result.relationships.nodes.map((entry) => [
        badge(entry.kind), ciLink(ctx, entry.relationship.source) , entry.relationship.type, ciLink(ctx, entry.relationship.target),
        `${entry.cause.principal} @${entry.cause.position}`, changeLink(ctx, entry.cause.authorizedBy, 'change') || '—'])));
}

// ---------------------------------------------------------------- replay

const EVENTS = `query Events($after: Position, $first: Int) {
  events(after: $after, first: $first) {
    edges { node { position type streamId recordedAt data metadata { principal } } }
  }
}`;

const AROUND = `query Around($position: Position, $id: ID!, $first: Int) {
  at(position: $position) {
    ci(id: $id) { id name class status version }
    relationships(ci: $id, first: $first) { nodes { id type sourceId targetId source { id name class } target { id name class } } }
  }
}`;

function eventCi(event) {
  const data = event.data || {};
  return data.ci_id || data.source || null;
}

export async function replay(ctx) {
  const p = ctx.params;
  const to = Math.min(Number(p.get('to')) || ctx.position, ctx.resolved.head);
  const from = Math.max(Number(p.get('from')) || to - 49, 1);
  const form = h('form', { class: 'filters', 'aria-label': 'Replay settings' },
    field('From position', h('input', { name: 'from', type: 'number', min: '1', value: String(from) })),
    field('To position', h('input', { name: 'to', type: 'number', min: '1', value: String(to) })),
    field('Watch CI (id; empty follows each event)', h('input', { name: 'ci', value: p.get('ci') || '', size: 38 })),
    h('button', { type: 'submit', class: 'primary' }, 'Load'));
  form.addEventListener('submit', (event) => { event.preventDefault(); ctx.go('replay', '', formParams(form)); });
  const data = await gql(EVENTS, { after: from - 1, first: Math.min(Math.max(to - from + 1, 1), MAX_REPLAY_EVENTS) });
  const events = data.events.edges.map((edge) => edge.node).filter((event) => event.position <= to);
  const items = events.map((event) => h('li', { 'data-position': event.position },
    `@${event.position} ${event.type} · ${event.metadata.principal} · ${showTime(event.recordedAt)}`));
  const list = h('ol', { class: 'events', 'aria-label': 'Events of the range' }, items);
  const play = h('button', { type: 'button', class: 'primary', id: 'replay-play' }, '▶ Play');
  const back = h('button', { type: 'button', id: 'replay-back' }, '◀ Event');
  const forward = h('button', { type: 'button', id: 'replay-forward' }, 'Event ▶');
  const now = h('p', { id: 'replay-now', role: 'status' });
  const holder = h('div', { id: 'picture', role: 'img', 'aria-label': 'The watched CI and its relationships at the replayed position' });
  const watched = h('dl', { class: 'facts', id: 'replay-ci' });
  fill(ctx.main, 
    heading(ctx, 'Replay'),
    form,
    h('p', { class: 'muted' }, `${events.length} events from position ${from} to ${to}` +
      (to - from + 1 > MAX_REPLAY_EVENTS ? ` (the first ${MAX_REPLAY_EVENTS})` : '')),
    h('p', { class: 'controls' }, back, play, forward),
    now,
    h('div', { class: 'grid2' }, h('div', {}, holder, watched), list));
  let index = 0;
  let timer = null;
  const show = async (next) => {
    if (!events.length || !ctx.alive()) return;
    index = Math.min(Math.max(next, 0), events.length - 1);
    const event = events[index];
    items.forEach((item, i) => {
      item.className = i === index ? 'current' : (i > index ? 'future' : '');
    });
    items[index].scrollIntoView({ block: 'nearest' });
    now.textContent = `Position ${event.position}: ${event.type} by ${event.metadata.principal}`;
    ctx.showPosition(event.position);
    const id = p.get('ci') || eventCi(event);
    if (!id) {
      fill(watched, h('dt', {}, 'CI'), h('dd', {}, 'this event touches no CI'));
      return;
    }
    const around = (await gql(AROUND, { position: event.position, id, first: MAX_REPLAY_RELATIONSHIPS })).at;
    if (!ctx.alive() || events[index] !== event) return;
    fill(watched, 
      h('dt', {}, 'CI'), h('dd', {}, around.ci ? ciLink(ctx, around.ci) : `${id} (not present)`),
      h('dt', {}, 'Status'), h('dd', { id: 'replay-status' }, around.ci ? around.ci.status : '—'),
      h('dt', {}, 'Version'), h('dd', {}, around.ci ? around.ci.version || '—' : '—'),
      h('dt', {}, 'Relationships'), h('dd', {}, String(around.relationships.nodes.length)));
    const nodes = new Map();
    if (around.ci) nodes.set(around.ci.id, { id: around.ci.id, label: around.ci.name, root: true, service: around.ci.class === 'business_service' });
    for (const rel of around.relationships.nodes) {
      for (const end of [rel.source, rel.target]) {
        if (end && !nodes.has(end.id)) nodes.set(end.id, { id: end.id, label: end.name, service: end.class === 'business_service' });
      }
    }
    const edges = around.relationships.nodes.filter((rel) => nodes.has(rel.sourceId) && nodes.has(rel.targetId))
      .map((rel) => ({ id: rel.id, source: rel.sourceId, target: rel.targetId, type: rel.type }));
    drawPicture(holder, [...nodes.values()], edges, (node) => ctx.go('ci', node));
  };
  const stop = () => {
    clearInterval(timer);
    timer = null;
    play.textContent = '▶ Play';
  };
  play.addEventListener('click', () => {
    if (timer) return stop();
    if (index >= events.length - 1) index = -1;
    play.textContent = '⏸ Pause';
    timer = setInterval(() => {
      if (!ctx.alive() || index >= events.length - 1) return stop();
      show(index + 1);
    }, REPLAY_STEP_MS);
    return show(index + 1);
  });
  back.addEventListener('click', () => { stop(); show(index - 1); });
  forward.addEventListener('click', () => { stop(); show(index + 1); });
  items.forEach((item, i) => item.addEventListener('click', () => { stop(); show(i); }));
  await show(0);
}

// ---------------------------------------------------------------- calendar

const CALENDAR = `query Calendar($position: Position, $from: DateTime, $to: DateTime) {
  at(position: $position) {
    calendar(from: $from, to: $to) {
      truncated
      changes { start end riskLevel scopeSummary inFreeze conflicts { otherNumber reason }
                change { id number title state type } }
      freezes { id name reason environment occurrences { start end } }
    }
  }
}`;

function mondayOf(date) {
  const day = new Date(Date.UTC(date.getUTCFullYear(), date.getUTCMonth(), date.getUTCDate()));
  day.setUTCDate(day.getUTCDate() - ((day.getUTCDay() + 6) % 7));
  return day;
}

export async function calendar(ctx) {
  const p = ctx.params;
  const start = p.get('week') && !Number.isNaN(Date.parse(p.get('week')))
    ? mondayOf(new Date(p.get('week'))) : mondayOf(new Date(ctx.resolved.time || Date.now()));
  const end = new Date(start.getTime() + 7 * DAY_MS);
  const data = await gql(CALENDAR, { position: ctx.position, from: start.toISOString(), to: end.toISOString() });
  const view = data.at.calendar;
  const week = (offset) => new Date(start.getTime() + offset * 7 * DAY_MS).toISOString().slice(0, 10);
  const days = [...Array(7).keys()].map((i) => {
    const dayStart = start.getTime() + i * DAY_MS;
    const dayEnd = dayStart + DAY_MS;
    const overlaps = (a, b) => Date.parse(a) < dayEnd && Date.parse(b) > dayStart;
    const freezes = view.freezes.flatMap((freeze) => freeze.occurrences.filter((o) => overlaps(o.start, o.end)).map(() => freeze));
    const changes = view.changes.filter((entry) => entry.start && overlaps(entry.start, entry.end || entry.start))
      .sort((a, b) => Date.parse(a.start) - Date.parse(b.start));
    const label = new Date(dayStart).toLocaleDateString('en-GB', { weekday: 'short', day: 'numeric', month: 'short', timeZone: 'UTC' });
    return h('section', { class: `day${freezes.length ? ' frozen' : ''}`, 'aria-label': label },
      h('h3', {}, label),
      freezes.map((freeze) => h('div', { class: 'slot freeze' }, `❄ ${freeze.name}${freeze.environment ? ` (${freeze.environment})` : ''}`)),
      changes.map((entry) => h('a', {
        class: `slot${entry.conflicts.length ? ' conflict' : ''}`, href: ctx.href('change', entry.change.id),
        title: `${entry.change.title} · ${entry.scopeSummary}`,
      },
      h('strong', {}, entry.change.number || 'draft'), ` ${entry.start.slice(11, 16)}–${(entry.end || '').slice(11, 16)} `,
      badge(entry.riskLevel), entry.conflicts.length ? badge(`${entry.conflicts.length} conflict`, 'conflict') : null,
      entry.inFreeze.length ? badge('in freeze', 'freeze') : null,
      h('div', {}, entry.change.title))));
  });
  fill(ctx.main, 
    heading(ctx, `Change calendar: week of ${start.toISOString().slice(0, 10)}`),
    h('p', { class: 'controls' },
      h('a', { href: ctx.href('calendar', '', { week: week(-1) }) }, '« Previous week'),
      h('a', { href: ctx.href('calendar', '', { week: week(1) }) }, 'Next week »'),
      h('span', { class: 'muted' }, 'times in UTC; as scheduled at the moment shown')),
    view.truncated ? h('p', { class: 'notice' }, 'More changes fall in this week than one answer holds; the list is cut.') : null,
    h('div', { class: 'week' }, days),
    h('h2', {}, `Scheduled this week (${view.changes.length})`),
    table(null, ['Change', 'Title', 'State', 'Window', 'Risk', 'Conflicts', 'Freeze'], view.changes.map((entry) => [
      changeLink(ctx, entry.change.id, entry.change.number || entry.change.id), entry.change.title, badge(entry.change.state),
      entry.start ? showSpan(entry.start, entry.end) : '—', badge(entry.riskLevel) || '—',
      entry.conflicts.map((c) => `${c.otherNumber}: ${c.reason}`).join('; ') || '—', entry.inFreeze.join(', ') || '—'])),
    h('h2', {}, `Freezes (${view.freezes.length})`),
    table(null, ['Freeze', 'Reason', 'Environment', 'This week'], view.freezes.map((freeze) => [
      freeze.name, freeze.reason, freeze.environment || 'all',
      freeze.occurrences.filter((o) => Date.parse(o.start) < end.getTime() && Date.parse(o.end) > start.getTime())
        .map((o) => showSpan(o.start, o.end)).join('; ') || '—'])));
}

// ---------------------------------------------------------------- changes

const CHANGES = `query Changes($position: Position, $filter: ChangeFilterInput, $first: Int, $after: String) {
  at(position: $position) {
    changes(filter: $filter, first: $first, after: $after) {
      totalCount
      nodes { id number title state type requester window { start end } }
      pageInfo { hasNextPage endCursor }
    }
  }
}`;

export async function changes(ctx) {
  const p = ctx.params;
  const form = h('form', { class: 'filters', 'aria-label': 'Filter changes' },
    field('State', choice('state', CHANGE_STATES, p.get('state'))),
    field('Type', choice('type', ['STANDARD', 'NORMAL', 'EMERGENCY'], p.get('type'))),
    field('Requester', h('input', { name: 'requester', value: p.get('requester') || '' })),
    h('button', { type: 'submit', class: 'primary' }, 'Filter'));
  form.addEventListener('submit', (event) => { event.preventDefault(); ctx.go('changes', '', formParams(form)); });
  const filter = {
    states: p.get('state') ? [p.get('state')] : null,
    types: p.get('type') ? [p.get('type')] : null,
    requester: p.get('requester') || null,
  };
  const data = await gql(CHANGES, { position: ctx.position, filter, first: CHANGES_PAGE_SIZE, after: p.get('after') || null });
  const found = data.at.changes;
  fill(ctx.main, 
    heading(ctx, `Changes (${found.totalCount})`),
    form,
    table(null, ['Change', 'Title', 'Type', 'State', 'Requester', 'Window'], found.nodes.map((change) => [
      changeLink(ctx, change.id, change.number || change.id), change.title, change.type, badge(change.state), change.requester,
      change.window ? showSpan(change.window.start, change.window.end) : '—'])),
    pager(ctx, 'changes', '', p, found.pageInfo));
}

const CHANGE = `query Change($position: Position, $id: ID!) {
  at(position: $position) {
    change(id: $id) {
      id number type state title description justification backOutPlan requester implementer retrospective
      window { start end timeZone }
      scope { cis { id ci { id name class } } planned { class name } }
      transitions { action from to by at position note }
      approvals { by decision authority note at position retrospective }
      assessment { score level downstreamCis servicesDown servicesDegraded servicesNotListed truncated position
                   factors { name points why }
                   services { id name tier severity depth severityPath { ci { name } } } }
      decision { policyVersion policyHash autoApprove deny
                 approvals { role count reason approvedBy met }
                 replay { matches policyIntact regorusDiffers error } }
      conflicts { otherNumber reason change { id } }
      inFreeze
      edits(first: 100) { position recordedAt type ciId ci { id name } principal }
      comments { by at text }
    }
  }
}`;

/** The assessment's factors and the services it lists, each with the way the change's failure
 * reaches it (its severity path, worked out again at the assessment's position). */
function assessedServices(ctx, assessment) {
  const listed = assessment.services;
  return h('details', { id: 'assessed-services' },
    h('summary', {}, `Why: ${assessment.factors.length} factors, ${listed.length} services listed` +
      (assessment.servicesNotListed ? ` (${assessment.servicesNotListed} more not listed)` : '')),
    table(null, ['Factor', 'Points', 'Why'], assessment.factors.map((f) => [f.name, f.points, f.why])),
    table(null, ['Service', 'Tier', 'Severity', 'Hops', 'Through'], listed.map((s) => [
      ciLink(ctx, { id: s.id, name: s.name }), s.tier ?? '—', badge(s.severity), s.depth,
      s.severityPath ? (s.severityPath.length ? s.severityPath.map((step) => (step.ci ? step.ci.name : '?')).join(' → ') : 'in scope')
        : '—']), 'change-services'));
}

export async function change(ctx) {
  const data = await gql(CHANGE, { position: ctx.position, id: ctx.arg });
  const item = data.at.change;
  if (!item) {
    fill(ctx.main, heading(ctx, 'No such change at this moment'),
      h('p', { class: 'notice' }, `Change ${ctx.arg} was not recorded by position ${ctx.position}. `,
        h('a', { href: ctx.href('change', ctx.arg, {}, null) }, 'Show it now')));
    return;
  }
  const decision = item.decision;
  fill(ctx.main, 
    heading(ctx, `${item.number || 'Draft'}: ${item.title}`, ' ', badge(item.state)),
    h('p', { class: 'muted' }, `${item.type.toLowerCase()} change requested by ${item.requester}`,
      item.implementer ? `, implemented by ${item.implementer}` : '', item.retrospective ? ' · retrospective' : ''),
    h('div', { class: 'grid2' },
      h('section', { class: 'card' }, h('h2', {}, 'Request'),
        h('dl', { class: 'facts' },
          h('dt', {}, 'Window'), h('dd', {}, item.window ? `${showSpan(item.window.start, item.window.end)} (${item.window.timeZone})` : '—'),
          h('dt', {}, 'Description'), h('dd', {}, item.description || '—'),
          h('dt', {}, 'Justification'), h('dd', {}, item.justification || '—'),
          h('dt', {}, 'Back-out plan'), h('dd', {}, item.backOutPlan || '—'),
          h('dt', {}, 'Scope'), h('dd', {}, item.scope.cis.length
            ? item.scope.cis.map((entry, i) => [i ? ', ' : '', entry.ci ? ciLink(ctx, entry.ci) : entry.id]) : '—'),
          h('dt', {}, 'Planned CIs'), h('dd', {}, item.scope.planned.map((c) => `${c.name} (${c.class})`).join(', ') || '—'),
          h('dt', {}, 'Conflicts'), h('dd', {}, item.conflicts.length
            ? item.conflicts.map((c, i) => [i ? '; ' : '', changeLink(ctx, c.change && c.change.id, c.otherNumber) || c.otherNumber, `: ${c.reason}`])
            : 'none'),
          h('dt', {}, 'Freezes'), h('dd', {}, item.inFreeze.join(', ') || 'none'))),
      h('section', { class: 'card', id: 'decision' }, h('h2', {}, 'Risk and decision'),
        item.assessment ? h('p', {}, 'Risk ', badge(item.assessment.level), ` score ${item.assessment.score}: ` +
          `${item.assessment.downstreamCis} CIs downstream, ${item.assessment.servicesDown} services down, ` +
          `${item.assessment.servicesDegraded} degraded (assessed at position ${item.assessment.position})`) : h('p', { class: 'muted' }, 'Not assessed.'),
        decision ? [
          h('p', {}, `Policy version ${decision.policyVersion}: `, decision.autoApprove ? badge('approved outright', 'APPROVED') : 'approvals needed',
            decision.deny.length ? [' · denied: ', decision.deny.join('; ')] : ''),
          table('Approvals the policy asked for', ['Role', 'Count', 'Reason', 'Approved by', 'Met'], decision.approvals.map((a) => [
            a.role || 'named', a.count, a.reason, a.approvedBy.join(', ') || '—', a.met ? 'yes' : 'no'])),
          h('p', { id: 'replay-result' }, 'Replayed now: ', decision.replay.matches
            ? badge('same decision', 'APPROVED') : badge('differs', 'FAILED'),
          decision.replay.policyIntact ? '' : ' · the policy text changed', decision.replay.regorusDiffers ? ' · another Rego engine version' : '',
          decision.replay.error ? ` · ${decision.replay.error}` : ''),
        ] : h('p', { class: 'muted' }, 'No policy decision recorded.'))),
    item.assessment ? assessedServices(ctx, item.assessment) : null,
    h('h2', {}, 'Transitions'),
    table(null, ['Position', 'When', 'From', 'To', 'By', 'Note'], item.transitions.map((t) => [
      h('a', { href: ctx.href('change', item.id, {}, t.position) }, t.position), showTime(t.at), t.from || '—', badge(t.to), t.by, t.note || '—'])),
    h('h2', {}, 'Approvals'),
    table(null, ['By', 'Decision', 'Authority', 'When', 'Note'], item.approvals.map((a) => [
      a.by, badge(a.decision === 'APPROVE' ? 'APPROVED' : 'REJECTED'), a.authority || '—', showTime(a.at), a.note || '—'])),
    h('h2', {}, `CI edits made under it (${item.edits.length})`),
    table(null, ['Position', 'When', 'Edit', 'CI', 'By'], item.edits.map((e) => [
      e.position, showTime(e.recordedAt), e.type, e.ci ? ciLink(ctx, e.ci) : e.ciId, e.principal])),
    item.comments.length ? [h('h2', {}, 'Comments'), table(null, ['By', 'When', 'Text'], item.comments.map((c) => [c.by, showTime(c.at), c.text]))] : null);
}
