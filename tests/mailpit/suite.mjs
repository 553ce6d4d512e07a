// A Mailpit-style suite, unchanged but for its base URL and password, run
// against uncorreo's /mailpit API with the real npm `mailpit-api` client and
// mail sent over SMTP by nodemailer. tests/mailpit.rs starts the appliance,
// creates the tenants and runs this file; any failed assertion exits non-zero.
import assert from "node:assert/strict";
import { MailpitClient } from "mailpit-api";
import nodemailer from "nodemailer";

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`missing environment variable ${name}`);
  return v;
};
const BASE = env("MAILPIT_BASE");
const [KEY_A, KEY_B, TOKEN_ANON] = [env("KEY_A"), env("KEY_B"), env("TOKEN_ANON")];
const [BOX_A, BOX_A2, BOX_B, BOX_ANON] = [env("BOX_A"), env("BOX_A2"), env("BOX_B"), env("BOX_ANON")];

const client = (password) => new MailpitClient(BASE, { auth: { username: "suite@example.test", password } });
const a = client(KEY_A);
const b = client(KEY_B);
const anon = client(TOKEN_ANON);

const smtp = nodemailer.createTransport({
  host: "127.0.0.1",
  port: Number(env("SMTP_PORT")),
  secure: false,
  ignoreTLS: true,
});
const pdf = Buffer.from("%PDF-1.4 not really a pdf \x00\x01\x02\xff", "latin1");

const steps = [];
const step = (name, fn) => steps.push([name, fn]);
const rejects = async (promise, status) => {
  await assert.rejects(promise, (e) => {
    assert.match(String(e.message), new RegExp(`Mailpit API Error: ${status} `));
    return true;
  });
};

let first; // the SMTP message to BOX_A

step("info", async () => {
  const info = await a.getInfo();
  assert.match(info.Version, /^uncorreo-/);
  assert.equal(info.Messages, 0);
  assert.equal(info.Unread, 0);
  assert.equal(typeof info.RuntimeStats.Uptime, "number");
  const ui = await a.getConfiguration();
  assert.equal(ui.MessageRelay.Enabled, false);
});

step("send over SMTP, waitForMessage by to: and subject:", async () => {
  await smtp.sendMail({
    from: '"Shop" <noreply@shop.example>',
    to: `Ana <${BOX_A}>`,
    cc: "audit@shop.example",
    subject: "Welcome Ana",
    text: "Your code is 482913.\nConfirm: https://shop.example/verify?token=abc123",
    html: "<p>Your code is <b>482913</b>.</p>",
    attachments: [{ filename: "report.pdf", content: pdf, contentType: "application/pdf" }],
  });
  const byTo = await a.waitForMessage({ query: `to:${BOX_A}` }, { timeout: 10000, interval: 100 });
  const bySubject = await a.waitForMessage({ query: 'subject:"Welcome Ana"' }, { timeout: 10000, interval: 100 });
  assert.equal(byTo.ID, bySubject.ID);
  first = byTo;
});

step("message fields", async () => {
  const m = first;
  assert.equal(m.Subject, "Welcome Ana");
  assert.deepEqual(m.From, { Name: "Shop", Address: "noreply@shop.example" });
  assert.deepEqual(m.To, [{ Name: "Ana", Address: BOX_A }]);
  assert.deepEqual(m.Cc, [{ Name: "", Address: "audit@shop.example" }]);
  assert.match(m.Text, /Your code is 482913/);
  assert.match(m.HTML, /<b>482913<\/b>/);
  assert.equal(m.Attachments.length, 1);
  assert.equal(m.Attachments[0].FileName, "report.pdf");
  assert.equal(m.Attachments[0].ContentType, "application/pdf");
  assert.equal(m.Attachments[0].Size, pdf.length);
  assert.match(m.Attachments[0].Checksums.SHA256, /^[0-9a-f]{64}$/);
  assert.ok(m.MessageID.length > 0);
  assert.ok(m.Size > 0);
  // Ours, next to Mailpit's fields.
  assert.deepEqual(m.Codes, ["482913"]);
  assert.equal(m.Mailbox, BOX_A);
});

step("headers and raw", async () => {
  const h = await a.getMessageHeaders(first.ID);
  assert.deepEqual(h.Subject, ["Welcome Ana"]);
  assert.ok(Array.isArray(h["Message-Id"]), Object.keys(h).join(","));
  assert.ok(h.Received[0].includes("(uncorreo)"));
  const keys = Object.keys(h);
  assert.deepEqual(keys, [...keys].sort(), "header keys are sorted");
  const raw = await a.getMessageSource(first.ID);
  assert.match(raw, /^Received: /);
  assert.match(raw, /\r\nSubject: Welcome Ana\r\n/);
  assert.equal(await a.getMessageSource("latest"), raw);
});

step("attachment part", async () => {
  const blob = await a.getMessageAttachment(first.ID, first.Attachments[0].PartID);
  assert.equal(blob.type, "application/pdf");
  assert.deepEqual(Buffer.from(await blob.arrayBuffer()), pdf);
  await rejects(a.getMessageAttachment(first.ID, "999"), 404);
});

