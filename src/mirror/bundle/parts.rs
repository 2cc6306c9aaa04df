//! Bundles in parts (`--split SIZE`), for removable media and one-way transfer systems:
//! `FILE.part-0001`, `FILE.part-0002`, … and `FILE.SHA256SUMS` in `sha256sum` format, so the
//! receiving side can run `sha256sum -c FILE.SHA256SUMS` with or without kprov.
//!
//! The parts are never concatenated: [`PartReader`] reads the sequence as one tar (the import
//! reads entries by byte range), and [`Parts::segments`] maps a byte range onto the parts it
//! spans for the concurrent blob streams. An unsplit bundle is the one-part case, so every
//! reader goes through here.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::mirror::MirrorError;

/// Suffix of the checksum manifest next to the parts.
pub const SUMS_SUFFIX: &str = ".SHA256SUMS";

/// `BASE.part-NNNN` (numbered from 1, four digits so they sort by name).
pub fn part_path(base: &Path, n: usize) -> PathBuf {
    PathBuf::from(format!("{}.part-{n:04}", base.display()))
}

/// `BASE.SHA256SUMS`.
pub fn sums_path(base: &Path) -> PathBuf {
    PathBuf::from(format!("{}{SUMS_SUFFIX}", base.display()))
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

fn part_error(part: &Path, problem: impl Into<String>) -> MirrorError {
    MirrorError::BundlePart {
        part: part.display().to_string(),
        problem: problem.into(),
    }
}

/// Parse a `sha256sum` manifest: `HEX  NAME` (or `HEX *NAME`, binary mode) a line. A bad line
/// is named with its number: a manifest cut short in transfer must not pass for a shorter
/// bundle.
pub fn parse_sums(sums: &Path, text: &str) -> Result<Vec<(String, String)>, MirrorError> {
    let fix = format!("fix: copy {} again", file_name(sums));
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let parsed = line.split_once(' ').and_then(|(hex, rest)| {
            let name = rest.strip_prefix(' ').or_else(|| rest.strip_prefix('*'))?;
            let ok = hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit());
            (ok && !name.is_empty()).then(|| (hex.to_ascii_lowercase(), name.to_string()))
        });
        match parsed {
            Some(p) => out.push(p),
            None => {
                return Err(part_error(
                    sums,
                    format!(
                        "line {}: {line:?} is not `SHA256  NAME` (64 hex digits, two spaces, the part's name); {fix}",
                        i + 1
                    ),
                ))
            }
        }
    }
    if out.is_empty() {
        return Err(part_error(sums, format!("lists no parts; {fix}")));
    }
    Ok(out)
}

/// One file of a bundle and where its bytes sit in the whole.
#[derive(Debug, Clone)]
pub struct Part {
    /// The file.
    pub path: PathBuf,
    /// Offset of its first byte in the bundle.
    pub start: u64,
    /// Its size.
    pub size: u64,
    /// Expected SHA-256 (hex), for parts of a split bundle.
    pub sha256: Option<String>,
}

/// The files a bundle is stored in: one (a whole bundle) or numbered parts.
#[derive(Debug, Clone)]
pub struct Parts {
    /// The bundle's name in messages: the file, or the parts' base name.
    pub name: PathBuf,
    /// The files in order.
    pub parts: Vec<Part>,
    /// The checksum manifest of a split bundle.
    pub sums: Option<PathBuf>,
}

impl Parts {
    /// Find the bundle `path` names: a whole bundle, or (given the base name, the
    /// `.SHA256SUMS` file or a part) the parts listed in `BASE.SHA256SUMS`. Checks that every
    /// listed part is there and no unlisted one is (a truncated manifest), not their content
    /// ([`Parts::verify_checksums`]).
    pub fn locate(path: &Path) -> Result<Parts, MirrorError> {
        let s = path.display().to_string();
        let base = if let Some(b) = s.strip_suffix(SUMS_SUFFIX) {
            Some(PathBuf::from(b))
        } else if let Some((b, n)) = s.rsplit_once(".part-") {
            (n.len() >= 4 && n.bytes().all(|c| c.is_ascii_digit())).then(|| PathBuf::from(b))
        } else {
            None
        };
        let base = match base {
            Some(b) => b,
            None if path.is_file() => {
                let size = std::fs::metadata(path)
                    .map_err(|e| MirrorError::io(path.display(), e))?
                    .len();
                return Ok(Parts {
                    name: path.to_path_buf(),
                    parts: vec![Part {
                        path: path.to_path_buf(),
                        start: 0,
                        size,
                        sha256: None,
                    }],
                    sums: None,
                });
            }
            None if sums_path(path).exists() || part_path(path, 1).exists() => path.to_path_buf(),
            None => {
                // The OS's own words ("No such file or directory"), as for any other file.
                let e = std::fs::metadata(path)
                    .err()
                    .unwrap_or_else(|| std::io::ErrorKind::NotFound.into());
                return Err(MirrorError::io(path.display(), e));
            }
        };
        Parts::split(&base)
    }

