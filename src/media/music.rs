//! The music callers hear: on hold, and while they wait in a queue. Files are read once at
//! start-up (a file that cannot be read stops the start with its name, rather than the first
//! caller put on hold hearing silence) and shared by every call.

use std::path::PathBuf;
use std::sync::Arc;

use super::player::{Clip, ClipError};

/// The clips of a profile.
#[derive(Debug, Clone)]
pub struct MusicFiles {
    /// Music on hold: the profile's `hold_music`, or a built-in chime.
    pub hold: Arc<Clip>,
    /// Queue music: the profile's `queue_music`; none keeps ringback (180).
    pub queue: Option<Arc<Clip>>,
    /// What an agent hears while a number screenpop dials for them rings (without early
    /// media from the gateway).
    pub ringback: Arc<Clip>,
}

impl MusicFiles {
    pub fn load(hold: Option<&PathBuf>, queue: Option<&PathBuf>) -> Result<MusicFiles, ClipError> {
        let hold = match hold {
            Some(p) => Arc::new(Clip::load(p)?),
            None => Arc::new(chime()),
        };
        let queue = queue.map(|p| Clip::load(p).map(Arc::new)).transpose()?;
        Ok(MusicFiles {
            hold,
            queue,
            ringback: Arc::new(ringback()),
        })
    }
}

/// The North American ringback tone (440 + 480 Hz, 2 s on, 4 s off; ITU-T E.180), looped.
pub fn ringback() -> Clip {
    const RATE: f64 = 8000.0;
    let on = (RATE * 2.0) as usize;
    let mut pcm = vec![0i16; (RATE * 6.0) as usize];
    for (n, s) in pcm.iter_mut().take(on).enumerate() {
        let t = n as f64 / RATE;
        let v = (2.0 * std::f64::consts::PI * 440.0 * t).sin()
            + (2.0 * std::f64::consts::PI * 480.0 * t).sin();
        *s = (v * 4000.0) as i16;
    }
    Clip::from_pcm(pcm)
}

/// A soft arpeggio (C major, bell-like decay), so a fresh install puts callers on hold with
/// something better than silence. 4.8 s, looped.
pub fn chime() -> Clip {
    const RATE: f64 = 8000.0;
    const NOTE: f64 = 0.6;
    let notes = [
        523.25, 659.25, 783.99, 1046.5, 783.99, 659.25, 587.33, 493.88,
    ];
    let per = (RATE * NOTE) as usize;
    let mut pcm = Vec::with_capacity(per * notes.len());
    for hz in notes {
        for n in 0..per {
            let t = n as f64 / RATE;
            let env = (-t * 4.0).exp() * (1.0 - (-t * 200.0).exp());
            let w = 2.0 * std::f64::consts::PI * hz * t;
            let v = (w.sin() + 0.3 * (2.0 * w).sin()) * env * 6000.0;
            pcm.push(v as i16);
        }
    }
    Clip::from_pcm(pcm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chime_is_audible_and_not_clipped() {
        let c = chime();
        assert_eq!(c.duration().as_millis(), 4800);
        let peak = c.pcm().iter().map(|s| s.unsigned_abs()).max().unwrap_or(0);
        assert!((3000..20000).contains(&peak), "peak {peak}");
    }

    #[test]
    fn a_missing_file_is_an_error_naming_it() {
        let missing = PathBuf::from("/nonexistent/hold.wav");
        let e = MusicFiles::load(Some(&missing), None).expect_err("missing file");
        assert!(e.to_string().contains("/nonexistent/hold.wav"), "{e}");
    }
}
