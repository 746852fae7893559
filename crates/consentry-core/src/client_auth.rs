//! Client identification and authentication at the token endpoint
//! ([RFC 6749 §2.3](https://www.rfc-editor.org/rfc/rfc6749#section-2.3),
//! [RFC 7523 §2.2](https://www.rfc-editor.org/rfc/rfc7523#section-2.2)).

/// A client identifier ([RFC 6749 §2.2](https://www.rfc-editor.org/rfc/rfc6749#section-2.2)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientId(String);

impl ClientId {
    /// Wraps a client id.
    pub fn new(client_id: impl Into<String>) -> Self {
        ClientId(client_id.into())
    }

    /// The client id string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
