//! Call recording: every bridged call becomes
//! `recordings/YYYY/MM/DD/<id>.wav`, 16-bit 8 kHz stereo PCM with the trunk
//! caller on the left channel and the agent on the right.
//!
//! # Why it is split in two
//!
//! The media relay handles every RTP packet of every call, so the recording
//! path it touches ([`StereoTimeline::push`]) is pure arithmetic on a buffer
//! that holds only the audio not yet drained: no locks, no system calls, no
//! clock reads, and an allocation only when that span grows past any before.
//! Every quarter second the relay drains the timeline into a buffer from a
//! pool shared by all calls and hands it to a single recorder thread
//! ([`Recorder::spawn`]), which owns every open file, so disk stalls delay only
//! the recorder, never the relay; the buffer goes back to the pool.
//!
//! # Placement by timestamp (RFC 3550 §5.1, §6.4.1)
//!
//! Audio is placed where its RTP timestamp says, not where it happened to
//! arrive, so jitter, reordering and duplicates do not smear the recording
//! and an hour-long call stays in sync with the wall clock. Each channel keeps
//! an anchor (SSRC, timestamp, position); a packet's position is the anchor
//! position plus the wrapping 32-bit timestamp difference, read as a signed
//! `i32` (RFC 3550 §5.1: timestamps wrap and their difference is what counts).
//! The anchor rolls forward with in-sync packets, so calls longer than the
//! 2³¹-tick (74 h at 8 kHz) horizon of a signed difference still work.
//!
//! A channel re-anchors at the packet's arrival position when:
//! - its SSRC changes (RFC 3550 §8.2: a new source, e.g. a re-INVITE to a
//!   different media server, has an unrelated random timestamp base);
//! - the predicted position is more than the threshold (500 ms) *ahead* of
//!   arrival: the network cannot deliver a packet before it was sent, so the
//!   sender's timestamp jumped;
//! - the predicted position stays more than the threshold *behind* arrival
//!   for 60 ms of arrival time. A single late burst after a network stall is
//!   placed by its timestamps (it is real audio from the past); only a
//!   persistent offset (sender restarted with a lower timestamp, or a clock
//!   that drifted) moves the anchor.
//!
//! Gaps are silence, so the file length is exactly the call length.
//!
//! # Always playable (kill -9 included)
//!
//! hound only writes the RIFF and `data` sizes on `flush()`/`finalize()`. The
//! recorder thread flushes every open file once a second, writing audio before
//! the header, so a crash leaves a file whose header describes at most one
//! second less than it holds. Files are written as `<id>.wav.part` and
//! renamed only after `finalize` + `fsync`, so a `.wav` is always complete;
//! [`repair_partials`] rewrites the sizes of leftover `.part` files from their
//! length at start-up. The SHA-256 of the final file is computed by reading it
//! back so the hash covers exactly the bytes on disk (evidence for disputes).

use std::collections::{HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Sample rate of recordings; equal to the G.711 RTP clock, so one timestamp
/// tick is one sample.
pub(crate) const SAMPLE_RATE: u32 = 8000;
/// Stereo: caller left, agent right.
pub(crate) const CHANNELS: u16 = 2;
/// Bytes per interleaved stereo frame.
const FRAME_BYTES: u64 = 4;
/// Default timeline window: 2 s of frames (64 kB a call). Must cover the drain lag (200 ms
/// jitter allowance + the relay's 250 ms drain period) plus the 500 ms re-anchor tolerance
/// ahead, which leaves a second for a late media thread. It was 4 s with a 1 s drain period:
/// half the memory of a call went here (issue 13, point 4).
pub(crate) const DEFAULT_WINDOW_FRAMES: usize = 2 * SAMPLE_RATE as usize;
/// Default distance between timestamp-predicted and arrival position that
/// counts as a timestamp discontinuity: 500 ms.
pub(crate) const DEFAULT_REANCHOR_THRESHOLD: u64 = SAMPLE_RATE as u64 / 2;
/// How long (arrival time, in samples) a backward stray must persist before
/// it is treated as a discontinuity rather than a late burst: 60 ms.
const BACKWARD_CONFIRM: u64 = 480;
/// Maximum time between header updates of an open recording.
pub(crate) const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Largest `data` chunk a RIFF file can describe: the RIFF size field
/// (data + 36 for hound's 44-byte header) must fit in a u32.
const MAX_DATA_BYTES: u64 = (u32::MAX as u64 - 36) / FRAME_BYTES * FRAME_BYTES;

/// Errors of the recording subsystem.
#[derive(Debug, thiserror::Error)]
pub enum RecorderError {
    #[error("I/O error on {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("invalid recording id {0:?}: use 1-128 of [A-Za-z0-9._@+-], not starting with '.'")]
    InvalidId(String),
    #[error("invalid recording date {0:04}-{1:02}-{2:02}")]
    InvalidDate(i32, u32, u32),
    #[error("recording already exists: {}", .0.display())]
    AlreadyExists(PathBuf),
    #[error("interleaved stereo chunk has an odd number of samples ({0})")]
    OddSampleCount(usize),
    #[error("recording {} would exceed the 4 GiB RIFF limit", .0.display())]
    TooLong(PathBuf),
    #[error("{} is not a repairable WAV file: {reason}", .path.display())]
    NotRepairable { path: PathBuf, reason: &'static str },
    #[error("the recorder thread has stopped")]
    Stopped,
    /// Only [`RecorderHandle::shutdown`] waits for the thread, and only tests call it.
    #[cfg(test)]
    #[error("the recorder thread panicked")]
    ThreadPanicked,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> RecorderError + '_ {
    move |source| RecorderError::Io {
        path: path.to_path_buf(),
        source,
    }
}

// ---------------------------------------------------------------------------
// Timeline
// ---------------------------------------------------------------------------

/// Which side of the bridge a packet came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// The trunk caller: left channel (index 0).
    Caller,
    /// The agent phone: right channel (index 1).
    Agent,
}

impl Channel {
    /// Interleave offset of this channel within a frame.
    pub const fn index(self) -> usize {
        match self {
            Channel::Caller => 0,
            Channel::Agent => 1,
        }
    }
}

/// Per-channel counters, for call quality records and alarms.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ChannelStats {
    /// Packets pushed.
    pub packets: u64,
    /// Samples stored in the window.
    pub placed_samples: u64,
    /// Samples that arrived for positions already drained (too late for the
    /// jitter allowance, or pushed after `finish`).
    pub late_samples: u64,
    /// Samples beyond the window (the drain fell behind); dropped.
    pub overflow_samples: u64,
    /// Re-anchors after the first packet (SSRC change, timestamp jump).
    pub reanchors: u64,
}

#[derive(Debug, Clone, Copy)]
struct Anchor {
    ssrc: u32,
    ts: u32,
    pos: i64,
}

#[derive(Debug, Default, Clone, Copy)]
struct Lane {
    anchor: Option<Anchor>,
    /// Arrival position of the first packet of an ongoing backward stray.
    straying_since: Option<u64>,
    stats: ChannelStats,
}

/// Places both directions of a call on one sample-accurate stereo timeline.
///
/// Pure logic: time is an input, counted in samples (8 kHz) since answer, so
/// the whole behaviour is testable without clocks or sleeps.
#[derive(Debug)]
pub struct StereoTimeline {
    /// Interleaved frames for positions `[drained, drained + len / 2)`: only what has arrived
    /// and not been drained is held (about half a second in a normal call, 16 kB), not the
    /// whole window (64 kB a call, resident for the whole call; issue 13, point 4).
    pending: VecDeque<i16>,
    /// How far past `drained` audio may be stored, in frames.
    window: u64,
    /// Everything before this position has been handed out by `drain`.
    drained: u64,
    lanes: [Lane; 2],
    threshold: i64,
    finished: bool,
}

/// `pending` grows in steps of a quarter second of stereo samples, so a call's buffer is
/// allocated a few times at its start and not again.
const GROW_SAMPLES: usize = SAMPLE_RATE as usize / 4 * CHANNELS as usize;

impl Default for StereoTimeline {
    fn default() -> Self {
        Self::new()
    }
}

impl StereoTimeline {
    /// Timeline with a 2 s window and a 500 ms re-anchor threshold.
    pub fn new() -> Self {
        Self::with_params(DEFAULT_WINDOW_FRAMES, DEFAULT_REANCHOR_THRESHOLD)
    }

    /// `window_frames` bounds how far ahead of the drain position audio can
    /// be stored. `reanchor_threshold` is in samples.
    pub fn with_params(window_frames: usize, reanchor_threshold: u64) -> Self {
        StereoTimeline {
            pending: VecDeque::new(),
            window: window_frames.max(1) as u64,
            drained: 0,
            lanes: [Lane::default(); 2],
            threshold: i64::try_from(reanchor_threshold).unwrap_or(i64::MAX),
            finished: false,
        }
    }

