//! API keys: `authorization: Bearer K`, `bearer K` or the bare key; up to any number of
//! keys may be active at once (rotation). Compared in constant time; never logged.

use tonic::metadata::MetadataMap;

use crate::ServeError;

/// Active API keys; none means no authentication.
#[derive(Clone, Default)]
pub struct Keys(Vec<Vec<u8>>);

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keys({} active)", self.0.len())
    }
}

/// Equal bytes, compared in time that does not depend on where they differ (a key's length
/// is not secret).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(a.ct_eq(b))
}

impl Keys {
    pub fn new(keys: Vec<String>) -> Self {
        Keys(
            keys.into_iter()
                .filter(|k| !k.is_empty())
                .map(String::into_bytes)
                .collect(),
        )
    }

    pub fn is_enabled(&self) -> bool {
        !self.0.is_empty()
    }

    /// Checks the request's `authorization` header.
    pub fn check(&self, metadata: &MetadataMap) -> Result<(), ServeError> {
        if self.0.is_empty() {
            return Ok(());
        }
        let value = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .unwrap_or(value)
            .trim();
        let mut ok = false;
        for k in &self.0 {
            ok |= constant_time_eq(token.as_bytes(), k);
        }
        if ok { Ok(()) } else { Err(ServeError::Unauthenticated) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(v: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert("authorization", v.parse().unwrap());
        m
    }

    #[test]
    fn accepts_every_form_and_rotation() {
        let keys = Keys::new(vec!["old".into(), "new-key".into()]);
        for v in ["Bearer new-key", "bearer new-key", "new-key", "Bearer old"] {
            assert!(keys.check(&md(v)).is_ok(), "{v}");
        }
        for v in ["Bearer ", "Bearer new-ke", "new-key2", "x"] {
            assert!(keys.check(&md(v)).is_err(), "{v}");
        }
        assert!(keys.check(&MetadataMap::new()).is_err());
        assert!(Keys::new(vec![]).check(&MetadataMap::new()).is_ok());
        assert!(constant_time_eq(b"abc", b"abc") && !constant_time_eq(b"abc", b"abd") && !constant_time_eq(b"", b"a"));
    }
}
