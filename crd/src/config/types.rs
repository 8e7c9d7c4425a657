//! Value types shared by the config sections: units, domain names, addresses, bounded integers.
//!
//! Every type parses from the textual form used in `config.yaml` and serializes back to it.
//! Parse errors name the rule the value broke.

use std::borrow::Cow;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// Implements `Serialize`/`Deserialize` through `Display`/`FromStr` (error type `String`) and a
/// string JSON Schema with the given description and optional pattern.
macro_rules! string_type {
    ($ty:ident, $expecting:expr, $descr:expr $(, pattern = $pat:expr)? $(, max_length = $len:expr)?) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl Visitor<'_> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$ty, E> {
                        v.parse::<$ty>().map_err(E::custom)
                    }
                }
                d.deserialize_str(V)
            }
        }

        impl JsonSchema for $ty {
            fn schema_name() -> Cow<'static, str> {
                stringify!($ty).into()
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                #[allow(unused_mut)]
                let mut schema = json_schema!({ "type": "string", "description": $descr });
                $( schema.insert("pattern".into(), $pat.into()); )?
                $( schema.insert("maxLength".into(), $len.into()); )?
                schema
            }
        }
    };
}

/// Declares a bounded integer newtype with range-checked `Deserialize` and a JSON Schema with
/// `minimum`/`maximum`.
macro_rules! bounded_int {
    ($(#[$m:meta])* $ty:ident, $inner:ty, $min:expr, $max:expr) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $ty(pub(crate) $inner);

        impl $ty {
            /// Smallest accepted value.
            pub const MIN: $inner = $min;
            /// Largest accepted value.
            pub const MAX: $inner = $max;

            /// Checks the range; the error names it.
            pub fn new(v: $inner) -> Result<Self, String> {
                if (Self::MIN..=Self::MAX).contains(&v) {
                    Ok(Self(v))
                } else {
                    Err(format!("must be in range {}..={}, got {}", Self::MIN, Self::MAX, v))
                }
            }

            /// The value.
            pub const fn get(self) -> $inner {
                self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let v = i128::deserialize(d)?;
                let range = || format!("must be in range {}..={}, got {}", Self::MIN, Self::MAX, v);
                let inner = <$inner>::try_from(v).map_err(|_| de::Error::custom(range()))?;
                Self::new(inner).map_err(de::Error::custom)
            }
        }

        impl JsonSchema for $ty {
            fn schema_name() -> Cow<'static, str> {
                stringify!($ty).into()
            }
            fn inline_schema() -> bool {
                true
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                let mut schema = json_schema!({ "type": "integer", "minimum": $min });
                // Unbounded types get no maximum (a u64::MAX bound breaks int64 consumers).
                if u128::from(Self::MAX) < u128::from(u64::MAX) {
                    schema.insert("maximum".into(), Self::MAX.into());
                }
                schema
            }
        }
    };
}

bounded_int!(
    /// A TCP/UDP port number, 1..=65535.
    PortNumber, u16, 1, 65535
);
bounded_int!(
    /// A percentage, 0..=100.
    Percent, u8, 0, 100
);
bounded_int!(
    /// An integer >= 1.
    IntPositive, u64, 1, u64::MAX
);
bounded_int!(
    /// An integer >= 0.
    IntNonNegative, u64, 0, u64::MAX
);
bounded_int!(
    /// An integer 0..=32.
    Int0To32, u8, 0, 32
);
bounded_int!(
    /// An integer 0..=512.
    Int0To512, u16, 0, 512
);
bounded_int!(
    /// An integer 1..=4096.
    Int1To4096, u16, 1, 4096
);
bounded_int!(
    /// An integer 0..=65535.
    Int0To65535, u32, 0, 65535
);

/// A float 0.0..=65535.0 (view `price-factor`).
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd, Serialize)]
#[serde(transparent)]
pub struct Float0To65535(pub(crate) f64);

impl Float0To65535 {
    /// Checks the range.
    pub fn new(v: f64) -> Result<Self, String> {
        if (0.0..=65535.0).contains(&v) {
            Ok(Self(v))
        } else {
            Err(format!("must be in range 0.0..=65535.0, got {v}"))
        }
    }

    /// The value.
    pub const fn get(self) -> f64 {
        self.0
    }
}

impl<'de> Deserialize<'de> for Float0To65535 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::new(f64::deserialize(d)?).map_err(de::Error::custom)
    }
}

