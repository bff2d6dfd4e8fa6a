//! The PLAIN mechanism (RFC 4616): `[authzid] NUL authcid NUL passwd` in one
//! message. Only safe inside TLS; offering it is the session's decision.

use super::scram::ScramHash;
use super::{
    SaslCondition, SaslStep, StoredCredentials, malformed, normalize_username, not_authorized,
};

/// RFC 4616 §2: each field is at most 255 octets. Enforcing it keeps a
/// client from making the server run PBKDF2 over megabytes of "password".
const FIELD_BYTES_MAX: usize = 255;

/// Verifies a PLAIN message against the stored credentials.
/// `fake_iterations` is the PBKDF2 work spent on unknown users, so that the
/// response time does not reveal whether the account exists.
pub(super) fn authenticate(
    message: &[u8],
    lookup: &dyn Fn(&str) -> Option<StoredCredentials>,
    fake_iterations: u32,
) -> SaslStep {
    let Ok(message) = std::str::from_utf8(message) else {
        return malformed("PLAIN message is not UTF-8");
    };
    let mut fields = message.split('\0');
    let (Some(authzid), Some(authcid), Some(password), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return malformed("PLAIN message must have exactly three NUL-separated fields");
    };
    if authcid.is_empty() || password.is_empty() {
        return malformed("PLAIN authcid and password must not be empty");
    }
    if [authzid, authcid, password]
        .iter()
        .any(|field| field.len() > FIELD_BYTES_MAX)
    {
        return malformed("PLAIN field longer than 255 octets");
    }
    let username = normalize_username(authcid);
    // Proxy authorization is not offered: an authzid may only name the
    // authenticating user itself (RFC 4616 §2, RFC 6120 §6.3.8).
    if !authzid.is_empty() && (username.is_none() || normalize_username(authzid) != username) {
        return SaslStep::Failure(
            SaslCondition::InvalidAuthzid,
            "authorization identity must be the authenticating user".to_owned(),
        );
    }
    let credentials = username.as_deref().and_then(lookup);
    match (username, credentials) {
        (Some(username), Some(credentials)) => {
            if credentials.verify_plain(password) {
                SaslStep::Success {
                    username,
                    additional_data: None,
                }
            } else {
                not_authorized()
            }
        }
        _ => {
            // The same PBKDF2 work a real account costs; `black_box` keeps
            // the compiler from discarding the unused result.
            std::hint::black_box(ScramHash::Sha256.salted_password(
                password.as_bytes(),
                b"no such account",
                fake_iterations,
            ));
            not_authorized()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sasl::{Mechanism, SaslServer};

    fn run(message: &[u8]) -> SaslStep {
        let credentials = StoredCredentials::derive("pencil", b"salt1", b"salt2", 64);
        let lookup = move |name: &str| (name == "user").then(|| credentials.clone());
        SaslServer::new(Mechanism::Plain, "unused", b"key").step(message, &lookup)
    }

    fn condition(step: SaslStep) -> Option<SaslCondition> {
        match step {
            SaslStep::Failure(condition, _) => Some(condition),
            _ => None,
        }
    }

    #[test]
    fn plain_with_the_right_password_succeeds() {
        assert_eq!(
            run(b"\0user\0pencil"),
            SaslStep::Success {
                username: "user".to_owned(),
                additional_data: None
            }
        );
    }

    #[test]
    fn plain_username_is_case_insensitive() {
        assert!(
            matches!(run(b"\0User\0pencil"), SaslStep::Success { username, .. } if username == "user")
        );
    }

    #[test]
    fn plain_authzid_equal_to_the_user_is_accepted() {
        assert!(matches!(
            run(b"user\0user\0pencil"),
            SaslStep::Success { .. }
        ));
    }

    #[test]
    fn plain_authzid_of_another_user_is_invalid_authzid() {
        assert_eq!(
            condition(run(b"admin\0user\0pencil")),
            Some(SaslCondition::InvalidAuthzid)
        );
    }

    #[test]
    fn plain_wrong_password_is_not_authorized() {
        assert_eq!(
            condition(run(b"\0user\0crayon")),
            Some(SaslCondition::NotAuthorized)
        );
    }

    #[test]
    fn plain_unknown_user_fails_like_a_wrong_password() {
        assert_eq!(run(b"\0nobody\0pencil"), run(b"\0user\0crayon"));
    }

    #[test]
    fn plain_malformed_messages_are_malformed_request() {
        for message in [
            &b"user\0pencil"[..],
            b"\0user\0pencil\0extra",
            b"\0\0pencil",
            b"\0user\0",
            b"\0us\xffer\0pencil",
        ] {
            assert_eq!(
                condition(run(message)),
                Some(SaslCondition::MalformedRequest),
                "{message:?}"
            );
        }
    }

    #[test]
    fn plain_oversize_password_is_malformed_request() {
        let mut message = b"\0user\0".to_vec();
        message.extend(std::iter::repeat_n(b'x', FIELD_BYTES_MAX + 1));
        assert_eq!(
            condition(run(&message)),
            Some(SaslCondition::MalformedRequest)
        );
    }
}
