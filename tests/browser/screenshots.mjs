// Screenshots of the three pages, light and dark, for the README. Run by
// `cargo test --test it -- --ignored ui::screenshots` (which starts the appliance);
// writes SCREENSHOTS_DIR/{start,inbox,message}-{light,dark}.png.

import path from 'node:path';
import { HTTP, launch, sendMail, createMailbox, rememberInContext } from './lib.mjs';

const out = process.env.SCREENSHOTS_DIR;
if (!out) {
  console.error('set SCREENSHOTS_DIR');
  process.exit(2);
}

const signup = await createMailbox('signup-flow');
const other = await createMailbox('password-reset');
const mails = [
  { from: 'Acme Accounts <accounts@acme.example>', subject: 'Welcome to Acme: confirm your email', text: 'Hi Ada,\r\n\r\nConfirm your address: https://acme.example/confirm?token=3f9c2a\r\n\r\nThe Acme team' },
  {
    from: 'Acme Billing <billing@acme.example>',
    subject: 'Your invoice for November',
    text: 'Your invoice is attached.',
    attachment: { filename: 'invoice-2026-11.pdf', type: 'application/pdf', content: '%PDF-1.4 not really a PDF' },
  },
  { from: 'Acme Security <security@acme.example>', subject: 'Your sign-in code', text: 'Your verification code: 482913\r\nIt expires in 10 minutes.' },
  {
    from: 'Acme News <news@acme.example>',
    subject: 'What is new this week',
    html: [
      '<!doctype html><html><body style="font-family: Georgia, serif; background:#f6f1e7; margin:0; padding:24px">',
      '<table role="presentation" style="max-width:560px;margin:auto;background:#fff;border-radius:8px;padding:24px">',
      '<tr><td><h1 style="color:#7a3e00;margin-top:0">This week at Acme</h1>',
      '<p>Three new features shipped, and one bug we are sorry about.</p>',
      '<img src="https://tracker.acme.example/open.gif" width="1" height="1" alt="">',
      '<p><a href="https://acme.example/blog/week-48" style="color:#fff;background:#7a3e00;padding:8px 14px;border-radius:4px;text-decoration:none">Read the post</a></p>',
      '<p style="color:#777;font-size:12px">You get this because you signed up at acme.example.</p>',
      '</td></tr></table></body></html>',
    ].join('\n'),
  },
  { from: 'Acme Security <security@acme.example>', subject: 'New sign-in from Firefox on Linux', text: 'Was this you? If not, reset your password: https://acme.example/reset?token=91ab' },
];
for (const mail of mails) await sendMail({ to: signup.address, ...mail });
await sendMail({ to: other.address, from: 'Acme <no-reply@acme.example>', subject: 'Reset your password', text: 'Code: 551026' });

const { browser, close } = await launch();
try {
  for (const scheme of ['light', 'dark']) {
    const context = await browser.newContext({ viewport: { width: 1100, height: 720 }, colorScheme: scheme, deviceScaleFactor: 1 });
    await rememberInContext(context, other);
    await context.addInitScript((entry) => {
      const list = JSON.parse(localStorage.getItem('uncorreo.inboxes') || '[]');
      if (!list.some((i) => i.address === entry.address)) list.push(entry);
      localStorage.setItem('uncorreo.inboxes', JSON.stringify(list));
    }, { address: signup.address, token: signup.session_token, expires_at: signup.expires_at });
    const page = await context.newPage();

    await page.goto(`${HTTP}/#/`);
    await page.locator('.inbox', { hasText: signup.address }).waitFor();
    await page.locator('.inbox', { hasText: other.address }).waitFor();
    await page.screenshot({ path: path.join(out, `start-${scheme}.png`) });

    await page.goto(`${HTTP}/#/inbox/${encodeURIComponent(signup.address)}`);
    await page.locator('.message', { hasText: 'New sign-in from Firefox' }).waitFor();
    await page.locator('#live[data-state="live"]').waitFor();
    // Let the arrival highlight fade.
    await page.waitForTimeout(2200);
    await page.screenshot({ path: path.join(out, `inbox-${scheme}.png`) });

    await page.locator('.message', { hasText: 'Your sign-in code' }).locator('a.open').click();
    await page.locator('#codes').waitFor();
    await page.screenshot({ path: path.join(out, `message-${scheme}.png`) });

    await page.goto(`${HTTP}/#/inbox/${encodeURIComponent(signup.address)}`);
    await page.locator('.message', { hasText: 'What is new this week' }).locator('a.open').click();
    await page.getByRole('tab', { name: 'HTML' }).click();
    await page.frameLocator('#html-frame').locator('h1').waitFor();
    await page.screenshot({ path: path.join(out, `message-html-${scheme}.png`) });
    await context.close();
  }
  console.log(`screenshots written to ${out}`);
} finally {
  await close();
}
