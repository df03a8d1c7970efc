//! The codecs every room's router offers: what Chrome, Firefox and Safari can all produce and
//! consume between them.

use std::num::{NonZeroU32, NonZeroU8};

use mediasoup::prelude::*;
use mediasoup::types::rtp_parameters::RtpCodecParametersParametersValue;

const VIDEO_CLOCK: NonZeroU32 = NonZeroU32::new(90_000).expect("non-zero");

fn video(
    mime_type: MimeTypeVideo,
    parameters: &[(&'static str, RtpCodecParametersParametersValue)],
) -> RtpCodecCapability {
    RtpCodecCapability::Video {
        mime_type,
        preferred_payload_type: None,
        clock_rate: VIDEO_CLOCK,
        parameters: {
            let mut all = RtpCodecParametersParameters::default();
            all.extend(parameters.iter().cloned());
            all
        },
        // mediasoup fills in the feedback it supports for each codec.
        rtcp_feedback: vec![],
    }
}

/// opus 48000/2, VP8, VP9 (profile 0) and H264 baseline / constrained baseline with
/// packetization-mode 1.
pub fn media_codecs() -> Vec<RtpCodecCapability> {
    use RtpCodecParametersParametersValue::{Number, String as Text};
    vec![
        RtpCodecCapability::Audio {
            mime_type: MimeTypeAudio::Opus,
            preferred_payload_type: None,
            clock_rate: NonZeroU32::new(48_000).expect("non-zero"),
            channels: NonZeroU8::new(2).expect("non-zero"),
            parameters: RtpCodecParametersParameters::default(),
            rtcp_feedback: vec![],
        },
        video(MimeTypeVideo::Vp8, &[]),
        video(MimeTypeVideo::Vp9, &[("profile-id", Number(0))]),
        video(
            MimeTypeVideo::H264,
            &[
                ("packetization-mode", Number(1)),
                ("profile-level-id", Text("42e01f".into())),
                ("level-asymmetry-allowed", Number(1)),
            ],
        ),
        video(
            MimeTypeVideo::H264,
            &[
                ("packetization-mode", Number(1)),
                ("profile-level-id", Text("42001f".into())),
                ("level-asymmetry-allowed", Number(1)),
            ],
        ),
    ]
}
