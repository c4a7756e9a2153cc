//! "Frames like this one": an exact cosine-similarity index over latents.
//!
//! [`LatentIndex`] keeps every latent it is given as an L2-normalised `f32`
//! vector in one contiguous `Vec<f32>`, with its device, sequence number and
//! capture time. A query scans all of them (exact search, no approximate
//! structure), so results are the true top-k and need no tuning.
//!
//! # Memory and limits
//!
//! Each vector costs `4 × dim` bytes for the latent plus about 56 bytes of
//! metadata and lookup table ([`bytes_per_vector`]): **about 5.2 KB per
//! vector at 1280 dimensions**, so one million vectors take about **5.2 GB**
//! of RAM. The index holds at most `capacity` vectors, set when it is
//! created ([`DEFAULT_CAPACITY`] is one million); beyond that the oldest
//! vector is dropped for each new one (a ring), so memory never exceeds the
//! figure above. A query reads every stored vector once, so its time grows
//! linearly with the index: measured at about 1 µs per vector on one core
//! of a small two-core x86-64 host and 0.5 µs on both (0.1 s for 200 000
//! vectors), so about half a second per query at one million. Indexes of
//! [`PARALLEL_MIN`] vectors or more are scanned on all cores.
//!
//! `f32` rather than `f16`: halving the memory would need an `f16 → f32`
//! conversion in the inner loop, which stable Rust cannot vectorise without
//! per-target intrinsics, so queries would get slower while the index
//! shrank. Beyond a few million vectors an approximate index (IVF, HNSW) or
//! 8-bit quantisation is the right tool, not a smaller float.
//!
//! # File format (append-only)
//!
//! [`LatentIndex::open`] keeps the index in a file that only ever grows, so
//! the host can restart without losing it. Little-endian:
//!
//! ```text
//! header   b"LCINDX02"  dim: u32  crc: u32 (CRC-32C of magic and dim)
//! record*  device_len: u8 (1..=64)  device: UTF-8 bytes
//!          seq: u64  capture_us: u64  latent: f32[dim] (L2-normalised)
//!          crc: u32 (CRC-32C of the record's bytes before it)
//! ```
//!
//! Every record is written with a single `write` call. A crash while
//! appending can leave only the *end* of the file bad, so at open:
//!
//! * a final record cut short, a final record that fails its checksum, or
//!   a tail of zero bytes (blocks allocated but never written) is a torn
//!   write: it is cut off with a WARN ([`LatentIndex::repaired_bytes`]
//!   tells how much) and appending continues;
//! * a record that fails its checksum or a structural check *with more
//!   bytes after it*, or a bad header, is damage: [`HeadError::Damaged`]
//!   naming the file and byte offset. `serve` then moves the file aside to
//!   `<name>.damaged-<unix seconds>` and starts an empty index
//!   ([`LatentIndex::open_or_quarantine`]).
//!
//! Damage confined to the last record cannot be told from a torn write, so
//! it is cut like one. Files of the first format, `LCINDX01` (no
//! checksums), are still read and appended to in that format; in them only
//! structural damage (a bad id length, a non-UTF-8 id, a latent that is
//! not finite) can be found. Records are not synced one by one: a power
//! cut can lose the latest ones (the results file, not the index, is what
//! acknowledgements wait for). Loading a file with more records than
//! `capacity` keeps the newest `capacity`. Once the file holds `2 ×
//! capacity` records it is rewritten with the `capacity` vectors the index
//! holds (a new file synced and renamed over the old one, in format 2), so
//! its size stays bounded and the rewriting costs one record written per
//! record added, amortised. Only one process may have a file open at a
//! time (records from two writers would interleave).

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use latentcam_wire::MAX_ID_LEN;

use super::linear::HeadError;
use super::state_file::{self, Crc32c, crc32c};
use super::{Head, LatentRef};

const MAGIC: &[u8; 8] = b"LCINDX02";
/// Magic, dimension and the header's checksum.
const HEADER_LEN: u64 = 16;
/// The first format: no checksums.
const MAGIC_V1: &[u8; 8] = b"LCINDX01";
const HEADER_LEN_V1: u64 = 12;
/// Bytes of a record's checksum (format 2).
const CRC_LEN: u64 = 4;
/// Same bound as the head files: refuses absurd dimensions before allocating.
const MAX_DIM: usize = 1 << 16;

/// Default [`LatentIndex`] capacity: one million vectors, about 5.2 GB at
/// 1280 dimensions.
pub const DEFAULT_CAPACITY: usize = 1_000_000;

/// Indexes with at least this many vectors are scanned by one thread per
/// core; below it, starting threads costs more than it saves.
pub const PARALLEL_MIN: usize = 65_536;

/// Approximate RAM per stored vector of `dim` values: the `f32` latent, its
/// metadata and its entry in the `(device, seq)` lookup table.
pub fn bytes_per_vector(dim: usize) -> usize {
    // Latent + Entry (24 B) + hash-map slot at the table's load factor (~32 B).
    4 * dim + std::mem::size_of::<Entry>() + 32
}

/// `latent` scaled to unit length, for cosine similarity by dot product.
///
/// Fails with [`HeadError::Invalid`] for a latent holding NaN or infinite
/// values, or all zeros (which has no direction).
pub fn unit_vector(latent: &[f32]) -> Result<Vec<f32>, HeadError> {
    let mut out = latent.to_vec();
    normalize_in_place(&mut out)?;
    Ok(out)
}

