//! EMVCo Merchant-Presented Mode (MPM) payloads: the TLV codec and its CRC (wallets.md §8).
//!
//! Owns: `decode` (any scheme's MPM string -> ordered data objects + CRC verdict) and
//! `encode` (our own static or dynamic plates -> a spec-conformant string).
//! Must never: guess at a malformed payload (every structural fault is an error naming the
//! object and its position), nor emit a payload it could not decode itself.
//!
//! Conventions used throughout:
//! - a data object is `ID(2 digits) LEN(2 digits) VALUE(LEN characters)`; lengths count
//!   characters (Unicode scalar values), not bytes, because tag 64 may hold Chinese;
//! - error offsets are 0-based character positions in the whole payload, also inside
//!   templates, so a message can be checked against the string by eye;
//! - the CRC is CRC-16/CCITT-FALSE over the UTF-8 bytes up to and including `6304`.

use std::fmt::Write as _;

use serde_json::{Map, Value as Json};

/// The largest payload `decode` accepts and `encode` emits, in characters.
///
/// The spec's own maximum is unconfirmed (512 is often quoted, wallets.md §11.10), so we
/// take the generous bound and say so in the error rather than reject real payloads.
pub const MAX_PAYLOAD_CHARS: usize = 1024;

/// CRC-16/CCITT-FALSE: polynomial 0x1021, initial 0xFFFF, no reflection, no final XOR.
pub fn crc16_ccitt_false(data: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Templates whose value is itself a TLV list: merchant accounts 26-51, additional data 62,
/// language 64 and the unreserved templates 80-99. Everything else is a primitive.
fn is_template(id: u8) -> bool {
    matches!(id, 26..=51 | 62 | 64 | 80..=99)
}

// ------------------------------------------------------------------------------------------
// Decoding
// ------------------------------------------------------------------------------------------

/// One data object's value, with template ids kept as the 2-digit strings of the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Primitive(String),
    /// Sub-objects in payload order.
    Template(Vec<(String, Value)>),
}

impl Value {
    pub fn as_primitive(&self) -> Option<&str> {
        match self {
            Value::Primitive(s) => Some(s),
            Value::Template(_) => None,
        }
    }

    /// A sub-object of a template (`None` for a primitive or an absent id).
    pub fn get(&self, id: &str) -> Option<&Value> {
        match self {
            Value::Primitive(_) => None,
            Value::Template(objects) => lookup(objects, id),
        }
    }

    fn to_json(&self) -> Json {
        match self {
            Value::Primitive(s) => Json::String(s.clone()),
            Value::Template(objects) => Json::Object(objects_to_json(objects)),
        }
    }
}

fn lookup<'a>(objects: &'a [(String, Value)], id: &str) -> Option<&'a Value> {
    objects.iter().find(|(k, _)| k == id).map(|(_, v)| v)
}

/// Ids are 2-digit strings, so a sorted map (serde_json without `preserve_order`) still
/// lists them in numeric order.
fn objects_to_json(objects: &[(String, Value)]) -> Map<String, Json> {
    objects
        .iter()
        .map(|(id, v)| (id.clone(), v.to_json()))
        .collect()
}

/// A structurally valid payload. A wrong CRC is reported here (`crc_valid == false`), not as
/// an error, so a tool can still show what the payload says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// Root objects in payload order, including `00` first and `63` last.
    pub objects: Vec<(String, Value)>,
    pub crc_valid: bool,
    /// The CRC we computed, 4 upper-case hex digits.
    pub expected_crc: String,
    /// The CRC in the payload as written (lower-case hex is accepted).
    pub found_crc: String,
}

impl Decoded {
    /// `{"crc_valid", "expected_crc", "found_crc", "objects": {"00": "01", "26": {...}}}`.
    pub fn to_json(&self) -> Json {
        let mut root = Map::new();
        root.insert("crc_valid".into(), Json::Bool(self.crc_valid));
        root.insert(
            "expected_crc".into(),
            Json::String(self.expected_crc.clone()),
        );
        root.insert("found_crc".into(), Json::String(self.found_crc.clone()));
        root.insert(
            "objects".into(),
            Json::Object(objects_to_json(&self.objects)),
        );
        Json::Object(root)
    }

    /// A root object by id, e.g. `get("59")` for the merchant name.
    pub fn get(&self, id: &str) -> Option<&Value> {
        lookup(&self.objects, id)
    }
}

/// Why a payload is not a well-formed MPM string. Each message is one line naming the fault
/// and its character offset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty payload")]
    Empty,
    #[error(
        "too long: payload has {len} characters, at most {max} accepted (the spec's own maximum is unconfirmed)"
    )]
    TooLong { len: usize, max: usize },
    #[error("non-numeric id: {found:?} at offset {offset} is not a 2-digit object id")]
    NonNumericId { offset: usize, found: String },
    #[error(
        "bad length: object {id} at offset {offset} has length field {found:?}, expected 2 digits 01-99"
    )]
    BadLength {
        id: String,
        offset: usize,
        found: String,
    },
    #[error(
        "truncated: {remaining} characters at offset {offset} cannot hold an object id and length (4 characters)"
    )]
    TruncatedHeader { offset: usize, remaining: usize },
    #[error(
        "truncated: object {id} at offset {offset} declares length {declared} but only {remaining} characters remain"
    )]
    Truncated {
        id: String,
        offset: usize,
        declared: usize,
        remaining: usize,
    },
    #[error(
        "duplicate id: object {id} at offset {offset} already appeared at offset {first_offset}"
    )]
    DuplicateId {
        id: String,
        offset: usize,
        first_offset: usize,
    },
    #[error("payload format indicator (00) must come first, found object {found} at offset 0")]
    FirstNotPayloadFormat { found: String },
    #[error("payload format indicator (00) at offset 0 must be \"01\", found {found:?}")]
    PayloadFormatValue { found: String },
    #[error(
        "CRC (63) at offset {offset} must be the last object, but {trailing} characters follow it"
    )]
    CrcNotLast { offset: usize, trailing: usize },
    #[error("missing CRC: the payload does not end with object 63")]
    MissingCrc,
    #[error("malformed CRC: object 63 at offset {offset} must be 6304 + 4 hex digits, {reason}")]
    CrcMalformed { offset: usize, reason: String },
    /// A template's value does not parse as TLV; `inner` carries absolute offsets.
    #[error("in template {parent} at offset {offset}: {inner}")]
    InTemplate {
        parent: String,
        offset: usize,
        inner: Box<DecodeError>,
    },
}

/// A parsed object before template recursion; `value_byte` is where its value starts.
struct RawObject<'a> {
    id: &'a str,
    value: &'a str,
    offset: usize,
    value_byte: usize,
}

/// Splits off the first `n` characters, or `None` when fewer remain.
fn split_chars(s: &str, n: usize) -> Option<(&str, &str)> {
    if n == 0 {
        return Some(("", s));
    }
    let (idx, c) = s.char_indices().nth(n - 1)?;
    Some(s.split_at(idx + c.len_utf8()))
}

