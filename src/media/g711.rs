//! G.711 companding: μ-law (PCMU, RTP payload type 0) and A-law (PCMA, 8).
//!
//! The B2BUA relays G.711 untouched; decoding is only needed to feed the
//! recorder, which runs for every call, so decoding must be a table lookup on
//! the packet path. The 256-entry expansion tables are built at compile time
//! by `const fn` from the same arithmetic as ITU-T G.711 (11/88) Tables 1a/2a
//! (A-law) and 1b/2b (μ-law), in the 16-bit left-justified scaling used by the
//! ITU-T G.191 software tools library (`g711.c`): μ-law spans ±32124 and A-law
//! ±32256.
//!
//! Encoding is not on any hot path (it is used for tests, prompts and tone
//! generation), so it is computed arithmetically rather than with a 64 KiB
//! table. As in G.191, the encoders truncate the 16-bit input to the law's
//! native resolution (14 bits for μ-law, 13 for A-law) before quantising, so
//! `encode(decode(c)) == c` holds for every code except μ-law's negative zero
//! (0x7F), which comes back as the positive zero 0xFF.
//!
//! Payload type numbers are the static assignments of RFC 3551 §6, Table 4.

/// Bias added to the μ-law magnitude before segment search (G.711 §3.2, in
/// 16-bit scaling: 33 << 2).
const ULAW_BIAS: i32 = 0x84;
/// Largest 14-bit magnitude μ-law can represent before clipping.
const ULAW_CLIP: i32 = 8159;

/// Expansion table for μ-law codes, indexed by the code octet as sent on the
/// wire (already bit-inverted per G.711 §3.2).
pub(crate) static ULAW_TO_LINEAR: [i16; 256] = build_ulaw_table();

/// Expansion table for A-law codes, indexed by the code octet as sent on the
/// wire (even bits already inverted per G.711 §3.1).
pub(crate) static ALAW_TO_LINEAR: [i16; 256] = build_alaw_table();

const fn ulaw_expand(code: u8) -> i16 {
    let u = !code;
    let mantissa = (u & 0x0F) as i32;
    let exponent = ((u & 0x70) >> 4) as i32;
    let magnitude = ((mantissa << 3) + ULAW_BIAS) << exponent;
    // Fits: the largest value is (15 << 3 | 0x84) << 7 = 32256.
    if u & 0x80 != 0 {
        (ULAW_BIAS - magnitude) as i16
    } else {
        (magnitude - ULAW_BIAS) as i16
    }
}

const fn alaw_expand(code: u8) -> i16 {
    let a = code ^ 0x55;
    let mantissa = ((a & 0x0F) as i32) << 4;
    let segment = ((a & 0x70) >> 4) as i32;
    let magnitude = match segment {
        0 => mantissa + 8,
        1 => mantissa + 0x108,
        _ => (mantissa + 0x108) << (segment - 1),
    };
    // Fits: the largest value is (0xF0 + 0x108) << 6 = 32256.
    if a & 0x80 != 0 {
        magnitude as i16
    } else {
        -magnitude as i16
    }
}

const fn build_ulaw_table() -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = ulaw_expand(i as u8);
        i += 1;
    }
    table
}

const fn build_alaw_table() -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = alaw_expand(i as u8);
        i += 1;
    }
    table
}

/// Decodes one μ-law octet to 16-bit linear PCM.
#[inline]
pub(crate) fn ulaw_decode(code: u8) -> i16 {
    ULAW_TO_LINEAR[usize::from(code)]
}

/// Decodes one A-law octet to 16-bit linear PCM.
#[inline]
pub(crate) fn alaw_decode(code: u8) -> i16 {
    ALAW_TO_LINEAR[usize::from(code)]
}

/// Index of the first segment whose upper bound is >= `value` (8 when the
/// value exceeds the last bound).
const fn segment_of(value: i32, bounds: &[i32; 8]) -> i32 {
    let mut i = 0;
    while i < 8 {
        if value <= bounds[i] {
            return i as i32;
        }
        i += 1;
    }
    8
}

/// Encodes 16-bit linear PCM to a μ-law octet (G.711 §3.2).
pub const fn ulaw_encode(sample: i16) -> u8 {
    const SEGMENT_END: [i32; 8] = [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF];
    // μ-law works on 14-bit magnitudes; the arithmetic shift truncates toward
    // negative infinity exactly as the G.191 reference does.
    let mut value = (sample as i32) >> 2;
    let mask: u8 = if value < 0 {
        value = -value;
        0x7F
    } else {
        0xFF
    };
    if value > ULAW_CLIP {
        value = ULAW_CLIP;
    }
    value += ULAW_BIAS >> 2;
    let segment = segment_of(value, &SEGMENT_END);
    if segment >= 8 {
        return 0x7F ^ mask;
    }
    let code = ((segment << 4) | ((value >> (segment + 1)) & 0x0F)) as u8;
    code ^ mask
}

