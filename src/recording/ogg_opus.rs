//! Opus packets from RTP into an Ogg Opus stream (RFC 7845), untranscoded. The `ogg` crate lays
//! out the pages; this module decides what goes on them: the two header packets, packets in
//! sequence order, and granule positions taken from the RTP timestamps (48 kHz for Opus), so a
//! gap in the stream (DTX, a paused or muted microphone, lost packets) stays elapsed time in the
//! file: the granule position jumps, and empty Opus frames fill the gap so that decoders, which
//! count decoded samples, play it as silence of the same length.

use std::collections::BTreeMap;
use std::io;

use ogg::writing::{PacketWriteEndInfo, PacketWriter};

/// Samples the decoder drops at the start (RFC 7845 §4.2): libopus's encoder lookahead, as
/// opusenc writes it. The sender's real value is not in RTP; this is what browsers' libopus uses.
pub const PRE_SKIP: u16 = 312;
/// Packets held back to put late ones (reordered on the network) back in sequence: 8 packets of
/// 20 ms. A packet later than that is dropped, as a receiver's jitter buffer would.
const REORDER_DEPTH: usize = 8;
/// A page ends after this many packets (200 ms of 20 ms packets) and is written out at once, so
/// a crash loses at most that much.
const PACKETS_PER_PAGE: usize = 10;
/// A timestamp jump larger than this (10 minutes at 48 kHz) is the sender restarting its clock,
/// not silence: the file continues from the previous packet instead.
const MAX_GAP_SAMPLES: i64 = 48_000 * 600;

/// The parts of an RTP packet that recording needs (RFC 3550 §5.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    pub sequence: u16,
    pub timestamp: u32,
    pub payload: &'a [u8],
}

/// Parses an RTP packet; `None` for anything malformed (never trusted: it comes from a client).
pub fn parse_rtp(packet: &[u8]) -> Option<RtpPacket<'_>> {
    if packet.len() < 12 || packet[0] >> 6 != 2 {
        return None;
    }
    let csrc = usize::from(packet[0] & 0x0f) * 4;
    let mut start = 12 + csrc;
    if packet[0] & 0x10 != 0 {
        let ext = packet.get(start + 2..start + 4)?;
        start += 4 + usize::from(u16::from_be_bytes([ext[0], ext[1]])) * 4;
    }
    let mut end = packet.len();
    if packet[0] & 0x20 != 0 {
        end = end.checked_sub(usize::from(*packet.last()?))?;
    }
    Some(RtpPacket {
        sequence: u16::from_be_bytes([packet[2], packet[3]]),
        timestamp: u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]),
        payload: packet.get(start..end)?,
    })
}

/// Samples at 48 kHz that an Opus packet decodes to (RFC 6716 §3.1), from its TOC byte.
pub fn opus_samples(packet: &[u8]) -> Option<u32> {
    let toc = *packet.first()?;
    let config = toc >> 3;
    let frame: u32 = match config {
        0..=11 => [480, 960, 1920, 2880][usize::from(config % 4)],
        12..=15 => [480, 960][usize::from(config % 2)],
        _ => [120, 240, 480, 960][usize::from(config % 4)],
    };
    let frames = match toc & 3 {
        0 => 1,
        1 | 2 => 2,
        _ => u32::from(*packet.get(1)? & 0x3f),
    };
    let samples = frame * frames;
    // RFC 6716 §3.2.5: at most 120 ms per packet.
    (samples > 0 && samples <= 5760).then_some(samples)
}

/// Undoes the wrap of a 16- or 32-bit RTP counter around a reference point.
fn unwrap(reference: i64, value: i64, bits: u32) -> i64 {
    let modulus = 1i64 << bits;
    let half = modulus / 2;
    let delta = (value - reference).rem_euclid(modulus);
    let delta = if delta >= half {
        delta - modulus
    } else {
        delta
    };
    reference + delta
}

/// What the stream's header packets say.
#[derive(Debug, Clone)]
pub struct StreamInfo {
    /// 1, or 2 when the producer negotiated `stereo=1`.
    pub channels: u8,
    /// `NAME=value` comments for OpusTags.
    pub comments: Vec<String>,
}

