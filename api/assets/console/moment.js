// The one moment every view reads: now, a time, or a position in the log. It lives in the
// URL (`at=` in the hash: digits for a position, an RFC 3339 time otherwise, absent for now),
// so a link shows a colleague the same thing. The time control in the header edits it.

import { gql } from './api.js';
import { h as el, fill } from './dom.js';

/** The moment named by the `at` parameter: {kind: 'now'|'position'|'time', value}. */
export function parseMoment(text) {
  if (!text) return { kind: 'now' };
  if (/^\d+$/.test(text)) return { kind: 'position', value: Number(text) };
  return { kind: 'time', value: text };
}

/** The `at` parameter for a moment (null for now). */
export function momentParam(moment) {
  if (moment.kind === 'position') return String(moment.value);
  if (moment.kind === 'time') return moment.value;
  return null;
}

/** The variables every `at(position: $position, time: $time)` query takes. */
export function atVariables(moment) {
  return {
    position: moment.kind === 'position' ? moment.value : null,
    time: moment.kind === 'time' ? moment.value : null,
  };
}

const RESOLVE = `query Resolve($position: Position, $time: DateTime) {
  head { position recordedAt }
  at(position: $position, time: $time) { position requestedPosition snappedToCommit time }
}`;

/** What the moment is in the log: the position read, its time, and the head. */
export async function resolveMoment(moment) {
  const data = await gql(RESOLVE, atVariables(moment));
  return {
    head: data.head.position,
    headTime: data.head.recordedAt,
    position: data.at.position,
    time: data.at.time,
    snapped: data.at.snappedToCommit,
  };
}

/** The position before the commit that ends at `position` (one event back, whole commits). */
export async function previousPosition(position) {
  if (position <= 1) return null;
  const data = await gql('query Commit($p: Position!) { event(position: $p) { commit { firstPosition } } }', { p: position });
  const first = data.event ? data.event.commit.firstPosition : position;
  return Math.max(first - 1, 1);
}

/** "2026-12-03 20:11 – 21:11 UTC" (the day once when both ends share it). */
export function showSpan(start, end) {
  if (!start) return '—';
  const from = showTime(start).replace(/:\d\d UTC$/, '');
  const to = showTime(end).replace(/:\d\d UTC$/, '');
  return `${from} – ${to.slice(0, 10) === from.slice(0, 10) ? to.slice(11) : to} UTC`;
}

/** "2026-12-03 20:11:10 UTC" from an RFC 3339 time. */
export function showTime(iso) {
  if (!iso) return '—';
  return `${iso.replace('T', ' ').replace(/\.\d+/, '').replace('Z', '')} UTC`;
}

/**
 * Draws the time control into `container` for the moment shown (`resolved`), and calls
 * `go(moment)` when the user picks another one.
 */
export function drawTimeControl(container, moment, resolved, go) {
  const kind = el('select', { id: 'moment-kind' },
    el('option', { value: 'now' }, 'Now'),
    el('option', { value: 'time' }, 'A time (UTC)'),
    el('option', { value: 'position' }, 'A position'));
  kind.value = moment.kind;
  const time = el('input', { id: 'moment-time', type: 'datetime-local', step: '1' });
  time.value = (moment.kind === 'time' ? moment.value : resolved.time || '').replace(/Z$/, '').replace(/\.\d+/, '').slice(0, 19);
  const position = el('input', { id: 'moment-position', type: 'number', min: '1', max: String(resolved.head), step: '1' });
  position.value = String(resolved.position);
  const timeLabel = el('label', {}, 'Time (UTC) ', time);
  const positionLabel = el('label', {}, 'Position ', position);
  timeLabel.hidden = moment.kind !== 'time';
  positionLabel.hidden = moment.kind !== 'position';
  const back = el('button', { type: 'button', id: 'step-back', 'aria-keyshortcuts': '[', title: 'One commit back ([)' }, '◀ Back');
  const forward = el('button', { type: 'button', id: 'step-forward', 'aria-keyshortcuts': ']', title: 'One commit forward (])' }, 'Forward ▶');
  const slider = el('input', { id: 'moment-slider', type: 'range', min: '1', max: String(resolved.head), step: '1', 'aria-label': 'Position in the log' });
  slider.value = String(resolved.position);
  back.disabled = resolved.position <= 1;
  forward.disabled = resolved.position >= resolved.head;
  const shown = el('span', { class: 'shown', id: 'moment-shown' },
    `Showing position ${resolved.position} of ${resolved.head}` +
    (resolved.time ? ` · ${showTime(resolved.time)}` : '') +
    (moment.kind === 'now' ? ' · now (follows new events)' : '') +
    (resolved.snapped ? ' · snapped to the end of its commit' : ''));

  kind.addEventListener('change', () => {
    if (kind.value === 'now') go({ kind: 'now' });
    if (kind.value === 'position') go({ kind: 'position', value: resolved.position });
    if (kind.value === 'time') go({ kind: 'time', value: resolved.time || resolved.headTime });
  });
  time.addEventListener('change', () => {
    if (time.value) go({ kind: 'time', value: `${time.value.length === 16 ? `${time.value}:00` : time.value}Z` });
  });
  position.addEventListener('change', () => {
    const value = Number(position.value);
    if (Number.isInteger(value) && value >= 1) go({ kind: 'position', value: Math.min(value, resolved.head) });
  });
  slider.addEventListener('change', () => go({ kind: 'position', value: Number(slider.value) }));
  slider.addEventListener('input', () => { shown.textContent = `Release to show position ${slider.value} of ${resolved.head}`; });
  back.addEventListener('click', () => stepBack(resolved, go));
  forward.addEventListener('click', () => stepForward(resolved, go));
  fill(container, el('label', {}, 'Moment ', kind), timeLabel, positionLabel, back, slider, forward, shown);
}

export async function stepBack(resolved, go) {
  const previous = await previousPosition(resolved.position);
  if (previous !== null) go({ kind: 'position', value: previous });
}

export function stepForward(resolved, go) {
  if (resolved.position < resolved.head) go({ kind: 'position', value: resolved.position + 1 });
}
