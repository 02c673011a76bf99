//! QR rendering: PNG and SVG codes, the printable A6 poster, and a render cache keyed by
//! the same digest as the HTTP ETag.
//!
//! Owns: query-parameter validation (`RenderParams::parse`), the pixel/vector output, the
//! poster layout and `RenderCache`. Must never: trust text it places in SVG (every string is
//! XML-escaped), render a code whose modules are smaller than one pixel, or hold the cache
//! lock while rendering. Everything here is synchronous CPU work; the HTTP layer runs it in
//! `web::block`.

use std::fmt::Write as _;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use image::ImageEncoder;
use image::codecs::png::PngEncoder;
use lru::LruCache;
use qrcode::{Color, EcLevel, QrCode};
use sha2::{Digest, Sha256};

/// Bump whenever any output byte for the same inputs changes, so ETags (and clients'
/// cached copies) are invalidated.
pub const RENDER_VERSION: &str = "1";

pub const DEFAULT_SIZE_PX: u32 = 512;
pub const MIN_SIZE_PX: u32 = 64;
pub const DEFAULT_MARGIN_MODULES: u32 = 4;
pub const MAX_MARGIN_MODULES: u32 = 16;
/// The quiet zone around the poster's code: the spec's recommended 4 modules.
const POSTER_QUIET_ZONE: u32 = 4;
/// At most this many merchant names fit above the poster's code.
pub const MAX_POSTER_NAMES: usize = 4;

/// QR error-correction level (L 7%, M 15%, Q 25%, H 30% of codewords recoverable).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Ecc {
    L,
    #[default]
    M,
    Q,
    H,
}

impl Ecc {
    /// `"L"`, `"M"`, `"Q"`, `"H"`, either case.
    pub fn parse(s: &str) -> Option<Ecc> {
        match s {
            "L" | "l" => Some(Ecc::L),
            "M" | "m" => Some(Ecc::M),
            "Q" | "q" => Some(Ecc::Q),
            "H" | "h" => Some(Ecc::H),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Ecc::L => "L",
            Ecc::M => "M",
            Ecc::Q => "Q",
            Ecc::H => "H",
        }
    }

    fn level(self) -> EcLevel {
        match self {
            Ecc::L => EcLevel::L,
            Ecc::M => EcLevel::M,
            Ecc::Q => EcLevel::Q,
            Ecc::H => EcLevel::H,
        }
    }
}

impl std::str::FromStr for Ecc {
    type Err = RenderError;

    fn from_str(s: &str) -> Result<Ecc, RenderError> {
        Ecc::parse(s).ok_or_else(|| RenderError::InvalidParam {
            param: "ecc",
            reason: format!("must be one of L, M, Q, H, got {}", quoted_prefix(s)),
        })
    }
}

/// Validated rendering options. `size_px` is the requested edge; see `png` for how the
/// actual PNG edge is derived from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenderParams {
    pub size_px: u32,
    pub margin_modules: u32,
    pub ecc: Ecc,
}

impl RenderParams {
    /// Parses query-string values. Defaults: size 512 (capped at `max_size_px`), margin 4
    /// (the quiet zone scanners expect), ecc M. `size` must be an integer in
    /// `64..=max_size_px`, `margin` in `0..=16`; errors name the parameter.
    pub fn parse(
        size: Option<&str>,
        margin: Option<&str>,
        ecc: Option<&str>,
        max_size_px: u32,
    ) -> Result<RenderParams, RenderError> {
        let size_px = match size {
            None => DEFAULT_SIZE_PX.min(max_size_px),
            Some(s) => parse_bounded("size", s, MIN_SIZE_PX, max_size_px, " px")?,
        };
        let margin_modules = match margin {
            None => DEFAULT_MARGIN_MODULES,
            Some(s) => parse_bounded("margin", s, 0, MAX_MARGIN_MODULES, " modules")?,
        };
        let ecc = match ecc {
            None => Ecc::default(),
            Some(s) => s.parse()?,
        };
        Ok(RenderParams {
            size_px,
            margin_modules,
            ecc,
        })
    }
}

impl Default for RenderParams {
    fn default() -> RenderParams {
        RenderParams {
            size_px: DEFAULT_SIZE_PX,
            margin_modules: DEFAULT_MARGIN_MODULES,
            ecc: Ecc::default(),
        }
    }
}

/// Echoes at most 16 characters of a rejected value, so an error stays one short line.
fn quoted_prefix(s: &str) -> String {
    let mut shown: String = s.chars().take(16).collect();
    if s.chars().nth(16).is_some() {
        shown.push('…');
    }
    format!("{shown:?}")
}

