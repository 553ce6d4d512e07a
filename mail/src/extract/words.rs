//! The vocabulary the extractor scores by, in the languages services write
//! mail in (English, Spanish, German, French, Portuguese, Italian, Dutch).
//! Matching is on lower-cased words: `stems` match anywhere in a word
//! ("bestätigungscode" holds "code"), `exact` only whole words.

/// What a word says about a number next to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hint {
    /// "code", "OTP", "verification": a one-time code is near.
    Code,
    /// "sign in", "expires", "enter": weaker evidence of a code.
    Weak,
    /// "order", "invoice", "phone", "zip", "meeting": the number is something else.
    Decoy,
    /// "account", "customer", "card": a decoy only right before the number
    /// ("Account 12345678"); in a sentence it is just a noun ("…your account:").
    SoftDecoy,
    /// A month name: the number is part of a date.
    Month,
    /// A currency: the number is a price.
    Currency,
    /// Says nothing.
    None,
}

/// Stems that mark the number as something other than a code. Checked
/// before code words: "código postal", "promo code", "Sendungsnummer".
const DECOY_STEMS: &[&str] = &[
    "order",
    "pedido",
    "bestell",
    "commande",
    "ordine",
    "encomenda",
    "bestelling",
    "invoice",
    "factura",
    "rechnung",
    "facture",
    "fattura",
    "fatura",
    "factuur",
    "receipt",
    "recibo",
    "quittung",
    "reçu",
    "ricevuta",
    "iban",
    "tracking",
    "seguimiento",
    "sendung",
    "suivi",
    "spedizione",
    "rastreio",
    "track",
    "shipment",
    "envío",
    "envio",
    "phone",
    "teléfono",
    "telefono",
    "telefon",
    "téléphone",
    "telefoon",
    "mobile",
    "móvil",
    "movil",
    "cellulare",
    "whatsapp",
    "postal",
    "postcode",
    "zipcode",
    "postleitzahl",
    "meeting",
    "reunión",
    "reunion",
    "réunion",
    "besprechung",
    "riunione",
    "reunião",
    "webinar",
    "conference",
    "konferenz",
    "conferencia",
    "promo",
    "coupon",
    "cupón",
    "cupon",
    "discount",
    "descuento",
    "rabatt",
    "gutschein",
    "réduction",
    "sconto",
    "desconto",
    "voucher",
    "gift",
    "referral",
    "reference",
    "referencia",
    "référence",
    "riferimento",
    "ticket",
    "caso",
    "dossier",
    "pratica",
    "card",
    "tarjeta",
    "karte",
    "carte",
    "carta",
    "cartão",
    "endet",
    "terminada",
    "terminant",
    "flight",
    "vuelo",
    "flug",
    "volo",
    "seat",
    "booking",
    "reserva",
    "buchung",
    "réservation",
    "prenotazione",
    "serial",
    "model",
    "version",
    "sku",
    "item",
    "artículo",
    "artikel",
    "article",
    "articolo",
    "room",
    "salle",
    "stanza",
    "extension",
    "durchwahl",
    "contract",
    "contrato",
    "vertrag",
    "contrat",
    "contratto",
    "policy",
    "póliza",
    "police",
    "polizza",
    "amount",
    "importe",
    "betrag",
    "montant",
    "importo",
    "total",
    "summe",
    "subtotal",
    "price",
    "precio",
    "preis",
    "prix",
    "prezzo",
    "preço",
    "call",
    "llama",
    "anrufen",
    "appel",
    "appelez",
    "chiama",
    "ligue",
    "street",
    "straße",
    "strasse",
    "calle",
    "avenida",
    "avenue",
    "barcode",
    "patient",
    "paciente",
    "employee",
    "empleado",
    "mitarbeiter",
    "employé",
    "dipendente",
    "license",
    "licencia",
    "lizenz",
    "licence",
    "licenza",
];

/// Stems of nouns that are decoys only right before a number.
const SOFT_DECOY_STEMS: &[&str] = &[
    "account", "cuenta", "konto", "compte", "conto", "customer", "cliente", "kunden", "client",
    "member", "mitglied", "socio", "membre",
];

/// Whole words that mark a decoy (too short or too common to match inside words).
const DECOY_EXACT: &[&str] = &[
    "id", "no", "vol", "fall", "case", "sala", "raum", "rue", "apt", "suite", "piso", "ending",
    "termina", "handy", "portable", "fax", "nr", "nº", "n°", "núm", "num", "ref", "tel", "tél",
    "cp", "plz", "zip", "po", "inv", "ord", "pnr", "ave", "st", "rd", "av", "via", "off", "vat",
    "iva", "mwst", "tva", "am", "pm", "uhr", "h", "hrs", "min", "mins", "minutes", "minuten",
    "minutos", "gb", "mb", "kb", "km", "kg", "px", "x",
];