    /// Places one packet's decoded samples.
    ///
    /// `arrival` is when the packet was received, in samples since answer.
    /// Never blocks; allocates only while the span of undrained audio grows past any it has
    /// held before.
    pub fn push(&mut self, ch: Channel, ssrc: u32, rtp_ts: u32, arrival: u64, pcm: &[i16]) {
        let threshold = self.threshold;
        let arrival_pos = i64::try_from(arrival).unwrap_or(i64::MAX);
        let lane = &mut self.lanes[ch.index()];
        lane.stats.packets += 1;

        let reanchor = |lane: &mut Lane| {
            lane.anchor = Some(Anchor {
                ssrc,
                ts: rtp_ts,
                pos: arrival_pos,
            });
            lane.straying_since = None;
            arrival_pos
        };

        let pos = match lane.anchor {
            None => reanchor(lane),
            Some(a) if a.ssrc != ssrc => {
                lane.stats.reanchors += 1;
                reanchor(lane)
            }
            Some(a) => {
                let delta = i64::from(rtp_ts.wrapping_sub(a.ts) as i32);
                let predicted = a.pos.saturating_add(delta);
                let stray = predicted.saturating_sub(arrival_pos);
                if stray > threshold {
                    lane.stats.reanchors += 1;
                    reanchor(lane)
                } else if stray < -threshold {
                    match lane.straying_since {
                        Some(since) if arrival.saturating_sub(since) >= BACKWARD_CONFIRM => {
                            lane.stats.reanchors += 1;
                            reanchor(lane)
                        }
                        Some(_) => predicted,
                        None => {
                            lane.straying_since = Some(arrival);
                            predicted
                        }
                    }
                } else {
                    lane.straying_since = None;
                    if delta > 0 {
                        lane.anchor = Some(Anchor {
                            ssrc,
                            ts: rtp_ts,
                            pos: predicted,
                        });
                    }
                    predicted
                }
            }
        };
        self.place(ch, pos, pcm);
    }

    fn place(&mut self, ch: Channel, pos: i64, pcm: &[i16]) {
        let n = i64::try_from(pcm.len()).unwrap_or(i64::MAX);
        let drained = i64::try_from(self.drained).unwrap_or(i64::MAX);
        let window = i64::try_from(self.window).unwrap_or(i64::MAX);
        let lane = &mut self.lanes[ch.index()].stats;
        if self.finished {
            lane.late_samples += pcm.len() as u64;
            return;
        }
        // [skip, stop) are the packet-relative indices that fall inside the
        // window [drained, drained + window).
        let skip = drained.saturating_sub(pos).clamp(0, n);
        let stop = drained
            .saturating_add(window)
            .saturating_sub(pos)
            .clamp(skip, n);
        lane.late_samples += skip as u64;
        lane.overflow_samples += (n - stop) as u64;
        lane.placed_samples += (stop - skip) as u64;
        if stop <= skip {
            return;
        }
        let Some(samples) = pcm.get(skip as usize..stop as usize) else {
            return;
        };
        // Inside the window, so the frame index and the length fit a usize.
        let first = (pos + skip - drained) as usize;
        let needed = (first + samples.len()) * 2;
        if needed > self.pending.len() {
            if needed > self.pending.capacity() {
                let target = needed.div_ceil(GROW_SAMPLES) * GROW_SAMPLES;
                self.pending.reserve_exact(target - self.pending.len());
            }
            self.pending.resize(needed, 0);
        }
        let (front, back) = self.pending.as_mut_slices();
        let split = front.len();
        let mut slot = first * 2 + ch.index();
        for &s in samples {
            let dst = if slot < split {
                front.get_mut(slot)
            } else {
                back.get_mut(slot - split)
            };
            if let Some(dst) = dst {
                *dst = s;
            }
            slot += 2;
        }
    }

    /// Appends interleaved frames for positions `[drained, upto)` to `out`
    /// (silence where nothing was pushed) and advances. Returns the number of
    /// frames appended. Positions never drain twice, so anything pushed for
    /// them later counts as late.
    pub fn drain(&mut self, upto: u64, out: &mut Vec<i16>) -> u64 {
        if upto <= self.drained {
            return 0;
        }
        let frames = upto - self.drained;
        let samples = usize::try_from(frames.saturating_mul(2)).unwrap_or(usize::MAX);
        let held = samples.min(self.pending.len());
        out.reserve(samples.min(self.window as usize * 2));
        let (front, back) = self.pending.as_slices();
        let from_front = held.min(front.len());
        out.extend_from_slice(front.get(..from_front).unwrap_or_default());
        out.extend_from_slice(back.get(..held - from_front).unwrap_or_default());
        self.pending.drain(..held);
        // Positions nothing was pushed for: silence.
        if samples > held {
            out.resize(out.len().saturating_add(samples - held), 0);
        }
        // A burst that stretched the buffer (a stalled drain) gives the memory back.
        if self.pending.capacity() > self.pending.len() + 2 * GROW_SAMPLES {
            self.pending.shrink_to(self.pending.len() + GROW_SAMPLES);
        }
        self.drained = upto;
        frames
    }

    /// Drains up to `end` (the hang-up position) exactly, so the recording is
    /// as long as the call, and rejects further pushes as late. Returns the
    /// frames appended.
    pub fn finish(&mut self, end: u64, out: &mut Vec<i16>) -> u64 {
        if end < self.drained {
            tracing::warn!(
                end,
                drained = self.drained,
                "timeline drained past the end of the call"
            );
        }
        let n = self.drain(end, out);
        self.finished = true;
        n
    }

    /// Position up to which frames have been drained.
    pub fn drained(&self) -> u64 {
        self.drained
    }

    /// Window size in frames.
    pub fn window_frames(&self) -> u64 {
        self.window
    }

    /// Counters of one channel.
    pub fn stats(&self, ch: Channel) -> ChannelStats {
        self.lanes[ch.index()].stats
    }
}

// ---------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------

/// A finished, renamed, fsynced recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FinishedRecording {
    pub path: PathBuf,
    pub frames: u64,
    pub duration_ms: u64,
    pub size_bytes: u64,
    /// Lower-case hex SHA-256 of the whole file as stored.
    pub sha256: String,
}

#[cfg(test)]
fn wav_spec() -> hound::WavSpec {
    hound::WavSpec {
        channels: CHANNELS,
        sample_rate: SAMPLE_RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    }
}

/// Ids become file names: reject anything that could escape the dated
/// directory or confuse the `.part` naming.
fn validate_id(id: &str) -> Result<(), RecorderError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@' | b'+'));
    if ok {
        Ok(())
    } else {
        Err(RecorderError::InvalidId(id.to_owned()))
    }
}

fn validate_date((y, m, d): (i32, u32, u32)) -> Result<(), RecorderError> {
    if (1..=9999).contains(&y) && (1..=12).contains(&m) && (1..=31).contains(&d) {
        Ok(())
    } else {
        Err(RecorderError::InvalidDate(y, m, d))
    }
}

/// The I/O half of a recording; lives on the recorder thread.
///
/// The file is written here rather than through `hound::WavWriter`: hound keeps a sample buffer
/// the size of the largest chunk in every open writer (8 kB a call) and rewrites the header with
/// five system calls; here a chunk is converted in one buffer shared by every recording on the
/// thread and written with one `write`, and the header with one `pwrite`. The header is the one
/// hound writes for 16-bit stereo PCM (44 bytes), and hound reads every file back in the tests.
pub(crate) struct RecordingFile {
    file: File,
    part_path: PathBuf,
    final_path: PathBuf,
    frames: u64,
    /// The header on disk describes the frames written (set by `flush`, cleared by `append`).
    header_current: bool,
}

/// Size of the canonical PCM header: RIFF, fmt (16 bytes), data chunk header.
const HEADER_BYTES: u64 = 44;

/// The canonical 44-byte header of a 16-bit stereo 8 kHz PCM WAV holding `data_bytes`.
fn wav_header(data_bytes: u32) -> [u8; HEADER_BYTES as usize] {
    let mut h = [0u8; HEADER_BYTES as usize];
    let block_align = CHANNELS * 2;
    let fields: [&[u8]; 13] = [
        b"RIFF",
        &data_bytes.saturating_add(36).to_le_bytes(),
        b"WAVE",
        b"fmt ",
        &16u32.to_le_bytes(),
        &1u16.to_le_bytes(), // WAVE_FORMAT_PCM
        &CHANNELS.to_le_bytes(),
        &SAMPLE_RATE.to_le_bytes(),
        &(SAMPLE_RATE * u32::from(block_align)).to_le_bytes(),
        &block_align.to_le_bytes(),
        &16u16.to_le_bytes(),
        b"data",
        &data_bytes.to_le_bytes(),
    ];
    let mut at = 0;
    for f in fields {
        if let Some(dst) = h.get_mut(at..at + f.len()) {
            dst.copy_from_slice(f);
        }
        at += f.len();
    }
    h
}

thread_local! {
    /// A chunk's samples as little-endian bytes on their way to the file: one per recorder
    /// thread, not one per recording.
    static WAV_BYTES: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl std::fmt::Debug for RecordingFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingFile")
            .field("part_path", &self.part_path)
            .field("frames", &self.frames)
            .finish_non_exhaustive()
    }
}

/// A recording dropped without `finish` (a write that failed, a call task torn down) still
/// leaves a `.part` whose header describes what was written, for the repair at next start.
impl Drop for RecordingFile {
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            tracing::debug!(error = %e, "header update of a dropped recording failed");
        }
    }
}

/// Where the recording of call `id` started on `date` is kept: `root/YYYY/MM/DD/<id>.wav`. The
/// one place that names a recording's file (its call record is the same path, `.json`).
pub fn recording_path(
    root: &Path,
    id: &str,
    date: (i32, u32, u32),
) -> Result<PathBuf, RecorderError> {
    validate_id(id)?;
    validate_date(date)?;
    let (y, m, d) = date;
    Ok(root
        .join(format!("{y:04}"))
        .join(format!("{m:02}"))
        .join(format!("{d:02}"))
        .join(format!("{id}.wav")))
}

