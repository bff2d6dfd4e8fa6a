//! The durable account store: one redb table from username to SCRAM
//! verifiers.
//!
//! An account is its normalised username (the nodeprep'd, hence lower-case,
//! JID localpart — the same form [`crate::sasl`] looks up) and the
//! [`StoredCredentials`] derived from its password with fresh random salts.
//! The password itself is never stored. Every change is committed with redb's
//! default `Durability::Immediate`, i.e. fsync'd before the call returns, so an
//! account the operator was told exists survives a crash.

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use ring::rand::{SecureRandom, SystemRandom};

use crate::sasl::{ScramCredentials, StoredCredentials, normalize_username, password_is_valid};

/// Username (normalised localpart) → encoded [`StoredCredentials`].
const ACCOUNTS: TableDefinition<&str, &[u8]> = TableDefinition::new("accounts");

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
    #[error("account {0:?} already exists")]
    Exists(String),
    #[error("SCRAM iteration count {0} is below the {SCRAM_ITERATIONS_MIN} RFC 7677 asks for")]
    IterationsTooLow(u32),
    #[error("the system random number generator failed")]
    Randomness,
    #[error("corrupt account record for {username:?}: {reason}")]
    Corrupt {
        username: String,
        reason: &'static str,
    },
    #[error("account database: {0}")]
    Storage(#[from] redb::Error),
}

/// Converts any of redb's per-operation errors.
fn storage(error: impl Into<redb::Error>) -> AccountError {
    AccountError::Storage(error.into())
}

/// A handle on the account database; clones share it.
#[derive(Clone)]
pub struct AccountStore {
    inner: Arc<StoreInner>,
}

struct StoreInner {
    database: Database,
    scram_iterations: u32,
    random: SystemRandom,
}

impl AccountStore {
    /// Opens (creating if needed) the database at `path`. New passwords are
    /// hashed with `scram_iterations` PBKDF2 iterations.
    pub fn open(path: &Path, scram_iterations: u32) -> Result<Self, AccountError> {
        if scram_iterations < SCRAM_ITERATIONS_MIN {
            return Err(AccountError::IterationsTooLow(scram_iterations));
        }
        let database = Database::create(path).map_err(storage)?;
        // Create the table up front so readers never meet a missing table.
        let transaction = database.begin_write().map_err(storage)?;
        transaction.open_table(ACCOUNTS).map_err(storage)?;
        transaction.commit().map_err(storage)?;
        Ok(AccountStore {
            inner: Arc::new(StoreInner {
                database,
                scram_iterations,
                random: SystemRandom::new(),
            }),
        })
    }

    /// The iteration count new accounts get; SASL must announce the same
    /// count for unknown users (`SaslServer::with_fake_iterations`).
    pub fn scram_iterations(&self) -> u32 {
        self.inner.scram_iterations
    }

    /// Creates an account. `AccountError::Exists` if the (normalised) name is taken.
    pub fn add(&self, username: &str, password: &str) -> Result<(), AccountError> {
        let username = account_key(username)?;
        if !password_is_valid(password) {
            return Err(AccountError::InvalidPassword);
        }
        let salt_sha1 = self.salt()?;
        let salt_sha256 = self.salt()?;
        // PBKDF2 runs before the write transaction so that the database's
        // single writer is not held for the duration of the hashing.
        let credentials = StoredCredentials::derive(
            password,
            &salt_sha1,
            &salt_sha256,
            self.inner.scram_iterations,
        );
        let transaction = self.inner.database.begin_write().map_err(storage)?;
        {
            let mut table = transaction.open_table(ACCOUNTS).map_err(storage)?;
            if table.get(username.as_str()).map_err(storage)?.is_some() {
                return Err(AccountError::Exists(username));
            }
            table
                .insert(username.as_str(), encode(&credentials).as_slice())
                .map_err(storage)?;
        }
        // Default durability is `Immediate`: commit returns after fsync.
        transaction.commit().map_err(storage)
    }

    /// Deletes an account; `false` if there was none.
    pub fn remove(&self, username: &str) -> Result<bool, AccountError> {
        let username = account_key(username)?;
        let transaction = self.inner.database.begin_write().map_err(storage)?;
        let removed = {
            let mut table = transaction.open_table(ACCOUNTS).map_err(storage)?;
            table.remove(username.as_str()).map_err(storage)?.is_some()
        };
        transaction.commit().map_err(storage)?;
        Ok(removed)
    }

    /// All usernames, sorted (redb keeps `&str` keys in byte order, which for
    /// UTF-8 is code point order).
    pub fn list(&self) -> Result<Vec<String>, AccountError> {
        let transaction = self.inner.database.begin_read().map_err(storage)?;
        let table = transaction.open_table(ACCOUNTS).map_err(storage)?;
        table
            .iter()
            .map_err(storage)?
            .map(|entry| {
                entry
                    .map(|(key, _)| key.value().to_owned())
                    .map_err(storage)
            })
            .collect()
    }

    /// The stored verifiers of an account, `None` if it does not exist or the
    /// name cannot be a username at all (so SASL lookups need no special case).
    pub fn credentials(&self, username: &str) -> Result<Option<StoredCredentials>, AccountError> {
        let Some(username) = normalize_username(username) else {
            return Ok(None);
        };
        let transaction = self.inner.database.begin_read().map_err(storage)?;
        let table = transaction.open_table(ACCOUNTS).map_err(storage)?;
        let Some(record) = table.get(username.as_str()).map_err(storage)? else {
            return Ok(None);
        };
        decode(record.value())
            .map(Some)
            .map_err(|reason| AccountError::Corrupt { username, reason })
    }

