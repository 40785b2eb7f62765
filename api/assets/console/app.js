// The console's shell: sign-in, the page list, the time control, and the router. The URL's
// hash names the page and the moment (`#/ci/<id>?at=1234`), so a link reproduces a view;
// every page is drawn again from the API when the hash changes.

import { gql, token, signIn, signOut } from './api.js';
import { parseMoment, momentParam, resolveMoment, drawTimeControl, stepBack, stepForward } from './moment.js';
import { h, fill } from './dom.js';
import * as views from './views.js';
import { followLog } from './live.js';

/** Every page: its title, its view, and whether the page list names it. */
const PAGES = {
  search: { title: 'Search', view: views.search, listed: true },
  changes: { title: 'Changes', view: views.changes, listed: true },
  calendar: { title: 'Calendar', view: views.calendar, listed: true },
  diff: { title: 'Diff', view: views.diff, listed: true },
  replay: { title: 'Replay', view: views.replay, listed: true },
  ci: { title: 'CI', view: views.ci },
  impact: { title: 'Impact', view: views.impact },
  change: { title: 'Change', view: views.change },
};

const main = document.getElementById('main');
const bar = document.getElementById('bar');
const nav = document.getElementById('nav');
const timeControl = document.getElementById('time');
/** Said by screen readers (aria-live): what is loading, and what was drawn. */
const status = document.getElementById('status');

/** What tests and the curious can read: each page's time to interactive, the picture. */
const consoleState = (window.cmdbConsole = Object.assign(window.cmdbConsole || {}, { timings: [] }));

let generation = 0;
let shown = null;
let stopFollowing = () => {};

/** While the page shows "now": a notice when the log moves on, with a way to show the latest. */
function followWhileNow(moment, resolved) {
  stopFollowing();
  stopFollowing = () => {};
  if (moment.kind !== 'now') return;
  const notice = document.getElementById('newer');
  stopFollowing = followLog(resolved.position, (position) => {
    fill(notice, `The log has moved on to position ${position}. `,
      h('button', { type: 'button', id: 'show-latest', on: { click: () => render() } }, 'Show the latest'));
    notice.hidden = false;
  });
}

/** The page, its argument, its parameters and the moment, from the URL's hash. */
function route() {
  const hash = location.hash.replace(/^#\/?/, '');
  const cut = hash.indexOf('?');
  const path = cut < 0 ? hash : hash.slice(0, cut);
  const params = new URLSearchParams(cut < 0 ? '' : hash.slice(cut + 1));
  const [page, ...rest] = path.split('/');
  const moment = parseMoment(params.get('at'));
  params.delete('at');
  return { page: page || 'search', arg: decodeURIComponent(rest.join('/')), params, moment };
}

/**
 * A link to a page at a moment: the moment shown now unless `at` says otherwise (null for
 * "now", a position or a time for that moment).
 */
function href(page, arg = '', params = {}, at = undefined) {
  const search = params instanceof URLSearchParams
    ? new URLSearchParams(params)
    : new URLSearchParams(Object.entries(params).filter(([, value]) => value !== undefined && value !== null && value !== ''));
  const moment = at === undefined ? momentParam(route().moment) : (at === null ? null : String(at));
  if (moment) search.set('at', moment);
  const query = search.toString();
  return `#/${page}${arg ? `/${encodeURIComponent(arg)}` : ''}${query ? `?${query}` : ''}`;
}

function go(page, arg = '', params = {}) {
  location.hash = href(page, arg, params);
}

function setMoment(moment) {
  const current = route();
  location.hash = href(current.page, current.arg, current.params, momentParam(moment));
}

/** Shows `position` in the URL and the time control without drawing the page again (replay). */
let positionsShown = 0;

async function showPosition(position) {
  const mine = ++positionsShown;
  stopFollowing();
  const current = route();
  history.replaceState(null, '', href(current.page, current.arg, current.params, position));
  const moment = { kind: 'position', value: position };
  const resolved = await resolveMoment(moment);
  // A later step may have answered first: only the latest is drawn.
  if (mine !== positionsShown) return;
  shown = resolved;
  drawTimeControl(timeControl, moment, resolved, setMoment);
}

function drawNav(page, who) {
  fill(nav, 
    h('strong', {}, 'CMDB'),
    ...Object.entries(PAGES).filter(([, entry]) => entry.listed).map(([name, entry]) =>
      h('a', { href: href(name), 'aria-current': name === page ? 'page' : null }, entry.title)),
    h('a', { href: '/graphql', target: '_blank', rel: 'noopener' }, 'GraphiQL'),
    h('span', { class: 'who' }, `signed in as ${who.principal} (${who.roles.join(', ').toLowerCase() || 'no roles'})`),
    h('button', { type: 'button', id: 'sign-out', on: { click: () => { signOut(); me = null; render(); } } }, 'Sign out'));
}

let me = null;

function drawSignIn(message) {
  stopFollowing();
  bar.hidden = true;
  const input = h('input', { id: 'token-input', type: 'password', autocomplete: 'off', spellcheck: 'false', required: true });
  const error = h('p', { class: 'error', id: 'sign-in-error', role: 'alert' }, message || '');
  const form = h('form', { 'aria-label': 'Sign in' },
    h('label', { for: 'token-input' }, 'Bearer token'), input,
    h('p', {}, h('button', { type: 'submit', class: 'primary' }, 'Sign in')), error);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    signIn(input.value);
    try {
      me = (await gql('query Me { me { principal roles } }')).me;
      render();
    } catch (failure) {
      signOut();
      error.textContent = `The token was refused: ${failure.message}`;
      input.focus();
    }
  });
  fill(main, h('section', { class: 'signin' },
    h('h1', {}, 'Sign in to the CMDB console'),
    h('p', {}, 'Paste a bearer token: the one `cmdb serve` printed for a new data directory, or one from ',
      h('code', {}, 'cmdb token create --principal NAME'), '. It is kept in this tab only, never in a link.'),
    form));
  main.dataset.page = 'sign-in';
  main.dataset.state = 'ready';
  input.focus();
}