/// The OpusHead packet (RFC 7845 §5.1), channel mapping family 0.
pub fn opus_head(channels: u8) -> Vec<u8> {
    let mut head = Vec::with_capacity(19);
    head.extend_from_slice(b"OpusHead");
    head.push(1);
    head.push(channels);
    head.extend_from_slice(&PRE_SKIP.to_le_bytes());
    head.extend_from_slice(&48_000u32.to_le_bytes());
    head.extend_from_slice(&0i16.to_le_bytes());
    head.push(0);
    head
}

/// The OpusTags packet (RFC 7845 §5.2).
pub fn opus_tags(comments: &[String]) -> Vec<u8> {
    let vendor = concat!("mediasoup-server ", env!("CARGO_PKG_VERSION"));
    let mut tags = Vec::new();
    tags.extend_from_slice(b"OpusTags");
    tags.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
    tags.extend_from_slice(vendor.as_bytes());
    tags.extend_from_slice(&(comments.len() as u32).to_le_bytes());
    for comment in comments {
        tags.extend_from_slice(&(comment.len() as u32).to_le_bytes());
        tags.extend_from_slice(comment.as_bytes());
    }
    tags
}

/// One Ogg Opus stream being written: RTP packets in, finished pages out (as bytes to append
/// to the file). Pure logic, no I/O, so that the writer decides what a failed write means.
pub struct OggOpusStream {
    pages: PacketWriter<'static, Vec<u8>>,
    serial: u32,
    /// Packets not yet written, by extended sequence number: (extended timestamp, payload).
    held: BTreeMap<i64, (i64, Vec<u8>)>,
    /// Extended sequence number and timestamp of the newest packet: the reference for unwrapping.
    newest_sequence: Option<i64>,
    newest_timestamp: Option<i64>,
    /// Extended sequence number of the last packet written.
    written: Option<i64>,
    /// Extended timestamp of granule position 0 (the start of the first packet).
    origin: Option<i64>,
    /// Granule position after the last packet written.
    granule: u64,
    on_page: usize,
    /// Packets dropped as too late or duplicates.
    pub discarded: u64,
}

impl OggOpusStream {
    /// A stream whose header pages are already in [`take_pages`](Self::take_pages).
    pub fn new(serial: u32, info: &StreamInfo) -> io::Result<Self> {
        let mut pages = PacketWriter::new(Vec::new());
        // RFC 7845 §3: each header packet alone on its page, granule 0.
        pages.write_packet(
            opus_head(info.channels),
            serial,
            PacketWriteEndInfo::EndPage,
            0,
        )?;
        pages.write_packet(
            opus_tags(&info.comments),
            serial,
            PacketWriteEndInfo::EndPage,
            0,
        )?;
        Ok(OggOpusStream {
            pages,
            serial,
            held: BTreeMap::new(),
            newest_sequence: None,
            newest_timestamp: None,
            written: None,
            origin: None,
            granule: 0,
            on_page: 0,
            discarded: 0,
        })
    }

    /// Takes the bytes of the pages finished so far.
    pub fn take_pages(&mut self) -> Vec<u8> {
        std::mem::take(self.pages.inner_mut())
    }

    /// Adds one RTP packet (any order); complete pages become available in `take_pages`.
    pub fn push(&mut self, sequence: u16, timestamp: u32, payload: Vec<u8>) -> io::Result<()> {
        if opus_samples(&payload).is_none() {
            self.discarded += 1;
            return Ok(());
        }
        let sequence = unwrap(
            self.newest_sequence.unwrap_or(i64::from(sequence)),
            i64::from(sequence),
            16,
        );
        let timestamp = unwrap(
            self.newest_timestamp.unwrap_or(i64::from(timestamp)),
            i64::from(timestamp),
            32,
        );
        if self.written.is_some_and(|last| sequence <= last) || self.held.contains_key(&sequence) {
            self.discarded += 1;
            return Ok(());
        }
        if self.newest_sequence.is_none_or(|newest| sequence > newest) {
            self.newest_sequence = Some(sequence);
            self.newest_timestamp = Some(timestamp);
        }
        self.held.insert(sequence, (timestamp, payload));
        while self.held.len() > REORDER_DEPTH {
            self.write_oldest(false)?;
        }
        Ok(())
    }

