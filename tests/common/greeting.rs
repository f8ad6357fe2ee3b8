//! The voice greeting the campaign tests and the campaigns bench play, and how they recognise
//! it at the far end: four tones whose sequence a wrong or scrambled stream cannot match, and
//! the best normalised cross-correlation over small lags (the resampler's delay).
#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Four tones (500, 1100, 1700 and 800 Hz) of `seconds_each`, at `rate` samples a second,
/// amplitude 0.5: written at 16 kHz, expected back at 8 kHz.
pub fn tones(rate: u32, seconds_each: f64) -> Vec<f64> {
    let per = (rate as f64 * seconds_each) as usize;
    [500.0, 1100.0, 1700.0, 800.0]
        .iter()
        .flat_map(|hz| {
            (0..per).map(move |i| {
                0.5 * (2.0 * std::f64::consts::PI * hz * i as f64 / rate as f64).sin()
            })
        })
        .collect()
}

/// Writes samples in [-1, 1] as a 16-bit mono WAV at `rate`.
pub fn write_wav(path: &Path, rate: u32, samples: &[f64]) {
    let mut w = hound::WavWriter::create(
        path,
        hound::WavSpec {
            channels: 1,
            sample_rate: rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        },
    )
    .expect("wav");
    for s in samples {
        w.write_sample((s * 32767.0) as i16).expect("sample");
    }
    w.finalize().expect("wav");
}

/// The best normalised cross-correlation of `got` with `want` over lags of ±`max_lag`.
pub fn best_correlation(got: &[f64], want: &[f64], max_lag: isize) -> f64 {
    let mut best = 0.0f64;
    for lag in -max_lag..=max_lag {
        let (mut xy, mut xx, mut yy) = (0.0, 0.0, 0.0);
        for (i, w) in want.iter().enumerate() {
            let j = i as isize + lag;
            if j < 0 || j as usize >= got.len() {
                continue;
            }
            let g = got[j as usize];
            xy += g * w;
            xx += g * g;
            yy += w * w;
        }
        if xx > 0.0 && yy > 0.0 {
            best = best.max(xy / (xx * yy).sqrt());
        }
    }
    best
}

/// One RTP packet taken by [`rtp_sink`]: when, from where, and the packet.
pub struct Taken {
    pub at: Instant,
    pub from: SocketAddr,
    pub packet: Vec<u8>,
}

/// A UDP socket on 127.0.0.1 for a gateway's SDP to point at, keeping every packet until the
/// flag is set: its port, the flag, and the thread that hands the packets back.
pub fn rtp_sink() -> (u16, Arc<AtomicBool>, std::thread::JoinHandle<Vec<Taken>>) {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("sink");
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let port = sock.local_addr().expect("addr").port();
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let h = std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        while !stopped.load(Ordering::Relaxed) {
            if let Ok((n, from)) = sock.recv_from(&mut buf) {
                got.push(Taken {
                    at: Instant::now(),
                    from,
                    packet: buf[..n].to_vec(),
                });
            }
        }
        got
    });
    (port, stop, h)
}

/// G.711 u-law decoder.
pub fn ulaw_to_linear(byte: u8) -> i16 {
    let b = !byte;
    let sign = b & 0x80;
    let exponent = (b >> 4) & 0x07;
    let mantissa = (b & 0x0f) as i32;
    let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
    if sign != 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}