impl JsonSchema for Float0To65535 {
    fn schema_name() -> Cow<'static, str> {
        "Float0To65535".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "number", "minimum": 0.0, "maximum": 65535.0 })
    }
}

// ---------------------------------------------------------------------------------------------
// Units

/// Suffix of a [`SizeUnit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SizeSuffix {
    /// Bytes.
    B,
    /// Kibibytes (1024 B).
    K,
    /// Mebibytes.
    M,
    /// Gibibytes.
    G,
}

impl SizeSuffix {
    fn multiplier(self) -> u64 {
        match self {
            Self::B => 1,
            Self::K => 1 << 10,
            Self::M => 1 << 20,
            Self::G => 1 << 30,
        }
    }
    fn as_str(self) -> &'static str {
        match self {
            Self::B => "B",
            Self::K => "K",
            Self::M => "M",
            Self::G => "G",
        }
    }
}

/// A size: `<int>(B|K|M|G)`, e.g. `100M` (binary multiples).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SizeUnit {
    pub(crate) value: u64,
    pub(crate) suffix: SizeSuffix,
}

impl SizeUnit {
    /// Constructs a size; `None` when it overflows u64 bytes.
    pub fn new(value: u64, suffix: SizeSuffix) -> Option<Self> {
        value.checked_mul(suffix.multiplier())?;
        Some(Self { value, suffix })
    }

    /// The size in bytes.
    pub fn bytes(&self) -> u64 {
        self.value.saturating_mul(self.suffix.multiplier())
    }

    /// The size in whole mebibytes (rounded down).
    pub fn mbytes(&self) -> u64 {
        self.bytes() >> 20
    }
}

impl fmt::Display for SizeUnit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.value, self.suffix.as_str())
    }
}

/// Splits `<digits><suffix>`; the error text is the rule.
fn split_unit<'a>(s: &'a str, rule: &str) -> Result<(u64, &'a str), String> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (num, suffix) = s.split_at(digits);
    if num.is_empty() || suffix.is_empty() {
        return Err(format!("expected {rule}, got '{s}'"));
    }
    let value = num
        .parse::<u64>()
        .map_err(|_| format!("number too large in '{s}'"))?;
    Ok((value, suffix))
}

const SIZE_RULE: &str = "<int>(B|K|M|G), e.g. '100M'";
const TIME_RULE: &str = "<int>(us|ms|s|m|h|d), e.g. '5s'";

impl FromStr for SizeUnit {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (value, suffix) = split_unit(s, SIZE_RULE)?;
        let suffix = match suffix {
            "B" => SizeSuffix::B,
            "K" => SizeSuffix::K,
            "M" => SizeSuffix::M,
            "G" => SizeSuffix::G,
            _ => return Err(format!("expected {SIZE_RULE}, got '{s}'")),
        };
        Self::new(value, suffix).ok_or_else(|| format!("size '{s}' is too large"))
    }
}

string_type!(
    SizeUnit,
    "a size string <int>(B|K|M|G)",
    "A size: <int>(B|K|M|G), binary multiples, e.g. '100M'.",
    pattern = r"^\d+(B|K|M|G)$"
);

/// Suffix of a [`TimeUnit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimeSuffix {
    /// Microseconds.
    Us,
    /// Milliseconds.
    Ms,
    /// Seconds.
    S,
    /// Minutes.
    M,
    /// Hours.
    H,
    /// Days.
    D,
}

impl TimeSuffix {
    fn micros(self) -> u64 {
        match self {
            Self::Us => 1,
            Self::Ms => 1_000,
            Self::S => 1_000_000,
            Self::M => 60_000_000,
            Self::H => 3_600_000_000,
            Self::D => 86_400_000_000,
        }
    }
    fn as_str(self) -> &'static str {
        match self {
            Self::Us => "us",
            Self::Ms => "ms",
            Self::S => "s",
            Self::M => "m",
            Self::H => "h",
            Self::D => "d",
        }
    }
}

/// A time span: `<int>(us|ms|s|m|h|d)`, e.g. `5s`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimeUnit {
    pub(crate) value: u64,
    pub(crate) suffix: TimeSuffix,
}

impl TimeUnit {
    /// Constructs a time span; `None` when it overflows u64 microseconds.
    pub fn new(value: u64, suffix: TimeSuffix) -> Option<Self> {
        value.checked_mul(suffix.micros())?;
        Some(Self { value, suffix })
    }

