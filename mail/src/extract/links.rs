//! Classifying link targets by purpose, from the anchor text first, then the
//! URL's path, then (for "click here" anchors and bare URLs) the sentence
//! around it. Tracking redirects are recognised and classified by their
//! anchor text alone; nothing here ever fetches a URL (following a redirect
//! would spend the one-time token behind it).

use serde::{Deserialize, Serialize};

use super::doc::{Doc, RawLink, Source};

/// What a link is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum LinkKind {
    /// Verify, confirm or activate an address or account.
    Verify,
    /// Reset or set a password.
    Reset,
    /// Sign in: magic links and login links.
    SignIn,
    /// Accept an invitation.
    Invite,
    /// Unsubscribe or manage mail preferences.
    Unsubscribe,
    /// An image of 0–2 pixels or hidden: an open tracker.
    TrackingPixel,
    /// A logo or other image, or a link that is only an image.
    Image,
    /// A social network profile.
    Social,
    /// Anything else.
    Other,
}

impl LinkKind {
    /// Whether this is what a sign-up, sign-in, reset or invite flow waits for.
    pub fn is_action(self) -> bool {
        matches!(
            self,
            LinkKind::Verify | LinkKind::Reset | LinkKind::SignIn | LinkKind::Invite
        )
    }
}

/// How sure the classification is: which evidence decided it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Confidence {
    /// Nothing said what it is.
    None,
    /// The sentence around it.
    Context,
    /// The URL's path.
    Path,
    /// The anchor text.
    Text,
}

/// A classified link before merging.
#[derive(Debug, Clone)]
pub struct Classified {
    /// URL as written.
    pub url: String,
    /// Anchor text or image alt text (empty for bare URLs).
    pub text: String,
    /// Purpose.
    pub kind: LinkKind,
    /// What decided it.
    pub confidence: Confidence,
    /// Styled as a button.
    pub button: bool,
}

const UNSUBSCRIBE: &[&str] = &[
    "unsubscribe",
    "unsub",
    "opt-out",
    "opt out",
    "optout",
    "abmelden",
    "abbestellen",
    "austragen",
    "darse de baja",
    "date de baja",
    "dar de baja",
    "cancelar suscripción",
    "cancelar la suscripción",
    "anular suscripción",
    "désabonner",
    "désinscri",
    "desinscri",
    "désabonnement",
    "se désinscrire",
    "disiscriviti",
    "annulla iscrizione",
    "cancella iscrizione",
    "descadastr",
    "cancelar inscrição",
    "uitschrijven",
    "afmelden",
    "email preferences",
    "e-mail preferences",
    "manage preferences",
    "mail preferences",
    "notification settings",
    "preferencias de correo",
    "e-mail-einstellungen",
    "newsletter-einstellungen",
    "préférences",
    "list-unsubscribe",
    "/unsubscribe",
];

const RESET: &[&str] = &[
    "reset",
    "restablecer",
    "restablece",
    "zurücksetzen",
    "zurucksetzen",
    "réinitialiser",
    "reinitialiser",
    "réinitialisation",
    "reimposta",
    "redefinir",
    "redefina",
    "recuperar",
    "recover",
    "forgot",
    "new password",
    "nueva contraseña",
    "neues passwort",
    "nouveau mot de passe",
    "nuova password",
    "nova senha",
    "change password",
    "cambiar contraseña",
    "passwort ändern",
    "set password",
    "set your password",
    "choose a password",
    "create password",
    "wachtwoord herstellen",
    "wachtwoord opnieuw",
    "password-reset",
    "password_reset",
    "passwordreset",
    "forgot-password",
];

const INVITE: &[&str] = &[
    "invite",
    "invitation",
    "invitación",
    "invitacion",
    "einladung",
    "eingeladen",
    "invito",
    "convite",
    "uitnodiging",
    "accept",
    "aceptar",
    "acepta",
    "annehmen",
    "accepter",
    "accetta",
    "aceitar",
    "join",
    "unirte",
    "únete",
    "unete",
    "beitreten",
    "rejoindre",
    "unisciti",
    "entrar no",
    "deelnemen",
];