fn two_digits(s: &str) -> Option<u8> {
    let b = s.as_bytes();
    if b.len() == 2 && b[0].is_ascii_digit() && b[1].is_ascii_digit() {
        Some((b[0] - b'0') * 10 + (b[1] - b'0'))
    } else {
        None
    }
}

/// Parses a TLV list. `base` is the character offset of `s` in the whole payload. At the
/// root (`root == true`) the `00`-first and `63`-last rules apply while walking, so a
/// fault is reported at the object that breaks them rather than at later garbage.
fn parse_tlv(s: &str, base: usize, root: bool) -> Result<Vec<RawObject<'_>>, DecodeError> {
    let mut out: Vec<RawObject<'_>> = Vec::new();
    let mut byte = 0;
    let mut offset = base;
    while byte < s.len() {
        let rest = &s[byte..];
        let Some((header, after_header)) = split_chars(rest, 4) else {
            return Err(DecodeError::TruncatedHeader {
                offset,
                remaining: rest.chars().count(),
            });
        };
        let (id_str, len_str) = split_chars(header, 2).unwrap_or((header, ""));
        let Some(id_num) = two_digits(id_str) else {
            return Err(DecodeError::NonNumericId {
                offset,
                found: id_str.to_string(),
            });
        };
        if root && out.is_empty() && id_num != 0 {
            return Err(DecodeError::FirstNotPayloadFormat {
                found: id_str.to_string(),
            });
        }
        let declared = two_digits(len_str);
        if root && id_num == 63 && declared != Some(4) {
            return Err(DecodeError::CrcMalformed {
                offset,
                reason: format!("found length field {len_str:?}"),
            });
        }
        let declared = match declared {
            Some(n) if n > 0 => usize::from(n),
            _ => {
                return Err(DecodeError::BadLength {
                    id: id_str.to_string(),
                    offset,
                    found: len_str.to_string(),
                });
            }
        };
        let Some((value, _)) = split_chars(after_header, declared) else {
            return Err(DecodeError::Truncated {
                id: id_str.to_string(),
                offset,
                declared,
                remaining: after_header.chars().count(),
            });
        };
        if let Some(first) = out.iter().find(|o| o.id == id_str) {
            return Err(DecodeError::DuplicateId {
                id: id_str.to_string(),
                offset,
                first_offset: first.offset,
            });
        }
        // The header is 4 ASCII digits here, so it is 4 bytes.
        let value_byte = byte + 4;
        out.push(RawObject {
            id: id_str,
            value,
            offset,
            value_byte,
        });
        byte = value_byte + value.len();
        offset += 4 + declared;
        if root && id_num == 0 && value != "01" {
            return Err(DecodeError::PayloadFormatValue {
                found: value.to_string(),
            });
        }
        if root && id_num == 63 && byte < s.len() {
            return Err(DecodeError::CrcNotLast {
                offset: offset - 8,
                trailing: s[byte..].chars().count(),
            });
        }
    }
    Ok(out)
}

/// Tag 62's sub-objects 50-99 are payment-system-specific templates (each opening with
/// its GUID): decoded as objects when their value is well-formed TLV, otherwise kept as
/// the string the scheme put there (some schemes fill them with plain text).
fn nested_template(parent: u8, object: &RawObject<'_>) -> Option<Value> {
    let sub = two_digits(object.id)?;
    if parent != 62 || !(50..=99).contains(&sub) {
        return None;
    }
    let inner = parse_tlv(object.value, object.offset + 4, false).ok()?;
    Some(Value::Template(
        inner
            .into_iter()
            .map(|o| (o.id.to_string(), Value::Primitive(o.value.to_string())))
            .collect(),
    ))
}

/// Decodes any scheme's MPM payload. Structural faults are errors; a wrong CRC is not (see
/// `Decoded::crc_valid`). Mandatory-field presence is not enforced because real national
/// payloads omit some (PromptPay person-to-person codes carry no 52/59/60). Callers should
/// strip line endings first: trailing characters after `63` are an error.
pub fn decode(payload: &str) -> Result<Decoded, DecodeError> {
    if payload.is_empty() {
        return Err(DecodeError::Empty);
    }
    let len = payload.chars().count();
    if len > MAX_PAYLOAD_CHARS {
        return Err(DecodeError::TooLong {
            len,
            max: MAX_PAYLOAD_CHARS,
        });
    }
    let raw = parse_tlv(payload, 0, true)?;
    let Some(crc) = raw.last().filter(|o| o.id == "63") else {
        return Err(DecodeError::MissingCrc);
    };
    if !crc.value.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(DecodeError::CrcMalformed {
            offset: crc.offset,
            reason: format!("found {:?}", crc.value),
        });
    }
    let expected = format!(
        "{:04X}",
        crc16_ccitt_false(&payload.as_bytes()[..crc.value_byte])
    );
    let crc_valid = expected.eq_ignore_ascii_case(crc.value);
    let found_crc = crc.value.to_string();

    let mut objects = Vec::with_capacity(raw.len());
    for object in &raw {
        let id_num = two_digits(object.id).unwrap_or(0);
        let value = if is_template(id_num) {
            let inner = parse_tlv(object.value, object.offset + 4, false).map_err(|e| {
                DecodeError::InTemplate {
                    parent: object.id.to_string(),
                    offset: object.offset,
                    inner: Box::new(e),
                }
            })?;
            Value::Template(
                inner
                    .into_iter()
                    .map(|o| {
                        let value = nested_template(id_num, &o)
                            .unwrap_or_else(|| Value::Primitive(o.value.to_string()));
                        (o.id.to_string(), value)
                    })
                    .collect(),
            )
        } else {
            Value::Primitive(object.value.to_string())
        };
        objects.push((object.id.to_string(), value));
    }
    Ok(Decoded {
        objects,
        crc_valid,
        expected_crc: expected,
        found_crc,
    })
}

// ------------------------------------------------------------------------------------------
// Encoding
// ------------------------------------------------------------------------------------------

/// Point of initiation (tag 01): `11` a reusable plate, `12` one transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Initiation {
    Static,
    Dynamic,
}

impl Initiation {
    fn code(self) -> &'static str {
        match self {
            Initiation::Static => "11",
            Initiation::Dynamic => "12",
        }
    }
}

