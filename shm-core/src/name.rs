//! Segment names: the rules of `shm_open(3)`, checked before any syscall.

use std::ffi::CString;
use std::fmt;

/// Longest name component Linux accepts (`NAME_MAX`), not counting the leading `/`.
pub const NAME_MAX: usize = 255;

/// A validated POSIX shared-memory name: one leading `/`, then 1 to [`NAME_MAX`] bytes
/// with no other `/` and no NUL, and not `.` or `..`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SegmentName {
    text: String,
    c: CString,
}

/// Which naming rule a segment name broke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameError {
    /// The name is empty or only `/`.
    Empty {
        /// The name as given.
        name: String,
    },
    /// The name does not start with `/`.
    MissingLeadingSlash {
        /// The name as given.
        name: String,
    },
    /// A `/` appears after the first byte.
    ExtraSlash {
        /// The name as given.
        name: String,
        /// Byte offset of the extra `/`.
        at: usize,
    },
    /// The name contains a NUL byte.
    Nul {
        /// The name as given.
        name: String,
        /// Byte offset of the NUL.
        at: usize,
    },
    /// More than [`NAME_MAX`] bytes after the `/`.
    TooLong {
        /// The name as given.
        name: String,
        /// Its length after the `/`.
        len: usize,
    },
    /// `/.` or `/..`, which name directories.
    Dot {
        /// The name as given.
        name: String,
    },
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameError::Empty { name } => write!(
                f,
                "segment name {name:?} is invalid: it needs at least one character after the leading '/'"
            ),
            NameError::MissingLeadingSlash { name } => {
                write!(f, "segment name {name:?} is invalid: it must start with '/' (try \"/{name}\")")
            }
            NameError::ExtraSlash { name, at } => write!(
                f,
                "segment name {name:?} is invalid: '/' is allowed only as the first character (found one at byte {at})"
            ),
            NameError::Nul { name, at } => {
                write!(f, "segment name {name:?} is invalid: it contains a NUL byte at byte {at}")
            }
            NameError::TooLong { name, len } => write!(
                f,
                "segment name {:?}... is invalid: {len} bytes after the '/' exceeds NAME_MAX ({NAME_MAX})",
                name.chars().take(32).collect::<String>()
            ),
            NameError::Dot { name } => {
                write!(f, "segment name {name:?} is invalid: \"/.\" and \"/..\" are not allowed")
            }
        }
    }
}

impl std::error::Error for NameError {}

impl SegmentName {
    /// Validates `name`.
    ///
    /// # Errors
    ///
    /// A [`NameError`] naming the rule broken.
    pub fn new(name: &str) -> Result<SegmentName, NameError> {
        let owned = || name.to_owned();
        if let Some(at) = name.bytes().position(|b| b == 0) {
            return Err(NameError::Nul { name: owned(), at });
        }
        let Some(rest) = name.strip_prefix('/') else {
            if name.is_empty() {
                return Err(NameError::Empty { name: owned() });
            }
            return Err(NameError::MissingLeadingSlash { name: owned() });
        };
        if rest.is_empty() {
            return Err(NameError::Empty { name: owned() });
        }
        if let Some(at) = rest.bytes().position(|b| b == b'/') {
            return Err(NameError::ExtraSlash {
                name: owned(),
                at: at + 1,
            });
        }
        if rest.len() > NAME_MAX {
            return Err(NameError::TooLong {
                name: owned(),
                len: rest.len(),
            });
        }
        if rest == "." || rest == ".." {
            return Err(NameError::Dot { name: owned() });
        }
        let c = CString::new(name).map_err(|e| NameError::Nul {
            name: owned(),
            at: e.nul_position(),
        })?;
        Ok(SegmentName {
            text: name.to_owned(),
            c,
        })
    }

    /// The name, with its leading `/`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub(crate) fn as_c(&self) -> &std::ffi::CStr {
        &self.c
    }

    /// Where Linux keeps the segment: `/dev/shm/<name without '/'>`.
    pub fn path(&self) -> std::path::PathBuf {
        std::path::Path::new("/dev/shm").join(&self.text[1..])
    }
}

impl fmt::Debug for SegmentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.text, f)
    }
}

impl fmt::Display for SegmentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for SegmentName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SegmentName::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_good_names() {
        for n in ["/a", "/shmring-ticks", "/with space", "/ünï"] {
            assert_eq!(SegmentName::new(n).unwrap().as_str(), n);
        }
        let long = format!("/{}", "x".repeat(NAME_MAX));
        assert!(SegmentName::new(&long).is_ok());
    }

    #[test]
    fn each_rule_has_its_error() {
        assert!(matches!(SegmentName::new(""), Err(NameError::Empty { .. })));
        assert!(matches!(
            SegmentName::new("/"),
            Err(NameError::Empty { .. })
        ));
        assert!(matches!(
            SegmentName::new("abc"),
            Err(NameError::MissingLeadingSlash { .. })
        ));
        assert!(matches!(
            SegmentName::new("/a/b"),
            Err(NameError::ExtraSlash { at: 2, .. })
        ));
        assert!(matches!(
            SegmentName::new("/a\0b"),
            Err(NameError::Nul { at: 2, .. })
        ));
        let long = format!("/{}", "x".repeat(NAME_MAX + 1));
        assert!(matches!(
            SegmentName::new(&long),
            Err(NameError::TooLong { len: 256, .. })
        ));
        assert!(matches!(
            SegmentName::new("/.."),
            Err(NameError::Dot { .. })
        ));
        let msg = SegmentName::new("abc").unwrap_err().to_string();
        assert!(msg.contains("must start with '/'"), "{msg}");
    }
}
