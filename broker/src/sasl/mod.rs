//! SASL authentication (RFC 6120 §6, RFC 4422) for client streams.
//!
//! [`SaslServer`] runs one authentication exchange as a pure state machine:
//! the caller base64-decodes each `<auth/>`/`<response/>` payload, feeds it to
//! [`SaslServer::step`] and sends back whatever [`SaslStep`] says. It does no
//! I/O and takes no RNG: the server nonce and the secret used to fake salts for
//! unknown users come in from the caller. [`AuthBackoff`] throttles password
//! guessing per client address.
//!
//! # Usernames
//! The authentication identity is the localpart of the user's bare JID. Both
//! this module and the account store normalise it with the XMPP nodeprep
//! profile ([`normalize_username`]), which also case-folds, so `User`, `USER`
//! and `user` are one account, exactly as they are one JID localpart
//! (RFC 6122 §A; RFC 6120 §6.3.7 lets the server pick the authcid form).
//!
//! # Passwords
//! Passwords are prepared with SASLprep (RFC 4013) before key derivation, as
//! RFC 5802 §2.2 `Normalize()` requires, so non-ASCII passwords typed by SCRAM
//! clients (which prepare them too) hash to the same keys.

mod backoff;
mod plain;
pub(crate) mod scram;

pub use backoff::{AuthBackoff, BackoffLimits};

use std::borrow::Cow;

use ring::hmac;

/// Iteration count for SCRAM keys when the operator does not choose one.
/// RFC 7677 §4 asks for at least 4096; this is the count Prosody uses today,
/// a compromise between offline-attack cost and login cost on small devices.
pub const SCRAM_ITERATIONS_DEFAULT: u32 = 10_000;

/// A SASL mechanism this server offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// RFC 7677.
    ScramSha256,
    /// RFC 5802.
    ScramSha1,
    /// RFC 4616; only to be offered over TLS (RFC 6120 §6.4.1 / INTERFACE.md).
    Plain,
}

impl Mechanism {
    /// The IANA-registered mechanism name, as sent in `<mechanism/>`.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha1 => "SCRAM-SHA-1",
            Mechanism::Plain => "PLAIN",
        }
    }

    /// Parses a mechanism name. RFC 4422 §3.1: names are case-sensitive
    /// upper-case strings, so no case folding happens here.
    pub fn from_name(name: &str) -> Option<Self> {
        [
            Mechanism::ScramSha256,
            Mechanism::ScramSha1,
            Mechanism::Plain,
        ]
        .into_iter()
        .find(|mechanism| mechanism.name() == name)
    }
}

/// The SASL failure conditions of RFC 6120 §6.5.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslCondition {
    Aborted,
    AccountDisabled,
    CredentialsExpired,
    EncryptionRequired,
    IncorrectEncoding,
    InvalidAuthzid,
    InvalidMechanism,
    MalformedRequest,
    MechanismTooWeak,
    NotAuthorized,
    TemporaryAuthFailure,
}

impl SaslCondition {
    /// The child element name inside `<failure/>`.
    pub fn element_name(self) -> &'static str {
        match self {
            SaslCondition::Aborted => "aborted",
            SaslCondition::AccountDisabled => "account-disabled",
            SaslCondition::CredentialsExpired => "credentials-expired",
            SaslCondition::EncryptionRequired => "encryption-required",
            SaslCondition::IncorrectEncoding => "incorrect-encoding",
            SaslCondition::InvalidAuthzid => "invalid-authzid",
            SaslCondition::InvalidMechanism => "invalid-mechanism",
            SaslCondition::MalformedRequest => "malformed-request",
            SaslCondition::MechanismTooWeak => "mechanism-too-weak",
            SaslCondition::NotAuthorized => "not-authorized",
            SaslCondition::TemporaryAuthFailure => "temporary-auth-failure",
        }
    }
}