impl RecordingFile {
    /// Creates `root/YYYY/MM/DD/<id>.wav.part` with a valid, empty WAV header
    /// already on disk. Refuses to overwrite an existing `.part` or `.wav`.
    pub fn create(root: &Path, id: &str, date: (i32, u32, u32)) -> Result<Self, RecorderError> {
        let final_path = recording_path(root, id, date)?;
        let dir = final_path.parent().unwrap_or(root).to_path_buf();
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let part_path = dir.join(format!("{id}.wav.part"));
        if final_path.exists() {
            return Err(RecorderError::AlreadyExists(final_path));
        }
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&part_path)
            .map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    RecorderError::AlreadyExists(part_path.clone())
                } else {
                    io_err(&part_path)(e)
                }
            })?;
        let mut rec = RecordingFile {
            file,
            part_path,
            final_path,
            frames: 0,
            header_current: false,
        };
        rec.file
            .write_all(&wav_header(0))
            .map_err(io_err(&rec.part_path))?;
        rec.header_current = true;
        Ok(rec)
    }

    /// Appends interleaved stereo samples (caller, agent, caller, ...).
    pub fn append(&mut self, interleaved: &[i16]) -> Result<(), RecorderError> {
        if interleaved.len() % 2 != 0 {
            return Err(RecorderError::OddSampleCount(interleaved.len()));
        }
        if interleaved.is_empty() {
            return Ok(());
        }
        let new_frames = (interleaved.len() / 2) as u64;
        if (self.frames + new_frames) * FRAME_BYTES > MAX_DATA_BYTES {
            return Err(RecorderError::TooLong(self.part_path.clone()));
        }
        self.header_current = false;
        let written = WAV_BYTES.with_borrow_mut(|bytes| {
            bytes.clear();
            bytes.reserve(interleaved.len() * 2);
            for s in interleaved {
                bytes.extend_from_slice(&s.to_le_bytes());
            }
            let written = self.file.write_all(bytes);
            // A long chunk (a stalled drain) does not stay resident in the thread's buffer.
            if bytes.capacity() > GROW_SAMPLES * 2 * 4 {
                *bytes = Vec::new();
            }
            written
        });
        written.map_err(io_err(&self.part_path))?;
        self.frames += new_frames;
        Ok(())
    }

    /// Writes the header sizes after the audio, so the `.part` file is a valid WAV of everything
    /// appended so far.
    pub fn flush(&mut self) -> Result<(), RecorderError> {
        if self.header_current {
            return Ok(());
        }
        use std::os::unix::fs::FileExt;
        // Bounded by MAX_DATA_BYTES in `append`.
        let data_bytes = u32::try_from(self.frames * FRAME_BYTES).unwrap_or(u32::MAX);
        self.file
            .write_all_at(&wav_header(data_bytes), 0)
            .map_err(io_err(&self.part_path))?;
        self.header_current = true;
        Ok(())
    }

    /// Where the file is being written.
    #[cfg(test)]
    pub fn part_path(&self) -> &Path {
        &self.part_path
    }

    /// Finalizes the header, fsyncs, renames `.wav.part` → `.wav`, fsyncs the
    /// directory and hashes the result.
    pub fn finish(mut self) -> Result<FinishedRecording, RecorderError> {
        self.flush()?;
        self.file.sync_all().map_err(io_err(&self.part_path))?;
        let (part_path, final_path, frames) = (
            std::mem::take(&mut self.part_path),
            std::mem::take(&mut self.final_path),
            self.frames,
        );
        drop(self);
        fs::rename(&part_path, &final_path).map_err(io_err(&final_path))?;
        sync_parent_dir(&final_path);
        let (size_bytes, sha256) = hash_file(&final_path)?;
        Ok(FinishedRecording {
            path: final_path,
            frames,
            duration_ms: frames_to_ms(frames, SAMPLE_RATE),
            size_bytes,
            sha256,
        })
    }
}

fn frames_to_ms(frames: u64, rate: u32) -> u64 {
    frames.saturating_mul(1000) / u64::from(rate.max(1))
}

/// Makes a rename durable. Best effort: some filesystems refuse to fsync
/// directories, and the data itself is already safe.
fn sync_parent_dir(path: &Path) {
    if let Some(dir) = path.parent() {
        if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
            tracing::debug!(dir = %dir.display(), error = %e, "directory fsync failed");
        }
    }
}

fn hash_file(path: &Path) -> Result<(u64, String), RecorderError> {
    let mut file = File::open(path).map_err(io_err(path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err(path)(e)),
        };
        hasher.update(buf.get(..n).unwrap_or_default());
        size += n as u64;
    }
    Ok((size, hex::encode(hasher.finalize())))
}

// ---------------------------------------------------------------------------
// Crash repair
// ---------------------------------------------------------------------------

/// What [`repair_partials`] did with one `.wav.part` file.
#[derive(Debug)]
pub(crate) enum RepairedRecording {
    /// Header sizes rewritten from the file length and renamed to `.wav`.
    Recovered {
        path: PathBuf,
        frames: u64,
        duration_ms: u64,
        size_bytes: u64,
        sha256: String,
        /// Bytes of a trailing partial frame cut off.
        truncated_bytes: u64,
    },
    /// Not repairable (e.g. killed before the header was written, or the
    /// final name is taken): renamed aside, never deleted.
    MovedAside {
        from: PathBuf,
        to: PathBuf,
        reason: String,
    },
    /// An I/O error prevented both repair and moving aside; left in place.
    Failed { path: PathBuf, error: RecorderError },
}

/// Layout of a WAV header as found on disk.
struct WavLayout {
    data_size_offset: u64,
    data_start: u64,
    block_align: u64,
    sample_rate: u32,
}

/// Walks the RIFF chunks up to `data`. Only the `fmt ` fields needed to cut
/// whole frames are trusted; hound always writes a 44-byte canonical header,
/// but parsing the chunks keeps repair correct for any writer.
fn parse_layout(file: &mut File, len: u64) -> Result<WavLayout, &'static str> {
    let mut head = [0u8; 12];
    if len < 12 || file.read_exact(&mut head).is_err() {
        return Err("shorter than a RIFF header");
    }
    if head.get(0..4) != Some(b"RIFF".as_slice()) || head.get(8..12) != Some(b"WAVE".as_slice()) {
        return Err("not a RIFF/WAVE file");
    }
    let mut offset = 12u64;
    let mut fmt: Option<(u64, u32)> = None;
    // hound writes "data" at 36 (or 60 for WAVEFORMATEXTENSIBLE); allow other
    // writers' extra chunks but do not scan megabytes of garbage.
    while offset + 8 <= len && offset < 64 * 1024 {
        let mut chunk = [0u8; 8];
        file.seek(SeekFrom::Start(offset))
            .and_then(|_| file.read_exact(&mut chunk))
            .map_err(|_| "truncated chunk header")?;
        let (id, size_bytes) = chunk.split_at(4);
        let size = u64::from(u32::from_le_bytes(
            size_bytes.try_into().map_err(|_| "bad chunk size")?,
        ));
        if id == b"data" {
            let (block_align, sample_rate) = fmt.ok_or("data chunk before fmt chunk")?;
            return Ok(WavLayout {
                data_size_offset: offset + 4,
                data_start: offset + 8,
                block_align,
                sample_rate,
            });
        }
        if id == b"fmt " {
            let mut body = [0u8; 16];
            if size < 16 || offset + 8 + 16 > len {
                return Err("truncated fmt chunk");
            }
            file.read_exact(&mut body)
                .map_err(|_| "truncated fmt chunk")?;
            let tag = u16::from_le_bytes([body[0], body[1]]);
            let channels = u64::from(u16::from_le_bytes([body[2], body[3]]));
            let rate = u32::from_le_bytes([body[4], body[5], body[6], body[7]]);
            let align = u64::from(u16::from_le_bytes([body[12], body[13]]));
            let bits = u64::from(u16::from_le_bytes([body[14], body[15]]));
            // Only integer PCM as a player reads it (what hound writes): anything else was not
            // written by us, and "repairing" it would leave a file nothing plays.
            if tag != 1 && tag != 0xFFFE {
                return Err("fmt chunk is not PCM");
            }
            if channels == 0 || rate == 0 || ![8, 16, 24, 32].contains(&bits) {
                return Err("fmt chunk has no channels, no rate or odd sample bits");
            }
            let byte_rate = u64::from(u32::from_le_bytes([body[8], body[9], body[10], body[11]]));
            if align != channels * bits / 8 || byte_rate != u64::from(rate) * align {
                return Err("fmt chunk's block align or byte rate does not match the rest");
            }
            fmt = Some((align, rate));
        }
        // RIFF pads an odd chunk to an even length, but common readers (hound, sox) do not
        // skip the pad byte: a recording of ours never has one, so such a file is not ours.
        if size & 1 == 1 {
            return Err("odd-sized chunk before data");
        }
        offset += 8 + size;
    }
    Err("no data chunk header")
}

/// Finds a name for a file moved aside that does not clobber anything.
fn broken_path(part: &Path) -> Option<PathBuf> {
    let name = part.file_name()?.to_str()?;
    let stem = name.strip_suffix(".part")?;
    let base = part.with_file_name(format!("{stem}.broken"));
    if !base.exists() {
        return Some(base);
    }
    (1..1000)
        .map(|i| part.with_file_name(format!("{stem}.broken.{i}")))
        .find(|p| !p.exists())
}

