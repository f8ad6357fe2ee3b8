//! Audio files played into calls (music on hold, queue music, announcements, campaign
//! greetings): loaded once, converted once to 8 kHz mono, shared by every call that plays them,
//! and cut into 20 ms G.711 RTP packets with the header fields a phone expects.
//!
//! [`Clip::load`] takes the WAV files people actually have: 16-bit (or 8-bit, 24-bit, 32-bit,
//! float) PCM at any rate, mono or stereo (mixed down), and G.711 µ-law or A-law WAVs (format
//! tags 7 and 6, which hound does not read). Rates other than 8 kHz are resampled with a
//! windowed-sinc low-pass, so 16 kHz prompts do not alias. [`ClipCache`] keeps one decoded copy
//! per file. [`Player`] is sans-IO: fed `now`, it says when its next packet is due and writes it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::g711::G711;

/// Samples per 20 ms packet at 8 kHz.
pub const FRAME: usize = 160;
const PTIME: Duration = Duration::from_millis(20);

/// Why a file cannot be played.
#[derive(Debug, thiserror::Error)]
pub enum ClipError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a WAV file this player reads ({why})")]
    Format { path: String, why: String },
    #[error("{path}: no audio in it")]
    Empty { path: String },
    #[error("{path}: {secs} s long; at most {max} s")]
    TooLong { path: String, secs: u64, max: u64 },
}

/// A decoded file: 8 kHz mono samples, with its G.711 encodings made on first use.
#[derive(Debug)]
pub struct Clip {
    pcm: Arc<[i16]>,
    ulaw: OnceLock<Arc<[u8]>>,
    alaw: OnceLock<Arc<[u8]>>,
}

impl Clip {
    /// Audio already at 8 kHz mono.
    pub fn from_pcm(pcm: Vec<i16>) -> Clip {
        Clip {
            pcm: pcm.into(),
            ulaw: OnceLock::new(),
            alaw: OnceLock::new(),
        }
    }

    /// Reads and converts a WAV file (see the module documentation for what it takes).
    pub fn load(path: &Path) -> Result<Clip, ClipError> {
        let name = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| ClipError::Read {
            path: name.clone(),
            source,
        })?;
        Clip::from_wav(&bytes, &name)
    }

    /// Converts a WAV file's bytes (an upload checked before it is kept); `name` is for errors.
    pub fn from_wav(bytes: &[u8], name: &str) -> Result<Clip, ClipError> {
        Clip::from_wav_at_most(bytes, name, Duration::MAX)
    }

    /// As [`Clip::from_wav`], refusing a file longer than `max` before it is resampled (a
    /// long file at a low rate would grow many times over in memory).
    pub fn from_wav_at_most(bytes: &[u8], name: &str, max: Duration) -> Result<Clip, ClipError> {
        let name = name.to_string();
        let (rate, mono) = decode_wav(bytes).map_err(|why| ClipError::Format {
            path: name.clone(),
            why,
        })?;
        let secs = mono.len() as u64 / u64::from(rate.max(1));
        if secs > max.as_secs() {
            return Err(ClipError::TooLong {
                path: name,
                secs,
                max: max.as_secs(),
            });
        }
        let pcm = resample_to_8k(&mono, rate);
        if pcm.is_empty() {
            return Err(ClipError::Empty { path: name });
        }
        Ok(Clip::from_pcm(pcm))
    }

    /// The 8 kHz mono samples.
    pub fn pcm(&self) -> &[i16] {
        &self.pcm
    }

    /// Length at 8 kHz.
    pub fn duration(&self) -> Duration {
        Duration::from_micros(self.pcm.len() as u64 * 125)
    }

    /// The whole clip encoded in `codec`, made once and shared.
    pub fn encoded(&self, codec: G711) -> Arc<[u8]> {
        let cell = match codec {
            G711::Pcmu => &self.ulaw,
            G711::Pcma => &self.alaw,
        };
        cell.get_or_init(|| {
            let mut out = vec![0u8; self.pcm.len()];
            codec.encode_into(&self.pcm, &mut out);
            out.into()
        })
        .clone()
    }
}