/// What we put on a plate. Values are taken as given (no trimming or case folding); the
/// encoder only checks them against the spec's formats and limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerchantPresented {
    pub initiation: Initiation,
    /// Template id 26..=51 -> sub-objects; sub-object 00 (the GUID) must come first.
    pub merchant_accounts: Vec<(u8, Vec<(u8, String)>)>,
    /// Tag 52, ISO 18245, 4 digits (`0000` when unknown).
    pub mcc: String,
    /// Tag 53, ISO 4217 numeric (446 MOP, 344 HKD, ...), written as 3 digits.
    pub currency_numeric: u16,
    /// Tag 54, a decimal string formatted by the caller (`"25.00"`), at most 13 characters.
    pub amount: Option<String>,
    /// Tag 58, ISO 3166-1 alpha-2, upper case.
    pub country: String,
    /// Tag 59, at most 25 printable ASCII characters.
    pub merchant_name: String,
    /// Tag 60, at most 15 printable ASCII characters.
    pub merchant_city: String,
    /// Tag 61, at most 10 printable ASCII characters.
    pub postal_code: Option<String>,
    /// Tag 62 sub-objects 01-11, e.g. `(3, store label)`, `(7, terminal label)`.
    pub additional: Vec<(u8, String)>,
    /// Tag 64: the merchant's name (and city) in another language.
    pub language: Option<LanguageTemplate>,
}

/// Tag 64. Unlike the root name and city, these may hold any Unicode (not control chars).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LanguageTemplate {
    /// ISO 639 alpha-2, e.g. `ZH`.
    pub language: String,
    /// At most 25 characters.
    pub merchant_name: String,
    /// At most 15 characters.
    pub merchant_city: Option<String>,
}

/// Why a plate cannot be encoded. `field` names the tag, e.g. `"59 merchant name"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("{field} is too long: {len} characters, at most {max} allowed")]
    FieldTooLong {
        field: &'static str,
        max: usize,
        len: usize,
    },
    #[error(
        "{field} contains characters not allowed there (printable ASCII 0x20-0x7E only; tag 64 also takes non-ASCII but no control characters)"
    )]
    InvalidCharacters { field: &'static str },
    #[error("{field} is invalid: {reason}")]
    Invalid {
        field: &'static str,
        reason: &'static str,
    },
}

const MERCHANT_ACCOUNT_FIELDS: [&str; 26] = [
    "26 merchant account template",
    "27 merchant account template",
    "28 merchant account template",
    "29 merchant account template",
    "30 merchant account template",
    "31 merchant account template",
    "32 merchant account template",
    "33 merchant account template",
    "34 merchant account template",
    "35 merchant account template",
    "36 merchant account template",
    "37 merchant account template",
    "38 merchant account template",
    "39 merchant account template",
    "40 merchant account template",
    "41 merchant account template",
    "42 merchant account template",
    "43 merchant account template",
    "44 merchant account template",
    "45 merchant account template",
    "46 merchant account template",
    "47 merchant account template",
    "48 merchant account template",
    "49 merchant account template",
    "50 merchant account template",
    "51 merchant account template",
];

/// Tag 62 sub-objects we emit: (field name, maximum length). Index = sub id - 1.
const ADDITIONAL_FIELDS: [(&str, usize); 11] = [
    ("62-01 bill number", 25),
    ("62-02 mobile number", 25),
    ("62-03 store label", 25),
    ("62-04 loyalty number", 25),
    ("62-05 reference label", 25),
    ("62-06 customer label", 25),
    ("62-07 terminal label", 25),
    ("62-08 purpose of transaction", 25),
    ("62-09 additional consumer data request", 3),
    ("62-10 merchant tax id", 20),
    ("62-11 merchant channel", 3),
];

/// The longest value a 2-digit length can declare.
const MAX_VALUE: usize = 99;
const MAX_GUID: usize = 32;

fn is_ans(c: char) -> bool {
    (' '..='~').contains(&c)
}

/// Checks a value in the ANS format (printable ASCII), non-empty and at most `max` chars.
fn check_ans(field: &'static str, value: &str, max: usize) -> Result<(), EncodeError> {
    if value.is_empty() {
        return Err(EncodeError::Invalid {
            field,
            reason: "must not be empty",
        });
    }
    if !value.chars().all(is_ans) {
        return Err(EncodeError::InvalidCharacters { field });
    }
    check_len(field, value, max)
}

/// Checks a value in the S format (any Unicode except control characters).
fn check_unicode(field: &'static str, value: &str, max: usize) -> Result<(), EncodeError> {
    if value.is_empty() {
        return Err(EncodeError::Invalid {
            field,
            reason: "must not be empty",
        });
    }
    if value.chars().any(char::is_control) {
        return Err(EncodeError::InvalidCharacters { field });
    }
    check_len(field, value, max)
}

fn check_len(field: &'static str, value: &str, max: usize) -> Result<(), EncodeError> {
    let len = value.chars().count();
    if len > max {
        return Err(EncodeError::FieldTooLong { field, max, len });
    }
    Ok(())
}

/// Appends one data object. Callers have checked `value` is 1..=99 characters.
fn push_tlv(out: &mut String, id: u8, value: &str) {
    // Writing to a String cannot fail.
    let _ = write!(out, "{id:02}{:02}{value}", value.chars().count());
}

/// Builds a template value from sub-objects, refusing it when it would exceed 99 chars.
fn template(field: &'static str, subs: &[(u8, &str)]) -> Result<String, EncodeError> {
    let len: usize = subs.iter().map(|(_, v)| 4 + v.chars().count()).sum();
    if len > MAX_VALUE {
        return Err(EncodeError::FieldTooLong {
            field,
            max: MAX_VALUE,
            len,
        });
    }
    let mut value = String::with_capacity(len);
    for (id, v) in subs {
        push_tlv(&mut value, *id, v);
    }
    Ok(value)
}

fn reject_duplicate_ids(field: &'static str, ids: &[u8]) -> Result<(), EncodeError> {
    for (i, id) in ids.iter().enumerate() {
        if ids[..i].contains(id) {
            return Err(EncodeError::Invalid {
                field,
                reason: "a sub-object id appears more than once",
            });
        }
    }
    Ok(())
}

fn encode_merchant_account(id: u8, subs: &[(u8, String)]) -> Result<String, EncodeError> {
    let field = MERCHANT_ACCOUNT_FIELDS[usize::from(id - 26)];
    match subs.first() {
        Some((0, guid)) => {
            check_ans("merchant account GUID (sub-object 00)", guid, MAX_GUID)?;
        }
        _ => {
            return Err(EncodeError::Invalid {
                field,
                reason: "must begin with sub-object 00, the globally unique identifier",
            });
        }
    }
    let ids: Vec<u8> = subs.iter().map(|(sub, _)| *sub).collect();
    if ids.iter().any(|&sub| sub > 99) {
        return Err(EncodeError::Invalid {
            field,
            reason: "sub-object ids must be 00-99",
        });
    }
    reject_duplicate_ids(field, &ids)?;
    for (_, value) in subs {
        if value.is_empty() {
            return Err(EncodeError::Invalid {
                field,
                reason: "sub-object values must not be empty",
            });
        }
        if !value.chars().all(is_ans) {
            return Err(EncodeError::InvalidCharacters { field });
        }
    }
    let refs: Vec<(u8, &str)> = subs.iter().map(|(sub, v)| (*sub, v.as_str())).collect();
    template(field, &refs)
}