/// Stems of one-time-code words.
const CODE_STEMS: &[&str] = &[
    "code",
    "codigo",
    "código",
    "codice",
    "passcode",
    "otp",
    "verif",
    "vérif",
    "confirm",
    "bestätig",
    "bestatig",
    "bevestig",
    "authenti",
    "authentifi",
    "autentica",
    "2fa",
    "one-time",
    "einmal",
    "sicherheits",
    "security",
    "seguridad",
    "sécurité",
    "sicurezza",
    "segurança",
    "kennung",
    "token",
    "passwort",
    "password",
    "contraseña",
    "senha",
    "wachtwoord",
    "clave",
    "kod",
];

/// Whole words that are code words.
const CODE_EXACT: &[&str] = &["pin", "tan", "mfa", "otp", "2sv", "passe"];

/// Whole words that are weak hints.
const WEAK_EXACT: &[&str] = &["sign", "log", "use", "usa", "usar", "utilise", "nutze"];

/// Weaker evidence: what is said around a code.
const WEAK_STEMS: &[&str] = &[
    "sign-in",
    "signin",
    "login",
    "log-in",
    "anmeld",
    "einlogg",
    "iniciar",
    "inicia",
    "acced",
    "acces",
    "connexion",
    "connecter",
    "entra",
    "expir",
    "caduc",
    "läuft",
    "gültig",
    "valid",
    "válid",
    "valable",
    "scad",
    "enter",
    "eingeben",
    "gib",
    "introduce",
    "ingresa",
    "saisissez",
    "saisir",
    "inserisci",
    "digite",
    "insira",
    "utilisez",
    "utilizza",
    "verwende",
    "copy",
    "copia",
    "copie",
    "kopier",
    "paste",
];

const MONTHS: &[&str] = &[
    "jan",
    "january",
    "feb",
    "february",
    "mar",
    "march",
    "apr",
    "april",
    "may",
    "jun",
    "june",
    "jul",
    "july",
    "aug",
    "august",
    "sep",
    "sept",
    "september",
    "oct",
    "october",
    "nov",
    "november",
    "dec",
    "december",
    "enero",
    "febrero",
    "marzo",
    "abril",
    "mayo",
    "junio",
    "julio",
    "agosto",
    "septiembre",
    "octubre",
    "noviembre",
    "diciembre",
    "januar",
    "februar",
    "märz",
    "mai",
    "juni",
    "juli",
    "oktober",
    "dezember",
    "janvier",
    "février",
    "mars",
    "avril",
    "juin",
    "juillet",
    "août",
    "septembre",
    "octobre",
    "novembre",
    "décembre",
    "gennaio",
    "febbraio",
    "aprile",
    "maggio",
    "giugno",
    "luglio",
    "settembre",
    "ottobre",
    "dicembre",
    "janeiro",
    "fevereiro",
    "março",
    "maio",
    "junho",
    "julho",
    "setembro",
    "outubro",
    "dezembro",
    "ene",
    "dic",
    "okt",
    "dez",
    "mär",
];

const CURRENCY: &[&str] = &[
    "usd", "eur", "gbp", "chf", "jpy", "mxn", "brl", "ars", "cad", "aud", "sek", "nok", "dkk",
    "pln", "inr", "dollars", "euros", "euro", "dólares", "pesos", "reais", "kr",
];

/// Words that are neither hints nor content between a label and its value.
const FILLER: &[&str] = &[
    "is",
    "es",
    "ist",
    "est",
    "è",
    "é",
    "your",
    "tu",
    "su",
    "dein",
    "ihr",
    "votre",
    "ton",
    "il",
    "tuo",
    "seu",
    "sua",
    "the",
    "el",
    "la",
    "le",
    "der",
    "die",
    "das",
    "de",
    "del",
    "du",
    "des",
    "di",
    "do",
    "da",
    "a",
    "an",
    "un",
    "una",
    "une",
    "ein",
    "eine",
    "this",
    "este",
    "esta",
    "ce",
    "cette",
    "questo",
    "este",
    "lautet",
    "number",
    "número",
    "numero",
    "nummer",
    "numéro",
    "here",
    "aquí",
    "hier",
    "ici",
    "qui",
    "aqui",
    "below",
    "abajo",
    "unten",
    "ci-dessous",
    "sotto",
    "abaixo",
    "new",
    "nuevo",
    "neuer",
    "nouveau",
    "nuovo",
    "novo",
    "#",
    "-",
    "–",
    "—",
    ":",
    "=",
    "→",
    "your",
    "for",
    "para",
    "für",
    "pour",
    "per",
    "to",
    "at",
    "us",
    "on",
    "in",
    "en",
    "unter",
    "au",
    "al",
    "or",
    "o",
    "and",
    "y",
    "und",
    "et",
    "e",
    "we",
    "our",
    "nuestro",
    "unser",
    "notre",
    "nostro",
    "nosso",
    "you",
    "following",
    "siguiente",
    "folgende",
    "suivant",
    "seguente",
    "seguinte",
    "with",
    "con",
    "mit",
    "avec",
    "com",
    "it",
    "es",
    "lo",
    "le",
    "following:",
];