    /// Writes every held packet and ends the stream (the last page gets the end-of-stream flag).
    pub fn finish(&mut self) -> io::Result<()> {
        while !self.held.is_empty() {
            self.write_oldest(true)?;
        }
        Ok(())
    }

    fn write_oldest(&mut self, finishing: bool) -> io::Result<()> {
        let Some((sequence, (timestamp, payload))) = self.held.pop_first() else {
            return Ok(());
        };
        let samples = opus_samples(&payload).map_or(0, u64::from);
        let origin = *self.origin.get_or_insert(timestamp);
        // Where the packet starts by the RTP clock; never backwards, and a clock restart
        // continues from the previous packet.
        let start = u64::try_from(timestamp - origin).ok().filter(|&start| {
            start >= self.granule && (start - self.granule) as i64 <= MAX_GAP_SAMPLES
        });
        let start = start.unwrap_or(self.granule);
        self.fill_gap(start, payload.first().copied().unwrap_or(31 << 3))?;
        self.written = Some(sequence);
        let last = finishing && self.held.is_empty();
        self.write(payload, start + samples, last)
    }

    /// Keeps a gap (DTX, lost packets, a muted sender) as elapsed time: empty Opus frames (a
    /// TOC byte alone, RFC 6716 §3.2.1, which decoders play as concealment fading to silence)
    /// up to `start`, so that granule positions and the samples decoders produce agree.
    fn fill_gap(&mut self, start: u64, toc: u8) -> io::Result<()> {
        // Frames like the next packet's (same mode and size), code 0: one frame, no data; what
        // is left over, in 2.5 ms CELT frames.
        for toc in [toc & !3, 28 << 3] {
            let Some(frame) = opus_samples(&[toc]).map(u64::from) else {
                continue;
            };
            while start - self.granule >= frame {
                let granule = self.granule + frame;
                self.write(vec![toc], granule, false)?;
            }
        }
        Ok(())
    }

    fn write(&mut self, packet: Vec<u8>, granule: u64, last: bool) -> io::Result<()> {
        self.granule = granule;
        self.on_page += 1;
        let end = if last {
            PacketWriteEndInfo::EndStream
        } else if self.on_page >= PACKETS_PER_PAGE {
            PacketWriteEndInfo::EndPage
        } else {
            PacketWriteEndInfo::NormalPacket
        };
        if end != PacketWriteEndInfo::NormalPacket {
            self.on_page = 0;
        }
        self.pages.write_packet(packet, self.serial, end, granule)
    }