/// Accepts only plain ASCII digits (no sign, no spaces) within `min..=max`.
fn parse_bounded(
    param: &'static str,
    s: &str,
    min: u32,
    max: u32,
    unit: &str,
) -> Result<u32, RenderError> {
    let invalid = || RenderError::InvalidParam {
        param,
        reason: format!(
            "must be an integer from {min} to {max}{unit}, got {}",
            quoted_prefix(s)
        ),
    };
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    match s.parse::<u32>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(invalid()),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("invalid {param}: {reason}")]
    InvalidParam { param: &'static str, reason: String },
    #[error(
        "size too small: this code needs at least {needed_px} px (one pixel per module including the quiet zone)"
    )]
    TooSmall { needed_px: u32 },
    #[error("cannot render QR code: {0}")]
    Encode(String),
}

/// The module matrix of a code, row-major, `true` = dark.
struct Matrix {
    width: u32,
    dark: Vec<bool>,
}

impl Matrix {
    fn encode(payload: &str, ecc: Ecc) -> Result<Matrix, RenderError> {
        let code =
            QrCode::with_error_correction_level(payload.as_bytes(), ecc.level()).map_err(|e| {
                RenderError::Encode(format!(
                    "{e} ({} bytes at error correction {})",
                    payload.len(),
                    ecc.as_str()
                ))
            })?;
        let width = u32::try_from(code.width())
            .map_err(|_| RenderError::Encode("code width out of range".into()))?;
        let dark = code
            .to_colors()
            .into_iter()
            .map(|c| c == Color::Dark)
            .collect();
        Ok(Matrix { width, dark })
    }

    fn is_dark(&self, x: u32, y: u32) -> bool {
        self.dark
            .get((y * self.width + x) as usize)
            .copied()
            .unwrap_or(false)
    }

    /// One SVG path (`M x y h n v1 h-n z` per horizontal run of dark modules), in module
    /// coordinates offset by `margin`. Runs keep the path a few KB instead of one rect per
    /// module.
    fn svg_path(&self, margin: u32) -> String {
        let mut d = String::with_capacity(self.dark.len() * 2);
        for y in 0..self.width {
            let mut x = 0;
            while x < self.width {
                if !self.is_dark(x, y) {
                    x += 1;
                    continue;
                }
                let start = x;
                while x < self.width && self.is_dark(x, y) {
                    x += 1;
                }
                let run = x - start;
                let _ = write!(d, "M{} {}h{run}v1h-{run}z", start + margin, y + margin);
            }
        }
        d
    }
}

/// Modules across the whole image, quiet zone included.
fn total_modules(matrix: &Matrix, margin: u32) -> u32 {
    matrix.width + 2 * margin
}

/// Pixels per module, at least one.
fn module_px(total: u32, size_px: u32) -> Result<u32, RenderError> {
    match size_px / total {
        0 => Err(RenderError::TooSmall { needed_px: total }),
        n => Ok(n),
    }
}

/// A grayscale PNG (Luma8). Each module is `floor(size_px / (modules + 2*margin))` pixels
/// so modules stay whole pixels and the code stays crisp; the image edge is therefore
/// `module_px * (modules + 2*margin)`, which is at most `size_px` (up to one module short).
pub fn png(payload: &str, p: &RenderParams) -> Result<Vec<u8>, RenderError> {
    let matrix = Matrix::encode(payload, p.ecc)?;
    let total = total_modules(&matrix, p.margin_modules);
    let scale = module_px(total, p.size_px)?;
    let edge = scale * total;
    let edge_usize = edge as usize;
    let scale_usize = scale as usize;

    let mut pixels = vec![255u8; edge_usize * edge_usize];
    let mut row = vec![255u8; edge_usize];
    for y in 0..matrix.width {
        row.fill(255);
        for x in 0..matrix.width {
            if matrix.is_dark(x, y) {
                let from = ((x + p.margin_modules) * scale) as usize;
                row[from..from + scale_usize].fill(0);
            }
        }
        let top = ((y + p.margin_modules) * scale) as usize;
        for line in top..top + scale_usize {
            pixels[line * edge_usize..(line + 1) * edge_usize].copy_from_slice(&row);
        }
    }

    let mut out = Vec::with_capacity(edge_usize * edge_usize / 16);
    PngEncoder::new(&mut out)
        .write_image(&pixels, edge, edge, image::ExtendedColorType::L8)
        .map_err(|e| RenderError::Encode(format!("PNG encoding failed: {e}")))?;
    Ok(out)
}

