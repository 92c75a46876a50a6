//! A small page layout over `pdf-writer`: A4 pages filled from the top, text placed and
//! measured in the standard fonts (cut with an ellipsis where it would not fit, wrapped
//! where it is prose), filled rectangles and rules, and a page break wherever the next
//! block would run past the bottom margin. Every page gets the same footer with its
//! number once the page count is known.

use pdf_writer::{Content, Finish, Name, Pdf, Rect, Ref, Str, TextStr};

use super::winansi::{self, Face};

pub const PAGE_WIDTH: f32 = 595.28;
pub const PAGE_HEIGHT: f32 = 841.89;
pub const MARGIN: f32 = 54.0;
/// The lowest a block may reach: the footer sits below it.
pub const BOTTOM: f32 = 64.0;
pub const LEFT: f32 = MARGIN;
pub const RIGHT: f32 = PAGE_WIDTH - MARGIN;
pub const WIDTH: f32 = RIGHT - LEFT;

/// A colour as red, green and blue from 0 to 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rgb(pub f32, pub f32, pub f32);

pub const INK: Rgb = Rgb(0.12, 0.13, 0.16);
pub const MUTED: Rgb = Rgb(0.40, 0.42, 0.46);
pub const RULE: Rgb = Rgb(0.80, 0.82, 0.85);

/// The document being laid out: finished pages, the current one and where on it the
/// next block goes (`y`, from the page's bottom edge, PDF's way).
pub struct Document {
    pages: Vec<Content>,
    current: Content,
    y: f32,
    footer: String,
    /// Called after each page break to draw what a continued block repeats (a table's
    /// header); set and cleared by the caller around that block.
    pub continued: Option<String>,
}

impl Document {
    pub fn new(footer: String) -> Self {
        Self {
            pages: Vec::new(),
            current: Content::new(),
            y: PAGE_HEIGHT - MARGIN,
            footer,
            continued: None,
        }
    }

    /// Moves down by `by` points.
    pub fn down(&mut self, by: f32) {
        self.y -= by;
    }

    /// Starts a new page.
    pub fn page_break(&mut self) {
        let done = std::mem::replace(&mut self.current, Content::new());
        self.pages.push(done);
        self.y = PAGE_HEIGHT - MARGIN;
        if let Some(title) = self.continued.clone() {
            self.text(
                LEFT,
                Face::Bold,
                10.0,
                MUTED,
                &format!("{title} (continued)"),
            );
            self.down(16.0);
        }
    }

    /// Breaks the page unless a block `height` points tall fits above the bottom margin.
    /// Returns whether it broke.
    pub fn keep(&mut self, height: f32) -> bool {
        if self.y - height < BOTTOM {
            self.page_break();
            true
        } else {
            false
        }
    }

    /// Text with its baseline `size` points below the current position, from `x`, in
    /// one line: cut with an ellipsis at the right margin. The position does not move.
    pub fn text(&mut self, x: f32, face: Face, size: f32, color: Rgb, text: &str) {
        self.text_within(x, RIGHT - x, face, size, color, text);
    }

    /// Text in one line no wider than `max`, cut with an ellipsis where it would be.
    pub fn text_within(&mut self, x: f32, max: f32, face: Face, size: f32, color: Rgb, text: &str) {
        let bytes = winansi::fit(face, text, size, max.max(0.0));
        self.show(x, self.y - size, face, size, color, &bytes);
    }

    /// Text ending at `right` (numbers in a column).
    pub fn text_right(&mut self, right: f32, face: Face, size: f32, color: Rgb, text: &str) {
        let bytes = winansi::encode(text);
        let x = right - winansi::width(face, &bytes, size);
        self.show(x, self.y - size, face, size, color, &bytes);
    }

    /// Prose wrapped at word boundaries to `width` from `x`, moving down line by line
    /// (and across pages). A word wider than the line is cut with an ellipsis.
    pub fn paragraph(&mut self, x: f32, width: f32, face: Face, size: f32, text: &str) {
        let leading = size * 1.4;
        for line in wrap(face, size, width, text) {
            self.keep(leading);
            self.show(x, self.y - size, face, size, INK, &line);
            self.down(leading);
        }
    }

    fn show(&mut self, x: f32, baseline: f32, face: Face, size: f32, color: Rgb, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let content = &mut self.current;
        content.set_fill_rgb(color.0, color.1, color.2);
        content
            .begin_text()
            .set_font(Name(face.resource()), size)
            .next_line(x, baseline)
            .show(Str(bytes))
            .end_text();
    }

    /// A filled rectangle whose top is `top` points below the current position.
    pub fn fill(&mut self, x: f32, top: f32, width: f32, height: f32, color: Rgb) {
        if width <= 0.0 || height <= 0.0 {
            return;
        }
        self.current
            .set_fill_rgb(color.0, color.1, color.2)
            .rect(x, self.y - top - height, width, height)
            .fill_nonzero();
    }