/// Scales `values` to unit length in place; errors as [`unit_vector`].
pub(crate) fn normalize_in_place(values: &mut [f32]) -> Result<(), HeadError> {
    if values.iter().any(|v| !v.is_finite()) {
        return Err(HeadError::Invalid(
            "latent holds NaN or infinite values; check the encoder or the wire codec".into(),
        ));
    }
    let norm = values
        .iter()
        .map(|&v| f64::from(v) * f64::from(v))
        .sum::<f64>()
        .sqrt();
    if norm == 0.0 {
        return Err(HeadError::Invalid(
            "latent is all zeros, so it has no direction to compare".into(),
        ));
    }
    // Leave unit vectors as they are, so that normalising what was read
    // back from a file gives the same bits as before it was written.
    if (norm - 1.0).abs() > 1e-6 {
        let scale = (1.0 / norm) as f32;
        values.iter_mut().for_each(|v| *v *= scale);
    }
    Ok(())
}

/// One result of a search: which frame, and how similar it is.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    /// Device id.
    pub device: String,
    /// Sequence number of the latent on that device.
    pub seq: u64,
    /// Capture time on the device, microseconds (device clock).
    pub capture_us: u64,
    /// Cosine similarity to the query, in `[-1, 1]`.
    pub similarity: f32,
}

/// Metadata of one stored vector.
#[derive(Debug, Clone, Copy)]
struct Entry {
    seq: u64,
    capture_us: u64,
    /// Index into `LatentIndex::devices`.
    device: u32,
}

/// Which format an index file is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// `LCINDX01`: no checksums.
    V1,
    /// `LCINDX02`: a checksum on the header and on every record.
    V2,
}

impl Format {
    fn header_len(self) -> u64 {
        match self {
            Format::V1 => HEADER_LEN_V1,
            Format::V2 => HEADER_LEN,
        }
    }

    /// Bytes of a record with a `device_len`-byte id.
    fn record_len(self, device_len: usize, dim: usize) -> u64 {
        let crc = match self {
            Format::V1 => 0,
            Format::V2 => CRC_LEN,
        };
        (1 + device_len + 16 + 4 * dim) as u64 + crc
    }
}

/// The header of a new (format 2) index file.
fn header_v2(dim: usize) -> Vec<u8> {
    let mut header = MAGIC.to_vec();
    header.extend_from_slice(&(dim as u32).to_le_bytes());
    let crc = crc32c(&header);
    header.extend_from_slice(&crc.to_le_bytes());
    header
}

/// How reading an index file's records ended.
enum Scan {
    /// Every byte up to here is whole records; anything after it is a
    /// torn final write.
    Torn(u64),
    /// A bad record at `start` with more bytes after it: damage, unless
    /// everything from `start` on is zero bytes (blocks never written).
    Suspect { start: u64, reason: String },
}

/// The append-only file behind an index.
#[derive(Debug)]
struct Log {
    path: PathBuf,
    file: File,
    /// Bytes of complete records (and header): where the next record goes.
    len: u64,
    format: Format,
    /// Records in the file (the index holds the newest `capacity` of them).
    records: u64,
}

/// An exact cosine top-k index over latents. See the [module
/// documentation](self) for its memory use, limits and file format.
#[derive(Debug)]
pub struct LatentIndex {
    dim: usize,
    capacity: usize,
    /// Slot-major latents, `slots × dim`, each L2-normalised.
    vectors: Vec<f32>,
    entries: Vec<Entry>,
    /// Slot the next vector overwrites once the index is full (the oldest).
    oldest: usize,
    devices: Vec<String>,
    device_ids: HashMap<String, u32>,
    by_id: HashMap<(u32, u64), usize>,
    log: Option<Log>,
    repaired_bytes: u64,
    /// Records read from the file at open.
    loaded_records: u64,
}

impl LatentIndex {
    /// An empty in-memory index for latents of `dim` values, holding at most
    /// `capacity` vectors.
    pub fn new(dim: usize, capacity: usize) -> Result<Self, HeadError> {
        if dim == 0 || dim > MAX_DIM {
            return Err(HeadError::Invalid(format!(
                "index dimension {dim} is not in 1..={MAX_DIM}"
            )));
        }
        if capacity == 0 || capacity.checked_mul(4 * dim).is_none() {
            return Err(HeadError::Invalid(format!(
                "index capacity {capacity} is not usable; give at least 1 and what fits in memory \
                 ({} bytes per vector)",
                bytes_per_vector(dim)
            )));
        }
        Ok(Self {
            dim,
            capacity,
            vectors: Vec::new(),
            entries: Vec::new(),
            oldest: 0,
            devices: Vec::new(),
            device_ids: HashMap::new(),
            by_id: HashMap::new(),
            log: None,
            repaired_bytes: 0,
            loaded_records: 0,
        })
    }