/// A compact SVG: one white background rect and one black `<path>` of module runs, with
/// `viewBox` in modules (quiet zone included) and `width`/`height` exactly `size_px`
/// (vectors scale, so no flooring; the same one-pixel-per-module minimum applies).
pub fn svg(payload: &str, p: &RenderParams) -> Result<String, RenderError> {
    let matrix = Matrix::encode(payload, p.ecc)?;
    let total = total_modules(&matrix, p.margin_modules);
    module_px(total, p.size_px)?;
    let path = matrix.svg_path(p.margin_modules);
    let mut out = String::with_capacity(path.len() + 256);
    let _ = write!(
        out,
        concat!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" "#,
            r#"viewBox="0 0 {total} {total}" shape-rendering="crispEdges">"#,
            r##"<rect width="{total}" height="{total}" fill="#fff"/>"##,
            r##"<path fill="#000" d="{path}"/></svg>"##
        ),
        size = p.size_px,
        total = total,
        path = path
    );
    Ok(out)
}

// ------------------------------------------------------------------------------------------
// Poster
// ------------------------------------------------------------------------------------------

/// What the printable plate says around its code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Poster<'a> {
    /// The merchant's name in each chosen language (1 to 4); the first is printed largest.
    pub names: Vec<&'a str>,
    /// The plate label, e.g. "Till 2" (may be empty).
    pub label: &'a str,
    /// A fixed plate's amount, e.g. "25.00 MOP".
    pub amount: Option<&'a str>,
    /// Accepted wallet brand names.
    pub wallets: Vec<&'a str>,
    pub footer: Option<&'a str>,
}

const POSTER_W: f32 = 105.0;
const POSTER_H: f32 = 148.0;
const TEXT_WIDTH: f32 = 95.0;
const FONT_FAMILY: &str = "sans-serif, 'Noto Sans CJK TC'";

/// XML-escapes text for element content and attribute values, dropping characters XML 1.0
/// cannot carry (C0 controls other than tab/newline/CR), which would make the file invalid.
fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(' '),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Rough advance width in em: CJK and other wide characters ~1 em, Latin ~0.6 em, bold
/// ~10% wider. Overestimating only makes text smaller, never clipped.
fn em_width(s: &str, bold: bool) -> f32 {
    let regular: f32 = s
        .chars()
        .map(|c| match u32::from(c) {
            0x1100..=0x115F
            | 0x2E80..=0xA4CF
            | 0xAC00..=0xD7A3
            | 0xF900..=0xFAFF
            | 0xFE30..=0xFE4F
            | 0xFF00..=0xFF60
            | 0xFFE0..=0xFFE6
            | 0x20000..=0x3FFFD => 1.0,
            _ => 0.6,
        })
        .sum();
    if bold { regular * 1.1 } else { regular }
}

/// One centred line of poster text: preferred and minimum font size in mm.
struct Line<'a> {
    text: &'a str,
    size: f32,
    min: f32,
    bold: bool,
}

impl Line<'_> {
    /// The font size at which the text fits the printable width, within `min..=size`.
    fn fitted_size(&self) -> f32 {
        let fit = TEXT_WIDTH / em_width(self.text, self.bold).max(0.01);
        self.size.min(fit).max(self.min)
    }

    /// Writes a `<text>` with its baseline at `baseline`; text still too wide at the
    /// minimum size is squeezed (`textLength`) rather than run off the card.
    fn write(&self, out: &mut String, baseline: f32) {
        let size = self.fitted_size();
        let squeeze = if size * em_width(self.text, self.bold) > TEXT_WIDTH {
            format!(r#" textLength="{TEXT_WIDTH}" lengthAdjust="spacingAndGlyphs""#)
        } else {
            String::new()
        };
        let weight = if self.bold {
            r#" font-weight="bold""#
        } else {
            ""
        };
        let _ = write!(
            out,
            r#"<text x="{x}" y="{baseline:.2}" font-size="{size:.2}"{weight}{squeeze}>{text}</text>"#,
            x = POSTER_W / 2.0,
            text = xml_escape(self.text)
        );
    }
}

/// Writes lines top to bottom from `y`, returning the y below the last one.
fn write_lines(out: &mut String, lines: &[Line], mut y: f32) -> f32 {
    for line in lines {
        let size = line.fitted_size();
        y += size;
        line.write(out, y);
        y += size * (LEADING - 1.0);
    }
    y
}

/// Line advance as a multiple of the font size.
const LEADING: f32 = 1.3;