/// Most distinct words remembered.
const MAX_MEMO: usize = 8192;
/// Longest word remembered: the words that say something are short, and
/// this bounds the memo to about a megabyte per thread.
const MAX_MEMO_WORD: usize = 64;

/// What words say, each distinct word classified once: mail repeats its
/// words, and a hostile body of distinct words is bounded by [`MAX_MEMO`]
/// and [`MAX_MEMO_WORD`] plus the fixed cost of classifying the rest.
#[derive(Default)]
pub struct Vocabulary {
    /// foldhash: SipHash was a fifth of a digit-heavy body's summary, and
    /// foldhash's per-process random seed still keeps chosen collisions out.
    seen: std::collections::HashMap<String, (Hint, bool), foldhash::fast::RandomState>,
    /// What neighbouring lines say; the scorer's own memo, cleared per body.
    pub(super) lines: super::codes::LineMemo,
    /// The scorer's buffer of a neighbouring line's words (bounds, and what
    /// they say once looked up), kept between lines.
    pub(super) line_words: Vec<super::codes::LineWord>,
}

impl Vocabulary {
    /// Forget the per-body line memo (line indices restart in the next body).
    pub fn next_body(&mut self) {
        self.lines.clear();
    }
}

impl Vocabulary {
    /// The hint of `word` and whether it is a filler word.
    pub fn lookup(&mut self, word: &str) -> (Hint, bool) {
        if let Some(v) = self.seen.get(word) {
            return *v;
        }
        let v = (hint(word), is_filler(word));
        if word.len() > MAX_MEMO_WORD {
            return v;
        }
        if self.seen.len() >= MAX_MEMO {
            // Kept across messages, so a full memo starts over instead of
            // staying full of one hostile message's words.
            self.seen.clear();
        }
        self.seen.insert(word.to_owned(), v);
        v
    }
}

/// What `word` (any case, punctuation around it allowed) says.
pub fn hint(word: &str) -> Hint {
    let core = word.trim_matches(|c: char| !c.is_alphanumeric());
    if core.is_empty() {
        return Hint::None;
    }
    if core.bytes().any(|b| b.is_ascii_digit()) {
        // Numbers and codes say nothing; "2FA" is the one word with a digit.
        let two_factor = core.eq_ignore_ascii_case("2fa") || core.eq_ignore_ascii_case("2sv");
        return if two_factor { Hint::Code } else { Hint::None };
    }
    let lower = core.to_lowercase();
    let w = lower.as_str();
    if MONTHS.contains(&w) {
        return Hint::Month;
    }
    if CURRENCY.contains(&w) {
        return Hint::Currency;
    }
    let stems = stem_tables();
    if stems.soft_decoy.any_in(w) {
        return Hint::SoftDecoy;
    }
    if DECOY_EXACT.contains(&w) || stems.decoy.any_in(w) {
        return Hint::Decoy;
    }
    if CODE_EXACT.contains(&w) || stems.code.any_in(w) {
        return Hint::Code;
    }
    if WEAK_EXACT.contains(&w) || stems.weak.any_in(w) {
        return Hint::Weak;
    }
    Hint::None
}

