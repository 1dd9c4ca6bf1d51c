//! Log lines written in batches by a thread of their own, so a busy proxy makes one write per batch instead
//! of one per line (and wakes whatever reads its stdout once per batch). A line is written at most
//! [`FLUSH_DELAY`] after it was made; [`BatchWriter::flush`] writes everything pending at once (shutdown).
//! When the output cannot keep up, callers wait for it rather than lines being dropped.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// How long the writer collects lines after the first one of a batch arrives.
pub const FLUSH_DELAY: Duration = Duration::from_millis(5);
/// Pending bytes past which callers wait for the writer (back-pressure, never loss).
const HIGH_WATER: usize = 1 << 20;

struct Pending {
    buf: Vec<u8>,
}

struct Shared {
    pending: Mutex<Pending>,
    /// Signalled when the first line of a batch arrives, and when a batch was taken.
    changed: Condvar,
    /// Taken while a batch is taken and written, so batches reach the output in order.
    out: Mutex<Box<dyn Write + Send>>,
}

impl Shared {
    /// Take what is pending and write it.
    fn write_pending(&self) {
        let Ok(mut out) = self.out.lock() else {
            return;
        };
        let batch = match self.pending.lock() {
            Ok(mut p) => std::mem::take(&mut p.buf),
            Err(_) => return,
        };
        self.changed.notify_all();
        if !batch.is_empty() {
            // A failed log write must not take the proxy down; there is nowhere better to report it.
            let _ = out.write_all(&batch);
            let _ = out.flush();
        }
    }
}

#[derive(Clone)]
pub struct BatchWriter {
    shared: Arc<Shared>,
}

impl BatchWriter {
    /// Start the writer thread for `out`. The thread lives as long as the process.
    pub fn start(out: Box<dyn Write + Send>) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending { buf: Vec::new() }),
            changed: Condvar::new(),
            out: Mutex::new(out),
        });
        let worker = shared.clone();
        std::thread::Builder::new()
            .name("egressd-log".into())
            .spawn(move || loop {
                {
                    let Ok(mut p) = worker.pending.lock() else {
                        return;
                    };
                    while p.buf.is_empty() {
                        p = match worker.changed.wait(p) {
                            Ok(p) => p,
                            Err(_) => return,
                        };
                    }
                }
                std::thread::sleep(FLUSH_DELAY);
                worker.write_pending();
            })?;
        Ok(BatchWriter { shared })
    }

    /// Queue one complete line (with its newline).
    pub fn append(&self, line: &[u8]) {
        let Ok(mut p) = self.shared.pending.lock() else {
            return;
        };
        while p.buf.len() >= HIGH_WATER {
            p = match self.shared.changed.wait(p) {
                Ok(p) => p,
                Err(_) => return,
            };
        }
        let first = p.buf.is_empty();
        p.buf.extend_from_slice(line);
        drop(p);
        if first {
            self.shared.changed.notify_all();
        }
    }

    /// Write everything queued so far, now.
    pub fn flush(&self) {
        self.shared.write_pending();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<Vec<u8>>>>);

    impl Write for Recorder {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().push(b.to_vec());
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_arrive_in_order_in_few_writes() {
        let rec = Recorder::default();
        let w = BatchWriter::start(Box::new(rec.clone())).unwrap();
        let lines: Vec<String> = (0..1000).map(|i| format!("line {i}\n")).collect();
        for l in &lines {
            w.append(l.as_bytes());
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let want = lines.concat().into_bytes();
        loop {
            let got = rec.0.lock().unwrap().concat();
            if got == want {
                break;
            }
            assert!(Instant::now() < deadline, "lines missing or out of order");
            std::thread::sleep(Duration::from_millis(5));
        }
        let writes = rec.0.lock().unwrap().len();
        assert!(writes < 100, "{writes} writes for 1000 lines");
    }

    #[test]
    fn flush_writes_everything_pending_at_once() {
        let rec = Recorder::default();
        let w = BatchWriter::start(Box::new(rec.clone())).unwrap();
        w.append(b"a\n");
        w.append(b"b\n");
        w.flush();
        assert_eq!(rec.0.lock().unwrap().concat(), b"a\nb\n");
    }

    #[test]
    fn a_full_queue_makes_callers_wait_not_lose_lines() {
        let rec = Recorder::default();
        let w = BatchWriter::start(Box::new(rec.clone())).unwrap();
        let line = vec![b'x'; 64 * 1024];
        // 4 MiB through a 1 MiB queue.
        for _ in 0..64 {
            w.append(&line);
        }
        w.flush();
        let total: usize = rec.0.lock().unwrap().iter().map(Vec::len).sum();
        assert_eq!(total, 64 * line.len());
    }
}