/// An A6 portrait poster (105 x 148 mm, `viewBox` in mm): names at the top, the code as
/// vector modules with a 4-module quiet zone in the middle, then the plate label, the fixed
/// amount, the accepted wallets and a small footer. All text is XML-escaped.
pub fn poster_svg(payload: &str, poster: &Poster, ecc: Ecc) -> Result<String, RenderError> {
    if poster.names.is_empty() || poster.names.iter().all(|n| n.trim().is_empty()) {
        return Err(RenderError::InvalidParam {
            param: "names",
            reason: "at least one merchant name is required".into(),
        });
    }
    if poster.names.len() > MAX_POSTER_NAMES {
        return Err(RenderError::InvalidParam {
            param: "names",
            reason: format!("at most {MAX_POSTER_NAMES} names fit on the poster"),
        });
    }
    let matrix = Matrix::encode(payload, ecc)?;
    let total = total_modules(&matrix, POSTER_QUIET_ZONE);

    // Later names never outgrow the first, even when a long first name had to shrink.
    let first = Line {
        text: poster.names[0],
        size: 10.0,
        min: 3.0,
        bold: true,
    };
    let later_size = first.fitted_size().min(6.5);
    let mut names = vec![first];
    names.extend(poster.names[1..].iter().map(|name| Line {
        text: name,
        size: later_size,
        min: 2.5,
        bold: false,
    }));
    let mut body = String::with_capacity(8 * 1024);
    let qr_top = write_lines(&mut body, &names, 6.0) + 1.0;

    let wallets_line = if poster.wallets.is_empty() {
        None
    } else {
        Some(format!("Accepted: {}", poster.wallets.join(" · ")))
    };
    let line = |text, size, min, bold| Line {
        text,
        size,
        min,
        bold,
    };
    let mut below: Vec<Line> = Vec::new();
    if !poster.label.trim().is_empty() {
        below.push(line(poster.label, 5.5, 3.0, false));
    }
    if let Some(amount) = poster.amount {
        below.push(line(amount, 8.0, 4.0, true));
    }
    if let Some(wallets) = &wallets_line {
        below.push(line(wallets, 3.6, 2.4, false));
    }
    if let Some(footer) = poster.footer {
        below.push(line(footer, 2.6, 2.0, false));
    }
    let below_height: f32 = below.iter().map(|l| l.size * LEADING).sum();
    let bottom_margin = 5.0;
    let qr_side = (POSTER_H - bottom_margin - below_height - qr_top - 1.0).clamp(40.0, 88.0);
    let qr_x = (POSTER_W - qr_side) / 2.0;

    let _ = write!(
        body,
        concat!(
            r#"<svg x="{x:.2}" y="{y:.2}" width="{side:.2}" height="{side:.2}" "#,
            r#"viewBox="0 0 {total} {total}" shape-rendering="crispEdges">"#,
            r##"<rect width="{total}" height="{total}" fill="#fff"/>"##,
            r##"<path fill="#000" d="{path}"/></svg>"##
        ),
        x = qr_x,
        y = qr_top,
        side = qr_side,
        total = total,
        path = matrix.svg_path(POSTER_QUIET_ZONE)
    );

    write_lines(&mut body, &below, qr_top + qr_side + 1.0);

    let mut out = String::with_capacity(body.len() + 512);
    let _ = write!(
        out,
        concat!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="105mm" height="148mm" "#,
            r##"viewBox="0 0 105 148" font-family="{font}" text-anchor="middle" fill="#000">"##,
            r##"<rect width="105" height="148" fill="#fff"/>{body}</svg>"##
        ),
        font = FONT_FAMILY,
        body = body
    );
    Ok(out)
}

// ------------------------------------------------------------------------------------------
// Cache
// ------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Png,
    Svg,
    Poster,
}

impl Kind {
    fn tag(self) -> &'static str {
        match self {
            Kind::Png => "png",
            Kind::Svg => "svg",
            Kind::Poster => "poster",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Kind::Png => "image/png",
            Kind::Svg | Kind::Poster => "image/svg+xml",
        }
    }
}

/// A finished rendering, shared between the cache and responses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub bytes: Vec<u8>,
    pub content_type: &'static str,
    /// Quoted strong ETag, e.g. `"\"3f2a...\""` (32 hex digits).
    pub etag: String,
}

/// Renders once per distinct request, keeping the most recently used results.
///
/// The key is the SHA-256 of everything that affects the output (kind, payload, the
/// parameters that kind uses, the poster text and `RENDER_VERSION`); the ETag is its first
/// 32 hex digits, so `etag_for` answers `If-None-Match` without rendering. Rendering runs
/// outside the lock: two simultaneous misses for the same key may both render (the
/// second result replaces the first, identical one), which is cheaper than serialising
/// every render behind one mutex.
pub struct RenderCache {
    entries: Mutex<LruCache<[u8; 32], Arc<Rendered>>>,
    renders: AtomicU64,
}

impl std::fmt::Debug for RenderCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RenderCache")
            .field("renders", &self.renders())
            .finish_non_exhaustive()
    }
}

fn hash_field(h: &mut Sha256, s: &str) {
    // Length-prefixed, so ("ab", "c") and ("a", "bc") hash differently.
    h.update((s.len() as u64).to_le_bytes());
    h.update(s.as_bytes());
}