async function render() {
  const mine = ++generation;
  const started = performance.now();
  if (!token()) return drawSignIn();
  const current = route();
  const page = PAGES[current.page];
  main.dataset.page = current.page;
  main.dataset.state = 'loading';
  status.textContent = 'Loading…';
  try {
    if (!me) me = (await gql('query Me { me { principal roles } }')).me;
    bar.hidden = false;
    drawNav(current.page, me);
    if (!page) throw new Error(`there is no page "${current.page}"`);
    const resolved = await resolveMoment(current.moment);
    if (mine !== generation) return undefined;
    shown = resolved;
    drawTimeControl(timeControl, current.moment, resolved, setMoment);
    document.getElementById('newer').hidden = true;
    followWhileNow(current.moment, resolved);
    document.title = `${page.title}${current.arg ? ` ${current.arg}` : ''} · CMDB console`;
    await page.view({
      ...current, resolved, position: resolved.position, main, href, go, showPosition,
      alive: () => mine === generation,
    });
    if (mine !== generation) return undefined;
    const elapsedMs = Math.round(performance.now() - started);
    consoleState.timings.push({ page: current.page, arg: current.arg, ms: elapsedMs });
    main.dataset.renderMs = String(elapsedMs);
    // The first page drawn after the page loaded: the time since the browser began loading it.
    if (!main.dataset.loadMs) main.dataset.loadMs = String(Math.round(performance.now()));
    main.dataset.state = 'ready';
    status.textContent = `${document.title}: position ${resolved.position}`;
    if (!main.contains(document.activeElement) || document.activeElement === main) {
      const title = document.getElementById('page-title');
      if (title && !main.querySelector('[autofocus]')) title.focus({ preventScroll: true });
      else if (main.querySelector('[autofocus]')) main.querySelector('[autofocus]').focus();
    }
  } catch (failure) {
    if (mine !== generation) return undefined;
    if (failure.code === 'UNAUTHENTICATED') {
      signOut();
      me = null;
      return drawSignIn(`Signed out: ${failure.message}`);
    }
    fill(main, h('h1', { tabindex: '-1', id: 'page-title' }, 'This view could not be drawn'),
      h('p', { class: 'error', role: 'alert' }, `${failure.message}${failure.code ? ` (${failure.code})` : ''}`),
      h('p', {}, h('a', { href: href('search', '', {}, null) }, 'Back to search, now')));
    main.dataset.state = 'error';
    status.textContent = 'This view could not be drawn';
  }
  return undefined;
}

document.addEventListener('keydown', (event) => {
  const typing = event.target.closest && event.target.closest('input, select, textarea, button');
  if (typing || !shown || event.altKey || event.ctrlKey || event.metaKey) return;
  if (event.key === '[') stepBack(shown, setMoment);
  if (event.key === ']') stepForward(shown, setMoment);
});
window.addEventListener('hashchange', render);
render();