const VERIFY: &[&str] = &[
    "verify",
    "verif",
    "vérif",
    "confirm",
    "activate",
    "activat",
    "validate",
    "validat",
    "bestätig",
    "bestatig",
    "verifizier",
    "aktivier",
    "confirmar",
    "confirma",
    "verificar",
    "activar",
    "activa",
    "confirmer",
    "activer",
    "valider",
    "conferma",
    "verifica",
    "attiva",
    "ativar",
    "bevestig",
    "activeer",
    "verifieer",
    "email-verification",
];

const SIGN_IN: &[&str] = &[
    "sign in",
    "sign-in",
    "signin",
    "sign_in",
    "log in",
    "log-in",
    "login",
    "logon",
    "magic",
    "iniciar sesión",
    "iniciar sesion",
    "inicia sesión",
    "acceder",
    "entrar",
    "anmelden",
    "einloggen",
    "se connecter",
    "connexion",
    "connecte",
    "accedi",
    "accesso",
    "fazer login",
    "inloggen",
    "aanmelden",
    "/auth",
    "session",
    "passwordless",
];

/// Anchor texts that are not an action whatever the URL or sentence says.
const NOT_ACTION: &[&str] = &[
    "view in browser",
    "view online",
    "view this email",
    "web version",
    "view as web",
    "im browser",
    "browser ansehen",
    "webversion",
    "online ansehen",
    "navegador",
    "versión web",
    "version web",
    "navigateur",
    "version en ligne",
    "versione web",
    "browser",
    "privacy",
    "privacidad",
    "datenschutz",
    "confidentialité",
    "terms",
    "términos",
    "bedingungen",
    "conditions",
    "termini",
    "help",
    "ayuda",
    "hilfe",
    "aide",
    "aiuto",
    "ajuda",
    "support",
    "soporte",
    "contact",
    "contacto",
    "kontakt",
    "impressum",
    "faq",
    "report",
    "melden",
    "signaler",
    "segnala",
    "denunciar",
    "not you",
    "no fuiste",
    "nicht sie",
    "pas vous",
    "didn't",
    "did not",
    "no solicitaste",
    "not request",
    "ignore",
    "ignora",
    "secure your account",
    "track",
    "seguimiento",
    "sendungsverfolgung",
    "suivre",
    "view order",
    "ver pedido",
    "bestellung ansehen",
    "voir la commande",
    "download",
    "descargar",
    "herunterladen",
    "télécharger",
    "scarica",
    "app store",
    "google play",
    "blog",
    "careers",
    "shop",
    "tienda",
    "manage account",
];

/// Anchor texts that say nothing: the sentence around decides.
const GENERIC: &[&str] = &[
    "click here",
    "here",
    "this link",
    "link",
    "click",
    "tap here",
    "aquí",
    "aqui",
    "haz clic aquí",
    "pulsa aquí",
    "este enlace",
    "enlace",
    "hier",
    "hier klicken",
    "diesen link",
    "link",
    "ici",
    "cliquez ici",
    "ce lien",
    "qui",
    "clicca qui",
    "questo link",
    "clique aqui",
    "este link",
    "klik hier",
    "deze link",
    "open",
    "go",
    "continue",
    "continuar",
    "weiter",
    "continuer",
    "continua",
    "button",
    "→",
    "»",
];

const SOCIAL_HOSTS: &[&str] = &[
    "facebook.com",
    "fb.com",
    "twitter.com",
    "x.com",
    "instagram.com",
    "linkedin.com",
    "youtube.com",
    "youtu.be",
    "tiktok.com",
    "pinterest.com",
    "threads.net",
    "mastodon.social",
    "bsky.app",
    "snapchat.com",
    "reddit.com",
    "discord.gg",
    "t.me",
    "wa.me",
    "vk.com",
    "xing.com",
    "tumblr.com",
    "medium.com",
];

