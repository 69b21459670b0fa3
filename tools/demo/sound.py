"""Category-styled music clips synthesised with numpy, and their encoding to files.

A clip is a small arrangement: a chord progression, a melody over it, an
optional bass line, a 16-step drum pattern and an optional ambience, each
shaped by the category's ``SoundStyle`` (tempo, key, scale, timbre, rhythm,
swing). Clips of one category therefore share spectral and rhythmic traits
that an audio encoder can pick up.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import soundfile as sf
from scipy.signal import lfilter

from tools.demo.categories import SoundStyle, Timbre

# Chord roots as scale degrees; one chord per bar.
_PROGRESSIONS = ((0, 5, 3, 4), (0, 3, 4, 0), (0, 4, 5, 3), (5, 3, 0, 4), (1, 4, 0, 0))

# libsndfile writes WAV/FLAC reproducibly (16-bit PCM: no timestamped PEAK chunk), but
# its Ogg writer picks a time-seeded stream serial number, so Ogg files are written
# through PyAV's Opus encoder with bit-exact muxing instead.
BITEXACT = {"fflags": "+bitexact"}
OPUS_RATE = 48_000


def midi_to_hz(note: float) -> float:
    return 440.0 * 2.0 ** ((note - 69) / 12)


_TABLE_SIZE = 2048


def _tone(freq: float, seconds: float, timbre: Timbre, sr: int) -> np.ndarray:
    n = max(1, int(seconds * sr))
    t = np.arange(n, dtype=np.float64) / sr
    # One period of the timbre, band-limited to partials below Nyquist (no aliasing),
    # read back at the note's (vibrato-modulated) phase: one table lookup per sample.
    cycle = np.arange(_TABLE_SIZE) * (2 * np.pi / _TABLE_SIZE)
    table = np.zeros(_TABLE_SIZE)
    for k, amp in enumerate(timbre.harmonics, start=1):
        if amp and k * freq < sr / 2:
            table += amp * np.sin(k * cycle)
    if timbre.vibrato_depth:
        inst_freq = freq * 2.0 ** (timbre.vibrato_depth * np.sin(2 * np.pi * timbre.vibrato_hz * t) / 12)
        cycles = np.cumsum(inst_freq) / sr
    else:
        cycles = t * freq
    wave = table[(cycles * _TABLE_SIZE).astype(np.int64) % _TABLE_SIZE]
    env = np.minimum(1.0, t / max(timbre.attack_s, 1e-4)) * np.exp(-t / timbre.decay_s)
    release = min(n, int(0.02 * sr))
    env[n - release:] *= np.linspace(1.0, 0.0, release)
    return wave * env


def _kick(sr: int) -> np.ndarray:
    t = np.arange(int(0.25 * sr)) / sr
    freq = 50 + 110 * np.exp(-t / 0.04)
    return np.sin(2 * np.pi * np.cumsum(freq) / sr) * np.exp(-t / 0.09)


def _snare(sr: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(0.18 * sr)) / sr
    return (0.7 * rng.standard_normal(t.size) + 0.5 * np.sin(2 * np.pi * 190 * t)) * np.exp(-t / 0.05)


def _hat(sr: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(0.06 * sr)) / sr
    noise = np.diff(rng.standard_normal(t.size + 1))  # first difference: a crude high-pass
    return 0.5 * noise * np.exp(-t / 0.015)


def _ambience(kind: str, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    noise = rng.standard_normal(n)
    if kind == "wind":  # low-passed noise with slow gusts
        a = np.exp(-2 * np.pi * 400 / sr)
        body = lfilter([1 - a], [1, -a], noise)
        gusts = 0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(0.1, 0.4) * np.arange(n) / sr + rng.uniform(0, 6))
        return 4.0 * body * gusts
    if kind == "sizzle":  # high-passed hiss with random crackles
        hiss = np.diff(noise, prepend=0.0) * 0.3
        crackles = (rng.random(n) < 30 / sr) * rng.standard_normal(n) * 3.0
        return hiss + lfilter([1.0], [1, -0.6], crackles)
    raise ValueError(f"unknown ambience {kind!r}")


def _add(out: np.ndarray, start_s: float, sound: np.ndarray, gain: float, sr: int) -> None:
    i = int(start_s * sr)
    if i >= out.size:
        return
    m = min(sound.size, out.size - i)
    out[i:i + m] += gain * sound[:m]


def _drums(style: SoundStyle, out: np.ndarray, step_s: float, sr: int, rng: np.random.Generator,
           gain: float = 1.0) -> None:
    kick, snare, hat = _kick(sr), _snare(sr, rng), _hat(sr, rng)
    n_steps = int(out.size / sr / step_s) + 1
    for step in range(n_steps):
        pos = step % 16
        start = (step + (style.swing if step % 2 else 0.0)) * step_s
        if pos in style.kick:
            _add(out, start, kick, 0.9 * gain, sr)
        if pos in style.snare:
            _add(out, start, snare, 0.35 * gain, sr)
        if pos in style.hat:
            _add(out, start, hat, rng.uniform(0.15, 0.3) * gain, sr)


def synthesize(style: SoundStyle, rng: np.random.Generator, seconds: float, sr: int,
               accent: SoundStyle | None = None) -> np.ndarray:
    """A mono float32 clip in [-1, 1] in the style given (plus the accent's drums, quieter)."""
    n = int(seconds * sr)
    out = np.zeros(n)
    tempo = rng.uniform(*style.tempo_bpm)
    beat_s = 60.0 / tempo
    bar_s = 4 * beat_s
    root = int(rng.integers(style.root_midi[0], style.root_midi[1] + 1))
    scale = np.array(style.scale)
    progression = _PROGRESSIONS[int(rng.integers(len(_PROGRESSIONS)))]

    def pitch(degree: int, octave: int = 0) -> float:
        octave += degree // len(scale)
        return midi_to_hz(root + scale[degree % len(scale)] + 12 * octave)

    n_bars = int(np.ceil(seconds / bar_s))
    for bar in range(n_bars):
        chord = progression[bar % len(progression)]
        if style.chord_timbre is not None:
            for d in (chord, chord + 2, chord + 4):
                _add(out, bar * bar_s, _tone(pitch(d, 1), bar_s, style.chord_timbre, sr), 0.12, sr)
        if style.bass is not None:
            for beat in range(4):
                d = chord if beat % 2 == 0 else chord + int(rng.choice([2, 4]))
                _add(out, bar * bar_s + beat * beat_s, _tone(pitch(d, -1), beat_s, style.bass, sr), 0.35, sr)

    # Melody: a random walk over the scale, leaning on chord tones.
    note_s = beat_s / style.notes_per_beat
    degree = int(rng.integers(len(scale)))
    t = 0.0
    for k in range(int(seconds / note_s) + 1):
        degree = int(np.clip(degree + rng.choice([-2, -1, 0, 1, 1, 2]), -len(scale), 2 * len(scale)))
        if rng.random() > 0.15:  # some rests
            swing = style.swing * note_s if k % 2 else 0.0
            _add(out, t + swing, _tone(pitch(degree, style.lead_octave), note_s * 1.5, style.lead, sr), 0.3, sr)
        t += note_s

    _drums(style, out, beat_s / 4, sr, rng)
    if accent is not None:
        _drums(accent, out, beat_s / 4, sr, rng, gain=0.5)
    if style.noise_bed is not None:
        out += style.noise_level * _ambience(style.noise_bed, n, sr, rng)

    peak = np.max(np.abs(out))
    out *= rng.uniform(0.6, 0.9) / max(peak, 1e-9)
    return out.astype(np.float32)


def mux_audio(container: av.container.OutputContainer, stream: av.audio.stream.AudioStream,
              wave: np.ndarray, sr: int) -> None:
    """Encode a mono float clip into an opened PyAV output stream."""
    frame = av.AudioFrame.from_ndarray(wave[None, :].astype(np.float32), format="flt", layout="mono")
    frame.sample_rate = sr
    frame.pts = 0
    # PyAV's encoder converts format/rate and cuts the codec's frame size itself.
    for packet in stream.encode(frame):
        container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)


def write_audio(path: Path, wave: np.ndarray, sr: int) -> None:
    """WAV / FLAC (16-bit, via soundfile) or Ogg Opus (48 kHz, via PyAV) by suffix."""
    if path.suffix in (".wav", ".flac"):
        sf.write(path, wave, sr, subtype="PCM_16", format=path.suffix[1:].upper())
        return
    if path.suffix != ".ogg":
        raise ValueError(f"unsupported audio suffix {path.suffix!r}")
    with av.open(str(path), "w", format="ogg", options=BITEXACT) as container:
        stream = container.add_stream("libopus", rate=OPUS_RATE, layout="mono")
        stream.codec_context.flags |= av.codec.context.Flags.bitexact
        mux_audio(container, stream, wave, sr)
