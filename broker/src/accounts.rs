//! Accounts: a normalised username and the SCRAM verifiers derived from its
//! password, never the password itself.
//!
//! Accounts live in the replicated state (the mesh applies `AddAccount` /
//! `RemoveAccount` commands at every site, so a user created at one site
//! logs in at any), which stores each account's credentials as the opaque
//! record [`encode`] writes. This module makes such records from an
//! operator's request ([`AccountFactory`]) and reads them back ([`decode`]).
//! The username is the nodeprep'd, hence lower-case, JID localpart — the
//! same form [`crate::sasl`] looks up.

use ring::rand::{SecureRandom, SystemRandom};

use crate::sasl::{ScramCredentials, StoredCredentials, normalize_username, password_is_valid};

/// Salt length for new accounts; RFC 5802 does not fix one, 16 random bytes
/// make precomputed tables pointless.
const SALT_BYTES: usize = 16;

/// RFC 7677 §4: the iteration count SHOULD be at least 4096.
const SCRAM_ITERATIONS_MIN: u32 = 4096;

/// Version byte leading every record written by [`encode`].
const RECORD_VERSION: u8 = 1;

/// SHA-1 and SHA-256 output sizes: the key lengths in a version-1 record.
const SHA1_BYTES: usize = 20;
const SHA256_BYTES: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("invalid username {0:?}: not a valid JID localpart")]
    InvalidUsername(String),
    #[error("invalid password: empty, or containing characters SASLprep prohibits")]
    InvalidPassword,
    #[error("SCRAM iteration count {0} is below the {SCRAM_ITERATIONS_MIN} RFC 7677 asks for")]
    IterationsTooLow(u32),
    #[error("the system random number generator failed")]
    Randomness,
}

/// Makes the credential records of new accounts.
pub struct AccountFactory {
    scram_iterations: u32,
    random: SystemRandom,
}

impl AccountFactory {
    /// New passwords are hashed with `scram_iterations` PBKDF2 iterations.
    pub fn new(scram_iterations: u32) -> Result<Self, AccountError> {
        if scram_iterations < SCRAM_ITERATIONS_MIN {
            return Err(AccountError::IterationsTooLow(scram_iterations));
        }
        Ok(AccountFactory {
            scram_iterations,
            random: SystemRandom::new(),
        })
    }

    /// The iteration count new accounts get; SASL must announce the same
    /// count for unknown users (`SaslServer::with_fake_iterations`).
    pub fn scram_iterations(&self) -> u32 {
        self.scram_iterations
    }

    /// The normalised username and the encoded credentials of a new account,
    /// with fresh random salts. PBKDF2 runs here, before anything is
    /// proposed, so the replicated log carries only the verifiers.
    pub fn new_account(
        &self,
        username: &str,
        password: &str,
    ) -> Result<(String, Vec<u8>), AccountError> {
        let username = account_key(username)?;
        if !password_is_valid(password) {
            return Err(AccountError::InvalidPassword);
        }
        let credentials = StoredCredentials::derive(
            password,
            &self.salt()?,
            &self.salt()?,
            self.scram_iterations,
        );
        Ok((username, encode(&credentials)))
    }

    fn salt(&self) -> Result<[u8; SALT_BYTES], AccountError> {
        let mut salt = [0; SALT_BYTES];
        self.random
            .fill(&mut salt)
            .map_err(|_| AccountError::Randomness)?;
        Ok(salt)
    }
}

/// The normalised username for one given by an operator.
pub fn account_key(username: &str) -> Result<String, AccountError> {
    normalize_username(username).ok_or_else(|| AccountError::InvalidUsername(username.to_owned()))
}

// Record format, version 1 — a fixed binary layout rather than serde_json:
// the record is a few byte strings whose lengths are known, so reading it back
// can check every length exactly and report truncation or garbage as
// `Corrupt`; keys stay raw bytes instead of base64 inside JSON; and the
// leading version byte lets a later layout be read alongside this one.
//
//   version: u8 (= 1)
//   then for SHA-1, then SHA-256:
//     iterations: u32 big-endian
//     salt length: u8, salt bytes
//     stored key, server key: 20 bytes each for SHA-1, 32 for SHA-256

pub fn encode(credentials: &StoredCredentials) -> Vec<u8> {
    let mut record = vec![RECORD_VERSION];
    for scram in [&credentials.sha1, &credentials.sha256] {
        record.extend_from_slice(&scram.iterations.to_be_bytes());
        // Salts come from `AccountFactory::salt`, far below 256 bytes.
        debug_assert!(scram.salt.len() <= usize::from(u8::MAX));
        record.push(scram.salt.len() as u8);
        record.extend_from_slice(&scram.salt);
        record.extend_from_slice(&scram.stored_key);
        record.extend_from_slice(&scram.server_key);
    }
    record
}

pub fn decode(record: &[u8]) -> Result<StoredCredentials, &'static str> {
    let mut reader = RecordReader { rest: record };
    if reader.take(1)? != [RECORD_VERSION] {
        return Err("unknown record version");
    }
    let sha1 = reader.scram(SHA1_BYTES)?;
    let sha256 = reader.scram(SHA256_BYTES)?;
    if !reader.rest.is_empty() {
        return Err("trailing bytes");
    }
    Ok(StoredCredentials { sha1, sha256 })
}