    /// Granule position after the last packet written (48 kHz samples since the first packet).
    pub fn granule(&self) -> u64 {
        self.granule
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ogg::reading::PacketReader;

    /// A 20 ms CELT packet (config 31, code 0) with some bytes of "data".
    fn packet(byte: u8) -> Vec<u8> {
        vec![31 << 3, byte, byte]
    }

    fn read_back(bytes: Vec<u8>) -> Vec<(Vec<u8>, u64, bool)> {
        let mut reader = PacketReader::new(std::io::Cursor::new(bytes));
        let mut out = Vec::new();
        while let Some(p) = reader.read_packet().expect("valid ogg") {
            let (end, granule) = (p.last_in_stream(), p.absgp_page());
            out.push((p.data, granule, end));
        }
        out
    }

    fn stream() -> OggOpusStream {
        OggOpusStream::new(
            7,
            &StreamInfo {
                channels: 1,
                comments: vec!["USERID=u".into()],
            },
        )
        .unwrap()
    }

    #[test]
    fn headers_follow_rfc_7845() {
        let head = opus_head(2);
        assert_eq!(head.len(), 19);
        assert_eq!(&head[..8], b"OpusHead");
        assert_eq!((head[8], head[9]), (1, 2));
        assert_eq!(u16::from_le_bytes([head[10], head[11]]), PRE_SKIP);
        let mut s = stream();
        s.finish().unwrap();
        let packets = read_back(s.take_pages());
        assert_eq!(&packets[0].0[..8], b"OpusHead");
        assert_eq!(&packets[1].0[..8], b"OpusTags");
        assert!(packets[1].0.ends_with(b"USERID=u"));
    }

    #[test]
    fn frame_sizes_from_the_toc() {
        assert_eq!(opus_samples(&[31 << 3]), Some(960));
        assert_eq!(opus_samples(&[(31 << 3) | 1]), Some(1920));
        assert_eq!(opus_samples(&[1 << 3]), Some(960));
        assert_eq!(opus_samples(&[(16 << 3) | 3, 3]), Some(360));
        assert_eq!(opus_samples(&[]), None);
        assert_eq!(opus_samples(&[(31 << 3) | 3, 0]), None);
    }

    #[test]
    fn granules_keep_gaps_reorder_and_survive_wraps() {
        let mut s = stream();
        let (seq0, ts0) = (65_530u16, u32::MAX - 1919);
        // 12 packets in order, with two swapped, wrapping both counters.
        let mut order: Vec<u16> = (0..12).collect();
        order.swap(3, 4);
        for i in order {
            let seq = seq0.wrapping_add(i);
            let ts = ts0.wrapping_add(u32::from(i) * 960);
            s.push(seq, ts, packet(i as u8)).unwrap();
        }
        // A duplicate, then a 1 s gap (DTX): granules jump by 48000 samples.
        s.push(
            seq0.wrapping_add(11),
            ts0.wrapping_add(11 * 960),
            packet(11),
        )
        .unwrap();
        s.push(
            seq0.wrapping_add(12),
            ts0.wrapping_add(12 * 960 + 48_000),
            packet(12),
        )
        .unwrap();
        s.finish().unwrap();
        assert_eq!(s.discarded, 1);
        assert_eq!(s.granule(), 13 * 960 + 48_000);
        let packets = read_back(s.take_pages());
        let audio: Vec<u8> = packets[2..]
            .iter()
            .filter(|p| p.0.len() > 1)
            .map(|p| p.0[1])
            .collect();
        assert_eq!(
            audio,
            (0..13).collect::<Vec<u8>>(),
            "sequence order restored"
        );
        let fillers: Vec<&Vec<u8>> = packets[2..]
            .iter()
            .map(|p| &p.0)
            .filter(|p| p.len() == 1)
            .collect();
        assert_eq!(fillers.len(), 50, "1 s of 20 ms empty frames fill the gap");
        assert!(fillers.iter().all(|p| p[0] == 31 << 3));
        let last = packets.last().unwrap();
        assert!(last.2, "end of stream flagged");
        assert_eq!(last.1, 13 * 960 + 48_000);
    }

    #[test]
    fn a_late_packet_is_dropped_not_written_out_of_order() {
        let mut s = stream();
        for i in 1..=20u16 {
            s.push(i, u32::from(i) * 960, packet(i as u8)).unwrap();
        }
        s.push(0, 0, packet(0)).unwrap();
        s.finish().unwrap();
        assert_eq!(s.discarded, 1);
        let packets = read_back(s.take_pages());
        assert_eq!(packets.len(), 2 + 20);
    }

    #[test]
    fn parses_rtp_with_csrcs_extension_and_padding() {
        let mut p = vec![0b1011_0001, 111, 0x12, 0x34, 0, 0, 0x03, 0xc0, 1, 2, 3, 4];
        p.extend_from_slice(&[9, 9, 9, 9]); // one CSRC
        p.extend_from_slice(&[0xbe, 0xde, 0, 1, 0x10, 0xff, 0, 0]); // one-byte extension
        p.extend_from_slice(&[0xf8, 0xaa]); // payload
        p.extend_from_slice(&[0, 2]); // padding, count 2
        let parsed = parse_rtp(&p).unwrap();
        assert_eq!(parsed.sequence, 0x1234);
        assert_eq!(parsed.timestamp, 960);
        assert_eq!(parsed.payload, &[0xf8, 0xaa]);
        assert_eq!(parse_rtp(&p[..10]), None);
        let mut bad_padding = p.clone();
        *bad_padding.last_mut().unwrap() = 200;
        assert_eq!(parse_rtp(&bad_padding), None);
    }
}