    /// Opens (or creates) the append-only index file at `path`, loads its
    /// newest `capacity` records, and appends every later [`add`](Self::add)
    /// to it. A torn final write is cut off (with a WARN); damage is
    /// [`HeadError::Damaged`], another kind of file or another dimension
    /// [`HeadError::Format`] (see the [module documentation](self)).
    pub fn open(path: impl AsRef<Path>, dim: usize, capacity: usize) -> Result<Self, HeadError> {
        let path = path.as_ref();
        let mut index = Self::new(dim, capacity)?;
        let io_err = |source| HeadError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io_err)?;
        let file_len = file.metadata().map_err(io_err)?.len();
        let fresh = header_v2(dim);
        let (format, end) = if file_len < HEADER_LEN {
            let mut start = vec![0u8; file_len as usize];
            file.read_exact(&mut start).map_err(io_err)?;
            if start != fresh[..start.len()] && !start.starts_with(MAGIC_V1) {
                return Err(HeadError::Damaged {
                    path: path.to_path_buf(),
                    reason: format!(
                        "{file_len} bytes, shorter than an index header, and not the start of one"
                    ),
                });
            }
            // New, or cut short while being created (a file holding a
            // part of a header holds no records): (re)written whole.
            file.set_len(0).map_err(io_err)?;
            file.seek(SeekFrom::Start(0)).map_err(io_err)?;
            file.write_all(&fresh).map_err(io_err)?;
            file.sync_all().map_err(io_err)?;
            state_file::sync_parent_dir(path).map_err(io_err)?;
            if file_len > 0 {
                tracing::warn!(
                    "similarity index {}: a header cut short ({file_len} bytes) was written again",
                    path.display()
                );
            }
            (Format::V2, HEADER_LEN)
        } else {
            index.load(&mut file, file_len, path)?
        };
        if end < file_len {
            file.set_len(end).map_err(io_err)?;
            file.sync_all().map_err(io_err)?;
            index.repaired_bytes = file_len - end;
            tracing::warn!(
                "similarity index {}: cut {} bytes at byte {end}, a final record torn by a crash \
                 while appending ({} records kept)",
                path.display(),
                index.repaired_bytes,
                index.len()
            );
        }
        let len = file.seek(SeekFrom::End(0)).map_err(io_err)?;
        index.log = Some(Log {
            path: path.to_path_buf(),
            file,
            len,
            format,
            records: index.loaded_records,
        });
        if index.loaded_records >= index.compact_at() {
            index.compact()?;
        }
        Ok(index)
    }

    /// As [`open`](Self::open), for the host's own index (`serve`): a
    /// damaged file does not stop the host. It is renamed aside to
    /// `<name>.damaged-<unix seconds>`, an ERROR says what was wrong and
    /// where the file went, and a new, empty index is started. Returns the
    /// index and, when one was moved, where the damaged file is now.
    pub fn open_or_quarantine(
        path: impl AsRef<Path>,
        dim: usize,
        capacity: usize,
    ) -> Result<(Self, Option<PathBuf>), HeadError> {
        let path = path.as_ref();
        state_file::open_or_quarantine(
            path,
            "similarity index",
            "starting an empty index",
            || Self::open(path, dim, capacity),
            || Self::open(path, dim, capacity),
        )
    }

    /// Reads the header and records of an existing file into the index;
    /// returns its format and where its whole records end.
    fn load(
        &mut self,
        file: &mut File,
        file_len: u64,
        path: &Path,
    ) -> Result<(Format, u64), HeadError> {
        let dim = self.dim;
        let io_err = |source| HeadError::Io {
            path: path.to_path_buf(),
            source,
        };
        let damaged = |reason: String| HeadError::Damaged {
            path: path.to_path_buf(),
            reason,
        };
        let format_err = |reason: String| HeadError::Format {
            path: path.to_path_buf(),
            reason,
        };
        let mut header = [0u8; HEADER_LEN as usize];
        file.read_exact(&mut header).map_err(io_err)?;
        let format = if &header[..8] == MAGIC {
            let stored = u32::from_le_bytes(header[12..16].try_into().unwrap());
            if crc32c(&header[..12]) != stored {
                return Err(damaged("header checksum mismatch".into()));
            }
            Format::V2
        } else if &header[..8] == MAGIC_V1 {
            Format::V1
        } else if let Some((family, kind)) = state_file::latentcam_kind(&header[..8]) {
            return Err(format_err(if family == "LCINDX" {
                format!(
                    "format {} is newer than this build reads (LCINDX01, LCINDX02)",
                    String::from_utf8_lossy(&header[..8])
                )
            } else {
                format!("this is {kind}, not a similarity index")
            }));
        } else {
            return Err(damaged(format!(
                "wrong magic {:?} (expected LCINDX02)",
                String::from_utf8_lossy(&header[..8])
            )));
        };
        let file_dim = u32::from_le_bytes(header[8..12].try_into().unwrap()) as usize;
        if file_dim != dim {
            return Err(format_err(format!(
                "holds {file_dim}-dimensional latents, this index is {dim}-dimensional; give \
                 another --index file for this model"
            )));
        }
        file.seek(SeekFrom::Start(format.header_len()))
            .map_err(io_err)?;
        let scan = {
            let mut reader = BufReader::with_capacity(1 << 20, &mut *file);
            self.read_records(&mut reader, format, file_len)
                .map_err(io_err)?
        };
        match scan {
            Scan::Torn(end) => Ok((format, end)),
            Scan::Suspect { start, reason } => {
                if zeros_from(file, start).map_err(io_err)? {
                    Ok((format, start))
                } else {
                    Err(damaged(format!("record at byte {start}: {reason}")))
                }
            }
        }
    }

    /// Reads records from `reader` (positioned after the header) into the
    /// index until the end of the file or a bad record.
    fn read_records(
        &mut self,
        reader: &mut impl Read,
        format: Format,
        file_len: u64,
    ) -> std::io::Result<Scan> {
        let dim = self.dim;
        let mut offset = format.header_len();
        // The largest record an id-length byte can claim, allocated once.
        let mut record = vec![0u8; format.record_len(255, dim) as usize];
        let mut latent = vec![0f32; dim];
        loop {
            let start = offset;
            if start == file_len {
                return Ok(Scan::Torn(start));
            }
            reader.read_exact(&mut record[..1])?;
            let device_len = usize::from(record[0]);
            let record_len = format.record_len(device_len, dim);
            if start + record_len > file_len {
                // A record cut short by a crash while appending.
                return Ok(Scan::Torn(start));
            }
            let record = &mut record[..record_len as usize];
            reader.read_exact(&mut record[1..])?;
            let last = start + record_len == file_len;
            let bad = |reason: String| {
                Ok(if last {
                    Scan::Torn(start)
                } else {
                    Scan::Suspect { start, reason }
                })
            };
            let body_len = (record_len - if format == Format::V2 { CRC_LEN } else { 0 }) as usize;
            if format == Format::V2 {
                let stored = u32::from_le_bytes(record[body_len..].try_into().unwrap());
                let mut crc = Crc32c::default();
                crc.update(&record[..body_len]);
                if crc.value() != stored {
                    return bad("checksum mismatch".into());
                }
            }
            if device_len == 0 || device_len > MAX_ID_LEN {
                return bad(format!(
                    "device id length {device_len} is not in 1..={MAX_ID_LEN}"
                ));
            }
            let Ok(device) = std::str::from_utf8(&record[1..1 + device_len]) else {
                return bad("device id is not UTF-8".into());
            };
            let numbers = &record[1 + device_len..1 + device_len + 16];
            let seq = u64::from_le_bytes(numbers[..8].try_into().unwrap());
            let capture_us = u64::from_le_bytes(numbers[8..].try_into().unwrap());
            let values = &record[1 + device_len + 16..body_len];
            for (v, b) in latent.iter_mut().zip(values.chunks_exact(4)) {
                *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
            if let Err(e) = normalize_in_place(&mut latent) {
                return bad(e.to_string());
            }
            self.insert(device, seq, capture_us, &latent);
            self.loaded_records += 1;
            offset += record_len;
        }
    }

    /// Latent dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Most vectors held; the oldest are dropped beyond it.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Vectors held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the index holds no vector.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of a damaged final record that [`open`](Self::open) cut off the
    /// file (0 when the file was intact).
    pub fn repaired_bytes(&self) -> u64 {
        self.repaired_bytes
    }

    /// The file behind this index, if it has one.
    pub fn path(&self) -> Option<&Path> {
        self.log.as_ref().map(|log| log.path.as_path())
    }

    /// Adds one latent (normalised here) and appends it to the file, if any.
    ///
    /// Adding the same `(device, seq, capture_us)` again does nothing, since
    /// a device may resend latents after a reconnect. The same `(device,
    /// seq)` with another capture time (a device that restarted its sequence)
    /// is stored; look-ups by `(device, seq)` then find the newest.
    /// Returns whether the latent was stored.
    pub fn add(
        &mut self,
        device: &str,
        seq: u64,
        capture_us: u64,
        latent: &[f32],
    ) -> Result<bool, HeadError> {
        self.check_dim(latent)?;
        if device.is_empty() || device.len() > MAX_ID_LEN {
            return Err(HeadError::Invalid(format!(
                "device id of {} bytes; ids are 1 to {MAX_ID_LEN} bytes",
                device.len()
            )));
        }
        if let Some(slot) = self.slot_of(device, seq)
            && self.entries[slot].capture_us == capture_us
        {
            return Ok(false);
        }
        let unit = unit_vector(latent)?;
        if let Some(log) = &mut self.log {
            let mut record =
                Vec::with_capacity(log.format.record_len(device.len(), self.dim) as usize);
            record.push(device.len() as u8);
            record.extend_from_slice(device.as_bytes());
            record.extend_from_slice(&seq.to_le_bytes());
            record.extend_from_slice(&capture_us.to_le_bytes());
            for v in &unit {
                record.extend_from_slice(&v.to_le_bytes());
            }
            if log.format == Format::V2 {
                let crc = crc32c(&record);
                record.extend_from_slice(&crc.to_le_bytes());
            }
            if let Err(source) = log.file.write_all(&record) {
                // Cut a partly written record off again, so later records
                // stay readable.
                let _ = log.file.set_len(log.len);
                let _ = log.file.seek(SeekFrom::End(0));
                return Err(HeadError::Io {
                    path: log.path.clone(),
                    source,
                });
            }
            log.len += record.len() as u64;
            log.records += 1;
        }
        self.insert(device, seq, capture_us, &unit);
        if self
            .log
            .as_ref()
            .is_some_and(|log| log.records >= self.compact_at())
        {
            self.compact()?;
        }
        Ok(true)
    }

    /// Records in the file at which it is rewritten with only what the
    /// index holds: twice the capacity, so the file stays below
    /// `2 × capacity` records and rewriting costs one record per record
    /// added, amortised.
    fn compact_at(&self) -> u64 {
        (self.capacity as u64).saturating_mul(2)
    }

    /// Rewrites the file with the vectors the index holds, oldest first, in
    /// the current format: a new file beside it, synced, renamed over it and
    /// the directory synced, so a crash leaves either the old file or the
    /// new one. Appending continues on the new file.
    fn compact(&mut self) -> Result<(), HeadError> {
        let Some(log) = &self.log else {
            return Ok(());
        };
        let path = log.path.clone();
        let tmp = path.with_extension("compacting");
        let io_err = |p: &Path| {
            let p = p.to_path_buf();
            move |source| HeadError::Io { path: p, source }
        };
        let order: Vec<usize> = if self.entries.len() < self.capacity {
            (0..self.entries.len()).collect()
        } else {
            (self.oldest..self.capacity).chain(0..self.oldest).collect()
        };
        let mut out = std::io::BufWriter::with_capacity(
            1 << 20,
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)
                .map_err(io_err(&tmp))?,
        );
        let header = header_v2(self.dim);
        out.write_all(&header).map_err(io_err(&tmp))?;
        let mut len = header.len() as u64;
        let mut record = Vec::with_capacity(Format::V2.record_len(MAX_ID_LEN, self.dim) as usize);
        for &slot in &order {
            let entry = self.entries[slot];
            let device = &self.devices[entry.device as usize];
            record.clear();
            record.push(device.len() as u8);
            record.extend_from_slice(device.as_bytes());
            record.extend_from_slice(&entry.seq.to_le_bytes());
            record.extend_from_slice(&entry.capture_us.to_le_bytes());
            for v in self.vector(slot) {
                record.extend_from_slice(&v.to_le_bytes());
            }
            let crc = crc32c(&record);
            record.extend_from_slice(&crc.to_le_bytes());
            out.write_all(&record).map_err(io_err(&tmp))?;
            len += record.len() as u64;
        }
        let file = out.into_inner().map_err(|e| io_err(&tmp)(e.into_error()))?;
        file.sync_all().map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
        state_file::sync_parent_dir(&path).map_err(io_err(&path))?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        file.seek(SeekFrom::End(0)).map_err(io_err(&path))?;
        tracing::info!(
            "similarity index {}: rewrote the file with the {} vectors it holds",
            path.display(),
            order.len()
        );
        self.log = Some(Log {
            path,
            file,
            len,
            format: Format::V2,
            records: order.len() as u64,
        });
        Ok(())
    }

    /// Asks the operating system to put the file on disk (`fsync`). Records
    /// reach the OS as they are added, so only a power loss, not a crash of
    /// the host, can lose records not yet synced.
    pub fn sync(&mut self) -> Result<(), HeadError> {
        match &mut self.log {
            Some(log) => log.file.sync_data().map_err(|source| HeadError::Io {
                path: log.path.clone(),
                source,
            }),
            None => Ok(()),
        }
    }

    /// The stored (normalised) latent of `(device, seq)`, the newest if the
    /// pair was stored more than once.
    pub fn get(&self, device: &str, seq: u64) -> Option<&[f32]> {
        self.slot_of(device, seq).map(|slot| self.vector(slot))
    }

    /// The `k` stored vectors most similar to `latent` (cosine similarity),
    /// most similar first.
    pub fn search(&self, latent: &[f32], k: usize) -> Result<Vec<SearchHit>, HeadError> {
        self.check_dim(latent)?;
        let query = unit_vector(latent)?;
        Ok(self.search_unit(&query, k))
    }

    /// The `k` stored vectors most similar to the stored `(device, seq)`,
    /// which comes first itself (similarity 1); `None` if it is not stored.
    pub fn search_stored(&self, device: &str, seq: u64, k: usize) -> Option<Vec<SearchHit>> {
        let query = self.get(device, seq)?;
        Some(self.search_unit(query, k))
    }

    fn check_dim(&self, latent: &[f32]) -> Result<(), HeadError> {
        if latent.len() == self.dim {
            Ok(())
        } else {
            Err(HeadError::Dimension {
                expected: self.dim,
                got: latent.len(),
            })
        }
    }

    fn slot_of(&self, device: &str, seq: u64) -> Option<usize> {
        let device = *self.device_ids.get(device)?;
        self.by_id.get(&(device, seq)).copied()
    }

    fn vector(&self, slot: usize) -> &[f32] {
        &self.vectors[slot * self.dim..(slot + 1) * self.dim]
    }

    /// Stores an already normalised vector in memory.
    fn insert(&mut self, device: &str, seq: u64, capture_us: u64, unit: &[f32]) {
        let device = match self.device_ids.get(device) {
            Some(&id) => id,
            None => {
                let id = self.devices.len() as u32;
                self.devices.push(device.to_owned());
                self.device_ids.insert(device.to_owned(), id);
                id
            }
        };
        let entry = Entry {
            seq,
            capture_us,
            device,
        };
        let slot = if self.entries.len() < self.capacity {
            if self.vectors.len() == self.vectors.capacity() {
                // Grow by doubling, but never past the capacity.
                let room = (self.capacity - self.entries.len()).min(self.entries.len().max(64));
                self.vectors.reserve_exact(room * self.dim);
            }
            self.vectors.extend_from_slice(unit);
            self.entries.push(entry);
            self.entries.len() - 1
        } else {
            let slot = self.oldest;
            let old = self.entries[slot];
            let key = (old.device, old.seq);
            if self.by_id.get(&key) == Some(&slot) {
                self.by_id.remove(&key);
            }
            self.vectors[slot * self.dim..(slot + 1) * self.dim].copy_from_slice(unit);
            self.entries[slot] = entry;
            self.oldest = (slot + 1) % self.capacity;
            slot
        };
        self.by_id.insert((device, seq), slot);
    }

    fn search_unit(&self, query: &[f32], k: usize) -> Vec<SearchHit> {
        let k = k.min(self.len());
        if k == 0 {
            return Vec::new();
        }
        let threads = if self.len() >= PARALLEL_MIN {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            1
        };
        let mut best: Vec<Candidate> = if threads <= 1 {
            top_k_slots(&self.vectors, self.dim, 0, query, k)
        } else {
            let per_thread = self.len().div_ceil(threads);
            std::thread::scope(|scope| {
                let workers: Vec<_> = self
                    .vectors
                    .chunks(per_thread * self.dim)
                    .enumerate()
                    .map(|(i, chunk)| {
                        scope.spawn(move || top_k_slots(chunk, self.dim, i * per_thread, query, k))
                    })
                    .collect();
                workers
                    .into_iter()
                    .flat_map(|w| w.join().expect("search worker panicked"))
                    .collect()
            })
        };
        best.sort_by(|a, b| b.cmp(a));
        best.truncate(k);
        best.into_iter()
            .map(|c| {
                let entry = self.entries[c.slot];
                SearchHit {
                    device: self.devices[entry.device as usize].clone(),
                    seq: entry.seq,
                    capture_us: entry.capture_us,
                    similarity: c.similarity,
                }
            })
            .collect()
    }
}