const SOCIAL_NAMES: &[&str] = &[
    "facebook",
    "twitter",
    "x",
    "instagram",
    "linkedin",
    "youtube",
    "tiktok",
    "pinterest",
    "threads",
    "mastodon",
    "bluesky",
    "snapchat",
    "reddit",
    "discord",
    "telegram",
    "whatsapp",
    "xing",
    "tumblr",
    "medium",
    "follow us",
    "síguenos",
    "folge uns",
    "suivez-nous",
    "seguici",
    "siga-nos",
];

/// Host and path-with-query of an absolute http(s) URL, lower-cased.
fn split_url(url: &str) -> Option<(String, String)> {
    let lower = url.to_lowercase();
    let rest = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))?;
    let cut = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let host = rest.get(..cut)?;
    let host = host.rsplit('@').next().unwrap_or(host);
    let host = host.split(':').next().unwrap_or(host).to_owned();
    Some((host, rest.get(cut..).unwrap_or_default().to_owned()))
}

fn host_is(host: &str, domain: &str) -> bool {
    host == domain || host.ends_with(&format!(".{domain}"))
}

/// A URL on a click-tracking service: its path says nothing about the purpose.
pub fn is_tracking_redirect(host: &str, path: &str) -> bool {
    const HOSTS: &[&str] = &[
        "sendgrid.net",
        "list-manage.com",
        "mandrillapp.com",
        "awstrack.me",
        "mjt.lu",
        "hubspotlinks.com",
        "hs-sites.com",
        "rs6.net",
        "mailgun.org",
        "sparkpostmail.com",
        "cmail19.com",
        "cmail20.com",
        "createsend.com",
        "exacttarget.com",
        "klclick.com",
        "klaviyo.com",
        "customeriomail.com",
        "mailchimp.com",
        "postmarkapp.com",
        "mlsend.com",
        "sendibt3.com",
        "brevo.com",
        "bnc.lt",
        "app.link",
        "urldefense.com",
        "safelinks.protection.outlook.com",
    ];
    const HOST_PREFIXES: &[&str] = &[
        "click.",
        "clicks.",
        "links.",
        "link.",
        "email.",
        "emails.",
        "em.",
        "e.",
        "t.",
        "track.",
        "tracking.",
        "trk.",
        "go.",
        "r.",
        "lnk.",
    ];
    const PATHS: &[&str] = &[
        "/ls/click",
        "/track/click",
        "/wf/click",
        "/click",
        "/redirect",
        "/r/",
        "/c/",
        "/l/",
        "/e2t/",
        "/cl/",
        "/ss/c/",
        "/u/",
        "url=",
        "redirect=",
        "upn=",
    ];
    HOSTS.iter().any(|d| host_is(host, d))
        || (HOST_PREFIXES.iter().any(|p| host.starts_with(p))
            && PATHS.iter().any(|p| path.contains(p)))
        || PATHS[..5].iter().any(|p| path.starts_with(p))
}

fn any_in(hay: &str, words: &[&str]) -> bool {
    words.iter().any(|w| contains_word(hay, w))
}

/// `needle` in `hay` not glued to letters on the left: "verify" in
/// "please verify" and "verifyemail", not "x" in "box".
fn contains_word(hay: &str, needle: &str) -> bool {
    let short = needle.chars().count() <= 3;
    let mut from = 0;
    while let Some(p) = hay.get(from..).and_then(|h| h.find(needle)) {
        let at = from + p;
        let before = hay.get(..at).and_then(|h| h.chars().next_back());
        let after = hay.get(at + needle.len()..).and_then(|h| h.chars().next());
        let left_ok = !before.is_some_and(char::is_alphanumeric);
        let right_ok = !short || !after.is_some_and(char::is_alphanumeric);
        if left_ok && right_ok {
            return true;
        }
        from = at + needle.len().max(1);
    }
    false
}