    fn salt(&self) -> Result<[u8; SALT_BYTES], AccountError> {
        let mut salt = [0; SALT_BYTES];
        self.inner
            .random
            .fill(&mut salt)
            .map_err(|_| AccountError::Randomness)?;
        Ok(salt)
    }
}

/// The normalised table key for a username given by an operator.
fn account_key(username: &str) -> Result<String, AccountError> {
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

fn encode(credentials: &StoredCredentials) -> Vec<u8> {
    let mut record = vec![RECORD_VERSION];
    for scram in [&credentials.sha1, &credentials.sha256] {
        record.extend_from_slice(&scram.iterations.to_be_bytes());
        // Salts come from `AccountStore::salt`, far below 256 bytes.
        debug_assert!(scram.salt.len() <= usize::from(u8::MAX));
        record.push(scram.salt.len() as u8);
        record.extend_from_slice(&scram.salt);
        record.extend_from_slice(&scram.stored_key);
        record.extend_from_slice(&scram.server_key);
    }
    record
}

fn decode(record: &[u8]) -> Result<StoredCredentials, &'static str> {
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

    const ITERATIONS: u32 = SCRAM_ITERATIONS_MIN;

    fn open(directory: &tempfile::TempDir) -> AccountStore {
        AccountStore::open(&directory.path().join("accounts.redb"), ITERATIONS).unwrap()
    }

    #[test]
    fn add_list_remove() {
        let directory = tempfile::tempdir().unwrap();
        let store = open(&directory);
        store.add("bob", "secret").unwrap();
        store.add("Alice", "secret").unwrap();
        assert_eq!(store.list().unwrap(), ["alice", "bob"]);
        assert!(store.remove("ALICE").unwrap());
        assert!(!store.remove("alice").unwrap());
        assert_eq!(store.list().unwrap(), ["bob"]);
        assert_eq!(store.credentials("alice").unwrap(), None);
    }

    #[test]
    fn accounts_survive_reopening() {
        let directory = tempfile::tempdir().unwrap();
        let store = open(&directory);
        store.add("alice", "secret").unwrap();
        let before = store.credentials("alice").unwrap();
        drop(store);
        let store = open(&directory);
        assert_eq!(store.list().unwrap(), ["alice"]);
        assert_eq!(store.credentials("alice").unwrap(), before);
    }

    #[test]
    fn duplicate_add_is_exists_even_in_another_case() {
        let directory = tempfile::tempdir().unwrap();
        let store = open(&directory);
        store.add("alice", "one").unwrap();
        assert!(matches!(
            store.add("ALICE", "two"),
            Err(AccountError::Exists(name)) if name == "alice"
        ));
        assert!(
            store
                .credentials("alice")
                .unwrap()
                .unwrap()
                .verify_plain("one")
        );
    }

    #[test]
    fn invalid_usernames_and_passwords_are_rejected() {
        let directory = tempfile::tempdir().unwrap();
        let store = open(&directory);
        for username in ["", "a@b", "a/b", "a b"] {
            assert!(
                matches!(
                    store.add(username, "pw"),
                    Err(AccountError::InvalidUsername(_))
                ),
                "{username:?}"
            );
        }
        assert!(matches!(
            store.add("alice", ""),
            Err(AccountError::InvalidPassword)
        ));
        assert!(matches!(
            store.add("alice", "a\u{7}b"),
            Err(AccountError::InvalidPassword)
        ));
        assert!(store.list().unwrap().is_empty());
    }

    #[test]
    fn low_iteration_counts_are_refused() {
        let directory = tempfile::tempdir().unwrap();
        assert!(matches!(
            AccountStore::open(&directory.path().join("a.redb"), 1000),
            Err(AccountError::IterationsTooLow(1000))
        ));
    }

    #[test]
    fn stored_credentials_verify_the_password_and_use_fresh_salts() {
        let directory = tempfile::tempdir().unwrap();
        let store = open(&directory);
        store.add("alice", "secret").unwrap();
        store.add("bob", "secret").unwrap();
        let alice = store.credentials("Alice").unwrap().unwrap();
        let bob = store.credentials("bob").unwrap().unwrap();
        assert!(alice.verify_plain("secret"));
        assert!(!alice.verify_plain("Secret"));
        assert_eq!(alice.sha256.salt.len(), SALT_BYTES);
        assert_eq!(alice.sha256.iterations, ITERATIONS);
        assert_ne!(alice.sha256.salt, bob.sha256.salt);
        assert_ne!(alice.sha1.salt, alice.sha256.salt);
    }

    #[test]
    fn corrupt_records_are_reported_not_panicked_on() {
        let directory = tempfile::tempdir().unwrap();
        let store = open(&directory);
        store.add("alice", "secret").unwrap();
        let good = encode(&store.credentials("alice").unwrap().unwrap());
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
            let transaction = store.inner.database.begin_write().unwrap();
            transaction
                .open_table(ACCOUNTS)
                .unwrap()
                .insert("alice", bad)
                .unwrap();
            transaction.commit().unwrap();
            assert!(matches!(
                store.credentials("alice"),
                Err(AccountError::Corrupt { username, .. }) if username == "alice"
            ));
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

        let directory = tempfile::tempdir().unwrap();
        let store = open(&directory);
        store.add("alice", "correct horse").unwrap();
        let lookup = |name: &str| store.credentials(name).ok().flatten();
        for (mechanism, hash) in [
            (Mechanism::ScramSha256, ScramHash::Sha256),
            (Mechanism::ScramSha1, ScramHash::Sha1),
        ] {
            let mut server = SaslServer::new(mechanism, "c2VydmVyIG5vbmNl", b"fake salt key")
                .with_fake_iterations(store.scram_iterations());
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