/// One decoded copy per file, shared by every call that plays it. A file that changes on disk
/// is read again after [`ClipCache::forget`].
#[derive(Default)]
pub struct ClipCache {
    clips: Mutex<HashMap<PathBuf, Arc<Clip>>>,
}

impl ClipCache {
    pub fn get(&self, path: &Path) -> Result<Arc<Clip>, ClipError> {
        if let Some(c) = self.lock().get(path) {
            return Ok(c.clone());
        }
        // Decoding happens outside the lock; two first callers may both decode, one wins.
        let clip = Arc::new(Clip::load(path)?);
        Ok(self
            .lock()
            .entry(path.to_path_buf())
            .or_insert(clip)
            .clone())
    }

    pub fn forget(&self, path: &Path) {
        self.lock().remove(path);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Arc<Clip>>> {
        self.clips.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Reads a RIFF/WAVE file into mono samples and its rate. G.711 (tags 6 and 7) is decoded
/// here; PCM and float go through hound.
fn decode_wav(bytes: &[u8]) -> Result<(u32, Vec<i16>), String> {
    let fmt = riff_chunk(bytes, b"fmt ").ok_or("no fmt chunk")?;
    if fmt.len() < 16 {
        return Err("fmt chunk too short".into());
    }
    let tag = u16::from_le_bytes([fmt[0], fmt[1]]);
    let channels = u16::from_le_bytes([fmt[2], fmt[3]]).max(1) as usize;
    let rate = u32::from_le_bytes([fmt[4], fmt[5], fmt[6], fmt[7]]);
    // A rate far outside audio (a corrupt header) would make resampling allocate without bound.
    if !(4000..=192_000).contains(&rate) {
        return Err(format!("sample rate {rate} Hz"));
    }
    let law = match tag {
        6 => Some(G711::Pcma),
        7 => Some(G711::Pcmu),
        _ => None,
    };
    if let Some(law) = law {
        let data = riff_chunk(bytes, b"data").ok_or("no data chunk")?;
        let frames = data.chunks_exact(channels);
        let mono = frames
            .map(|f| mix(f.iter().map(|b| i32::from(law.decode(*b)))))
            .collect();
        return Ok((rate, mono));
    }
    let reader = hound::WavReader::new(std::io::Cursor::new(bytes)).map_err(|e| e.to_string())?;
    let spec = reader.spec();
    let samples: Vec<i32> = match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Float, _) => reader
            .into_samples::<f32>()
            .map(|s| s.map(|v| (v.clamp(-1.0, 1.0) * 32767.0) as i32))
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?,
        (hound::SampleFormat::Int, bits @ 1..=32) => {
            let shift = i32::from(bits) - 16;
            reader
                .into_samples::<i32>()
                .map(|s| {
                    s.map(|v| match shift {
                        s if s > 0 => v >> s,
                        s => v << -s,
                    })
                })
                .collect::<Result<_, _>>()
                .map_err(|e| e.to_string())?
        }
        (_, bits) => return Err(format!("{bits}-bit samples")),
    };
    let ch = usize::from(spec.channels.max(1));
    let mono = samples
        .chunks_exact(ch)
        .map(|f| mix(f.iter().copied()))
        .collect();
    Ok((spec.sample_rate, mono))
}

/// The average of one frame's channels.
fn mix(frame: impl Iterator<Item = i32>) -> i16 {
    let (sum, n) = frame.fold((0i64, 0i64), |(s, n), v| (s + i64::from(v), n + 1));
    (sum / n.max(1)).clamp(i64::from(i16::MIN), i64::from(i16::MAX)) as i16
}

/// The body of the first RIFF chunk with this id (after the 12-byte RIFF/WAVE header).
fn riff_chunk<'a>(bytes: &'a [u8], id: &[u8; 4]) -> Option<&'a [u8]> {
    if bytes.get(0..4)? != b"RIFF" || bytes.get(8..12)? != b"WAVE" {
        return None;
    }
    let mut at = 12usize;
    while let Some(head) = bytes.get(at..at + 8) {
        let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
        let body_start = at + 8;
        if &head[0..4] == id {
            // A data chunk longer than the file (a writer that never finished) is read as far
            // as it goes.
            let end = body_start.saturating_add(len).min(bytes.len());
            return bytes.get(body_start..end);
        }
        at = body_start.checked_add(len)?.checked_add(len & 1)?;
    }
    None
}

