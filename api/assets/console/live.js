// Following the log while the page shows "now": one GraphQL subscription over the server's
// WebSocket (graphql-transport-ws, the token in `connection_init`). New events do not redraw
// the page under the user's hands; the header says how far the log has moved and offers to
// show the latest.

import { token } from './api.js';

/** How long to wait before following again after the socket closed unexpectedly. */
const RECONNECT_DELAY_MS = 5_000;

const SUBSCRIPTION = 'subscription Follow($after: Position) { events(after: $after) { position } }';

/**
 * Calls `onPosition(position)` for each event after `after` until the returned function is
 * called. A closed socket is opened again after RECONNECT_DELAY_MS, from the last position seen.
 */
export function followLog(after, onPosition) {
  let last = after;
  let stopped = false;
  let socket = null;
  let retry = null;
  const open = () => {
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    socket = new WebSocket(`${scheme}://${location.host}/graphql/ws`, 'graphql-transport-ws');
    socket.addEventListener('open', () => {
      socket.send(JSON.stringify({ type: 'connection_init', payload: { Authorization: `Bearer ${token() || ''}` } }));
    });
    socket.addEventListener('message', (message) => {
      const frame = JSON.parse(message.data);
      if (frame.type === 'connection_ack') {
        socket.send(JSON.stringify({ id: 'follow', type: 'subscribe', payload: { query: SUBSCRIPTION, variables: { after: last } } }));
      } else if (frame.type === 'ping') {
        socket.send(JSON.stringify({ type: 'pong' }));
      } else if (frame.type === 'next' && frame.payload.data) {
        last = Math.max(last, frame.payload.data.events.position);
        onPosition(last);
      }
    });
    socket.addEventListener('close', () => {
      if (!stopped) retry = setTimeout(open, RECONNECT_DELAY_MS);
    });
  };
  open();
  return () => {
    stopped = true;
    clearTimeout(retry);
    if (socket) socket.close();
  };
}