/// The action kind a piece of text names, if any.
fn action_in(text: &str) -> Option<LinkKind> {
    if any_in(text, RESET) {
        Some(LinkKind::Reset)
    } else if any_in(text, VERIFY) {
        Some(LinkKind::Verify)
    } else if any_in(text, SIGN_IN) {
        Some(LinkKind::SignIn)
    } else if any_in(text, INVITE) {
        Some(LinkKind::Invite)
    } else {
        None
    }
}

/// Path words are written glued (`/verifyEmail`, `/auth/magic`), so match
/// stems anywhere, but only the unambiguous ones.
fn action_in_path(path: &str) -> Option<LinkKind> {
    const RESET_PATH: &[&str] = &["reset", "forgot", "recover", "set-password", "new-password"];
    const VERIFY_PATH: &[&str] = &["verif", "confirm", "activat", "validat"];
    const SIGN_IN_PATH: &[&str] = &[
        "login",
        "signin",
        "sign-in",
        "sign_in",
        "magic",
        "/auth",
        "passwordless",
        "otp",
    ];
    const INVITE_PATH: &[&str] = &["invite", "invitation", "/join"];
    let has = |ws: &[&str]| ws.iter().any(|w| path.contains(w));
    if has(RESET_PATH) {
        Some(LinkKind::Reset)
    } else if has(VERIFY_PATH) {
        Some(LinkKind::Verify)
    } else if has(SIGN_IN_PATH) {
        Some(LinkKind::SignIn)
    } else if has(INVITE_PATH) {
        Some(LinkKind::Invite)
    } else {
        None
    }
}

fn is_generic(text: &str) -> bool {
    let t = text.trim_matches(|c: char| !c.is_alphanumeric() && c != '→' && c != '»');
    t.is_empty()
        || t.starts_with("http://")
        || t.starts_with("https://")
        || t.starts_with("www.")
        || GENERIC.contains(&t)
}

/// Classify one link of `doc`.
pub fn classify(doc: &Doc, link: &RawLink) -> Option<Classified> {
    let url = link.url.trim();
    let lower_url = url.to_lowercase();
    let (host, path) = match split_url(url) {
        Some(hp) => hp,
        None if lower_url.starts_with("mailto:") => (String::new(), String::new()),
        None => return None,
    };
    let mk = |kind, confidence| Classified {
        url: url.to_owned(),
        text: link.text.clone(),
        kind,
        confidence,
        button: link.button,
    };
    if link.source == Source::Image {
        let kind = if link.pixel
            || path.contains("/open")
            || path.contains("pixel")
            || path.contains("beacon")
        {
            LinkKind::TrackingPixel
        } else {
            LinkKind::Image
        };
        return Some(mk(kind, Confidence::Path));
    }
    if host.is_empty() {
        let text = link.text.to_lowercase();
        let kind = if lower_url.contains("unsubscribe") || any_in(&text, UNSUBSCRIBE) {
            LinkKind::Unsubscribe
        } else {
            LinkKind::Other
        };
        return Some(mk(kind, Confidence::Path));
    }
    let text = link.text.to_lowercase();
    let text = text.trim();
    let generic = is_generic(text);
    let context = if generic {
        context_of(doc, link)
    } else {
        String::new()
    };
    let tracking = is_tracking_redirect(&host, &path);

    // Unsubscribe first: "/unsubscribe/confirm" is not a verification link.
    if any_in(text, UNSUBSCRIBE)
        || (!tracking
            && (path.contains("unsubscribe")
                || path.contains("optout")
                || path.contains("opt-out")))
        || (generic && any_in(&context, UNSUBSCRIBE))
    {
        return Some(mk(LinkKind::Unsubscribe, Confidence::Text));
    }
    if SOCIAL_HOSTS.iter().any(|d| host_is(&host, d))
        || (!text.is_empty() && SOCIAL_NAMES.contains(&text))
    {
        return Some(mk(LinkKind::Social, Confidence::Text));
    }
    if !generic {
        if any_in(text, NOT_ACTION) {
            return Some(mk(LinkKind::Other, Confidence::Text));
        }
        if let Some(kind) = action_in(text) {
            return Some(mk(kind, Confidence::Text));
        }
    }
    if link.image_only && !generic {
        // A logo: its alt text named no action.
        return Some(mk(LinkKind::Image, Confidence::Text));
    }
    if !tracking {
        if let Some(kind) = action_in_path(&path) {
            return Some(mk(kind, Confidence::Path));
        }
    }
    if link.image_only {
        return Some(mk(LinkKind::Image, Confidence::Text));
    }
    if generic && !any_in(&context, NOT_ACTION) {
        if let Some(kind) = action_in(&context) {
            return Some(mk(kind, Confidence::Context));
        }
    }
    Some(mk(LinkKind::Other, Confidence::None))
}