fn move_aside(part: &Path, reason: String) -> RepairedRecording {
    let Some(to) = broken_path(part) else {
        return RepairedRecording::Failed {
            path: part.to_path_buf(),
            error: RecorderError::NotRepairable {
                path: part.to_path_buf(),
                reason: "no free .broken name",
            },
        };
    };
    match fs::rename(part, &to) {
        Ok(()) => {
            sync_parent_dir(&to);
            RepairedRecording::MovedAside {
                from: part.to_path_buf(),
                to,
                reason,
            }
        }
        Err(e) => RepairedRecording::Failed {
            path: part.to_path_buf(),
            error: io_err(part)(e),
        },
    }
}

/// Repairs one `<id>.wav.part` left by a crash.
pub(crate) fn repair_partial(part: &Path) -> RepairedRecording {
    let final_path = match part.to_str().and_then(|s| s.strip_suffix(".part")) {
        Some(p) => PathBuf::from(p),
        None => {
            return RepairedRecording::Failed {
                path: part.to_path_buf(),
                error: RecorderError::NotRepairable {
                    path: part.to_path_buf(),
                    reason: "name does not end in .part",
                },
            }
        }
    };
    if final_path.exists() {
        return move_aside(part, format!("{} already exists", final_path.display()));
    }
    match rewrite_header(part) {
        Ok(Ok(fix)) => {
            if let Err(e) = fs::rename(part, &final_path) {
                return RepairedRecording::Failed {
                    path: part.to_path_buf(),
                    error: io_err(&final_path)(e),
                };
            }
            sync_parent_dir(&final_path);
            match hash_file(&final_path) {
                Ok((size_bytes, sha256)) => RepairedRecording::Recovered {
                    path: final_path,
                    frames: fix.frames,
                    duration_ms: frames_to_ms(fix.frames, fix.sample_rate),
                    size_bytes,
                    sha256,
                    truncated_bytes: fix.truncated_bytes,
                },
                Err(error) => RepairedRecording::Failed {
                    path: final_path,
                    error,
                },
            }
        }
        Ok(Err(reason)) => move_aside(part, reason.to_owned()),
        Err(error) => RepairedRecording::Failed {
            path: part.to_path_buf(),
            error,
        },
    }
}

/// What [`rewrite_header`] found and fixed.
struct HeaderFix {
    frames: u64,
    sample_rate: u32,
    truncated_bytes: u64,
}

/// Rewrites RIFF and data sizes from the file length. The outer `Result` is
/// an I/O failure; the inner one says why the file is not a WAV we can fix.
fn rewrite_header(part: &Path) -> Result<Result<HeaderFix, &'static str>, RecorderError> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(part)
        .map_err(io_err(part))?;
    let len = file.metadata().map_err(io_err(part))?.len();
    let layout = match parse_layout(&mut file, len) {
        Ok(l) => l,
        Err(reason) => return Ok(Err(reason)),
    };
    let available = len.saturating_sub(layout.data_start);
    let max_data =
        (u64::from(u32::MAX) - (layout.data_start - 8)) / layout.block_align * layout.block_align;
    let data_len = (available / layout.block_align * layout.block_align).min(max_data);
    let new_len = layout.data_start + data_len;
    let truncated = len - new_len;
    // The last word is a player's: hound must read the header as it will be (the fuzzer found
    // fmt chunks that pass the checks above and that no reader takes), else it is not ours.
    let mut header = vec![0u8; usize::try_from(layout.data_start).unwrap_or(usize::MAX)];
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.read_exact(&mut header))
        .map_err(io_err(part))?;
    let riff_size = u32::try_from(new_len - 8).unwrap_or(u32::MAX);
    let data_size = u32::try_from(data_len).unwrap_or(u32::MAX);
    header[4..8].copy_from_slice(&riff_size.to_le_bytes());
    let at = usize::try_from(layout.data_size_offset).unwrap_or(usize::MAX);
    if let Some(field) = header.get_mut(at..at + 4) {
        field.copy_from_slice(&data_size.to_le_bytes());
    }
    if hound::WavReader::new(io::Cursor::new(&header)).is_err() {
        return Ok(Err("a WAV reader refuses its header"));
    }
    if truncated > 0 {
        file.set_len(new_len).map_err(io_err(part))?;
    }
    file.seek(SeekFrom::Start(4))
        .and_then(|_| file.write_all(&riff_size.to_le_bytes()))
        .and_then(|_| file.seek(SeekFrom::Start(layout.data_size_offset)))
        .and_then(|_| file.write_all(&data_size.to_le_bytes()))
        .and_then(|_| file.sync_all())
        .map_err(io_err(part))?;
    Ok(Ok(HeaderFix {
        frames: data_len / layout.block_align,
        sample_rate: layout.sample_rate,
        truncated_bytes: truncated,
    }))
}

/// Repairs every `*.wav.part` under `root` (recursively, not following
/// symlinks). Must run before any new recording starts under `root`, or it
/// would "repair" live files: [`Recorder::spawn`] does it first thing on its
/// thread. A missing root is not an error.
pub(crate) fn repair_partials(root: &Path) -> Result<Vec<RepairedRecording>, RecorderError> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound && dir == root => return Ok(out),
            Err(e) if dir == root => return Err(io_err(&dir)(e)),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot scan recordings directory");
                continue;
            }
        };
        for entry in entries {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot read directory entry");
                    continue;
                }
            };
            let path = entry.path();
            let Ok(ft) = entry.file_type() else { continue };
            if ft.is_dir() {
                dirs.push(path);
            } else if ft.is_file() && path.to_str().is_some_and(|s| s.ends_with(".wav.part")) {
                let outcome = repair_partial(&path);
                log_repair(&outcome);
                out.push(outcome);
            }
        }
    }
    Ok(out)
}

fn log_repair(outcome: &RepairedRecording) {
    match outcome {
        RepairedRecording::Recovered {
            path,
            duration_ms,
            sha256,
            truncated_bytes,
            ..
        } => tracing::warn!(
            path = %path.display(),
            duration_ms,
            sha256 = %sha256,
            truncated_bytes,
            "recovered recording interrupted by a crash"
        ),
        RepairedRecording::MovedAside { from, to, reason } => tracing::error!(
            from = %from.display(),
            to = %to.display(),
            reason = %reason,
            "unrepairable partial recording moved aside"
        ),
        RepairedRecording::Failed { path, error } => tracing::error!(
            path = %path.display(),
            error = %error,
            "could not repair partial recording"
        ),
    }
}

// ---------------------------------------------------------------------------
// Recorder thread
// ---------------------------------------------------------------------------

type Completion = Box<dyn FnOnce(Result<FinishedRecording, RecorderError>) + Send>;

/// Chunk buffers shared by every call and the recorder thread. A call holds one only from
/// draining its timeline to handing the chunk over, so the buffers follow the chunks in flight,
/// not the number of calls (two spare buffers kept per call were 16 kB a call).
#[derive(Debug, Default)]
struct ChunkPool(std::sync::Mutex<Vec<Vec<i16>>>);

/// Buffers kept for reuse; more in flight at once are allocated and freed.
const POOLED_CHUNKS: usize = 256;

impl ChunkPool {
    fn take(&self) -> Vec<i16> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop()
            .unwrap_or_default()
    }

    fn put(&self, mut chunk: Vec<i16>) {
        // A chunk stretched by a stalled drain is not worth keeping.
        if chunk.capacity() > GROW_SAMPLES * 4 {
            return;
        }
        chunk.clear();
        let mut free = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if free.len() < POOLED_CHUNKS {
            free.push(chunk);
        }
    }
}

enum Command {
    Start {
        call: u64,
        id: String,
        date: (i32, u32, u32),
    },
    Chunk {
        call: u64,
        samples: Vec<i16>,
    },
    Finish {
        call: u64,
        done: Option<Completion>,
    },
    Shutdown,
}

enum CallFile {
    Open {
        file: RecordingFile,
        dirty: bool,
    },
    /// Creating or writing failed; chunks are discarded and the error is
    /// reported at finish. Any `.part` left is salvaged at next start-up.
    Failed(RecorderError),
}

struct CallState {
    id: String,
    file: CallFile,
}

/// The recorder thread's state: one thread owns every open recording.
pub(crate) struct Recorder {
    root: PathBuf,
    rx: Receiver<Command>,
    calls: HashMap<u64, CallState>,
    pool: std::sync::Arc<ChunkPool>,
    /// Where ended recordings go to be fsynced, renamed and hashed (see [`Finisher`]).
    finisher: Option<Finisher>,
}

/// A recording that has ended, for the finisher thread.
struct Ending {
    id: String,
    file: RecordingFile,
    done: Option<Completion>,
}

/// The thread that finishes ended recordings. An fsync can take a second or more while the
/// disk is busy (1.2 s seen on this machine's ext4 with PostgreSQL beside it, at 25 calls a
/// second); done on the recorder thread, it held up every other call's audio for as long, in
/// memory rather than on disk. The recorder thread only writes.
struct Finisher {
    tx: Sender<Ending>,
    thread: JoinHandle<()>,
}

impl Finisher {
    fn spawn() -> Option<Finisher> {
        let (tx, rx) = mpsc::channel::<Ending>();
        let thread = std::thread::Builder::new()
            .name("recording-finish".into())
            .spawn(move || {
                for e in rx {
                    finish_file(&e.id, e.file, e.done);
                }
            })
            .map_err(|e| tracing::warn!(error = %e, "no finisher thread: recordings finish inline"))
            .ok()?;
        Some(Finisher { tx, thread })
    }

    /// Waits for every recording handed over to be finished.
    fn drain(self) {
        drop(self.tx);
        let _ = self.thread.join();
    }
}

/// Finishes an ended recording ([`RecordingFile::finish`]) and reports it.
fn finish_file(id: &str, file: RecordingFile, done: Option<Completion>) {
    report_finished(id, file.finish(), done);
}

