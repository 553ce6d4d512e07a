//! The extraction corpus (issue #21): mails shaped like what real services
//! send — every code format, every decoy class, link kinds, tracking
//! redirects, HTML-only and multipart bodies, quoted-printable and base64,
//! in English, Spanish, German, French, Portuguese and Italian — each with
//! the codes and action links a CI job expects. The test builds each mail as
//! raw MIME, runs the real listing summary on it, and prints code and link
//! recall and precision; each must be at least 95 %.
//!
//! `cargo test -p uncorreo-mail --test corpus -- --nocapture` shows the table.

use std::collections::BTreeSet;

use uncorreo_mail::extract::{extract_message, LinkKind};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Format {
    /// text/plain only.
    Text,
    /// text/html only.
    Html,
    /// multipart/alternative with both.
    Alternative,
    /// multipart/mixed: alternative plus a PDF attachment.
    Mixed,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Encoding {
    Plain,
    QuotedPrintable,
    Base64,
}

#[derive(Clone, Copy)]
struct Mail {
    name: &'static str,
    lang: &'static str,
    /// What the mail exercises (a format or a decoy class).
    class: &'static str,
    subject: &'static str,
    format: Format,
    encoding: Encoding,
    text: &'static str,
    html: &'static str,
    codes: &'static [&'static str],
    links: &'static [&'static str],
    /// Links that must be classified this way (and so never be actions).
    kinds: &'static [(&'static str, LinkKind)],
}

const BASE: Mail = Mail {
    name: "",
    lang: "en",
    class: "",
    subject: "",
    format: Format::Text,
    encoding: Encoding::Plain,
    text: "",
    html: "",
    codes: &[],
    links: &[],
    kinds: &[],
};

/// A footer most marketing-platform mails carry: help, privacy, unsubscribe,
/// social icons, a logo and an open pixel.
macro_rules! footer {
    () => {
        "<table width=\"100%\"><tr><td style=\"color:#999;font-size:12px\">\
         <a href=\"https://www.facebook.com/acmeapp\"><img src=\"https://cdn.acme.example/i/fb.png\" width=\"24\" height=\"24\" alt=\"Facebook\"></a> \
         <a href=\"https://twitter.com/acmeapp\"><img src=\"https://cdn.acme.example/i/tw.png\" width=\"24\" height=\"24\" alt=\"Twitter\"></a> \
         <a href=\"https://www.linkedin.com/company/acme\"><img src=\"https://cdn.acme.example/i/in.png\" width=\"24\" alt=\"LinkedIn\"></a><br>\
         Acme Inc., 548 Market St, San Francisco, CA 94104 &middot; &copy; 2026 Acme<br>\
         <a href=\"https://acme.example/help\">Help center</a> &middot; <a href=\"https://acme.example/legal/privacy\">Privacy</a> &middot; \
         <a href=\"https://email.acme.example/unsubscribe?u=9f8e7d&amp;list=12\">Unsubscribe</a>\
         </td></tr></table>\
         <img src=\"https://email.acme.example/o/9f8e7d.gif\" width=\"1\" height=\"1\" alt=\"\" style=\"display:block\">"
    };
}

macro_rules! logo {
    () => {
        "<table width=\"100%\"><tr><td align=\"center\"><a href=\"https://acme.example/\"><img src=\"https://cdn.acme.example/logo.png\" width=\"120\" height=\"40\" alt=\"Acme\"></a></td></tr></table>"
    };
}

macro_rules! preheader {
    ($t:expr) => {
        concat!(
            "<div style=\"display:none;max-height:0;overflow:hidden;mso-hide:all\">",
            $t,
            "&zwnj;&nbsp;&zwnj;&nbsp;&zwnj;&nbsp;&zwnj;&nbsp;</div>"
        )
    };
}