    /// A horizontal rule `below` points under the current position.
    pub fn rule(&mut self, x: f32, width: f32, below: f32, thickness: f32, color: Rgb) {
        let y = self.y - below;
        self.current
            .set_stroke_rgb(color.0, color.1, color.2)
            .set_line_width(thickness)
            .move_to(x, y)
            .line_to(x + width, y)
            .stroke();
    }

    /// The PDF: every page with its footer, the standard fonts and the document's title.
    pub fn finish(mut self, title: &str) -> Vec<u8> {
        let last = std::mem::replace(&mut self.current, Content::new());
        self.pages.push(last);
        let count = self.pages.len();

        let mut pdf = Pdf::new();
        let catalog = Ref::new(1);
        let tree = Ref::new(2);
        let info = Ref::new(3);
        let regular = Ref::new(4);
        let bold = Ref::new(5);
        let first_page = 6;
        let page_ref = |n: usize| Ref::new(first_page + 2 * n as i32);
        let content_ref = |n: usize| Ref::new(first_page + 2 * n as i32 + 1);

        pdf.catalog(catalog).pages(tree);
        pdf.pages(tree)
            .kids((0..count).map(page_ref))
            .count(count as i32);
        pdf.document_info(info)
            .title(TextStr(title))
            .producer(TextStr(concat!("keyturn ", env!("CARGO_PKG_VERSION"))));
        for (id, face) in [(regular, Face::Regular), (bold, Face::Bold)] {
            pdf.type1_font(id)
                .base_font(Name(face.base_font()))
                .encoding_predefined(Name(b"WinAnsiEncoding"));
        }

        let footer = self.footer.clone();
        for (n, mut content) in std::mem::take(&mut self.pages).into_iter().enumerate() {
            let label = winansi::encode(&format!("page {} of {count}", n + 1));
            let label_x = RIGHT - winansi::width(Face::Regular, &label, 8.0);
            let note = winansi::fit(Face::Regular, &footer, 8.0, label_x - LEFT - 12.0);
            content
                .set_stroke_rgb(RULE.0, RULE.1, RULE.2)
                .set_line_width(0.5)
                .move_to(LEFT, BOTTOM - 20.0)
                .line_to(RIGHT, BOTTOM - 20.0)
                .stroke()
                .set_fill_rgb(MUTED.0, MUTED.1, MUTED.2);
            for (x, bytes) in [(LEFT, note), (label_x, label)] {
                content
                    .begin_text()
                    .set_font(Name(Face::Regular.resource()), 8.0)
                    .next_line(x, BOTTOM - 32.0)
                    .show(Str(&bytes))
                    .end_text();
            }
            let mut page = pdf.page(page_ref(n));
            page.media_box(Rect::new(0.0, 0.0, PAGE_WIDTH, PAGE_HEIGHT))
                .parent(tree)
                .contents(content_ref(n));
            let mut resources = page.resources();
            let mut fonts = resources.fonts();
            fonts.pair(Name(Face::Regular.resource()), regular);
            fonts.pair(Name(Face::Bold.resource()), bold);
            fonts.finish();
            resources.finish();
            page.finish();
            pdf.stream(content_ref(n), &content.finish());
        }
        pdf.finish()
    }
}

/// `text` in lines no wider than `width`: words kept whole where they fit, a word wider
/// than a line cut with an ellipsis.
pub fn wrap(face: Face, size: f32, width: f32, text: &str) -> Vec<Vec<u8>> {
    let space = winansi::width(face, b" ", size);
    let mut lines = Vec::new();
    let mut line: Vec<u8> = Vec::new();
    let mut used = 0.0;
    for word in text.split_whitespace() {
        let word = winansi::fit(face, word, size, width);
        let w = winansi::width(face, &word, size);
        if !line.is_empty() && used + space + w > width {
            lines.push(std::mem::take(&mut line));
            used = 0.0;
        }
        if !line.is_empty() {
            line.push(b' ');
            used += space;
        }
        line.extend_from_slice(&word);
        used += w;
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapped_lines_stay_within_the_width_and_keep_every_word() {
        let text = "Management asserts that the inventory of credentials and the controls \
                    described in this package are complete and accurate for the period.";
        let lines = wrap(Face::Regular, 10.0, 180.0, text);
        assert!(lines.len() > 2);
        for line in &lines {
            assert!(winansi::width(Face::Regular, line, 10.0) <= 180.0);
        }
        let joined = lines.join(&b' ');
        assert_eq!(
            joined,
            text.split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .as_bytes()
        );
        let long = wrap(Face::Bold, 10.0, 50.0, &"x".repeat(500));
        assert_eq!(long.len(), 1);
        assert!(winansi::width(Face::Bold, &long[0], 10.0) <= 50.0);
    }
}