fn report_finished(
    id: &str,
    result: Result<FinishedRecording, RecorderError>,
    done: Option<Completion>,
) {
    match &result {
        Ok(rec) => tracing::info!(
            id = %id,
            path = %rec.path.display(),
            duration_ms = rec.duration_ms,
            sha256 = %rec.sha256,
            "recording finished"
        ),
        Err(e) => tracing::error!(id = %id, error = %e, "recording failed"),
    }
    if done.is_none() && result.is_ok() {
        tracing::warn!(id = %id, "recording closed without an explicit finish");
    }
    if let Some(done) = done {
        done(result);
    }
}

impl Recorder {
    /// Starts the recorder thread for `root` (the `recordings` directory).
    /// The thread first repairs `.part` files left by a previous crash, then
    /// serves calls; calls started meanwhile queue.
    pub fn spawn(root: impl Into<PathBuf>) -> Result<RecorderHandle, RecorderError> {
        let root = root.into();
        let (tx, rx) = mpsc::channel();
        let pool = std::sync::Arc::new(ChunkPool::default());
        let recorder = Recorder {
            root: root.clone(),
            rx,
            calls: HashMap::new(),
            pool: pool.clone(),
            finisher: None,
        };
        let thread = std::thread::Builder::new()
            .name("recorder".into())
            .spawn(move || recorder.run())
            .map_err(io_err(&root))?;
        Ok(RecorderHandle {
            tx,
            pool,
            next_call: AtomicU64::new(1),
            root,
            thread: Some(thread),
        })
    }

    fn run(mut self) {
        match repair_partials(&self.root) {
            Ok(repaired) if !repaired.is_empty() => {
                tracing::warn!(count = repaired.len(), "repaired partial recordings");
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "recording repair scan failed"),
        }
        self.finisher = Finisher::spawn();
        let mut next_flush = Instant::now() + FLUSH_INTERVAL;
        loop {
            let timeout = next_flush.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(timeout) {
                Ok(Command::Shutdown) | Err(RecvTimeoutError::Disconnected) => break,
                Ok(cmd) => self.handle(cmd),
                Err(RecvTimeoutError::Timeout) => {}
            }
            let now = Instant::now();
            if now >= next_flush {
                self.flush_all();
                next_flush = now + FLUSH_INTERVAL;
            }
        }
        let open: Vec<u64> = self.calls.keys().copied().collect();
        for call in open {
            self.finish_call(call, None);
        }
        if let Some(f) = self.finisher.take() {
            f.drain();
        }
        tracing::debug!("recorder thread stopped");
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Start { call, id, date } => {
                let file = match RecordingFile::create(&self.root, &id, date) {
                    Ok(file) => CallFile::Open { file, dirty: false },
                    Err(e) => {
                        tracing::error!(id = %id, error = %e, "cannot start recording");
                        CallFile::Failed(e)
                    }
                };
                self.calls.insert(call, CallState { id, file });
            }
            Command::Chunk { call, samples } => {
                let Some(state) = self.calls.get_mut(&call) else {
                    self.pool.put(samples);
                    return;
                };
                if let CallFile::Open { file, dirty } = &mut state.file {
                    match file.append(&samples) {
                        Ok(()) => *dirty = true,
                        Err(e) => {
                            tracing::error!(id = %state.id, error = %e, "recording write failed");
                            state.file = CallFile::Failed(e);
                        }
                    }
                }
                self.pool.put(samples);
            }
            Command::Finish { call, done } => self.finish_call(call, done),
            Command::Shutdown => {}
        }
    }

    fn flush_all(&mut self) {
        for state in self.calls.values_mut() {
            if let CallFile::Open { file, dirty } = &mut state.file {
                if !*dirty {
                    continue;
                }
                match file.flush() {
                    Ok(()) => *dirty = false,
                    Err(e) => {
                        tracing::error!(id = %state.id, error = %e, "recording flush failed");
                        state.file = CallFile::Failed(e);
                    }
                }
            }
        }
    }

    fn finish_call(&mut self, call: u64, done: Option<Completion>) {
        let Some(state) = self.calls.remove(&call) else {
            if let Some(done) = done {
                done(Err(RecorderError::Stopped));
            }
            return;
        };
        match state.file {
            CallFile::Open { file, .. } => {
                let ending = Ending {
                    id: state.id,
                    file,
                    done,
                };
                // The finisher thread, or here if it is gone.
                let ending = match &self.finisher {
                    Some(f) => match f.tx.send(ending) {
                        Ok(()) => return,
                        Err(mpsc::SendError(e)) => e,
                    },
                    None => ending,
                };
                finish_file(&ending.id, ending.file, ending.done);
            }
            CallFile::Failed(e) => report_finished(&state.id, Err(e), done),
        }
    }
}

/// Cheap to share (`Arc<RecorderHandle>`): starting a call only sends a
/// message. Dropping it asks the thread to finish every open recording and
/// stop, without waiting.
pub(crate) struct RecorderHandle {
    tx: Sender<Command>,
    pool: std::sync::Arc<ChunkPool>,
    next_call: AtomicU64,
    root: PathBuf,
    thread: Option<JoinHandle<()>>,
}

impl RecorderHandle {
    /// Opens a recording sink for one call. `id` and `date` are checked here;
    /// file-system errors surface from [`CallRecording::finish`] (and are
    /// logged when they happen).
    pub fn start(&self, id: &str, date: (i32, u32, u32)) -> Result<CallRecording, RecorderError> {
        validate_id(id)?;
        validate_date(date)?;
        let call = self.next_call.fetch_add(1, Ordering::Relaxed);
        self.tx
            .send(Command::Start {
                call,
                id: id.to_owned(),
                date,
            })
            .map_err(|_| RecorderError::Stopped)?;
        Ok(CallRecording {
            call,
            id: id.to_owned(),
            tx: self.tx.clone(),
            pool: self.pool.clone(),
            finished: false,
        })
    }

    /// The file a recording started now with [`RecorderHandle::start`] will be kept in.
    pub fn path_for(&self, id: &str, date: (i32, u32, u32)) -> Result<PathBuf, RecorderError> {
        recording_path(&self.root, id, date)
    }

    /// Finishes every open recording (their completions get the result as
    /// usual; sinks still alive get [`RecorderError::Stopped`] afterwards)
    /// and waits for the thread. (The server drops the handle instead, which finishes them
    /// without waiting; graceful shutdown is to wait here.)
    #[cfg(test)]
    pub fn shutdown(mut self) -> Result<(), RecorderError> {
        let _ = self.tx.send(Command::Shutdown);
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| RecorderError::ThreadPanicked),
            None => Ok(()),
        }
    }
}

impl Drop for RecorderHandle {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.tx.send(Command::Shutdown);
        }
    }
}

/// One call's connection to the recorder thread.
///
/// Dropping it without [`finish`](Self::finish) still finalizes the file, so
/// an aborted call task never leaves a `.part` behind.
pub(crate) struct CallRecording {
    call: u64,
    id: String,
    tx: Sender<Command>,
    pool: std::sync::Arc<ChunkPool>,
    finished: bool,
}

impl std::fmt::Debug for CallRecording {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallRecording")
            .field("call", &self.call)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl CallRecording {
    /// An empty buffer to drain the timeline into, from the pool shared by every call (or
    /// `Vec::new()`, which does not allocate).
    pub fn buffer(&self) -> Vec<i16> {
        self.pool.take()
    }

    /// Hands a drained chunk of interleaved frames to the recorder thread; the buffer goes back
    /// to the pool once written. Never blocks.
    pub fn submit(&mut self, chunk: Vec<i16>) -> Result<(), RecorderError> {
        if chunk.len() % 2 != 0 {
            return Err(RecorderError::OddSampleCount(chunk.len()));
        }
        if chunk.is_empty() {
            self.pool.put(chunk);
            return Ok(());
        }
        self.tx
            .send(Command::Chunk {
                call: self.call,
                samples: chunk,
            })
            .map_err(|_| RecorderError::Stopped)
    }

    /// Finishes the recording; the result arrives on the returned receiver
    /// (poll it with `recv_timeout`, or `recv` from a blocking task).
    pub fn finish(self) -> Receiver<Result<FinishedRecording, RecorderError>> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.finish_with(move |result| {
            let _ = tx.send(result);
        });
        rx
    }

    /// Finishes the recording and calls `done` with the result on the
    /// recorder thread (keep it short: it delays every other call's writes).
    pub fn finish_with<F>(mut self, done: F)
    where
        F: FnOnce(Result<FinishedRecording, RecorderError>) + Send + 'static,
    {
        self.finished = true;
        let cmd = Command::Finish {
            call: self.call,
            done: Some(Box::new(done)),
        };
        if let Err(mpsc::SendError(Command::Finish {
            done: Some(done), ..
        })) = self.tx.send(cmd)
        {
            done(Err(RecorderError::Stopped));
        }
    }
}