fn cache_key(
    kind: Kind,
    payload: &str,
    params: &RenderParams,
    poster: Option<&Poster>,
) -> [u8; 32] {
    let mut h = Sha256::new();
    hash_field(&mut h, RENDER_VERSION);
    hash_field(&mut h, kind.tag());
    hash_field(&mut h, payload);
    hash_field(&mut h, params.ecc.as_str());
    match kind {
        Kind::Png | Kind::Svg => {
            h.update(params.size_px.to_le_bytes());
            h.update(params.margin_modules.to_le_bytes());
        }
        // A poster's geometry is fixed; only its text and the ECC matter.
        Kind::Poster => {
            if let Some(p) = poster {
                h.update((p.names.len() as u64).to_le_bytes());
                for name in &p.names {
                    hash_field(&mut h, name);
                }
                hash_field(&mut h, p.label);
                hash_optional(&mut h, p.amount);
                h.update((p.wallets.len() as u64).to_le_bytes());
                for wallet in &p.wallets {
                    hash_field(&mut h, wallet);
                }
                hash_optional(&mut h, p.footer);
            }
        }
    }
    h.finalize().into()
}

fn hash_optional(h: &mut Sha256, s: Option<&str>) {
    match s {
        None => h.update([0u8]),
        Some(s) => {
            h.update([1u8]);
            hash_field(h, s);
        }
    }
}

fn etag_of(key: &[u8; 32]) -> String {
    format!("\"{}\"", hex::encode(&key[..16]))
}

impl RenderCache {
    /// A cache holding up to `capacity` renderings (at least one).
    pub fn new(capacity: usize) -> RenderCache {
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        RenderCache {
            entries: Mutex::new(LruCache::new(capacity)),
            renders: AtomicU64::new(0),
        }
    }

    /// The ETag `get_or_render` would return, computed without rendering. For `Png`/`Svg`
    /// the poster is ignored; for `Poster` the size and margin are.
    pub fn etag_for(
        kind: Kind,
        payload: &str,
        params: &RenderParams,
        poster: Option<&Poster>,
    ) -> String {
        etag_of(&cache_key(kind, payload, params, poster))
    }

    /// The cached rendering, or a fresh one (then cached). Errors are not cached. `Poster`
    /// requires `poster`.
    pub fn get_or_render(
        &self,
        kind: Kind,
        payload: &str,
        params: &RenderParams,
        poster: Option<&Poster>,
    ) -> Result<Arc<Rendered>, RenderError> {
        let key = cache_key(kind, payload, params, poster);
        if let Some(hit) = self.lock().get(&key) {
            return Ok(Arc::clone(hit));
        }
        self.renders.fetch_add(1, Ordering::Relaxed);
        let bytes = match kind {
            Kind::Png => png(payload, params)?,
            Kind::Svg => svg(payload, params)?.into_bytes(),
            Kind::Poster => {
                let poster = poster.ok_or_else(|| RenderError::InvalidParam {
                    param: "poster",
                    reason: "a poster needs its names, label and wallets".into(),
                })?;
                poster_svg(payload, poster, params.ecc)?.into_bytes()
            }
        };
        let rendered = Arc::new(Rendered {
            bytes,
            content_type: kind.content_type(),
            etag: etag_of(&key),
        });
        self.lock().put(key, Arc::clone(&rendered));
        Ok(rendered)
    }

    /// How many renders actually ran (cache misses, including ones that failed).
    pub fn renders(&self) -> u64 {
        self.renders.load(Ordering::Relaxed)
    }

    /// A panic while holding the lock can only interrupt an LRU get/put, which leaves the
    /// map usable, so a poisoned lock is recovered rather than propagated.
    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<[u8; 32], Arc<Rendered>>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAYLOAD: &str = "00020101021126290014mo.example.pay0107M0001235204581253034465802MO5911SAMPLE CAFE6005MACAU62110307STORE016304E42D";

    fn params(size: u32, margin: u32, ecc: Ecc) -> RenderParams {
        RenderParams {
            size_px: size,
            margin_modules: margin,
            ecc,
        }
    }

    /// Decodes every QR code rqrr finds in a grayscale bitmap, padding it with white so a
    /// margin-0 image still has the quiet zone a scanner needs.
    fn read_codes(width: usize, height: usize, pixel: impl Fn(usize, usize) -> u8) -> Vec<String> {
        let pad = 32;
        let mut img = rqrr::PreparedImage::prepare_from_greyscale(
            width + 2 * pad,
            height + 2 * pad,
            |x, y| {
                if x < pad || y < pad || x >= width + pad || y >= height + pad {
                    255
                } else {
                    pixel(x - pad, y - pad)
                }
            },
        );
        img.detect_grids()
            .into_iter()
            .filter_map(|g| g.decode().ok().map(|(_, content)| content))
            .collect()
    }