/// The SCRAM verifier for one hash function (RFC 5802 §3): enough to check a
/// client proof and to prove the server's identity, not enough to log in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramCredentials {
    pub salt: Vec<u8>,
    pub iterations: u32,
    /// `H(HMAC(SaltedPassword, "Client Key"))`.
    pub stored_key: Vec<u8>,
    /// `HMAC(SaltedPassword, "Server Key")`.
    pub server_key: Vec<u8>,
}

/// What the server keeps for an account: SCRAM verifiers for both offered
/// hash functions, never the password itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCredentials {
    pub sha1: ScramCredentials,
    pub sha256: ScramCredentials,
}

impl StoredCredentials {
    /// Derives the verifiers from a password. Each hash gets its own salt so
    /// that the weaker SHA-1 verifier says nothing about the SHA-256 one.
    pub fn derive(password: &str, salt_sha1: &[u8], salt_sha256: &[u8], iterations: u32) -> Self {
        let password = prepare_password(password);
        StoredCredentials {
            sha1: scram::ScramHash::Sha1.derive(password.as_bytes(), salt_sha1, iterations),
            sha256: scram::ScramHash::Sha256.derive(password.as_bytes(), salt_sha256, iterations),
        }
    }

    /// Checks a PLAIN password: recomputes the SCRAM-SHA-256 keys with the
    /// stored salt and iteration count and compares them in constant time.
    pub fn verify_plain(&self, password: &str) -> bool {
        let password = prepare_password(password);
        let candidate = scram::ScramHash::Sha256.derive(
            password.as_bytes(),
            &self.sha256.salt,
            self.sha256.iterations,
        );
        // Both keys are compared, without short-circuiting, so the time taken
        // does not depend on which one differs.
        let stored_ok = constant_time_eq(&candidate.stored_key, &self.sha256.stored_key);
        let server_ok = constant_time_eq(&candidate.server_key, &self.sha256.server_key);
        stored_ok & server_ok
    }
}

/// Normalises an authentication identity to the account key: the nodeprep'd
/// (hence case-folded) JID localpart. `None` when it cannot be a localpart at
/// all (empty, too long, or containing characters nodeprep prohibits such as
/// `@`, `/`, `"` or spaces).
pub fn normalize_username(raw: &str) -> Option<String> {
    jid::NodePart::new(raw)
        .ok()
        .map(|node| node.as_str().to_owned())
}

/// RFC 5802 §2.2 `Normalize()`: SASLprep (RFC 4013). A password SASLprep
/// rejects (prohibited code points) is used as given: the same rule applies
/// when storing and when checking, so the outcome stays consistent, and the
/// account store refuses such passwords up front.
fn prepare_password(password: &str) -> Cow<'_, str> {
    stringprep::saslprep(password).unwrap_or(Cow::Borrowed(password))
}

/// Whether a password is acceptable under SASLprep (RFC 4013 §2.3 prohibits
/// e.g. control characters) and not empty after preparation.
pub fn password_is_valid(password: &str) -> bool {
    stringprep::saslprep(password).is_ok_and(|prepared| !prepared.is_empty())
}

/// Constant-time equality. ring 0.17 deprecated its raw comparison helper;
/// `hmac::verify` is the constant-time tag check it supports, so both values
/// are compared as HMAC tags under a fixed key. The key needs no secrecy:
/// only the comparison's timing matters, and `hmac::verify` does not leak it.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let key = hmac::Key::new(hmac::HMAC_SHA256, b"vomesh constant-time comparison");
    hmac::verify(&key, a, hmac::sign(&key, b).as_ref()).is_ok()
}

/// The outcome of feeding one client message to [`SaslServer::step`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaslStep {
    /// Send `<challenge/>` with these bytes (base64-encoded by the caller).
    Challenge(Vec<u8>),
    /// Send `<success/>`, with `additional_data` as its content if present
    /// (the SCRAM server-final message `v=…`, RFC 6120 §6.3.10).
    Success {
        /// The normalised localpart of the authenticated user.
        username: String,
        additional_data: Option<Vec<u8>>,
    },
    /// Send `<failure/>` with this condition and text. The text never says
    /// whether the account exists.
    Failure(SaslCondition, String),
}