/// Whether every byte of `file` from `start` to its end is zero.
fn zeros_from(file: &mut File, start: u64) -> std::io::Result<bool> {
    file.seek(SeekFrom::Start(start))?;
    let mut reader = BufReader::with_capacity(1 << 16, file);
    loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            return Ok(true);
        }
        if chunk.iter().any(|&b| b != 0) {
            return Ok(false);
        }
        let n = chunk.len();
        reader.consume(n);
    }
}

/// A slot and its similarity; orders by similarity, then lower slot first.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    similarity: f32,
    slot: usize,
}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        self.similarity
            .total_cmp(&other.similarity)
            .then(other.slot.cmp(&self.slot))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Candidate {}

/// The `k` best slots of `vectors` (slot numbers offset by `first_slot`),
/// in no particular order.
fn top_k_slots(
    vectors: &[f32],
    dim: usize,
    first_slot: usize,
    query: &[f32],
    k: usize,
) -> Vec<Candidate> {
    // A min-heap of the best k so far: its top is the one to beat.
    let mut heap: BinaryHeap<std::cmp::Reverse<Candidate>> = BinaryHeap::with_capacity(k + 1);
    for (i, vector) in vectors.chunks_exact(dim).enumerate() {
        let candidate = Candidate {
            similarity: dot_wide(query, vector),
            slot: first_slot + i,
        };
        if heap.len() < k {
            heap.push(std::cmp::Reverse(candidate));
        } else if let Some(mut worst) = heap.peek_mut()
            && candidate > worst.0
        {
            *worst = std::cmp::Reverse(candidate);
        }
    }
    heap.into_iter().map(|r| r.0).collect()
}