/// Converts to 8 kHz: a windowed-sinc low-pass at the new Nyquist frequency evaluated at each
/// output instant (band-limited interpolation), so 16 kHz and 44.1 kHz prompts do not alias.
fn resample_to_8k(input: &[i16], rate: u32) -> Vec<i16> {
    if rate == 8000 {
        return input.to_vec();
    }
    const HALF_TAPS: i64 = 16;
    let ratio = f64::from(rate) / 8000.0;
    // Cut-off at 4 kHz (relative to the input rate), or the input's own band when upsampling.
    let cutoff = (1.0 / ratio).min(1.0);
    let out_len = (input.len() as f64 / ratio).floor() as usize;
    let mut out = Vec::with_capacity(out_len);
    for k in 0..out_len {
        let centre = k as f64 * ratio;
        let first = centre.floor() as i64 - HALF_TAPS * ratio.ceil() as i64;
        let last = centre.floor() as i64 + HALF_TAPS * ratio.ceil() as i64;
        let (mut acc, mut weight) = (0.0f64, 0.0f64);
        for n in first..=last {
            let Some(&s) = usize::try_from(n).ok().and_then(|i| input.get(i)) else {
                continue;
            };
            let x = (n as f64 - centre) * cutoff;
            let span = (HALF_TAPS as f64) * ratio.ceil();
            let t = (n as f64 - centre) / span;
            if t.abs() > 1.0 {
                continue;
            }
            let sinc = if x.abs() < 1e-9 {
                1.0
            } else {
                (std::f64::consts::PI * x).sin() / (std::f64::consts::PI * x)
            };
            // Blackman window.
            let w = 0.42
                + 0.5 * (std::f64::consts::PI * t).cos()
                + 0.08 * (2.0 * std::f64::consts::PI * t).cos();
            acc += f64::from(s) * sinc * w;
            weight += sinc * w;
        }
        let v = if weight.abs() > 1e-9 {
            acc / weight
        } else {
            0.0
        };
        out.push(v.round().clamp(-32768.0, 32767.0) as i16);
    }
    out
}

/// Once through, or round and round until stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repeat {
    Once,
    Loop,
}

/// Plays one clip as one RTP stream: 20 ms packets paced from its start, the sequence number
/// and timestamp advancing by one packet each, the marker bit on the first packet of the
/// stream (RFC 3551 §4.1: the start of a talkspurt). Many players share one [`Clip`].
pub struct Player {
    audio: Arc<[u8]>,
    codec: G711,
    repeat: Repeat,
    ssrc: u32,
    seq: u16,
    ts: u32,
    /// Where the next packet's audio starts in `audio`.
    pos: usize,
    /// When the next packet is due.
    due: Instant,
    first: bool,
    finished: bool,
}

impl Player {
    /// Starts at `now`; `seq` and `ts` are the first packet's (random for a new stream,
    /// RFC 3550 §5.1), or the continuation of a stream already running on the leg.
    pub fn new(
        clip: &Clip,
        codec: G711,
        repeat: Repeat,
        now: Instant,
        (ssrc, seq, ts): (u32, u16, u32),
    ) -> Player {
        Player {
            audio: clip.encoded(codec),
            codec,
            repeat,
            ssrc,
            seq,
            ts,
            pos: 0,
            due: now,
            first: true,
            // An empty clip has nothing to send (and nothing to loop over).
            finished: clip.pcm.is_empty(),
        }
    }