    /// The parts of split bundle `base`, as `BASE.SHA256SUMS` lists them.
    fn split(base: &Path) -> Result<Parts, MirrorError> {
        let sums = sums_path(base);
        let text = match std::fs::read_to_string(&sums) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(part_error(
                &sums,
                "is missing; fix: copy it next to the parts (it lists them and their checksums)",
            )),
            Err(e) => return Err(MirrorError::io(sums.display(), e)),
        };
        let listed = parse_sums(&sums, &text)?;
        let mut parts = Vec::new();
        let mut start = 0;
        for (i, (hex, name)) in listed.into_iter().enumerate() {
            let path = part_path(base, i + 1);
            if name != file_name(&path) {
                return Err(part_error(
                    &sums,
                    format!(
                        "line {}: names {name:?}, expected {:?} (parts are numbered from 1 in order); fix: copy {} again",
                        i + 1,
                        file_name(&path),
                        file_name(&sums)
                    ),
                ));
            }
            let size = match std::fs::metadata(&path) {
                Ok(m) => m.len(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(part_error(
                        &path,
                        "is missing; fix: copy it next to the others",
                    ))
                }
                Err(e) => return Err(MirrorError::io(path.display(), e)),
            };
            parts.push(Part {
                path,
                start,
                size,
                sha256: Some(hex),
            });
            start += size;
        }
        let next = part_path(base, parts.len() + 1);
        if next.exists() {
            return Err(part_error(
                &next,
                format!(
                    "is not listed in {} (the list looks cut short); fix: copy {} again",
                    file_name(&sums),
                    file_name(&sums)
                ),
            ));
        }
        Ok(Parts {
            name: base.to_path_buf(),
            parts,
            sums: Some(sums),
        })
    }

    /// Is this a split bundle?
    pub fn is_split(&self) -> bool {
        self.sums.is_some()
    }

    /// Size of the whole bundle.
    pub fn total(&self) -> u64 {
        self.parts.iter().map(|p| p.size).sum()
    }

    /// Hash every part and compare with `SHA256SUMS` (nothing to do for a whole bundle): run
    /// before anything is loaded, so a bad copy is named as a part, not as some entry later.
    pub fn verify_checksums(&self) -> Result<(), MirrorError> {
        for p in &self.parts {
            let Some(expected) = &p.sha256 else { continue };
            let actual = sha256_file(&p.path)?;
            if &actual != expected {
                return Err(part_error(
                    &p.path,
                    format!(
                        "is corrupt (sha256 {actual}, expected {expected}); fix: copy it again"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// A reader over the whole bundle.
    pub fn reader(&self) -> PartReader {
        PartReader {
            parts: self.parts.clone(),
            pos: 0,
            open: None,
        }
    }

    /// The pieces `(file, offset in it, length)` holding bytes `offset..offset+len`.
    pub fn segments(&self, offset: u64, len: u64) -> Vec<(PathBuf, u64, u64)> {
        let end = offset + len;
        self.parts
            .iter()
            .filter(|p| p.start < end && offset < p.start + p.size)
            .map(|p| {
                let from = offset.max(p.start);
                let to = end.min(p.start + p.size);
                (p.path.clone(), from - p.start, to - from)
            })
            .collect()
    }
}

/// SHA-256 (hex) of a file's content.
pub fn sha256_file(path: &Path) -> Result<String, MirrorError> {
    let mut f = File::open(path).map_err(|e| MirrorError::io(path.display(), e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| MirrorError::io(path.display(), e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Reads the parts as one stream (and seeks in it), opening each file as it is reached.
#[derive(Debug)]
pub struct PartReader {
    parts: Vec<Part>,
    pos: u64,
    /// The open part: (index, file, position in that file).
    open: Option<(usize, File, u64)>,
}

impl Read for PartReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let Some(i) = self
            .parts
            .iter()
            .position(|p| p.start <= self.pos && self.pos < p.start + p.size)
        else {
            return Ok(0);
        };
        let part = &self.parts[i];
        let within = self.pos - part.start;
        let reuse = matches!(&self.open, Some((j, _, at)) if *j == i && *at == within);
        if !reuse {
            let mut f = File::open(&part.path)?;
            f.seek(SeekFrom::Start(within))?;
            self.open = Some((i, f, within));
        }
        let (_, f, at) = self.open.as_mut().expect("opened above");
        let want = buf.len().min((part.size - within) as usize);
        let n = f.read(&mut buf[..want])?;
        if n == 0 && want > 0 {
            // The part is shorter than when it was measured.
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("{} ended early", part.path.display()),
            ));
        }
        *at += n as u64;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for PartReader {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let total: u64 = self.parts.iter().map(|p| p.size).sum();
        let new = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => total.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = new.ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before the start")
        })?;
        Ok(self.pos)
    }
}

/// Writes a stream into parts of at most `part_size` bytes, hashing each; [`SplitWriter::finish`]
/// writes `BASE.SHA256SUMS` last, so its presence means every part is complete.
#[derive(Debug)]
pub struct SplitWriter {
    base: PathBuf,
    part_size: u64,
    /// The part being written: (file, bytes in it, hash so far).
    current: Option<(std::io::BufWriter<File>, u64, Sha256)>,
    done: Vec<(String, PathBuf)>,
}

impl SplitWriter {
    /// Start writing `BASE.part-0001`…; stale parts and the manifest of an earlier run are
    /// removed first, so no leftover part is mistaken for one of this bundle.
    pub fn new(base: &Path, part_size: u64) -> Result<SplitWriter, MirrorError> {
        if part_size == 0 {
            return Err(MirrorError::Usage(
                "--split: a part must hold at least one byte; write it like 4G or 700M".into(),
            ));
        }
        remove_split(base)?;
        Ok(SplitWriter {
            base: base.to_path_buf(),
            part_size,
            current: None,
            done: Vec::new(),
        })
    }

    fn close_current(&mut self) -> std::io::Result<()> {
        if let Some((w, _, h)) = self.current.take() {
            let f = w.into_inner().map_err(|e| e.into_error())?;
            f.sync_all()?;
            let path = part_path(&self.base, self.done.len() + 1);
            self.done.push((hex::encode(h.finalize()), path));
        }
        Ok(())
    }

    /// Close the last part and write the manifest; returns the parts.
    pub fn finish(mut self) -> Result<Vec<PathBuf>, MirrorError> {
        let base = self.base.display().to_string();
        self.close_current()
            .map_err(|e| MirrorError::io(&base, e))?;
        let mut text = String::new();
        for (hex, p) in &self.done {
            text.push_str(&format!("{hex}  {}\n", file_name(p)));
        }
        let sums = sums_path(&self.base);
        let tmp = PathBuf::from(format!("{}.tmp", sums.display()));
        std::fs::write(&tmp, text).map_err(|e| MirrorError::io(tmp.display(), e))?;
        std::fs::rename(&tmp, &sums).map_err(|e| MirrorError::io(sums.display(), e))?;
        Ok(self.done.into_iter().map(|(_, p)| p).collect())
    }
}

impl Write for SplitWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if matches!(&self.current, Some((_, n, _)) if *n >= self.part_size) {
            self.close_current()?;
        }
        if self.current.is_none() {
            let path = part_path(&self.base, self.done.len() + 1);
            let f = File::create(&path)?;
            self.current = Some((
                std::io::BufWriter::with_capacity(1 << 20, f),
                0,
                Sha256::new(),
            ));
        }
        let (w, n, h) = self.current.as_mut().expect("opened above");
        let room = (self.part_size - *n) as usize;
        let k = w.write(&buf[..buf.len().min(room)])?;
        h.update(&buf[..k]);
        *n += k as u64;
        Ok(k)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.current {
            Some((w, _, _)) => w.flush(),
            None => Ok(()),
        }
    }
}

/// Remove `BASE.SHA256SUMS` and `BASE.part-*` of an earlier run (the manifest first: without
/// it the leftovers are not a bundle).
pub fn remove_split(base: &Path) -> Result<(), MirrorError> {
    let sums = sums_path(base);
    match std::fs::remove_file(&sums) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(MirrorError::io(sums.display(), e))
        }
        _ => {}
    }
    let mut n = 1;
    loop {
        let p = part_path(base, n);
        match std::fs::remove_file(&p) {
            Ok(()) => n += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(MirrorError::io(p.display(), e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_of(dir: &Path, data: &[u8], size: u64) -> Parts {
        let base = dir.join("b.tar");
        let mut w = SplitWriter::new(&base, size).unwrap();
        w.write_all(data).unwrap();
        w.finish().unwrap();
        Parts::locate(&base).unwrap()
    }

    #[test]
    fn reader_reads_and_seeks_across_part_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        let parts = split_of(dir.path(), &data, 64);
        assert_eq!(parts.parts.len(), 16, "1000 bytes in 64-byte parts");
        assert!(parts.parts[..15].iter().all(|p| p.size == 64));
        parts.verify_checksums().unwrap();
        let mut all = Vec::new();
        parts.reader().read_to_end(&mut all).unwrap();
        assert_eq!(all, data);
        // A range that spans three parts, read after a seek.
        let mut r = parts.reader();
        r.seek(SeekFrom::Start(60)).unwrap();
        let mut buf = vec![0u8; 100];
        r.read_exact(&mut buf).unwrap();
        assert_eq!(buf, data[60..160]);
        let segs = parts.segments(60, 100);
        assert_eq!(
            segs.iter().map(|s| (s.1, s.2)).collect::<Vec<_>>(),
            vec![(60, 4), (0, 64), (0, 32)]
        );
        // Located by the manifest or a part as well as by the base name.
        for p in [sums_path(&parts.name), part_path(&parts.name, 3)] {
            assert_eq!(Parts::locate(&p).unwrap().total(), 1000);
        }
    }

    #[test]
    fn a_corrupt_missing_or_unlisted_part_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let data = vec![7u8; 300];
        let parts = split_of(dir.path(), &data, 100);
        let p2 = part_path(&parts.name, 2);
        let mut b = std::fs::read(&p2).unwrap();
        b[5] ^= 1;
        std::fs::write(&p2, b).unwrap();
        let e = parts.verify_checksums().unwrap_err().to_string();
        assert!(
            e.contains("b.tar.part-0002 is corrupt (sha256 ") && e.contains("fix: copy it again"),
            "{e}"
        );
        std::fs::remove_file(part_path(&parts.name, 3)).unwrap();
        let e = Parts::locate(&parts.name).unwrap_err().to_string();
        assert!(
            e.ends_with("b.tar.part-0003 is missing; fix: copy it next to the others"),
            "{e}"
        );
        // A manifest that lost its last line leaves part 3 unlisted.
        split_of(dir.path(), &data, 100);
        let sums = sums_path(&parts.name);
        let text = std::fs::read_to_string(&sums).unwrap();
        let cut: Vec<&str> = text.lines().take(2).collect();
        std::fs::write(&sums, cut.join("\n")).unwrap();
        let e = Parts::locate(&parts.name).unwrap_err().to_string();
        assert!(
            e.contains("b.tar.part-0003 is not listed in b.tar.SHA256SUMS"),
            "{e}"
        );
    }

    #[test]
    fn sums_parser_names_bad_lines_by_number() {
        let p = Path::new("/x/b.tar.SHA256SUMS");
        let hex = "ab".repeat(32);
        let ok = parse_sums(
            p,
            &format!("{hex}  b.tar.part-0001\n{hex} *b.tar.part-0002\n"),
        )
        .unwrap();
        assert_eq!(ok.len(), 2);
        assert_eq!(ok[1].1, "b.tar.part-0002");
        let e = parse_sums(p, &format!("{hex}  b.tar.part-0001\n{}", &hex[..20]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 2:") && e.contains("fix: copy b.tar.SHA256SUMS again"),
            "{e}"
        );
        let e = parse_sums(p, &format!("{hex}b.tar.part-0001\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1:"), "{e}");
        // A checksum cut short or garbled, the name intact.
        let short = format!("{hex}  b.tar.part-0001\n{}  b.tar.part-0002\n", &hex[..63]);
        let e = parse_sums(p, &short).unwrap_err().to_string();
        assert!(e.contains("line 2:"), "{e}");
        let garbled = format!("{}  b.tar.part-0001\n", hex.replacen('a', "g", 1));
        let e = parse_sums(p, &garbled).unwrap_err().to_string();
        assert!(e.contains("line 1:"), "{e}");
        let e = parse_sums(p, "\n").unwrap_err().to_string();
        assert!(e.contains("lists no parts"), "{e}");
    }
}