    fn read_png(bytes: &[u8]) -> (u32, Vec<String>) {
        let img = image::load_from_memory_with_format(bytes, image::ImageFormat::Png)
            .unwrap()
            .to_luma8();
        let (w, h) = img.dimensions();
        let codes = read_codes(w as usize, h as usize, |x, y| {
            img.get_pixel(x as u32, y as u32)[0]
        });
        (w, codes)
    }

    /// Rasterises our own `M x y h n v1 h-n z` paths at `scale` px per module.
    fn raster_svg_path(d: &str, total: usize, scale: usize) -> Vec<String> {
        let mut dark = vec![false; total * total];
        for run in d.split('z').filter(|r| !r.is_empty()) {
            let run = run.strip_prefix('M').unwrap();
            let (xy, rest) = run.split_once('h').unwrap();
            let (x, y) = xy.split_once(' ').unwrap();
            let (n, _) = rest.split_once('v').unwrap();
            let (x, y, n): (usize, usize, usize) =
                (x.parse().unwrap(), y.parse().unwrap(), n.parse().unwrap());
            for i in x..x + n {
                dark[y * total + i] = true;
            }
        }
        read_codes(total * scale, total * scale, |x, y| {
            if dark[(y / scale) * total + x / scale] {
                0
            } else {
                255
            }
        })
    }