fn check_amount(amount: &str) -> Result<(), EncodeError> {
    const FIELD: &str = "54 transaction amount";
    check_ans(FIELD, amount, 13)?;
    let (whole, fraction) = match amount.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (amount, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || fraction.is_some_and(|f| !digits(f)) {
        return Err(EncodeError::Invalid {
            field: FIELD,
            reason: "must be digits with at most one '.' and digits on both sides of it",
        });
    }
    if amount.bytes().all(|b| b == b'0' || b == b'.') {
        return Err(EncodeError::Invalid {
            field: FIELD,
            reason: "must be greater than zero (omit it to let the payer enter the amount)",
        });
    }
    Ok(())
}

fn encode_additional(additional: &[(u8, String)]) -> Result<String, EncodeError> {
    const FIELD: &str = "62 additional data template";
    let mut subs = Vec::with_capacity(additional.len());
    for (id, value) in additional {
        let Some(&(field, max)) = usize::from(*id)
            .checked_sub(1)
            .and_then(|i| ADDITIONAL_FIELDS.get(i))
        else {
            return Err(EncodeError::Invalid {
                field: FIELD,
                reason: "sub-object ids must be 01-11 (12-49 are reserved, 50-99 scheme templates are not emitted)",
            });
        };
        check_ans(field, value, max)?;
        if *id == 9
            && (!value.bytes().all(|b| matches!(b, b'A' | b'M' | b'E'))
                || value
                    .bytes()
                    .enumerate()
                    .any(|(i, b)| value.as_bytes()[..i].contains(&b)))
        {
            return Err(EncodeError::Invalid {
                field,
                reason: "must be letters from A (address), M (mobile), E (email), each at most once",
            });
        }
        if *id == 11 && value.len() != 3 {
            return Err(EncodeError::Invalid {
                field,
                reason: "must be exactly 3 characters",
            });
        }
        subs.push((*id, value.as_str()));
    }
    let ids: Vec<u8> = subs.iter().map(|(id, _)| *id).collect();
    reject_duplicate_ids(FIELD, &ids)?;
    template(FIELD, &subs)
}

fn encode_language(language: &LanguageTemplate) -> Result<String, EncodeError> {
    const FIELD: &str = "64 merchant information language template";
    let code = &language.language;
    if code.len() != 2 || !code.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(EncodeError::Invalid {
            field: "64-00 language preference",
            reason: "must be a 2-letter ISO 639 code such as ZH",
        });
    }
    check_unicode("64-01 alternate merchant name", &language.merchant_name, 25)?;
    let mut subs = vec![(0, code.as_str()), (1, language.merchant_name.as_str())];
    if let Some(city) = &language.merchant_city {
        check_unicode("64-02 alternate merchant city", city, 15)?;
        subs.push((2, city.as_str()));
    }
    template(FIELD, &subs)
}