    /// Microseconds.
    pub fn micros(&self) -> u64 {
        self.value.saturating_mul(self.suffix.micros())
    }

    /// Whole milliseconds (rounded down).
    pub fn millis(&self) -> u64 {
        self.micros() / 1_000
    }

    /// Whole seconds (rounded down).
    pub fn seconds(&self) -> u64 {
        self.micros() / 1_000_000
    }

    /// As a [`Duration`].
    pub fn as_duration(&self) -> Duration {
        Duration::from_micros(self.micros())
    }
}

impl fmt::Display for TimeUnit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.value, self.suffix.as_str())
    }
}

impl FromStr for TimeUnit {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (value, suffix) = split_unit(s, TIME_RULE)?;
        let suffix = match suffix {
            "us" => TimeSuffix::Us,
            "ms" => TimeSuffix::Ms,
            "s" => TimeSuffix::S,
            "m" => TimeSuffix::M,
            "h" => TimeSuffix::H,
            "d" => TimeSuffix::D,
            _ => return Err(format!("expected {TIME_RULE}, got '{s}'")),
        };
        Self::new(value, suffix).ok_or_else(|| format!("time '{s}' is too large"))
    }
}

string_type!(
    TimeUnit,
    "a time string <int>(us|ms|s|m|h|d)",
    "A time span: <int>(us|ms|s|m|h|d), e.g. '5s'.",
    pattern = r"^\d+(us|ms|s|m|h|d)$"
);

// ---------------------------------------------------------------------------------------------
// Names

/// A domain name, normalised: IDNA (UTS 46) to punycode, lowercase, with a trailing dot.
/// The root zone is `.`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DomainName(pub(crate) String);

impl DomainName {
    /// The normalised name (punycode, lowercase, trailing dot).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True for the root zone `.`.
    pub fn is_root(&self) -> bool {
        self.0 == "."
    }
}

impl fmt::Display for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for DomainName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "." {
            return Ok(Self(".".into()));
        }
        if s.is_empty() {
            return Err("domain name must not be empty".into());
        }
        let trimmed = s.strip_suffix('.').unwrap_or(s);
        let ascii = idna::uts46::Uts46::new()
            .to_ascii(
                trimmed.as_bytes(),
                idna::uts46::AsciiDenyList::EMPTY,
                idna::uts46::Hyphens::Allow,
                idna::uts46::DnsLength::Ignore,
            )
            .map_err(|_| format!("'{s}' is not a valid (IDNA) domain name"))?;
        let ascii = ascii.to_ascii_lowercase();
        if ascii.len() > 253 {
            return Err(format!("domain name '{s}' is longer than 253 characters"));
        }
        for label in ascii.split('.') {
            if label.is_empty() {
                return Err(format!("domain name '{s}' has an empty label"));
            }
            if label.len() > 63 {
                return Err(format!(
                    "domain name '{s}' has a label longer than 63 characters"
                ));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(format!(
                    "domain name '{s}' has a label starting or ending with '-'"
                ));
            }
            if let Some(c) = label
                .chars()
                .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '\\' | '"' | '\''))
            {
                return Err(format!(
                    "domain name '{s}' contains the forbidden character {c:?}"
                ));
            }
        }
        Ok(Self(format!("{ascii}.")))
    }
}

string_type!(
    DomainName,
    "a domain name",
    "A domain name; IDNA names are converted to punycode, lowercased, and a trailing dot is added."
);

/// A network interface name (`eth0`, `enp1s0`, `br-lan`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct InterfaceName(pub(crate) String);

impl InterfaceName {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InterfaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for InterfaceName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.split(['-', '_'])
                .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric()));
        if ok {
            Ok(Self(s.into()))
        } else {
            Err(format!(
                "expected an IP address or an interface name (alphanumeric parts joined by '-' or '_'), got '{s}'"
            ))
        }
    }
}

/// A tag (`views[].tags`, `local-data.rules[].tags`): `^(?!-)[a-z0-9-]*[a-z0-9]+$`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdPattern(pub(crate) String);

impl IdPattern {
    /// The tag.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for IdPattern {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let ok = !s.is_empty()
            && !s.starts_with('-')
            && !s.ends_with('-')
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(Self(s.into()))
        } else {
            Err(format!(
                "expected lowercase letters, digits and inner '-' (pattern ^(?!-)[a-z0-9-]*[a-z0-9]+$), got '{s}'"
            ))
        }
    }
}