const CORPUS: &[Mail] = &[
    // ---- code formats -------------------------------------------------
    Mail {
        name: "digits-after-hint",
        class: "digits",
        subject: "Your Acme verification code",
        text: "Hi Ana,\n\nYour verification code is 482913.\nIt expires in 10 minutes.\n\nIf you didn't ask for it, ignore this email.\n\nThe Acme team\n",
        codes: &["482913"],
        ..BASE
    },
    Mail {
        name: "split-hyphen-own-line",
        class: "digits with hyphen",
        subject: "Confirm your sign-up",
        text: "Welcome to Parcelly!\n\nYour confirmation code is below — enter it in your open browser window and we'll help you get signed in.\n\n718-204\n\nIf you didn't request this email, there's nothing to worry about.\n",
        codes: &["718204"],
        ..BASE
    },
    Mail {
        name: "service-prefix",
        class: "prefix",
        subject: "G-482913 is your Google verification code",
        text: "G-482913 is your Google verification code.\n\nDon't share it with anyone.\n",
        codes: &["482913"],
        ..BASE
    },
    Mail {
        name: "big-td-html-only",
        class: "large td",
        subject: "Your sign-in code",
        format: Format::Html,
        html: concat!(
            "<!doctype html><html><head><style>td{font-family:Arial}</style></head><body>",
            preheader!("Use it within 15 minutes"),
            logo!(),
            "<table width=\"100%\"><tr><td style=\"padding:24px\"><p>Hi there,</p><p>Enter this code to finish signing in.</p></td></tr>",
            "<tr><td align=\"center\" style=\"font-size:36px;letter-spacing:8px;font-weight:700;padding:16px;background:#f4f4f4\">604157</td></tr>",
            "<tr><td><p>This code expires in 15 minutes.</p></td></tr></table>",
            footer!(),
            "</body></html>"
        ),
        codes: &["604157"],
        ..BASE
    },
    Mail {
        name: "digit-spaced",
        class: "digit-spaced",
        subject: "Verify your email",
        text: "Here is your one-time passcode:\n\n3 9 1 6 4 7\n\nIt will expire in 5 minutes.\n",
        codes: &["391647"],
        ..BASE
    },
    Mail {
        name: "alnum-hyphen",
        class: "uppercase alphanumeric",
        subject: "Your Fluxo login code",
        text: "Use this code to log in to Fluxo:\n\nABX-92K\n\nThe code is valid for 10 minutes.\n",
        codes: &["ABX92K"],
        ..BASE
    },
    Mail {
        name: "alnum-plain",
        class: "uppercase alphanumeric",
        subject: "Account security",
        format: Format::Html,
        html: "<p>Your security code: <strong>K7QM2X</strong></p><p>Never share this code.</p>",
        codes: &["K7QM2X"],
        ..BASE
    },
    Mail {
        name: "split-space",
        class: "digits with space",
        subject: "Confirm your phone",
        text: "Your Wavely confirmation code: 918 273\n",
        codes: &["918273"],
        ..BASE
    },
    Mail {
        name: "split-space-4-2",
        class: "digits with space",
        subject: "Sign-in attempt",
        text: "Enter the code 0042 17 to continue.\n",
        codes: &["004217"],
        ..BASE
    },
    Mail {
        name: "code-in-subject-only",
        class: "subject",
        subject: "529031 is your Acme code",
        format: Format::Html,
        html: "<p>Welcome back! Use the code in the subject line to sign in.</p>",
        codes: &["529031"],
        ..BASE
    },
    Mail {
        name: "monospace-span",
        class: "monospace",
        subject: "Two-factor authentication",
        format: Format::Alternative,
        text: "Your 2FA code is 771204\n",
        html: "<p>Your 2FA code is</p><p><span style=\"font-family:'Courier New',monospace;font-size:20px\">771204</span></p>",
        codes: &["771204"],
        ..BASE
    },
    Mail {
        name: "digit-boxes",
        class: "digit-spaced",
        subject: "Your verification code",
        format: Format::Html,
        html: "<p>Enter this verification code:</p><table><tr><td style=\"border:1px solid #ccc;font-size:28px\">5</td><td style=\"border:1px solid #ccc;font-size:28px\">0</td><td style=\"border:1px solid #ccc;font-size:28px\">8</td><td style=\"border:1px solid #ccc;font-size:28px\">3</td><td style=\"border:1px solid #ccc;font-size:28px\">1</td><td style=\"border:1px solid #ccc;font-size:28px\">9</td></tr></table>",
        codes: &["508319"],
        ..BASE
    },
    Mail {
        name: "four-digit-pin",
        class: "digits",
        subject: "Your PIN",
        text: "Your PIN: 7306\nUse it at the kiosk.\n",
        codes: &["7306"],
        ..BASE
    },
    Mail {
        name: "eight-digit",
        class: "digits",
        subject: "Email verification",
        format: Format::Alternative,
        text: "To verify your email address, enter 60418822 in the app.\n",
        html: "<p>To verify your email address, enter <b>60418822</b> in the app.</p>",
        codes: &["60418822"],
        ..BASE
    },
    Mail {
        name: "code-after-word",
        class: "digits",
        subject: "Security alert",
        text: "Someone is trying to sign in.\n\n840516 is your security code. It expires in 10 minutes.\n",
        codes: &["840516"],
        ..BASE
    },
    Mail {
        name: "otp-qp-html",
        class: "quoted-printable",
        subject: "OTP for your transaction",
        format: Format::Html,
        encoding: Encoding::QuotedPrintable,
        html: "<div style=\"font-family:Helvetica\"><p>Dear customer,</p><p>The OTP for your payment is <span style=\"font-size:22px;font-weight:bold\">230918</span>. Do not share it.</p></div>",
        codes: &["230918"],
        ..BASE
    },
    // ---- languages ----------------------------------------------------
    Mail {
        name: "es-codigo",
        lang: "es",
        class: "digits",
        subject: "Tu código de verificación",
        text: "Hola:\n\nTu código de verificación es 123457.\nCaduca en 10 minutos.\n",
        codes: &["123457"],
        ..BASE
    },
    Mail {
        name: "es-html-below",
        lang: "es",
        class: "large td",
        subject: "Confirma tu cuenta",
        format: Format::Alternative,
        text: "Usa este código para confirmar tu cuenta:\n\n662 910\n",
        html: "<p>Usa este código para confirmar tu cuenta:</p><table><tr><td style=\"font-size:32px\">662 910</td></tr></table>",
        codes: &["662910"],
        ..BASE
    },
    Mail {
        name: "de-bestaetigungscode",
        lang: "de",
        class: "digits",
        subject: "Ihr Bestätigungscode",
        encoding: Encoding::QuotedPrintable,
        text: "Hallo,\n\nIhr Bestätigungscode lautet: 552901\n\nDer Code ist 15 Minuten gültig.\n",
        codes: &["552901"],
        ..BASE
    },
    Mail {
        name: "de-html",
        lang: "de",
        class: "bold",
        subject: "Anmeldung bei Kontor",
        format: Format::Html,
        html: "<p>Geben Sie diesen Sicherheitscode ein, um sich anzumelden:</p><p><b>HJ4-7QZ</b></p><p>Falls Sie das nicht waren, ignorieren Sie diese E-Mail.</p>",
        codes: &["HJ47QZ"],
        ..BASE
    },
    Mail {
        name: "fr-verification",
        lang: "fr",
        class: "digits",
        subject: "Votre code de vérification",
        text: "Bonjour,\n\nVotre code de vérification : 774120\n\nCe code expire dans 10 minutes.\n",
        codes: &["774120"],
        ..BASE
    },
    Mail {
        name: "fr-html-b64",
        lang: "fr",
        class: "base64",
        subject: "Confirmez votre adresse",
        format: Format::Html,
        encoding: Encoding::Base64,
        html: "<p>Bienvenue&nbsp;!</p><p>Saisissez le code ci-dessous pour confirmer votre adresse e-mail&nbsp;:</p><h2>390 144</h2>",
        codes: &["390144"],
        ..BASE
    },
    Mail {
        name: "pt-codigo",
        lang: "pt",
        class: "digits",
        subject: "Seu código de confirmação",
        text: "Olá!\n\nSeu código de confirmação é 339812.\n",
        codes: &["339812"],
        ..BASE
    },
    Mail {
        name: "it-codice",
        lang: "it",
        class: "digits",
        subject: "Il tuo codice",
        text: "Ciao,\n\nil tuo codice di verifica è 620194.\n",
        codes: &["620194"],
        ..BASE
    },
    // ---- decoys next to a real code -----------------------------------
    Mail {
        name: "decoy-date-time",
        class: "decoy: dates, times",
        subject: "Your login code",
        text: "Sign-in requested on 24/11/2026 at 10:30 (2026-11-24T10:30:00Z).\n\nYour login code: 907311\n\nRequested November 24, 2026 from Chrome on macOS.\n",
        codes: &["907311"],
        ..BASE
    },
    Mail {
        name: "decoy-year-footer",
        class: "decoy: years",
        subject: "Your verification code",
        format: Format::Html,
        html: concat!(
            "<p>Your verification code is:</p><p style=\"font-size:24px\"><b>318264</b></p>",
            "<p>If you did not request this code, ignore this message.</p><p>&copy; 2026 Acme. All rights reserved. Since 1998.</p>"
        ),
        codes: &["318264"],
        ..BASE
    },
    Mail {
        name: "decoy-price",
        class: "decoy: prices",
        subject: "Confirm your purchase",
        text: "Total: $1999\nAmount: 1999 EUR\nSubtotal 4999.\n\nTo confirm this purchase enter the code 284467.\n",
        codes: &["284467"],
        ..BASE
    },
    Mail {
        name: "decoy-phone",
        class: "decoy: phone numbers",
        subject: "Your verification code",
        text: "Your verification code is 515092.\n\nQuestions? Call us at +1 (555) 010-4477 or 555-0142.\nTel: 0800 5550 199\n",
        codes: &["515092"],
        ..BASE
    },
    Mail {
        name: "decoy-order",
        class: "decoy: order numbers",
        subject: "Order #123456 confirmed",
        format: Format::Alternative,
        text: "Thanks for your order!\n\nOrder number: 40012345\nOrder confirmation 778812\n\nTo confirm delivery, use code 664021.\n",
        html: "<h1>Thanks for your order!</h1><p>Order number: <b>40012345</b></p><p>Order confirmation 778812</p><p>To confirm delivery, use code <b>664021</b>.</p>",
        codes: &["664021"],
        ..BASE
    },
    Mail {
        name: "decoy-invoice",
        class: "decoy: invoice numbers",
        subject: "Invoice INV-2026-0042",
        text: "Invoice 20260042 is attached.\nInvoice number: 88123\nReference: 447120\n",
        ..BASE
    },
    Mail {
        name: "decoy-account",
        class: "decoy: account numbers",
        subject: "Your bank code",
        text: "Account number: 12345678\nCard ending in 4821\nCard ****9921\n\nYour one-time code: 302218\n",
        codes: &["302218"],
        ..BASE
    },
    Mail {
        name: "decoy-tracking",
        class: "decoy: tracking numbers",
        subject: "Your parcel is on its way",
        text: "Tracking number: 94001118\nYour package 1Z999AA10123456784 ships today.\nTrack it any time.\n",
        ..BASE
    },
    Mail {
        name: "decoy-ip",
        class: "decoy: IP addresses",
        subject: "New sign-in to your account",
        text: "We noticed a new sign-in from IP 192.168.10.24 (Madrid).\n\nIf this was you, enter code 448120 to approve it.\n",
        codes: &["448120"],
        ..BASE
    },
    Mail {
        name: "decoy-zip",
        class: "decoy: zip codes",
        subject: "Delivery address confirmed",
        text: "Ship to: 548 Market St, San Francisco, CA 94104\nPostal code: 10115\n",
        ..BASE
    },
    Mail {
        name: "decoy-meeting",
        class: "decoy: meeting IDs",
        subject: "Invitation: Weekly sync",
        text: "Join Zoom Meeting\nhttps://zoom.us/j/84522910032\n\nMeeting ID: 845 2291 0032\nOne tap mobile +16465588656,,84522910032#\n",
        links: &["https://zoom.us/j/84522910032"],
        ..BASE
    },
    Mail {
        name: "decoy-promo",
        class: "decoy: promo codes",
        subject: "20% off this weekend",
        format: Format::Html,
        html: concat!(
            "<h1>Summer sale</h1><p>Use promo code <b>SUMMER25</b> at checkout for 25% off.</p>",
            "<p>Gutscheincode: RABATT10</p><p><a href=\"https://shop.example/sale?utm_source=email\">Shop now</a></p>",
            footer!()
        ),
        kinds: &[("unsubscribe?u=9f8e7d", LinkKind::Unsubscribe)],
        ..BASE
    },
    Mail {
        name: "decoy-preheader",
        class: "decoy: hidden preheader",
        subject: "Your code",
        format: Format::Html,
        html: concat!(
            preheader!("Order 661234 shipped. Reference 552211."),
            "<p>Your code is <b>208833</b>.</p>"
        ),
        codes: &["208833"],
        ..BASE
    },
    Mail {
        name: "decoy-es",
        lang: "es",
        class: "decoy: zip, order, phone",
        subject: "Tu pedido 40011",
        text: "Pedido número 40011223\nCódigo postal: 28013\nTeléfono: 612 345 678\n\nTu código de seguridad es 915530.\n",
        codes: &["915530"],
        ..BASE
    },
    Mail {
        name: "decoy-de",
        lang: "de",
        class: "decoy: invoice, zip, customer",
        subject: "Ihre Rechnung",
        text: "Rechnungsnummer: 20264411\nKundennummer 556677\nPLZ 10115 Berlin\nBetrag: 49,99 €\n",
        ..BASE
    },
    Mail {
        name: "decoy-fr",
        lang: "fr",
        class: "decoy: zip, phone, date",
        subject: "Votre commande",
        text: "Commande n° 778120 expédiée le 24 novembre 2026.\nAdresse : 12 rue de Rivoli, 75001 Paris\nTéléphone : 01 42 60 30 00\n",
        ..BASE
    },
    // ---- links ----------------------------------------------------------
    Mail {
        name: "verify-button-tracking-redirect",
        class: "tracking redirect",
        subject: "Please verify your email",
        format: Format::Mixed,
        text: "Verify your email: https://u1234.ct.sendgrid.net/ls/click?upn=Zx9-2Fk3Lq\n\nUnsubscribe: https://email.acme.example/unsubscribe?u=9f8e7d&list=12\n",
        html: concat!(
            logo!(),
            "<p>Thanks for signing up! Please confirm your address.</p>",
            "<p><a href=\"https://u1234.ct.sendgrid.net/ls/click?upn=Zx9-2Fk3Lq\" style=\"background:#2a6;color:#fff;padding:12px 20px;border-radius:4px\">Verify email</a></p>",
            footer!()
        ),
        links: &["https://u1234.ct.sendgrid.net/ls/click?upn=Zx9-2Fk3Lq"],
        kinds: &[
            ("unsubscribe?u=9f8e7d", LinkKind::Unsubscribe),
            ("o/9f8e7d.gif", LinkKind::TrackingPixel),
            ("facebook.com", LinkKind::Social),
            ("https://acme.example/", LinkKind::Image),
        ],
        ..BASE
    },
    Mail {
        name: "reset-link",
        class: "reset",
        subject: "Reset your password",
        format: Format::Alternative,
        text: "Someone asked to reset your password.\n\nReset it here: https://acme.example/password/reset?token=8c1f0e2a\n\nDidn't ask? Ignore this email.\n",
        html: concat!(
            "<p>Someone asked to reset your password.</p>",
            "<p><a class=\"btn\" href=\"https://acme.example/password/reset?token=8c1f0e2a\">Reset password</a></p>",
            "<p>Didn't ask? <a href=\"https://acme.example/security\">Secure your account</a>.</p>",
            footer!()
        ),
        links: &["https://acme.example/password/reset?token=8c1f0e2a"],
        ..BASE
    },
    Mail {
        name: "magic-link",
        class: "magic sign-in",
        subject: "Your sign-in link",
        format: Format::Html,
        html: concat!(
            "<p>Click the button below to sign in to Notion-like. This link expires in 10 minutes.</p>",
            "<p><a href=\"https://app.example.com/auth/magic?token=eyJ0eXAi.k3\" style=\"padding:10px;background:#000;color:#fff\">Sign in</a></p>",
            "<p>Or copy this URL: https://app.example.com/auth/magic?token=eyJ0eXAi.k3</p>"
        ),
        links: &["https://app.example.com/auth/magic?token=eyJ0eXAi.k3"],
        ..BASE
    },
    Mail {
        name: "invite",
        class: "invite",
        subject: "Bea invited you to the Design workspace",
        format: Format::Alternative,
        text: "Bea invited you to join Design on Boardly.\n\nAccept the invitation: https://boardly.example/invitations/7f3a?sig=11\n",
        html: concat!(
            "<p><b>Bea</b> invited you to join <b>Design</b> on Boardly.</p>",
            "<p><a href=\"https://boardly.example/invitations/7f3a?sig=11\">Accept invitation</a></p>",
            "<p><a href=\"https://boardly.example/about\">What is Boardly?</a></p>"
        ),
        links: &["https://boardly.example/invitations/7f3a?sig=11"],
        ..BASE
    },
    Mail {
        name: "unsubscribe-confirm-path",
        class: "unsubscribe",
        subject: "Weekly digest",
        format: Format::Html,
        html: concat!(
            "<h2>This week on Acme</h2><p>Five stories you might like.</p>",
            "<p><a href=\"https://acme.example/blog/5-stories\">Read more</a></p>",
            "<p>Don't want these? <a href=\"https://acme.example/newsletter/unsubscribe/confirm?id=77\">Click here</a> to stop them.</p>",
            "<p><a href=\"https://acme.example/preferences?token=77\">Manage preferences</a></p>"
        ),
        kinds: &[
            ("newsletter/unsubscribe/confirm", LinkKind::Unsubscribe),
            ("preferences?token", LinkKind::Unsubscribe),
        ],
        ..BASE
    },
    Mail {
        name: "text-url-under-sentence",
        class: "text URL",
        subject: "Confirm your email address",
        text: "Thanks for creating an account.\n\nConfirm your email address by opening this link:\nhttps://id.example.org/e/7GQ2KD\n\nHelp: https://example.org/help\n",
        links: &["https://id.example.org/e/7GQ2KD"],
        ..BASE
    },
    Mail {
        name: "click-here-context",
        class: "click here",
        subject: "Activate your account",
        format: Format::Html,
        html: "<p>To activate your account <a href=\"https://click.mailer.example/c/eJx9kM1u\">click here</a>.</p><p>Questions? <a href=\"mailto:help@acme.example\">Write to us</a>.</p>",
        links: &["https://click.mailer.example/c/eJx9kM1u"],
        ..BASE
    },
    Mail {
        name: "view-in-browser-decoy",
        class: "other links",
        subject: "Confirm your subscription",
        format: Format::Html,
        html: concat!(
            "<p style=\"font-size:11px\"><a href=\"https://acme.example/email/view/confirm-subscription-42\">View in browser</a></p>",
            "<p>Please confirm you want to receive our newsletter.</p>",
            "<p><a href=\"https://acme.example/newsletter/optin/confirm?k=42\">Yes, subscribe me</a></p>",
            footer!()
        ),
        links: &["https://acme.example/newsletter/optin/confirm?k=42"],
        kinds: &[("email/view/confirm", LinkKind::Other)],
        ..BASE
    },
    Mail {
        name: "code-and-link",
        class: "code and link",
        subject: "Verify your Acme account",
        format: Format::Mixed,
        text: "Your verification code is 493021.\nOr confirm with this link:\nhttps://app.example.com/verify?token=eyJhbGciOi.abc&user=42\n",
        html: concat!(
            "<h1>Welcome to Acme</h1><p>Your verification code is <b>493021</b>. It expires in 10 minutes.</p>",
            "<p><a href=\"https://app.example.com/verify?token=eyJhbGciOi.abc&amp;user=42\" style=\"padding:12px;background:#36c\">Confirm my address</a></p>",
            "<p>Having trouble? Paste https://app.example.com/verify?token=eyJhbGciOi.abc&amp;user=42 into your browser.</p>",
            footer!()
        ),
        codes: &["493021"],
        links: &["https://app.example.com/verify?token=eyJhbGciOi.abc&user=42"],
        ..BASE
    },
    Mail {
        name: "es-links",
        lang: "es",
        class: "verify + unsubscribe",
        subject: "Confirma tu correo",
        format: Format::Html,
        html: concat!(
            "<p>¡Hola! Confirma tu dirección de correo para empezar.</p>",
            "<p><a href=\"https://links.tienda.example/ls/click?upn=aa11\" style=\"background:#e33;padding:10px\">Confirmar mi correo</a></p>",
            "<p><a href=\"https://tienda.example/ayuda\">Ayuda</a> · <a href=\"https://links.tienda.example/ls/click?upn=bb22\">Darse de baja</a></p>"
        ),
        links: &["https://links.tienda.example/ls/click?upn=aa11"],
        kinds: &[("upn=bb22", LinkKind::Unsubscribe)],
        ..BASE
    },
    Mail {
        name: "es-reset",
        lang: "es",
        class: "reset",
        subject: "Restablece tu contraseña",
        format: Format::Alternative,
        text: "Recibimos una solicitud para restablecer tu contraseña.\nhttps://cuenta.example.es/r/9b1c\n",
        html: "<p>Recibimos una solicitud para restablecer tu contraseña.</p><p><a href=\"https://cuenta.example.es/r/9b1c\">Restablecer contraseña</a></p>",
        links: &["https://cuenta.example.es/r/9b1c"],
        ..BASE
    },
    Mail {
        name: "de-links",
        lang: "de",
        class: "verify + unsubscribe",
        subject: "Bitte bestätigen Sie Ihre E-Mail-Adresse",
        format: Format::Html,
        encoding: Encoding::QuotedPrintable,
        html: concat!(
            "<p>Vielen Dank für Ihre Registrierung.</p>",
            "<p><a href=\"https://click.shop.example.de/?qs=8a7b6c&amp;id=1\" style=\"background:#036;padding:12px\">E-Mail-Adresse bestätigen</a></p>",
            "<p><a href=\"https://shop.example.de/impressum\">Impressum</a> | <a href=\"https://click.shop.example.de/?qs=ffee11\">Newsletter abbestellen</a></p>"
        ),
        links: &["https://click.shop.example.de/?qs=8a7b6c&id=1"],
        kinds: &[("qs=ffee11", LinkKind::Unsubscribe)],
        ..BASE
    },
    Mail {
        name: "de-reset",
        lang: "de",
        class: "reset",
        subject: "Passwort zurücksetzen",
        format: Format::Html,
        html: "<p>Sie haben angefordert, Ihr Passwort zurückzusetzen.</p><p><a href=\"https://konto.example.de/pw/neu?t=44aa\">Passwort zurücksetzen</a></p><p><a href=\"https://konto.example.de/hilfe\">Hilfe</a></p>",
        links: &["https://konto.example.de/pw/neu?t=44aa"],
        ..BASE
    },
    Mail {
        name: "fr-links",
        lang: "fr",
        class: "verify + unsubscribe",
        subject: "Vérifiez votre adresse e-mail",
        format: Format::Alternative,
        text: "Vérifiez votre adresse : https://compte.example.fr/v/12ab\n\nSe désabonner : https://compte.example.fr/u/12ab\n",
        html: "<p>Merci de votre inscription.</p><p><a href=\"https://compte.example.fr/v/12ab\">Vérifier mon adresse</a></p><p><a href=\"https://compte.example.fr/u/12ab\">Se désabonner</a></p>",
        links: &["https://compte.example.fr/v/12ab"],
        kinds: &[("/u/12ab", LinkKind::Unsubscribe)],
        ..BASE
    },
    Mail {
        name: "fr-signin",
        lang: "fr",
        class: "magic sign-in",
        subject: "Votre lien de connexion",
        format: Format::Html,
        html: "<p>Bonjour,</p><p>Cliquez ci-dessous pour vous connecter à votre espace.</p><p><a href=\"https://app.example.fr/l/abc987\" style=\"padding:8px;background:#333\">Se connecter</a></p>",
        links: &["https://app.example.fr/l/abc987"],
        ..BASE
    },
    Mail {
        name: "it-invite",
        lang: "it",
        class: "invite",
        subject: "Sei stato invitato",
        format: Format::Html,
        html: "<p>Marco ti ha invitato al progetto Alfa.</p><p><a href=\"https://team.example.it/i/5566\">Accetta l'invito</a></p><p><a href=\"https://team.example.it/disiscriviti?x=1\">Annulla iscrizione</a></p>",
        links: &["https://team.example.it/i/5566"],
        kinds: &[("disiscriviti", LinkKind::Unsubscribe)],
        ..BASE
    },
    Mail {
        name: "pt-activate",
        lang: "pt",
        class: "verify",
        subject: "Ative sua conta",
        format: Format::Html,
        html: "<p>Falta pouco! Clique para ativar sua conta.</p><p><a href=\"https://conta.example.com.br/a/9f9f\">Ativar conta</a></p>",
        links: &["https://conta.example.com.br/a/9f9f"],
        ..BASE
    },
    Mail {
        name: "newsletter-no-actions",
        class: "no action links",
        subject: "Our November news",
        format: Format::Html,
        html: concat!(
            logo!(),
            "<h1>November news</h1><p>New features shipped this month, read all about it.</p>",
            "<p><a href=\"https://acme.example/blog/november\">Read the post</a> · <a href=\"https://acme.example/changelog\">Changelog</a></p>",
            footer!()
        ),
        kinds: &[("https://acme.example/", LinkKind::Image)],
        ..BASE
    },
    Mail {
        name: "image-button",
        class: "image anchor",
        subject: "Confirm your registration",
        format: Format::Html,
        html: "<p>One more step.</p><p><a href=\"https://t.events.example/r/c/1a2b\"><img src=\"https://cdn.events.example/btn-confirm.png\" width=\"200\" height=\"48\" alt=\"Confirm registration\"></a></p>",
        links: &["https://t.events.example/r/c/1a2b"],
        ..BASE
    },
    Mail {
        name: "hidden-link-decoy",
        class: "hidden link",
        subject: "Confirm your email",
        format: Format::Html,
        html: "<div style=\"display:none\"><a href=\"https://trap.example/verify?x=1\">Verify</a></div><p><a href=\"https://real.example/verify?x=2\">Verify my email</a></p>",
        links: &["https://real.example/verify?x=2"],
        ..BASE
    },
    Mail {
        name: "two-actions",
        class: "verify and sign-in",
        subject: "Welcome aboard",
        format: Format::Html,
        html: "<p>Welcome! <a href=\"https://app.example.net/login\">Log in</a> any time.</p><p><a href=\"https://app.example.net/verify/aa\" style=\"background:#09f;padding:12px\">Verify email</a></p>",
        links: &["https://app.example.net/verify/aa", "https://app.example.net/login"],
        ..BASE
    },
    Mail {
        name: "code-mixed-attachment",
        class: "multipart mixed",
        subject: "Código de acceso",
        lang: "es",
        format: Format::Mixed,
        encoding: Encoding::Base64,
        text: "Tu código de acceso es:\n\n4471-22\n\nVálido durante 5 minutos.\n",
        html: "<p>Tu código de acceso es:</p><p style=\"font-size:30px\"><b>4471-22</b></p><p>Válido durante 5 minutos.</p>",
        codes: &["447122"],
        ..BASE
    },
    Mail {
        name: "de-code-anmelden",
        lang: "de",
        class: "code and link",
        subject: "Ihr Anmeldecode",
        format: Format::Alternative,
        text: "Ihr Anmeldecode: 662781\n\nOder direkt anmelden: https://portal.example.de/login/magic?t=abc\n",
        html: "<p>Ihr Anmeldecode: <b>662781</b></p><p><a href=\"https://portal.example.de/login/magic?t=abc\">Jetzt anmelden</a></p><p><a href=\"https://portal.example.de/datenschutz\">Datenschutz</a></p>",
        codes: &["662781"],
        links: &["https://portal.example.de/login/magic?t=abc"],
        ..BASE
    },
    Mail {
        name: "fr-code-decoys",
        lang: "fr",
        class: "decoy: price, date",
        subject: "Code de confirmation",
        text: "Paiement de 49,99 € le 24/11/2026.\nVotre code de confirmation est 118204.\n",
        codes: &["118204"],
        ..BASE
    },
    Mail {
        name: "it-codice-html",
        lang: "it",
        class: "large td",
        subject: "Verifica il tuo indirizzo",
        format: Format::Html,
        html: "<table><tr><td>Inserisci questo codice per verificare il tuo indirizzo email:</td></tr><tr><td style=\"font-size:28px;font-weight:bold\">740 225</td></tr><tr><td>Il codice scade tra 10 minuti.</td></tr></table>",
        codes: &["740225"],
        ..BASE
    },
    Mail {
        name: "pt-codigo-html",
        lang: "pt",
        class: "bold",
        subject: "Código de verificação",
        format: Format::Html,
        html: "<p>Use o código abaixo para entrar:</p><p><strong>Z8K2QP</strong></p>",
        codes: &["Z8K2QP"],
        ..BASE
    },
    Mail {
        name: "receipt-no-code",
        class: "decoy: receipt",
        subject: "Your receipt from Acme",
        format: Format::Html,
        html: "<h2>Receipt #1024-7781</h2><table><tr><td>Pro plan</td><td>$12.00</td></tr><tr><td>Tax</td><td>$1.20</td></tr><tr><td><b>Total</b></td><td><b>$13.20</b></td></tr></table><p>Paid on Nov 24, 2026 with Visa ending in 4242.</p>",
        ..BASE
    },
    Mail {
        name: "shipping-no-code",
        class: "decoy: shipping",
        subject: "Shipped: order 112-3344556-7788990",
        format: Format::Alternative,
        text: "Your order 112-3344556-7788990 has shipped.\nTracking: 1Z999AA10123456784\nArriving Thursday, November 26.\n",
        html: "<p>Your order 112-3344556-7788990 has shipped.</p><p><a href=\"https://ship.example/track/1Z999AA10123456784\">Track package</a></p>",
        ..BASE
    },
    // ---- written after the rules were tuned, and kept as they scored ----
    Mail {
        name: "blind-slack-style",
        class: "alnum hyphen, large",
        subject: "Slack confirmation code: QXK-7RT",
        format: Format::Html,
        html: "<h1>Confirm your email address</h1><p>Your confirmation code is below — enter it in your open browser window and we'll help you get signed in.</p><div style=\"font-size:40px;font-family:monospace;background:#f5f4f5\">QXK-7RT</div><p>If you didn't request this email, there's nothing to worry about — you can safely ignore it.</p>",
        codes: &["QXK7RT"],
        ..BASE
    },
    Mail {
        name: "blind-bank-sms-style",
        class: "decoy: amount, card",
        subject: "Transaction approval",
        text: "Use 482-119 to approve your payment of USD 120.50 at ACME STORE with card ending 7788. Never share this code.\n",
        codes: &["482119"],
        ..BASE
    },
    Mail {
        name: "blind-es-reset-code",
        lang: "es",
        class: "digits",
        subject: "Recupera tu cuenta",
        format: Format::Alternative,
        text: "Hola Lucía,\n\nIntroduce el siguiente código para restablecer tu contraseña:\n\n830 417\n\nEste código caduca en 30 minutos. Si no fuiste tú, ignora este mensaje.\n",
        html: "<p>Hola Lucía,</p><p>Introduce el siguiente código para restablecer tu contraseña:</p><p style=\"font-size:26px;letter-spacing:4px\"><b>830 417</b></p><p>Este código caduca en 30 minutos. Si no fuiste tú, ignora este mensaje.</p>",
        codes: &["830417"],
        ..BASE
    },
    Mail {
        name: "blind-de-newsletter-confirm",
        lang: "de",
        class: "double opt-in",
        subject: "Bitte bestätigen Sie Ihre Anmeldung",
        format: Format::Html,
        html: "<p>Hallo,</p><p>bitte bestätigen Sie Ihre Anmeldung zu unserem Newsletter, indem Sie auf den folgenden Link klicken:</p><p><a href=\"https://news.example.de/doi/confirm?h=77aa\">Anmeldung bestätigen</a></p><p>Wenn Sie sich nicht angemeldet haben, ignorieren Sie diese E-Mail.</p><p><a href=\"https://news.example.de/impressum\">Impressum</a></p>",
        links: &["https://news.example.de/doi/confirm?h=77aa"],
        ..BASE
    },
    Mail {
        name: "blind-fr-invoice-no-code",
        lang: "fr",
        class: "decoy: invoice",
        subject: "Votre facture n° 2026-118",
        text: "Bonjour,\n\nVeuillez trouver ci-joint votre facture n° 2026-118 d'un montant de 89,00 EUR.\nRéférence client : 440129\nÉchéance : 15/12/2026\n",
        ..BASE
    },
    Mail {
        name: "blind-github-style",
        class: "digits, device",
        subject: "[GitHub] Please verify your device",
        text: "Hey octo!\n\nA sign in attempt requires further verification because we did not recognize your device. To complete the sign in, enter the verification code on the unrecognized device.\n\nDevice: Chrome on Windows\nVerification code: 309214\n\nIf you did not attempt to sign in to your account, your password may be compromised. Visit https://github.com/settings/security to create a new, strong password for your GitHub account.\n",
        codes: &["309214"],
        ..BASE
    },
    Mail {
        name: "blind-it-magic-link",
        lang: "it",
        class: "magic sign-in",
        subject: "Il tuo link di accesso",
        format: Format::Html,
        html: "<p>Ciao!</p><p>Clicca sul pulsante qui sotto per accedere.</p><p><a href=\"https://e.app.example.it/c/aGVsbG8\" style=\"background:#0a0;padding:10px\">Accedi</a></p><p>Il link scade tra 15 minuti.</p><p><a href=\"https://app.example.it/privacy\">Privacy</a></p>",
        links: &["https://e.app.example.it/c/aGVsbG8"],
        ..BASE
    },
    Mail {
        name: "blind-pt-invite",
        lang: "pt",
        class: "invite",
        subject: "Você foi convidado",
        format: Format::Html,
        html: "<p>Ana convidou você para o projeto Beta.</p><p><a href=\"https://equipe.example.com.br/convite/9a9a\">Aceitar convite</a></p><p><a href=\"https://equipe.example.com.br/descadastrar\">Descadastrar</a></p>",
        links: &["https://equipe.example.com.br/convite/9a9a"],
        ..BASE
    },
];

fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for (i, chunk) in data.chunks(3).enumerate() {
        if i > 0 && i % 19 == 0 {
            out.push_str("\r\n");
        }
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(A[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn quoted_printable(data: &str) -> String {
    let mut out = String::new();
    let mut col = 0;
    for &b in data.as_bytes() {
        let piece = if b == b'\n' {
            col = 0;
            out.push_str("\r\n");
            continue;
        } else if b == b'=' || !(32..127).contains(&b) {
            format!("={b:02X}")
        } else {
            (b as char).to_string()
        };
        if col + piece.len() > 73 {
            out.push_str("=\r\n");
            col = 0;
        }
        col += piece.len();
        out.push_str(&piece);
    }
    out
}

fn part(content_type: &str, body: &str, encoding: Encoding) -> String {
    let (cte, encoded) = match encoding {
        Encoding::Plain => ("8bit", body.replace('\n', "\r\n")),
        Encoding::QuotedPrintable => ("quoted-printable", quoted_printable(body)),
        Encoding::Base64 => ("base64", base64(body.as_bytes())),
    };
    format!("Content-Type: {content_type}; charset=utf-8\r\nContent-Transfer-Encoding: {cte}\r\n\r\n{encoded}\r\n")
}

fn raw(m: &Mail) -> Vec<u8> {
    let mut s = format!(
        "From: Acme <noreply@acme.example>\r\nTo: ana@uncorreo.test\r\nSubject: =?utf-8?b?{}?=\r\nDate: Tue, 24 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n",
        base64(m.subject.as_bytes()).replace("\r\n", "")
    );
    let alternative = format!(
        "Content-Type: multipart/alternative; boundary=\"alt\"\r\n\r\n--alt\r\n{}--alt\r\n{}--alt--\r\n",
        part("text/plain", m.text, m.encoding),
        part("text/html", m.html, m.encoding)
    );
    match m.format {
        Format::Text => s.push_str(&part("text/plain", m.text, m.encoding)),
        Format::Html => s.push_str(&part("text/html", m.html, m.encoding)),
        Format::Alternative => s.push_str(&alternative),
        Format::Mixed => {
            s.push_str("Content-Type: multipart/mixed; boundary=\"mix\"\r\n\r\n--mix\r\n");
            s.push_str(&alternative);
            s.push_str("--mix\r\nContent-Type: application/pdf; name=\"receipt-2026-0042.pdf\"\r\nContent-Disposition: attachment; filename=\"receipt-2026-0042.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n");
            s.push_str(&base64(
                b"%PDF-1.4 order 123456 invoice 20260042 total 1999",
            ));
            s.push_str("\r\n--mix--\r\n");
        }
    }
    s.into_bytes()
}

#[derive(Default)]
struct Tally {
    expected: usize,
    found: usize,
    correct: usize,
}

impl Tally {
    fn add(&mut self, expected: &[String], found: &[String]) {
        let e: BTreeSet<&String> = expected.iter().collect();
        let f: BTreeSet<&String> = found.iter().collect();
        self.expected += e.len();
        self.found += f.len();
        self.correct += e.intersection(&f).count();
    }
    fn recall(&self) -> f64 {
        if self.expected == 0 {
            1.0
        } else {
            self.correct as f64 / self.expected as f64
        }
    }
    fn precision(&self) -> f64 {
        if self.found == 0 {
            1.0
        } else {
            self.correct as f64 / self.found as f64
        }
    }
}

#[test]
fn corpus_recall_and_precision() {
    assert!(CORPUS.len() >= 60, "corpus has {} mails", CORPUS.len());
    let langs: BTreeSet<&str> = CORPUS.iter().map(|m| m.lang).collect();
    assert!(langs.len() >= 4, "{langs:?}");
    let names: BTreeSet<&str> = CORPUS.iter().map(|m| m.name).collect();
    assert_eq!(names.len(), CORPUS.len(), "corpus names are unique");

    let (mut codes, mut links) = (Tally::default(), Tally::default());
    let (mut best_first, mut with_codes) = (0, 0);
    let mut misses = Vec::new();
    for m in CORPUS {
        let raw = raw(m);
        let summary = uncorreo_mail::summarize(&raw);
        let view = extract_message(&raw);
        // The summary and the message view agree.
        assert_eq!(summary.codes, view.code_strings(), "{}", m.name);
        assert_eq!(summary.links, view.action_links, "{}", m.name);
        let want_codes: Vec<String> = m.codes.iter().map(|c| c.to_string()).collect();
        let want_links: Vec<String> = m.links.iter().map(|c| c.to_string()).collect();
        codes.add(&want_codes, &summary.codes);
        links.add(&want_links, &summary.links);
        if let Some(first) = want_codes.first() {
            with_codes += 1;
            best_first += usize::from(summary.codes.first() == Some(first));
        }
        if want_codes != summary.codes || want_links != summary.links {
            misses.push(format!(
                "  {:<32} {} {} {:?}/{:?}: codes {:?} want {:?}; links {:?} want {:?}",
                m.name,
                m.lang,
                m.class,
                m.format,
                m.encoding,
                summary.codes,
                want_codes,
                summary.links,
                want_links
            ));
        }
        // No unsubscribe, pixel, logo or social link is ever an action link.
        for l in &view.links {
            if !l.kind.is_action() {
                assert!(
                    !summary.links.contains(&l.url),
                    "{}: {l:?} listed as an action",
                    m.name
                );
            }
        }
        for (needle, kind) in m.kinds {
            let l = view.links.iter().find(|l| l.url.contains(needle));
            assert_eq!(
                l.map(|l| l.kind),
                Some(*kind),
                "{}: link {needle} in {:?}",
                m.name,
                view.links
            );
        }
    }
    let formats: BTreeSet<String> = CORPUS.iter().map(|m| format!("{:?}", m.format)).collect();
    println!(
        "extraction corpus: {} mails, languages {:?}, formats {:?}",
        CORPUS.len(),
        langs,
        formats
    );
    println!(
        "codes: recall {:.1} % ({}/{}), precision {:.1} % ({}/{}), best first {}/{}",
        100.0 * codes.recall(),
        codes.correct,
        codes.expected,
        100.0 * codes.precision(),
        codes.correct,
        codes.found,
        best_first,
        with_codes
    );
    println!(
        "action links: recall {:.1} % ({}/{}), precision {:.1} % ({}/{})",
        100.0 * links.recall(),
        links.correct,
        links.expected,
        100.0 * links.precision(),
        links.correct,
        links.found
    );
    if !misses.is_empty() {
        println!("differences:\n{}", misses.join("\n"));
    }
    assert!(codes.recall() >= 0.95, "code recall");
    assert!(codes.precision() >= 0.95, "code precision");
    assert!(links.recall() >= 0.95, "link recall");
    assert!(links.precision() >= 0.95, "link precision");
}