/// A stem list indexed by first byte. "Does the word hold any of 190
/// stems" was a substring search per stem, most of the CPU of a summary;
/// this looks, at each byte of the word, only at the stems starting with it.
struct Stems {
    by_first_byte: [Vec<&'static [u8]>; 256],
}

impl Stems {
    fn new(stems: &[&'static str]) -> Self {
        let mut by_first_byte: [Vec<&'static [u8]>; 256] = std::array::from_fn(|_| Vec::new());
        for stem in stems {
            // An empty stem would be in every word: a mistake in the table.
            assert!(!stem.is_empty(), "empty stem in a vocabulary table");
            let bytes = stem.as_bytes();
            if let Some(first) = bytes.first() {
                by_first_byte[usize::from(*first)].push(bytes);
            }
        }
        Self { by_first_byte }
    }

    /// Whether `word` holds one of the stems (what `word.contains(stem)` for
    /// each would say: UTF-8 matches only at char boundaries).
    fn any_in(&self, word: &str) -> bool {
        let w = word.as_bytes();
        (0..w.len()).any(|at| {
            let tail = w.get(at..).unwrap_or_default();
            tail.first().is_some_and(|b| {
                self.by_first_byte[usize::from(*b)]
                    .iter()
                    .any(|stem| tail.starts_with(stem))
            })
        })
    }
}

struct StemTables {
    soft_decoy: Stems,
    decoy: Stems,
    code: Stems,
    weak: Stems,
}

fn stem_tables() -> &'static StemTables {
    static TABLES: std::sync::OnceLock<StemTables> = std::sync::OnceLock::new();
    TABLES.get_or_init(|| StemTables {
        soft_decoy: Stems::new(SOFT_DECOY_STEMS),
        decoy: Stems::new(DECOY_STEMS),
        code: Stems::new(CODE_STEMS),
        weak: Stems::new(WEAK_STEMS),
    })
}

/// Whether `word` carries no meaning between a label and its value.
pub fn is_filler(word: &str) -> bool {
    if word.bytes().any(|b| b.is_ascii_digit()) {
        return false;
    }
    let lower = word.to_lowercase();
    let core = lower.trim_matches(|c: char| !c.is_alphanumeric());
    core.is_empty() || FILLER.contains(&core) || FILLER.contains(&lower.as_str())
}

/// Whether a currency sign is in `s`.
pub fn has_currency_sign(s: &str) -> bool {
    s.contains(['$', '€', '£', '¥', '₹', '₽', '₩', '¢'])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The memo kept across messages stays bounded: long words are not
    /// kept, and a full memo starts over.
    #[test]
    fn the_vocabulary_memo_is_bounded_in_words_and_in_word_length() {
        let mut vocabulary = Vocabulary::default();
        let long = "a".repeat(MAX_MEMO_WORD + 1);
        assert_eq!(vocabulary.lookup(&long), (hint(&long), is_filler(&long)));
        assert_eq!(vocabulary.seen.len(), 0);
        for n in 0..MAX_MEMO {
            vocabulary.lookup(&format!("w{n}"));
        }
        assert_eq!(vocabulary.seen.len(), MAX_MEMO);
        assert_eq!(vocabulary.lookup("code"), (Hint::Code, false));
        assert_eq!(vocabulary.seen.len(), 1);
        assert_eq!(vocabulary.lookup("code"), (Hint::Code, false));
    }

    #[test]
    fn code_words_in_several_languages() {
        for w in [
            "code",
            "Code:",
            "Bestätigungscode",
            "código",
            "vérification",
            "codice",
            "OTP",
            "PIN",
            "passcode",
            "2FA",
            "verificatiecode",
            "Sicherheitscode",
        ] {
            assert_eq!(hint(w), Hint::Code, "{w}");
        }
    }

    #[test]
    fn decoys_win_over_code_words() {
        for w in [
            "Order",
            "Bestellnummer",
            "postal",
            "Postleitzahl",
            "promo",
            "Rechnung",
            "Meeting",
            "ID:",
            "PLZ",
            "Gutscheincode",
        ] {
            assert_eq!(hint(w), Hint::Decoy, "{w}");
        }
        assert_eq!(hint("Kundennummer"), Hint::SoftDecoy);
        assert_eq!(hint("November"), Hint::Month);
        assert_eq!(hint("EUR"), Hint::Currency);
        assert_eq!(hint("banana"), Hint::None);
    }

    proptest::proptest! {
        /// The stem index says what a substring search for each stem says.
        #[test]
        fn indexed_stems_match_as_a_substring_search_would(
            parts in proptest::collection::vec(
                proptest::sample::select(
                    CODE_STEMS.iter().chain(WEAK_STEMS).chain(DECOY_STEMS).chain(SOFT_DECOY_STEMS)
                        .copied().chain(["x", "é", "-", "ä", "co", "od", "2"]).collect::<Vec<_>>(),
                ),
                0..4,
            ),
        ) {
            let word: String = parts.concat();
            for (table, stems) in [
                (&stem_tables().code, CODE_STEMS),
                (&stem_tables().weak, WEAK_STEMS),
                (&stem_tables().decoy, DECOY_STEMS),
                (&stem_tables().soft_decoy, SOFT_DECOY_STEMS),
            ] {
                let searched = stems.iter().any(|s| word.contains(s));
                proptest::prop_assert_eq!(table.any_in(&word), searched, "{}", word);
            }
        }
    }
}