/// The sentence a link sits in: its line, and the line before when the
/// link is alone on its line (a bare URL under "Confirm your address:").
fn context_of(doc: &Doc, link: &RawLink) -> String {
    let line = doc
        .lines
        .get(link.line)
        .map(|l| l.text.as_str())
        .unwrap_or_default();
    let mut own = line.replace(link.url.as_str(), " ");
    if !link.text.is_empty() {
        own = own.replacen(link.text.as_str(), " ", 1);
    }
    let own = crate::text::prefix(own.trim(), 400).to_lowercase();
    let alone = own.chars().filter(|c| c.is_alphanumeric()).count() < 3;
    if alone || own.split_whitespace().count() < 3 {
        if let Some(prev) = link.line.checked_sub(1).and_then(|i| doc.lines.get(i)) {
            let tail = prev.text.len().saturating_sub(400);
            let mut from = tail;
            while !prev.text.is_char_boundary(from) {
                from += 1;
            }
            return format!(
                "{} {own}",
                prev.text.get(from..).unwrap_or_default().to_lowercase()
            );
        }
    }
    own
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(html: &str) -> Vec<(LinkKind, String)> {
        let d = Doc::from_html(html);
        d.links
            .iter()
            .filter_map(|l| classify(&d, l))
            .map(|c| (c.kind, c.url))
            .collect()
    }

    #[test]
    fn classifies_by_text_then_path_then_context() {
        let k = kinds(
            "<p><a href=\"https://click.mail.example/ls/click?upn=abc\">Verify email</a></p>\
             <p><a href=\"https://app.example/unsubscribe/confirm?u=1\">here</a></p>\
             <p><a href=\"https://app.example/auth/magic?t=1\">Continue</a></p>\
             <p>To reset your password <a href=\"https://t.example/c/xyz\">click here</a>.</p>\
             <p><a href=\"https://www.facebook.com/acme\"><img src=\"https://a.example/fb.png\" alt=\"Facebook\"></a>\
             <a href=\"https://acme.example/\"><img src=\"https://a.example/logo.png\" alt=\"Acme\"></a></p>\
             <p><a href=\"https://acme.example/browser/confirm-123\">View in browser</a></p>\
             <img src=\"https://t.example/o/1.gif\" width=1 height=1>",
        );
        let got: Vec<LinkKind> = k.iter().map(|k| k.0).collect();
        assert_eq!(
            got,
            vec![
                LinkKind::Verify,
                LinkKind::Unsubscribe,
                LinkKind::SignIn,
                LinkKind::Reset,
                LinkKind::Social,
                LinkKind::Image,
                LinkKind::Other,
                LinkKind::TrackingPixel,
            ]
        );
    }

    #[test]
    fn words_are_matched_at_their_start() {
        assert!(contains_word("please verify", "verify"));
        assert!(contains_word("verifyemail", "verif"));
        assert!(!contains_word("box", "x"));
        assert!(!contains_word("rejoin", "join"));
    }
}