impl Drop for CallRecording {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.tx.send(Command::Finish {
                call: self.call,
                done: None,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PKT: usize = 160; // 20 ms

    /// Self-deleting scratch directory (the crate has no `tempfile`
    /// dev-dependency).
    struct TempDir(PathBuf);

    impl TempDir {
        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn tempdir() -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "screenpop-recorder-test-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn ramp(start: i16, n: usize) -> Vec<i16> {
        (0..n).map(|i| start.wrapping_add(i as i16)).collect()
    }

    fn left(frames: &[i16]) -> Vec<i16> {
        frames.iter().step_by(2).copied().collect()
    }

    fn right(frames: &[i16]) -> Vec<i16> {
        frames.iter().skip(1).step_by(2).copied().collect()
    }

    #[test]
    fn reordered_packets_land_by_timestamp() {
        let mut tl = StereoTimeline::new();
        let ts0 = 1_000u32;
        let pkts: Vec<Vec<i16>> = (0..5).map(|k| vec![(k + 1) as i16; PKT]).collect();
        // Arrival order 0, 2, 1, 4, 3 with jitter.
        for &(k, arrival) in &[(0u32, 0u64), (2, 330), (1, 335), (4, 650), (3, 655)] {
            tl.push(
                Channel::Caller,
                7,
                ts0 + k * PKT as u32,
                arrival,
                &pkts[k as usize],
            );
        }
        let mut out = Vec::new();
        tl.finish(5 * PKT as u64, &mut out);
        let l = left(&out);
        assert_eq!(l.len(), 5 * PKT);
        for k in 0..5 {
            assert!(l[k * PKT..(k + 1) * PKT]
                .iter()
                .all(|&s| s == (k + 1) as i16));
        }
        let st = tl.stats(Channel::Caller);
        assert_eq!(st.reanchors, 0);
        assert_eq!(st.late_samples, 0);
        assert_eq!(st.placed_samples, 5 * PKT as u64);
    }

    #[test]
    fn loss_is_silence_and_duplicates_overwrite() {
        let mut tl = StereoTimeline::new();
        tl.push(Channel::Agent, 1, 0, 0, &[5; PKT]);
        // Packet 1 lost; packet 2 arrives twice.
        tl.push(Channel::Agent, 1, 2 * PKT as u32, 320, &[9; PKT]);
        tl.push(Channel::Agent, 1, 2 * PKT as u32, 321, &[9; PKT]);
        let mut out = Vec::new();
        tl.finish(3 * PKT as u64, &mut out);
        let r = right(&out);
        assert!(r[..PKT].iter().all(|&s| s == 5));
        assert!(r[PKT..2 * PKT].iter().all(|&s| s == 0));
        assert!(r[2 * PKT..].iter().all(|&s| s == 9));
        assert!(left(&out).iter().all(|&s| s == 0));
    }

    #[test]
    fn timestamp_wrap_is_continuous() {
        let mut tl = StereoTimeline::new();
        let ts0 = u32::MAX - 200; // wraps inside the second packet
        for k in 0..4u32 {
            tl.push(
                Channel::Caller,
                3,
                ts0.wrapping_add(k * PKT as u32),
                u64::from(k) * PKT as u64 + u64::from(k % 2) * 10,
                &ramp((k * PKT as u32) as i16, PKT),
            );
        }
        let mut out = Vec::new();
        tl.finish(4 * PKT as u64, &mut out);
        assert_eq!(left(&out), ramp(0, 4 * PKT));
        assert_eq!(tl.stats(Channel::Caller).reanchors, 0);
    }

    #[test]
    fn ssrc_change_reanchors_at_arrival() {
        let mut tl = StereoTimeline::new();
        tl.push(Channel::Caller, 1, 50_000, 0, &[1; PKT]);
        // New source with an unrelated timestamp base, 1 s later.
        tl.push(Channel::Caller, 2, 7, 8000, &[2; PKT]);
        tl.push(
            Channel::Caller,
            2,
            7 + PKT as u32,
            8000 + PKT as u64,
            &[3; PKT],
        );
        let mut out = Vec::new();
        tl.finish(8000 + 2 * PKT as u64, &mut out);
        let l = left(&out);
        assert!(l[..PKT].iter().all(|&s| s == 1));
        assert!(l[PKT..8000].iter().all(|&s| s == 0));
        assert!(l[8000..8000 + PKT].iter().all(|&s| s == 2));
        assert!(l[8000 + PKT..].iter().all(|&s| s == 3));
        assert_eq!(tl.stats(Channel::Caller).reanchors, 1);
    }

    #[test]
    fn forward_timestamp_jump_reanchors_immediately() {
        let mut tl = StereoTimeline::new();
        tl.push(Channel::Caller, 1, 0, 0, &[1; PKT]);
        // Same SSRC, timestamp jumps 10 s ahead of real time.
        tl.push(
            Channel::Caller,
            1,
            80_000 + PKT as u32,
            PKT as u64,
            &[2; PKT],
        );
        let mut out = Vec::new();
        tl.finish(2 * PKT as u64, &mut out);
        assert!(left(&out)[PKT..].iter().all(|&s| s == 2));
        assert_eq!(tl.stats(Channel::Caller).reanchors, 1);
    }

    #[test]
    fn late_burst_is_placed_but_backward_jump_reanchors() {
        // A 600 ms stall: the burst is placed by timestamp, no re-anchor.
        let mut tl = StereoTimeline::new();
        for k in 0..40u64 {
            let arrival = if (5..35).contains(&k) {
                35 * PKT as u64 + k
            } else {
                k * PKT as u64
            };
            tl.push(
                Channel::Caller,
                1,
                (k * PKT as u64) as u32,
                arrival,
                &[k as i16 + 1; PKT],
            );
        }
        let mut out = Vec::new();
        tl.finish(40 * PKT as u64, &mut out);
        let l = left(&out);
        for k in 0..40 {
            assert!(l[k * PKT..(k + 1) * PKT].iter().all(|&s| s == k as i16 + 1));
        }
        assert_eq!(tl.stats(Channel::Caller).reanchors, 0);

        // Sender restarts with a lower timestamp: persistent stray → re-anchor
        // within 60 ms.
        let mut tl = StereoTimeline::new();
        for k in 0..10u64 {
            tl.push(
                Channel::Agent,
                1,
                100_000 + (k * PKT as u64) as u32,
                k * PKT as u64,
                &[1; PKT],
            );
        }
        for k in 10..20u64 {
            tl.push(
                Channel::Agent,
                1,
                ((k - 10) * PKT as u64) as u32,
                k * PKT as u64,
                &[2; PKT],
            );
        }
        assert_eq!(tl.stats(Channel::Agent).reanchors, 1);
        let mut out = Vec::new();
        tl.finish(20 * PKT as u64, &mut out);
        let r = right(&out);
        assert!(r[..10 * PKT].iter().all(|&s| s == 1));
        // At most the 60 ms confirmation window is lost.
        let restored = r[10 * PKT..].iter().filter(|&&s| s == 2).count();
        assert!(restored >= 10 * PKT - 4 * PKT, "restored {restored}");
    }

    #[test]
    fn channels_never_leak() {
        let mut tl = StereoTimeline::new();
        for k in 0..100u64 {
            let ts = (k * PKT as u64) as u32;
            tl.push(Channel::Caller, 11, ts, k * PKT as u64, &[1000; PKT]);
            tl.push(
                Channel::Agent,
                22,
                ts.wrapping_add(12345),
                k * PKT as u64 + (k % 3),
                &[-1000; PKT],
            );
        }
        let mut out = Vec::new();
        tl.finish(100 * PKT as u64, &mut out);
        assert!(left(&out).iter().all(|&s| s == 1000));
        assert!(right(&out).iter().all(|&s| s == -1000));
    }

    #[test]
    fn late_and_overflow_samples_are_counted() {
        let mut tl = StereoTimeline::with_params(1000, DEFAULT_REANCHOR_THRESHOLD);
        tl.push(Channel::Caller, 1, 0, 0, &[1; PKT]);
        let mut out = Vec::new();
        tl.drain(100, &mut out);
        // Duplicate of the first packet: 100 samples are already drained.
        tl.push(Channel::Caller, 1, 0, 200, &[1; PKT]);
        assert_eq!(tl.stats(Channel::Caller).late_samples, 100);
        // Beyond the 1000-frame window (drained = 100 → limit 1100).
        tl.push(Channel::Caller, 1, 1000, 1000, &[2; PKT]);
        assert_eq!(tl.stats(Channel::Caller).overflow_samples, 60);
        tl.finish(1200, &mut out);
        assert_eq!(out.len(), 2400);
        let l = left(&out);
        assert!(l[1000..1100].iter().all(|&s| s == 2));
        assert!(l[1100..].iter().all(|&s| s == 0));
        // After finish, everything is late.
        tl.push(Channel::Caller, 1, 1200, 1200, &[3; PKT]);
        assert_eq!(tl.stats(Channel::Caller).late_samples, 100 + PKT as u64);
    }

    #[test]
    fn drain_far_beyond_window_is_silence() {
        let mut tl = StereoTimeline::with_params(100, DEFAULT_REANCHOR_THRESHOLD);
        tl.push(Channel::Caller, 1, 0, 0, &[4; 50]);
        let mut out = Vec::new();
        assert_eq!(tl.drain(1000, &mut out), 1000);
        assert_eq!(out.len(), 2000);
        assert!(left(&out)[..50].iter().all(|&s| s == 4));
        assert!(out[100..].iter().all(|&s| s == 0));
        // The ring was cleared: nothing old reappears.
        out.clear();
        tl.drain(1100, &mut out);
        assert!(out.iter().all(|&s| s == 0));
    }

    #[test]
    fn length_equals_end_exactly() {
        for end in [0u64, 1, 159, 160, 8000, 12_345] {
            let mut tl = StereoTimeline::new();
            let mut total = 0usize;
            let mut out = Vec::new();
            let mut k = 0u64;
            while k * (PKT as u64) < end {
                tl.push(
                    Channel::Caller,
                    1,
                    (k * PKT as u64) as u32,
                    k * PKT as u64,
                    &[1; PKT],
                );
                if k % 50 == 49 {
                    tl.drain((k * PKT as u64).saturating_sub(1600), &mut out);
                    total += out.len();
                    out.clear();
                }
                k += 1;
            }
            tl.finish(end, &mut out);
            total += out.len();
            assert_eq!(total as u64, end * 2, "end {end}");
        }
    }

    #[test]
    fn an_hour_of_packets_has_no_drift() {
        const HOUR: u64 = 3600 * SAMPLE_RATE as u64;
        let mut tl = StereoTimeline::new();
        let mut out = Vec::with_capacity(2 * SAMPLE_RATE as usize * 2);
        let mut caller = [0i16; PKT];
        let mut agent = [0i16; PKT];
        let mut frames = 0u64;
        let mut next_drain = SAMPLE_RATE as u64;
        let caller_ts0 = 0xFFF0_0000u32; // wraps during the call
        let agent_ts0 = 12_345u32;
        let check = |out: &[i16], first: u64| {
            for (i, f) in out.chunks_exact(2).enumerate() {
                let p = first + i as u64;
                assert_eq!(f[0], (p % 30_000) as i16, "caller at {p}");
                assert_eq!(f[1], -((p % 20_000) as i16), "agent at {p}");
            }
        };
        for k in 0..HOUR / PKT as u64 {
            let pos = k * PKT as u64;
            for (i, (c, a)) in caller.iter_mut().zip(agent.iter_mut()).enumerate() {
                let p = pos + i as u64;
                *c = (p % 30_000) as i16;
                *a = -((p % 20_000) as i16);
            }
            // Deterministic jitter of 0-70 ms (none on the first packet, which
            // anchors position 0); the sender's timestamp clock is exact.
            let jitter = (k * 7919) % 560;
            tl.push(
                Channel::Caller,
                0xCA11,
                caller_ts0.wrapping_add(pos as u32),
                pos + jitter,
                &caller,
            );
            tl.push(
                Channel::Agent,
                0xA6E7,
                agent_ts0.wrapping_add(pos as u32),
                pos + (jitter * 3) % 560,
                &agent,
            );
            let now = pos + PKT as u64;
            if now >= next_drain {
                let first = tl.drained();
                frames += tl.drain(now - 1600, &mut out);
                check(&out, first);
                out.clear();
                next_drain += SAMPLE_RATE as u64;
            }
        }
        let first = tl.drained();
        frames += tl.finish(HOUR, &mut out);
        check(&out, first);
        assert_eq!(frames, 28_800_000);
        for ch in [Channel::Caller, Channel::Agent] {
            let st = tl.stats(ch);
            assert_eq!(st.reanchors, 0);
            assert_eq!(st.late_samples, 0);
            assert_eq!(st.overflow_samples, 0);
            assert_eq!(st.placed_samples, HOUR);
        }
    }

    // --- files ---

    fn read_wav(path: &Path) -> (hound::WavSpec, Vec<i16>) {
        let mut r = hound::WavReader::open(path).unwrap();
        let spec = r.spec();
        let samples = r.samples::<i16>().map(|s| s.unwrap()).collect();
        (spec, samples)
    }

    #[test]
    fn file_is_readable_mid_call() {
        let dir = tempdir();
        let mut f = RecordingFile::create(dir.path(), "call-1", (2024, 3, 7)).unwrap();
        assert_eq!(
            f.part_path(),
            dir.path().join("2024/03/07/call-1.wav.part").as_path()
        );
        // Valid (empty) WAV from the first moment.
        let (spec, samples) = read_wav(f.part_path());
        assert_eq!(spec, wav_spec());
        assert!(samples.is_empty());

        let chunk = ramp(0, 2 * 8000);
        f.append(&chunk).unwrap();
        f.flush().unwrap();
        let (spec, samples) = read_wav(f.part_path());
        assert_eq!(spec.channels, 2);
        assert_eq!(spec.sample_rate, 8000);
        assert_eq!(spec.bits_per_sample, 16);
        assert_eq!(samples, chunk);

        f.append(&chunk).unwrap();
        let done = f.finish().unwrap();
        assert_eq!(done.path, dir.path().join("2024/03/07/call-1.wav"));
        assert!(!dir.path().join("2024/03/07/call-1.wav.part").exists());
        assert_eq!(done.frames, 16_000);
        assert_eq!(done.duration_ms, 2000);
        assert_eq!(done.size_bytes, 44 + 64_000);
        let bytes = fs::read(&done.path).unwrap();
        assert_eq!(done.sha256, hex::encode(Sha256::digest(&bytes)));
        assert_eq!(bytes.len() as u64, done.size_bytes);
        let (_, samples) = read_wav(&done.path);
        assert_eq!(samples.len(), 32_000);
    }

    #[test]
    fn create_refuses_bad_ids_and_existing_files() {
        let dir = tempdir();
        for bad in ["", "../x", "a/b", ".hidden", "a\0b", &"x".repeat(129)] {
            assert!(matches!(
                RecordingFile::create(dir.path(), bad, (2024, 1, 1)),
                Err(RecorderError::InvalidId(_))
            ));
        }
        assert!(matches!(
            RecordingFile::create(dir.path(), "ok", (2024, 13, 1)),
            Err(RecorderError::InvalidDate(2024, 13, 1))
        ));
        let f = RecordingFile::create(dir.path(), "dup", (2024, 1, 1)).unwrap();
        assert!(matches!(
            RecordingFile::create(dir.path(), "dup", (2024, 1, 1)),
            Err(RecorderError::AlreadyExists(_))
        ));
        f.finish().unwrap();
        assert!(matches!(
            RecordingFile::create(dir.path(), "dup", (2024, 1, 1)),
            Err(RecorderError::AlreadyExists(_))
        ));
        let mut f = RecordingFile::create(dir.path(), "odd", (2024, 1, 1)).unwrap();
        assert!(matches!(
            f.append(&[1, 2, 3]),
            Err(RecorderError::OddSampleCount(3))
        ));
    }

    #[test]
    fn kill_dash_nine_is_repaired() {
        let dir = tempdir();
        let mut f = RecordingFile::create(dir.path(), "crash", (2024, 12, 31)).unwrap();
        let part = f.part_path().to_path_buf();
        let first = ramp(100, 2 * 8000);
        f.append(&first).unwrap();
        f.flush().unwrap();
        // Three more seconds, larger than the write buffer, so they reach the
        // file without a header update.
        let more = ramp(-5000, 6 * 8000);
        f.append(&more).unwrap();
        // kill -9: no Drop, no finalize.
        std::mem::forget(f);
        // The header still describes only the first second...
        let (_, samples) = read_wav(&part);
        assert_eq!(samples, first);
        // ...and the kernel was mid-write: a torn trailing frame.
        OpenOptions::new()
            .append(true)
            .open(&part)
            .unwrap()
            .write_all(&[0xAB, 0xCD, 0xEF])
            .unwrap();
        let len = fs::metadata(&part).unwrap().len();
        let expect_frames = (len - 44) / 4;
        assert!(expect_frames > 8000);

        let repaired = repair_partials(dir.path()).unwrap();
        assert_eq!(repaired.len(), 1);
        let RepairedRecording::Recovered {
            path,
            frames,
            duration_ms,
            size_bytes,
            sha256,
            truncated_bytes,
        } = &repaired[0]
        else {
            panic!("not recovered: {repaired:?}");
        };
        assert_eq!(path, &dir.path().join("2024/12/31/crash.wav"));
        assert!(!part.exists());
        assert_eq!(*truncated_bytes, 3);
        assert_eq!(*frames, expect_frames);
        assert_eq!(*duration_ms, expect_frames * 1000 / 8000);
        assert_eq!(*size_bytes, 44 + expect_frames * 4);
        let bytes = fs::read(path).unwrap();
        assert_eq!(*sha256, hex::encode(Sha256::digest(&bytes)));
        let (spec, samples) = read_wav(path);
        assert_eq!(spec, wav_spec());
        assert_eq!(samples.len() as u64, expect_frames * 2);
        assert_eq!(&samples[..first.len()], &first[..]);
        assert_eq!(
            &samples[first.len()..],
            &more[..samples.len() - first.len()]
        );
        // Idempotent.
        assert!(repair_partials(dir.path()).unwrap().is_empty());
    }

    #[test]
    fn headerless_part_is_moved_aside() {
        let dir = tempdir();
        let day = dir.path().join("2025/01/02");
        fs::create_dir_all(&day).unwrap();
        fs::write(day.join("empty.wav.part"), b"").unwrap();
        fs::write(day.join("short.wav.part"), b"RIFF\0\0\0\0WAVEfmt ").unwrap();
        fs::write(day.join("other.txt.part"), b"ignored").unwrap();
        let mut repaired = repair_partials(dir.path()).unwrap();
        repaired.sort_by_key(|r| format!("{r:?}"));
        assert_eq!(repaired.len(), 2);
        for r in &repaired {
            let RepairedRecording::MovedAside { from, to, .. } = r else {
                panic!("{r:?}");
            };
            assert!(!from.exists());
            assert!(to.exists());
            assert!(to.to_str().unwrap().ends_with(".wav.broken"));
        }
        assert!(day.join("other.txt.part").exists());
        // Missing root is fine.
        assert!(repair_partials(&dir.path().join("nope"))
            .unwrap()
            .is_empty());
    }

    /// Found by `fuzz/` (wav_repair): a RIFF file with an odd-sized chunk before `data` (legal
    /// RIFF, padded) or a fmt chunk that is not integer PCM with a matching block align was
    /// "recovered" into a WAV hound and sox cannot read. We never write such a file: it is
    /// moved aside, untouched, and a recording of ours with an even extra chunk still repairs.
    #[test]
    fn files_players_cannot_read_are_moved_aside_not_repaired() {
        fn wav(tag: u16, channels: u16, bits: u16, align: u16, extra: &[u8]) -> Vec<u8> {
            let mut w = b"RIFF\0\0\0\0WAVEfmt \x10\0\0\0".to_vec();
            w.extend_from_slice(&tag.to_le_bytes());
            w.extend_from_slice(&channels.to_le_bytes());
            w.extend_from_slice(&8000u32.to_le_bytes());
            w.extend_from_slice(&(8000 * u32::from(align)).to_le_bytes());
            w.extend_from_slice(&align.to_le_bytes());
            w.extend_from_slice(&bits.to_le_bytes());
            w.extend_from_slice(extra);
            w.extend_from_slice(b"data\0\0\0\0");
            w.extend_from_slice(&[0xe8, 0x03, 0x18, 0xfc].repeat(15));
            w
        }
        let dir = tempdir();
        let odd_list = b"LIST\x05\0\0\0INFOx\0";
        let even_list = b"LIST\x04\0\0\0INFO";
        let mut rate_mismatch = wav(1, 2, 16, 4, b"");
        rate_mismatch[28] ^= 1;
        let cases: [(&str, Vec<u8>, bool); 6] = [
            ("odd", wav(1, 2, 16, 4, odd_list), false),
            ("float", wav(3, 2, 32, 8, b""), false),
            ("align", wav(1, 2, 16, 3, b""), false),
            ("bits", wav(1, 2, 12, 3, b""), false),
            ("rate", rate_mismatch, false),
            ("even", wav(1, 2, 16, 4, even_list), true),
        ];
        for (name, bytes, repairable) in cases {
            let part = dir.path().join(format!("{name}.wav.part"));
            fs::write(&part, &bytes).unwrap();
            match repair_partial(&part) {
                RepairedRecording::Recovered { path, frames, .. } => {
                    assert!(repairable, "{name} recovered");
                    assert_eq!(frames, 15);
                    let mut r = hound::WavReader::open(&path).unwrap();
                    assert_eq!(r.samples::<i16>().filter(|s| s.is_ok()).count(), 30);
                }
                RepairedRecording::MovedAside { to, .. } => {
                    assert!(!repairable, "{name} moved aside");
                    assert_eq!(fs::read(to).unwrap(), bytes, "{name} untouched");
                }
                other => panic!("{name}: {other:?}"),
            }
        }
    }

    #[test]
    fn timeline_holds_only_what_is_not_drained() {
        // A minute of a normal call: both legs every 20 ms, drained every quarter second with
        // the relay's 200 ms jitter allowance. The buffer holds about 450 ms: two growth steps
        // (16 kB), not the 2 s window (64 kB).
        let mut tl = StereoTimeline::new();
        let mut out = Vec::new();
        let mut most = 0;
        for k in 0..3000u64 {
            let pos = k * PKT as u64;
            tl.push(Channel::Caller, 1, pos as u32, pos, &[1; PKT]);
            tl.push(Channel::Agent, 2, pos as u32, pos, &[2; PKT]);
            if k % 12 == 11 {
                tl.drain((pos + PKT as u64).saturating_sub(1600), &mut out);
                out.clear();
            }
            most = most.max(tl.pending.capacity());
        }
        assert!(most <= 2 * GROW_SAMPLES, "held {most} samples");

        // A drain that stalls 1.5 s stretches the buffer within the window; the next drains
        // give the memory back.
        let base = 3000 * PKT as u64;
        for k in 0..75u64 {
            let pos = base + k * PKT as u64;
            tl.push(Channel::Caller, 1, pos as u32, pos, &[3; PKT]);
        }
        assert_eq!(tl.stats(Channel::Caller).overflow_samples, 0);
        assert!(tl.pending.capacity() > 2 * GROW_SAMPLES);
        for k in 75..150u64 {
            let pos = base + k * PKT as u64;
            tl.push(Channel::Caller, 1, pos as u32, pos, &[3; PKT]);
            if k % 12 == 11 {
                tl.drain((pos + PKT as u64).saturating_sub(1600), &mut out);
                out.clear();
            }
        }
        assert!(
            tl.pending.capacity() <= 2 * GROW_SAMPLES,
            "{}",
            tl.pending.capacity()
        );
    }

    #[test]
    fn files_are_byte_for_byte_what_hound_writes() {
        let dir = tempdir();
        let samples: Vec<i16> = (0..4000).map(|i| (i * 37 % 65536 - 32768) as i16).collect();
        let mut ours = RecordingFile::create(dir.path(), "ours", (2024, 1, 1)).unwrap();
        ours.append(&samples[..1000]).unwrap();
        ours.flush().unwrap();
        ours.append(&samples[1000..]).unwrap();
        let ours = fs::read(ours.finish().unwrap().path).unwrap();
        let theirs = dir.path().join("theirs.wav");
        let mut w = hound::WavWriter::create(&theirs, wav_spec()).unwrap();
        for &s in &samples {
            w.write_sample(s).unwrap();
        }
        w.finalize().unwrap();
        assert_eq!(ours, fs::read(&theirs).unwrap());
    }

    #[test]
    fn recorder_thread_end_to_end() {
        let dir = tempdir();
        // A leftover from a "previous run" gets repaired at spawn.
        let mut old = RecordingFile::create(dir.path(), "old", (2024, 1, 1)).unwrap();
        old.append(&[1, 2, 3, 4]).unwrap();
        old.flush().unwrap();
        std::mem::forget(old);

        let handle = Recorder::spawn(dir.path()).unwrap();
        let mut a = handle.start("call-a", (2024, 1, 2)).unwrap();
        let b = handle.start("call-b", (2024, 1, 2)).unwrap();
        assert!(matches!(
            handle.start("../evil", (2024, 1, 2)),
            Err(RecorderError::InvalidId(_))
        ));
        let mut tl = StereoTimeline::new();
        let mut recycled = 0;
        for sec in 0..5u64 {
            for k in 0..50u64 {
                let pos = sec * 8000 + k * PKT as u64;
                tl.push(Channel::Caller, 1, pos as u32, pos, &[7; PKT]);
                tl.push(Channel::Agent, 2, pos as u32, pos, &[-7; PKT]);
            }
            let mut buf = a.buffer();
            assert!(buf.is_empty());
            if buf.capacity() > 0 {
                recycled += 1;
            }
            tl.drain((sec + 1) * 8000 - 1600, &mut buf);
            a.submit(buf).unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(recycled > 0, "buffers are recycled");
        let mut buf = a.buffer();
        tl.finish(5 * 8000, &mut buf);
        a.submit(buf).unwrap();
        let done = a
            .finish()
            .recv_timeout(Duration::from_secs(10))
            .unwrap()
            .unwrap();
        assert_eq!(done.frames, 40_000);
        let (_, samples) = read_wav(&done.path);
        assert!(left(&samples).iter().all(|&s| s == 7));
        assert!(right(&samples).iter().all(|&s| s == -7));
        let bytes = fs::read(&done.path).unwrap();
        assert_eq!(done.sha256, hex::encode(Sha256::digest(&bytes)));

        // Dropping a sink without finish still produces a .wav.
        drop(b);
        handle.shutdown().unwrap();
        assert!(dir.path().join("2024/01/02/call-b.wav").exists());
        assert!(dir.path().join("2024/01/01/old.wav").exists());
        assert!(!dir.path().join("2024/01/01/old.wav.part").exists());
    }

    #[test]
    fn recorder_flushes_open_files_every_second() {
        let dir = tempdir();
        let handle = Recorder::spawn(dir.path()).unwrap();
        let mut rec = handle.start("live", (2024, 5, 6)).unwrap();
        rec.submit(vec![3; 8000 * 2]).unwrap();
        let part = dir.path().join("2024/05/06/live.wav.part");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if part.exists() {
                if let Ok(r) = hound::WavReader::open(&part) {
                    if r.duration() == 8000 {
                        break;
                    }
                }
            }
            assert!(Instant::now() < deadline, "header never updated");
            std::thread::sleep(Duration::from_millis(50));
        }
        let rx = rec.finish();
        handle.shutdown().unwrap();
        let done = rx.recv_timeout(Duration::from_secs(5)).unwrap().unwrap();
        assert_eq!(done.frames, 8000);
    }

    #[test]
    fn stopped_recorder_reports_errors() {
        let dir = tempdir();
        let handle = Recorder::spawn(dir.path()).unwrap();
        let mut rec = handle.start("x", (2024, 5, 6)).unwrap();
        assert!(matches!(
            rec.submit(vec![1]),
            Err(RecorderError::OddSampleCount(1))
        ));
        handle.shutdown().unwrap();
        assert!(matches!(
            rec.submit(vec![1, 2]),
            Err(RecorderError::Stopped)
        ));
        let res = rec.finish().recv_timeout(Duration::from_secs(1)).unwrap();
        assert!(matches!(res, Err(RecorderError::Stopped)));
        // The shutdown finalized it.
        assert!(dir.path().join("2024/05/06/x.wav").exists());
    }

    #[test]
    fn handles_are_thread_safe() {
        fn assert_send_sync<T: Send + Sync>() {}
        fn assert_send<T: Send>() {}
        assert_send_sync::<RecorderHandle>();
        assert_send::<CallRecording>();
        assert_send::<StereoTimeline>();
    }
}