/// Dot product over 16 independent lanes, which the compiler turns into
/// SIMD multiply-adds; 1.6× faster than [`super::linear::dot`] here, which
/// matters in a scan over a million vectors.
pub(crate) fn dot_wide(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let (a_chunks, a_rest) = a.as_chunks::<16>();
    let (b_chunks, b_rest) = b.as_chunks::<16>();
    for (x, y) in a_chunks.iter().zip(b_chunks) {
        for i in 0..16 {
            lanes[i] += x[i] * y[i];
        }
    }
    let mut sum: f32 = lanes.iter().sum();
    for (x, y) in a_rest.iter().zip(b_rest) {
        sum += x * y;
    }
    sum
}

/// Indexes every latent: `{"indexed": 1234, "added": true}`, the number of
/// vectors held and whether this latent was new (false for a resend).
impl Head for LatentIndex {
    fn name(&self) -> &str {
        "search"
    }

    fn run(&mut self, input: &LatentRef<'_>) -> Result<serde_json::Value, HeadError> {
        let added = self.add(input.device, input.seq, input.capture_us, input.latent)?;
        Ok(serde_json::json!({ "indexed": self.len(), "added": added }))
    }
}

/// An index shared between the head worker, which adds every latent, and
/// the HTTP API, which searches it.
#[derive(Debug, Clone)]
pub struct SharedIndex(pub std::sync::Arc<std::sync::Mutex<LatentIndex>>);