string_type!(
    IdPattern,
    "a tag",
    "A tag: lowercase letters, digits and inner '-'.",
    pattern = r"^(?!-)[a-z0-9-]*[a-z0-9]+$"
);

/// A base64-encoded SHA-256 hash (44 characters ending in '=').
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PinSha256(pub(crate) String);

impl PinSha256 {
    /// The base64 text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PinSha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for PinSha256 {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let b = s.as_bytes();
        let ok = b.len() == 44
            && b[43] == b'='
            && b[..43]
                .iter()
                .all(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/');
        if ok {
            Ok(Self(s.into()))
        } else {
            Err(format!(
                "expected a base64-encoded SHA-256 hash (43 base64 characters and '='), got '{s}'"
            ))
        }
    }
}

string_type!(
    PinSha256,
    "a base64 sha256 pin",
    "A base64-encoded SHA-256 hash.",
    pattern = r"^[A-Za-z\d+/]{43}=$"
);

/// Longest accepted path in bytes: Linux `PATH_MAX` (4096) minus the terminating NUL.
pub const PATH_MAX_BYTES: usize = 4095;
/// Longest accepted unix socket path in bytes: `sun_path` (108) minus the terminating NUL.
pub const SOCKET_PATH_MAX_BYTES: usize = 107;

/// The one rule for path text that reaches a file, a command line or a process manager
/// (supervisord expands `%(...)s`, ends values at a newline and strips surrounding blanks):
/// non-empty, at most `max` bytes, no control character (NUL, CR, LF, TAB, DEL, C1), no `%`,
/// no leading or trailing whitespace. The error text is the rule broken.
pub fn check_path_text(s: &str, max: usize) -> Result<(), String> {
    if s.is_empty() {
        return Err("path must not be empty".into());
    }
    if s.len() > max {
        return Err(format!(
            "path must be at most {max} bytes long, got {} bytes",
            s.len()
        ));
    }
    if let Some(c) = s.chars().find(|c| c.is_control()) {
        return Err(format!(
            "path must not contain control characters, found {}",
            c.escape_default()
        ));
    }
    if s.contains('%') {
        return Err("path must not contain '%'".into());
    }
    if s.starts_with(char::is_whitespace) || s.ends_with(char::is_whitespace) {
        return Err("path must not start or end with whitespace".into());
    }
    Ok(())
}

/// JSON Schema `pattern` of [`check_path_text`] (without the length, which is `maxLength`).
const PATH_PATTERN: &str =
    r"^[^\s%\x00-\x1F\x7F-\x9F](?:[^%\x00-\x1F\x7F-\x9F]*[^\s%\x00-\x1F\x7F-\x9F])?$";

/// Declares a validated path newtype (see [`check_path_text`]) with at most `$max` bytes.
macro_rules! path_type {
    ($(#[$m:meta])* $ty:ident, $max:expr, $expecting:expr, $descr:expr) => {
        $(#[$m])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $ty(pub(crate) String);

        impl $ty {
            /// Longest accepted path in bytes.
            pub const MAX_BYTES: usize = $max;

            /// The path text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// As a [`std::path::Path`].
            pub fn as_path(&self) -> &std::path::Path {
                std::path::Path::new(&self.0)
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                check_path_text(s, $max)?;
                Ok(Self(s.into()))
            }
        }

        string_type!($ty, $expecting, $descr, pattern = PATH_PATTERN, max_length = $max);
    };
}

path_type!(
    /// A filesystem path (file or directory). Not checked for existence: the datamodel does no
    /// I/O. The text follows [`check_path_text`] with at most [`PATH_MAX_BYTES`].
    FilePath,
    PATH_MAX_BYTES,
    "a filesystem path",
    "A filesystem path: no control characters, no '%', no leading/trailing whitespace, at most 4095 bytes."
);

path_type!(
    /// A unix socket path: [`check_path_text`] with at most [`SOCKET_PATH_MAX_BYTES`] (what
    /// fits `sockaddr_un`).
    SocketPath,
    SOCKET_PATH_MAX_BYTES,
    "a unix socket path",
    "A unix socket path: no control characters, no '%', no leading/trailing whitespace, at most 107 bytes."
);

/// A string of at least 32 bytes (TLS session ticket secret).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Secret32B(pub(crate) String);

impl Secret32B {
    /// The secret.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret32B {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret32B(..)")
    }
}

impl fmt::Display for Secret32B {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Secret32B {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.len() >= 32 {
            Ok(Self(s.into()))
        } else {
            Err(format!(
                "must be at least 32 bytes long, got {} bytes",
                s.len()
            ))
        }
    }
}

impl Serialize for Secret32B {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Secret32B {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(de::Error::custom)
    }
}

impl JsonSchema for Secret32B {
    fn schema_name() -> Cow<'static, str> {
        "Secret32B".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "minLength": 32, "description": "A secret of at least 32 bytes." })
    }
}

