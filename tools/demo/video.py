"""Short MP4 clips: animated category scenes (MPEG-4 video) with a synthesised AAC soundtrack."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from tools.demo.images import Scene
from tools.demo.sound import BITEXACT, mux_audio


# MPEG-4 Part 2 rather than H.264: the wheel's libx264 gives different bytes from run to
# run on the same frames here (even single-threaded), while FFmpeg's own mpeg4 encoder
# with bit-exact flags is reproducible, and every FFmpeg build decodes it.
VIDEO_CODEC = "mpeg4"
AUDIO_CODEC = "aac"


def write_video(path: Path, scene: Scene, fps: int, n_frames: int, wave: np.ndarray, sr: int) -> None:
    """Encode ``n_frames`` of ``scene`` (phase 0 -> 1) and ``wave`` as the audio track.

    Single-threaded encoding and bit-exact muxing make the bytes reproducible.
    """
    with av.open(str(path), "w", format="mp4", options=BITEXACT) as container:
        video = container.add_stream(VIDEO_CODEC, rate=Fraction(fps, 1))
        video.width = video.height = scene.size
        video.pix_fmt = "yuv420p"
        video.codec_context.gop_size = fps  # a keyframe every second, for keyframe sampling
        video.codec_context.thread_count = 1
        video.codec_context.flags |= av.codec.context.Flags.bitexact
        audio = container.add_stream(AUDIO_CODEC, rate=sr, layout="mono")
        audio.codec_context.flags |= av.codec.context.Flags.bitexact
        for i in range(n_frames):
            frame = av.VideoFrame.from_image(scene.render(i / n_frames))
            frame.pts = i
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
        mux_audio(container, audio, wave, sr)