/// Encodes a plate as `00 01 26..51 52 53 54? 58 59 60 61? 62? 64? 63`, with the CRC in
/// upper-case hex. Every field is checked against the spec's format and limits first.
pub fn encode(mpm: &MerchantPresented) -> Result<String, EncodeError> {
    let mut out = String::with_capacity(256);
    push_tlv(&mut out, 0, "01");
    push_tlv(&mut out, 1, mpm.initiation.code());

    if mpm.merchant_accounts.is_empty() {
        return Err(EncodeError::Invalid {
            field: "merchant account information (26-51)",
            reason: "at least one merchant account template is required",
        });
    }
    let mut seen = [false; 26];
    for (id, subs) in &mpm.merchant_accounts {
        if !(26..=51).contains(id) {
            return Err(EncodeError::Invalid {
                field: "merchant account information (26-51)",
                reason: "template ids must be 26-51 (the range open to payment schemes)",
            });
        }
        let slot = usize::from(id - 26);
        if std::mem::replace(&mut seen[slot], true) {
            return Err(EncodeError::Invalid {
                field: MERCHANT_ACCOUNT_FIELDS[slot],
                reason: "appears more than once",
            });
        }
        let value = encode_merchant_account(*id, subs)?;
        push_tlv(&mut out, *id, &value);
    }

    if mpm.mcc.len() != 4 || !mpm.mcc.bytes().all(|b| b.is_ascii_digit()) {
        return Err(EncodeError::Invalid {
            field: "52 merchant category code",
            reason: "must be exactly 4 digits (0000 when unknown)",
        });
    }
    push_tlv(&mut out, 52, &mpm.mcc);

    if !(1..=999).contains(&mpm.currency_numeric) {
        return Err(EncodeError::Invalid {
            field: "53 transaction currency",
            reason: "must be an ISO 4217 numeric code 001-999",
        });
    }
    push_tlv(&mut out, 53, &format!("{:03}", mpm.currency_numeric));

    if let Some(amount) = &mpm.amount {
        check_amount(amount)?;
        push_tlv(&mut out, 54, amount);
    }

    if mpm.country.len() != 2 || !mpm.country.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(EncodeError::Invalid {
            field: "58 country code",
            reason: "must be 2 upper-case letters (ISO 3166-1 alpha-2)",
        });
    }
    push_tlv(&mut out, 58, &mpm.country);

    check_ans("59 merchant name", &mpm.merchant_name, 25)?;
    push_tlv(&mut out, 59, &mpm.merchant_name);
    check_ans("60 merchant city", &mpm.merchant_city, 15)?;
    push_tlv(&mut out, 60, &mpm.merchant_city);

    if let Some(postal) = &mpm.postal_code {
        check_ans("61 postal code", postal, 10)?;
        push_tlv(&mut out, 61, postal);
    }
    if !mpm.additional.is_empty() {
        let value = encode_additional(&mpm.additional)?;
        push_tlv(&mut out, 62, &value);
    }
    if let Some(language) = &mpm.language {
        let value = encode_language(language)?;
        push_tlv(&mut out, 64, &value);
    }

    let len = out.chars().count() + 8;
    if len > MAX_PAYLOAD_CHARS {
        return Err(EncodeError::FieldTooLong {
            field: "payload",
            max: MAX_PAYLOAD_CHARS,
            len,
        });
    }
    out.push_str("6304");
    let crc = crc16_ccitt_false(out.as_bytes());
    let _ = write!(out, "{crc:04X}");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Appends `6304` and the correct CRC, for hand-built vectors.
    #[test]
    fn payment_system_templates_inside_62_decode_as_objects() {
        // 62: 03 store label, 50 a scheme template (00 GUID, 01 value), 51 plain text.
        let body = "000201010211520458125303446".to_owned()
            + "5802MO5904CAFE6005MACAU"
            + "6242"
            + "0305STORE"
            + "5017"
            + "0007mo.demo0102AB"
            + "5108free txt";
        let decoded = decode(&with_crc(&body)).unwrap();
        assert!(decoded.crc_valid);
        let json = decoded.to_json();
        assert_eq!(json["objects"]["62"]["03"], "STORE");
        assert_eq!(json["objects"]["62"]["50"]["00"], "mo.demo");
        assert_eq!(json["objects"]["62"]["50"]["01"], "AB");
        assert_eq!(json["objects"]["62"]["51"], "free txt");
    }

    fn with_crc(body: &str) -> String {
        let prefix = format!("{body}6304");
        let crc = crc16_ccitt_false(prefix.as_bytes());
        format!("{prefix}{crc:04X}")
    }

    fn prim<'a>(d: &'a Decoded, id: &str) -> &'a str {
        d.get(id).and_then(Value::as_primitive).unwrap()
    }

    fn sub<'a>(d: &'a Decoded, id: &str, sub: &str) -> &'a str {
        d.get(id)
            .and_then(|t| t.get(sub))
            .and_then(Value::as_primitive)
            .unwrap()
    }

    fn macau_plate() -> MerchantPresented {
        MerchantPresented {
            initiation: Initiation::Static,
            merchant_accounts: vec![(26, vec![(0, "mo.sesame.pay".into()), (1, "M0001".into())])],
            mcc: "5812".into(),
            currency_numeric: 446,
            amount: None,
            country: "MO".into(),
            merchant_name: "SAMPLE CAFE".into(),
            merchant_city: "MACAU".into(),
            postal_code: None,
            additional: vec![(3, "STORE01".into()), (7, "TILL-2".into())],
            language: Some(LanguageTemplate {
                language: "ZH".into(),
                merchant_name: "澳門小食店".into(),
                merchant_city: Some("澳門".into()),
            }),
        }
    }

    #[test]
    fn crc_matches_the_ccitt_false_check_value() {
        assert_eq!(crc16_ccitt_false(b"123456789"), 0x29B1);
        assert_eq!(crc16_ccitt_false(b""), 0xFFFF);
    }

    #[test]
    fn sgqr_vector_decodes_with_its_published_crc() {
        let p = "00020101021126490009SG.PAYNOW010120210202012345X0301104082021123151820007SG.SGQR0113202012345X123020701.000103068286710402010503123060400000708201912315204000053037025802SG5911RATINAN LEE6009SINGAPORE610682876162140110987654321X630429FD";
        let d = decode(p).unwrap();
        assert!(d.crc_valid);
        assert_eq!(d.expected_crc, "29FD");
        assert_eq!(sub(&d, "26", "00"), "SG.PAYNOW");
        assert_eq!(sub(&d, "26", "02"), "202012345X");
        assert_eq!(sub(&d, "51", "00"), "SG.SGQR");
        assert_eq!(sub(&d, "51", "07"), "20191231");
        assert_eq!(prim(&d, "59"), "RATINAN LEE");
        assert_eq!(sub(&d, "62", "01"), "987654321X");
    }

    #[test]
    fn khqr_vector_decodes_with_tag_15_as_a_primitive() {
        let p = "00020101021252044131153137210116372101160123456789ABCDE6010Phnom Penh5913Merchant Shop5802KH540510.005303840622501081234567802090124444446304A0BA";
        let d = decode(p).unwrap();
        assert!(d.crc_valid);
        assert_eq!(prim(&d, "15"), "37210116372101160123456789ABCDE");
        assert_eq!(prim(&d, "54"), "10.00");
        assert_eq!(prim(&d, "53"), "840");
        assert_eq!(sub(&d, "62", "01"), "12345678");
        assert_eq!(sub(&d, "62", "02"), "012444444");
    }

    #[test]
    fn macau_example_vector_has_crc_e42d() {
        let p = "00020101021126290014mo.example.pay0107M0001235204581253034465802MO5911SAMPLE CAFE6005MACAU62110307STORE016304E42D";
        let d = decode(p).unwrap();
        assert!(d.crc_valid);
        assert_eq!(sub(&d, "26", "00"), "mo.example.pay");
        assert_eq!(sub(&d, "62", "03"), "STORE01");
    }

    #[test]
    fn lower_case_crc_is_accepted_and_reported_as_written() {
        let p = "00020101021126290014mo.example.pay0107M0001235204581253034465802MO5911SAMPLE CAFE6005MACAU62110307STORE016304e42d";
        let d = decode(p).unwrap();
        assert!(d.crc_valid);
        assert_eq!(d.found_crc, "e42d");
        assert_eq!(d.expected_crc, "E42D");
    }

    #[test]
    fn wrong_crc_decodes_but_is_flagged_invalid() {
        let p = "00020101021126290014mo.example.pay0107M0001235204581253034465802MO5911SAMPLE CAFE6005MACAU62110307STORE016304E42E";
        let d = decode(p).unwrap();
        assert!(!d.crc_valid);
        assert_eq!(d.found_crc, "E42E");
        assert_eq!(d.expected_crc, "E42D");
        assert_eq!(d.to_json()["crc_valid"], Json::Bool(false));
    }

    #[test]
    fn bcb_pix_manual_example_decodes_with_a_valid_crc() {
        let p = "00020126580014br.gov.bcb.pix0136123e4567-e12b-12d1-a456-4266554400005204000053039865802BR5913Fulano de Tal6008BRASILIA62070503***63041D3D";
        let d = decode(p).unwrap();
        assert!(d.crc_valid, "expected {}", d.expected_crc);
        assert_eq!(sub(&d, "26", "00"), "br.gov.bcb.pix");
        assert_eq!(sub(&d, "62", "05"), "***");
    }

    #[test]
    fn pix_plate_built_by_the_encoder_decodes_back() {
        let mpm = MerchantPresented {
            initiation: Initiation::Dynamic,
            merchant_accounts: vec![(
                26,
                vec![
                    (0, "br.gov.bcb.pix".into()),
                    (1, "123e4567-e12b-12d1-a456-426655440000".into()),
                    (2, "Pedido 42".into()),
                ],
            )],
            mcc: "0000".into(),
            currency_numeric: 986,
            amount: Some("37.90".into()),
            country: "BR".into(),
            merchant_name: "Fulano de Tal".into(),
            merchant_city: "BRASILIA".into(),
            postal_code: Some("70040010".into()),
            additional: vec![(5, "PEDIDO42".into())],
            language: None,
        };
        let p = encode(&mpm).unwrap();
        assert!(p.starts_with("0002010102122671"));
        let d = decode(&p).unwrap();
        assert!(d.crc_valid);
        assert_eq!(sub(&d, "26", "01"), "123e4567-e12b-12d1-a456-426655440000");
        assert_eq!(prim(&d, "54"), "37.90");
        assert_eq!(prim(&d, "53"), "986");
        assert_eq!(prim(&d, "61"), "70040010");
    }

    #[test]
    fn promptpay_transfer_codes_decode_with_and_without_merchant_fields() {
        let minimal =
            with_crc("00020101021129370016A000000677010111011300668123456785802TH5303764");
        let d = decode(&minimal).unwrap();
        assert!(d.crc_valid);
        assert_eq!(sub(&d, "29", "00"), "A000000677010111");
        assert_eq!(sub(&d, "29", "01"), "0066812345678");
        assert!(d.get("59").is_none());

        let mpm = MerchantPresented {
            initiation: Initiation::Static,
            merchant_accounts: vec![(
                29,
                vec![(0, "A000000677010111".into()), (1, "0066812345678".into())],
            )],
            mcc: "5499".into(),
            currency_numeric: 764,
            amount: Some("150".into()),
            country: "TH".into(),
            merchant_name: "SOMCHAI SHOP".into(),
            merchant_city: "BANGKOK".into(),
            postal_code: None,
            additional: vec![],
            language: None,
        };
        let d = decode(&encode(&mpm).unwrap()).unwrap();
        assert!(d.crc_valid);
        assert_eq!(sub(&d, "29", "00"), "A000000677010111");
        assert_eq!(prim(&d, "54"), "150");
        assert!(d.get("62").is_none());
    }

    #[test]
    fn hk_fps_plate_decodes_back() {
        let mpm = MerchantPresented {
            initiation: Initiation::Static,
            merchant_accounts: vec![(
                26,
                vec![
                    (0, "hk.com.hkicl".into()),
                    (1, "004".into()),
                    (2, "1234567".into()),
                ],
            )],
            mcc: "0000".into(),
            currency_numeric: 344,
            amount: None,
            country: "HK".into(),
            merchant_name: "WING KEE NOODLES".into(),
            merchant_city: "HK".into(),
            postal_code: None,
            additional: vec![(7, "COUNTER 1".into())],
            language: None,
        };
        let p = encode(&mpm).unwrap();
        let d = decode(&p).unwrap();
        assert!(d.crc_valid);
        assert_eq!(sub(&d, "26", "00"), "hk.com.hkicl");
        assert_eq!(sub(&d, "26", "02"), "1234567");
        assert_eq!(prim(&d, "53"), "344");
        assert_eq!(prim(&d, "01"), "11");
    }

    #[test]
    fn chinese_language_template_counts_characters_and_crcs_utf8_bytes() {
        let p = encode(&macau_plate()).unwrap();
        assert!(p.contains("64210002ZH0105澳門小食店0202澳門"), "{p}");
        let crc_from = p.len() - 4;
        let expected = crc16_ccitt_false(&p.as_bytes()[..crc_from]);
        assert_eq!(&p[crc_from..], format!("{expected:04X}"));
        let d = decode(&p).unwrap();
        assert!(d.crc_valid);
        assert_eq!(sub(&d, "64", "01"), "澳門小食店");
        assert_eq!(sub(&d, "64", "02"), "澳門");
    }

    #[test]
    fn round_trip_gives_back_every_field_in_spec_order() {
        let mpm = MerchantPresented {
            amount: Some("25.00".into()),
            postal_code: Some("999078".into()),
            ..macau_plate()
        };
        let d = decode(&encode(&mpm).unwrap()).unwrap();
        assert!(d.crc_valid);
        let ids: Vec<&str> = d.objects.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "00", "01", "26", "52", "53", "54", "58", "59", "60", "61", "62", "64", "63"
            ]
        );
        assert_eq!(prim(&d, "01"), "11");
        assert_eq!(sub(&d, "26", "00"), "mo.sesame.pay");
        assert_eq!(sub(&d, "26", "01"), "M0001");
        assert_eq!(prim(&d, "52"), "5812");
        assert_eq!(prim(&d, "53"), "446");
        assert_eq!(prim(&d, "54"), "25.00");
        assert_eq!(prim(&d, "58"), "MO");
        assert_eq!(prim(&d, "59"), "SAMPLE CAFE");
        assert_eq!(prim(&d, "60"), "MACAU");
        assert_eq!(prim(&d, "61"), "999078");
        assert_eq!(sub(&d, "62", "03"), "STORE01");
        assert_eq!(sub(&d, "62", "07"), "TILL-2");
        assert_eq!(sub(&d, "64", "00"), "ZH");
        assert_eq!(prim(&d, "63"), d.expected_crc);
    }

    #[test]
    fn json_lists_templates_as_nested_objects() {
        let p = "00020101021126290014mo.example.pay0107M0001235204581253034465802MO5911SAMPLE CAFE6005MACAU62110307STORE016304E42D";
        let json = decode(p).unwrap().to_json();
        assert_eq!(json["crc_valid"], Json::Bool(true));
        assert_eq!(json["objects"]["00"], "01");
        assert_eq!(json["objects"]["26"]["00"], "mo.example.pay");
        assert_eq!(json["objects"]["26"]["01"], "M000123");
        assert_eq!(json["objects"]["63"], "E42D");
        let keys: Vec<&String> = json["objects"].as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            ["00", "01", "26", "52", "53", "58", "59", "60", "62", "63"]
        );
    }

    fn err(p: &str) -> DecodeError {
        decode(p).unwrap_err()
    }

    #[test]
    fn structural_faults_are_errors_naming_object_and_offset() {
        assert_eq!(err(""), DecodeError::Empty);
        assert!(matches!(
            err(&"0".repeat(MAX_PAYLOAD_CHARS + 1)),
            DecodeError::TooLong {
                len: 1025,
                max: 1024
            }
        ));
        assert_eq!(
            err("000201AB0211"),
            DecodeError::NonNumericId {
                offset: 6,
                found: "AB".into()
            }
        );
        assert_eq!(
            err("0002010102115X12"),
            DecodeError::NonNumericId {
                offset: 12,
                found: "5X".into()
            }
        );
        assert_eq!(
            err("000201010211591A"),
            DecodeError::BadLength {
                id: "59".into(),
                offset: 12,
                found: "1A".into()
            }
        );
        assert_eq!(
            err("00020101021159001"),
            DecodeError::BadLength {
                id: "59".into(),
                offset: 12,
                found: "00".into()
            }
        );
        let e = err("0002010102115911SAMP");
        assert_eq!(
            e.to_string(),
            "truncated: object 59 at offset 12 declares length 11 but only 4 characters remain"
        );
        assert_eq!(
            err("000201010211590"),
            DecodeError::TruncatedHeader {
                offset: 12,
                remaining: 3
            }
        );
        assert_eq!(
            err("000201010211010212"),
            DecodeError::DuplicateId {
                id: "01".into(),
                offset: 12,
                first_offset: 6
            }
        );
        assert_eq!(
            err("010211000201"),
            DecodeError::FirstNotPayloadFormat { found: "01".into() }
        );
        assert_eq!(
            err("000202"),
            DecodeError::PayloadFormatValue { found: "02".into() }
        );
        assert_eq!(err("0002010102115802MO"), DecodeError::MissingCrc);
        assert_eq!(
            err("0002016304ABCD5802MO"),
            DecodeError::CrcNotLast {
                offset: 6,
                trailing: 6
            }
        );
        assert!(matches!(
            err("0002016304ABCG"),
            DecodeError::CrcMalformed { offset: 6, .. }
        ));
        assert!(matches!(
            err("0002016305ABCDE"),
            DecodeError::CrcMalformed { offset: 6, .. }
        ));
    }

    #[test]
    fn template_faults_name_the_parent_and_absolute_offsets() {
        let bad_inner = with_crc("000201010211260800059ABC");
        let e = err(&bad_inner);
        assert_eq!(
            e.to_string(),
            "in template 26 at offset 12: truncated: object 00 at offset 16 declares length 5 but only 4 characters remain"
        );
        let dup_inner = with_crc("00020162140103ABC0103DEF");
        assert_eq!(
            err(&dup_inner),
            DecodeError::InTemplate {
                parent: "62".into(),
                offset: 6,
                inner: Box::new(DecodeError::DuplicateId {
                    id: "01".into(),
                    offset: 17,
                    first_offset: 10
                })
            }
        );
        let non_numeric = with_crc("0002016404ZH01");
        assert!(matches!(
            err(&non_numeric),
            DecodeError::InTemplate { ref parent, .. } if parent == "64"
        ));
    }

    #[test]
    fn error_messages_are_single_lines() {
        let samples = [
            "",
            "000201AB0211",
            "0002010102115911SAMP",
            "000201010211010212",
            "0002016304ABCD5802MO",
            "0002016304ABCG",
            "0002010102115802MO",
        ];
        for s in samples {
            let message = err(s).to_string();
            assert!(!message.contains('\n'), "{message}");
        }
        let nested = err(&with_crc("000201010211260800059ABC")).to_string();
        assert!(!nested.contains('\n'));
    }

    #[test]
    fn primitive_ids_outside_template_ranges_are_not_parsed_as_tlv() {
        // 59 looks like TLV inside but is a primitive; 80 is an unreserved template.
        let p = with_crc("00020159060012AB80080004test");
        let d = decode(&p).unwrap();
        assert_eq!(prim(&d, "59"), "0012AB");
        assert_eq!(sub(&d, "80", "00"), "test");
    }

    // ---------------------------------------------------------------- encoder limits

    fn encode_err(mpm: &MerchantPresented) -> EncodeError {
        encode(mpm).unwrap_err()
    }

    #[test]
    fn merchant_account_template_over_99_characters_is_refused() {
        let mut mpm = macau_plate();
        mpm.merchant_accounts = vec![(
            26,
            vec![
                (0, "mo.sesame.pay".into()),
                (1, format!("https://pay.sesame.mo/q/{}", "x".repeat(70))),
            ],
        )];
        let e = encode_err(&mpm);
        assert_eq!(
            e,
            EncodeError::FieldTooLong {
                field: "26 merchant account template",
                max: 99,
                len: 4 + 13 + 4 + 94
            }
        );
        assert_eq!(
            e.to_string(),
            "26 merchant account template is too long: 115 characters, at most 99 allowed"
        );
    }

    #[test]
    fn merchant_account_rules_are_enforced() {
        let with_accounts = |accounts: Vec<(u8, Vec<(u8, String)>)>| {
            let mut mpm = macau_plate();
            mpm.merchant_accounts = accounts;
            encode_err(&mpm)
        };
        assert!(matches!(with_accounts(vec![]), EncodeError::Invalid { .. }));
        assert!(matches!(
            with_accounts(vec![(25, vec![(0, "a.b".into())])]),
            EncodeError::Invalid { .. }
        ));
        assert!(matches!(
            with_accounts(vec![(30, vec![(1, "M1".into())])]),
            EncodeError::Invalid {
                field: "30 merchant account template",
                ..
            }
        ));
        assert_eq!(
            with_accounts(vec![(26, vec![(0, "g".repeat(33))])]),
            EncodeError::FieldTooLong {
                field: "merchant account GUID (sub-object 00)",
                max: 32,
                len: 33
            }
        );
        assert!(matches!(
            with_accounts(vec![
                (26, vec![(0, "a.b".into())]),
                (26, vec![(0, "c.d".into())])
            ]),
            EncodeError::Invalid {
                reason: "appears more than once",
                ..
            }
        ));
        assert!(matches!(
            with_accounts(vec![(
                26,
                vec![(0, "a.b".into()), (1, "x".into()), (1, "y".into())]
            )]),
            EncodeError::Invalid { .. }
        ));
        assert!(matches!(
            with_accounts(vec![(26, vec![(0, "a.b".into()), (1, String::new())])]),
            EncodeError::Invalid { .. }
        ));
        assert_eq!(
            with_accounts(vec![(26, vec![(0, "a.b".into()), (1, "商户".into())])]),
            EncodeError::InvalidCharacters {
                field: "26 merchant account template"
            }
        );
    }

    fn is_invalid(e: &EncodeError, field: &str) -> bool {
        matches!(e, EncodeError::Invalid { field: f, .. } if *f == field)
    }

    #[test]
    fn root_field_limits_are_enforced_with_field_names() {
        let check = |edit: &dyn Fn(&mut MerchantPresented), expected: EncodeError| {
            let mut mpm = macau_plate();
            edit(&mut mpm);
            assert_eq!(encode_err(&mpm), expected);
        };
        for mcc in ["581", "58122", "58A2", ""] {
            let mut mpm = macau_plate();
            mpm.mcc = mcc.into();
            assert!(
                is_invalid(&encode_err(&mpm), "52 merchant category code"),
                "{mcc}"
            );
        }
        for currency in [0, 1000] {
            let mut mpm = macau_plate();
            mpm.currency_numeric = currency;
            assert!(is_invalid(&encode_err(&mpm), "53 transaction currency"));
        }
        for amount in ["", "1.2.3", ".5", "5.", "-5", "1e3", "0.00", "12 50"] {
            let mut mpm = macau_plate();
            mpm.amount = Some(amount.into());
            assert!(
                matches!(
                    encode_err(&mpm),
                    EncodeError::Invalid {
                        field: "54 transaction amount",
                        ..
                    } | EncodeError::InvalidCharacters { .. }
                ),
                "{amount}"
            );
        }
        check(
            &|m| m.amount = Some("12345678901.00".into()),
            EncodeError::FieldTooLong {
                field: "54 transaction amount",
                max: 13,
                len: 14,
            },
        );
        for country in ["mo", "MAC", "M", "M1"] {
            let mut mpm = macau_plate();
            mpm.country = country.into();
            assert!(
                is_invalid(&encode_err(&mpm), "58 country code"),
                "{country}"
            );
        }
        check(
            &|m| m.merchant_name = "A".repeat(26),
            EncodeError::FieldTooLong {
                field: "59 merchant name",
                max: 25,
                len: 26,
            },
        );
        check(
            &|m| m.merchant_name = String::new(),
            EncodeError::Invalid {
                field: "59 merchant name",
                reason: "must not be empty",
            },
        );
        check(
            &|m| m.merchant_name = "澳門小食店".into(),
            EncodeError::InvalidCharacters {
                field: "59 merchant name",
            },
        );
        check(
            &|m| m.merchant_name = "CAFE\tBAR".into(),
            EncodeError::InvalidCharacters {
                field: "59 merchant name",
            },
        );
        check(
            &|m| m.merchant_city = "MACAU PENINSULA1".into(),
            EncodeError::FieldTooLong {
                field: "60 merchant city",
                max: 15,
                len: 16,
            },
        );
        check(
            &|m| m.postal_code = Some("12345678901".into()),
            EncodeError::FieldTooLong {
                field: "61 postal code",
                max: 10,
                len: 11,
            },
        );
    }

    #[test]
    fn additional_data_and_language_limits_are_enforced() {
        let with_additional = |additional: Vec<(u8, String)>| {
            let mut mpm = macau_plate();
            mpm.additional = additional;
            encode(&mpm)
        };
        assert_eq!(
            with_additional(vec![(3, "S".repeat(26))]).unwrap_err(),
            EncodeError::FieldTooLong {
                field: "62-03 store label",
                max: 25,
                len: 26
            }
        );
        assert!(matches!(
            with_additional(vec![(0, "x".into())]).unwrap_err(),
            EncodeError::Invalid {
                field: "62 additional data template",
                ..
            }
        ));
        assert!(matches!(
            with_additional(vec![(50, "x".into())]).unwrap_err(),
            EncodeError::Invalid {
                field: "62 additional data template",
                ..
            }
        ));
        assert!(matches!(
            with_additional(vec![(3, "A".into()), (3, "B".into())]).unwrap_err(),
            EncodeError::Invalid { .. }
        ));
        assert!(with_additional(vec![(9, "AME".into())]).is_ok());
        assert!(with_additional(vec![(9, "AA".into())]).is_err());
        assert!(with_additional(vec![(9, "X".into())]).is_err());
        assert!(with_additional(vec![(11, "ab".into())]).is_err());
        let five_labels: Vec<(u8, String)> = (1..=5).map(|i| (i, "L".repeat(20))).collect();
        assert_eq!(
            with_additional(five_labels).unwrap_err(),
            EncodeError::FieldTooLong {
                field: "62 additional data template",
                max: 99,
                len: 120
            }
        );

        let with_language = |language: LanguageTemplate| {
            let mut mpm = macau_plate();
            mpm.language = Some(language);
            encode(&mpm)
        };
        let zh = |name: &str, city: Option<&str>| LanguageTemplate {
            language: "ZH".into(),
            merchant_name: name.into(),
            merchant_city: city.map(Into::into),
        };
        assert_eq!(
            with_language(zh(&"澳".repeat(26), None)).unwrap_err(),
            EncodeError::FieldTooLong {
                field: "64-01 alternate merchant name",
                max: 25,
                len: 26
            }
        );
        assert_eq!(
            with_language(zh("澳門\u{7}", None)).unwrap_err(),
            EncodeError::InvalidCharacters {
                field: "64-01 alternate merchant name"
            }
        );
        assert_eq!(
            with_language(zh("澳門", Some(&"門".repeat(16)))).unwrap_err(),
            EncodeError::FieldTooLong {
                field: "64-02 alternate merchant city",
                max: 15,
                len: 16
            }
        );
        let mut bad_code = zh("澳門", None);
        bad_code.language = "ZHO".into();
        assert!(matches!(
            with_language(bad_code).unwrap_err(),
            EncodeError::Invalid {
                field: "64-00 language preference",
                ..
            }
        ));
    }

    #[test]
    fn encoder_refuses_payloads_the_decoder_would_refuse() {
        let mut mpm = macau_plate();
        mpm.merchant_accounts = (26..=51)
            .map(|id| (id, vec![(0, "g".repeat(32)), (1, "v".repeat(59))]))
            .collect();
        assert!(matches!(
            encode_err(&mpm),
            EncodeError::FieldTooLong {
                field: "payload",
                max: MAX_PAYLOAD_CHARS,
                ..
            }
        ));
    }

    // ---------------------------------------------------------------- robustness

    /// SplitMix64: deterministic inputs without a dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    const ALPHABET: [char; 16] = [
        '0', '1', '2', '3', '4', '5', '6', '9', 'A', 'f', ' ', '.', '澳', 'é', '\n', '\u{0}',
    ];

    fn valid_payloads() -> Vec<String> {
        vec![
            encode(&macau_plate()).unwrap(),
            "00020101021126490009SG.PAYNOW010120210202012345X0301104082021123151820007SG.SGQR0113202012345X123020701.000103068286710402010503123060400000708201912315204000053037025802SG5911RATINAN LEE6009SINGAPORE610682876162140110987654321X630429FD".into(),
            "00020101021252044131153137210116372101160123456789ABCDE6010Phnom Penh5913Merchant Shop5802KH540510.005303840622501081234567802090124444446304A0BA".into(),
        ]
    }

    #[test]
    fn decode_never_panics_on_random_input() {
        let mut rng = Rng(0x005E_5A3E);
        for _ in 0..5_000 {
            let len = rng.below(200);
            let s: String = (0..len)
                .map(|_| ALPHABET[rng.below(ALPHABET.len())])
                .collect();
            let _ = decode(&s);
            let digits: String = (0..len)
                .map(|_| char::from(b'0' + rng.below(10) as u8))
                .collect();
            let _ = decode(&format!("000201{digits}"));
        }
    }

    #[test]
    fn every_strict_prefix_of_a_valid_payload_is_an_error() {
        for p in valid_payloads() {
            let boundaries: Vec<usize> = p.char_indices().map(|(i, _)| i).collect();
            for &end in &boundaries {
                assert!(decode(&p[..end]).is_err(), "{:?}", &p[..end]);
            }
            assert!(decode(&p).unwrap().crc_valid);
        }
    }

    #[test]
    fn single_character_corruption_is_always_detected() {
        let mut rng = Rng(42);
        for p in valid_payloads() {
            let chars: Vec<char> = p.chars().collect();
            for at in 0..chars.len() {
                for _ in 0..4 {
                    let replacement = ALPHABET[rng.below(ALPHABET.len())];
                    if replacement.eq_ignore_ascii_case(&chars[at]) {
                        continue;
                    }
                    let mut mutated = chars.clone();
                    mutated[at] = replacement;
                    let mutated: String = mutated.into_iter().collect();
                    if let Ok(d) = decode(&mutated) {
                        assert!(!d.crc_valid, "undetected corruption: {mutated:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn random_insertions_and_deletions_never_panic() {
        let mut rng = Rng(7);
        for p in valid_payloads() {
            for _ in 0..2_000 {
                let mut chars: Vec<char> = p.chars().collect();
                for _ in 0..=rng.below(3) {
                    if rng.below(2) == 0 && !chars.is_empty() {
                        let at = rng.below(chars.len());
                        chars.remove(at);
                    } else {
                        let at = rng.below(chars.len() + 1);
                        chars.insert(at, ALPHABET[rng.below(ALPHABET.len())]);
                    }
                }
                let s: String = chars.into_iter().collect();
                let _ = decode(&s);
            }
        }
    }
}
