//! The log's writer: one thread that does all of the log's disk I/O, in
//! the order it was asked for.
//!
//! openraft's contract for `append` is to return as soon as the entries
//! can be read and to report their durability through a callback, so that
//! the Raft core is never held up by a disk: a leader sends an append to
//! its followers while its own copy is being synced, and the commit waits
//! for the slower of the two instead of both in turn (Raft thesis
//! §10.2.1). Awaiting the sync inside `append`, as the store did, put the
//! leader's `fdatasync` before every replication round.
//!
//! One thread keeps the writes in order, which the log's files require
//! (each append continues the last), and the other jobs in order with
//! them: a truncation or purge, a vote, and a read that missed
//! [`RecentEntries`](crate::recent_entries::RecentEntries) all find the
//! appends made before them written. Appends that queue up while the
//! thread syncs are written together, with one `pwrite` and one
//! `fdatasync` (group commit), and their callbacks fire in order once the
//! sync has returned.
//!
//! The appends waiting for the thread are bounded in bytes: beyond the
//! bound `append` waits for the writer, as every append did before it had
//! a thread of its own. A follower whose disk falls behind its leader then
//! slows the leader's stream to it (openraft reads the next append only
//! once this one is queued) instead of queueing in memory without end.
//!
//! A write that fails leaves the end of the log unknown, so every later
//! append is refused with the same error: openraft stops the node on the
//! first one, and a restart recovers the files.

use std::io;
use std::sync::Arc;
use std::sync::mpsc;

use openraft::storage::IOFlushed;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::log_files::EntryRecord;
use crate::types::MeshTypes;

/// The thread's name, as `top -H` and profiles show it.
const THREAD_NAME: &str = "vomesh-log";

/// Entries to write at the end of the log.
pub(crate) struct Append {
    pub(crate) records: Vec<EntryRecord>,
    pub(crate) flushed: IOFlushed<MeshTypes>,
}

/// What the writer does with the store it writes for.
pub(crate) trait Store: Send + Sync + 'static {
    /// Writes `records` (several appends, in order) and syncs them.
    fn write(&self, records: &[EntryRecord]) -> io::Result<()>;
    /// The entries up to `index` are on disk.
    fn written_upto(&self, index: u64);
}

type Task<S> = Box<dyn FnOnce(&S) + Send>;

/// An append with its share of the unwritten bytes, given back once it
/// is written.
type Queued = (Append, OwnedSemaphorePermit);

enum Job<S> {
    Append(Queued),
    Task(Task<S>),
}

/// Sends jobs to the writer thread, which ends once every clone is dropped
/// and the jobs sent are done.
pub(crate) struct LogWriter<S> {
    jobs: mpsc::Sender<Job<S>>,
    /// A permit per byte of appends queued and not yet written.
    unwritten: Arc<Semaphore>,
    unwritten_bytes_max: usize,
}

impl<S> Clone for LogWriter<S> {
    fn clone(&self) -> Self {
        Self {
            jobs: self.jobs.clone(),
            unwritten: self.unwritten.clone(),
            unwritten_bytes_max: self.unwritten_bytes_max,
        }
    }
}

impl<S: Store> LogWriter<S> {
    /// Starts the thread; at most `unwritten_bytes_max` bytes of appends
    /// wait for it (an append larger than that waits until it is alone).
    pub(crate) fn start(store: Arc<S>, unwritten_bytes_max: usize) -> io::Result<Self> {
        let (jobs, queue) = mpsc::channel();
        std::thread::Builder::new()
            .name(THREAD_NAME.into())
            .spawn(move || run(&*store, &queue))?;
        Ok(Self {
            jobs,
            unwritten: Arc::new(Semaphore::new(unwritten_bytes_max)),
            unwritten_bytes_max,
        })
    }

    /// Queues `append` once the bytes waiting leave room for it; its
    /// callback fires once it is synced.
    pub(crate) async fn append(&self, append: Append) -> io::Result<()> {
        let bytes: usize = append.records.iter().map(|r| r.bytes.len()).sum();
        let share = u32::try_from(bytes.min(self.unwritten_bytes_max)).unwrap_or(u32::MAX);
        let Ok(permit) = self.unwritten.clone().acquire_many_owned(share).await else {
            append.flushed.io_completed(Err(stopped()));
            return Err(stopped());
        };
        self.jobs
            .send(Job::Append((append, permit)))
            .map_err(|refused| {
                if let Job::Append((append, _)) = refused.0 {
                    append.flushed.io_completed(Err(stopped()));
                }
                stopped()
            })
    }

    /// Runs `task` on the writer thread once the jobs queued before it are
    /// done.
    pub(crate) async fn run<T, F>(&self, task: F) -> io::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&S) -> io::Result<T> + Send + 'static,
    {
        let (done, result) = tokio::sync::oneshot::channel();
        let task: Task<S> = Box::new(move |store| {
            // The caller may have stopped waiting; the work is done anyway.
            let _ = done.send(task(store));
        });
        self.jobs.send(Job::Task(task)).map_err(|_| stopped())?;
        result.await.map_err(|_| stopped())?
    }
}

fn stopped() -> io::Error {
    io::Error::other("the log's writer thread has stopped")
}