struct RecordReader<'a> {
    rest: &'a [u8],
}

impl<'a> RecordReader<'a> {
    fn take(&mut self, length: usize) -> Result<&'a [u8], &'static str> {
        if self.rest.len() < length {
            return Err("truncated record");
        }
        let (taken, rest) = self.rest.split_at(length);
        self.rest = rest;
        Ok(taken)
    }

    fn scram(&mut self, key_bytes: usize) -> Result<ScramCredentials, &'static str> {
        let iterations = <[u8; 4]>::try_from(self.take(4)?).map_err(|_| "truncated record")?;
        let iterations = u32::from_be_bytes(iterations);
        let salt_length = self.take(1)?[0];
        let salt = self.take(usize::from(salt_length))?.to_vec();
        if salt.is_empty() || iterations == 0 {
            return Err("empty salt or zero iterations");
        }
        Ok(ScramCredentials {
            salt,
            iterations,
            stored_key: self.take(key_bytes)?.to_vec(),
            server_key: self.take(key_bytes)?.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sasl::{Mechanism, SaslServer, SaslStep};

    fn factory() -> AccountFactory {
        AccountFactory::new(SCRAM_ITERATIONS_MIN).unwrap()
    }

    #[test]
    fn usernames_are_normalised() {
        let (username, _) = factory().new_account("Alice", "secret").unwrap();
        assert_eq!(username, "alice");
    }

    #[test]
    fn invalid_usernames_and_passwords_are_rejected() {
        let factory = factory();
        for username in ["", "a@b", "a/b", "a b"] {
            assert!(
                matches!(
                    factory.new_account(username, "pw"),
                    Err(AccountError::InvalidUsername(_))
                ),
                "{username:?}"
            );
        }
        assert!(matches!(
            factory.new_account("alice", ""),
            Err(AccountError::InvalidPassword)
        ));
        assert!(matches!(
            factory.new_account("alice", "a\u{7}b"),
            Err(AccountError::InvalidPassword)
        ));
    }

    #[test]
    fn low_iteration_counts_are_refused() {
        assert!(matches!(
            AccountFactory::new(1000),
            Err(AccountError::IterationsTooLow(1000))
        ));
    }

    #[test]
    fn credentials_verify_the_password_and_use_fresh_salts() {
        let factory = factory();
        let alice = decode(&factory.new_account("alice", "secret").unwrap().1).unwrap();
        let bob = decode(&factory.new_account("bob", "secret").unwrap().1).unwrap();
        assert!(alice.verify_plain("secret"));
        assert!(!alice.verify_plain("Secret"));
        assert_eq!(alice.sha256.salt.len(), SALT_BYTES);
        assert_eq!(alice.sha256.iterations, SCRAM_ITERATIONS_MIN);
        assert_ne!(alice.sha256.salt, bob.sha256.salt);
        assert_ne!(alice.sha1.salt, alice.sha256.salt);
    }

    #[test]
    fn corrupt_records_are_reported_not_panicked_on() {
        let good = factory().new_account("alice", "secret").unwrap().1;
        let mut wrong_version = good.clone();
        wrong_version[0] = 9;
        let mut huge_salt = good.clone();
        huge_salt[5] = u8::MAX;
        for bad in [
            &good[..good.len() - 1],
            &[],
            &wrong_version,
            &huge_salt,
            &[good.as_slice(), &[0]].concat(),
        ] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn record_encoding_round_trips() {
        let credentials = StoredCredentials::derive("pw", &[1; 16], &[2; 16], 5000);
        assert_eq!(decode(&encode(&credentials)), Ok(credentials));
    }

    #[test]
    fn scram_exchange_against_stored_credentials() {
        use crate::sasl::scram::ScramHash;
        use crate::sasl::scram::test_client::client_final;

        let factory = factory();
        let record = factory.new_account("alice", "correct horse").unwrap().1;
        let lookup = |name: &str| (name == "alice").then(|| decode(&record).ok()).flatten();
        for (mechanism, hash) in [
            (Mechanism::ScramSha256, ScramHash::Sha256),
            (Mechanism::ScramSha1, ScramHash::Sha1),
        ] {
            let mut server = SaslServer::new(mechanism, "c2VydmVyIG5vbmNl", b"fake salt key")
                .with_fake_iterations(factory.scram_iterations());
            let SaslStep::Challenge(server_first) =
                server.step(b"n,,n=Alice,r=clientnonce", &lookup)
            else {
                panic!("expected server-first");
            };
            let server_first = String::from_utf8(server_first).unwrap();
            let message = client_final(
                hash,
                "correct horse",
                "n,,",
                "n=Alice,r=clientnonce",
                &server_first,
            );
            assert!(
                matches!(
                    server.step(message.as_bytes(), &lookup),
                    SaslStep::Success { ref username, additional_data: Some(_) } if username == "alice"
                ),
                "{mechanism:?}"
            );
        }
    }
}