impl SharedIndex {
    /// Wraps an index.
    pub fn new(index: LatentIndex) -> Self {
        Self(std::sync::Arc::new(std::sync::Mutex::new(index)))
    }

    /// Locks the index (a panic while locked cannot leave it half-written:
    /// records are appended whole).
    pub fn lock(&self) -> std::sync::MutexGuard<'_, LatentIndex> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Head for SharedIndex {
    fn name(&self) -> &str {
        "search"
    }

    fn run(&mut self, input: &LatentRef<'_>) -> Result<serde_json::Value, HeadError> {
        self.lock().run(input)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_path(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lcindex-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("index.bin")
    }

    fn axis(dim: usize, i: usize, tilt: f32) -> Vec<f32> {
        let mut v = vec![0.0; dim];
        v[i] = 1.0;
        v[(i + 1) % dim] = tilt;
        v
    }

    #[test]
    fn the_file_is_rewritten_before_it_holds_twice_the_capacity() {
        let path = temp_path("compact");
        let _ = std::fs::remove_file(&path);
        let dim = 4;
        let record = Format::V2.record_len("cam".len(), dim);
        let mut index = LatentIndex::open(&path, dim, 5).unwrap();
        for seq in 0..23u64 {
            let v = axis(dim, seq as usize % dim, seq as f32 / 10.0);
            assert!(index.add("cam", seq, seq * 10, &v).unwrap());
            let size = std::fs::metadata(&path).unwrap().len();
            assert!(size < HEADER_LEN + 10 * record, "seq {seq}: {size} bytes");
            assert_eq!(size, index.log.as_ref().unwrap().len);
        }
        // 23 added: rewritten at 10 and 15 and 20 records, 8 now.
        assert_eq!(index.log.as_ref().unwrap().records, 8);
        let newest: Vec<u64> = (18..23).collect();
        let held = |index: &LatentIndex| {
            let mut seqs: Vec<u64> = index.entries.iter().map(|e| e.seq).collect();
            seqs.sort_unstable();
            seqs
        };
        assert_eq!(held(&index), newest);
        drop(index);
        let reopened = LatentIndex::open(&path, dim, 5).unwrap();
        assert_eq!(
            held(&reopened),
            newest,
            "the rewritten file holds the newest"
        );
        assert_eq!(reopened.repaired_bytes(), 0);
        for seq in 18..23u64 {
            let v = axis(dim, seq as usize % dim, seq as f32 / 10.0);
            let stored = reopened.get("cam", seq).unwrap();
            let unit = unit_vector(&v).unwrap();
            assert_eq!(stored, &unit[..]);
        }
        // A file that already holds more is rewritten at open.
        drop(reopened);
        let small = LatentIndex::open(&path, dim, 2).unwrap();
        assert_eq!(small.log.as_ref().unwrap().records, 2);
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            HEADER_LEN + 2 * record
        );
    }