let second;
step("JSON send and the list", async () => {
  const sent = await a.sendMessage({
    From: { Email: "app@example.com", Name: "App" },
    To: [{ Email: BOX_A2 }],
    Subject: "Second",
    Text: "hello again",
    Tags: ["json"],
  });
  assert.equal(typeof sent.ID, "string");
  second = sent.ID;
  const list = await a.listMessages();
  assert.equal(list.total, 2);
  assert.equal(list.messages_count, 2);
  assert.equal(list.start, 0);
  assert.deepEqual(list.messages.map((m) => m.ID), [second, first.ID], "newest first, across the user's mailboxes");
  const s = list.messages[1];
  for (const key of ["ID", "MessageID", "Read", "From", "To", "Cc", "Bcc", "ReplyTo", "Subject", "Created", "Username", "Tags", "Size", "Attachments", "Snippet"]) {
    assert.ok(key in s, `summary has ${key}`);
  }
  assert.equal(s.Read, true, "opened by waitForMessage");
  assert.equal(s.Attachments, 1);
  assert.match(s.Snippet, /^Your code is 482913/);
  assert.ok(!Number.isNaN(Date.parse(s.Created)));
  assert.deepEqual(list.messages[0].Tags, ["json"]);
  assert.equal(list.messages[0].Read, false);
  assert.equal(list.unread, 1);
  const page = await a.listMessages(1, 1);
  assert.deepEqual(page.messages.map((m) => m.ID), [first.ID]);
});

step("tags and read status", async () => {
  await a.setTags({ IDs: [first.ID], Tags: ["signup", "ana"] });
  assert.deepEqual(await a.getTags(), ["ana", "json", "signup"]);
  const tagged = await a.searchMessages({ query: "tag:signup" });
  assert.deepEqual(tagged.messages.map((m) => m.ID), [first.ID]);
  await a.setReadStatus({ Read: true });
  assert.equal((await a.searchMessages({ query: "is:unread" })).messages_count, 0);
});

step("one tenant never sees another's mail", async () => {
  await smtp.sendMail({ from: "x@example.com", to: BOX_B, subject: "For B only", text: "b" });
  await smtp.sendMail({ from: "x@example.com", to: BOX_ANON, subject: "For anon only", text: "c" });
  const mineB = await b.waitForMessage({ query: "subject:\"For B only\"" }, { timeout: 10000, interval: 100 });
  const mineAnon = await anon.waitForMessage({ query: "subject:\"For anon only\"" }, { timeout: 10000, interval: 100 });
  assert.deepEqual((await b.listMessages()).messages.map((m) => m.ID), [mineB.ID]);
  assert.deepEqual((await anon.listMessages()).messages.map((m) => m.ID), [mineAnon.ID]);
  assert.equal((await a.listMessages()).total, 2);
  assert.equal((await a.searchMessages({ query: "only" })).messages_count, 0);
  assert.equal((await b.searchMessages({ query: "Welcome" })).messages_count, 0);
  await rejects(b.getMessageSummary(first.ID), 404);
  await rejects(b.getMessageSource(first.ID), 404);
  await rejects(anon.getMessageHeaders(first.ID), 404);
  // Deleting "everything" deletes only the caller's own.
  await anon.deleteMessages();
  assert.equal((await a.listMessages()).total, 2);
  assert.equal((await b.listMessages()).total, 1);
  // And sending cannot reach another tenant's mailbox.
  await rejects(b.sendMessage({ From: { Email: "x@example.com" }, To: [{ Email: BOX_A }], Subject: "sneak" }), 400);
  assert.equal((await a.listMessages()).total, 2);
});

step("a wrong credential is 401", async () => {
  await rejects(client("uct_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").getInfo(), 401);
  await rejects(client("not-a-session-token").listMessages(), 401);
  await rejects(new MailpitClient(BASE).listMessages(), 401);
});

step("search with wait= returns when the message arrives", async () => {
  const waiting = a.searchMessages({ query: "subject:Later", wait: 20 });
  await smtp.sendMail({ from: "x@example.com", to: BOX_A, subject: "Later", text: "l" });
  const found = await waiting;
  assert.equal(found.messages_count, 1);
  assert.equal(found.messages[0].Subject, "Later");
});

step("deleteMessagesBySearch", async () => {
  await a.deleteMessagesBySearch({ query: 'subject:"Welcome Ana"' });
  const left = await a.listMessages();
  assert.equal(left.messages.some((m) => m.ID === first.ID), false);
  assert.equal(left.total, 2);
  await rejects(a.getMessageSummary(first.ID), 404);
  await a.deleteMessages({ IDs: [second] });
  assert.equal((await a.listMessages()).total, 1);
});

step("unsupported endpoints answer 501", async () => {
  await rejects(a.htmlCheck(), 501);
  await rejects(a.linkCheck(), 501);
  await rejects(a.spamAssassinCheck(), 501);
  await rejects(a.getChaosTriggers(), 501);
});

let passed = 0;
let failed = 0;
for (const [name, fn] of steps) {
  try {
    await fn();
    passed += 1;
    console.log(`ok - ${name}`);
  } catch (e) {
    failed += 1;
    console.log(`not ok - ${name}\n${e.stack ?? e}`);
    break; // later steps build on earlier ones
  }
}
smtp.close();
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 && passed === steps.length ? 0 : 1);