// ---------------------------------------------------------------------------------------------
// Addresses

fn parse_ip(s: &str) -> Result<IpAddr, String> {
    s.parse::<IpAddr>()
        .map_err(|_| format!("failed to parse IP address '{s}'"))
}

fn parse_port(s: &str) -> Result<PortNumber, String> {
    let n: u32 = s
        .parse()
        .map_err(|_| format!("invalid port number '{s}'"))?;
    u16::try_from(n)
        .map_err(|_| format!("port must be in range 1..=65535, got {n}"))
        .and_then(|p| PortNumber::new(p).map_err(|e| format!("port {e}")))
}

/// Writes `addr` (IPv6 without brackets, as upstream) and `@port` when given.
fn fmt_at(
    f: &mut fmt::Formatter<'_>,
    host: &dyn fmt::Display,
    port: Option<PortNumber>,
) -> fmt::Result {
    match port {
        Some(p) => write!(f, "{host}@{p}"),
        None => write!(f, "{host}"),
    }
}

/// `<ip-address>@<port>`, e.g. `127.0.0.1@5353` or `::1@5353`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpAddressPort {
    /// The address.
    pub addr: IpAddr,
    /// The port.
    pub port: PortNumber,
}

impl fmt::Display for IpAddressPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_at(f, &self.addr, Some(self.port))
    }
}

impl FromStr for IpAddressPort {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once('@') {
            Some((a, p)) if !p.contains('@') => Ok(Self {
                addr: parse_ip(a)?,
                port: parse_port(p)?,
            }),
            _ => Err(format!("expected '<ip-address>@<port>', got '{s}'")),
        }
    }
}

string_type!(
    IpAddressPort,
    "'<ip-address>@<port>'",
    "An IP address and a port: '<ip-address>@<port>', e.g. '127.0.0.1@5353'.",
    pattern = r"^[^@]+@[0-9]+$"
);

/// `<ip-address>[@<port>]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpAddressOptionalPort {
    /// The address.
    pub addr: IpAddr,
    /// The port, when given.
    pub port: Option<PortNumber>,
}

impl fmt::Display for IpAddressOptionalPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_at(f, &self.addr, self.port)
    }
}

impl FromStr for IpAddressOptionalPort {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = s.split('@');
        let (a, p) = (parts.next(), parts.next());
        if parts.next().is_some() {
            return Err(format!("expected '<ip-address>[@<port>]', got '{s}'"));
        }
        Ok(Self {
            addr: parse_ip(a.unwrap_or_default())?,
            port: p.map(parse_port).transpose()?,
        })
    }
}

string_type!(
    IpAddressOptionalPort,
    "'<ip-address>[@<port>]'",
    "An IP address with an optional port: '<ip-address>[@<port>]'.",
    pattern = r"^[^@]+(@[0-9]+)?$"
);

/// An IP address or a network interface name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum InterfaceHost {
    /// An IP address.
    Ip(IpAddr),
    /// An interface name (all its addresses).
    Name(InterfaceName),
}

impl fmt::Display for InterfaceHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip(a) => a.fmt(f),
            Self::Name(n) => n.fmt(f),
        }
    }
}

impl FromStr for InterfaceHost {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.parse::<IpAddr>() {
            Ok(a) => Ok(Self::Ip(a)),
            Err(_) => s.parse().map(Self::Name),
        }
    }
}

/// `<ip-address|interface-name>@<port>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct InterfacePort {
    /// Address or interface.
    pub host: InterfaceHost,
    /// The port.
    pub port: PortNumber,
}

impl fmt::Display for InterfacePort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_at(f, &self.host, Some(self.port))
    }
}

impl FromStr for InterfacePort {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once('@') {
            Some((h, p)) if !p.contains('@') => Ok(Self {
                host: h.parse()?,
                port: parse_port(p)?,
            }),
            _ => Err(format!(
                "expected '<ip-address|interface-name>@<port>', got '{s}'"
            )),
        }
    }
}