    /// When the next packet is due; `None` once a clip played once is over.
    pub fn poll_timeout(&self) -> Option<Instant> {
        (!self.finished).then_some(self.due)
    }

    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Writes the next packet into `out` (replacing its contents) when it is due at `now`;
    /// returns whether it did. A caller that woke late gets the packets it missed one by one
    /// (timestamps stay continuous, as a jitter buffer expects).
    pub fn poll_packet(&mut self, now: Instant, out: &mut Vec<u8>) -> bool {
        if self.finished || now < self.due {
            return false;
        }
        out.clear();
        out.extend_from_slice(&[
            0x80,
            (if self.first { 0x80 } else { 0 }) | self.codec.payload_type(),
        ]);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.ts.to_be_bytes());
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        let silence = self.codec.encode(0);
        let mut filled = 0;
        while filled < FRAME {
            let take = (FRAME - filled).min(self.audio.len() - self.pos);
            out.extend_from_slice(&self.audio[self.pos..self.pos + take]);
            self.pos += take;
            filled += take;
            if self.pos == self.audio.len() {
                match self.repeat {
                    Repeat::Loop => self.pos = 0,
                    Repeat::Once => {
                        // The last packet is padded with silence; nothing follows it.
                        out.resize(12 + FRAME, silence);
                        self.finished = true;
                        break;
                    }
                }
            }
        }
        self.first = false;
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(FRAME as u32);
        self.due += PTIME;
        true
    }

    /// The sequence number and timestamp the next packet would carry: a stream that goes on
    /// after the player (the agent's audio after the hold music) continues from them.
    pub fn next_seq_ts(&self) -> (u16, u32) {
        (self.seq, self.ts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(rate: u32, hz: f64, secs: f64, amp: f64) -> Vec<i16> {
        (0..(f64::from(rate) * secs) as usize)
            .map(|n| {
                ((2.0 * std::f64::consts::PI * hz * n as f64 / f64::from(rate)).sin() * amp) as i16
            })
            .collect()
    }

    /// Energy of `hz` in `x` at 8 kHz (Goertzel), normalised by length.
    fn power(x: &[i16], hz: f64) -> f64 {
        let w = 2.0 * std::f64::consts::PI * hz / 8000.0;
        let (mut s1, mut s2) = (0.0, 0.0);
        for &v in x {
            let s = f64::from(v) + 2.0 * w.cos() * s1 - s2;
            s2 = s1;
            s1 = s;
        }
        (s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2) / (x.len() as f64).powi(2)
    }

    fn write_pcm(path: &Path, rate: u32, channels: u16, samples: &[i16]) {
        let spec = hound::WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(path, spec).unwrap();
        for s in samples {
            w.write_sample(*s).unwrap();
        }
        w.finalize().unwrap();
    }

    /// A G.711 WAV as sox writes it (`-e u-law`): fmt tag 7, 8 bits, then the data chunk.
    fn write_law(path: &Path, tag: u16, law: G711, samples: &[i16]) {
        let data: Vec<u8> = samples.iter().map(|s| law.encode(*s)).collect();
        let mut b = Vec::new();
        b.extend_from_slice(b"RIFF");
        b.extend_from_slice(&(4 + 26 + 8 + data.len() as u32).to_le_bytes());
        b.extend_from_slice(b"WAVEfmt ");
        b.extend_from_slice(&18u32.to_le_bytes());
        b.extend_from_slice(&tag.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&8000u32.to_le_bytes());
        b.extend_from_slice(&8000u32.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&8u16.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(b"data");
        b.extend_from_slice(&(data.len() as u32).to_le_bytes());
        b.extend_from_slice(&data);
        std::fs::write(path, b).unwrap();
    }

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("screenpop-player-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn every_common_wav_becomes_the_same_8k_tone() {
        let d = dir();
        type Writer = Box<dyn Fn(&Path)>;
        let cases: Vec<(&str, Writer)> = vec![
            (
                "8k-mono.wav",
                Box::new(|p| write_pcm(p, 8000, 1, &tone(8000, 600.0, 1.0, 8000.0))),
            ),
            (
                "16k-mono.wav",
                Box::new(|p| write_pcm(p, 16000, 1, &tone(16000, 600.0, 1.0, 8000.0))),
            ),
            (
                "16k-stereo.wav",
                Box::new(|p| {
                    let t = tone(16000, 600.0, 1.0, 8000.0);
                    let both: Vec<i16> = t.iter().flat_map(|s| [*s, *s]).collect();
                    write_pcm(p, 16000, 2, &both)
                }),
            ),
            (
                "44k-mono.wav",
                Box::new(|p| write_pcm(p, 44100, 1, &tone(44100, 600.0, 1.0, 8000.0))),
            ),
            (
                "ulaw.wav",
                Box::new(|p| write_law(p, 7, G711::Pcmu, &tone(8000, 600.0, 1.0, 8000.0))),
            ),
            (
                "alaw.wav",
                Box::new(|p| write_law(p, 6, G711::Pcma, &tone(8000, 600.0, 1.0, 8000.0))),
            ),
        ];
        for (name, write) in cases {
            let path = d.join(name);
            write(&path);
            let clip = Clip::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
            let n = clip.pcm().len();
            assert!((7990..=8000).contains(&n), "{name}: {n} samples for 1 s");
            // Away from the edges the 600 Hz is there at its level and nothing else is.
            let mid = &clip.pcm()[800..7200];
            let (p600, p1500) = (power(mid, 600.0), power(mid, 1500.0));
            let expect = (8000.0f64 / 2.0).powi(2);
            assert!(
                (p600 / expect - 1.0).abs() < 0.1,
                "{name}: 600 Hz power {p600} vs {expect}"
            );
            assert!(p600 > 1000.0 * p1500, "{name}: clean tone");
        }
        // A 16 kHz file's 6 kHz (above the new Nyquist) is filtered, not folded to 2 kHz.
        let path = d.join("16k-6khz.wav");
        write_pcm(&path, 16000, 1, &tone(16000, 6000.0, 1.0, 8000.0));
        let clip = Clip::load(&path).unwrap();
        let folded = power(&clip.pcm()[800..7200], 2000.0);
        assert!(
            folded < (8000.0f64 / 2.0).powi(2) / 1000.0,
            "aliasing: {folded}"
        );
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn unreadable_files_are_clear_errors() {
        let d = dir().join("bad");
        std::fs::create_dir_all(&d).unwrap();
        assert!(matches!(
            Clip::load(&d.join("missing.wav")),
            Err(ClipError::Read { .. })
        ));
        std::fs::write(d.join("text.wav"), "hello").unwrap();
        let e = Clip::load(&d.join("text.wav")).unwrap_err();
        assert!(e.to_string().contains("text.wav"), "{e}");
        write_pcm(&d.join("empty.wav"), 8000, 1, &[]);
        assert!(matches!(
            Clip::load(&d.join("empty.wav")),
            Err(ClipError::Empty { .. })
        ));
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn the_cache_decodes_once_and_shares() {
        let d = dir().join("cache");
        std::fs::create_dir_all(&d).unwrap();
        let path = d.join("moh.wav");
        write_pcm(&path, 8000, 1, &tone(8000, 440.0, 0.5, 4000.0));
        let cache = ClipCache::default();
        let (a, b) = (cache.get(&path).unwrap(), cache.get(&path).unwrap());
        assert!(Arc::ptr_eq(&a, &b));
        assert!(Arc::ptr_eq(&a.encoded(G711::Pcmu), &b.encoded(G711::Pcmu)));
        cache.forget(&path);
        assert!(!Arc::ptr_eq(&a, &cache.get(&path).unwrap()));
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn packets_are_paced_numbered_and_marked() {
        let pcm: Vec<i16> = (0..400).map(|i| (i * 50) as i16).collect();
        let clip = Clip::from_pcm(pcm.clone());
        let enc = clip.encoded(G711::Pcma);
        let t0 = Instant::now();
        let mut p = Player::new(
            &clip,
            G711::Pcma,
            Repeat::Loop,
            t0,
            (0xabcd, 65_535, 4_294_967_200),
        );
        let mut out = Vec::new();
        assert_eq!(p.poll_timeout(), Some(t0));
        assert!(p.poll_packet(t0, &mut out));
        assert_eq!(out.len(), 12 + FRAME);
        assert_eq!(out[0], 0x80);
        assert_eq!(out[1], 0x80 | 8, "marker on the first packet, PCMA");
        assert_eq!(&out[2..4], &65_535u16.to_be_bytes());
        assert_eq!(&out[4..8], &4_294_967_200u32.to_be_bytes());
        assert_eq!(&out[8..12], &0xabcdu32.to_be_bytes());
        assert_eq!(&out[12..], &enc[..160]);
        assert!(
            !p.poll_packet(t0 + Duration::from_millis(19), &mut out),
            "not yet"
        );
        assert!(p.poll_packet(t0 + PTIME, &mut out));
        assert_eq!(out[1], 8, "no marker after");
        assert_eq!(&out[2..4], &0u16.to_be_bytes(), "sequence wraps");
        assert_eq!(
            &out[4..8],
            &(4_294_967_200u32.wrapping_add(160)).to_be_bytes()
        );
        // The third packet runs off the 400-sample clip and loops to its start.
        assert!(p.poll_packet(t0 + PTIME * 2, &mut out));
        let mut want = enc[320..400].to_vec();
        want.extend_from_slice(&enc[..80]);
        assert_eq!(&out[12..], &want[..]);
        assert_eq!(p.next_seq_ts(), (2, 4_294_967_200u32.wrapping_add(480)));
    }

    #[test]
    fn an_empty_clip_or_an_absurd_rate_sends_nothing() {
        let mut p = Player::new(
            &Clip::from_pcm(Vec::new()),
            G711::Pcmu,
            Repeat::Loop,
            Instant::now(),
            (1, 1, 0),
        );
        assert!(p.is_finished());
        assert!(!p.poll_packet(Instant::now(), &mut Vec::new()));
        let d = dir().join("rate");
        std::fs::create_dir_all(&d).unwrap();
        write_pcm(&d.join("1hz.wav"), 1, 1, &[0; 64]);
        assert!(matches!(
            Clip::load(&d.join("1hz.wav")),
            Err(ClipError::Format { .. })
        ));
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn once_ends_with_a_padded_packet() {
        let clip = Clip::from_pcm(vec![1000; 400]);
        let t0 = Instant::now();
        let mut p = Player::new(&clip, G711::Pcmu, Repeat::Once, t0, (1, 1, 0));
        let mut out = Vec::new();
        let mut n = 0;
        let mut now = t0;
        while let Some(due) = p.poll_timeout() {
            now = now.max(due);
            assert!(p.poll_packet(now, &mut out));
            n += 1;
        }
        assert_eq!(n, 3, "400 samples are three packets");
        assert!(p.is_finished());
        assert_eq!(out.len(), 12 + FRAME);
        let silence = G711::Pcmu.encode(0);
        assert!(
            out[12 + 80..].iter().all(|b| *b == silence),
            "padded with silence"
        );
        assert!(!p.poll_packet(now + PTIME, &mut out));
    }
}