/// The thread: each turn takes the next job and, if it is an append, every
/// append queued behind it.
fn run<S: Store>(store: &S, queue: &mpsc::Receiver<Job<S>>) {
    let mut failure: Option<(io::ErrorKind, String)> = None;
    let mut next = queue.recv().ok();
    while let Some(job) = next.take() {
        match job {
            Job::Task(task) => task(store),
            Job::Append(first) => {
                let mut appends = vec![first];
                loop {
                    match queue.try_recv() {
                        Ok(Job::Append(append)) => appends.push(append),
                        Ok(task) => {
                            next = Some(task);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                write(store, appends, &mut failure);
            }
        }
        if next.is_none() {
            next = queue.recv().ok();
        }
    }
}

/// Writes and syncs `appends` as one, then reports each (and gives their
/// bytes back).
fn write<S: Store>(
    store: &S,
    mut appends: Vec<Queued>,
    failure: &mut Option<(io::ErrorKind, String)>,
) {
    if failure.is_none() {
        let records: Vec<EntryRecord> = appends
            .iter_mut()
            .flat_map(|(append, _)| std::mem::take(&mut append.records))
            .collect();
        match store.write(&records) {
            Ok(()) => {
                if let Some(last) = records.last() {
                    store.written_upto(last.index);
                }
            }
            Err(error) => {
                tracing::error!(%error, "mesh: a log write failed; later appends are refused");
                *failure = Some((error.kind(), error.to_string()));
            }
        }
    }
    for (append, _share) in appends {
        let result = match failure {
            None => Ok(()),
            Some((kind, message)) => Err(io::Error::new(*kind, message.clone())),
        };
        append.flushed.io_completed(result);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use openraft::type_config::TypeConfigExt;

    use super::*;

    /// Records what it is asked to write; fails from the `fail_at`-th write.
    #[derive(Default)]
    struct Recorder {
        writes: Mutex<Vec<Vec<u64>>>,
        written: Mutex<Vec<u64>>,
        /// Until set, a write waits: keeps the thread in its first write.
        released: AtomicBool,
        fail_at: Option<usize>,
    }

    impl Store for Recorder {
        fn write(&self, records: &[EntryRecord]) -> io::Result<()> {
            let count = {
                let mut writes = self.writes.lock().unwrap();
                writes.push(records.iter().map(|r| r.index).collect());
                writes.len()
            };
            while !self.released.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(1));
            }
            match self.fail_at {
                Some(at) if count >= at => Err(io::Error::other("disk gone")),
                _ => Ok(()),
            }
        }

        fn written_upto(&self, index: u64) {
            self.written.lock().unwrap().push(index);
        }
    }

    fn append(index: u64) -> (Append, impl Future<Output = io::Result<()>>) {
        let (sender, done) = MeshTypes::oneshot();
        let flushed = IOFlushed::signal(sender);
        let records = vec![EntryRecord {
            index,
            bytes: vec![0; 8],
        }];
        let done = async move { done.await.unwrap_or_else(|_| Err(stopped())) };
        (Append { records, flushed }, done)
    }

    #[tokio::test]
    async fn appends_queued_behind_a_sync_are_written_together_in_order() {
        let store = Arc::new(Recorder::default());
        let writer = LogWriter::start(store.clone(), 1 << 20).unwrap();
        let (first, first_done) = append(1);
        writer.append(first).await.unwrap();
        // The thread is now held in the write of 1; 2, 3 and 4 queue.
        while store.writes.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let mut waiting = Vec::new();
        for index in 2..=4 {
            let (next, done) = append(index);
            writer.append(next).await.unwrap();
            waiting.push(done);
        }
        let read = writer.run(|store: &Recorder| Ok(store.written.lock().unwrap().clone()));
        store.released.store(true, Ordering::Release);
        first_done.await.unwrap();
        for done in waiting {
            done.await.unwrap();
        }
        // The task queued after the appends saw them written.
        assert_eq!(read.await.unwrap(), vec![1, 4]);
        assert_eq!(*store.writes.lock().unwrap(), vec![vec![1], vec![2, 3, 4]]);
    }

    #[tokio::test]
    async fn an_append_waits_while_the_bytes_unwritten_are_at_the_bound() {
        let store = Arc::new(Recorder::default());
        // Room for two 8-byte appends.
        let writer = LogWriter::start(store.clone(), 16).unwrap();
        let (first, _) = append(1);
        writer.append(first).await.unwrap();
        let (second, _) = append(2);
        writer.append(second).await.unwrap();
        let (third, third_done) = append(3);
        let queued = writer.append(third);
        tokio::pin!(queued);
        let waited = tokio::time::timeout(Duration::from_millis(100), &mut queued).await;
        assert!(waited.is_err(), "16 bytes unwritten: the third waits");
        store.released.store(true, Ordering::Release);
        queued.await.unwrap();
        third_done.await.unwrap();
        assert_eq!(*store.written.lock().unwrap().last().unwrap(), 3);
    }

    #[tokio::test]
    async fn after_a_failed_write_every_later_append_is_refused() {
        let store = Arc::new(Recorder {
            fail_at: Some(2),
            released: AtomicBool::new(true),
            ..Recorder::default()
        });
        let writer = LogWriter::start(store.clone(), 1 << 20).unwrap();
        for (index, expected) in [(1, true), (2, false), (3, false)] {
            let (next, done) = append(index);
            writer.append(next).await.unwrap();
            let result = done.await;
            assert_eq!(result.is_ok(), expected, "append {index}: {result:?}");
        }
        assert_eq!(store.writes.lock().unwrap().len(), 2, "3 was not written");
        assert_eq!(*store.written.lock().unwrap(), vec![1]);
        // Other jobs still run (reads, the meta).
        assert_eq!(writer.run(|_: &Recorder| Ok(7)).await.unwrap(), 7);
    }
}