string_type!(
    InterfacePort,
    "'<ip-address|interface-name>@<port>'",
    "An IP address or interface name and a port: '<ip-address|interface-name>@<port>'.",
    pattern = r"^[^@]+@[0-9]+$"
);

/// `<ip-address|interface-name>[@<port>]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct InterfaceOptionalPort {
    /// Address or interface.
    pub host: InterfaceHost,
    /// The port, when given.
    pub port: Option<PortNumber>,
}

impl fmt::Display for InterfaceOptionalPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_at(f, &self.host, self.port)
    }
}

impl FromStr for InterfaceOptionalPort {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = s.split('@');
        let (h, p) = (parts.next(), parts.next());
        if parts.next().is_some() {
            return Err(format!(
                "expected '<ip-address|interface-name>[@<port>]', got '{s}'"
            ));
        }
        Ok(Self {
            host: h.unwrap_or_default().parse()?,
            port: p.map(parse_port).transpose()?,
        })
    }
}

string_type!(
    InterfaceOptionalPort,
    "'<ip-address|interface-name>[@<port>]'",
    "An IP address or interface name with an optional port: '<ip-address|interface-name>[@<port>]'.",
    pattern = r"^[^@]+(@[0-9]+)?$"
);

/// An IP network `<address>/<prefix-length>` with no host bits set; a bare address is a /32 or /128.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpNetwork {
    /// Network address.
    pub addr: IpAddr,
    /// Prefix length.
    pub prefix: u8,
}

impl IpNetwork {
    /// True for an IPv6 network.
    pub fn is_ipv6(&self) -> bool {
        self.addr.is_ipv6()
    }
}

impl fmt::Display for IpNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn host_bits_set(addr: IpAddr, prefix: u8) -> bool {
    match addr {
        IpAddr::V4(a) => {
            let v = u32::from(a);
            prefix < 32 && v & (u32::MAX >> prefix) != 0
        }
        IpAddr::V6(a) => {
            let v = u128::from(a);
            prefix < 128 && v & (u128::MAX >> prefix) != 0
        }
    }
}

impl FromStr for IpNetwork {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr = a
            .parse::<IpAddr>()
            .map_err(|_| format!("failed to parse IP network '{s}': bad address '{a}'"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => {
                    return Err(format!(
                        "failed to parse IP network '{s}': prefix length must be 0..={max}"
                    ));
                }
            },
        };
        if host_bits_set(addr, prefix) {
            return Err(format!("IP network '{s}' has host bits set"));
        }
        Ok(Self { addr, prefix })
    }
}

string_type!(
    IpNetwork,
    "an IP network '<address>/<prefix-length>'",
    "An IP network: '<address>/<prefix-length>', e.g. '192.0.2.0/24'."
);

/// An IPv6 network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ipv6Network {
    /// Network address.
    pub addr: Ipv6Addr,
    /// Prefix length.
    pub prefix: u8,
}

impl fmt::Display for Ipv6Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Ipv6Network {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let net: IpNetwork = s.parse()?;
        match net.addr {
            IpAddr::V6(addr) => Ok(Self {
                addr,
                prefix: net.prefix,
            }),
            IpAddr::V4(_) => Err(format!("expected an IPv6 network, got '{s}'")),
        }
    }
}

string_type!(
    Ipv6Network,
    "an IPv6 network",
    "An IPv6 network: '<address>/<prefix-length>'."
);

/// An IPv6 network with prefix length exactly 96 (DNS64 prefix).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ipv6Network96(pub Ipv6Addr);

impl fmt::Display for Ipv6Network96 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/96", self.0)
    }
}

impl FromStr for Ipv6Network96 {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if !s.contains('/') {
            return Err(format!(
                "expected an IPv6 network with a /96 prefix length, got '{s}' (missing '/96'?)"
            ));
        }
        let net: Ipv6Network = s.parse()?;
        if net.prefix != 96 {
            return Err(format!(
                "expected an IPv6 network with a /96 prefix length, got /{}",
                net.prefix
            ));
        }
        Ok(Self(net.addr))
    }
}

string_type!(
    Ipv6Network96,
    "an IPv6 /96 network",
    "An IPv6 network with a /96 prefix length.",
    pattern = r"^[0-9a-fA-F:.]+/96$"
);