    #[test]
    fn finds_nearest_and_orders_by_similarity() {
        let mut index = LatentIndex::new(4, 10).unwrap();
        index.add("a", 0, 0, &axis(4, 0, 0.0)).unwrap();
        index.add("a", 1, 10, &axis(4, 0, 0.5)).unwrap();
        index.add("b", 0, 20, &axis(4, 2, 0.0)).unwrap();
        let hits = index.search(&[2.0, 0.0, 0.0, 0.0], 2).unwrap();
        assert_eq!(hits.len(), 2);
        assert_eq!((hits[0].device.as_str(), hits[0].seq), ("a", 0));
        assert!((hits[0].similarity - 1.0).abs() < 1e-6);
        assert_eq!((hits[1].device.as_str(), hits[1].seq), ("a", 1));
        let by_id = index.search_stored("b", 0, 5).unwrap();
        assert_eq!(by_id.len(), 3);
        assert_eq!((by_id[0].device.as_str(), by_id[0].capture_us), ("b", 20));
        assert!(index.search_stored("b", 1, 5).is_none());
        assert!(index.search(&[1.0, 0.0, 0.0, 0.0], 0).unwrap().is_empty());
    }

    #[test]
    fn rejects_bad_input_without_panicking() {
        let mut index = LatentIndex::new(4, 10).unwrap();
        assert!(matches!(
            index.add("a", 0, 0, &[1.0; 3]),
            Err(HeadError::Dimension {
                expected: 4,
                got: 3
            })
        ));
        assert!(matches!(
            index.add("a", 0, 0, &[0.0; 4]),
            Err(HeadError::Invalid(_))
        ));
        assert!(matches!(
            index.add("a", 0, 0, &[f32::NAN, 1.0, 0.0, 0.0]),
            Err(HeadError::Invalid(_))
        ));
        assert!(matches!(
            index.add("", 0, 0, &[1.0; 4]),
            Err(HeadError::Invalid(_))
        ));
        assert!(index.search(&[1.0; 5], 1).is_err());
        assert!(index.is_empty());
        assert!(LatentIndex::new(0, 1).is_err());
        assert!(LatentIndex::new(4, 0).is_err());
        assert!(LatentIndex::new(1280, usize::MAX).is_err());
    }

