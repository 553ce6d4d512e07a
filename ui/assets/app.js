// Entry point: a hash router over three pages. `#/` start,
// `#/inbox/ADDRESS` one inbox live, `#/inbox/ADDRESS/ID` one message.

import { tickCountdowns } from './dom.js';
import { startPage } from './start.js';
import { inboxPage } from './inbox.js';
import { messagePage } from './message.js';

const main = document.getElementById('main');
let leave = null;

function parse(hash) {
  const parts = hash.replace(/^#\/?/, '').split('/').filter(Boolean).map(decodeURIComponent);
  if (parts[0] === 'inbox' && parts.length === 2) return { page: 'inbox', address: parts[1] };
  if (parts[0] === 'inbox' && parts.length === 3) return { page: 'message', address: parts[1], id: parts[2] };
  return { page: 'start' };
}

function route() {
  // In-page anchors such as the skip link are not routes.
  if (location.hash && !location.hash.startsWith('#/')) return;
  if (leave) leave();
  leave = null;
  main.replaceChildren();
  const live = document.getElementById('live');
  live.textContent = '';
  delete live.dataset.state;
  const where = parse(location.hash);
  const view = where.page === 'inbox' ? inboxPage : where.page === 'message' ? messagePage : startPage;
  leave = view(main, where) || null;
  window.scrollTo(0, 0);
}

window.addEventListener('hashchange', route);
setInterval(tickCountdowns, 1000);
route();
// boot.js's requests were for the first page only (adopted by now, if it
// was an inbox): a later visit must ask afresh, not read them stale.
window.uncorreoEarlyRequests = undefined;