/// Encodes 16-bit linear PCM to an A-law octet (G.711 §3.1).
pub const fn alaw_encode(sample: i16) -> u8 {
    const SEGMENT_END: [i32; 8] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];
    // A-law works on 13-bit magnitudes; negative values are one's-complement
    // folded (-1 → 0) because A-law has no code for negative zero.
    let mut value = (sample as i32) >> 3;
    let mask: u8 = if value >= 0 {
        0xD5
    } else {
        value = -value - 1;
        0x55
    };
    let segment = segment_of(value, &SEGMENT_END);
    if segment >= 8 {
        return 0x7F ^ mask;
    }
    let mantissa = if segment < 2 {
        (value >> 1) & 0x0F
    } else {
        (value >> segment) & 0x0F
    };
    let code = ((segment << 4) | mantissa) as u8;
    code ^ mask
}

/// The two G.711 laws as negotiated in SDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum G711 {
    /// μ-law, North America and Japan.
    Pcmu,
    /// A-law, everywhere else.
    Pcma,
}

impl G711 {
    /// RTP clock rate of both laws: one timestamp tick per sample (RFC 3551 §4.5.14).
    pub const CLOCK_RATE: u32 = 8000;

    /// Static RTP payload type (RFC 3551 §6).
    pub const fn payload_type(self) -> u8 {
        match self {
            G711::Pcmu => 0,
            G711::Pcma => 8,
        }
    }

    /// Maps a static payload type back to the law; `None` for anything else
    /// (dynamic types, telephone-event, comfort noise).
    pub const fn from_payload_type(pt: u8) -> Option<Self> {
        match pt {
            0 => Some(G711::Pcmu),
            8 => Some(G711::Pcma),
            _ => None,
        }
    }