/// One authentication exchange.
#[derive(Debug)]
pub struct SaslServer {
    mechanism: Mechanism,
    server_nonce: String,
    fake_salt_key: Vec<u8>,
    fake_iterations: u32,
    state: ExchangeState,
}

#[derive(Debug)]
enum ExchangeState {
    /// Waiting for the initial response. `empty_challenge_sent` is set once
    /// the client started without one and got the empty challenge
    /// RFC 6120 §6.4.2 prescribes; a second empty message is malformed.
    AwaitingInitial { empty_challenge_sent: bool },
    /// SCRAM server-first sent; waiting for client-final.
    AwaitingClientFinal(scram::PendingProof),
    /// Success or failure was returned; nothing more is accepted.
    Finished,
}

impl SaslServer {
    /// Starts an exchange.
    ///
    /// `server_nonce` is random bytes chosen by the caller (the core takes no
    /// RNG), already printable: base64 of at least 18 random bytes is the
    /// intended form (RFC 5802 §5.1: printable ASCII except `,`).
    /// `fake_salt_key` is a server secret used to answer unknown users with a
    /// deterministic fake salt, so the exchange does not reveal whether an
    /// account exists (RFC 5802 §5.1 leaves this to the server).
    pub fn new(mechanism: Mechanism, server_nonce: &str, fake_salt_key: &[u8]) -> Self {
        debug_assert!(
            !server_nonce.is_empty() && server_nonce.bytes().all(scram::is_nonce_byte),
            "server nonce must be printable ASCII without ','"
        );
        SaslServer {
            mechanism,
            server_nonce: server_nonce.to_owned(),
            fake_salt_key: fake_salt_key.to_vec(),
            fake_iterations: SCRAM_ITERATIONS_DEFAULT,
            state: ExchangeState::AwaitingInitial {
                empty_challenge_sent: false,
            },
        }
    }

    /// Sets the iteration count announced to unknown users (SCRAM) and the
    /// PBKDF2 work spent on them (PLAIN). It must equal the account store's
    /// count, or `i=` and response times would tell real and fake accounts
    /// apart.
    pub fn with_fake_iterations(mut self, iterations: u32) -> Self {
        self.fake_iterations = iterations;
        self
    }

    /// The mechanism this exchange runs.
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// Feeds the client's (already base64-decoded) message. `lookup` returns
    /// the stored credentials for a normalised username (see
    /// [`normalize_username`]); it is called at most once per exchange.
    pub fn step(
        &mut self,
        client_message: &[u8],
        lookup: &dyn Fn(&str) -> Option<StoredCredentials>,
    ) -> SaslStep {
        let state = std::mem::replace(&mut self.state, ExchangeState::Finished);
        let (next, step) = match state {
            ExchangeState::AwaitingInitial {
                empty_challenge_sent,
            } if client_message.is_empty() => {
                if empty_challenge_sent {
                    (ExchangeState::Finished, malformed("empty response"))
                } else {
                    (
                        ExchangeState::AwaitingInitial {
                            empty_challenge_sent: true,
                        },
                        SaslStep::Challenge(Vec::new()),
                    )
                }
            }
            ExchangeState::AwaitingInitial { .. } => match self.mechanism {
                Mechanism::Plain => (
                    ExchangeState::Finished,
                    plain::authenticate(client_message, lookup, self.fake_iterations),
                ),
                Mechanism::ScramSha256 | Mechanism::ScramSha1 => {
                    let hash = if self.mechanism == Mechanism::ScramSha256 {
                        scram::ScramHash::Sha256
                    } else {
                        scram::ScramHash::Sha1
                    };
                    let server = scram::ServerConfig {
                        hash,
                        server_nonce: &self.server_nonce,
                        fake_salt_key: &self.fake_salt_key,
                        fake_iterations: self.fake_iterations,
                    };
                    match scram::client_first(&server, client_message, lookup) {
                        Ok((pending, server_first)) => (
                            ExchangeState::AwaitingClientFinal(pending),
                            SaslStep::Challenge(server_first),
                        ),
                        Err(failure) => (ExchangeState::Finished, failure),
                    }
                }
            },
            ExchangeState::AwaitingClientFinal(pending) => (
                ExchangeState::Finished,
                pending.client_final(client_message),
            ),
            ExchangeState::Finished => (
                ExchangeState::Finished,
                malformed("the exchange is already finished"),
            ),
        };
        self.state = next;
        step
    }
}

