//! Reading a decision log: a file or stdin, plain or gzip (recognized by its magic bytes, not its name), line
//! by line in constant memory, with a progress bar on a terminal.

use flate2::bufread::MultiGzDecoder;
use indicatif::{ProgressBar, ProgressStyle};
use std::fs::File;
use std::io::{self, BufRead, BufReader, IsTerminal, Read};
use std::path::Path;

/// Lines longer than this are skipped (counted as not JSON): egressd's own lines are a few hundred bytes.
pub const MAX_LINE_BYTES: usize = 1 << 20;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// An open log: its name for messages and a line source.
pub struct Input {
    pub name: String,
    pub reader: Box<dyn BufRead>,
    progress: ProgressBar,
}

impl Input {
    /// `None` or `-` reads stdin. A progress bar (by compressed bytes read) is drawn on stderr only for a file
    /// and only when stderr is a terminal.
    pub fn open(path: Option<&Path>) -> Result<Input, String> {
        let path = path.filter(|p| p.as_os_str() != "-");
        let Some(path) = path else {
            if io::stdin().is_terminal() {
                return Err(
                    "no log to read: give a decision log file, or pipe one in (`egressd audit -`)"
                        .to_string(),
                );
            }
            return Ok(Input {
                name: "stdin".to_string(),
                reader: decompress(Box::new(io::stdin().lock()))
                    .map_err(|e| format!("cannot read stdin: {e}"))?,
                progress: ProgressBar::hidden(),
            });
        };
        let name = path.display().to_string();
        let file = File::open(path).map_err(|e| format!("cannot open {name}: {e}"))?;
        let meta = file
            .metadata()
            .map_err(|e| format!("cannot read {name}: {e}"))?;
        if meta.is_dir() {
            return Err(format!(
                "cannot read {name}: it is a directory; give a log file"
            ));
        }
        let progress = if io::stderr().is_terminal() {
            let bar = ProgressBar::new(meta.len());
            if let Ok(style) = ProgressStyle::with_template(
                "{spinner} {bytes}/{total_bytes} {wide_bar} {eta} left",
            ) {
                bar.set_style(style);
            }
            bar
        } else {
            ProgressBar::hidden()
        };
        let counted = progress.wrap_read(file);
        let reader = decompress(Box::new(BufReader::with_capacity(1 << 16, counted)))
            .map_err(|e| format!("cannot read {name}: {e}"))?;
        Ok(Input {
            name,
            reader,
            progress,
        })
    }

    pub fn finish(&self) {
        self.progress.finish_and_clear();
    }
}

/// Wrap `r` in a gzip decoder when it starts with the gzip magic bytes. Concatenated gzip members (appended
/// rotations) are read one after another.
pub fn decompress(mut r: Box<dyn BufRead>) -> io::Result<Box<dyn BufRead>> {
    let head = r.fill_buf()?;
    if head.len() >= 2 && head[..2] == GZIP_MAGIC {
        Ok(Box::new(BufReader::with_capacity(
            1 << 16,
            MultiGzDecoder::new(r),
        )))
    } else if head.len() == 1 && head[0] == GZIP_MAGIC[0] {
        // The first read stopped after one byte: look at one more before deciding.
        let mut first = [0u8; 1];
        r.read_exact(&mut first)?;
        let rest = r.fill_buf()?.first().copied();
        let chained: Box<dyn BufRead> = Box::new(BufReader::new(io::Cursor::new(first).chain(r)));
        if rest == Some(GZIP_MAGIC[1]) {
            Ok(Box::new(BufReader::new(MultiGzDecoder::new(chained))))
        } else {
            Ok(chained)
        }
    } else {
        Ok(r)
    }
}

/// The next line without its `\n` (and `\r`) in `buf`: `Ok(Some(true))` for a line, `Ok(Some(false))` for a line
/// longer than `max` (skipped, `buf` left empty), `Ok(None)` at the end. Memory stays at `max` whatever the input.
pub fn next_line(r: &mut dyn BufRead, buf: &mut Vec<u8>, max: usize) -> io::Result<Option<bool>> {
    buf.clear();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    if r.take(limit).read_until(b'\n', buf)? == 0 {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
    } else if buf.len() > max {
        buf.clear();
        r.skip_until(b'\n')?;
        return Ok(Some(false));
    }
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(Some(true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use std::io::Write;

    fn lines(mut r: Box<dyn BufRead>, max: usize) -> Vec<Option<String>> {
        let mut buf = Vec::new();
        let mut out = Vec::new();
        while let Some(ok) = next_line(&mut *r, &mut buf, max).unwrap() {
            out.push(ok.then(|| String::from_utf8_lossy(&buf).into_owned()));
        }
        out
    }

    #[test]
    fn lines_are_split_and_overlong_ones_skipped() {
        let text = "a\r\n\nbbbbbbbbbb\ncc";
        let got = lines(Box::new(BufReader::with_capacity(3, text.as_bytes())), 4);
        assert_eq!(
            got,
            vec![Some("a".into()), Some("".into()), None, Some("cc".into())]
        );
    }

    #[test]
    fn gzip_is_recognized_by_magic_bytes() {
        let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"one\ntwo\n").unwrap();
        let mut data = gz.finish().unwrap();
        // A second member, as when a rotated file is appended to.
        let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"three\n").unwrap();
        data.extend(gz.finish().unwrap());
        let r = decompress(Box::new(BufReader::new(io::Cursor::new(data.clone())))).unwrap();
        assert_eq!(
            lines(r, 100),
            vec![Some("one".into()), Some("two".into()), Some("three".into())]
        );
        // Even when the first read returns a single byte.
        let r = decompress(Box::new(BufReader::with_capacity(1, io::Cursor::new(data)))).unwrap();
        assert_eq!(lines(r, 100).len(), 3);
        let r = decompress(Box::new(BufReader::new(&b"plain\n"[..]))).unwrap();
        assert_eq!(lines(r, 100), vec![Some("plain".into())]);
        let r = decompress(Box::new(BufReader::with_capacity(1, &b"\x1fx\n"[..]))).unwrap();
        assert_eq!(lines(r, 100), vec![Some("\u{1f}x".into())]);
    }

    #[test]
    fn missing_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.log");
        let e = Input::open(Some(&missing)).err().unwrap();
        assert!(e.contains("cannot open") && e.contains("nope.log"), "{e}");
        let e = Input::open(Some(dir.path())).err().unwrap();
        assert!(e.contains("directory"), "{e}");
    }
}
