// The README's "Point your app at it" Nodemailer transport, as written there,
// with the host, port and certificate the test gives (tests/it/smtp/frameworks.rs).
// Usage: node readme_smtp.mjs HOST PORT SECURE CA_FILE USER TO   (password: $UNCORREO_KEY)
import fs from "node:fs";
import nodemailer from "nodemailer";

const [host, port, secure, ca, user, to] = process.argv.slice(2);
const transporter = nodemailer.createTransport({
  host,
  port: Number(port),
  secure: secure === "true",
  requireTLS: true,
  auth: { user, pass: process.env.UNCORREO_KEY },
  tls: { ca: fs.readFileSync(ca) },
});
const info = await transporter.sendMail({
  from: "app@sender.example",
  to,
  subject: "Nodemailer says hi",
  text: "Your code is 482913.",
});
console.log(JSON.stringify({ response: info.response }));
