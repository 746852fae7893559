//! Secret values: newtypes whose `Debug` never shows what they hold.
//!
//! Each secret prints as `Name([redacted])`, has no `PartialEq` (compare secrets only where a
//! constant-time comparison is meant), and gives its value up only through an explicit
//! `secret()` call that is easy to find in review.

use crate::prelude::*;

/// Defines a secret newtype over `String` with a redacted `Debug` and a `secret()` accessor.
///
/// Attributes (docs, `derive(Clone)`) pass through; a `new` constructor is added unless the
/// type is declared with `validated`, in which case its module supplies a checked one.
macro_rules! secret_type {
    ($(#[$attr:meta])* $name:ident) => {
        secret_type!(@define $(#[$attr])* $name);
        impl $name {
            /// Wraps a secret value.
            pub fn new(secret: impl Into<String>) -> Self {
                $name(secret.into())
            }
        }
    };
    ($(#[$attr:meta])* validated $name:ident) => {
        secret_type!(@define $(#[$attr])* $name);
    };
    (@define $(#[$attr:meta])* $name:ident) => {
        $(#[$attr])*
        pub struct $name(String);

        impl $name {
            /// The secret value itself. Never log it, never send it to a browser.
            pub fn secret(&self) -> &str {
                &self.0
            }
        }

        impl ::core::fmt::Debug for $name {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.write_str(concat!(stringify!($name), "([redacted])"))
            }
        }
    };
}
pub(crate) use secret_type;

secret_type! {
    /// A client secret ([RFC 6749 §2.3.1](https://www.rfc-editor.org/rfc/rfc6749#section-2.3.1)).
    #[derive(Clone)]
    ClientSecret
}

secret_type! {
    /// An authorization code ([RFC 6749 §4.1.2](https://www.rfc-editor.org/rfc/rfc6749#section-4.1.2)).
    /// Single use: not `Clone`.
    AuthorizationCode
}

secret_type! {
    /// An access token ([RFC 6749 §1.4](https://www.rfc-editor.org/rfc/rfc6749#section-1.4)).
    #[derive(Clone)]
    AccessToken
}

secret_type! {
    /// A refresh token ([RFC 6749 §1.5](https://www.rfc-editor.org/rfc/rfc6749#section-1.5)).
    #[derive(Clone)]
    RefreshToken
}

secret_type! {
    /// An id_token as received, a compact JWS
    /// ([OpenID Connect Core §2](https://openid.net/specs/openid-connect-core-1_0.html#IDToken)).
    #[derive(Clone)]
    IdToken
}

secret_type! {
    /// A private key as a JWK JSON object
    /// ([RFC 7517 §4](https://www.rfc-editor.org/rfc/rfc7517#section-4)), for
    /// `private_key_jwt`, request objects and DPoP proofs. The platform imports and uses it.
    #[derive(Clone)]
    PrivateKeyJwk
}

secret_type! {
    /// The HS256 key that signs app-user assertions (`CONSENTRY_USER_SECRET`; see
    /// [`user_assertion`](crate::user_assertion)).
    UserAssertionSecret
}

secret_type! {
    /// A signed client assertion
    /// ([RFC 7523 §2.2](https://www.rfc-editor.org/rfc/rfc7523#section-2.2)): a credential.
    ClientAssertion
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_is_redacted() {
        assert_eq!(
            format!("{:?}", ClientSecret::new("s3cr3t")),
            "ClientSecret([redacted])"
        );
        assert_eq!(
            format!("{:?}", AuthorizationCode::new("SplxlOBeZQQYbYS6WxSbIA")),
            "AuthorizationCode([redacted])"
        );
        assert_eq!(
            format!("{:?}", AccessToken::new("2YotnFZFEjr1zCsicMWpAA")),
            "AccessToken([redacted])"
        );
        assert_eq!(
            format!("{:?}", RefreshToken::new("tGzv3JOkF0XG5Qx2TlKWIA")),
            "RefreshToken([redacted])"
        );
        assert_eq!(
            format!("{:?}", IdToken::new("eyJ.x.y")),
            "IdToken([redacted])"
        );
        assert_eq!(
            format!("{:?}", PrivateKeyJwk::new(r#"{"d":"x"}"#)),
            "PrivateKeyJwk([redacted])"
        );
        assert_eq!(
            format!("{:?}", ClientAssertion::new("eyJ.a.b")),
            "ClientAssertion([redacted])"
        );
        let nested = format!("{:?}", Some(ClientSecret::new("hunter2")));
        assert!(!nested.contains("hunter2"));
    }

    #[test]
    fn secret_gives_the_value_up_only_when_asked() {
        assert_eq!(ClientSecret::new("s3cr3t").secret(), "s3cr3t");
    }
}