fn malformed(text: &str) -> SaslStep {
    SaslStep::Failure(SaslCondition::MalformedRequest, text.to_owned())
}

/// The one failure text for a wrong password and an unknown user alike.
fn not_authorized() -> SaslStep {
    SaslStep::Failure(
        SaslCondition::NotAuthorized,
        "invalid username or password".to_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mechanism_names_round_trip() {
        for mechanism in [
            Mechanism::ScramSha256,
            Mechanism::ScramSha1,
            Mechanism::Plain,
        ] {
            assert_eq!(Mechanism::from_name(mechanism.name()), Some(mechanism));
        }
        assert_eq!(Mechanism::from_name("scram-sha-256"), None);
        assert_eq!(Mechanism::from_name("SCRAM-SHA-256-PLUS"), None);
    }

    #[test]
    fn condition_element_names_follow_rfc6120() {
        assert_eq!(
            SaslCondition::NotAuthorized.element_name(),
            "not-authorized"
        );
        assert_eq!(
            SaslCondition::TemporaryAuthFailure.element_name(),
            "temporary-auth-failure"
        );
        assert_eq!(
            SaslCondition::InvalidAuthzid.element_name(),
            "invalid-authzid"
        );
    }

    #[test]
    fn usernames_normalise_to_lowercase_localparts() {
        assert_eq!(normalize_username("Alice").as_deref(), Some("alice"));
        assert_eq!(normalize_username(""), None);
        assert_eq!(normalize_username("a@b"), None);
        assert_eq!(normalize_username("a b"), None);
    }

    #[test]
    fn verify_plain_accepts_only_the_password() {
        let credentials = StoredCredentials::derive("pencil", b"salt-one", b"salt-two", 64);
        assert!(credentials.verify_plain("pencil"));
        assert!(!credentials.verify_plain("pencil "));
        assert!(!credentials.verify_plain("Pencil"));
    }

    #[test]
    fn saslprep_makes_equivalent_passwords_equal() {
        // RFC 4013 §2.1: non-ASCII space maps to U+0020; soft hyphen maps to nothing.
        let credentials = StoredCredentials::derive("a b\u{00AD}c", b"s1", b"s2", 64);
        assert!(credentials.verify_plain("a\u{00A0}bc"));
    }

    #[test]
    fn constant_time_eq_compares_contents_and_length() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }

    #[test]
    fn empty_initial_response_gets_one_empty_challenge() {
        let mut server = SaslServer::new(Mechanism::Plain, "nonce", b"key");
        let lookup = |_: &str| None;
        assert_eq!(server.step(b"", &lookup), SaslStep::Challenge(Vec::new()));
        assert!(matches!(
            server.step(b"", &lookup),
            SaslStep::Failure(SaslCondition::MalformedRequest, _)
        ));
    }

    #[test]
    fn step_after_the_end_is_malformed() {
        let credentials = StoredCredentials::derive("pw", b"s1", b"s2", 64);
        let lookup = move |name: &str| (name == "user").then(|| credentials.clone());
        let mut server = SaslServer::new(Mechanism::Plain, "nonce", b"key");
        assert!(matches!(
            server.step(b"\0user\0pw", &lookup),
            SaslStep::Success { .. }
        ));
        assert!(matches!(
            server.step(b"\0user\0pw", &lookup),
            SaslStep::Failure(SaslCondition::MalformedRequest, _)
        ));
    }
}
