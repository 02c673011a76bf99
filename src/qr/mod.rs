//! QR payloads (URL and EMVCo MPM) and rendering (PNG, SVG, printable poster).

pub mod emvco;
pub mod payload;
pub mod render;
pub mod token;