/// Address renumbering destination: an address prefix, or with a trailing `!` an exact address
/// (the whole address is replaced).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RenumberDestination {
    /// The address.
    pub addr: IpAddr,
    /// `true` for the `addr!` form.
    pub exact: bool,
}

impl fmt::Display for RenumberDestination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.addr, if self.exact { "!" } else { "" })
    }
}

impl FromStr for RenumberDestination {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, exact) = match s.strip_suffix('!') {
            Some(a) => (a, true),
            None => (s, false),
        };
        Ok(Self {
            addr: parse_ip(a)?,
            exact,
        })
    }
}

string_type!(
    RenumberDestination,
    "an IP address, optionally followed by '!'",
    "An IP address prefix, or an exact address with a trailing '!'."
);

/// An IPv4 address (`out-interface-v4`).
pub type Ipv4Address = Ipv4Addr;
/// An IPv6 address (`out-interface-v6`).
pub type Ipv6Address = Ipv6Addr;

// ---------------------------------------------------------------------------------------------
// Generic shapes

/// One item or a list of items (`subtree: example.com.` or `subtree: [a., b.]`). Always holds a
/// list and serializes as one.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ListOrItem<T>(pub Vec<T>);

impl<T> ListOrItem<T> {
    /// The items.
    pub fn items(&self) -> &[T] {
        &self.0
    }

    /// Iterates the items.
    pub fn iter(&self) -> std::slice::Iter<'_, T> {
        self.0.iter()
    }
}

impl<T> Default for ListOrItem<T> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<'a, T> IntoIterator for &'a ListOrItem<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<T: Serialize> Serialize for ListOrItem<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for ListOrItem<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = ListOrItem<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("one item or a list of items")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(ListOrItem(items))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                T::deserialize(de::value::StrDeserializer::new(v)).map(|t| ListOrItem(vec![t]))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|t| ListOrItem(vec![t]))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

impl<T: JsonSchema> JsonSchema for ListOrItem<T> {
    fn schema_name() -> Cow<'static, str> {
        format!("ListOrItem_{}", T::schema_name()).into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let item = generator.subschema_for::<T>();
        json_schema!({ "anyOf": [item, { "type": "array", "items": item }] })
    }
}

/// `auto` or a boolean (TLS and RPZ `watchdog`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum AutoBool {
    /// `auto`: decided by the implementation.
    #[default]
    Auto,
    /// An explicit boolean.
    Bool(bool),
}

impl Serialize for AutoBool {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Auto => s.serialize_str("auto"),
            Self::Bool(b) => s.serialize_bool(*b),
        }
    }
}

impl<'de> Deserialize<'de> for AutoBool {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = AutoBool;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("'auto' or a boolean")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<AutoBool, E> {
                Ok(AutoBool::Bool(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<AutoBool, E> {
                if v == "auto" {
                    Ok(AutoBool::Auto)
                } else {
                    Err(E::custom(format!(
                        "expected 'auto' or a boolean, got '{v}'"
                    )))
                }
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for AutoBool {
    fn schema_name() -> Cow<'static, str> {
        "AutoBool".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "anyOf": [{ "const": "auto" }, { "type": "boolean" }] })
    }
}

/// Deserializes a mapping whose keys are normalised on parse (domain names); two source keys
/// that normalise to the same key are an error instead of one silently replacing the other.
pub(crate) fn unique_keys<'de, D, K, V>(d: D) -> Result<std::collections::BTreeMap<K, V>, D::Error>
where
    D: Deserializer<'de>,
    K: Deserialize<'de> + Ord + fmt::Display,
    V: Deserialize<'de>,
{
    struct MapVisitor<K, V>(std::marker::PhantomData<(K, V)>);
    impl<'de, K, V> Visitor<'de> for MapVisitor<K, V>
    where
        K: Deserialize<'de> + Ord + fmt::Display,
        V: Deserialize<'de>,
    {
        type Value = std::collections::BTreeMap<K, V>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a mapping")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = std::collections::BTreeMap::new();
            while let Some(k) = map.next_key::<K>()? {
                let v = map.next_value::<V>()?;
                let shown = k.to_string();
                if out.insert(k, v).is_some() {
                    return Err(de::Error::custom(format!(
                        "duplicate key: '{shown}' is given more than once (after normalisation)"
                    )));
                }
            }
            Ok(out)
        }
    }
    d.deserialize_map(MapVisitor(std::marker::PhantomData))
}

/// Deserializes `null` or absence as `T::default()` (used for list sections).
pub(crate) fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}
