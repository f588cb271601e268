//! Why a command failed, and the exit status that tells scripts.

use ssm::inspect::Kind;
use ssm::Error;

use crate::json::{Json, Obj};

/// Exit statuses (documented in `ssm --help`).
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// Usage error, invalid name or configuration, anything else.
    pub const OTHER: u8 = 1;
    /// No object of that name.
    pub const NOT_FOUND: u8 = 2;
    /// The operating system refused access.
    pub const PERMISSION_DENIED: u8 = 3;
    /// Not a pool or ring of this library, or the wrong kind for the
    /// command.
    pub const FOREIGN: u8 = 4;
    /// A segment of this library this build cannot use.
    pub const LAYOUT: u8 = 5;
    /// An inconsistency.
    pub const CORRUPTED: u8 = 6;
    /// `create` found the name taken.
    pub const EXISTS: u8 = 7;
    /// Still being created, or abandoned by its creator.
    pub const NOT_READY: u8 = 8;
}

/// A failed command.
#[derive(Debug)]
pub enum Failure {
    /// The library said no.
    Lib(Error),
    /// The object is not a pool or ring of this library.
    Foreign {
        /// Its name.
        name: String,
        /// Its size in bytes.
        size: u64,
        /// What to do about it.
        hint: &'static str,
    },
    /// A ring where a pool is needed.
    WrongKind {
        /// Its name.
        name: String,
        /// What it is.
        kind: Kind,
        /// The command.
        command: &'static str,
    },
    /// The audit found an inconsistency.
    Inconsistent {
        /// Pool name.
        name: String,
        /// The first inconsistency.
        detail: String,
    },
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Lib(e)
    }
}

/// Whether a layout mismatch says that the object is not a segment of this
/// library at all (rather than one of another version, architecture or
/// size).
fn is_foreign_layout(detail: &str) -> bool {
    detail.contains("not a pool of this library")
        || detail.contains("not a ring of this library")
        || detail.contains("less than a pool header page")
        || detail.contains("less than a ring header page")
}

impl Failure {
    /// The exit status.
    pub fn code(&self) -> u8 {
        match self {
            Failure::Foreign { .. } | Failure::WrongKind { .. } => exit::FOREIGN,
            Failure::Inconsistent { .. } => exit::CORRUPTED,
            Failure::Lib(e) => match e {
                Error::NotFound { .. } => exit::NOT_FOUND,
                Error::PermissionDenied { .. } => exit::PERMISSION_DENIED,
                Error::LayoutMismatch { detail, .. } if is_foreign_layout(detail) => exit::FOREIGN,
                Error::LayoutMismatch { .. } => exit::LAYOUT,
                Error::Corrupted { .. } => exit::CORRUPTED,
                Error::Exists { .. } => exit::EXISTS,
                Error::NotReady { .. } => exit::NOT_READY,
                _ => exit::OTHER,
            },
        }
    }

    /// A short machine-readable name of the failure.
    pub fn kind(&self) -> &'static str {
        match self {
            Failure::Foreign { .. } => "foreign",
            Failure::WrongKind { .. } => "wrong_kind",
            Failure::Inconsistent { .. } => "corrupted",
            Failure::Lib(e) => match e {
                Error::NotFound { .. } => "not_found",
                Error::PermissionDenied { .. } => "permission_denied",
                Error::LayoutMismatch { detail, .. } if is_foreign_layout(detail) => "foreign",
                Error::LayoutMismatch { .. } => "layout_mismatch",
                Error::Corrupted { .. } => "corrupted",
                Error::Exists { .. } => "exists",
                Error::NotReady { .. } => "not_ready",
                Error::InvalidName { .. } => "invalid_name",
                Error::InvalidConfig { .. } => "invalid_config",
                Error::RegistryFull { .. } => "registry_full",
                Error::Io { .. } => "io",
                _ => "other",
            },
        }
    }

    /// What failed and why.
    pub fn message(&self) -> String {
        match self {
            Failure::Lib(e) => e.to_string(),
            Failure::Foreign { name, size, hint } => {
                let why = match size {
                    0 => "it is empty: a pool or ring still being created, or one whose \
                          creator died before sizing it"
                        .to_string(),
                    1..=4095 => {
                        format!("it has {size} bytes, less than the header page of a pool or ring")
                    }
                    _ => "it carries neither the pool nor the ring magic number".to_string(),
                };
                format!("'{name}' is not a pool or ring of this library ({why}){hint}")
            }
            Failure::WrongKind {
                name,
                kind,
                command,
            } => format!(
                "'{name}' is a {kind}, and `ssm {command}` works on pools; `ssm stat {name}` \
                 shows a {kind}"
            ),
            Failure::Inconsistent { name, detail } => {
                format!("audit of '{name}' failed: {detail}")
            }
        }
    }

    /// The failure as the JSON document printed with `--json`.
    pub fn json(&self) -> Json {
        if let Failure::Inconsistent { name, detail } = self {
            return Obj::new()
                .field("name", name.as_str())
                .field("consistent", false)
                .field("inconsistency", detail.as_str())
                .into();
        }
        Obj::new()
            .field(
                "error",
                Obj::new()
                    .field("kind", self.kind())
                    .field("exit_code", u32::from(self.code()))
                    .field("message", self.message()),
            )
            .into()
    }
}