    #[test]
    fn ring_drops_oldest_and_resends_are_ignored() {
        let mut index = LatentIndex::new(3, 2).unwrap();
        assert!(index.add("a", 0, 0, &[1.0, 0.0, 0.0]).unwrap());
        assert!(!index.add("a", 0, 0, &[1.0, 0.0, 0.0]).unwrap());
        index.add("a", 1, 1, &[0.0, 1.0, 0.0]).unwrap();
        index.add("a", 2, 2, &[0.0, 0.0, 1.0]).unwrap();
        assert_eq!(index.len(), 2);
        assert!(index.get("a", 0).is_none());
        assert!(index.get("a", 1).is_some());
        let hits = index.search(&[1.0, 0.0, 0.0], 5).unwrap();
        assert_eq!(hits.len(), 2);
        // A restarted device reusing seq 1: the newer one wins the look-up.
        index.add("a", 1, 99, &[1.0, 1.0, 0.0]).unwrap();
        assert!((index.get("a", 1).unwrap()[0] - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
        // Evicting the older copy of ("a", 1) must not forget the newer one.
        index.add("a", 3, 3, &[0.0, 0.0, 1.0]).unwrap();
        assert!(index.get("a", 1).is_some());
    }

    #[test]
    fn file_roundtrip_repairs_torn_tail_and_rejects_damage() {
        let path = temp_path("roundtrip");
        let _ = std::fs::remove_file(&path);
        {
            let mut index = LatentIndex::open(&path, 3, 10).unwrap();
            index.add("cam-1", 5, 500, &[3.0, 4.0, 0.0]).unwrap();
            index.add("cam-2", 6, 600, &[0.0, 0.0, 2.0]).unwrap();
        }
        let record_len = 1 + 5 + 16 + 12 + CRC_LEN;
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            HEADER_LEN + 2 * record_len
        );
        let index = LatentIndex::open(&path, 3, 10).unwrap();
        assert_eq!(index.len(), 2);
        assert_eq!(index.get("cam-1", 5).unwrap(), &[0.6, 0.8, 0.0]);
        assert_eq!(index.repaired_bytes(), 0);
        drop(index);

        // Capacity 1 keeps the newest record only (and, holding twice its
        // capacity, the file is rewritten with it: on a copy here).
        let copy = path.with_extension("copy");
        std::fs::copy(&path, &copy).unwrap();
        let small = LatentIndex::open(&copy, 3, 1).unwrap();
        assert!(small.get("cam-1", 5).is_none());
        assert!(small.get("cam-2", 6).is_some());
        drop(small);
        assert_eq!(
            std::fs::metadata(&copy).unwrap().len(),
            HEADER_LEN + record_len
        );

        // A torn final record is cut off and appending continues.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.truncate(bytes.len() - 7);
        std::fs::write(&path, &bytes).unwrap();
        let mut index = LatentIndex::open(&path, 3, 10).unwrap();
        assert_eq!(index.len(), 1);
        assert_eq!(index.repaired_bytes(), record_len - 7);
        index.add("cam-3", 7, 700, &[1.0, 1.0, 1.0]).unwrap();
        drop(index);
        let index = LatentIndex::open(&path, 3, 10).unwrap();
        assert_eq!(index.len(), 2);
        assert!(index.get("cam-3", 7).is_some());
        drop(index);

        let err = LatentIndex::open(&path, 4, 10).unwrap_err().to_string();
        assert!(
            err.contains("3-dimensional") && err.contains("index.bin"),
            "{err}"
        );
        let good = std::fs::read(&path).unwrap();
        // A flipped byte in the first record, with another after it: damage.
        for at in [HEADER_LEN as usize, HEADER_LEN as usize + 20] {
            let mut bytes = good.clone();
            bytes[at] ^= 0x01;
            std::fs::write(&path, &bytes).unwrap();
            let err = LatentIndex::open(&path, 3, 10).unwrap_err();
            assert!(matches!(err, HeadError::Damaged { .. }), "{err}");
            assert!(err.to_string().contains("byte 16"), "{err}");
        }
        // In the header: damage too.
        let mut bytes = good.clone();
        bytes[9] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        let err = LatentIndex::open(&path, 3, 10).unwrap_err();
        assert!(err.to_string().contains("header checksum"), "{err}");
        bytes[0] = b'X';
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            LatentIndex::open(&path, 3, 10),
            Err(HeadError::Damaged { .. })
        ));
        // Another kind of latentcam file is the wrong file, not damage.
        bytes[..8].copy_from_slice(b"LCFEWS02");
        std::fs::write(&path, &bytes).unwrap();
        let err = LatentIndex::open(&path, 3, 10).unwrap_err();
        assert!(
            matches!(err, HeadError::Format { .. }) && err.to_string().contains("few-shot"),
            "{err}"
        );
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn torn_tails_are_cut_whatever_the_crash_left() {
        let path = temp_path("torn");
        let _ = std::fs::remove_file(&path);
        {
            let mut index = LatentIndex::open(&path, 3, 10).unwrap();
            for seq in 0..3 {
                index.add("cam", seq, seq, &[1.0, seq as f32, 0.0]).unwrap();
            }
        }
        let good = std::fs::read(&path).unwrap();
        let record_len = (1 + 3 + 16 + 12 + CRC_LEN) as usize;
        let last = good.len() - record_len;
        let mut cases: Vec<(&str, Vec<u8>, usize)> = Vec::new();
        // The last record's data never reached the disk, its size did.
        let mut zeroed = good.clone();
        zeroed[last + 10..].fill(0);
        cases.push(("last record partly zero", zeroed, 2));
        // Whole blocks of zeros after the records (several records lost).
        let mut zeros = good.clone();
        zeros.extend(std::iter::repeat_n(0u8, 3 * record_len + 5));
        cases.push(("zero blocks after the records", zeros, 3));
        // A header cut short at creation.
        cases.push(("a part of a header", header_v2(3)[..7].to_vec(), 0));
        for (what, bytes, kept) in cases {
            std::fs::write(&path, &bytes).unwrap();
            let mut index = LatentIndex::open(&path, 3, 10).unwrap();
            assert_eq!(index.len(), kept, "{what}");
            assert!(index.repaired_bytes() > 0 || kept == 0, "{what}");
            index.add("cam", 9, 9, &[0.0, 1.0, 1.0]).unwrap();
            drop(index);
            let index = LatentIndex::open(&path, 3, 10).unwrap();
            assert_eq!(
                (index.len(), index.repaired_bytes()),
                (kept + 1, 0),
                "{what}"
            );
        }
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn first_format_files_are_read_and_appended_to() {
        let path = temp_path("v1");
        let mut bytes = MAGIC_V1.to_vec();
        bytes.extend_from_slice(&3u32.to_le_bytes());
        bytes.push(3);
        bytes.extend_from_slice(b"cam");
        bytes.extend_from_slice(&4u64.to_le_bytes());
        bytes.extend_from_slice(&40u64.to_le_bytes());
        for v in [0.6f32, 0.8, 0.0] {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        std::fs::write(&path, &bytes).unwrap();
        let mut index = LatentIndex::open(&path, 3, 10).unwrap();
        assert_eq!(index.get("cam", 4).unwrap(), &[0.6, 0.8, 0.0]);
        index.add("cam", 5, 50, &[0.0, 1.0, 0.0]).unwrap();
        drop(index);
        let after = std::fs::read(&path).unwrap();
        assert_eq!(
            after.len(),
            2 * bytes.len() - 12,
            "a record without checksum"
        );
        let index = LatentIndex::open(&path, 3, 10).unwrap();
        assert_eq!(index.len(), 2);
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_damaged_index_is_moved_aside_and_a_new_one_started() {
        let path = temp_path("quarantine");
        let _ = std::fs::remove_file(&path);
        {
            let mut index = LatentIndex::open(&path, 3, 10).unwrap();
            index.add("cam", 1, 1, &[1.0, 0.0, 0.0]).unwrap();
            index.add("cam", 2, 2, &[0.0, 1.0, 0.0]).unwrap();
        }
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[HEADER_LEN as usize + 30] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let (index, moved) = LatentIndex::open_or_quarantine(&path, 3, 10).unwrap();
        assert!(index.is_empty());
        let moved = moved.expect("moved aside");
        assert_eq!(std::fs::read(&moved).unwrap(), bytes);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), HEADER_LEN);
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn parallel_scan_matches_serial() {
        // Enough vectors to take the threaded path.
        let dim = 8;
        let mut index = LatentIndex::new(dim, PARALLEL_MIN + 10).unwrap();
        let mut state = 7u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        for i in 0..PARALLEL_MIN as u64 + 5 {
            let v: Vec<f32> = (0..dim).map(|_| next()).collect();
            index.add("d", i, i, &v).unwrap();
        }
        let query: Vec<f32> = (0..dim).map(|_| next()).collect();
        let hits = index.search(&query, 5).unwrap();
        let unit = unit_vector(&query).unwrap();
        let mut serial = top_k_slots(&index.vectors, dim, 0, &unit, 5);
        serial.sort_by(|a, b| b.cmp(a));
        let serial: Vec<u64> = serial.iter().map(|c| index.entries[c.slot].seq).collect();
        assert_eq!(hits.iter().map(|h| h.seq).collect::<Vec<_>>(), serial);
        assert!(hits.windows(2).all(|w| w[0].similarity >= w[1].similarity));
    }
}