    /// SDP encoding name (`a=rtpmap`).
    pub const fn encoding_name(self) -> &'static str {
        match self {
            G711::Pcmu => "PCMU",
            G711::Pcma => "PCMA",
        }
    }

    /// Decodes one octet.
    #[inline]
    pub fn decode(self, code: u8) -> i16 {
        match self {
            G711::Pcmu => ulaw_decode(code),
            G711::Pcma => alaw_decode(code),
        }
    }

    /// Encodes one sample.
    #[inline]
    pub const fn encode(self, sample: i16) -> u8 {
        match self {
            G711::Pcmu => ulaw_encode(sample),
            G711::Pcma => alaw_encode(sample),
        }
    }

    /// Decodes `payload` into `out` without allocating and returns how many
    /// samples were written: `min(payload.len(), out.len())`. A short `out`
    /// truncates rather than panics, because the payload length comes from the
    /// network.
    pub fn decode_into(&self, payload: &[u8], out: &mut [i16]) -> usize {
        let table = match self {
            G711::Pcmu => &ULAW_TO_LINEAR,
            G711::Pcma => &ALAW_TO_LINEAR,
        };
        let n = payload.len().min(out.len());
        for (dst, &code) in out.iter_mut().zip(payload) {
            *dst = table[usize::from(code)];
        }
        n
    }

    /// Encodes `pcm` into `out` without allocating; returns the number of
    /// octets written (`min(pcm.len(), out.len())`).
    pub fn encode_into(&self, pcm: &[i16], out: &mut [u8]) -> usize {
        let n = pcm.len().min(out.len());
        for (dst, &sample) in out.iter_mut().zip(pcm) {
            *dst = self.encode(sample);
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Straight transcription of the G.711 μ-law expansion (Table 2b): the
    /// decoded magnitude is ((2·mantissa + 33) · 2^exponent − 33), in 14-bit
    /// units, then scaled by 4 to 16 bits.
    fn ulaw_reference(code: u8) -> i16 {
        let u = !code;
        let sign_negative = u & 0x80 != 0;
        let exponent = u32::from((u >> 4) & 0x07);
        let mantissa = i32::from(u & 0x0F);
        let magnitude14 = ((2 * mantissa + 33) << exponent) - 33;
        let v = magnitude14 * 4;
        (if sign_negative { -v } else { v }) as i16
    }

    /// Straight transcription of the G.711 A-law expansion (Table 2a): the
    /// decoded magnitude is the midpoint of the quantisation interval, in
    /// 13-bit units, scaled by 8 to 16 bits.
    fn alaw_reference(code: u8) -> i16 {
        let a = code ^ 0x55;
        let positive = a & 0x80 != 0;
        let segment = u32::from((a >> 4) & 0x07);
        let mantissa = i32::from(a & 0x0F);
        let magnitude13 = if segment == 0 {
            2 * mantissa + 1
        } else {
            (2 * mantissa + 33) << (segment - 1)
        };
        let v = magnitude13 * 8;
        (if positive { v } else { -v }) as i16
    }

    #[test]
    fn tables_match_the_standard_formula() {
        for code in 0..=255u8 {
            assert_eq!(ulaw_decode(code), ulaw_reference(code), "μ-law {code:#04x}");
            assert_eq!(alaw_decode(code), alaw_reference(code), "A-law {code:#04x}");
        }
    }

    #[test]
    fn known_reference_values() {
        assert_eq!(ulaw_decode(0x00), -32124);
        assert_eq!(ulaw_decode(0x80), 32124);
        assert_eq!(ulaw_decode(0xFF), 0);
        assert_eq!(ulaw_decode(0x7F), 0);
        assert_eq!(ulaw_decode(0xFE), 8);
        assert_eq!(ulaw_decode(0x7E), -8);
        assert_eq!(alaw_decode(0xD5), 8);
        assert_eq!(alaw_decode(0x55), -8);
        assert_eq!(alaw_decode(0x2A), -32256);
        assert_eq!(alaw_decode(0xAA), 32256);
        // Silence patterns used by real gateways.
        assert_eq!(ulaw_encode(0), 0xFF);
        assert_eq!(alaw_encode(0), 0xD5);
        // Full-scale clipping.
        assert_eq!(ulaw_encode(i16::MAX), 0x80);
        assert_eq!(ulaw_encode(i16::MIN), 0x00);
        assert_eq!(alaw_encode(i16::MAX), 0xAA);
        assert_eq!(alaw_encode(i16::MIN), 0x2A);
    }

    #[test]
    fn ulaw_round_trip_all_codes() {
        for code in 0..=255u8 {
            let back = ulaw_encode(ulaw_decode(code));
            if code == 0x7F {
                // Negative zero decodes to 0, which encodes as positive zero.
                assert_eq!(back, 0xFF);
            } else {
                assert_eq!(back, code, "μ-law code {code:#04x}");
            }
        }
    }

    #[test]
    fn alaw_round_trip_all_codes() {
        for code in 0..=255u8 {
            assert_eq!(
                alaw_encode(alaw_decode(code)),
                code,
                "A-law code {code:#04x}"
            );
        }
    }

    #[test]
    fn encode_is_monotonic_over_all_inputs() {
        for law in [G711::Pcmu, G711::Pcma] {
            let mut prev = law.decode(law.encode(i16::MIN));
            for x in (i32::from(i16::MIN) + 1)..=i32::from(i16::MAX) {
                let cur = law.decode(law.encode(x as i16));
                assert!(cur >= prev, "{law:?} not monotonic at {x}: {prev} > {cur}");
                prev = cur;
            }
        }
    }

    #[test]
    fn payload_types() {
        assert_eq!(G711::Pcmu.payload_type(), 0);
        assert_eq!(G711::Pcma.payload_type(), 8);
        assert_eq!(G711::from_payload_type(0), Some(G711::Pcmu));
        assert_eq!(G711::from_payload_type(8), Some(G711::Pcma));
        assert_eq!(G711::from_payload_type(101), None);
        assert_eq!(G711::from_payload_type(9), None);
    }

    #[test]
    fn decode_into_truncates_to_shorter_side() {
        let payload = [0xFFu8, 0x80, 0x00];
        let mut out = [1i16; 2];
        assert_eq!(G711::Pcmu.decode_into(&payload, &mut out), 2);
        assert_eq!(out, [0, 32124]);
        let mut long = [7i16; 5];
        assert_eq!(G711::Pcma.decode_into(&[0xD5, 0x55], &mut long), 2);
        assert_eq!(long, [8, -8, 7, 7, 7]);
        let mut enc = [0u8; 2];
        assert_eq!(G711::Pcma.encode_into(&[8, -8, 100], &mut enc), 2);
        assert_eq!(enc, [0xD5, 0x55]);
    }

    proptest! {
        /// Quantisation error never exceeds half the widest step (1024 for
        /// μ-law's top segment, 1024 for A-law's) plus clipping at the rails.
        #[test]
        fn quantisation_error_is_bounded(x in any::<i16>()) {
            for law in [G711::Pcmu, G711::Pcma] {
                let y = law.decode(law.encode(x));
                let err = (i32::from(x) - i32::from(y)).abs();
                let clip = (i32::from(x).abs() - 32256).max(0);
                prop_assert!(err <= 1024 + clip, "{:?}: {} -> {} (err {})", law, x, y, err);
            }
        }
    }
}
