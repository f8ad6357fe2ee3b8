//! How a text travels as SMS (3GPP TS 23.038 and 23.040): in the GSM 7-bit default alphabet
//! when every character is in it (with the extension table's `{ } [ ] ~ \ | ^ €` taking two
//! septets), else in UCS-2 (Chinese, emoji); up to 160 septets or 70 UTF-16 units in one
//! message, and longer texts split into parts of 153 septets or 67 units, each carrying a
//! concatenation UDH so the phone joins them. A part never splits an escape pair or a
//! surrogate pair. The septets are unpacked, one octet each, as SMPP's `data_coding` 0 carries
//! them; UCS-2 is big-endian (`data_coding` 8).

/// The GSM 03.38 default alphabet by septet value (0x1B is the escape to the extension table).
const BASIC: [char; 128] = [
    '@', '£', '$', '¥', 'è', 'é', 'ù', 'ì', 'ò', 'Ç', '\n', 'Ø', 'ø', '\r', 'Å', 'å', //
    'Δ', '_', 'Φ', 'Γ', 'Λ', 'Ω', 'Π', 'Ψ', 'Σ', 'Θ', 'Ξ', '\u{1b}', 'Æ', 'æ', 'ß', 'É', //
    ' ', '!', '"', '#', '¤', '%', '&', '\'', '(', ')', '*', '+', ',', '-', '.', '/', //
    '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', ':', ';', '<', '=', '>', '?', //
    '¡', 'A', 'B', 'C', 'D', 'E', 'F', 'G', 'H', 'I', 'J', 'K', 'L', 'M', 'N', 'O', //
    'P', 'Q', 'R', 'S', 'T', 'U', 'V', 'W', 'X', 'Y', 'Z', 'Ä', 'Ö', 'Ñ', 'Ü', '§', //
    '¿', 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o', //
    'p', 'q', 'r', 's', 't', 'u', 'v', 'w', 'x', 'y', 'z', 'ä', 'ö', 'ñ', 'ü', 'à', //
];

/// The extension table: (character, septet after the escape).
const EXTENSION: [(char, u8); 10] = [
    ('\u{c}', 0x0A),
    ('^', 0x14),
    ('{', 0x28),
    ('}', 0x29),
    ('\\', 0x2F),
    ('[', 0x3C),
    ('~', 0x3D),
    (']', 0x3E),
    ('|', 0x40),
    ('€', 0x65),
];

const ESC: u8 = 0x1B;

/// The alphabet a text is sent in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// GSM 7-bit default alphabet (SMPP `data_coding` 0).
    Gsm7,
    /// UCS-2, big-endian (SMPP `data_coding` 8).
    Ucs2,
}

impl Coding {
    /// SMPP's `data_coding` value.
    pub fn data_coding(self) -> u8 {
        match self {
            Coding::Gsm7 => 0,
            Coding::Ucs2 => 8,
        }
    }

    /// Units in one message alone, and in each part of a concatenated one.
    fn limits(self) -> (usize, usize) {
        match self {
            Coding::Gsm7 => (160, 153),
            Coding::Ucs2 => (70, 67),
        }
    }
}

/// A text as SMS parts: each part's short message, its UDH first when there are several.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub coding: Coding,
    pub parts: Vec<Vec<u8>>,
}

impl Encoded {
    /// Whether the parts carry a UDH (SMPP `esm_class` then has UDHI, 0x40, set).
    pub fn has_udh(&self) -> bool {
        self.parts.len() > 1
    }
}

fn gsm_septets(c: char) -> Option<Vec<u8>> {
    if let Some(i) = BASIC
        .iter()
        .position(|b| *b == c)
        .filter(|i| *i != usize::from(ESC))
    {
        return Some(vec![i as u8]);
    }
    EXTENSION
        .iter()
        .find(|(e, _)| *e == c)
        .map(|(_, s)| vec![ESC, *s])
}

/// The alphabet `text` needs.
pub fn coding_for(text: &str) -> Coding {
    if text.chars().all(|c| gsm_septets(c).is_some()) {
        Coding::Gsm7
    } else {
        Coding::Ucs2
    }
}

/// The text's units, each an indivisible group: a character's septets, or its UTF-16 units.
fn units(text: &str, coding: Coding) -> Vec<Vec<u8>> {
    text.chars()
        .map(|c| match coding {
            Coding::Gsm7 => gsm_septets(c).unwrap_or_else(|| vec![0x3F]),
            Coding::Ucs2 => {
                let mut buf = [0u16; 2];
                c.encode_utf16(&mut buf)
                    .iter()
                    .flat_map(|u| u.to_be_bytes())
                    .collect()
            }
        })
        .collect()
}

/// The size of a group in the coding's units (septets, or UTF-16 units).
fn size(group: &[u8], coding: Coding) -> usize {
    match coding {
        Coding::Gsm7 => group.len(),
        Coding::Ucs2 => group.len() / 2,
    }
}

/// How many messages `text` takes.
pub fn count_parts(text: &str) -> usize {
    encode(text, 0).parts.len()
}

