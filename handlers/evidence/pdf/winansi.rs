//! Text in the standard PDF fonts: Unicode to WinAnsiEncoding (one byte a character,
//! what `pdftotext` and every reader map back to Unicode), and the fonts' advance widths
//! so text is measured before it is placed.
//!
//! A character WinAnsi cannot show becomes `?` (control characters a space): tenant text
//! in any script is drawn, never refused, and never breaks a line or the layout.

/// The two faces the report uses: Helvetica and Helvetica-Bold, neither embedded (the 14
/// standard fonts are in every reader).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Face {
    Regular,
    Bold,
}

impl Face {
    pub fn base_font(self) -> &'static [u8] {
        match self {
            Face::Regular => b"Helvetica",
            Face::Bold => b"Helvetica-Bold",
        }
    }

    /// The font's resource name on every page.
    pub fn resource(self) -> &'static [u8] {
        match self {
            Face::Regular => b"F1",
            Face::Bold => b"F2",
        }
    }
}

/// The ellipsis (WinAnsi 0x85) that ends truncated text.
pub const ELLIPSIS: u8 = 0x85;

/// WinAnsiEncoding's 0x80 to 0x9F, which differ from Latin-1 (0 where undefined).
const HIGH: [char; 32] = [
    '\u{20AC}', '\0', '\u{201A}', '\u{0192}', '\u{201E}', '\u{2026}', '\u{2020}', '\u{2021}',
    '\u{02C6}', '\u{2030}', '\u{0160}', '\u{2039}', '\u{0152}', '\0', '\u{017D}', '\0', '\0',
    '\u{2018}', '\u{2019}', '\u{201C}', '\u{201D}', '\u{2022}', '\u{2013}', '\u{2014}', '\u{02DC}',
    '\u{2122}', '\u{0161}', '\u{203A}', '\u{0153}', '\0', '\u{017E}', '\u{0178}',
];

/// One character's WinAnsi byte: itself for printable ASCII and Latin-1, the table's for
/// the typographic characters WinAnsi adds, a space for control characters and spaces
/// of other widths, `-` for the other hyphens and dashes, `?` for anything else.
pub fn byte(c: char) -> u8 {
    match c {
        ' '..='~' => c as u8,
        '\u{A0}' => b' ',
        '\u{AD}' => b'-',
        '\u{A1}'..='\u{FF}' => c as u32 as u8,
        c if c.is_control() || c.is_whitespace() => b' ',
        '\u{2010}' | '\u{2011}' | '\u{2012}' | '\u{2212}' => b'-',
        c => HIGH
            .iter()
            .position(|&h| h == c && h != '\0')
            .map(|i| 0x80 + i as u8)
            .unwrap_or(b'?'),
    }
}

/// `text` in WinAnsiEncoding.
pub fn encode(text: &str) -> Vec<u8> {
    text.chars().map(byte).collect()
}

/// The width of encoded `bytes` at `size` points.
pub fn width(face: Face, bytes: &[u8], size: f32) -> f32 {
    let table = match face {
        Face::Regular => &HELVETICA,
        Face::Bold => &HELVETICA_BOLD,
    };
    let units: u32 = bytes
        .iter()
        .map(|&b| match b {
            32..=255 => u32::from(table[usize::from(b - 32)]),
            _ => 0,
        })
        .sum();
    units as f32 * size / 1000.0
}

/// `text` encoded, cut to fit `max` points at `size` with an ellipsis where cut.
pub fn fit(face: Face, text: &str, size: f32, max: f32) -> Vec<u8> {
    let mut bytes = encode(text);
    if width(face, &bytes, size) <= max {
        return bytes;
    }
    let ellipsis = width(face, &[ELLIPSIS], size);
    while !bytes.is_empty() && width(face, &bytes, size) + ellipsis > max {
        bytes.pop();
    }
    while bytes.last() == Some(&b' ') {
        bytes.pop();
    }
    if ellipsis <= max {
        bytes.push(ELLIPSIS);
    }
    bytes
}