    fn between<'a>(s: &'a str, start: &str, end: &str) -> &'a str {
        let from = s.find(start).unwrap() + start.len();
        let len = s[from..].find(end).unwrap();
        &s[from..from + len]
    }

    fn modules(payload: &str, ecc: Ecc) -> u32 {
        Matrix::encode(payload, ecc).unwrap().width
    }

    #[test]
    fn png_decodes_back_to_the_payload_at_every_ecc_and_margin() {
        for ecc in [Ecc::L, Ecc::M, Ecc::Q, Ecc::H] {
            for margin in [0, 4] {
                let p = params(512, margin, ecc);
                let bytes = png(PAYLOAD, &p).unwrap();
                assert!(bytes.starts_with(b"\x89PNG"));
                let (edge, codes) = read_png(&bytes);
                assert_eq!(codes, [PAYLOAD], "ecc {ecc:?} margin {margin}");
                let total = modules(PAYLOAD, ecc) + 2 * margin;
                assert_eq!(edge, (512 / total) * total);
                assert!(edge <= 512);
            }
        }
    }

    #[test]
    fn png_of_chinese_payload_round_trips_as_utf8() {
        let payload = "https://pay.example.mo/q/abc?n=澳門小食店";
        let (_, codes) = read_png(&png(payload, &RenderParams::default()).unwrap());
        assert_eq!(codes, [payload]);
    }

    #[test]
    fn svg_is_compact_with_module_viewbox_and_decodes_back() {
        for (ecc, margin) in [(Ecc::M, 4), (Ecc::H, 0), (Ecc::L, 2)] {
            let out = svg(PAYLOAD, &params(300, margin, ecc)).unwrap();
            let total = modules(PAYLOAD, ecc) + 2 * margin;
            assert!(out.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
            assert!(out.ends_with("</svg>"));
            assert!(out.contains(&format!(r#"viewBox="0 0 {total} {total}""#)));
            assert!(out.contains(r#"width="300" height="300""#));
            assert!(out.contains(r#"shape-rendering="crispEdges""#));
            assert_eq!(out.matches("<path").count(), 1);
            let d = between(&out, " d=\"", "\"");
            assert_eq!(
                raster_svg_path(d, total as usize, 4),
                [PAYLOAD],
                "ecc {ecc:?}"
            );
        }
    }

    fn param_err(
        size: Option<&str>,
        margin: Option<&str>,
        ecc: Option<&str>,
    ) -> (&'static str, String) {
        match RenderParams::parse(size, margin, ecc, 2048).unwrap_err() {
            RenderError::InvalidParam { param, reason } => (param, reason),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn params_default_and_accept_lower_case_ecc() {
        assert_eq!(
            RenderParams::parse(None, None, None, 2048).unwrap(),
            params(512, 4, Ecc::M)
        );
        assert_eq!(
            RenderParams::parse(Some("64"), Some("0"), Some("q"), 2048).unwrap(),
            params(64, 0, Ecc::Q)
        );
        assert_eq!(
            RenderParams::parse(Some("2048"), Some("16"), Some("H"), 2048).unwrap(),
            params(2048, 16, Ecc::H)
        );
        assert_eq!(
            RenderParams::parse(None, None, None, 256).unwrap().size_px,
            256
        );
    }

    #[test]
    fn invalid_params_are_rejected_naming_the_parameter() {
        for size in [
            "abc",
            "-5",
            "0",
            "63",
            "99999",
            "",
            " 512",
            "+512",
            "2049",
            "99999999999999999999",
        ] {
            let (param, reason) = param_err(Some(size), None, None);
            assert_eq!(param, "size", "{size:?}");
            assert!(reason.contains("from 64 to 2048"), "{reason}");
        }
        for margin in ["17", "-1", "x", "4.5"] {
            assert_eq!(
                param_err(None, Some(margin), None).0,
                "margin",
                "{margin:?}"
            );
        }
        for ecc in ["X", "", "MM", "medium"] {
            assert_eq!(param_err(None, None, Some(ecc)).0, "ecc", "{ecc:?}");
        }
        let message = RenderParams::parse(Some("abc"), None, None, 2048)
            .unwrap_err()
            .to_string();
        assert_eq!(
            message,
            "invalid size: must be an integer from 64 to 2048 px, got \"abc\""
        );
        let long = "9".repeat(40);
        let message = RenderParams::parse(Some(&long), None, None, 2048)
            .unwrap_err()
            .to_string();
        assert!(message.len() < 100, "{message}");
    }

    #[test]
    fn a_size_below_one_pixel_per_module_is_too_small() {
        let long = format!("https://pay.example.mo/q/{}", "A1b2C3d4".repeat(40));
        let total = modules(&long, Ecc::H) + 8;
        assert!(total > 64);
        let p = params(64, 4, Ecc::H);
        assert_eq!(
            png(&long, &p),
            Err(RenderError::TooSmall { needed_px: total })
        );
        assert_eq!(
            svg(&long, &p),
            Err(RenderError::TooSmall { needed_px: total })
        );
        assert!(png(&long, &params(total, 4, Ecc::H)).is_ok());
    }

    #[test]
    fn a_payload_too_long_for_any_qr_is_an_encode_error() {
        let huge = "x".repeat(3000);
        let e = png(&huge, &RenderParams::default()).unwrap_err();
        assert!(matches!(e, RenderError::Encode(_)), "{e:?}");
        assert!(
            e.to_string().contains("3000 bytes at error correction M"),
            "{e}"
        );
    }

    fn sample_poster<'a>() -> Poster<'a> {
        Poster {
            names: vec!["Sample Café <script>&\"'", "澳門小食店", "Café Amostra"],
            label: "Till 2",
            amount: Some("25.00 MOP"),
            wallets: vec!["MPay", "Alipay", "WeChat Pay", "BOC Pay"],
            footer: Some("Scan with any wallet · Sesame"),
        }
    }

    #[test]
    fn poster_escapes_text_and_shows_every_field() {
        let out = poster_svg(PAYLOAD, &sample_poster(), Ecc::M).unwrap();
        assert!(out.starts_with(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"105mm\" height=\"148mm\""
        ));
        assert!(out.contains(r#"viewBox="0 0 105 148""#));
        assert!(out.contains(r#"font-family="sans-serif, 'Noto Sans CJK TC'""#));
        assert!(!out.contains("<script>"));
        assert!(out.contains("Sample Café &lt;script&gt;&amp;&quot;&apos;"));
        for text in [
            "澳門小食店",
            "Café Amostra",
            "Till 2",
            "25.00 MOP",
            "MPay",
            "Alipay",
            "WeChat Pay",
            "BOC Pay",
            "Accepted:",
            "Scan with any wallet",
        ] {
            assert!(out.contains(text), "missing {text}");
        }
        // Names come first, in order, and the first one is printed largest.
        let sizes: Vec<f32> = out
            .split("font-size=\"")
            .skip(1)
            .map(|s| s[..s.find('"').unwrap()].parse().unwrap())
            .collect();
        assert!(sizes[1] <= sizes[0] && sizes[2] <= sizes[0], "{sizes:?}");
        assert!(out.find("澳門小食店").unwrap() < out.find("Café Amostra").unwrap());
    }

    #[test]
    fn poster_code_decodes_back_to_the_payload() {
        let out = poster_svg(PAYLOAD, &sample_poster(), Ecc::Q).unwrap();
        let total = modules(PAYLOAD, Ecc::Q) + 2 * POSTER_QUIET_ZONE;
        assert!(out.contains(&format!(r#"viewBox="0 0 {total} {total}""#)));
        let d = between(&out, " d=\"", "\"");
        assert_eq!(raster_svg_path(d, total as usize, 4), [PAYLOAD]);
    }

    #[test]
    fn poster_text_stays_well_formed_with_control_characters_and_long_names() {
        let long = "Very Long Merchant Name Trading Company Limited Macau Branch";
        let poster = Poster {
            names: vec![long, "a\u{0}b\u{1b}c"],
            label: "",
            amount: None,
            wallets: vec![],
            footer: None,
        };
        let out = poster_svg(PAYLOAD, &poster, Ecc::M).unwrap();
        assert!(out.contains(">abc</text>"));
        assert!(!out.contains("Accepted:"));
        assert!(out.contains(long));
        assert!(!out.chars().any(|c| c.is_control()));
    }

    #[test]
    fn poster_needs_one_to_four_names() {
        let mut poster = sample_poster();
        poster.names = vec![];
        assert!(matches!(
            poster_svg(PAYLOAD, &poster, Ecc::M),
            Err(RenderError::InvalidParam { param: "names", .. })
        ));
        poster.names = vec!["a", "b", "c", "d", "e"];
        assert!(matches!(
            poster_svg(PAYLOAD, &poster, Ecc::M),
            Err(RenderError::InvalidParam { param: "names", .. })
        ));
    }

    #[test]
    fn repeated_request_is_served_from_cache_with_a_stable_etag() {
        let cache = RenderCache::new(8);
        let p = RenderParams::default();
        let first = cache.get_or_render(Kind::Png, PAYLOAD, &p, None).unwrap();
        let second = cache.get_or_render(Kind::Png, PAYLOAD, &p, None).unwrap();
        assert_eq!(cache.renders(), 1);
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(first.content_type, "image/png");
        assert_eq!(
            first.etag,
            RenderCache::etag_for(Kind::Png, PAYLOAD, &p, None)
        );
        assert_eq!(first.etag.len(), 34);
        assert!(first.etag.starts_with('"') && first.etag.ends_with('"'));
        assert_eq!(first.bytes, png(PAYLOAD, &p).unwrap());
    }

    #[test]
    fn different_params_kind_or_poster_text_get_new_etags() {
        let cache = RenderCache::new(8);
        let p = RenderParams::default();
        let base = cache.get_or_render(Kind::Png, PAYLOAD, &p, None).unwrap();
        let bigger = cache
            .get_or_render(Kind::Png, PAYLOAD, &params(600, 4, Ecc::M), None)
            .unwrap();
        let svg_out = cache.get_or_render(Kind::Svg, PAYLOAD, &p, None).unwrap();
        let poster = sample_poster();
        let poster_out = cache
            .get_or_render(Kind::Poster, PAYLOAD, &p, Some(&poster))
            .unwrap();
        let mut relabelled = sample_poster();
        relabelled.label = "Till 3";
        let relabelled_out = cache
            .get_or_render(Kind::Poster, PAYLOAD, &p, Some(&relabelled))
            .unwrap();
        let etags = [
            &base.etag,
            &bigger.etag,
            &svg_out.etag,
            &poster_out.etag,
            &relabelled_out.etag,
        ];
        for (i, a) in etags.iter().enumerate() {
            for b in &etags[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(cache.renders(), 5);
        assert_eq!(svg_out.content_type, "image/svg+xml");
        assert_eq!(poster_out.content_type, "image/svg+xml");
        // A poster ignores size and margin, so those do not split its cache entry.
        cache
            .get_or_render(
                Kind::Poster,
                PAYLOAD,
                &params(900, 0, Ecc::M),
                Some(&poster),
            )
            .unwrap();
        assert_eq!(cache.renders(), 5);
    }

    #[test]
    fn poster_without_details_and_failed_renders_are_not_cached() {
        let cache = RenderCache::new(2);
        let p = RenderParams::default();
        assert!(matches!(
            cache.get_or_render(Kind::Poster, PAYLOAD, &p, None),
            Err(RenderError::InvalidParam {
                param: "poster",
                ..
            })
        ));
        let huge = "x".repeat(3000);
        assert!(cache.get_or_render(Kind::Png, &huge, &p, None).is_err());
        assert!(cache.get_or_render(Kind::Png, &huge, &p, None).is_err());
        assert_eq!(cache.renders(), 3);
    }

    #[test]
    fn least_recently_used_entry_is_evicted_at_capacity() {
        let cache = RenderCache::new(1);
        let p = RenderParams::default();
        cache.get_or_render(Kind::Svg, "a", &p, None).unwrap();
        cache.get_or_render(Kind::Svg, "b", &p, None).unwrap();
        cache.get_or_render(Kind::Svg, "a", &p, None).unwrap();
        assert_eq!(cache.renders(), 3);
    }

    #[test]
    fn cache_is_shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<RenderCache>();
        let cache = Arc::new(RenderCache::new(4));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let cache = Arc::clone(&cache);
                std::thread::spawn(move || {
                    cache
                        .get_or_render(Kind::Svg, PAYLOAD, &RenderParams::default(), None)
                        .unwrap()
                        .etag
                        .clone()
                })
            })
            .collect();
        let etags: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(etags.windows(2).all(|w| w[0] == w[1]));
        assert!((1..=4).contains(&cache.renders()));
    }
}