/// Encodes `text` into as few parts as it takes; `reference` tells this message's parts from
/// another's (it should change from one long message to the next).
pub fn encode(text: &str, reference: u8) -> Encoded {
    let coding = coding_for(text);
    let (single, each) = coding.limits();
    let groups = units(text, coding);
    let total: usize = groups.iter().map(|g| size(g, coding)).sum();
    if total <= single {
        return Encoded {
            coding,
            parts: vec![groups.concat()],
        };
    }
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    let (mut cur, mut used) = (Vec::new(), 0);
    for g in groups {
        let n = size(&g, coding);
        if used + n > each {
            chunks.push(std::mem::take(&mut cur));
            used = 0;
        }
        cur.extend_from_slice(&g);
        used += n;
    }
    if !cur.is_empty() {
        chunks.push(cur);
    }
    let count = u8::try_from(chunks.len()).unwrap_or(u8::MAX);
    let parts = chunks
        .into_iter()
        .enumerate()
        .map(|(i, body)| {
            // IEI 0x00: concatenated short messages, 8-bit reference.
            let seq = u8::try_from(i + 1).unwrap_or(u8::MAX);
            let mut p = vec![0x05, 0x00, 0x03, reference, count, seq];
            p.extend_from_slice(&body);
            p
        })
        .collect();
    Encoded { coding, parts }
}

/// Decodes one short message (after its UDH, if `udh`) back to text: what a phone shows.
pub fn decode(part: &[u8], coding: Coding, udh: bool) -> String {
    let body = if udh {
        let len = part.first().map_or(0, |l| usize::from(*l) + 1);
        part.get(len..).unwrap_or(&[])
    } else {
        part
    };
    match coding {
        Coding::Ucs2 => {
            let units: Vec<u16> = body
                .chunks_exact(2)
                .map(|b| u16::from_be_bytes([b[0], b[1]]))
                .collect();
            String::from_utf16_lossy(&units)
        }
        Coding::Gsm7 => {
            let mut out = String::new();
            let mut it = body.iter();
            while let Some(&s) = it.next() {
                if s == ESC {
                    if let Some(&e) = it.next() {
                        if let Some((c, _)) = EXTENSION.iter().find(|(_, x)| *x == e) {
                            out.push(*c);
                        }
                    }
                } else if let Some(c) = BASIC.get(usize::from(s)) {
                    out.push(*c);
                }
            }
            out
        }
    }
}

/// Decodes a text as a phone reassembles it from its parts.
pub fn reassemble(e: &Encoded) -> String {
    e.parts
        .iter()
        .map(|p| decode(p, e.coding, e.has_udh()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latin_text_is_gsm_and_chinese_is_ucs2() {
        let e = encode("Happy birthday, Ana! 50% off {today} €5", 1);
        assert_eq!(e.coding, Coding::Gsm7);
        assert_eq!(e.parts.len(), 1);
        assert_eq!(reassemble(&e), "Happy birthday, Ana! 50% off {today} €5");
        // `{`, `}` and `€` are escapes: two septets each.
        assert_eq!(e.parts[0].len(), 39 + 3);
        let e = encode("王芳，生日快乐！", 1);
        assert_eq!(e.coding, Coding::Ucs2);
        assert_eq!(
            e.parts,
            vec![vec![
                0x73, 0x8B, 0x82, 0xB3, 0xFF, 0x0C, 0x75, 0x1F, 0x65, 0xE5, 0x5F, 0xEB, 0x4E, 0x50,
                0xFF, 0x01
            ]]
        );
        assert_eq!(Coding::Ucs2.data_coding(), 8);
    }

    #[test]
    fn the_single_message_limits_are_exact() {
        assert_eq!(count_parts(&"a".repeat(160)), 1);
        assert_eq!(count_parts(&"a".repeat(161)), 2);
        assert_eq!(count_parts(&"a".repeat(306)), 2);
        assert_eq!(count_parts(&"a".repeat(307)), 3);
        assert_eq!(count_parts(&"好".repeat(70)), 1);
        assert_eq!(count_parts(&"好".repeat(71)), 2);
        assert_eq!(count_parts(&"好".repeat(134)), 2);
        assert_eq!(count_parts(&"好".repeat(135)), 3);
    }

    #[test]
    fn long_texts_are_split_with_a_udh_and_reassemble() {
        let text = "春节快乐，".repeat(30);
        let e = encode(&text, 7);
        assert_eq!(e.parts.len(), 3);
        for (i, p) in e.parts.iter().enumerate() {
            assert_eq!(&p[..6], &[0x05, 0x00, 0x03, 7, 3, i as u8 + 1]);
            assert!(p.len() - 6 <= 134, "67 UCS-2 units at most");
        }
        assert_eq!(reassemble(&e), text);
        let text = format!("{}{}", "x".repeat(152), "€ and more");
        let e = encode(&text, 9);
        assert_eq!(e.coding, Coding::Gsm7);
        assert_eq!(e.parts.len(), 2);
        // The escape pair of `€` is not split across the parts.
        assert_eq!(e.parts[0].len() - 6, 152);
        assert_eq!(reassemble(&e), text);
    }

    #[test]
    fn an_emoji_is_never_split_between_parts() {
        let text = format!("{}🎂 happy birthday", "a".repeat(66));
        let e = encode(&text, 1);
        assert_eq!(e.coding, Coding::Ucs2);
        assert_eq!(e.parts.len(), 2);
        assert_eq!(
            e.parts[0].len() - 6,
            66 * 2,
            "the surrogate pair moves whole"
        );
        assert_eq!(reassemble(&e), text);
    }
}