// The advance widths of WinAnsi 32 to 255 in 1/1000 em, from Adobe's AFM metrics of the
// standard fonts (undefined codes as the bullet's 350, as readers draw them).
#[rustfmt::skip]
const HELVETICA: [u16; 224] = [
    278, 278, 355, 556, 556, 889, 667, 191, 333, 333, 389, 584, 278, 333, 278, 278,
    556, 556, 556, 556, 556, 556, 556, 556, 556, 556, 278, 278, 584, 584, 584, 556,
    1015, 667, 667, 722, 722, 667, 611, 778, 722, 278, 500, 667, 556, 833, 722, 778,
    667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611, 278, 278, 278, 469, 556,
    333, 556, 556, 500, 556, 556, 278, 556, 556, 222, 222, 500, 222, 833, 556, 556,
    556, 556, 333, 500, 278, 556, 500, 722, 500, 500, 500, 334, 260, 334, 584, 350,
    556, 350, 222, 556, 333, 1000, 556, 556, 333, 1000, 667, 333, 1000, 350, 611, 350,
    350, 222, 222, 333, 333, 350, 556, 1000, 333, 1000, 500, 333, 944, 350, 500, 667,
    278, 333, 556, 556, 556, 556, 260, 556, 333, 737, 370, 556, 584, 333, 737, 333,
    400, 584, 333, 333, 333, 556, 537, 278, 333, 333, 365, 556, 834, 834, 834, 611,
    667, 667, 667, 667, 667, 667, 1000, 722, 667, 667, 667, 667, 278, 278, 278, 278,
    722, 722, 778, 778, 778, 778, 778, 584, 778, 722, 722, 722, 722, 667, 667, 611,
    556, 556, 556, 556, 556, 556, 889, 500, 556, 556, 556, 556, 278, 278, 278, 278,
    556, 556, 556, 556, 556, 556, 556, 584, 611, 556, 556, 556, 556, 500, 556, 500,
];

#[rustfmt::skip]
const HELVETICA_BOLD: [u16; 224] = [
    278, 333, 474, 556, 556, 889, 722, 238, 333, 333, 389, 584, 278, 333, 278, 278,
    556, 556, 556, 556, 556, 556, 556, 556, 556, 556, 333, 333, 584, 584, 584, 611,
    975, 722, 722, 722, 722, 667, 611, 778, 722, 278, 556, 722, 611, 833, 722, 778,
    667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611, 333, 278, 333, 584, 556,
    333, 556, 611, 556, 611, 556, 333, 611, 611, 278, 278, 556, 278, 889, 611, 611,
    611, 611, 389, 556, 333, 611, 556, 778, 556, 556, 500, 389, 280, 389, 584, 350,
    556, 350, 278, 556, 500, 1000, 556, 556, 333, 1000, 667, 333, 1000, 350, 611, 350,
    350, 278, 278, 500, 500, 350, 556, 1000, 333, 1000, 556, 333, 944, 350, 500, 667,
    278, 333, 556, 556, 556, 556, 280, 556, 333, 737, 370, 556, 584, 333, 737, 333,
    400, 584, 333, 333, 333, 611, 556, 278, 333, 333, 365, 556, 834, 834, 834, 611,
    722, 722, 722, 722, 722, 722, 1000, 722, 667, 667, 667, 667, 278, 278, 278, 278,
    722, 722, 778, 778, 778, 778, 778, 584, 778, 722, 722, 722, 722, 667, 667, 611,
    556, 556, 556, 556, 556, 556, 889, 556, 556, 556, 556, 556, 278, 278, 278, 278,
    611, 611, 611, 611, 611, 611, 611, 584, 611, 611, 611, 611, 611, 556, 611, 556,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latin_1_and_typographic_characters_keep_their_bytes_others_become_a_question_mark() {
        assert_eq!(encode("Müller"), b"M\xfcller");
        assert_eq!(
            encode("a\u{2014}b \u{20AC}5 \u{2026}"),
            b"a\x97b \x805 \x85"
        );
        assert_eq!(encode("Łódź 東京"), b"?\xf3d? ??");
        assert_eq!(encode("tab\there\nline"), b"tab here line");
        // A character whose code point sits in 0x80..0x9F is a control, not WinAnsi's.
        assert_eq!(encode("\u{85}\u{9F}"), b"  ");
    }

    #[test]
    fn widths_follow_the_metrics() {
        assert_eq!(width(Face::Regular, b"Hi", 10.0), (722.0 + 222.0) / 100.0);
        assert_eq!(width(Face::Bold, b"Hi", 10.0), (722.0 + 278.0) / 100.0);
        assert_eq!(width(Face::Regular, b"\xfc", 1000.0), 556.0);
    }

    #[test]
    fn text_too_wide_is_cut_with_an_ellipsis_and_never_overflows() {
        let fits = fit(Face::Regular, "short", 10.0, 200.0);
        assert_eq!(fits, b"short");
        let long = "a-very-long-application-name-from-the-tenant ".repeat(20);
        for max in [0.0, 3.0, 20.0, 80.0, 150.0] {
            let cut = fit(Face::Regular, &long, 10.0, max);
            assert!(width(Face::Regular, &cut, 10.0) <= max, "{max}: {cut:?}");
            if max >= 10.0 {
                assert_eq!(cut.last(), Some(&ELLIPSIS));
            }
        }
        let cut = fit(
            Face::Bold,
            "東京東京東京東京東京東京東京東京東京東京",
            12.0,
            40.0,
        );
        assert!(width(Face::Bold, &cut, 12.0) <= 40.0);
        assert!(cut.starts_with(b"??"));
    }
}
